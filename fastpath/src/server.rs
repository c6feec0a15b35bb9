//! The daemon side: accept clients, hand each a sealed region, serve its lanes.
//!
//! Nothing here trusts the region. [`ServerCore`] keeps every position and the
//! geometry in private memory, reads exactly one stamp per lane per scan, copies a
//! slot (and its payload) out before looking at it, and on the first value a correct
//! client never writes it *detaches*: it marks the region closed, wakes the
//! client's sleepers, shuts the control socket down, and refuses all further work —
//! returning a [`Corruption`] that names the check, never panicking.
//!
//! One file, over 600 lines, on purpose: every check a hostile client can trip is in
//! [`ServerCore`]'s scan and copy-out, and splitting them would hide which value is
//! read once and validated before use.

use core::time::Duration;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Instant;

use memmap2::MmapOptions;
use rustix::fs::{MemfdFlags, SealFlags, fcntl_add_seals, ftruncate, memfd_create};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use crate::data::{DataProducer, copy_in, copy_out};
use crate::error::{AcceptError, Check, Corruption, Lane, OsError, RespondError, ServeError, Tag};
use crate::layout::{self, FLAG_POSTED, FLAGS_KNOWN, Geometry, Header, INLINE_MAX, PayloadCheck};
use crate::region::Region;
use crate::ring::{self, Peek, SlotBody, SlotRing, Space};
use crate::sync::Ordering;
use crate::sys;

/// How a [`Listener`] shapes and serves its channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Shape of every region. Default: 16 lanes, 8 slots per ring, 8 KiB data areas
    /// (payloads up to 8 KiB: a `PATH_MAX` path plus change). The region is then
    /// ~280 KiB of address space, of which a client touches only the pages of the
    /// lanes it uses.
    pub geometry: Geometry,
    /// How long a worker keeps busy-polling after the last request before it sleeps;
    /// while it polls, clients skip the doorbell and may spin. Default 20 µs: a wake-up
    /// across CPUs costs ~20 µs on a VM whose idle vCPU halts (`research/fastpath.md`),
    /// more than the whole polled round trip. Busy-polling pays only while the client
    /// runs on another CPU; a worker that knows its client's lane should ask
    /// [`Channel::client_placement`], busy-poll for [`Placement::Elsewhere`] and yield
    /// between scans for [`Placement::Here`] (the daemon does). [`Channel::serve`]
    /// busy-polls unconditionally.
    pub linger: Duration,
    /// Most requests [`Channel::serve`] handles per call, so that one flooding client
    /// cannot starve the others a worker owns. Default 64.
    pub max_per_wake: usize,
}

impl ServerConfig {
    /// The default geometry (see [`ServerConfig::geometry`]).
    pub const DEFAULT_GEOMETRY: Geometry = match Geometry::new(16, 8, 8192) {
        Ok(g) => g,
        Err(_) => panic!("default geometry is valid"),
    };

    /// The default linger (see [`ServerConfig::linger`]).
    pub fn default_linger() -> Duration {
        Duration::from_micros(20)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { geometry: Self::DEFAULT_GEOMETRY, linger: Self::default_linger(), max_per_wake: 64 }
    }
}

/// Where a client thread last called from, relative to the worker asking
/// ([`Channel::client_placement`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The lane has not called yet.
    Unknown,
    /// On the worker's own CPU: busy-polling would only keep it from running, but
    /// polling with a `sched_yield` between scans hands the CPU straight to it.
    Here,
    /// On another CPU: busy-polling lets it spin instead of sleeping.
    Elsewhere,
}

/// Who is at the other end of a control socket, from `SO_PEERCRED` at `connect()`
/// time. Never from anything the client wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerCredentials {
    /// Process id.
    pub pid: u32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

/// A `SOCK_SEQPACKET` Unix socket that clients connect to.
#[derive(Debug)]
pub struct Listener {
    sock: OwnedFd,
    config: ServerConfig,
}

