//! Client-side stage timing of mediated I/Os, when `TRACE2E_BREAKDOWN=1` (read once).
//!
//! Two stages: `client_encode` (building the request message; shared memory only) and
//! `client_round_trip` (from handing the request to the transport to having the
//! decision: ring hand-off, the daemon's work until it answers, the wake-up; over gRPC
//! also the message's encoding). The daemon reports how long it took to answer
//! (`daemon_to_answer` in `trace2e status --format json`), so the hand-off and wait alone
//! is the difference. Used by the bench `breakdown`; off, each stage costs one relaxed
//! load; on, two timestamps ([`trace2e_fastpath::ticks`]).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use trace2e_fastpath::ticks::{self, Ticks};

/// Client stages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stage {
    Encode = 0,
    RoundTrip = 1,
}

const NAMES: [&str; 2] = ["client_encode", "client_round_trip"];
static TOTAL_NS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static COUNT: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        let on = std::env::var("TRACE2E_BREAKDOWN").is_ok_and(|v| v == "1");
        if on {
            ticks::init();
        }
        on
    })
}

/// Starts timing (`None` when off).
#[inline]
pub(crate) fn start() -> Option<Ticks> {
    enabled().then(ticks::now)
}

/// Ends a stage.
#[inline]
pub(crate) fn stop(stage: Stage, started: Option<Ticks>) {
    if let Some(t) = started {
        let ns = t.elapsed_ns();
        TOTAL_NS[stage as usize].fetch_add(ns, Ordering::Relaxed);
        COUNT[stage as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// `(stage, total_ns, count)` since the process started; empty unless `TRACE2E_BREAKDOWN=1`.
#[doc(hidden)]
pub fn breakdown_snapshot() -> Vec<(&'static str, u64, u64)> {
    if !enabled() {
        return Vec::new();
    }
    (0..NAMES.len())
        .map(|i| (NAMES[i], TOTAL_NS[i].load(Ordering::Relaxed), COUNT[i].load(Ordering::Relaxed)))
        .collect()
}
