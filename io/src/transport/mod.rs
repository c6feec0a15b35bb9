//! The one place that talks to the daemon: the [`Transport`] seam, its configuration,
//! and the process-global client.
//!
//! It owns *how* the four P2M operations (enroll, unenroll, request, report) reach the
//! daemon; it does not know about files or streams (see `mediation` for what a flow is).
//!
//! Configuration, read from the environment when the client is created (on first use,
//! and again in a forked child):
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `TRACE2E_TRANSPORT` | `shm` (shared-memory rings) or `grpc` (the measured baseline; only in builds with the `grpc` feature) | `shm` |
//! | `TRACE2E_SOCKET` | the daemon's P2M Unix socket (the shared-memory handshake) | `/run/trace2e/p2m.sock` |
//! | `TRACE2E_GRPC_SOCKET` | the daemon's P2M-over-gRPC socket | `$TRACE2E_SOCKET.grpc` |
//! | `TRACE2E_TIMEOUT_MS` | deadline of a flow request, which may wait for a reservation (5 s) and an owner's consent (30 s) | `60000` |
//!
//! Enroll, unenroll and report have a fixed 10 s deadline.
//!
//! **A daemon restart is a gap, not an error.** Once this process has attached, a daemon
//! that goes away (restarted, upgraded, crashed) is waited for: each mediated operation
//! retries attaching for up to `TRACE2E_TIMEOUT_MS`, then fails closed with
//! [`UnavailableKind::Unreachable`]. Every attachment is a new *session*; a descriptor
//! enrolled in an earlier one enrolls again (the daemon checks it against `/proc` again)
//! before its next flow, so open files and streams carry on. A process that never
//! attached fails at once, as before.
//!
//! An invalid value is a
//! [`DaemonUnavailable`] of kind [`Misconfigured`](UnavailableKind::Misconfigured): every
//! mediated operation fails until it is fixed (fail closed). So is `TRACE2E_TRANSPORT=grpc`
//! in a build without the crate's `grpc` feature.

#[cfg(feature = "grpc")]
mod grpc;
mod shm;

use std::cell::RefCell;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, PoisonError};
use std::time::{Duration, Instant};

use trace2e_proto::{Decision, Direction, Fd, GrantId, IoOutcome};

use crate::error::{DaemonUnavailable, UnavailableKind};

/// What an fd is enrolled as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A file, by absolute canonical path.
    File(PathBuf),
    /// A TCP stream, by its two ends.
    Stream { local: SocketAddr, peer: SocketAddr },
}

/// The four P2M operations, blocking. Implementations must be callable from many threads
/// at once, from inside or outside a tokio runtime, and must never hang past their
/// deadlines nor panic.
pub(crate) trait Transport: Send + Sync + fmt::Debug {
    /// Registers `fd → target` for this process (replacing an earlier entry on `fd`).
    fn enroll(&self, fd: Fd, target: &Target) -> Result<(), DaemonUnavailable>;
    /// Removes the entry of `fd`.
    fn unenroll(&self, fd: Fd) -> Result<(), DaemonUnavailable>;
    /// Asks for one flow on `fd`.
    fn request(&self, fd: Fd, direction: Direction) -> Result<Decision, DaemonUnavailable>;
    /// Reports the outcome of a granted flow.
    fn report(&self, grant: GrantId, outcome: IoOutcome) -> Result<(), DaemonUnavailable>;
}

/// Deadlines of the P2M calls.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    /// Flow requests (they may wait for reservations and consent).
    pub request: Duration,
    /// Enroll, unenroll, report.
    pub short: Duration,
}

/// The client configuration, from the environment.
#[derive(Debug, Clone)]
struct Config {
    socket: PathBuf,
    deadlines: Deadlines,
}

const DEFAULT_SOCKET: &str = "/run/trace2e/p2m.sock";
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const SHORT_TIMEOUT: Duration = Duration::from_secs(10);

fn misconfigured(detail: String) -> DaemonUnavailable {
    DaemonUnavailable::new(UnavailableKind::Misconfigured, "connect", detail)
}

