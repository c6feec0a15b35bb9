//! The application side: connect, get a lane per thread, call and post.

use core::cell::RefCell;
use core::time::Duration;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU32 as LocalU32, AtomicU64 as LocalU64, Ordering as Local};
use std::sync::{Arc, Mutex, Once, PoisonError, Weak};
use std::time::Instant;

use memmap2::MmapOptions;
use rustix::fs::SealFlags;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use crate::data::{DataProducer, copy_in, copy_out};
use crate::error::{CallError, ConnectError, OsError};
use crate::layout::{self, FLAG_POSTED, Geometry, INLINE_MAX};
use crate::region::Region;
use crate::ring::{self, Peek, SlotBody, SlotRing, Space};
use crate::server::errno_of;
use crate::sync::Ordering;
use crate::sys;

/// How a [`Client`] waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// How long [`Client::call`] waits for its response. Default 30 s: the daemon
    /// bounds its own work (remote checks have deadlines), this only catches a stuck
    /// daemon.
    pub call_timeout: Duration,
    /// How often a sleeping caller wakes to check the daemon is alive (control
    /// socket not hung up). Default 50 ms.
    pub liveness_interval: Duration,
    /// How long a caller spins for its response before sleeping, *only* when the
    /// daemon says it is polling on another CPU. Default 2 µs: about 1.5× a polled
    /// round trip with the daemon's service time (~1.5 µs); a response later than that
    /// usually means the daemon's thread was preempted, and spinning longer only takes
    /// CPU from it (bench `throughput` with 2 processes on 2 CPUs; numbers in
    /// docs/decisions.md).
    pub spin: Duration,
    /// How long a caller yields the CPU for its response before sleeping, *only* when
    /// the daemon says it is polling on this caller's CPU. Default 20 µs. Counted from
    /// the end of the first yield: that yield is the hand-off itself (the daemon usually
    /// answers before it returns), and leaving the clock unread until then keeps a clock
    /// read off the common path. So a caller may yield up to one yield longer than this
    /// (2–5 µs on the 2026-12 VM).
    pub yield_budget: Duration,
    /// How long [`Client::connect`] waits for the welcome. Default 5 s.
    pub handshake_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(30),
            liveness_interval: Duration::from_millis(50),
            spin: Duration::from_micros(2),
            yield_budget: Duration::from_micros(20),
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

/// A response: its kind and payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Opaque message kind.
    pub kind: u16,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

/// A process's connection to the daemon. Cheap to clone; `Send + Sync`.
///
/// Each thread that calls gets its own lane on first use and keeps it until it
/// exits, so threads never contend. With more threads than lanes, late threads
/// share the least-used lanes (their calls on a shared lane are serialized).
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Process-unique id, to find this client's lane in a thread's leases.
    id: u64,
    /// `None` only while dropping in a forked child (the mapping is not there).
    region: Option<Region>,
    geo: Geometry,
    ctl: OwnedFd,
    doorbell: OwnedFd,
    /// [`FORK_GENERATION`] at connect time.
    fork_generation: u64,
    lanes: Box<[ClientLane]>,
    config: ClientConfig,
}

#[derive(Debug)]
struct ClientLane {
    /// Threads holding a lease on this lane (0 = free).
    holders: LocalU32,
    state: Mutex<LaneState>,
}

/// Client-private state of a lane; the mutex makes a shared lane safe.
#[derive(Debug)]
struct LaneState {
    /// Producer position in the request ring (wrapping).
    sq_pos: u32,
    /// Consumer position in the response ring (wrapping).
    cq_pos: u32,
    sq_data: DataProducer,
    next_tag: u32,
}

/// Incremented in every child right after `fork()` (a `pthread_atfork` handler),
/// so "am I the process that connected?" is one relaxed load, not a `getpid()`.
static FORK_GENERATION: LocalU64 = LocalU64::new(0);
static NEXT_CLIENT_ID: LocalU64 = LocalU64::new(1);

extern "C" fn forked_child() {
    FORK_GENERATION.fetch_add(1, Local::Relaxed);
}

fn watch_forks() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a child handler that only does an atomic add (async-
        // signal-safe, as handlers run in the child of a multithreaded fork must be).
        unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
    });
}

/// A thread's claim on one lane of one client; released when the thread exits.
struct Lease {
    client: u64,
    lane: u16,
    inner: Weak<Inner>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.lanes[usize::from(self.lane)].holders.fetch_sub(1, Local::Relaxed);
        }
    }
}

