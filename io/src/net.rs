//! Mediated TCP: a drop-in for [`std::net`]'s [`TcpStream`] and [`TcpListener`].
//!
//! A connected or accepted stream is enrolled with the daemon as
//! `tcp://LOCAL/PEER`; every read and write on it is one flow; dropping it unenrolls it.
//! Everything else of `std::net` (addresses, `ToSocketAddrs`, `Shutdown`, UDP) is
//! re-exported unchanged: UDP is not mediated.
//!
//! # `TRACE2E_BIND_ADDR`
//!
//! When this environment variable holds an IP address, [`TcpStream::connect`] and
//! [`TcpStream::connect_timeout`] bind the local end of each outgoing connection to that
//! address (port chosen by the kernel) before connecting. This lets several simulated
//! nodes share one host on `127.0.0.2`, `127.0.0.3`, ...: the daemons map a peer address to
//! the node owning it. An address of the other family than the destination fails with
//! [`io::ErrorKind::InvalidInput`]; an unparsable value fails every connect the same way.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use trace2e_proto::Direction;

use crate::mediation::Enrollment;
use crate::transport::Target;

pub use std::net::{
    AddrParseError, IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, SocketAddrV6, ToSocketAddrs,
    UdpSocket,
};

/// Replaces [`std::net::TcpStream`]: a TCP connection whose reads and writes are mediated.
///
/// Each `read`, `read_vectored`, `peek`, `write` and `write_vectored` is one flow (see
/// [`crate::fs::File`] for the errors). `flush`, `shutdown` and socket options are not
/// flows.
///
/// A blocking read first waits for the socket to be readable, honouring the read timeout,
/// and only then asks the daemon: the daemon's reservation of the stream is held for the
/// copy out of the kernel, not while waiting for the peer. A timed-out wait fails like
/// std's (`WouldBlock`) and is no flow. Writes ask first: a write blocked on a full send
/// buffer holds its reservation until the peer reads.
///
/// The escapes [`TcpStream::into_std`], [`IntoRawFd`] and `OwnedFd::from` hand out an
/// unmediated socket: they unenroll it and nothing done through it is traced.
pub struct TcpStream {
    // Declared first: it unenrolls the fd before `inner` closes it (see `Enrollment`).
    enrollment: Enrollment,
    inner: std::net::TcpStream,
}

/// Reads `TRACE2E_BIND_ADDR`.
fn bind_addr() -> io::Result<Option<IpAddr>> {
    match std::env::var("TRACE2E_BIND_ADDR") {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Ok(s) if s.trim().is_empty() => Ok(None),
        Ok(s) => s.trim().parse().map(Some).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("trace2e: TRACE2E_BIND_ADDR={s:?} is not an IP address"),
            )
        }),
        Err(e) => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("trace2e: TRACE2E_BIND_ADDR: {e}"))),
    }
}

/// Connects a std stream, from `TRACE2E_BIND_ADDR` if set.
fn connect_std(addr: &SocketAddr, timeout: Option<Duration>) -> io::Result<std::net::TcpStream> {
    let Some(ip) = bind_addr()? else {
        return match timeout {
            None => std::net::TcpStream::connect(addr),
            Some(t) => std::net::TcpStream::connect_timeout(addr, t),
        };
    };
    if ip.is_ipv4() != addr.is_ipv4() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("trace2e: TRACE2E_BIND_ADDR={ip} cannot connect to {addr}: the address families differ"),
        ));
    }
    let socket = Socket::new(Domain::for_address(*addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SocketAddr::new(ip, 0).into())?;
    match timeout {
        None => socket.connect(&(*addr).into())?,
        Some(t) => socket.connect_timeout(&(*addr).into(), t)?,
    }
    Ok(socket.into())
}