/// A transport from the environment, and how long a flow may wait for the daemon.
fn new_transport() -> Result<(Arc<dyn Transport>, Duration), DaemonUnavailable> {
    let socket = std::env::var_os("TRACE2E_SOCKET").map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from);
    let request = match std::env::var("TRACE2E_TIMEOUT_MS") {
        Err(std::env::VarError::NotPresent) => DEFAULT_REQUEST_TIMEOUT,
        Ok(ms) => match ms.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => Duration::from_millis(ms),
            _ => {
                return Err(misconfigured(format!(
                    "TRACE2E_TIMEOUT_MS={ms:?} is not a positive number of milliseconds"
                )));
            }
        },
        Err(e) => return Err(misconfigured(format!("TRACE2E_TIMEOUT_MS: {e}"))),
    };
    let config = Config { socket, deadlines: Deadlines { request, short: SHORT_TIMEOUT } };
    Ok((select(std::env::var("TRACE2E_TRANSPORT"), &config, GRPC)?, request))
}

/// Builds a gRPC transport from the configuration.
type GrpcConstructor = fn(&Config) -> Result<Arc<dyn Transport>, DaemonUnavailable>;

/// The gRPC transport's constructor, in builds that have one.
#[cfg(feature = "grpc")]
const GRPC: Option<GrpcConstructor> = Some(grpc_transport);
#[cfg(not(feature = "grpc"))]
const GRPC: Option<GrpcConstructor> = None;

/// The transport `TRACE2E_TRANSPORT` (`name`) asks for; `grpc` is [`GRPC`], passed in so
/// that a test can check what a build without the feature does.
fn select(
    name: Result<String, std::env::VarError>,
    config: &Config,
    grpc: Option<GrpcConstructor>,
) -> Result<Arc<dyn Transport>, DaemonUnavailable> {
    match name.as_deref() {
        Err(std::env::VarError::NotPresent) | Ok("shm") => {
            Ok(Arc::new(shm::ShmTransport::connect(&config.socket, config.deadlines)?))
        }
        Ok("grpc") => match grpc {
            Some(new) => new(config),
            None => Err(grpc_not_built()),
        },
        Ok(other) => Err(misconfigured(format!("unknown TRACE2E_TRANSPORT={other:?} (expected \"shm\" or \"grpc\")"))),
        Err(e) => Err(misconfigured(format!("TRACE2E_TRANSPORT: {e}"))),
    }
}

#[cfg(feature = "grpc")]
fn grpc_transport(config: &Config) -> Result<Arc<dyn Transport>, DaemonUnavailable> {
    let socket = std::env::var_os("TRACE2E_GRPC_SOCKET").map_or_else(
        || {
            let mut s = config.socket.clone().into_os_string();
            s.push(".grpc");
            PathBuf::from(s)
        },
        PathBuf::from,
    );
    Ok(Arc::new(grpc::GrpcTransport::new(socket, config.deadlines)?))
}

/// `TRACE2E_TRANSPORT=grpc` in a build without the `grpc` feature.
fn grpc_not_built() -> DaemonUnavailable {
    misconfigured(
        "TRACE2E_TRANSPORT=grpc, but this binary was built without trace2e-io's `grpc` feature \
         (enable it for the gRPC baseline transport, or use TRACE2E_TRANSPORT=shm)"
            .to_owned(),
    )
}

/// The process-global client, with the pid it was created in.
struct Global {
    pid: u32,
    /// The [`GENERATION`] it was created at: its session.
    session: u64,
    transport: Arc<dyn Transport>,
}

static CLIENT: Mutex<Option<Global>> = Mutex::new(None);

/// Bumped whenever [`CLIENT`] changes: invalidates the threads' [`CACHED`] copies.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// This process's id; 0 until first asked and again in a forked child (cleared by a
/// `pthread_atfork` handler). `getpid` is a system call, and a mediated I/O needs the
/// pid on every flow to notice a fork.
static PID: AtomicU32 = AtomicU32::new(0);

