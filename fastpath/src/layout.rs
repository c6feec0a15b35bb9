//! The region ABI: where everything lives in a channel's shared memory.
//!
//! A region is one sealed memfd per client process, created and sized by the daemon.
//! Everything in it is at a fixed offset computed from a [`Geometry`] (three numbers
//! the daemon chooses and sends in the handshake); there are no pointers in it.
//!
//! ```text
//! offset 0      Header      64 B   written once by the daemon before the fd is sent;
//!                                  the client checks it, the daemon never reads it back
//! offset 64     Status      64 B   daemon → client: polling, cpu, closed
//! offset 128    lane 0             one lane per client thread (see crate docs)
//!   +0            LaneControl 64 B client → daemon: waiting (asleep on its CQ), cpu
//!   +64           SQ: [Slot; slots]   requests, client → daemon
//!   +64+S·64      CQ: [Slot; slots]   responses, daemon → client
//!   +64+2·S·64    SQ data: data_bytes  request payloads longer than INLINE_MAX
//!   +...          CQ data: data_bytes  response payloads longer than INLINE_MAX
//! offset 128+stride  lane 1 ...
//! (total rounded up to a page)
//! ```
//!
//! A [`Slot`] is one cache line: the sequence stamp and up to [`INLINE_MAX`] payload
//! bytes share it, so a small message costs two line transfers per direction
//! (`research/fastpath.md` §1.6: 0.32 µs vs 0.50 µs for separate index lines).
//! Longer payloads live in the lane's data area; the slot then carries `(off, len)`,
//! an offset relative to that area which the reader checks against its *own*
//! geometry before touching anything.
//!
//! Every field that both sides can reach after the handshake is an atomic; payload
//! bytes are copied with relaxed atomic word loads and stores. Nobody ever holds a
//! `&u8`/`&[u8]` into the region, so a peer writing concurrently is a wrong value,
//! never undefined behaviour.

/// `b"T2EFAST\0"`, little-endian: the first word of every region and handshake.
pub const MAGIC: u64 = u64::from_le_bytes(*b"T2EFAST\0");
/// Version of the region layout and handshake; both sides must agree exactly.
pub const VERSION: u32 = 1;
/// Size of one slot, the header, the status line and a lane's control line.
pub const LINE: usize = 64;
/// Payload bytes carried inside the slot itself.
pub const INLINE_MAX: usize = 44;
/// Most lanes a region may have.
pub const MAX_LANES: u16 = 64;
/// Most slots per ring.
pub const MAX_SLOTS: u16 = 1024;
/// Largest data area per ring (and so the largest payload).
pub const MAX_DATA_BYTES: u32 = 1 << 20;
/// Offset of the [`Header`].
pub const HEADER_OFFSET: usize = 0;
/// Offset of the [`Status`] line.
pub const STATUS_OFFSET: usize = LINE;
/// Offset of lane 0.
pub const LANES_OFFSET: usize = 2 * LINE;
const PAGE: usize = 4096;

/// Slot flag: a one-way message; the sender waits for no response.
pub const FLAG_POSTED: u16 = 1;
/// All flags a valid slot may carry.
pub const FLAGS_KNOWN: u16 = FLAG_POSTED;

/// The shape of a region: how many lanes, slots per ring, data bytes per ring.
///
/// Both sides compute every offset from these three numbers with the same code.
/// The daemon keeps its own copy and never re-reads it from shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Number of lanes, in `1 ..= MAX_LANES`.
    lanes: u16,
    /// Slots per ring, a power of two in `2 ..= MAX_SLOTS`.
    slots: u16,
    /// Bytes of each ring's data area, a multiple of 64 in `64 ..= MAX_DATA_BYTES`.
    data_bytes: u32,
}

/// Why a [`Geometry`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeometryError {
    /// `lanes` is 0 or more than [`MAX_LANES`].
    Lanes(u16),
    /// `slots` is not a power of two in `2 ..= MAX_SLOTS`.
    Slots(u16),
    /// `data_bytes` is not a multiple of 64 in `64 ..= MAX_DATA_BYTES`.
    DataBytes(u32),
}

