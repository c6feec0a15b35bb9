//! The system calls around a channel: fd passing, peer identity, the doorbell,
//! futexes, liveness polls, and the welcome message. Nothing here touches the region.

use core::mem::MaybeUninit;
use core::time::Duration;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags, recvmsg, sendmsg,
};
use rustix::thread::futex;

use crate::error::OsError;
use crate::layout::{Geometry, MAGIC, VERSION};
use crate::sync::AtomicU32;

/// `SO_PEERPIDFD` (Linux 6.5+), spelled out so older `libc` releases also build.
const SO_PEERPIDFD: libc::c_int = 77;

/// The daemon's one message on the control socket, sent with `[memfd, doorbell]`.
///
/// Little-endian: `magic u64 | version u32 | lanes u16 | slots u16 | data_bytes u32 |
/// region_size u32 | reserved u64 (0)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Welcome {
    pub(crate) geometry: Geometry,
    pub(crate) region_size: u32,
}

pub(crate) const WELCOME_LEN: usize = 32;

impl Welcome {
    pub(crate) fn encode(&self) -> [u8; WELCOME_LEN] {
        let mut b = [0u8; WELCOME_LEN];
        b[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..14].copy_from_slice(&self.geometry.lanes().to_le_bytes());
        b[14..16].copy_from_slice(&self.geometry.slots().to_le_bytes());
        b[16..20].copy_from_slice(&self.geometry.data_bytes().to_le_bytes());
        b[20..24].copy_from_slice(&self.region_size.to_le_bytes());
        b
    }

    /// Parses and checks a welcome; the error names the field.
    pub(crate) fn decode(b: &[u8]) -> Result<Self, crate::ConnectError> {
        use crate::ConnectError::{Geometry as Geo, Welcome as Bad};
        let b: &[u8; WELCOME_LEN] = b.try_into().map_err(|_| Bad("length"))?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        if b[0..8] != MAGIC.to_le_bytes() {
            return Err(Bad("magic"));
        }
        if u32_at(8) != VERSION {
            return Err(Bad("version"));
        }
        let geometry = Geometry::new(u16_at(12), u16_at(14), u32_at(16)).map_err(Geo)?;
        let region_size = u32_at(20);
        if region_size as usize != geometry.region_size() {
            return Err(Bad("region size"));
        }
        if b[24..32] != [0; 8] {
            return Err(Bad("reserved"));
        }
        Ok(Self { geometry, region_size })
    }
}

/// Sends `bytes` with `fds` attached (SCM_RIGHTS), without blocking.
pub(crate) fn send_with_fds(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), OsError> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(OsError { op: "sendmsg (control buffer)", errno: Errno::NOBUFS });
    }
    let iov = [std::io::IoSlice::new(bytes)];
    let sent = sendmsg(sock, &iov, &mut control, SendFlags::NOSIGNAL | SendFlags::DONTWAIT)
        .map_err(OsError::new("sendmsg"))?;
    if sent != bytes.len() {
        return Err(OsError { op: "sendmsg (short)", errno: Errno::MSGSIZE });
    }
    Ok(())
}

/// What [`recv_with_fds`] got.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) len: usize,
    pub(crate) fds: Vec<OwnedFd>,
    pub(crate) truncated: bool,
}

/// Receives one message and up to two fds (`MSG_CMSG_CLOEXEC`); reports truncation
/// of data or control (fds beyond the two are closed by the kernel, not leaked).
pub(crate) fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> Result<Received, OsError> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Err(Errno::INTR) => continue,
            r => break r.map_err(OsError::new("recvmsg"))?,
        }
    };
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    let truncated = msg.flags.intersects(ReturnFlags::CTRUNC | ReturnFlags::TRUNC);
    Ok(Received { len: msg.bytes, fds, truncated })
}

/// A pidfd for the process at the other end of `sock`: `SO_PEERPIDFD` where the
/// kernel has it (6.5+), else `pidfd_open(pid)` followed by a check that the
/// connection is still up (so `pid` was not recycled between `SO_PEERCRED` and
/// `pidfd_open`). `None` if neither works; liveness then rests on the socket alone.
pub(crate) fn peer_pidfd(sock: BorrowedFd<'_>, pid: Option<rustix::process::Pid>) -> Option<OwnedFd> {
    let mut fd: libc::c_int = -1;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `sock` is a valid socket; `fd` and `len` are valid for writes of an
    // int and a socklen_t, and `len` says how much room `fd` has.
    let rc = unsafe {
        libc::getsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, SO_PEERPIDFD, (&raw mut fd).cast(), &raw mut len)
    };
    if rc == 0 && fd >= 0 && len as usize == size_of::<libc::c_int>() {
        // SAFETY: the kernel just gave us this fd; nothing else owns it.
        return Some(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let pidfd = rustix::process::pidfd_open(pid?, rustix::process::PidfdFlags::NONBLOCK).ok()?;
    (!hung_up(sock)).then_some(pidfd)
}

/// Has the peer of this (connected) socket closed it?
pub(crate) fn hung_up(sock: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(&sock, PollFlags::RDHUP)];
    match poll(&mut fds, Some(&rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 })) {
        Ok(_) => fds[0].revents().intersects(PollFlags::HUP | PollFlags::RDHUP | PollFlags::ERR | PollFlags::NVAL),
        Err(_) => false,
    }
}

