//! The ring protocol: per-slot sequence stamps and the two wake-up handshakes.
//!
//! This module is all the concurrency there is; it is generic over [`SlotRing`] so
//! that the same functions run over a mapped region and, under `cfg(loom)`, over a
//! model-checked heap ring (see the `loom` tests at the bottom).
//!
//! # Stamps
//!
//! Each side keeps its position `p` privately (a wrapping `u32`; the slot is
//! `p & mask`). A slot's stamp says whose turn it is:
//!
//! | stamp       | meaning                                    |
//! |-------------|--------------------------------------------|
//! | `p`         | free: the producer at `p` may write it     |
//! | `p + 1`     | full: the consumer at `p` may read it      |
//! | `p + slots` | freed by the consumer: free for `p + slots` |
//!
//! The producer writes the body, then stores `p + 1` with `Release`; the consumer
//! loads the stamp with `Acquire`, copies the body out, then stores `p + slots` with
//! `Release`. Neither side reads the other's position, so a peer that scribbles can
//! only make a stamp hold a value that is neither expected one, which the reader
//! reports ([`Peek::Unexpected`]) instead of acting on.
//!
//! # Wake-ups (Dekker)
//!
//! A sleeper announces itself (`waiting = 1`), issues a `SeqCst` fence, then
//! re-checks the stamp it is about to sleep on; a waker publishes the stamp, issues a
//! `SeqCst` fence, then reads `waiting`. The fences order the two store→load pairs,
//! so at least one side sees the other: either the sleeper sees the new stamp and
//! does not sleep, or the waker sees `waiting` and wakes it. The same pattern with
//! the daemon's `polling` flag decides whether a client rings the doorbell
//! ([`should_ring`], [`stop_polling`]).

use crate::layout::INLINE_MAX;
use crate::sync::{AtomicU32, Ordering, fence};

/// A slot's contents other than the stamp, copied out of (or into) shared memory.
///
/// Integers only: every bit pattern is a value, so a copy of hostile memory is just
/// a wrong value to validate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotBody {
    pub(crate) kind: u16,
    pub(crate) flags: u16,
    pub(crate) tag: u32,
    pub(crate) len: u32,
    pub(crate) off: u32,
    pub(crate) inline: [u8; INLINE_MAX],
}

impl SlotBody {
    pub(crate) const EMPTY: Self = Self { kind: 0, flags: 0, tag: 0, len: 0, off: 0, inline: [0; INLINE_MAX] };
}

/// A ring of slots as the protocol sees it.
pub(crate) trait SlotRing {
    /// Number of slots (a power of two).
    fn slots(&self) -> u32;
    /// The stamp of slot `index` (`index < slots()`).
    fn stamp(&self, index: u32) -> &AtomicU32;
    /// Copies slot `index`'s body out.
    fn load_body(&self, index: u32) -> SlotBody;
    /// Writes slot `index`'s body.
    fn store_body(&self, index: u32, body: &SlotBody);
}

/// What a producer finds at its position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Space {
    /// The slot is free.
    Free,
    /// The consumer has not freed the slot yet (the ring is full).
    Full,
    /// The stamp is neither: the peer wrote it.
    Unexpected(u32),
}

/// What a consumer finds at its position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Peek {
    /// Nothing published yet.
    Empty,
    /// A message, copied out. Call [`release`] once done with it (and its payload).
    Ready(SlotBody),
    /// The stamp is neither: the peer wrote it.
    Unexpected(u32),
}

/// Is the slot at producer position `pos` free?
#[inline]
pub(crate) fn space<R: SlotRing>(ring: &R, pos: u32) -> Space {
    let slots = ring.slots();
    // Acquire: the consumer's reads of this slot happen before our writes to it.
    let found = ring.stamp(pos & (slots - 1)).load(Ordering::Acquire);
    if found == pos {
        Space::Free
    } else if found == pos.wrapping_sub(slots).wrapping_add(1) {
        Space::Full
    } else {
        Space::Unexpected(found)
    }
}