impl core::fmt::Display for GeometryError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Lanes(n) => write!(f, "lane count {n} not in 1..={MAX_LANES}"),
            Self::Slots(n) => write!(f, "slot count {n} is not a power of two in 2..={MAX_SLOTS}"),
            Self::DataBytes(n) => {
                write!(f, "data area of {n} bytes is not a multiple of 64 in 64..={MAX_DATA_BYTES}")
            }
        }
    }
}

impl std::error::Error for GeometryError {}

impl Geometry {
    /// Checks and builds a geometry.
    pub const fn new(lanes: u16, slots: u16, data_bytes: u32) -> Result<Self, GeometryError> {
        if lanes == 0 || lanes > MAX_LANES {
            return Err(GeometryError::Lanes(lanes));
        }
        if slots < 2 || slots > MAX_SLOTS || !slots.is_power_of_two() {
            return Err(GeometryError::Slots(slots));
        }
        if data_bytes < 64 || data_bytes > MAX_DATA_BYTES || !data_bytes.is_multiple_of(64) {
            return Err(GeometryError::DataBytes(data_bytes));
        }
        // With the bounds above the region is at most
        // 128 + 64 * (64 + 2*1024*64 + 2*2^20) B ≈ 142 MiB, which fits a u32.
        Ok(Self { lanes, slots, data_bytes })
    }

    /// Number of lanes.
    pub const fn lanes(&self) -> u16 {
        self.lanes
    }

    /// Slots per ring (a power of two).
    pub const fn slots(&self) -> u16 {
        self.slots
    }

    /// Bytes in each ring's data area; also the largest payload a message can carry.
    pub const fn data_bytes(&self) -> u32 {
        self.data_bytes
    }

    /// Largest payload one message can carry.
    pub const fn max_payload(&self) -> usize {
        self.data_bytes as usize
    }

    /// Bytes from one lane to the next.
    pub const fn lane_stride(&self) -> usize {
        LINE + 2 * self.slots as usize * LINE + 2 * self.data_bytes as usize
    }

    /// Offset of lane `lane`'s [`LaneControl`] line. `lane` must be `< lanes()`.
    pub const fn lane_offset(&self, lane: u16) -> usize {
        LANES_OFFSET + lane as usize * self.lane_stride()
    }

    /// Offset of lane `lane`'s request ring (client → daemon).
    pub const fn sq_offset(&self, lane: u16) -> usize {
        self.lane_offset(lane) + LINE
    }

    /// Offset of lane `lane`'s response ring (daemon → client).
    pub const fn cq_offset(&self, lane: u16) -> usize {
        self.sq_offset(lane) + self.slots as usize * LINE
    }

    /// Offset of lane `lane`'s request data area.
    pub const fn sq_data_offset(&self, lane: u16) -> usize {
        self.cq_offset(lane) + self.slots as usize * LINE
    }

    /// Offset of lane `lane`'s response data area.
    pub const fn cq_data_offset(&self, lane: u16) -> usize {
        self.sq_data_offset(lane) + self.data_bytes as usize
    }

    /// Total region size, rounded up to a page.
    pub const fn region_size(&self) -> usize {
        let raw = LANES_OFFSET + self.lanes as usize * self.lane_stride();
        raw.div_ceil(PAGE) * PAGE
    }
}

/// Why a message's `(off, len)` was refused. Both sides run the same check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PayloadCheck {
    Length,
    Offset,
}

/// Checks a slot's payload descriptor against *our* geometry.
///
/// `len <= INLINE_MAX` means the bytes are in the slot and `off` is ignored;
/// otherwise they are `data[off .. off + len]`, `off` 8-aligned.
pub(crate) fn check_payload(geo: &Geometry, off: u32, len: u32) -> Result<(), PayloadCheck> {
    if len as usize > geo.max_payload() {
        return Err(PayloadCheck::Length);
    }
    if len as usize <= INLINE_MAX {
        return Ok(());
    }
    // u64 arithmetic: off and len are both client-chosen u32s.
    if !off.is_multiple_of(8) || u64::from(off) + u64::from(len) > u64::from(geo.data_bytes) {
        return Err(PayloadCheck::Offset);
    }
    Ok(())
}