impl Listener {
    /// Binds and listens on `path` (which must not exist; the caller owns cleanup and
    /// the directory's permissions, which are the first access check).
    pub fn bind(path: impl AsRef<Path>, config: ServerConfig) -> Result<Self, OsError> {
        let sock = rustix::net::socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)
            .map_err(OsError::new("socket"))?;
        let addr = SocketAddrUnix::new(path.as_ref()).map_err(OsError::new("socket path"))?;
        rustix::net::bind(&sock, &addr).map_err(OsError::new("bind"))?;
        rustix::net::listen(&sock, 128).map_err(OsError::new("listen"))?;
        Ok(Self { sock, config })
    }

    /// Makes [`accept`](Self::accept) return `EAGAIN` instead of blocking (for
    /// epoll/tokio).
    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<(), OsError> {
        let mut flags = rustix::fs::fcntl_getfl(&self.sock).map_err(OsError::new("fcntl"))?;
        flags.set(rustix::fs::OFlags::NONBLOCK, nonblocking);
        rustix::fs::fcntl_setfl(&self.sock, flags).map_err(OsError::new("fcntl"))
    }

    /// Accepts one connection and learns who it is (`SO_PEERCRED`, plus a pidfd from
    /// `SO_PEERPIDFD`, or `pidfd_open` + re-check on older kernels). No region yet:
    /// check [`Incoming::peer`] against policy, then [`Incoming::attach`].
    pub fn accept(&self) -> Result<Incoming, AcceptError> {
        let ctl = rustix::net::accept_with(&self.sock, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK)
            .map_err(OsError::new("accept"))?;
        let cred = rustix::net::sockopt::socket_peercred(&ctl).map_err(OsError::new("SO_PEERCRED"))?;
        let peer = PeerCredentials {
            pid: cred.pid.as_raw_nonzero().get() as u32,
            uid: cred.uid.as_raw(),
            gid: cred.gid.as_raw(),
        };
        let pidfd = sys::peer_pidfd(ctl.as_fd(), Some(cred.pid));
        Ok(Incoming { ctl, peer, pidfd, config: self.config })
    }

    /// The configuration channels get.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// An accepted, identified connection without a region yet.
#[derive(Debug)]
pub struct Incoming {
    ctl: OwnedFd,
    peer: PeerCredentials,
    pidfd: Option<OwnedFd>,
    config: ServerConfig,
}

impl Incoming {
    /// Who connected.
    pub fn peer(&self) -> PeerCredentials {
        self.peer
    }

    /// A pidfd for the peer process, if the kernel could give one.
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        sys::opt_fd(&self.pidfd)
    }

    /// Creates the client's region (sealed memfd) and doorbell (eventfd), sends them
    /// with the welcome, and returns the daemon's end of the channel. Dropping the
    /// `Incoming` instead refuses the client (it sees the socket close).
    pub fn attach(self) -> Result<Channel, AcceptError> {
        let geo = self.config.geometry;
        let size = geo.region_size();
        let memfd = memfd_create("trace2e-fastpath", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
            .map_err(OsError::new("memfd_create"))?;
        ftruncate(&memfd, size as u64).map_err(OsError::new("ftruncate"))?;
        fcntl_add_seals(&memfd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(OsError::new("F_ADD_SEALS"))?;
        let map = MmapOptions::new()
            .len(size)
            .map_raw(memfd.as_raw_fd())
            .map_err(|e| OsError { op: "mmap", errno: errno_of(&e) })?;
        // The daemon may fork helpers; they must not inherit client memory.
        let _ = map.advise(memmap2::Advice::DontFork);
        let region = Region::new(map, geo).ok_or(OsError { op: "mmap (size)", errno: rustix::io::Errno::NOMEM })?;
        region.write_header(&Header {
            magic: layout::MAGIC,
            version: layout::VERSION,
            region_size: size as u32,
            lanes: geo.lanes(),
            slots: geo.slots(),
            slot_size: layout::LINE as u16,
            inline_max: INLINE_MAX as u16,
            data_bytes: geo.data_bytes(),
            lane_stride: geo.lane_stride() as u32,
            reserved: [0; 8],
        });
        region.init_stamps();
        let doorbell =
            rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK)
                .map_err(OsError::new("eventfd"))?;
        let welcome = sys::Welcome { geometry: geo, region_size: size as u32 };
        match sys::send_with_fds(self.ctl.as_fd(), &welcome.encode(), &[memfd.as_fd(), doorbell.as_fd()]) {
            Ok(()) => {}
            Err(e) if matches!(e.errno, rustix::io::Errno::PIPE | rustix::io::Errno::CONNRESET) => {
                return Err(AcceptError::PeerGone);
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Channel {
            core: ServerCore::new(region),
            ctl: self.ctl,
            doorbell,
            pidfd: self.pidfd,
            peer: self.peer,
            config: self.config,
            scratch: Vec::with_capacity(geo.max_payload()),
            reply: Vec::with_capacity(geo.max_payload()),
        })
    }
}

pub(crate) fn errno_of(e: &std::io::Error) -> rustix::io::Errno {
    rustix::io::Errno::from_io_error(e).unwrap_or(rustix::io::Errno::IO)
}

/// One request, copied out of the client's region into daemon memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The lane it came on; respond on the same lane.
    pub lane: Lane,
    /// The client's tag; echo it in the response.
    pub tag: Tag,
    /// Opaque message kind.
    pub kind: u16,
    /// A one-way message: the client waits for no response, do not send one.
    pub posted: bool,
    /// The payload (a private copy; validating its contents is the caller's job).
    pub payload: &'a [u8],
}

