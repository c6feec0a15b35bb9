//! P2M over shared-memory rings (`trace2e-fastpath`): the default transport.
//!
//! One accept thread hands each attaching process its own channel (a sealed memfd of
//! lanes and a doorbell) and a thread that serves it: a process's requests never wait
//! behind another's, and an idle channel costs a sleeping thread, no CPU. Messages are
//! `trace2e_proto::wire` encoded; the caller is the channel's peer (`SO_PEERCRED` at
//! attach), never a message field.
//!
//! A flow request usually completes at once (the engine decides without waiting); one
//! that must wait — for a reservation held by another flow, or for an owner's consent —
//! is handed to the runtime and answered when it completes, so the channel's other lanes
//! (the process's other threads) keep being served meanwhile.
//!
//! # Reports are posted, and consistency still holds
//!
//! Clients post the report of a completed I/O one-way, without ringing the doorbell.
//! The paper's guarantee is that another process touching the same resource sees the
//! provenance of every completed flow. It holds because:
//! 1. the flow's reservations (source read, destination write) are released only when
//!    the engine *applies* the report, never when the client posts it; any other flow on
//!    those resources waits in the reservation queue until then;
//! 2. messages on a lane are handled in order, so the same thread's next request sees
//!    its previous report applied;
//! 3. a posted report is applied at the latest within [`DRAIN_INTERVAL`]: while a channel
//!    has grants outstanding, a periodic timer in its epoll set wakes its thread that often
//!    even if nobody rings; and if the client dies first, its pidfd ends its grants
//!    conservatively (`Engine::process_exited`).
//!
//! Posting therefore only delays *other* flows on the same resources by at most the drain
//! interval (when the poster goes quiet right after its I/O), and takes one system call
//! and one wake-up off every mediated I/O (bench `file_read/64B`).
//!
//! One file, over 600 lines, on purpose: the consistency argument above spans the accept
//! thread, the channel thread's loop and the deferred answers, and reads best next to
//! all three.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, epoll};
use trace2e_fastpath::{AcceptError, Channel, Incoming, Lane, Listener, Placement, ServerConfig, Tag};
use trace2e_proto::wire::{EnrollTarget, ErrorCode, WireRequest, WireResponse};
use trace2e_proto::{Decision, ProcessId};

use super::{Claim, ClaimError, Clients, check_enrollment};
use crate::breakdown::{Breakdown, Stage, Timer};
use crate::engine::{Engine, EngineError};
use crate::process::ProcError;
use crate::socket::SocketError;

/// How long a posted report may wait in a quiet channel before the daemon applies it.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(1);

/// [`DRAIN_INTERVAL`] as a timespec.
const DRAIN_TIMESPEC: rustix::time::Timespec =
    rustix::time::Timespec { tv_sec: DRAIN_INTERVAL.as_secs() as i64, tv_nsec: DRAIN_INTERVAL.subsec_nanos() as i64 };

/// A non-blocking, close-on-exec eventfd: a wake-up source for a channel thread's epoll.
fn eventfd() -> rustix::io::Result<OwnedFd> {
    rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK)
}

/// Settings of the shared-memory P2M server.
#[derive(Debug, Clone)]
pub struct ShmConfig {
    /// Channel geometry, linger and per-wake quota.
    pub server: ServerConfig,
    /// Most processes attached at once; more are refused (they can still use gRPC).
    pub max_clients: usize,
}

impl Default for ShmConfig {
    fn default() -> Self {
        Self { server: ServerConfig::default(), max_clients: 1024 }
    }
}

