//! What the kernel says about a client process: its start time and executable, what one
//! of its fds really is, and when it exits.
//!
//! This module owns every read of `/proc` and the pidfd watch. It trusts nothing a client
//! says: the P2M services use it to check a client's claims. It does not decide anything.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use tokio::io::unix::AsyncFd;
use trace2e_proto::{Fd, ProcessId};

/// Errors reading a process's state from `/proc`.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The process does not exist (any more).
    #[error("process {pid} does not exist")]
    NoSuchProcess {
        /// The pid.
        pid: u32,
    },
    /// The fd is not open in that process.
    #[error("fd {fd} is not open in process {pid}")]
    NoSuchFd {
        /// The pid.
        pid: u32,
        /// The fd.
        fd: Fd,
    },
    /// A `/proc` file did not have the expected shape.
    #[error("cannot parse {path}: {problem}")]
    Malformed {
        /// The file.
        path: String,
        /// What was wrong.
        problem: &'static str,
    },
    /// Any other I/O error.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: io::Error,
    },
}

fn read_err(path: &Path, pid: u32, e: io::Error) -> ProcError {
    if e.kind() == io::ErrorKind::NotFound {
        ProcError::NoSuchProcess { pid }
    } else {
        ProcError::Io { path: path.display().to_string(), source: e }
    }
}

/// The process instance behind `pid`: pid plus start time (field 22 of `/proc/PID/stat`).
pub fn process_id(pid: u32) -> Result<ProcessId, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    let text = fs::read_to_string(&path).map_err(|e| read_err(&path, pid, e))?;
    let starttime = parse_starttime(&text)
        .ok_or_else(|| ProcError::Malformed { path: path.display().to_string(), problem: "no start time field" })?;
    Ok(ProcessId { pid, starttime })
}

/// Field 22 (`starttime`) of a `/proc/PID/stat` line. The command name (field 2) may
/// contain spaces and parentheses, so fields are counted after its last `)`.
fn parse_starttime(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // Fields after the comm start at field 3 (state); starttime is field 22.
    after.split_ascii_whitespace().nth(22 - 3)?.parse().ok()
}

/// The executable of a process (`/proc/PID/exe`), without a ` (deleted)` suffix.
pub fn executable(pid: u32) -> Result<PathBuf, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/exe"));
    let target = fs::read_link(&path).map_err(|e| read_err(&path, pid, e))?;
    let text = target.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(stripped) => PathBuf::from(stripped),
        None => target,
    })
}

/// What an fd of a process refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FdTarget {
    /// A path in the filesystem.
    Path(PathBuf),
    /// A socket, by inode.
    Socket(u64),
    /// Anything else (pipe, anon inode, ...), as the kernel names it.
    Other(String),
}

/// Resolves `/proc/PID/fd/FD`.
pub fn fd_target(pid: u32, fd: Fd) -> Result<FdTarget, ProcError> {
    if fd.0 < 0 {
        return Err(ProcError::NoSuchFd { pid, fd });
    }
    let path = PathBuf::from(format!("/proc/{pid}/fd/{}", fd.0));
    let target = match fs::read_link(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(if Path::new(&format!("/proc/{pid}")).exists() {
                ProcError::NoSuchFd { pid, fd }
            } else {
                ProcError::NoSuchProcess { pid }
            });
        }
        Err(e) => return Err(ProcError::Io { path: path.display().to_string(), source: e }),
    };
    let text = target.to_string_lossy();
    if let Some(Ok(inode)) = text.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')).map(str::parse) {
        return Ok(FdTarget::Socket(inode));
    }
    if target.is_absolute() { Ok(FdTarget::Path(target)) } else { Ok(FdTarget::Other(text.into_owned())) }
}

/// The (local, peer) addresses of the TCP socket with this inode, as seen in the network
/// namespace of `pid`; `None` if no TCP socket has that inode.
pub fn tcp_socket(pid: u32, inode: u64) -> Result<Option<(SocketAddr, SocketAddr)>, ProcError> {
    for (file, v6) in [("tcp", false), ("tcp6", true)] {
        let path = PathBuf::from(format!("/proc/{pid}/net/{file}"));
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound && v6 => continue, // IPv6 disabled
            Err(e) => return Err(read_err(&path, pid, e)),
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if fields.len() < 10 || fields[9].parse::<u64>().ok() != Some(inode) {
                continue;
            }
            let malformed = || ProcError::Malformed { path: path.display().to_string(), problem: "bad socket address" };
            let local = parse_proc_addr(fields[1], v6).ok_or_else(malformed)?;
            let peer = parse_proc_addr(fields[2], v6).ok_or_else(malformed)?;
            return Ok(Some((local, peer)));
        }
    }
    Ok(None)
}