/// Writes `body` at producer position `pos` and publishes it; advances `pos`.
///
/// Only call after [`space`] returned [`Space::Free`] for this `pos`.
#[inline]
pub(crate) fn publish<R: SlotRing>(ring: &R, pos: &mut u32, body: &SlotBody) {
    let index = *pos & (ring.slots() - 1);
    ring.store_body(index, body);
    ring.stamp(index).store(pos.wrapping_add(1), Ordering::Release);
    *pos = pos.wrapping_add(1);
}

/// Looks at consumer position `pos`, copying the body out if it is ready.
#[inline]
pub(crate) fn peek<R: SlotRing>(ring: &R, pos: u32) -> Peek {
    let index = pos & (ring.slots() - 1);
    // Acquire: the producer's writes of the body happen before our copy.
    let found = ring.stamp(index).load(Ordering::Acquire);
    if found == pos.wrapping_add(1) {
        Peek::Ready(ring.load_body(index))
    } else if found == pos {
        Peek::Empty
    } else {
        Peek::Unexpected(found)
    }
}

/// Frees the slot at consumer position `pos` (after [`peek`] returned `Ready` and
/// everything it refers to has been copied out); advances `pos`.
#[inline]
pub(crate) fn release<R: SlotRing>(ring: &R, pos: &mut u32) {
    let slots = ring.slots();
    ring.stamp(*pos & (slots - 1)).store(pos.wrapping_add(slots), Ordering::Release);
    *pos = pos.wrapping_add(1);
}

/// Waker side of the sleep handshake, called after [`publish`]: may the consumer be
/// asleep (so that it needs a FUTEX_WAKE)?
#[inline]
pub(crate) fn peer_waiting(waiting: &AtomicU32) -> bool {
    fence(Ordering::SeqCst);
    waiting.load(Ordering::Relaxed) != 0
}

/// Sleeper side: announce the sleep, then re-check. Returns `true` if `stamp` still
/// holds `empty`, i.e. the caller may FUTEX_WAIT on it; then it must call
/// [`end_sleep`] after waking. Returns `false` (announcement withdrawn) otherwise.
#[inline]
pub(crate) fn announce_sleep(waiting: &AtomicU32, stamp: &AtomicU32, empty: u32) -> bool {
    waiting.store(1, Ordering::Relaxed);
    fence(Ordering::SeqCst);
    if stamp.load(Ordering::Relaxed) == empty {
        true
    } else {
        end_sleep(waiting);
        false
    }
}

/// Withdraws a sleep announcement.
#[inline]
pub(crate) fn end_sleep(waiting: &AtomicU32) {
    waiting.store(0, Ordering::Relaxed);
}

/// Client side of the doorbell handshake, called after [`publish`]: is the daemon
/// *not* polling (so that it must be woken through the doorbell)?
#[inline]
pub(crate) fn should_ring(polling: &AtomicU32) -> bool {
    fence(Ordering::SeqCst);
    polling.load(Ordering::Relaxed) == 0
}