/// The running shared-memory P2M server.
#[derive(Debug)]
pub struct ShmServer {
    shared: Arc<Shared>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl ShmServer {
    /// Serves on a bound listener until [`ShmServer::stop`].
    pub fn start(
        listener: Listener,
        config: ShmConfig,
        engine: Arc<Engine>,
        clients: Arc<Clients>,
        runtime: tokio::runtime::Handle,
    ) -> std::io::Result<Self> {
        listener.set_nonblocking(true).map_err(|e| std::io::Error::from_raw_os_error(e.errno.raw_os_error()))?;
        let shared = Arc::new(Shared {
            engine,
            clients,
            runtime,
            stop: AtomicBool::new(false),
            stopped: eventfd()?,
            attached: AtomicUsize::new(0),
            linger: config.server.linger,
            max_per_wake: config.server.max_per_wake.max(1),
        });
        let accept = std::thread::Builder::new().name("t2e-shm-accept".into()).spawn({
            let shared = Arc::clone(&shared);
            move || accept_loop(&listener, &config, &shared)
        })?;
        Ok(Self { shared, accept: Some(accept) })
    }

    /// Stops accepting; channel threads end at once.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Never read: it stays readable and wakes every channel thread's epoll.
        let _ = rustix::io::write(&self.shared.stopped, &1u64.to_ne_bytes());
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ShmServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug)]
struct Shared {
    engine: Arc<Engine>,
    clients: Arc<Clients>,
    runtime: tokio::runtime::Handle,
    stop: AtomicBool,
    /// Readable once the server stops: in every channel thread's epoll set, so that
    /// idle threads sleep without a timeout.
    stopped: OwnedFd,
    attached: AtomicUsize,
    /// How long a channel thread busy-polls after serving before it sleeps.
    linger: Duration,
    /// Most messages handled per scan of one channel.
    max_per_wake: usize,
}

/// Binds the listener, replacing a stale socket file as [`crate::socket::bind_unix`] does.
pub fn bind(path: &Path, config: &ShmConfig) -> Result<Listener, SocketError> {
    crate::socket::clear_stale_socket(path)?;
    let listener = Listener::bind(path, config.server).map_err(|e| SocketError::Bind {
        path: path.into(),
        source: std::io::Error::from_raw_os_error(e.errno.raw_os_error()),
    })?;
    crate::socket::set_mode(path, 0o666)?;
    Ok(listener)
}

fn accept_loop(listener: &Listener, config: &ShmConfig, shared: &Arc<Shared>) {
    let _runtime = shared.runtime.enter();
    while !shared.stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(listener, PollFlags::IN)];
        let timeout = rustix::event::Timespec { tv_sec: 0, tv_nsec: 200_000_000 };
        if rustix::event::poll(&mut fds, Some(&timeout)).unwrap_or(0) == 0 {
            continue;
        }
        match listener.accept() {
            Ok(incoming) => attach(incoming, config, shared),
            Err(AcceptError::Os(e)) if e.errno == rustix::io::Errno::AGAIN => {}
            Err(e) => tracing::warn!(error = %e, "shared-memory attach failed"),
        }
    }
}

fn attach(incoming: Incoming, config: &ShmConfig, shared: &Arc<Shared>) {
    let peer = incoming.peer();
    if shared.attached.load(Ordering::SeqCst) >= config.max_clients {
        tracing::warn!(pid = peer.pid, max = config.max_clients, "too many attached processes; refusing");
        return; // dropping `incoming` refuses the client
    }
    let process = match shared.clients.identify(peer.pid, peer.uid) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(pid = peer.pid, error = %e, "cannot identify attaching process");
            return;
        }
    };
    let channel = match incoming.attach() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%process, error = %e, "shared-memory attach failed");
            return;
        }
    };
    let shared = Arc::clone(shared);
    shared.attached.fetch_add(1, Ordering::SeqCst);
    let spawned = std::thread::Builder::new().name(format!("t2e-shm-{}", peer.pid)).spawn({
        let shared = Arc::clone(&shared);
        move || {
            let _runtime = shared.runtime.enter();
            match ChannelServer::new(channel, process, &shared) {
                Ok(mut server) => server.run(),
                Err(e) => tracing::warn!(%process, error = %e, "cannot serve channel"),
            }
            shared.attached.fetch_sub(1, Ordering::SeqCst);
        }
    });
    if let Err(e) = spawned {
        shared.attached.fetch_sub(1, Ordering::SeqCst);
        tracing::warn!(%process, error = %e, "cannot start a channel thread");
    }
}

/// A flow decision that completed on the runtime, to be answered by the channel thread.
type Completion = (Lane, Tag, Result<Decision, EngineError>);

/// One message copied out of the ring; its payload is a range of `Batch::bytes`.
struct Message {
    lane: Lane,
    tag: Tag,
    kind: u16,
    posted: bool,
    payload: std::ops::Range<usize>,
}