/// Parses `0100007F:1F90` (IPv4) or the 32-hex-digit IPv6 form of `/proc/net/tcp{,6}`:
/// the address is in host byte order per 32-bit word, the port in big-endian hex.
fn parse_proc_addr(text: &str, v6: bool) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = if v6 {
        if addr.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for word in 0..4 {
            let w = u32::from_str_radix(&addr[word * 8..word * 8 + 8], 16).ok()?;
            bytes[word * 4..word * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        if addr.len() != 8 {
            return None;
        }
        let w = u32::from_str_radix(addr, 16).ok()?;
        IpAddr::V4(Ipv4Addr::from(w.to_ne_bytes()))
    };
    Some(SocketAddr::new(ip, port))
}

/// An address with IPv4-mapped IPv6 forms folded to IPv4, so that the same endpoint
/// compares equal whichever socket family reported it.
pub fn canonical_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// Resolves once the process exits. Built on a pidfd, so it cannot confuse the process
/// with a later one that reuses its pid.
#[derive(Debug)]
pub struct ExitWatch {
    pidfd: AsyncFd<OwnedFd>,
}

impl ExitWatch {
    /// Watches `process`. Fails if it already exited (or its pid now belongs to another
    /// process, detected by the start time read after the pidfd was opened).
    pub fn new(process: ProcessId) -> Result<Self, ProcError> {
        let pid =
            rustix::process::Pid::from_raw(process.pid as i32).ok_or(ProcError::NoSuchProcess { pid: process.pid })?;
        let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::NONBLOCK).map_err(|e| {
            if e == rustix::io::Errno::SRCH {
                ProcError::NoSuchProcess { pid: process.pid }
            } else {
                ProcError::Io { path: format!("pidfd_open({})", process.pid), source: e.into() }
            }
        })?;
        // The pidfd now pins this pid; if its start time is still ours, it is our process.
        if process_id(process.pid)? != process {
            return Err(ProcError::NoSuchProcess { pid: process.pid });
        }
        // SAFETY: `fd` is an OwnedFd moved into the AsyncFd: it stays open and refers to the
        // same pidfd until the AsyncFd is dropped, and `as_raw_fd` always returns it.
        let pidfd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| ProcError::Io { path: format!("pidfd({})", process.pid), source: e.into() })?;
        Ok(Self { pidfd })
    }

    /// Waits until the process has exited.
    pub async fn exited(&self) {
        // A pidfd becomes readable when the process exits, and stays so.
        let _ = self.pidfd.readable().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starttime_is_field_22_even_with_odd_command_names() {
        let stat = "1234 (we ird) name)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_starttime(stat), Some(987654));
        assert_eq!(parse_starttime("garbage"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let me = process_id(std::process::id()).unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(executable(std::process::id()).unwrap().is_absolute());
    }

    #[test]
    fn proc_addresses_parse() {
        assert_eq!(parse_proc_addr("0100007F:1F90", false), Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(parse_proc_addr("00000000000000000000000001000000:0050", true), Some("[::1]:80".parse().unwrap()));
        assert_eq!(parse_proc_addr("zz:1", false), None);
    }

    #[test]
    fn fd_targets_resolve_files_and_sockets() {
        use std::os::fd::AsRawFd;
        let file = tempfile::NamedTempFile::new().unwrap();
        let pid = std::process::id();
        let fd = Fd(file.as_file().as_raw_fd());
        assert_eq!(fd_target(pid, fd).unwrap(), FdTarget::Path(file.path().canonicalize().unwrap()));
        assert!(matches!(fd_target(pid, Fd(987_654)), Err(ProcError::NoSuchFd { .. })));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let FdTarget::Socket(inode) = fd_target(pid, Fd(client.as_raw_fd())).unwrap() else { panic!("not a socket") };
        let (local, peer) = tcp_socket(pid, inode).unwrap().unwrap();
        assert_eq!(local, client.local_addr().unwrap());
        assert_eq!(peer, client.peer_addr().unwrap());
    }

    #[tokio::test]
    async fn exit_watch_fires_when_the_child_exits() {
        let mut child = std::process::Command::new("sleep").arg("0.2").spawn().unwrap();
        let id = process_id(child.id()).unwrap();
        let watch = ExitWatch::new(id).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(30), watch.exited()).await.expect("exit not seen");
        child.wait().unwrap();
    }
}