/// The daemon's end of one client's channel.
///
/// Register [`doorbell`](Self::doorbell) (readable: requests may be waiting),
/// [`control`](Self::control) (hang-up: the client closed or died) and
/// [`pidfd`](Self::pidfd) (readable: the process exited) in your reactor. On a
/// doorbell, [`clear_doorbell`](Self::clear_doorbell) *then*
/// [`poll_requests`](Self::poll_requests), and [`respond`](Self::respond) to each
/// request that is not `posted`. Or call [`serve`](Self::serve) in a loop, which does
/// all of that for one channel on the calling thread.
#[derive(Debug)]
pub struct Channel {
    core: ServerCore,
    ctl: OwnedFd,
    doorbell: OwnedFd,
    pidfd: Option<OwnedFd>,
    peer: PeerCredentials,
    config: ServerConfig,
    /// Private copy of the request being handled; capacity `max_payload`.
    scratch: Vec<u8>,
    /// Response being built by a [`serve`](Self::serve) handler.
    reply: Vec<u8>,
}

impl Channel {
    /// Who the client is (`SO_PEERCRED` at connect time).
    pub fn peer(&self) -> PeerCredentials {
        self.peer
    }

    /// The region's shape (the daemon's own copy).
    pub fn geometry(&self) -> &Geometry {
        self.core.region.geometry()
    }