struct ChannelServer<'a> {
    channel: Channel,
    process: ProcessId,
    shared: &'a Arc<Shared>,
    /// Wakes this thread when a deferred decision completes.
    wake: Arc<OwnedFd>,
    completions: mpsc::Receiver<Completion>,
    completions_tx: mpsc::Sender<Completion>,
    /// Decisions handed to the runtime and not answered yet.
    deferred: usize,
    /// The lane of the last call: its client thread's CPU decides whether to linger.
    last_lane: Option<Lane>,
    /// Grants answered on this channel minus reports received: while positive, posted
    /// reports may be waiting, so the thread wakes every [`DRAIN_INTERVAL`].
    outstanding: usize,
    /// Fires every [`DRAIN_INTERVAL`] while armed; armed whenever the thread goes to
    /// sleep with grants outstanding, disarmed when it goes to sleep without.
    drain_timer: OwnedFd,
    drain_armed: bool,
    messages: Vec<Message>,
    bytes: Vec<u8>,
    reply: Vec<u8>,
    breakdown: Arc<Breakdown>,
    /// Doorbell, control socket, completion eventfd and pidfd, registered once: a sleep
    /// is one epoll_wait instead of a poll(2) that re-arms four wait queues (bench
    /// `file_read_placement/shm/same-core`).
    epoll: OwnedFd,
}

/// Tokens of the fds in a channel thread's epoll set.
const DOORBELL: u64 = 0;
const CONTROL: u64 = 1;
const WAKE: u64 = 2;
const PIDFD: u64 = 3;
const STOPPED: u64 = 4;
const DRAIN: u64 = 5;

impl<'a> ChannelServer<'a> {
    fn new(channel: Channel, process: ProcessId, shared: &'a Arc<Shared>) -> rustix::io::Result<Self> {
        let wake = eventfd()?;
        let (completions_tx, completions) = mpsc::channel();
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        // Edge-triggered: every ring is an event of its own (eventfd wakes its waiters on
        // each write), so the counter never needs resetting and a wake-up costs no read(2)
        // (bench `file_read_placement/shm/same-core`). A client that fills its counter
        // only stops its own rings.
        epoll::add(
            &epoll,
            channel.doorbell(),
            epoll::EventData::new_u64(DOORBELL),
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        )?;
        // Hang-ups only: bytes a client writes on its control socket after the handshake
        // must not make this level-triggered set spin.
        epoll::add(&epoll, channel.control(), epoll::EventData::new_u64(CONTROL), epoll::EventFlags::RDHUP)?;
        epoll::add(&epoll, &wake, epoll::EventData::new_u64(WAKE), epoll::EventFlags::IN)?;
        if let Some(pidfd) = channel.pidfd() {
            epoll::add(&epoll, pidfd, epoll::EventData::new_u64(PIDFD), epoll::EventFlags::IN)?;
        }
        epoll::add(&epoll, &shared.stopped, epoll::EventData::new_u64(STOPPED), epoll::EventFlags::IN)?;
        let drain_timer = rustix::time::timerfd_create(
            rustix::time::TimerfdClockId::Monotonic,
            rustix::time::TimerfdFlags::CLOEXEC | rustix::time::TimerfdFlags::NONBLOCK,
        )?;
        epoll::add(&epoll, &drain_timer, epoll::EventData::new_u64(DRAIN), epoll::EventFlags::IN)?;
        Ok(Self {
            channel,
            process,
            shared,
            wake: Arc::new(wake),
            completions,
            completions_tx,
            deferred: 0,
            last_lane: None,
            outstanding: 0,
            drain_timer,
            drain_armed: false,
            messages: Vec::new(),
            bytes: Vec::new(),
            reply: Vec::new(),
            breakdown: Arc::clone(&shared.engine.config().breakdown),
            epoll,
        })
    }

