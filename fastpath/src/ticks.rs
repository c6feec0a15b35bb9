//! Cheap timestamps for stage timing (`TRACE2E_BREAKDOWN=1`).
//!
//! A stage measured with two `Instant::now()` costs two `clock_gettime` calls, and a
//! mediated read has about ten timed stages, so on a VM the timers alone added a large
//! part of the overhead they were measuring (bench `breakdown`; numbers in
//! docs/decisions.md). Where the kernel
//! keeps time with the CPU's time-stamp counter (its clocksource is `tsc`: invariant
//! and synchronised across CPUs, which the kernel checked), a timestamp here is one
//! `rdtsc`, converted to nanoseconds with a ratio calibrated against the
//! monotonic clock once. Elsewhere it falls back to the monotonic clock.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// An opaque point in time; only differences mean anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticks(u64);

#[derive(Debug, Clone, Copy)]
enum Source {
    /// `rdtsc`; nanoseconds = ticks × `ns_per_tick_q32` / 2³².
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Tsc { ns_per_tick_q32: u64 },
    /// Nanoseconds since [`origin`].
    Monotonic,
}

/// How long [`calibrate`] measures the counter against the monotonic clock.
const CALIBRATION: Duration = Duration::from_millis(5);

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn source() -> Source {
    static SOURCE: OnceLock<Source> = OnceLock::new();
    *SOURCE.get_or_init(detect)
}

fn detect() -> Source {
    let _ = origin();
    #[cfg(target_arch = "x86_64")]
    {
        let clocksource = std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource");
        if clocksource.is_ok_and(|s| s.trim() == "tsc")
            && let Some(ns_per_tick_q32) = calibrate_tsc()
        {
            return Source::Tsc { ns_per_tick_q32 };
        }
    }
    Source::Monotonic
}

#[cfg(target_arch = "x86_64")]
fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` has no preconditions; every x86_64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The counter's period in ns, as a 32.32 fixed-point number; `None` if it does not
/// advance sensibly (a hypervisor that traps or freezes it).
#[cfg(target_arch = "x86_64")]
fn calibrate_tsc() -> Option<u64> {
    let (t0, c0) = (Instant::now(), rdtsc());
    std::thread::sleep(CALIBRATION);
    let (t1, c1) = (Instant::now(), rdtsc());
    ns_per_tick_q32(t1.duration_since(t0).as_nanos(), c1.checked_sub(c0)?)
}

/// The period of a counter that advanced `ticks` in `ns` nanoseconds, as a 32.32
/// fixed-point number of ns; `None` unless it runs between 10 MHz and 100 GHz (anything
/// else is not a usable counter).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn ns_per_tick_q32(ns: u128, ticks: u64) -> Option<u64> {
    let ticks = u128::from(ticks);
    if ticks == 0 || ticks < ns / 100 || ticks > ns * 100 {
        return None;
    }
    u64::try_from((ns << 32) / ticks).ok()
}

/// Chooses and calibrates the time source now (a 5 ms sleep on first call), so that the
/// first timed stage is not the one that pays for it.
pub fn init() {
    let _ = source();
}

/// Now.
#[inline]
pub fn now() -> Ticks {
    match source() {
        #[cfg(target_arch = "x86_64")]
        Source::Tsc { .. } => Ticks(rdtsc()),
        _ => Ticks(u64::try_from(origin().elapsed().as_nanos()).unwrap_or(u64::MAX)),
    }
}

impl Ticks {
    /// Nanoseconds from `self` to `later` (0 if `later` is earlier).
    #[inline]
    pub fn ns_until(self, later: Ticks) -> u64 {
        to_ns(later.0.saturating_sub(self.0), source())
    }

    /// Nanoseconds from `self` to now.
    #[inline]
    pub fn elapsed_ns(self) -> u64 {
        self.ns_until(now())
    }
}

/// `delta` ticks of `source` in nanoseconds (saturating).
#[inline]
fn to_ns(delta: u64, source: Source) -> u64 {
    match source {
        Source::Tsc { ns_per_tick_q32 } => {
            u64::try_from((u128::from(delta) * u128::from(ns_per_tick_q32)) >> 32).unwrap_or(u64::MAX)
        }
        Source::Monotonic => delta,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_gives_the_period_in_32_32_fixed_point() {
        // 3 GHz: 1/3 ns per tick, 2^32 / 3 = 1 431 655 765.33 in 32.32.
        assert_eq!(ns_per_tick_q32(5_000_000, 15_000_000), Some(1_431_655_765));
        // 1 GHz: exactly 1 ns per tick.
        assert_eq!(ns_per_tick_q32(5_000_000, 5_000_000), Some(1 << 32));
        // A frozen counter, or one slower than 10 MHz or faster than 100 GHz, is refused.
        assert_eq!(ns_per_tick_q32(5_000_000, 0), None);
        assert_eq!(ns_per_tick_q32(5_000_000, 49_999), None);
        assert_eq!(ns_per_tick_q32(5_000_000, 500_000_001), None);
        assert_eq!(ns_per_tick_q32(5_000_000, 50_000), Some(100 << 32));
    }

    #[test]
    fn ticks_convert_to_nanoseconds_by_the_calibrated_period() {
        let three_ghz = Source::Tsc { ns_per_tick_q32: 1_431_655_765 };
        assert_eq!(to_ns(3_000_000_000, three_ghz), 999_999_999); // 1 s, less the truncation
        assert_eq!(to_ns(3, three_ghz), 0);
        assert_eq!(to_ns(4, three_ghz), 1);
        let half_ns = Source::Tsc { ns_per_tick_q32: 1 << 31 };
        assert_eq!(to_ns(1_000, half_ns), 500);
        assert_eq!(to_ns(u64::MAX, Source::Tsc { ns_per_tick_q32: u64::MAX }), u64::MAX, "saturates");
        assert_eq!(to_ns(12_345, Source::Monotonic), 12_345);
    }

    #[test]
    fn timestamps_never_go_backwards_and_advance_over_a_sleep() {
        init();
        let samples: Vec<Ticks> = (0..10_000).map(|_| now()).collect();
        assert!(samples.windows(2).all(|w| w[0] <= w[1]), "a later timestamp is earlier");
        let before = now();
        std::thread::sleep(Duration::from_millis(1)); // an interval to measure, not a synchronisation
        assert!(before.elapsed_ns() > 0, "no time passed over a 1 ms sleep");
    }

    #[test]
    fn later_minus_earlier_never_underflows() {
        let a = now();
        let b = now();
        assert!(a <= b);
        assert_eq!(b.ns_until(a), 0);
        assert_eq!(Ticks(5).ns_until(Ticks(3)), 0);
    }
}