    /// The doorbell eventfd: readable when the client rang.
    pub fn doorbell(&self) -> BorrowedFd<'_> {
        self.doorbell.as_fd()
    }

    /// The control socket: `EPOLLHUP`/`EPOLLRDHUP` when the client closed it or died.
    pub fn control(&self) -> BorrowedFd<'_> {
        self.ctl.as_fd()
    }

    /// A pidfd for the client process (readable once it exits), if available.
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        sys::opt_fd(&self.pidfd)
    }

    /// Has the client closed its control socket or exited? (Non-blocking check.)
    pub fn peer_gone(&self) -> bool {
        sys::hung_up(self.ctl.as_fd()) || self.pidfd().is_some_and(sys::exited)
    }

    /// Resets the doorbell; returns whether it had been rung. Call it *before*
    /// [`poll_requests`](Self::poll_requests), so a ring after the scan is not lost.
    pub fn clear_doorbell(&self) -> bool {
        sys::clear(self.doorbell.as_fd())
    }

    /// Copies out, validates and hands to `f` up to `max` requests, round-robin over
    /// lanes. Returns how many. On garbage, detaches the client and returns what was
    /// wrong (and the same error on every later call).
    pub fn poll_requests(&mut self, max: usize, mut f: impl FnMut(Request<'_>)) -> Result<usize, Corruption> {
        let mut n = 0;
        while n < max {
            match self.core.next_request(&mut self.scratch) {
                Ok(Some(meta)) => {
                    f(meta.request(&self.scratch));
                    n += 1;
                }
                Ok(None) => break,
                Err(c) => {
                    self.shut_down();
                    return Err(c);
                }
            }
        }
        Ok(n)
    }

    /// Sends a response on `lane` for the request tagged `tag`. Never blocks: if the
    /// client has not consumed its earlier responses it fails with
    /// [`RespondError::Full`].
    pub fn respond(&mut self, lane: Lane, tag: Tag, kind: u16, payload: &[u8]) -> Result<(), RespondError> {
        let r = self.core.respond(lane, tag, kind, payload);
        if matches!(r, Err(RespondError::Corrupt(_))) {
            self.shut_down();
        }
        r
    }

    /// Publishes "a worker is busy-polling this channel on this CPU": the client then
    /// skips the doorbell and may spin. Re-call it now and then while polling (the
    /// CPU may change); end with [`end_polling`](Self::end_polling).
    pub fn begin_polling(&mut self) {
        let status = self.core.region.status();
        status.cpu.store(sys::current_cpu(), Ordering::Relaxed);
        status.polling.store(1, Ordering::Relaxed);
        self.core.set_polling(true);
    }

    /// Where the client thread of `lane` last called from, relative to this thread
    /// (client-written, so only a hint): busy-polling for its next request pays only
    /// when it is elsewhere — a client on this CPU cannot run while this thread spins.
    pub fn client_placement(&self, lane: Lane) -> Placement {
        match self.core.region.lane_control(lane.0).cpu.load(Ordering::Relaxed) {
            0 => Placement::Unknown,
            cpu if cpu == sys::current_cpu().wrapping_add(1) => Placement::Here,
            _ => Placement::Elsewhere,
        }
    }

    /// Withdraws [`begin_polling`](Self::begin_polling). The caller must then poll
    /// once more before sleeping: a client that saw `polling` did not ring.
    pub fn end_polling(&mut self) {
        ring::stop_polling(&self.core.region.status().polling);
        self.core.set_polling(false);
    }

    /// Handles requests with `handler` for up to `timeout` (`None`: until something
    /// happens): serves what is pending, lingers (busy-polls) for
    /// [`ServerConfig::linger`], then sleeps until the doorbell rings or the client
    /// goes. `handler` gets each request and a buffer for the response payload, and
    /// returns the response kind (`None`: no response, as for posted requests, whose
    /// responses are never sent). Returns how many requests it handled.
    pub fn serve<H>(&mut self, timeout: Option<Duration>, handler: &mut H) -> Result<usize, ServeError>
    where
        H: FnMut(&Request<'_>, &mut Vec<u8>) -> Option<u16>,
    {
        // No doorbell reset here: a ring left over from before this scan only makes
        // the poll below return at once, and saves a system call per round trip.
        let mut served = self.serve_pending(handler)?;
        if !self.config.linger.is_zero() && served < self.config.max_per_wake {
            self.begin_polling();
            let mut last = Instant::now();
            let mut spins = 0u32;
            while served < self.config.max_per_wake {
                let n = self.serve_pending(handler)?;
                served += n;
                spins = spins.wrapping_add(1);
                if n > 0 {
                    last = Instant::now();
                } else if spins.is_multiple_of(64) {
                    if last.elapsed() >= self.config.linger {
                        break;
                    }
                    self.begin_polling();
                }
                core::hint::spin_loop();
            }
            self.end_polling();
            served += self.serve_pending(handler)?;
        }
        if served > 0 {
            return Ok(served);
        }
        let ready = sys::wait_readable(self.doorbell.as_fd(), self.ctl.as_fd(), self.pidfd(), timeout)
            .map_err(ServeError::Os)?;
        if ready.gone && self.peer_gone() {
            return Err(ServeError::PeerGone);
        }
        if ready.doorbell {
            self.clear_doorbell();
        }
        self.serve_pending(handler)
    }

    fn serve_pending<H>(&mut self, handler: &mut H) -> Result<usize, ServeError>
    where
        H: FnMut(&Request<'_>, &mut Vec<u8>) -> Option<u16>,
    {
        let mut n = 0;
        while n < self.config.max_per_wake {
            let meta = match self.core.next_request(&mut self.scratch) {
                Ok(Some(meta)) => meta,
                Ok(None) => break,
                Err(c) => {
                    self.shut_down();
                    return Err(ServeError::Corrupt(c));
                }
            };
            n += 1;
            self.reply.clear();
            let Some(kind) = handler(&meta.request(&self.scratch), &mut self.reply) else {
                continue;
            };
            if meta.posted {
                continue;
            }
            match self.core.respond(meta.lane, meta.tag, kind, &self.reply) {
                // The client is not reading its responses: its own loss.
                Ok(()) | Err(RespondError::Full) => {}
                Err(RespondError::Corrupt(c)) => {
                    self.shut_down();
                    return Err(ServeError::Corrupt(c));
                }
                Err(e) => return Err(ServeError::Respond(e)),
            }
        }
        Ok(n)
    }

    /// Detaches the client: marks the region closed, wakes its sleeping threads and
    /// shuts the control socket down, so its calls fail with `Disconnected`.
    pub fn detach(&mut self) {
        self.core.detach(None);
        self.shut_down();
    }

    /// Why the channel was detached, if it was for corruption.
    pub fn corruption(&self) -> Option<Corruption> {
        self.core.corruption
    }

    /// Is the channel detached?
    pub fn is_detached(&self) -> bool {
        self.core.detached
    }

    fn shut_down(&self) {
        let _ = rustix::net::shutdown(&self.ctl, rustix::net::Shutdown::Both);
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        // Wake anyone still asleep on a response: they see `closed` at once instead
        // of at their next liveness check.
        self.core.detach(None);
    }
}

/// A request's header; the payload is in the caller's buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestMeta {
    pub(crate) lane: Lane,
    pub(crate) tag: Tag,
    pub(crate) kind: u16,
    pub(crate) posted: bool,
}

impl RequestMeta {
    pub(crate) fn request<'a>(&self, payload: &'a [u8]) -> Request<'a> {
        Request { lane: self.lane, tag: self.tag, kind: self.kind, posted: self.posted, payload }
    }
}