    fn run(&mut self) {
        tracing::debug!(process = %self.process, "shared-memory channel attached");
        let linger = self.shared.linger;
        let mut lingered = false;
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                break;
            }
            match self.drain() {
                Ok(true) => {
                    lingered = false;
                    continue;
                }
                Ok(false) => {}
                Err(()) => break,
            }
            if !linger.is_zero()
                && !lingered
                && let Some(placement) = self.client_placement()
                && placement != Placement::Unknown
            {
                // Poll while requests keep coming (the client then skips the doorbell and
                // waits without sleeping). With the client on another CPU, busy-poll: it
                // spins for its response. With the client on this CPU, busy-polling would
                // only keep it from running, so yield between scans: the client yields
                // too, and a hand-off is two `sched_yield`s instead of an eventfd write,
                // an epoll wake-up, a futex wait and a futex wake (about half the round
                // trip: `perf/machine_floor.c`, numbers in docs/decisions.md). Clearing
                // `polling` and scanning once more closes the race with a client that
                // saw `polling` set and did not ring.
                self.channel.begin_polling();
                let here = placement == Placement::Here;
                // Busy-polling reads the clock only every 64 empty scans (the linger
                // counts from the first such read after the last work), so a request
                // that lands right after a response, the common case, never waits for a
                // clock_gettime (bench `file_read_placement/shm/other-core`).
                let mut since: Option<Instant> = None;
                let mut idle = 0u32;
                let result = loop {
                    let result = self.drain();
                    match result {
                        Ok(true) => {
                            idle = 0;
                            since = None;
                        }
                        Ok(false) => {
                            if here {
                                std::thread::yield_now();
                            } else {
                                std::hint::spin_loop();
                            }
                            idle = idle.wrapping_add(1);
                        }
                        Err(()) => break result,
                    }
                    // A yield usually lets the client run a whole I/O: check every 4th.
                    let period = if here { 4 } else { 64 };
                    if idle % period == period - 1 {
                        let now = Instant::now();
                        let start = *since.get_or_insert(now);
                        if now.duration_since(start) >= linger || self.client_placement() != Some(placement) {
                            break result;
                        }
                        if !here {
                            // Poll only with otherwise idle CPU: another runnable thread
                            // here (another client, or another channel's thread) goes first.
                            std::thread::yield_now();
                        }
                    }
                };
                self.channel.end_polling();
                if result.is_err() {
                    break;
                }
                lingered = true;
                continue;
            }
            if !self.sleep() {
                break;
            }
            lingered = false;
        }
        tracing::debug!(process = %self.process, "shared-memory channel closed");
    }

    /// Answers completed deferred decisions and handles pending requests. `Ok(true)` if
    /// anything was done, `Err` if the channel is finished (client gone or corrupt).
    fn drain(&mut self) -> Result<bool, ()> {
        let mut worked = false;
        while self.deferred > 0
            && let Ok((lane, tag, result)) = self.completions.try_recv()
        {
            worked = true;
            self.deferred -= 1;
            let response = self.decision_response(result);
            self.respond(lane, tag, &response)?;
        }
        self.messages.clear();
        self.bytes.clear();
        let (messages, bytes) = (&mut self.messages, &mut self.bytes);
        let polled = self.channel.poll_requests(self.shared.max_per_wake, |req| {
            let start = bytes.len();
            bytes.extend_from_slice(req.payload);
            messages.push(Message {
                lane: req.lane,
                tag: req.tag,
                kind: req.kind,
                posted: req.posted,
                payload: start..bytes.len(),
            });
        });
        if let Err(corruption) = polled {
            tracing::warn!(process = %self.process, %corruption, "client wrote garbage into its channel; detached");
            return Err(());
        }
        let messages = std::mem::take(&mut self.messages);
        for m in &messages {
            worked = true;
            self.handle(m)?;
        }
        self.messages = messages;
        Ok(worked)
    }

    /// Where the client thread that sent the last request runs, relative to this one.
    fn client_placement(&self) -> Option<Placement> {
        self.last_lane.map(|lane| self.channel.client_placement(lane))
    }

    fn handle(&mut self, m: &Message) -> Result<(), ()> {
        if !m.posted {
            self.last_lane = Some(m.lane);
        }
        let serving = self.breakdown.start();
        let result = self.handle_timed(m, serving);
        self.breakdown.stop(Stage::Service, serving);
        result
    }

    /// Handles `m`; `serving` started when it was taken (a flow request's answer ends
    /// [`Stage::Answer`] with it).
    fn handle_timed(&mut self, m: &Message, serving: Timer) -> Result<(), ()> {
        let decoding = self.breakdown.start();
        let decoded = WireRequest::decode(m.kind, &self.bytes[m.payload.clone()]);
        self.breakdown.stop(Stage::Codec, decoding);
        let request = match decoded {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(process = %self.process, error = %e, "malformed P2M message");
                return self.answer(m, &error(ErrorCode::InvalidArgument, format!("malformed message: {e}")));
            }
        };
        let engine = &self.shared.engine;
        let response = match request {
            WireRequest::Enroll { fd, target } => {
                let claim = match target {
                    EnrollTarget::File(path) => Claim::File(path),
                    EnrollTarget::Stream { local, peer } => Claim::Stream { local, peer },
                };
                match check_enrollment(self.process.pid, fd, &claim) {
                    Err(e) => {
                        tracing::warn!(process = %self.process, %fd, error = %e, "enrollment refused");
                        claim_error(e)
                    }
                    Ok(resource) => {
                        let text = resource.to_string();
                        match engine.enroll(self.process, fd, resource) {
                            Ok(()) => WireResponse::Enrolled(text),
                            Err(e) => engine_error(e),
                        }
                    }
                }
            }
            WireRequest::Unenroll { fd } => match engine.unenroll(self.process, fd) {
                Ok(()) => WireResponse::Ack,
                Err(e) => engine_error(e),
            },
            WireRequest::Report { grant, outcome } => {
                self.outstanding = self.outstanding.saturating_sub(1);
                match engine.report(self.process, grant, outcome) {
                    Ok(()) => WireResponse::Ack,
                    Err(e) => {
                        if m.posted {
                            tracing::warn!(process = %self.process, %grant, error = %e, "posted report refused");
                        }
                        engine_error(e)
                    }
                }
            }
            // Most decisions need no waiting: take them at once, on this thread, and answer
            // a grant before its audit record is written (see `try_request_answering`).
            WireRequest::Request { fd, direction } => {
                let (channel, reply, breakdown) = (&mut self.channel, &mut self.reply, &*self.breakdown);
                let mut answered = None;
                let decided = engine.try_request_answering(self.process, fd, direction, |decision| {
                    if !m.posted {
                        let response = WireResponse::Decision(decision.clone());
                        answered = Some(send(channel, reply, breakdown, m.lane, m.tag, &response, self.process));
                        breakdown.stop(Stage::Answer, serving);
                    }
                });
                match decided {
                    Ok(Some(decision)) => match answered {
                        Some(sent) => {
                            self.count(&decision);
                            return sent;
                        }
                        None => self.decision_response(Ok(decision)),
                    },
                    Err(e) if !m.posted => {
                        let response = self.decision_response(Err(e));
                        let sent = self.answer(m, &response);
                        self.breakdown.stop(Stage::Answer, serving);
                        return sent;
                    }
                    Err(e) => self.decision_response(Err(e)),
                    Ok(None) => {
                        let (engine, process) = (Arc::clone(engine), self.process);
                        let (tx, wake, lane, tag) =
                            (self.completions_tx.clone(), Arc::clone(&self.wake), m.lane, m.tag);
                        self.deferred += 1;
                        self.shared.runtime.spawn(async move {
                            let result = engine.request(process, fd, direction).await;
                            if tx.send((lane, tag, result)).is_ok() {
                                let _ = rustix::io::write(wake.as_fd(), &1u64.to_ne_bytes());
                            }
                        });
                        return Ok(());
                    }
                }
            }
        };
        self.answer(m, &response)
    }

    fn decision_response(&mut self, result: Result<Decision, EngineError>) -> WireResponse {
        match result {
            Ok(decision) => {
                self.count(&decision);
                WireResponse::Decision(decision)
            }
            Err(e) => engine_error(e),
        }
    }

    /// Counts an answered grant as outstanding until its report.
    fn count(&mut self, decision: &Decision) {
        if matches!(decision, Decision::Grant(_)) {
            self.outstanding += 1;
        }
    }

    fn answer(&mut self, m: &Message, response: &WireResponse) -> Result<(), ()> {
        if m.posted {
            return Ok(());
        }
        self.respond(m.lane, m.tag, response)
    }

    fn respond(&mut self, lane: Lane, tag: Tag, response: &WireResponse) -> Result<(), ()> {
        send(&mut self.channel, &mut self.reply, &self.breakdown, lane, tag, response, self.process)
    }

    /// Sleeps until the doorbell rings, a deferred decision completes, the client goes,
    /// the server stops, or (with grants outstanding) the drain timer fires. An idle
    /// channel has its timer disarmed: 100 idle clients cost no wake-ups (bench `idle`).
    /// `false` when the client is gone.
    ///
    /// The timer is periodic and changed only when the channel goes busy or idle, not
    /// armed per sleep: an epoll timeout per sleep (an hrtimer programmed and cancelled
    /// each time) cost microseconds per read with daemon and client on one CPU
    /// (`file_read_placement/shm/same-core`, `t2e-load` on one CPU; numbers in
    /// docs/decisions.md).
    fn sleep(&mut self) -> bool {
        let busy = self.outstanding > 0;
        if busy != self.drain_armed {
            let interval = if busy { DRAIN_TIMESPEC } else { rustix::time::Timespec { tv_sec: 0, tv_nsec: 0 } };
            let spec = rustix::time::Itimerspec { it_interval: interval, it_value: interval };
            match rustix::time::timerfd_settime(&self.drain_timer, rustix::time::TimerfdTimerFlags::empty(), &spec) {
                Ok(_) => self.drain_armed = busy,
                // Cannot happen with a valid timerfd and spec; if it did, posted reports
                // would wait for the client's next call or its exit.
                Err(e) => tracing::error!(process = %self.process, error = %e, "cannot set the drain timer"),
            }
        }
        let mut events = [epoll::Event { flags: epoll::EventFlags::empty(), data: epoll::EventData::new_u64(0) }; 6];
        let n = match epoll::wait(&self.epoll, &mut events, None) {
            Ok(n) => n,
            Err(_) => return !self.channel.peer_gone(),
        };
        let (mut gone, mut woken) = (false, false);
        for event in &events[..n.min(events.len())] {
            // `Event` is packed: copy its fields out before use.
            let (flags, data) = (event.flags, event.data);
            match data.u64() {
                CONTROL => {
                    gone |= flags.intersects(epoll::EventFlags::HUP | epoll::EventFlags::RDHUP | epoll::EventFlags::ERR)
                }
                PIDFD => gone = true,
                WAKE => woken = true,
                DRAIN => {
                    let mut expirations = [0u8; 8];
                    let _ = rustix::io::read(&self.drain_timer, &mut expirations);
                }
                _ => {}
            }
        }
        if gone && self.channel.peer_gone() {
            return false;
        }
        if woken {
            let mut buf = [0u8; 8];
            let _ = rustix::io::read(self.wake.as_fd(), &mut buf);
        }
        true
    }
}

