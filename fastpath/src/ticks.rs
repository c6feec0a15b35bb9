//! Cheap timestamps for stage timing (`TRACE2E_BREAKDOWN=1`).
//!
//! A stage measured with two `Instant::now()` costs two `clock_gettime` calls: ~32 ns
//! each on the 2026-12-02 VM, and a mediated read has about ten timed stages, so the
//! timers alone added ~0.6 µs to the overhead they were measuring. Where the kernel
//! keeps time with the CPU's time-stamp counter (its clocksource is `tsc`: invariant
//! and synchronised across CPUs, which the kernel checked), a timestamp here is one
//! `rdtsc` (~13 ns), converted to nanoseconds with a ratio calibrated against the
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
    let ns = t1.duration_since(t0).as_nanos();
    let ticks = u128::from(c1.checked_sub(c0)?);
    // Between 10 MHz and 100 GHz: anything else is not a usable counter.
    if ticks < ns / 100 || ticks > ns * 100 {
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
        let delta = later.0.saturating_sub(self.0);
        match source() {
            Source::Tsc { ns_per_tick_q32 } => {
                u64::try_from((u128::from(delta) * u128::from(ns_per_tick_q32)) >> 32).unwrap_or(u64::MAX)
            }
            Source::Monotonic => delta,
        }
    }

    /// Nanoseconds from `self` to now.
    #[inline]
    pub fn elapsed_ns(self) -> u64 {
        self.ns_until(now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_sleep_like_the_monotonic_clock() {
        init();
        let (t, i) = (now(), Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        let (ns, reference) = (t.elapsed_ns(), i.elapsed().as_nanos() as u64);
        // Within 2 % (calibration error) plus scheduling slack of the monotonic clock.
        assert!(ns >= 19_000_000, "{ns} ns for a 20 ms sleep");
        let diff = ns.abs_diff(reference);
        assert!(diff < reference / 50 + 200_000, "ticks {ns} ns vs monotonic {reference} ns");
    }

    #[test]
    fn later_minus_earlier_never_underflows() {
        let a = now();
        let b = now();
        assert_eq!(b.ns_until(a), 0);
        assert!(a.ns_until(b) < 1_000_000_000);
    }
}