/// Daemon-private state of one lane.
#[derive(Debug)]
struct ServerLane {
    /// Consumer position in the request ring (wrapping).
    sq_pos: u32,
    /// Producer position in the response ring (wrapping).
    cq_pos: u32,
    /// Books of the response data area.
    cq_data: DataProducer,
}

/// While polling, every this many empty scans of the hot lanes, one scan of all lanes
/// ([`ServerCore::hot`]): a client thread's first call on a new lane, made without the
/// doorbell because the worker was polling, waits at most that many scans.
const FULL_SCAN_EVERY: u32 = 16;

/// The socket-free part of the daemon side: a region and the daemon's private view
/// of it. (Separate so the fuzz target can drive it over anonymous memory.)
#[derive(Debug)]
pub(crate) struct ServerCore {
    pub(crate) region: Region,
    lanes: Box<[ServerLane]>,
    /// Lane to scan first, in `0 .. lanes`: round-robin fairness between lanes.
    cursor: u16,
    /// One past the highest lane a request ever came from. Clients claim lanes from
    /// lane 0 up, so while polling, a scan looks only at lanes below it, and at every
    /// lane only each [`FULL_SCAN_EVERY`]th empty scan: a scan of all 16 default lanes
    /// touches 16 pages, a measurable part of a hand-off on one CPU
    /// (`file_read_placement/shm/same-core`). Outside polling every scan is full: the
    /// client rang, or the worker is about to sleep.
    hot: u16,
    /// Empty scans of the hot lanes only since the last full scan.
    partial_scans: u32,
    /// Between [`Channel::begin_polling`] and [`Channel::end_polling`].
    polling: bool,
    detached: bool,
    corruption: Option<Corruption>,
}

impl ServerCore {
    /// Takes over an initialised region (header written, stamps set).
    pub(crate) fn new(region: Region) -> Self {
        let geo = *region.geometry();
        let lanes = (0..geo.lanes())
            .map(|_| ServerLane { sq_pos: 0, cq_pos: 0, cq_data: DataProducer::new(geo.data_bytes(), geo.slots()) })
            .collect();
        Self { region, lanes, cursor: 0, hot: 0, partial_scans: 0, polling: false, detached: false, corruption: None }
    }

    /// Whether a worker is polling: then scans look at the hot lanes first.
    pub(crate) fn set_polling(&mut self, polling: bool) {
        self.polling = polling;
    }