thread_local! {
    static LEASES: RefCell<Vec<Lease>> = const { RefCell::new(Vec::new()) };
}

impl Client {
    /// Connects to the daemon's socket at `path` with the default [`ClientConfig`].
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, ConnectError> {
        Self::connect_with(path, ClientConfig::default())
    }

    /// Connects and performs the handshake: receives the welcome with the region
    /// memfd and doorbell eventfd (`MSG_CMSG_CLOEXEC`, checking `MSG_CTRUNC`),
    /// checks the memfd's size and seals and the region header against the welcome,
    /// maps it `MAP_SHARED` with `MADV_DONTFORK`.
    pub fn connect_with(path: impl AsRef<Path>, config: ClientConfig) -> Result<Self, ConnectError> {
        watch_forks();
        let fork_generation = FORK_GENERATION.load(Local::Relaxed);
        let ctl = rustix::net::socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)
            .map_err(OsError::new("socket"))?;
        let addr = SocketAddrUnix::new(path.as_ref()).map_err(OsError::new("socket path"))?;
        rustix::net::connect(&ctl, &addr).map_err(OsError::new("connect"))?;
        rustix::net::sockopt::set_socket_timeout(
            &ctl,
            rustix::net::sockopt::Timeout::Recv,
            Some(config.handshake_timeout),
        )
        .map_err(OsError::new("SO_RCVTIMEO"))?;

        let mut buf = [0u8; 2 * sys::WELCOME_LEN];
        let got = sys::recv_with_fds(ctl.as_fd(), &mut buf)?;
        if got.len == 0 && got.fds.is_empty() {
            return Err(ConnectError::Closed);
        }
        if got.truncated {
            return Err(ConnectError::Truncated);
        }
        let welcome = sys::Welcome::decode(&buf[..got.len])?;
        let Ok([memfd, doorbell]) = <[OwnedFd; 2]>::try_from(got.fds) else {
            return Err(ConnectError::Fds(0));
        };
        let geo = welcome.geometry;
        let size = u64::from(welcome.region_size);

        let stat = rustix::fs::fstat(&memfd).map_err(OsError::new("fstat"))?;
        if stat.st_size as u64 != size {
            return Err(ConnectError::Size { expected: size, found: stat.st_size as u64 });
        }
        let seals = rustix::fs::fcntl_get_seals(&memfd).map_err(OsError::new("F_GET_SEALS"))?;
        let required = SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL;
        if !seals.contains(required) || seals.intersects(SealFlags::WRITE | SealFlags::FUTURE_WRITE) {
            return Err(ConnectError::Seals(seals.bits()));
        }
        let map = MmapOptions::new()
            .len(size as usize)
            .map_raw(memfd.as_raw_fd())
            .map_err(|e| OsError { op: "mmap", errno: errno_of(&e) })?;
        // A forked child must not speak on (or even see) this channel.
        map.advise(memmap2::Advice::DontFork)
            .map_err(|e| OsError { op: "madvise(MADV_DONTFORK)", errno: errno_of(&e) })?;
        let region = Region::new(map, geo).ok_or(ConnectError::Header("mapping"))?;
        check_header(&region.read_header(), &geo, welcome.region_size)?;
        rustix::net::sockopt::set_socket_timeout(&ctl, rustix::net::sockopt::Timeout::Recv, None)
            .map_err(OsError::new("SO_RCVTIMEO"))?;

