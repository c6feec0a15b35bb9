//! P2M: the service processes talk to (enroll, unenroll, request, report).
//!
//! This module owns who the caller is and whether its claims are true: the caller is
//! identified from the Unix socket (`SO_PEERCRED`), never from a message field; an
//! enrolled path or socket is checked against `/proc/<pid>/fd/<fd>`; each process is
//! watched through a pidfd so that its exit releases everything it held. Decisions belong
//! to the [`Engine`]; this module only translates. Served over gRPC here (the measured
//! baseline); the shared-memory transport reuses [`Clients`] and [`check_enrollment`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};
use trace2e_proto::pb::p2m::{
    self as pb,
    p2m_server::{P2m, P2mServer},
};
use trace2e_proto::{Direction, Fd, GrantId, IoOutcome, ProcessId, Resource};

use crate::engine::{Engine, EngineError, ProcessInfo};
use crate::process::{self, ExitWatch, FdTarget, ProcError};

/// Largest P2M message the daemon decodes (a path is at most 4 KiB).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// Why a client's enrollment claim is refused or cannot be checked.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The fd refers to something else than claimed.
    #[error("fd {fd} of process {pid} is {actual}, not {claimed}")]
    Mismatch {
        /// Caller pid.
        pid: u32,
        /// The fd.
        fd: Fd,
        /// What the client said.
        claimed: String,
        /// What the kernel says.
        actual: String,
    },
    /// The claim itself is malformed.
    #[error("invalid enrollment: {0}")]
    Malformed(String),
    /// `/proc` could not answer.
    #[error(transparent)]
    Proc(#[from] ProcError),
}

/// What a client says an fd is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// A file, by absolute path.
    File(PathBuf),
    /// A TCP stream, by its two ends.
    Stream {
        /// Local end.
        local: SocketAddr,
        /// Peer end.
        peer: SocketAddr,
    },
}

/// Checks a client's claim about one of its fds against `/proc/<pid>/fd/<fd>`, and returns
/// the resource as the kernel names it.
pub fn check_enrollment(pid: u32, fd: Fd, claim: &Claim) -> Result<Resource, ClaimError> {
    let actual = process::fd_target(pid, fd)?;
    match (claim, actual) {
        (Claim::File(path), FdTarget::Path(real)) => {
            if !path.is_absolute() {
                return Err(ClaimError::Malformed(format!("path {} is not absolute", path.display())));
            }
            if *path != real {
                return Err(ClaimError::Mismatch {
                    pid,
                    fd,
                    claimed: path.display().to_string(),
                    actual: real.display().to_string(),
                });
            }
            Resource::file(real).map_err(|e| ClaimError::Malformed(e.to_string()))
        }
        (Claim::Stream { local, peer }, FdTarget::Socket(inode)) => {
            let (local, peer) = (process::canonical_addr(*local), process::canonical_addr(*peer));
            match process::tcp_socket(pid, inode)? {
                Some((l, p)) if process::canonical_addr(l) == local && process::canonical_addr(p) == peer => {
                    Ok(Resource::stream(local, peer))
                }
                Some((l, p)) => Err(ClaimError::Mismatch {
                    pid,
                    fd,
                    claimed: format!("tcp {local} -> {peer}"),
                    actual: format!("tcp {l} -> {p}"),
                }),
                None => Err(ClaimError::Mismatch {
                    pid,
                    fd,
                    claimed: format!("tcp {local} -> {peer}"),
                    actual: format!("socket:[{inode}] (not a TCP connection)"),
                }),
            }
        }
        (claim, actual) => Err(ClaimError::Mismatch {
            pid,
            fd,
            claimed: match claim {
                Claim::File(p) => p.display().to_string(),
                Claim::Stream { local, peer } => format!("tcp {local} -> {peer}"),
            },
            actual: match actual {
                FdTarget::Path(p) => p.display().to_string(),
                FdTarget::Socket(i) => format!("socket:[{i}]"),
                FdTarget::Other(o) => o,
            },
        }),
    }
}

