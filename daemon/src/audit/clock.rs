//! Audit time: Unix µs read off the monotonic clock from an anchor on the wall clock, so
//! that a decision reads one clock for both its lease deadline and its record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Audit time: Unix µs, read off the monotonic clock from an anchor on the wall clock
/// ([`resync_clock`], called by the lease ticker), so that a decision reads one clock
/// for both its lease deadline and its record (each read is ~40 ns on a VM's kvm-clock).
static CLOCK_ORIGIN: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
/// Unix µs at [`CLOCK_ORIGIN`]; 0 until first anchored.
static CLOCK_OFFSET_US: AtomicU64 = AtomicU64::new(0);

/// Re-anchors audit time on the wall clock (which may have been stepped meanwhile).
pub fn resync_clock() {
    let at = Instant::now();
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
    let since = at.saturating_duration_since(*CLOCK_ORIGIN).as_micros() as u64;
    CLOCK_OFFSET_US.store(wall.saturating_sub(since).max(1), Ordering::Relaxed);
}

/// Unix µs of the monotonic instant `at`, on the audit clock.
pub fn wall_us(at: Instant) -> u64 {
    let mut offset = CLOCK_OFFSET_US.load(Ordering::Relaxed);
    if offset == 0 {
        resync_clock();
        offset = CLOCK_OFFSET_US.load(Ordering::Relaxed);
    }
    offset + at.saturating_duration_since(*CLOCK_ORIGIN).as_micros() as u64
}

/// Unix µs now, on the audit clock.
pub fn now_us() -> u64 {
    wall_us(Instant::now())
}