/// The process that a daemon answered at least once (0: none yet), and the longest a
/// flow of it waits for the daemon to come back (`TRACE2E_TIMEOUT_MS`, in ms).
static ATTACHED: AtomicU32 = AtomicU32::new(0);
static WAIT_MS: AtomicU64 = AtomicU64::new(0);

extern "C" fn forked_child() {
    PID.store(0, Ordering::Relaxed);
}

pub(crate) fn current_pid() -> u32 {
    let pid = PID.load(Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    static AT_FORK: Once = Once::new();
    AT_FORK.call_once(|| {
        // SAFETY: registers a handler that only stores to an atomic (async-signal-safe).
        unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
    });
    let pid = std::process::id();
    PID.store(pid, Ordering::Relaxed);
    pid
}

thread_local! {
    /// This thread's copy of the global client, valid while its pid and generation
    /// match: the common path takes no lock.
    static CACHED: RefCell<Option<(u64, Client)>> = const { RefCell::new(None) };
}

/// A handle on the process-global client.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    /// The process this client speaks for (the daemon sees it through SO_PEERCRED).
    pub pid: u32,
    /// This attachment to the daemon, unique in the process: what was enrolled in another
    /// session is unknown to the daemon now (it restarted, or this is a forked child).
    pub session: u64,
    /// The transport.
    pub transport: Arc<dyn Transport>,
}

/// The process-global client, created on first use and re-created after a fork.
///
/// A failed creation is not cached: the next call tries again, so an application that
/// starts before its daemon recovers once the daemon is up.
pub(crate) fn client() -> Result<Client, DaemonUnavailable> {
    let pid = current_pid();
    let generation = GENERATION.load(Ordering::Acquire);
    let cached = CACHED
        .try_with(|c| c.borrow().as_ref().filter(|(g, c)| *g == generation && c.pid == pid).map(|(_, c)| c.clone()))
        .ok()
        .flatten();
    if let Some(client) = cached {
        return Ok(client);
    }
    let (generation, client) = shared_client(pid)?;
    let _ = CACHED.try_with(|c| *c.borrow_mut() = Some((generation, client.clone())));
    Ok(client)
}

