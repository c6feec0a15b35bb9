//! What a mediated I/O is: an enrolled descriptor, and one flow per read or write.
//!
//! It owns the protocol order (enroll before use; request, perform only if granted,
//! report; unenroll before close) and the error policy (fail closed; never lose the
//! result of an I/O that happened). It does not know how messages reach the daemon
//! (`transport`) nor which std type performs the I/O (`fs`, `net`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use trace2e_proto::{Decision, Direction, Fd, IoOutcome};

use crate::error::Denied;
use crate::transport::{self, Target};

/// An fd registered with the daemon; unregisters it on drop.
///
/// The owner must drop its `Enrollment` *before* closing the fd (declare it as the first
/// field): once the fd is closed its number can be reused by another thread, whose
/// enrollment this unenroll would otherwise remove.
#[derive(Debug)]
pub(crate) struct Enrollment {
    fd: RawFd,
    target: Target,
    /// The process that enrolled `fd`. A forked child shares the descriptor but is a
    /// different process for the daemon: it enrolls again before its first flow.
    pid: AtomicU32,
    /// The session `fd` is enrolled in ([`transport::Client::session`]): after a daemon
    /// restart, or in a forked child, it enrolls again before its next flow.
    session: AtomicU64,
}

impl Enrollment {
    /// Enrolls `fd` as `target`.
    pub(crate) fn new(fd: BorrowedFd<'_>, target: Target) -> io::Result<Self> {
        let fd = fd.as_raw_fd();
        let ((), client) = transport::with_client(|c| c.transport.enroll(Fd(fd), &target))?;
        Ok(Self { fd, target, pid: AtomicU32::new(client.pid), session: AtomicU64::new(client.session) })
    }

    /// Enrolls `fd` as the file it refers to, found through `/proc/self/fd`.
    pub(crate) fn file(fd: BorrowedFd<'_>) -> io::Result<Self> {
        let path = file_path(fd)?;
        Self::new(fd, Target::File(path))
    }

    /// What the fd is enrolled as.
    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    /// Enrolls a duplicate of this fd (`try_clone`) as the same target.
    pub(crate) fn duplicate(&self, fd: BorrowedFd<'_>) -> io::Result<Self> {
        Self::new(fd, self.target.clone())
    }

    /// One flow: asks the daemon, performs `io` only if granted, reports its outcome.
    ///
    /// A denial is [`Denied`] and an unreachable daemon is
    /// [`DaemonUnavailable`](crate::DaemonUnavailable); in both cases `io` is not run.
    /// A failed report is only logged: the I/O happened, its result must reach the caller.
    pub(crate) fn flow(&self, direction: Direction, io: impl FnOnce() -> io::Result<usize>) -> io::Result<usize> {
        let (decision, client) = transport::with_client(|c| {
            if self.session.load(Ordering::Acquire) != c.session {
                c.transport.enroll(Fd(self.fd), &self.target)?;
                self.session.store(c.session, Ordering::Release);
                self.pid.store(c.pid, Ordering::Release);
            }
            c.transport.request(Fd(self.fd), direction)
        })?;
        let grant = match decision {
            Decision::Grant(grant) => grant,
            Decision::Denied(denial) => return Err(Denied::new(direction, denial).into()),
        };
        let result = io();
        let outcome = match &result {
            Ok(n) => IoOutcome { ok: true, bytes: *n as u64 },
            Err(_) => IoOutcome { ok: false, bytes: 0 },
        };
        if let Err(e) = client.transport.report(grant, outcome) {
            tracing::warn!(fd = self.fd, %grant, %direction, error = %e, "trace2e: could not report a performed I/O");
        }
        result
    }
}

impl Drop for Enrollment {
    fn drop(&mut self) {
        // A forked child that never used the fd never enrolled it.
        if self.pid.load(Ordering::Acquire) != transport::current_pid() {
            return;
        }
        let session = self.session.load(Ordering::Acquire);
        let result = transport::client().and_then(|c| {
            // Enrolled with a daemon that has restarted since: the new one never knew it.
            if c.session != session { Ok(()) } else { c.transport.unenroll(Fd(self.fd)) }
        });
        if let Err(e) = result {
            tracing::warn!(fd = self.fd, error = %e, "trace2e: could not unenroll a closed descriptor");
        }
    }
}

/// The absolute canonical path of the file `fd` refers to: what the daemon sees in
/// `/proc/<pid>/fd/<fd>`.
fn file_path(fd: BorrowedFd<'_>) -> io::Result<PathBuf> {
    let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    if !path.is_absolute() {
        // pipe:[123], socket:[456], anon_inode:...: not a file trace2e can name.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("trace2e: descriptor refers to {}, not to a file", path.display()),
        ));
    }
    Ok(path)
}
