//! The one place this crate takes its atomics from.
//!
//! Under `cfg(loom)` these are loom's model-checked atomics and only the ring
//! protocol ([`crate::ring`]) is compiled, so that `RUSTFLAGS="--cfg loom"` checks the
//! exact code the channel runs. Everything that maps real shared memory uses the
//! `core` types, whose layout (`#[repr(transparent)]` over the integer) is part of
//! the region ABI.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, Ordering, fence};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

/// A hint to the CPU that we are busy-waiting.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}
