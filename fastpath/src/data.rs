//! Payloads longer than a slot: each ring has a data area of `data_bytes`, used as a
//! circular byte buffer of 8-aligned, contiguous extents.
//!
//! Only the *producer* keeps books ([`DataProducer`]): it remembers which slot
//! position each extent belongs to and takes the extent back once that slot's stamp
//! shows the consumer freed it (messages are consumed in order, so extents are
//! reclaimed oldest first). The consumer keeps nothing: it checks `(off, len)`
//! against its own geometry ([`crate::layout::check_payload`]) and copies the bytes
//! out before freeing the slot. A peer that lies about consumption or offsets can
//! only garble its own messages.

#[cfg(not(loom))]
use crate::sync::{AtomicU64, Ordering};

/// Producer-private bookkeeping of one data area.
#[derive(Debug)]
pub(crate) struct DataProducer {
    /// Size of the area in bytes (a multiple of 64).
    capacity: u32,
    /// In-flight extents, oldest at `head`; a circular buffer of `extents.len()`
    /// (= slots in the ring, the most messages that can be in flight).
    extents: Box<[Extent]>,
    /// Index of the oldest extent, in `0 .. extents.len()`.
    head: usize,
    /// Number of in-flight extents, in `0 ..= extents.len()`.
    count: usize,
}

#[derive(Clone, Copy, Debug, Default)]
struct Extent {
    /// Slot position of the message using it.
    pos: u32,
    /// `start .. end` in the area; `start` is 8-aligned, `end <= capacity`.
    start: u32,
    end: u32,
}

impl DataProducer {
    pub(crate) fn new(capacity: u32, slots: u16) -> Self {
        Self { capacity, extents: vec![Extent::default(); usize::from(slots)].into_boxed_slice(), head: 0, count: 0 }
    }

    /// Takes back extents, oldest first, while `consumed(pos)` says their slot was
    /// freed.
    pub(crate) fn reclaim(&mut self, mut consumed: impl FnMut(u32) -> bool) {
        while self.count > 0 && consumed(self.extents[self.head].pos) {
            self.head = (self.head + 1) % self.extents.len();
            self.count -= 1;
        }
    }

    /// Finds room for `len` bytes; returns the 8-aligned start. Commits nothing.
    pub(crate) fn find(&self, len: u32) -> Option<u32> {
        let need = u64::from(len).div_ceil(8) * 8;
        let cap = u64::from(self.capacity);
        if self.count == self.extents.len() {
            return None;
        }
        if self.count == 0 {
            return (need <= cap).then_some(0);
        }
        let oldest = self.extents[self.head];
        let newest = self.extents[(self.head + self.count - 1) % self.extents.len()];
        let (free_end, wrapped) = (u64::from(newest.end), newest.start < oldest.start);
        if !wrapped {
            if free_end + need <= cap {
                Some(newest.end)
            } else if need <= u64::from(oldest.start) {
                Some(0)
            } else {
                None
            }
        } else if free_end + need <= u64::from(oldest.start) {
            Some(newest.end)
        } else {
            None
        }
    }

    /// Records that the message at slot position `pos` uses `start .. start + len`
    /// (as returned by [`find`](Self::find)).
    pub(crate) fn commit(&mut self, pos: u32, start: u32, len: u32) {
        debug_assert!(self.count < self.extents.len());
        let end = start + len.div_ceil(8) * 8;
        let at = (self.head + self.count) % self.extents.len();
        self.extents[at] = Extent { pos, start, end };
        self.count += 1;
    }
}

/// Copies `bytes` into `area` at byte offset `start` (8-aligned). Returns `None`,
/// writing nothing, if it does not fit.
#[cfg(not(loom))]
pub(crate) fn copy_in(area: &[AtomicU64], start: u32, bytes: &[u8]) -> Option<()> {
    let first = usize::try_from(start).ok()? / 8;
    let words = area.get(first..first.checked_add(bytes.len().div_ceil(8))?)?;
    let mut chunks = bytes.chunks_exact(8);
    for (word, chunk) in words.iter().zip(&mut chunks) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        word.store(u64::from_le_bytes(w), Ordering::Relaxed);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        words[words.len() - 1].store(u64::from_le_bytes(w), Ordering::Relaxed);
    }
    Some(())
}

/// Replaces `out`'s contents with `len` bytes of `area` from byte offset `start`
/// (8-aligned). Returns `None`, leaving `out` empty, if the range is outside `area`.
#[cfg(not(loom))]
pub(crate) fn copy_out(area: &[AtomicU64], start: u32, len: u32, out: &mut Vec<u8>) -> Option<()> {
    out.clear();
    let first = usize::try_from(start).ok()? / 8;
    let len = usize::try_from(len).ok()?;
    let words = area.get(first..first.checked_add(len.div_ceil(8))?)?;
    out.reserve(words.len() * 8);
    for word in words {
        out.extend_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
    }
    out.truncate(len);
    Some(())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn fills_wraps_and_reclaims_in_order() {
        let mut p = DataProducer::new(256, 4);
        assert_eq!(p.find(257), None);
        assert_eq!(p.find(256), Some(0));
        let a = p.find(100).unwrap();
        p.commit(0, a, 100); // 0..104
        let b = p.find(100).unwrap();
        assert_eq!(b, 104);
        p.commit(1, b, 100); // 104..208
        assert_eq!(p.find(64), None, "48 left at the end, nothing at the start");
        p.reclaim(|pos| pos == 0);
        let c = p.find(64).unwrap();
        assert_eq!(c, 0, "wraps to the start");
        p.commit(2, c, 64); // 0..64, wrapped
        assert_eq!(p.find(41), None, "64..104 free is 40 bytes");
        assert_eq!(p.find(40), Some(64));
        p.reclaim(|_| false);
        p.reclaim(|pos| pos <= 2);
        assert_eq!(p.find(256), Some(0), "empty again");
    }

    #[test]
    fn bounded_by_slots() {
        let mut p = DataProducer::new(4096, 2);
        for pos in 0..2 {
            let s = p.find(64).unwrap();
            p.commit(pos, s, 64);
        }
        assert_eq!(p.find(8), None);
    }

    #[test]
    fn copies_round_trip_and_refuse_out_of_range() {
        let area: Vec<AtomicU64> = (0..8).map(|_| AtomicU64::new(0)).collect();
        let data: Vec<u8> = (0..61).collect();
        copy_in(&area, 0, &data).unwrap();
        let mut out = Vec::new();
        copy_out(&area, 0, 61, &mut out).unwrap();
        assert_eq!(out, data);
        assert!(copy_in(&area, 8, &data).is_none());
        assert!(copy_out(&area, 8, 61, &mut out).is_none());
        assert!(copy_out(&area, !7, u32::MAX, &mut out).is_none());
        assert!(out.is_empty());
    }
}