#[cfg(not(loom))]
pub use shared::*;

#[cfg(not(loom))]
mod shared {
    use super::LINE;
    use crate::sync::AtomicU32;
    use core::mem::{align_of, offset_of, size_of};

    /// The first line of a region. Plain integers: written once by the daemon before
    /// the memfd leaves it, read once (volatile copy) by the client, never again.
    #[repr(C, align(64))]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Header {
        /// [`MAGIC`](super::MAGIC).
        pub magic: u64,
        /// [`VERSION`](super::VERSION).
        pub version: u32,
        /// Total size of the region in bytes.
        pub region_size: u32,
        /// [`Geometry::lanes`](super::Geometry::lanes).
        pub lanes: u16,
        /// [`Geometry::slots`](super::Geometry::slots).
        pub slots: u16,
        /// Always [`LINE`] (64).
        pub slot_size: u16,
        /// Always [`INLINE_MAX`](super::INLINE_MAX).
        pub inline_max: u16,
        /// [`Geometry::data_bytes`](super::Geometry::data_bytes).
        pub data_bytes: u32,
        /// [`Geometry::lane_stride`](super::Geometry::lane_stride).
        pub lane_stride: u32,
        /// Zero.
        pub reserved: [u32; 8],
    }

    /// Daemon → client status line. The daemon only writes it; the client only reads.
    #[repr(C, align(64))]
    #[derive(Debug)]
    pub struct Status {
        /// 1 while a daemon worker is busy-polling this region: a client need not ring
        /// the doorbell, and may spin for its response if `cpu` is not its own CPU.
        pub polling: AtomicU32,
        /// The CPU the polling worker last ran on.
        pub cpu: AtomicU32,
        /// Nonzero once the daemon has detached this client; every call fails.
        pub closed: AtomicU32,
        // Atomics too, so a `&Status` covers no plain bytes a peer may write.
        _pad: [AtomicU32; 13],
    }

    /// Client → daemon per-lane line.
    #[repr(C, align(64))]
    #[derive(Debug)]
    pub struct LaneControl {
        /// Nonzero while a client thread sleeps (FUTEX_WAIT) on this lane's CQ;
        /// the daemon then FUTEX_WAKEs after publishing a response.
        pub waiting: AtomicU32,
        /// 1 + the CPU the lane's thread last called from (0: not yet). A hint: the
        /// daemon busy-polls for the next request only if the client runs elsewhere.
        pub cpu: AtomicU32,
        _pad: [AtomicU32; 14],
    }

    /// One message slot, one cache line.
    ///
    /// `stamp` follows the Vyukov/crossbeam protocol over a private position `p`
    /// (wrapping `u32`, slot index `p % slots`): `stamp == p` means free for the
    /// producer at `p`; `stamp == p + 1` means full for the consumer at `p`; the
    /// consumer frees it by storing `p + slots`.
    #[repr(C, align(64))]
    #[derive(Debug)]
    pub struct Slot {
        /// Sequence stamp (see above). The futex word a client sleeps on.
        pub stamp: AtomicU32,
        /// `kind | flags << 16`.
        pub meta: AtomicU32,
        /// Request tag, echoed in the response.
        pub tag: AtomicU32,
        /// Payload length in bytes.
        pub len: AtomicU32,
        /// Payload offset in the lane's data area when `len > INLINE_MAX`.
        pub off: AtomicU32,
        /// Payload bytes when `len <= INLINE_MAX` (little-endian words).
        pub inline: [AtomicU32; 11],
    }

    const _: () = {
        assert!(size_of::<Header>() == LINE && align_of::<Header>() == LINE);
        assert!(offset_of!(Header, magic) == 0);
        assert!(offset_of!(Header, version) == 8);
        assert!(offset_of!(Header, region_size) == 12);
        assert!(offset_of!(Header, lanes) == 16);
        assert!(offset_of!(Header, slots) == 18);
        assert!(offset_of!(Header, slot_size) == 20);
        assert!(offset_of!(Header, inline_max) == 22);
        assert!(offset_of!(Header, data_bytes) == 24);
        assert!(offset_of!(Header, lane_stride) == 28);
        assert!(size_of::<Status>() == LINE && align_of::<Status>() == LINE);
        assert!(offset_of!(Status, polling) == 0);
        assert!(offset_of!(Status, cpu) == 4);
        assert!(offset_of!(Status, closed) == 8);
        assert!(size_of::<LaneControl>() == LINE && align_of::<LaneControl>() == LINE);
        assert!(offset_of!(LaneControl, waiting) == 0);
        assert!(size_of::<Slot>() == LINE && align_of::<Slot>() == LINE);
        assert!(offset_of!(Slot, stamp) == 0);
        assert!(offset_of!(Slot, meta) == 4);
        assert!(offset_of!(Slot, tag) == 8);
        assert!(offset_of!(Slot, len) == 12);
        assert!(offset_of!(Slot, off) == 16);
        assert!(offset_of!(Slot, inline) == 20);
        assert!(size_of::<[AtomicU32; 11]>() == super::INLINE_MAX);
        // The ABI relies on these being plain integers in memory.
        assert!(size_of::<AtomicU32>() == 4 && align_of::<AtomicU32>() == 4);
        assert!(size_of::<crate::sync::AtomicU64>() == 8);
        assert!(align_of::<crate::sync::AtomicU64>() == 8);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_bounds() {
        assert!(Geometry::new(0, 8, 4096).is_err());
        assert!(Geometry::new(65, 8, 4096).is_err());
        assert!(Geometry::new(1, 3, 4096).is_err());
        assert!(Geometry::new(1, 1, 4096).is_err());
        assert!(Geometry::new(1, 8, 100).is_err());
        assert!(Geometry::new(1, 8, 0).is_err());
        let big = Geometry::new(MAX_LANES, MAX_SLOTS, MAX_DATA_BYTES).unwrap();
        assert!(big.region_size() <= u32::MAX as usize);
    }

    #[test]
    fn offsets_are_disjoint_and_aligned() {
        let g = Geometry::new(3, 4, 256).unwrap();
        for lane in 0..3 {
            assert_eq!(g.lane_offset(lane) % 64, 0);
            assert_eq!(g.sq_offset(lane), g.lane_offset(lane) + 64);
            assert_eq!(g.cq_offset(lane), g.sq_offset(lane) + 4 * 64);
            assert_eq!(g.sq_data_offset(lane), g.cq_offset(lane) + 4 * 64);
            assert_eq!(g.cq_data_offset(lane), g.sq_data_offset(lane) + 256);
            assert_eq!(g.cq_data_offset(lane) + 256, g.lane_offset(lane) + g.lane_stride());
        }
        assert!(g.lane_offset(2) + g.lane_stride() <= g.region_size());
        assert_eq!(g.region_size() % 4096, 0);
    }

    #[test]
    fn payload_check() {
        let g = Geometry::new(1, 4, 256).unwrap();
        assert_eq!(check_payload(&g, u32::MAX, 44), Ok(()));
        assert_eq!(check_payload(&g, 0, 256), Ok(()));
        assert_eq!(check_payload(&g, 8, 248), Ok(()));
        assert_eq!(check_payload(&g, 8, 256), Err(PayloadCheck::Offset));
        assert_eq!(check_payload(&g, 4, 100), Err(PayloadCheck::Offset));
        assert_eq!(check_payload(&g, 0, 257), Err(PayloadCheck::Length));
        assert_eq!(check_payload(&g, u32::MAX - 7, 200), Err(PayloadCheck::Offset));
        assert_eq!(check_payload(&g, 0, u32::MAX), Err(PayloadCheck::Length));
    }
}