/// Has the process behind this pidfd exited?
pub(crate) fn exited(pidfd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
    match poll(&mut fds, Some(&rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 })) {
        Ok(_) => !fds[0].revents().is_empty(),
        Err(_) => false,
    }
}

/// What [`wait_readable`] saw.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Readiness {
    pub(crate) doorbell: bool,
    pub(crate) gone: bool,
}

/// Sleeps until the doorbell rings, the control socket hangs up, or the pidfd fires.
pub(crate) fn wait_readable(
    doorbell: BorrowedFd<'_>,
    ctl: BorrowedFd<'_>,
    pidfd: Option<BorrowedFd<'_>>,
    timeout: Option<Duration>,
) -> Result<Readiness, OsError> {
    let ts = timeout.map(timespec);
    let mut fds = [
        PollFd::new(&doorbell, PollFlags::IN),
        PollFd::new(&ctl, PollFlags::RDHUP),
        PollFd::new(&ctl, PollFlags::empty()),
    ];
    let n = if let Some(p) = pidfd.as_ref() {
        fds[2] = PollFd::new(p, PollFlags::IN);
        3
    } else {
        2
    };
    match poll(&mut fds[..n], ts.as_ref()) {
        Ok(_) | Err(Errno::INTR) => {}
        Err(e) => return Err(OsError { op: "poll", errno: e }),
    }
    let bad = PollFlags::HUP | PollFlags::RDHUP | PollFlags::ERR | PollFlags::NVAL;
    Ok(Readiness {
        doorbell: fds[0].revents().contains(PollFlags::IN),
        gone: fds[1].revents().intersects(bad) || (n == 3 && !fds[2].revents().is_empty()),
    })
}

/// Rings a doorbell eventfd. A full counter (`EAGAIN`) already means "rung".
pub(crate) fn ring(doorbell: BorrowedFd<'_>) {
    let _ = rustix::io::write(doorbell, &1u64.to_ne_bytes());
}

/// Resets a doorbell eventfd; returns whether it had been rung.
pub(crate) fn clear(doorbell: BorrowedFd<'_>) -> bool {
    let mut buf = [0u8; 8];
    matches!(rustix::io::read(doorbell, &mut buf), Ok(8))
}

/// FUTEX_WAIT (shared) on `word` while it holds `expected`, for at most `timeout`.
/// Spurious returns are fine: every caller re-checks.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = timespec(timeout);
    let _ = futex::wait(word, futex::Flags::empty(), expected, Some(&ts));
}

/// FUTEX_WAKE (shared) up to `n` waiters on `word`.
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) {
    let _ = futex::wake(word, futex::Flags::empty(), n);
}

/// The CPU this thread runs on (glibc reads it from rseq: no system call).
pub(crate) fn current_cpu() -> u32 {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).unwrap_or(u32::MAX)
}

fn timespec(d: Duration) -> rustix::event::Timespec {
    rustix::event::Timespec { tv_sec: d.as_secs().min(i64::MAX as u64) as i64, tv_nsec: i64::from(d.subsec_nanos()) }
}

/// `AsFd` for an `Option<OwnedFd>`.
pub(crate) fn opt_fd(fd: &Option<OwnedFd>) -> Option<BorrowedFd<'_>> {
    fd.as_ref().map(|f| f.as_fd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welcome_round_trip_and_checks() {
        let g = Geometry::new(4, 8, 4096).unwrap();
        let w = Welcome { geometry: g, region_size: g.region_size() as u32 };
        let bytes = w.encode();
        assert_eq!(Welcome::decode(&bytes), Ok(w));
        let mut bad = bytes;
        bad[0] ^= 1;
        assert_eq!(Welcome::decode(&bad), Err(crate::ConnectError::Welcome("magic")));
        let mut bad = bytes;
        bad[8] ^= 1;
        assert_eq!(Welcome::decode(&bad), Err(crate::ConnectError::Welcome("version")));
        let mut bad = bytes;
        bad[20] ^= 1;
        assert_eq!(Welcome::decode(&bad), Err(crate::ConnectError::Welcome("region size")));
        assert!(Welcome::decode(&bytes[..31]).is_err());
    }
}