    fn corrupt(&mut self, lane: u16, check: Check) -> Corruption {
        let c = Corruption { lane: Lane(lane), check };
        self.detach(Some(c));
        c
    }

    pub(crate) fn detach(&mut self, why: Option<Corruption>) {
        if self.corruption.is_none() {
            self.corruption = why;
        }
        if self.detached {
            return;
        }
        self.detached = true;
        let region = &self.region;
        region.status().closed.store(1, Ordering::Release);
        for lane in 0..region.geometry().lanes() {
            if ring::peer_waiting(&region.lane_control(lane).waiting) {
                let cq = region.cq(lane);
                for i in 0..cq.slots() {
                    sys::futex_wake(cq.stamp(i), u32::MAX >> 1);
                }
            }
        }
    }

    /// The next valid request (payload copied into `out`), scanning lanes
    /// round-robin from `cursor`; `None` if every lane is empty.
    pub(crate) fn next_request(&mut self, out: &mut Vec<u8>) -> Result<Option<RequestMeta>, Corruption> {
        if let Some(c) = self.corruption {
            return Err(c);
        }
        if self.detached {
            return Ok(None);
        }
        let geo = *self.region.geometry();
        let full = !self.polling || self.hot == 0 || self.partial_scans >= FULL_SCAN_EVERY;
        let lanes = if full { geo.lanes() } else { self.hot };
        let first = self.cursor % lanes;
        for i in 0..lanes {
            let lane = (first + i) % lanes;
            let state = &mut self.lanes[usize::from(lane)];
            let sq = self.region.sq(lane);
            let pos = state.sq_pos;
            let body = match ring::peek(&sq, pos) {
                Peek::Empty => continue,
                Peek::Ready(body) => body,
                Peek::Unexpected(found) => {
                    let check = Check::RequestStamp { expected: pos.wrapping_add(1), found };
                    return Err(self.corrupt(lane, check));
                }
            };
            if let Err(check) = Self::copy_payload(&geo, &body, self.region.sq_data(lane), out) {
                return Err(self.corrupt(lane, check));
            }
            ring::release(&sq, &mut state.sq_pos);
            self.cursor = (lane + 1) % lanes;
            self.hot = self.hot.max(lane + 1);
            return Ok(Some(RequestMeta {
                lane: Lane(lane),
                tag: Tag(body.tag),
                kind: body.kind,
                posted: body.flags & FLAG_POSTED != 0,
            }));
        }
        self.partial_scans = if full { 0 } else { self.partial_scans + 1 };
        Ok(None)
    }

    /// Validates a copied-out body against our geometry and copies its payload.
    fn copy_payload(
        geo: &Geometry,
        body: &SlotBody,
        data: &[crate::sync::AtomicU64],
        out: &mut Vec<u8>,
    ) -> Result<(), Check> {
        if body.flags & !FLAGS_KNOWN != 0 {
            return Err(Check::UnknownFlags(body.flags));
        }
        match layout::check_payload(geo, body.off, body.len) {
            Ok(()) => {}
            Err(PayloadCheck::Length) => return Err(Check::Length { len: body.len, max: geo.data_bytes() }),
            Err(PayloadCheck::Offset) => return Err(Check::Offset { off: body.off, len: body.len }),
        }
        let len = body.len as usize;
        if len <= INLINE_MAX {
            out.clear();
            out.extend_from_slice(&body.inline[..len]);
            Ok(())
        } else {
            copy_out(data, body.off, body.len, out).ok_or(Check::Offset { off: body.off, len: body.len })
        }
    }