        let lanes = (0..geo.lanes())
            .map(|_| ClientLane {
                holders: LocalU32::new(0),
                state: Mutex::new(LaneState {
                    sq_pos: 0,
                    cq_pos: 0,
                    sq_data: DataProducer::new(geo.data_bytes(), geo.slots()),
                    next_tag: 0,
                }),
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                id: NEXT_CLIENT_ID.fetch_add(1, Local::Relaxed),
                region: Some(region),
                geo,
                ctl,
                doorbell,
                fork_generation,
                lanes,
                config,
            }),
        })
    }

    /// The region's shape as the daemon announced it.
    pub fn geometry(&self) -> &Geometry {
        &self.inner.geo
    }

    /// Largest payload a request or response can carry.
    pub fn max_payload(&self) -> usize {
        self.inner.geo.max_payload()
    }

    /// `false` in a child forked after `connect`: such a child must connect again
    /// (its calls fail with [`CallError::Forked`]). One relaxed load.
    pub fn is_valid_in_this_process(&self) -> bool {
        FORK_GENERATION.load(Local::Relaxed) == self.inner.fork_generation
    }

    /// `true` unless the daemon detached this client or closed the control socket.
    /// Costs a `poll` system call.
    pub fn is_connected(&self) -> bool {
        self.inner.usable().is_ok() && !sys::hung_up(self.inner.ctl.as_fd())
    }

    /// The control socket (hang-up: the daemon closed the channel).
    pub fn control(&self) -> BorrowedFd<'_> {
        self.inner.ctl.as_fd()
    }

    /// Sends a request and waits for its response.
    pub fn call(&self, kind: u16, payload: &[u8]) -> Result<Response, CallError> {
        let mut out = Vec::new();
        let kind = self.call_into(kind, payload, &mut out)?;
        Ok(Response { kind, payload: out })
    }

    /// Like [`call`](Self::call), writing the response payload into `out` (replacing
    /// its contents) and returning the response kind. Allocates nothing once `out`
    /// has room for the largest response.
    pub fn call_into(&self, kind: u16, payload: &[u8], out: &mut Vec<u8>) -> Result<u16, CallError> {
        let inner = &*self.inner;
        inner.check_len(payload)?;
        inner.usable()?;
        let lane = self.lane();
        let mut state = inner.lanes[usize::from(lane)].state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut deadline = None;
        let tag = state.next_tag;
        state.next_tag = tag.wrapping_add(1);
        // Stored only when it changes: the daemon reads this line (`waiting`) after every
        // answer, and a store per call would move it between the CPUs twice per call.
        let cpu = &inner.region().lane_control(lane).cpu;
        let here = sys::current_cpu();
        if cpu.load(Ordering::Relaxed) != here.wrapping_add(1) {
            cpu.store(here.wrapping_add(1), Ordering::Relaxed);
        }
        inner.push(&mut state, lane, kind, 0, tag, payload, &mut deadline)?;
        let polling = inner.notify();
        inner.await_response(&mut state, lane, tag, out, polling.then_some(here), &mut deadline)
    }

    /// Sends a one-way message: returns once it is in the ring (waiting only if the
    /// ring is full). Rings the doorbell unless the daemon is polling. Messages on one
    /// thread reach the daemon in order, posted or not.
    pub fn post(&self, kind: u16, payload: &[u8]) -> Result<(), CallError> {
        self.post_inner(kind, payload, true)
    }

    /// Like [`post`](Self::post), but never rings the doorbell: the daemon sees the
    /// message at its next wake-up for this client (e.g. the thread's next
    /// [`call`](Self::call)), so a daemon relying on it needs its own timer.
    pub fn post_deferred(&self, kind: u16, payload: &[u8]) -> Result<(), CallError> {
        self.post_inner(kind, payload, false)
    }

    fn post_inner(&self, kind: u16, payload: &[u8], ring_bell: bool) -> Result<(), CallError> {
        let inner = &*self.inner;
        inner.check_len(payload)?;
        inner.usable()?;
        let lane = self.lane();
        let mut state = inner.lanes[usize::from(lane)].state.lock().unwrap_or_else(PoisonError::into_inner);
        let tag = state.next_tag;
        state.next_tag = tag.wrapping_add(1);
        inner.push(&mut state, lane, kind, FLAG_POSTED, tag, payload, &mut None)?;
        if ring_bell {
            inner.notify();
        }
        Ok(())
    }

    /// This thread's lane: its lease if it has one, else a new lease (a free lane if
    /// any, else the least shared one).
    fn lane(&self) -> u16 {
        let inner = &self.inner;
        LEASES
            .try_with(|leases| {
                let mut leases = leases.borrow_mut();
                if let Some(l) = leases.iter().find(|l| l.client == inner.id) {
                    return l.lane;
                }
                leases.retain(|l| l.inner.strong_count() > 0);
                let lane = inner.claim_lane();
                leases.push(Lease { client: inner.id, lane, inner: Arc::downgrade(inner) });
                lane
            })
            // Thread-local storage is being torn down: use a lane without a lease.
            .unwrap_or_else(|_| inner.least_shared_lane())
    }
}