/// Waits until a blocking socket is readable (data, end of stream or error), within its
/// read timeout. Nonblocking sockets return at once: their read reports `WouldBlock`.
fn wait_readable(socket: &std::net::TcpStream) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    // SAFETY: F_GETFL on a descriptor we own (borrowed from `socket`); no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK != 0 {
        return Ok(());
    }
    let deadline = socket.read_timeout()?.map(|t| Instant::now() + t);
    loop {
        let timeout_ms = match deadline {
            None => -1,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Round up so that a sub-millisecond remainder still waits.
                i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
            }
        };
        let mut pollfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: `pollfd` is a valid, exclusively borrowed array of one element for the
        // duration of the call.
        let ready = unsafe { libc::poll(&mut pollfd, 1, timeout_ms) };
        match ready {
            0 => return Err(io::Error::from_raw_os_error(libc::EAGAIN)), // what std's timed-out read returns
            n if n > 0 => return Ok(()),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

impl TcpStream {
    /// Replaces [`std::net::TcpStream::connect`]: connects (from `TRACE2E_BIND_ADDR` if
    /// set, see the [module docs](self)), then enrolls the stream. If the daemon cannot be
    /// reached the connection is closed and `connect` fails with
    /// [`DaemonUnavailable`](crate::DaemonUnavailable).
    pub fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        let mut last = None;
        for addr in addr.to_socket_addrs()? {
            match connect_std(&addr, None) {
                Ok(stream) => return TcpStream::from_std(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "could not resolve to any addresses")))
    }

    /// Replaces [`std::net::TcpStream::connect_timeout`]: as [`TcpStream::connect`].
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        TcpStream::from_std(connect_std(addr, Some(timeout))?)
    }

    /// Wraps a connected std stream, enrolling it by its local and peer addresses.
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        let target = Target::Stream { local: stream.local_addr()?, peer: stream.peer_addr()? };
        let enrollment = Enrollment::new(stream.as_fd(), target)?;
        Ok(TcpStream { enrollment, inner: stream })
    }

    /// Unwraps the std stream. **An escape**: the socket is unenrolled and I/O through the
    /// returned stream is not mediated nor traced.
    pub fn into_std(self) -> std::net::TcpStream {
        let TcpStream { enrollment, inner } = self;
        drop(enrollment);
        inner
    }

    /// Replaces [`std::net::TcpStream::peer_addr`].
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    /// Replaces [`std::net::TcpStream::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Replaces [`std::net::TcpStream::shutdown`] (not a flow).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.shutdown(how)
    }

    /// Replaces [`std::net::TcpStream::try_clone`]: the duplicate socket is enrolled as
    /// the same stream.
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        let inner = self.inner.try_clone()?;
        let enrollment = self.enrollment.duplicate(inner.as_fd())?;
        Ok(TcpStream { enrollment, inner })
    }

    /// Replaces [`std::net::TcpStream::set_read_timeout`]. The timeout bounds the wait
    /// for readability that precedes each read's flow request.
    pub fn set_read_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.inner.set_read_timeout(dur)
    }

    /// Replaces [`std::net::TcpStream::set_write_timeout`].
    pub fn set_write_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.inner.set_write_timeout(dur)
    }

    /// Replaces [`std::net::TcpStream::read_timeout`].
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        self.inner.read_timeout()
    }

    /// Replaces [`std::net::TcpStream::write_timeout`].
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        self.inner.write_timeout()
    }

    /// Replaces [`std::net::TcpStream::peek`]: a read flow, like [`Read::read`].
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        wait_readable(&self.inner)?;
        self.enrollment.flow(Direction::Read, || self.inner.peek(buf))
    }

    /// Replaces [`std::net::TcpStream::set_nodelay`].
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.inner.set_nodelay(nodelay)
    }

    /// Replaces [`std::net::TcpStream::nodelay`].
    pub fn nodelay(&self) -> io::Result<bool> {
        self.inner.nodelay()
    }

    /// Replaces [`std::net::TcpStream::set_ttl`].
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.set_ttl(ttl)
    }

    /// Replaces [`std::net::TcpStream::ttl`].
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.ttl()
    }

    /// Replaces [`std::net::TcpStream::take_error`].
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.take_error()
    }

    /// Replaces [`std::net::TcpStream::set_nonblocking`]. A nonblocking read asks the
    /// daemon at once; a `WouldBlock` is reported as a failed flow of 0 bytes.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.set_nonblocking(nonblocking)
    }
}