/// The processes the daemon knows, by pid, each watched until it exits.
///
/// Shared by every P2M transport, so a process is attached once and its exit is handled
/// once whichever way it talks to the daemon.
#[derive(Debug)]
pub struct Clients {
    engine: Arc<Engine>,
    by_pid: Mutex<HashMap<u32, ProcessId>>,
}

impl Clients {
    /// An empty registry.
    pub fn new(engine: Arc<Engine>) -> Arc<Self> {
        Arc::new(Self { engine, by_pid: Mutex::new(HashMap::new()) })
    }

    /// The process behind a connection's peer credentials. On first contact the process
    /// is attached to the engine and watched: when it exits, the engine releases
    /// everything it held. Must be called inside a tokio runtime.
    pub fn identify(self: &Arc<Self>, pid: u32, uid: u32) -> Result<ProcessId, ProcError> {
        let mut by_pid = self.by_pid.lock();
        if let Some(id) = by_pid.get(&pid) {
            return Ok(*id);
        }
        let id = process::process_id(pid)?;
        let watch = ExitWatch::new(id)?;
        let exe = process::executable(pid).unwrap_or_default();
        self.engine.attach_process(ProcessInfo { id, exe, uid });
        by_pid.insert(pid, id);
        drop(by_pid);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            watch.exited().await;
            this.exited(id);
        });
        Ok(id)
    }

    fn exited(&self, id: ProcessId) {
        {
            let mut by_pid = self.by_pid.lock();
            if by_pid.get(&id.pid) == Some(&id) {
                by_pid.remove(&id.pid);
            }
        }
        tracing::debug!(process = %id, "process exited");
        self.engine.process_exited(id);
    }

    /// Number of live processes known.
    pub fn len(&self) -> usize {
        self.by_pid.lock().len()
    }

    /// Whether no process is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The P2M gRPC service.
#[derive(Debug, Clone)]
pub struct P2mService {
    engine: Arc<Engine>,
    clients: Arc<Clients>,
}