/// Encodes `response` into `reply` and sends it on `channel`; `Err` when the channel is
/// finished. Takes the channel's parts, not the channel server, so that it can answer
/// from inside an engine call ([`ChannelServer::handle_timed`]).
fn send(
    channel: &mut Channel,
    reply: &mut Vec<u8>,
    breakdown: &Breakdown,
    lane: Lane,
    tag: Tag,
    response: &WireResponse,
    process: ProcessId,
) -> Result<(), ()> {
    let encoding = breakdown.start();
    let kind = response.encode(reply);
    breakdown.stop(Stage::Codec, encoding);
    match channel.respond(lane, tag, kind, reply) {
        Ok(()) => Ok(()),
        // A client that does not read its responses only hurts itself.
        Err(trace2e_fastpath::RespondError::Full) => Ok(()),
        Err(e) => {
            tracing::warn!(%process, error = %e, "cannot answer; channel closed");
            Err(())
        }
    }
}

fn error(code: ErrorCode, message: String) -> WireResponse {
    WireResponse::Error { code, message }
}

/// An engine failure (not a denial: that is a decision) as a wire error, with the code
/// every service gives it ([`crate::status::engine_code`]).
pub(crate) fn engine_error(e: EngineError) -> WireResponse {
    error(crate::status::wire_code(crate::status::engine_code(&e)), e.to_string())
}

fn claim_error(e: ClaimError) -> WireResponse {
    let code = match &e {
        ClaimError::Mismatch { .. } => ErrorCode::PermissionDenied,
        ClaimError::Malformed(_) => ErrorCode::InvalidArgument,
        ClaimError::Proc(ProcError::NoSuchProcess { .. }) => ErrorCode::FailedPrecondition,
        ClaimError::Proc(ProcError::NoSuchFd { .. }) => ErrorCode::InvalidArgument,
        ClaimError::Proc(_) => ErrorCode::Internal,
    };
    error(code, e.to_string())
}