impl Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Wait for the peer *before* asking the daemon: a grant reserves the stream (and,
        // for a read, the process) until it is reported, and a peer may take minutes to
        // send. Only the copy out of the kernel runs under the reservation. If another
        // reader of a shared socket takes the data first, this read blocks while granted:
        // the daemon's lease bounds that.
        wait_readable(&self.inner)?;
        let inner = &self.inner;
        self.enrollment.flow(Direction::Read, || (&*inner).read(buf))
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        wait_readable(&self.inner)?;
        let inner = &self.inner;
        self.enrollment.flow(Direction::Read, || (&*inner).read_vectored(bufs))
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&*self).read_vectored(bufs)
    }
}

impl Write for &TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let inner = &self.inner;
        self.enrollment.flow(Direction::Write, || (&*inner).write(buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let inner = &self.inner;
        self.enrollment.flow(Direction::Write, || (&*inner).write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        (&self.inner).flush()
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

/// **An escape**: the socket is unenrolled and no longer mediated.
impl IntoRawFd for TcpStream {
    fn into_raw_fd(self) -> RawFd {
        self.into_std().into_raw_fd()
    }
}

/// **An escape**: the socket is unenrolled and no longer mediated.
impl From<TcpStream> for OwnedFd {
    fn from(stream: TcpStream) -> OwnedFd {
        stream.into_std().into()
    }
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TcpStream");
        if let Target::Stream { local, peer } = self.enrollment.target() {
            d.field("addr", local).field("peer", peer);
        }
        d.field("fd", &self.inner.as_raw_fd()).finish()
    }
}

/// Replaces [`std::net::TcpListener`]: accepted streams are enrolled [`TcpStream`]s.
///
/// The listener itself carries no data and is not enrolled; waiting in `accept` involves
/// no daemon. If an accepted stream cannot be enrolled, it is closed and `accept` fails.
#[derive(Debug)]
pub struct TcpListener {
    inner: std::net::TcpListener,
}

impl TcpListener {
    /// Replaces [`std::net::TcpListener::bind`].
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        Ok(TcpListener { inner: std::net::TcpListener::bind(addr)? })
    }

    /// Wraps a std listener (nothing to enroll until a stream is accepted).
    pub fn from_std(listener: std::net::TcpListener) -> TcpListener {
        TcpListener { inner: listener }
    }

    /// Unwraps the std listener. Streams accepted from it are std streams, not mediated.
    pub fn into_std(self) -> std::net::TcpListener {
        self.inner
    }

    /// Replaces [`std::net::TcpListener::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Replaces [`std::net::TcpListener::try_clone`].
    pub fn try_clone(&self) -> io::Result<TcpListener> {
        Ok(TcpListener { inner: self.inner.try_clone()? })
    }

    /// Replaces [`std::net::TcpListener::accept`]: the accepted stream is enrolled.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = self.inner.accept()?;
        Ok((TcpStream::from_std(stream)?, peer))
    }

    /// Replaces [`std::net::TcpListener::incoming`]: yields enrolled streams.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// Replaces [`std::net::TcpListener::set_ttl`].
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.set_ttl(ttl)
    }

    /// Replaces [`std::net::TcpListener::ttl`].
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.ttl()
    }

    /// Replaces [`std::net::TcpListener::take_error`].
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.take_error()
    }

    /// Replaces [`std::net::TcpListener::set_nonblocking`].
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.set_nonblocking(nonblocking)
    }
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

impl IntoRawFd for TcpListener {
    fn into_raw_fd(self) -> RawFd {
        self.inner.into_raw_fd()
    }
}

/// Replaces [`std::net::Incoming`]: an endless iterator of accepted, enrolled streams.
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;

    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        Some(self.listener.accept().map(|(stream, _)| stream))
    }
}
