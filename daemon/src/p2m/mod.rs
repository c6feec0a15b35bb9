//! P2M: the service processes talk to (enroll, unenroll, request, report).
//!
//! This module owns who the caller is and whether its claims are true: the caller is
//! identified from the Unix socket (`SO_PEERCRED`), never from a message field; an
//! enrolled path or socket is checked against `/proc/<pid>/fd/<fd>`; each process is
//! watched through a pidfd so that its exit releases everything it held. Decisions belong
//! to the [`Engine`]; the transports only translate: [`shm`] (shared-memory rings, the
//! default) and [`grpc`] (tonic on a Unix socket, the measured baseline) share
//! [`Clients`] and [`check_enrollment`].

pub mod grpc;
pub mod shm;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use trace2e_proto::{Fd, ProcessId, Resource};

use crate::engine::{Engine, ProcessInfo};
use crate::enrollment::UserId;
use crate::process::{self, ExitWatch, FdTarget, ProcError};

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
        self.engine.attach_process(ProcessInfo { id, exe, uid: UserId(uid) });
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