fn check_header(h: &layout::Header, geo: &Geometry, region_size: u32) -> Result<(), ConnectError> {
    let checks: [(bool, &'static str); 9] = [
        (h.magic == layout::MAGIC, "magic"),
        (h.version == layout::VERSION, "version"),
        (h.region_size == region_size, "region size"),
        (h.lanes == geo.lanes(), "lanes"),
        (h.slots == geo.slots(), "slots"),
        (usize::from(h.slot_size) == layout::LINE, "slot size"),
        (usize::from(h.inline_max) == INLINE_MAX, "inline max"),
        (h.data_bytes == geo.data_bytes(), "data bytes"),
        (h.lane_stride as usize == geo.lane_stride(), "lane stride"),
    ];
    match checks.iter().find(|(ok, _)| !ok) {
        Some((_, what)) => Err(ConnectError::Header(what)),
        None => Ok(()),
    }
}

impl Inner {
    fn region(&self) -> &Region {
        // Only `Drop` in a forked child takes the region out.
        self.region.as_ref().expect("region present until drop")
    }

    fn check_len(&self, payload: &[u8]) -> Result<(), CallError> {
        let max = self.geo.max_payload();
        if payload.len() > max { Err(CallError::TooLarge { len: payload.len(), max }) } else { Ok(()) }
    }

    /// Checks before touching the region (which a forked child does not have).
    fn usable(&self) -> Result<(), CallError> {
        if FORK_GENERATION.load(Local::Relaxed) != self.fork_generation {
            return Err(CallError::Forked);
        }
        if self.region().status().closed.load(Ordering::Acquire) != 0 {
            return Err(CallError::Disconnected);
        }
        Ok(())
    }

    fn claim_lane(&self) -> u16 {
        for (i, lane) in self.lanes.iter().enumerate() {
            if lane.holders.compare_exchange(0, 1, Local::Relaxed, Local::Relaxed).is_ok() {
                return i as u16;
            }
        }
        let lane = self.least_shared_lane();
        self.lanes[usize::from(lane)].holders.fetch_add(1, Local::Relaxed);
        lane
    }

    fn least_shared_lane(&self) -> u16 {
        (0..self.geo.lanes()).min_by_key(|&i| self.lanes[usize::from(i)].holders.load(Local::Relaxed)).unwrap_or(0)
    }

    /// Writes a message into the lane's request ring, waiting (doorbell, then
    /// growing sleeps, with liveness checks) while the ring or data area is full.
    #[allow(clippy::too_many_arguments)]
    fn push(
        &self,
        state: &mut LaneState,
        lane: u16,
        kind: u16,
        flags: u16,
        tag: u32,
        payload: &[u8],
        deadline: &mut Option<Instant>,
    ) -> Result<(), CallError> {
        let region = self.region();
        let sq = region.sq(lane);
        let mask = sq.slots() - 1;
        let len = payload.len() as u32;
        let mut backoff = Duration::from_micros(20);
        loop {
            state.sq_data.reclaim(|pos| sq.stamp(pos & mask).load(Ordering::Acquire) != pos.wrapping_add(1));
            match ring::space(&sq, state.sq_pos) {
                Space::Free => {
                    let mut body = SlotBody { kind, flags, tag, len, ..SlotBody::EMPTY };
                    if payload.len() <= INLINE_MAX {
                        body.inline[..payload.len()].copy_from_slice(payload);
                        ring::publish(&sq, &mut state.sq_pos, &body);
                        return Ok(());
                    }
                    if let Some(start) = state.sq_data.find(len) {
                        copy_in(region.sq_data(lane), start, payload)
                            .ok_or(CallError::Protocol("request data area"))?;
                        state.sq_data.commit(state.sq_pos, start, len);
                        body.off = start;
                        ring::publish(&sq, &mut state.sq_pos, &body);
                        return Ok(());
                    }
                }
                Space::Full => {}
                Space::Unexpected(_) => return Err(CallError::Protocol("request stamp")),
            }
            // Full: make sure the daemon is awake, then give it time.
            sys::ring(self.doorbell.as_fd());
            self.check_alive(deadline)?;
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(5));
        }
    }

    /// After a publish: rings the doorbell unless the daemon is polling. Returns
    /// whether it was polling.
    fn notify(&self) -> bool {
        if ring::should_ring(&self.region().status().polling) {
            sys::ring(self.doorbell.as_fd());
            false
        } else {
            true
        }
    }

    /// Fails if the daemon is gone or the deadline (set on first use) has passed.
    fn check_alive(&self, deadline: &mut Option<Instant>) -> Result<(), CallError> {
        self.usable()?;
        if sys::hung_up(self.ctl.as_fd()) {
            return Err(CallError::Disconnected);
        }
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + self.config.call_timeout);
        if Instant::now() >= deadline {
            return Err(CallError::Timeout);
        }
        Ok(())
    }

    /// Waits for the response tagged `tag`, discarding stale ones (answers to calls
    /// that timed out). If the daemon was polling when the request was published
    /// (`polling_seen_from` is then the CPU the caller ran on), spins while it polls on
    /// another CPU or yields if it polls on that one; then sleeps.
    fn await_response(
        &self,
        state: &mut LaneState,
        lane: u16,
        tag: u32,
        out: &mut Vec<u8>,
        polling_seen_from: Option<u32>,
        deadline: &mut Option<Instant>,
    ) -> Result<u16, CallError> {
        let region = self.region();
        let cq = region.cq(lane);
        let mask = cq.slots() - 1;
        let status = region.status();
        if let Some(here) = polling_seen_from {
            if status.cpu.load(Ordering::Relaxed) != here {
                self.spin_for(&cq, state.cq_pos);
            } else {
                self.yield_for(&cq, state.cq_pos);
            }
        }
        let waiting = &region.lane_control(lane).waiting;
        loop {
            match ring::peek(&cq, state.cq_pos) {
                Peek::Ready(body) => {
                    self.copy_response(&body, lane, out)?;
                    ring::release(&cq, &mut state.cq_pos);
                    if body.tag == tag {
                        return Ok(body.kind);
                    }
                }
                Peek::Unexpected(_) => return Err(CallError::Protocol("response stamp")),
                Peek::Empty => {
                    let now = Instant::now();
                    let end = *deadline.get_or_insert(now + self.config.call_timeout);
                    if now >= end {
                        return Err(CallError::Timeout);
                    }
                    let nap = self.config.liveness_interval.min(end - now);
                    let word = cq.stamp(state.cq_pos & mask);
                    if ring::announce_sleep(waiting, word, state.cq_pos) {
                        sys::futex_wait(word, state.cq_pos, nap);
                        ring::end_sleep(waiting);
                    }
                    if status.closed.load(Ordering::Acquire) != 0 {
                        return Err(CallError::Disconnected);
                    }
                    if now.elapsed() >= nap && sys::hung_up(self.ctl.as_fd()) {
                        return Err(CallError::Disconnected);
                    }
                }
            }
        }
    }

    /// Busy-waits up to `config.spin` for the stamp at `pos` to change.
    fn spin_for(&self, cq: &impl SlotRing, pos: u32) {
        let word = cq.stamp(pos & (cq.slots() - 1));
        let start = Instant::now();
        let mut i = 0u32;
        while word.load(Ordering::Relaxed) == pos {
            crate::sync::spin_hint();
            i = i.wrapping_add(1);
            if i.is_multiple_of(64) && start.elapsed() >= self.config.spin {
                break;
            }
        }
    }

    /// Yields the CPU, up to `config.yield_budget`, until the stamp at `pos` changes:
    /// the daemon's thread polls on this CPU, so it runs as soon as this one yields.
    fn yield_for(&self, cq: &impl SlotRing, pos: u32) {
        let word = cq.stamp(pos & (cq.slots() - 1));
        // The clock is first read after a yield that did not bring the answer: usually
        // the first yield is the hand-off, and the answer is there when it returns.
        let mut start = None;
        while word.load(Ordering::Relaxed) == pos {
            std::thread::yield_now();
            if word.load(Ordering::Relaxed) != pos {
                break;
            }
            let now = Instant::now();
            if now.duration_since(*start.get_or_insert(now)) >= self.config.yield_budget {
                break;
            }
        }
    }

    fn copy_response(&self, body: &SlotBody, lane: u16, out: &mut Vec<u8>) -> Result<(), CallError> {
        if layout::check_payload(&self.geo, body.off, body.len).is_err() {
            return Err(CallError::Protocol("response payload"));
        }
        let len = body.len as usize;
        if len <= INLINE_MAX {
            out.clear();
            out.extend_from_slice(&body.inline[..len]);
            Ok(())
        } else {
            copy_out(self.region().cq_data(lane), body.off, body.len, out)
                .ok_or(CallError::Protocol("response payload"))
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if FORK_GENERATION.load(Local::Relaxed) != self.fork_generation {
            // MADV_DONTFORK: the child has no mapping here, and munmap could remove
            // whatever the child mapped at that address since. Leak the handle.
            if let Some(region) = self.region.take() {
                core::mem::forget(region.into_map());
            }
        }
        // Otherwise the region unmaps and the fds close: the daemon sees the hang-up.
    }
}