/// The P2M gRPC server, with the message size limit applied.
pub fn server(engine: Arc<Engine>, clients: Arc<Clients>) -> P2mServer<P2mService> {
    P2mServer::new(P2mService { engine, clients })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

impl P2mService {
    fn caller<T>(&self, request: &Request<T>) -> Result<ProcessId, Status> {
        let cred = request.extensions().get::<UdsConnectInfo>().and_then(|info| info.peer_cred).ok_or_else(|| {
            Status::unauthenticated("peer credentials unavailable: P2M is served on a Unix socket only")
        })?;
        let pid = cred.pid().filter(|p| *p > 0).ok_or_else(|| Status::unauthenticated("peer has no pid"))?;
        self.clients.identify(pid as u32, cred.uid()).map_err(proc_status)
    }
}

/// Maps engine failures (not denials: those are decisions) to gRPC statuses, in one place.
fn engine_status(e: EngineError) -> Status {
    let msg = e.to_string();
    match e {
        EngineError::NotEnrolled { .. } | EngineError::UnknownGrant { .. } | EngineError::UnknownProcess { .. } => {
            Status::not_found(msg)
        }
        EngineError::NotAFlowEndpoint { .. } => Status::invalid_argument(msg),
        #[allow(unreachable_patterns)]
        _ => Status::failed_precondition(msg),
    }
}

fn proc_status(e: ProcError) -> Status {
    match e {
        ProcError::NoSuchProcess { .. } => Status::failed_precondition(e.to_string()),
        ProcError::NoSuchFd { .. } => Status::invalid_argument(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

fn claim_status(e: ClaimError) -> Status {
    match e {
        ClaimError::Mismatch { .. } => Status::permission_denied(e.to_string()),
        ClaimError::Malformed(_) => Status::invalid_argument(e.to_string()),
        ClaimError::Proc(p) => proc_status(p),
    }
}

fn parse_claim(target: Option<pb::enroll_request::Target>) -> Result<Claim, Status> {
    match target {
        Some(pb::enroll_request::Target::File(f)) => {
            let path = PathBuf::from(f.path);
            if !path.is_absolute() {
                return Err(Status::invalid_argument(format!("path {} is not absolute", path.display())));
            }
            Ok(Claim::File(path))
        }
        Some(pb::enroll_request::Target::Stream(s)) => {
            let local =
                s.local.parse().map_err(|_| Status::invalid_argument(format!("bad local address {:?}", s.local)))?;
            let peer =
                s.peer.parse().map_err(|_| Status::invalid_argument(format!("bad peer address {:?}", s.peer)))?;
            Ok(Claim::Stream { local, peer })
        }
        None => Err(Status::invalid_argument("missing enrollment target (file or stream)")),
    }
}

#[tonic::async_trait]
impl P2m for P2mService {
    async fn enroll(&self, request: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        let process = self.caller(&request)?;
        let msg = request.into_inner();
        let fd = Fd(msg.fd);
        let claim = parse_claim(msg.target)?;
        let resource = check_enrollment(process.pid, fd, &claim).map_err(|e| {
            tracing::warn!(%process, %fd, error = %e, "enrollment refused");
            claim_status(e)
        })?;
        let text = resource.to_string();
        self.engine.enroll(process, fd, resource).map_err(engine_status)?;
        Ok(Response::new(pb::EnrollResponse { resource: text }))
    }

    async fn unenroll(&self, request: Request<pb::UnenrollRequest>) -> Result<Response<pb::UnenrollResponse>, Status> {
        let process = self.caller(&request)?;
        let fd = Fd(request.into_inner().fd);
        self.engine.unenroll(process, fd).map_err(engine_status)?;
        Ok(Response::new(pb::UnenrollResponse {}))
    }

    async fn request(&self, request: Request<pb::IoRequest>) -> Result<Response<pb::IoDecision>, Status> {
        let process = self.caller(&request)?;
        let msg = request.into_inner();
        let direction = Direction::try_from(msg.direction).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let decision = self.engine.request(process, Fd(msg.fd), direction).await.map_err(engine_status)?;
        Ok(Response::new((&decision).into()))
    }

    async fn report(&self, request: Request<pb::IoReport>) -> Result<Response<pb::ReportResponse>, Status> {
        let process = self.caller(&request)?;
        let msg = request.into_inner();
        if msg.grant == 0 {
            return Err(Status::invalid_argument("grant id 0 is never issued"));
        }
        let outcome = IoOutcome { ok: msg.ok, bytes: if msg.ok { msg.bytes } else { 0 } };
        self.engine.report(process, GrantId(msg.grant), outcome).map_err(engine_status)?;
        Ok(Response::new(pb::ReportResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_true_file_claim_is_accepted_and_a_lie_refused() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let real = file.path().canonicalize().unwrap();
        let pid = std::process::id();
        let fd = Fd(file.as_file().as_raw_fd());
        assert_eq!(check_enrollment(pid, fd, &Claim::File(real.clone())).unwrap(), Resource::File(real));
        let lie = check_enrollment(pid, fd, &Claim::File("/etc/passwd".into())).unwrap_err();
        assert!(matches!(lie, ClaimError::Mismatch { .. }), "{lie}");
        let stream_lie = Claim::Stream { local: "127.0.0.1:1".parse().unwrap(), peer: "127.0.0.1:2".parse().unwrap() };
        assert!(matches!(check_enrollment(pid, fd, &stream_lie), Err(ClaimError::Mismatch { .. })));
    }

    #[test]
    fn stream_claims_are_checked_against_the_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let pid = std::process::id();
        let fd = Fd(client.as_raw_fd());
        let (local, peer) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
        assert_eq!(check_enrollment(pid, fd, &Claim::Stream { local, peer }).unwrap(), Resource::stream(local, peer));
        let wrong = Claim::Stream { local, peer: "127.0.0.1:9".parse().unwrap() };
        assert!(matches!(check_enrollment(pid, fd, &wrong), Err(ClaimError::Mismatch { .. })));
    }
}