/// [`client`] through the global lock: the client of `pid` and the generation it has.
fn shared_client(pid: u32) -> Result<(u64, Client), DaemonUnavailable> {
    let mut global = CLIENT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(g) = global.as_ref()
        && g.pid == pid
    {
        let client = Client { pid, session: g.session, transport: g.transport.clone() };
        return Ok((GENERATION.load(Ordering::Acquire), client));
    }
    if let Some(stale) = global.take() {
        // Inherited from the parent across fork: its runtime's threads do not exist in
        // this process, so dropping it could wait forever for them. Leak it instead.
        std::mem::forget(stale);
    }
    let (transport, wait) = new_transport()?;
    let generation = GENERATION.fetch_add(1, Ordering::AcqRel) + 1;
    *global = Some(Global { pid, session: generation, transport: transport.clone() });
    WAIT_MS.store(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    Ok((generation, Client { pid, session: generation, transport }))
}

/// Drops the client of `session` (its daemon is gone), so that the next operation
/// attaches again. Another thread may have done it already.
fn forget_session(session: u64) {
    let mut global = CLIENT.lock().unwrap_or_else(PoisonError::into_inner);
    if global.as_ref().is_some_and(|g| g.session == session && g.pid == current_pid()) {
        *global = None;
        GENERATION.fetch_add(1, Ordering::AcqRel);
    }
}

/// Runs `op` with the process-global client, and returns its result with the client
/// it ran with.
///
/// If the daemon is gone ([`UnavailableKind::Unreachable`]) and this process had
/// attached before, the daemon is restarting: attaches again and reruns `op` (in the new
/// session) until `TRACE2E_TIMEOUT_MS` has passed since the first failure, then fails
/// closed. `op` must therefore be safe to rerun: it performs no I/O of the caller's.
pub(crate) fn with_client<T>(
    mut op: impl FnMut(&Client) -> Result<T, DaemonUnavailable>,
) -> Result<(T, Client), DaemonUnavailable> {
    let mut gap: Option<Gap> = None;
    loop {
        let error = match client() {
            Ok(client) => match op(&client) {
                Ok(value) => {
                    // A transport may be made without reaching the daemon (gRPC connects
                    // lazily): attached means the daemon answered.
                    if ATTACHED.load(Ordering::Relaxed) != client.pid {
                        ATTACHED.store(client.pid, Ordering::Relaxed);
                    }
                    return Ok((value, client));
                }
                Err(e) => {
                    if e.kind() == UnavailableKind::Unreachable {
                        forget_session(client.session);
                    }
                    e
                }
            },
            Err(e) => e,
        };
        if error.kind() != UnavailableKind::Unreachable || ATTACHED.load(Ordering::Relaxed) != current_pid() {
            return Err(error);
        }
        let gap = gap.get_or_insert_with(|| Gap::start(&error));
        if !gap.pause() {
            return Err(DaemonUnavailable::new(
                UnavailableKind::Unreachable,
                error.operation(),
                format!("{}; the daemon did not come back within {} ms", error.detail(), gap.wait.as_millis()),
            ));
        }
    }
}

/// Waiting for a daemon that went away: growing pauses until the deadline.
struct Gap {
    until: Instant,
    wait: Duration,
    pause: Duration,
}

impl Gap {
    fn start(error: &DaemonUnavailable) -> Self {
        let wait = Duration::from_millis(WAIT_MS.load(Ordering::Relaxed));
        tracing::warn!(
            error = %error,
            wait_ms = wait.as_millis() as u64,
            "trace2e: the daemon is gone; waiting for it to come back"
        );
        Self { until: Instant::now() + wait, wait, pause: Duration::from_millis(2) }
    }

    /// Pauses before the next attempt; `false` once the deadline has passed.
    fn pause(&mut self) -> bool {
        let now = Instant::now();
        if now >= self.until {
            return false;
        }
        // Retrying, not synchronising: a connect attempt costs a system call or two,
        // and a restarting daemon is back within tens to hundreds of milliseconds.
        std::thread::sleep(self.pause.min(self.until - now));
        self.pause = (self.pause * 2).min(Duration::from_millis(50));
        true
    }
}

/// Drops the process-global client so that the next mediated operation creates a new one
/// from the environment (e.g. after changing `TRACE2E_TRANSPORT`). For benchmarks that
/// compare transports in one process; fds enrolled through the old client are not
/// re-enrolled, so open them after the switch.
#[doc(hidden)]
pub fn reset_client_for_benchmarks() {
    let mut global = CLIENT.lock().unwrap_or_else(PoisonError::into_inner);
    *global = None;
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            socket: PathBuf::from("/nonexistent/trace2e/p2m.sock"),
            deadlines: Deadlines { request: DEFAULT_REQUEST_TIMEOUT, short: SHORT_TIMEOUT },
        }
    }

    /// What an application built without the `grpc` feature gets for
    /// `TRACE2E_TRANSPORT=grpc`: the same selection, with no gRPC constructor.
    #[test]
    fn grpc_without_the_feature_is_an_error_that_says_so() {
        let unavailable = select(Ok("grpc".to_owned()), &config(), None).unwrap_err();
        assert_eq!(unavailable.kind(), UnavailableKind::Misconfigured);
        assert_eq!(unavailable.operation(), "connect");
        let err = std::io::Error::from(unavailable);
        assert_eq!(err.kind(), std::io::ErrorKind::NotConnected);
        assert_eq!(
            err.to_string(),
            "trace2e daemon misconfigured during connect: TRACE2E_TRANSPORT=grpc, but this binary was built \
             without trace2e-io's `grpc` feature (enable it for the gRPC baseline transport, or use \
             TRACE2E_TRANSPORT=shm)"
        );
    }

    #[test]
    fn an_unknown_transport_is_misconfigured() {
        let unavailable = select(Ok("carrier-pigeon".to_owned()), &config(), GRPC).unwrap_err();
        assert_eq!(unavailable.kind(), UnavailableKind::Misconfigured);
        assert_eq!(unavailable.detail(), "unknown TRACE2E_TRANSPORT=\"carrier-pigeon\" (expected \"shm\" or \"grpc\")");
    }
}