/// Daemon side: stop polling. The caller must scan every lane once more afterwards;
/// anything published before a client read `polling == 1` is then seen.
#[inline]
pub(crate) fn stop_polling(polling: &AtomicU32) {
    polling.store(0, Ordering::Relaxed);
    fence(Ordering::SeqCst);
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! `RUSTFLAGS="--cfg loom" cargo test -p trace2e-fastpath --release --lib loom`
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicBool;
    use loom::thread;

    /// A heap ring whose bodies are loom cells: loom then reports any body access
    /// that the stamps do not order (a data race), on top of checking values.
    struct ModelRing {
        stamps: Vec<AtomicU32>,
        bodies: Vec<UnsafeCell<SlotBody>>,
    }

    impl ModelRing {
        fn new(slots: u32) -> Self {
            Self {
                stamps: (0..slots).map(AtomicU32::new).collect(),
                bodies: (0..slots).map(|_| UnsafeCell::new(SlotBody::EMPTY)).collect(),
            }
        }
    }

    impl SlotRing for ModelRing {
        fn slots(&self) -> u32 {
            self.stamps.len() as u32
        }
        fn stamp(&self, index: u32) -> &AtomicU32 {
            &self.stamps[index as usize]
        }
        fn load_body(&self, index: u32) -> SlotBody {
            // SAFETY: loom checks that this read is ordered after the producer's
            // write by the stamp protocol; an unordered access fails the model.
            self.bodies[index as usize].with(|p| unsafe { *p })
        }
        fn store_body(&self, index: u32, body: &SlotBody) {
            // SAFETY: as above, for the write against the consumer's last read.
            self.bodies[index as usize].with_mut(|p| unsafe { *p = *body });
        }
    }

    fn body(tag: u32) -> SlotBody {
        let mut b = SlotBody::EMPTY;
        b.tag = tag;
        b.len = tag + 1;
        b.inline[0] = tag as u8;
        b.inline[INLINE_MAX - 1] = !(tag as u8);
        b
    }

    /// Three messages through a two-slot ring: FIFO, no loss, no duplicate, no race,
    /// including the wrap where the producer reuses a slot the consumer just freed.
    #[test]
    fn loom_ring_fifo_with_wrap() {
        loom::model(|| {
            let ring = Arc::new(ModelRing::new(2));
            let producer = {
                let ring = ring.clone();
                thread::spawn(move || {
                    let mut pos = 0u32;
                    for tag in 0..3 {
                        loop {
                            match space(&*ring, pos) {
                                Space::Free => break,
                                Space::Full => crate::sync::spin_hint(),
                                Space::Unexpected(s) => panic!("unexpected stamp {s}"),
                            }
                        }
                        publish(&*ring, &mut pos, &body(tag));
                    }
                })
            };
            let mut pos = 0u32;
            for tag in 0..3 {
                let got = loop {
                    match peek(&*ring, pos) {
                        Peek::Ready(b) => break b,
                        Peek::Empty => thread::yield_now(),
                        Peek::Unexpected(s) => panic!("unexpected stamp {s}"),
                    }
                };
                assert_eq!(got, body(tag));
                release(&*ring, &mut pos);
            }
            producer.join().unwrap();
        });
    }

    /// The sleep handshake never loses a wake-up: if the consumer decides to sleep,
    /// the producer decides to wake it.
    #[test]
    fn loom_wakeup_not_lost() {
        loom::model(|| {
            let ring = Arc::new(ModelRing::new(2));
            let waiting = Arc::new(AtomicU32::new(0));
            let woke = Arc::new(AtomicBool::new(false));
            let producer = {
                let (ring, waiting, woke) = (ring.clone(), waiting.clone(), woke.clone());
                thread::spawn(move || {
                    let mut pos = 0;
                    assert_eq!(space(&*ring, pos), Space::Free);
                    publish(&*ring, &mut pos, &body(7));
                    if peer_waiting(&waiting) {
                        woke.store(true, Ordering::Relaxed);
                    }
                })
            };
            let slept = match peek(&*ring, 0) {
                Peek::Ready(_) => false,
                Peek::Empty => announce_sleep(&waiting, ring.stamp(0), 0),
                Peek::Unexpected(s) => panic!("unexpected stamp {s}"),
            };
            producer.join().unwrap();
            assert!(!slept || woke.load(Ordering::Relaxed), "lost wake-up");
            // Whatever happened, the message is there now.
            assert!(matches!(peek(&*ring, 0), Peek::Ready(b) if b == body(7)));
        });
    }

    /// The doorbell handshake: a daemon that stops polling and re-scans, and a client
    /// that publishes then checks `polling`, never both miss the message.
    #[test]
    fn loom_doorbell_not_lost() {
        loom::model(|| {
            let ring = Arc::new(ModelRing::new(2));
            let polling = Arc::new(AtomicU32::new(1));
            let client = {
                let (ring, polling) = (ring.clone(), polling.clone());
                thread::spawn(move || {
                    let mut pos = 0;
                    publish(&*ring, &mut pos, &body(3));
                    should_ring(&polling)
                })
            };
            // Daemon: one scan while polling, stop, then the mandatory re-scan.
            let mut seen = matches!(peek(&*ring, 0), Peek::Ready(_));
            stop_polling(&polling);
            seen |= matches!(peek(&*ring, 0), Peek::Ready(_));
            let rang = client.join().unwrap();
            assert!(seen || rang, "request neither seen nor announced");
        });
    }
}