    pub(crate) fn respond(&mut self, lane: Lane, tag: Tag, kind: u16, payload: &[u8]) -> Result<(), RespondError> {
        if self.detached {
            return Err(RespondError::Detached);
        }
        let geo = *self.region.geometry();
        if lane.0 >= geo.lanes() {
            return Err(RespondError::NoSuchLane(lane));
        }
        if payload.len() > geo.max_payload() {
            return Err(RespondError::TooLarge { len: payload.len(), max: geo.max_payload() });
        }
        let state = &mut self.lanes[usize::from(lane.0)];
        let cq = self.region.cq(lane.0);
        let mask = cq.slots() - 1;
        state.cq_data.reclaim(|pos| cq.stamp(pos & mask).load(Ordering::Acquire) != pos.wrapping_add(1));
        let pos = state.cq_pos;
        match ring::space(&cq, pos) {
            Space::Free => {}
            Space::Full => return Err(RespondError::Full),
            Space::Unexpected(found) => {
                let c = self.corrupt(lane.0, Check::ResponseStamp { expected: pos, found });
                return Err(RespondError::Corrupt(c));
            }
        }
        let len = payload.len() as u32;
        let mut body = SlotBody { kind, tag: tag.0, len, ..SlotBody::EMPTY };
        if payload.len() <= INLINE_MAX {
            body.inline[..payload.len()].copy_from_slice(payload);
        } else {
            let start = state.cq_data.find(len).ok_or(RespondError::Full)?;
            copy_in(self.region.cq_data(lane.0), start, payload).ok_or(RespondError::Full)?;
            state.cq_data.commit(pos, start, len);
            body.off = start;
        }
        ring::publish(&cq, &mut state.cq_pos, &body);
        if ring::peer_waiting(&self.region.lane_control(lane.0).waiting) {
            sys::futex_wake(cq.stamp(pos & mask), u32::MAX >> 1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{FULL_SCAN_EVERY, ServerCore};
    use crate::layout::{Geometry, INLINE_MAX};
    use crate::ring::{self, SlotBody};

    fn publish(core: &ServerCore, lane: u16, pos: &mut u32, tag: u32) {
        let body = SlotBody { kind: 7, flags: 0, tag, len: 1, off: 0, inline: [tag as u8; INLINE_MAX] };
        ring::publish(&core.region.sq(lane), pos, &body);
    }

    /// Scans until a request comes (at most 64 scans); how many empty scans that took.
    fn scans_until_request(core: &mut ServerCore, out: &mut Vec<u8>) -> (u32, u16, u32) {
        for empty in 0..64 {
            if let Some(meta) = core.next_request(out).expect("well-formed") {
                return (empty, meta.lane.0, meta.tag.0);
            }
        }
        panic!("a published request was not found within 64 scans");
    }

    /// A polling worker's channel of 8 lanes that has served one request, on lane 0
    /// (which is therefore hot); the client's ring positions.
    fn polling_with_lane_0_hot(out: &mut Vec<u8>) -> (ServerCore, [u32; 8]) {
        let mut core = crate::fuzz_support::anonymous_core(Geometry::new(8, 4, 128).unwrap());
        let mut pos = [0u32; 8];
        core.set_polling(true);
        publish(&core, 0, &mut pos[0], 1);
        assert_eq!(scans_until_request(&mut core, out), (0, 0, 1));
        (core, pos)
    }

    #[test]
    fn a_polling_worker_finds_a_request_on_a_lane_never_used_before() {
        let mut out = Vec::new();
        let (mut core, mut pos) = polling_with_lane_0_hot(&mut out);
        // A first call on lane 5 (made without the doorbell, since the worker polls) is
        // found by the next full scan, however many hot-only scans are left before it.
        for _ in 0..3 {
            assert!(core.next_request(&mut out).unwrap().is_none());
        }
        publish(&core, 5, &mut pos[5], 2);
        let (empty, lane, tag) = scans_until_request(&mut core, &mut out);
        assert_eq!((lane, tag), (5, 2));
        assert!(empty <= FULL_SCAN_EVERY, "found after {empty} empty scans");
        // Lane 5 is hot now: found at once, as is lane 0.
        publish(&core, 5, &mut pos[5], 3);
        assert_eq!(scans_until_request(&mut core, &mut out), (0, 5, 3));
        publish(&core, 0, &mut pos[0], 4);
        assert_eq!(scans_until_request(&mut core, &mut out), (0, 0, 4));
    }

    #[test]
    fn a_worker_that_is_not_polling_scans_every_lane() {
        let mut out = Vec::new();
        let (mut core, mut pos) = polling_with_lane_0_hot(&mut out);
        // After a wake-up (doorbell) the worker is not polling: the first scan is full.
        core.set_polling(false);
        publish(&core, 7, &mut pos[7], 2);
        assert_eq!(scans_until_request(&mut core, &mut out), (0, 7, 2));
    }
}
