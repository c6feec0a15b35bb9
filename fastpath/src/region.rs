//! A mapped region and typed, bounds-checked views into it.
//!
//! The only unsafe code that turns the mapping into references lives here. Every
//! reference it hands out is to a type made only of atomics (see
//! [`crate::layout`]), so it stays sound while another process writes the same
//! memory; the header, made of plain integers, is only ever copied with volatile
//! accesses.

use crate::layout::{Geometry, Header, INLINE_MAX, LaneControl, Slot, Status};
use crate::ring::{SlotBody, SlotRing};
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use memmap2::MmapRaw;

/// A mapping of at least `geometry.region_size()` bytes, page-aligned.
#[derive(Debug)]
pub(crate) struct Region {
    /// Invariant: `map.len() >= geo.region_size()` and `map.as_ptr()` is page-aligned.
    map: MmapRaw,
    geo: Geometry,
}

impl Region {
    /// Wraps `map`; `None` if it is too small or misaligned for `geo`.
    pub(crate) fn new(map: MmapRaw, geo: Geometry) -> Option<Self> {
        let aligned = (map.as_ptr() as usize).is_multiple_of(4096);
        (aligned && map.len() >= geo.region_size()).then_some(Self { map, geo })
    }

    pub(crate) fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// Unmaps nothing: hands the mapping back for the caller to dispose of.
    pub(crate) fn into_map(self) -> MmapRaw {
        self.map
    }

    /// A reference to a `T` at `offset`.
    ///
    /// # Safety
    ///
    /// `T` must consist only of atomics (so that it is valid for every bit pattern
    /// and sound to share with concurrent writers), and `offset .. offset +
    /// size_of::<T>()` must lie within the region and be aligned for `T`.
    unsafe fn at<T>(&self, offset: usize) -> &T {
        debug_assert!(offset + size_of::<T>() <= self.geo.region_size());
        debug_assert!(offset.is_multiple_of(align_of::<T>()));
        // SAFETY: the caller guarantees bounds, alignment (the base is page-aligned)
        // and that `T` is all atomics; the mapping lives as long as `&self`.
        unsafe { &*self.map.as_ptr().add(offset).cast::<T>() }
    }

    /// A slice of `len` `T`s at `offset`.
    ///
    /// # Safety
    ///
    /// As for [`at`](Self::at), for `len * size_of::<T>()` bytes.
    unsafe fn slice_at<T>(&self, offset: usize, len: usize) -> &[T] {
        debug_assert!(offset + len * size_of::<T>() <= self.geo.region_size());
        debug_assert!(offset.is_multiple_of(align_of::<T>()));
        // SAFETY: as in `at`.
        unsafe { core::slice::from_raw_parts(self.map.as_ptr().add(offset).cast::<T>(), len) }
    }

    fn check_lane(&self, lane: u16) {
        // Internal invariant, never client input: callers validate lanes first.
        assert!(lane < self.geo.lanes(), "lane {lane} out of range");
    }

    pub(crate) fn status(&self) -> &Status {
        // SAFETY: `Status` is all atomics; STATUS_OFFSET (64) + 64 <= region_size.
        unsafe { self.at(crate::layout::STATUS_OFFSET) }
    }

    pub(crate) fn lane_control(&self, lane: u16) -> &LaneControl {
        self.check_lane(lane);
        // SAFETY: all atomics; `lane < lanes` so the line is inside the region, and
        // lane offsets are multiples of 64.
        unsafe { self.at(self.geo.lane_offset(lane)) }
    }

    /// Lane `lane`'s request ring.
    pub(crate) fn sq(&self, lane: u16) -> RingView<'_> {
        self.check_lane(lane);
        // SAFETY: all atomics; `slots` 64-byte slots at a 64-aligned offset inside
        // lane `lane`, which is inside the region.
        RingView(unsafe { self.slice_at(self.geo.sq_offset(lane), self.geo.slots().into()) })
    }

    /// Lane `lane`'s response ring.
    pub(crate) fn cq(&self, lane: u16) -> RingView<'_> {
        self.check_lane(lane);
        // SAFETY: as for `sq`.
        RingView(unsafe { self.slice_at(self.geo.cq_offset(lane), self.geo.slots().into()) })
    }

    /// Lane `lane`'s request data area, as words.
    pub(crate) fn sq_data(&self, lane: u16) -> &[AtomicU64] {
        self.check_lane(lane);
        let words = self.geo.data_bytes() as usize / 8;
        // SAFETY: all atomics; `data_bytes` (a multiple of 64) bytes at a 64-aligned
        // offset inside lane `lane`.
        unsafe { self.slice_at(self.geo.sq_data_offset(lane), words) }
    }

    /// Lane `lane`'s response data area, as words.
    pub(crate) fn cq_data(&self, lane: u16) -> &[AtomicU64] {
        self.check_lane(lane);
        let words = self.geo.data_bytes() as usize / 8;
        // SAFETY: as for `sq_data`.
        unsafe { self.slice_at(self.geo.cq_data_offset(lane), words) }
    }

    /// Writes the header. Only the daemon does this, before anyone else has the fd.
    pub(crate) fn write_header(&self, header: &Header) {
        // SAFETY: offset 0 is inside the region and page-aligned; nobody else can
        // access the region yet; a volatile write keeps it from being elided.
        unsafe { self.map.as_mut_ptr().cast::<Header>().write_volatile(*header) }
    }

    /// Copies the header out.
    pub(crate) fn read_header(&self) -> Header {
        // SAFETY: offset 0 is inside the region and aligned; `Header` is plain
        // integers (every bit pattern is valid); a volatile read of a by-value copy
        // is the accepted way to read memory another process may write.
        unsafe { self.map.as_ptr().cast::<Header>().read_volatile() }
    }

    /// Overwrites the 4-byte word at `offset` (rounded down to 4, wrapped into the
    /// region): a hostile client's write, for the fuzz target and tests.
    #[cfg(any(fuzzing, test))]
    pub(crate) fn poke(&self, offset: usize, value: u32) {
        let offset = (offset % self.geo.region_size()) & !3;
        // SAFETY: `offset + 4 <= region_size` (both multiples of 4), aligned; an
        // `AtomicU32` is valid for every bit pattern.
        let word: &AtomicU32 = unsafe { self.at(offset) };
        word.store(value, Ordering::Relaxed);
    }

    /// Sets every slot's stamp to its index (all free for position 0).
    pub(crate) fn init_stamps(&self) {
        for lane in 0..self.geo.lanes() {
            for ring in [self.sq(lane), self.cq(lane)] {
                for (i, slot) in ring.0.iter().enumerate() {
                    slot.stamp.store(i as u32, Ordering::Relaxed);
                }
            }
        }
    }
}

/// A ring of slots in a region.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RingView<'a>(&'a [Slot]);

impl SlotRing for RingView<'_> {
    #[inline]
    fn slots(&self) -> u32 {
        self.0.len() as u32
    }

    #[inline]
    fn stamp(&self, index: u32) -> &AtomicU32 {
        &self.0[index as usize].stamp
    }

    #[inline]
    fn load_body(&self, index: u32) -> SlotBody {
        let s = &self.0[index as usize];
        // Relaxed: the stamp's Acquire load already ordered these after the
        // producer's writes; a hostile producer can only make them wrong values.
        let meta = s.meta.load(Ordering::Relaxed);
        let mut inline = [0u8; INLINE_MAX];
        for (chunk, word) in inline.chunks_exact_mut(4).zip(&s.inline) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        SlotBody {
            kind: meta as u16,
            flags: (meta >> 16) as u16,
            tag: s.tag.load(Ordering::Relaxed),
            len: s.len.load(Ordering::Relaxed),
            off: s.off.load(Ordering::Relaxed),
            inline,
        }
    }

    #[inline]
    fn store_body(&self, index: u32, body: &SlotBody) {
        let s = &self.0[index as usize];
        s.meta.store(u32::from(body.kind) | u32::from(body.flags) << 16, Ordering::Relaxed);
        s.tag.store(body.tag, Ordering::Relaxed);
        s.len.store(body.len, Ordering::Relaxed);
        s.off.store(body.off, Ordering::Relaxed);
        // Only the words the payload uses: small messages touch little.
        let used = (body.len as usize).min(INLINE_MAX).div_ceil(4);
        for (chunk, word) in body.inline.chunks_exact(4).zip(&s.inline).take(used) {
            word.store(u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]), Ordering::Relaxed);
        }
    }
}
