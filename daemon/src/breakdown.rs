//! Where the time of a mediated I/O goes, stage by stage, when `TRACE2E_BREAKDOWN=1`.
//!
//! This module owns the per-stage accumulators only: the engine and the P2M transports
//! time their own stages with [`Breakdown::start`] / [`Breakdown::stop`]. Disabled (the
//! default), a stage costs one branch on a bool read once at start-up; enabled, two
//! timestamps ([`trace2e_fastpath::ticks`]: one `rdtsc` where the kernel keeps time
//! with the TSC; else `Instant::now()`) and two relaxed atomic adds. A read's ten or so
//! timed stages still add to what they measure (the bench `breakdown` prints the
//! overhead with the breakdown on). Operators read the
//! totals in `trace2e status --format json`; the bench `breakdown` turns them into the
//! per-I/O table (the paper's Fig. 10).

use std::sync::atomic::{AtomicU64, Ordering};

use trace2e_fastpath::ticks::{self, Ticks};

/// The stages of one mediated I/O on the daemon's side, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Decoding the request and encoding the answer on the shared-memory channel.
    Codec,
    /// Resolving the fd and waiting for the flow's reservations.
    Reservation,
    /// Evaluating the compliance rules over the sources.
    Compliance,
    /// Merging provenance when a report is applied.
    ProvenanceUpdate,
    /// Appending audit records.
    AuditAppend,
    /// Everything the daemon does for one request or report, end to end. Not all of it
    /// is in the client's wait: reports are posted, and a grant is answered before its
    /// audit record is written.
    Service,
    /// From taking a flow request to publishing its answer: the daemon's part of the
    /// client's round trip (the rest is the hand-off and wait).
    Answer,
}

impl Stage {
    /// All stages, in order.
    pub const ALL: [Stage; 7] = [
        Stage::Codec,
        Stage::Reservation,
        Stage::Compliance,
        Stage::ProvenanceUpdate,
        Stage::AuditAppend,
        Stage::Service,
        Stage::Answer,
    ];

    /// The stage's name in status output.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Codec => "daemon_codec",
            Stage::Reservation => "reservation",
            Stage::Compliance => "compliance",
            Stage::ProvenanceUpdate => "provenance_update",
            Stage::AuditAppend => "audit_append",
            Stage::Service => "daemon_service",
            Stage::Answer => "daemon_to_answer",
        }
    }
}

/// Cumulative time and count per stage.
#[derive(Debug)]
pub struct Breakdown {
    enabled: bool,
    total_ns: [AtomicU64; Stage::ALL.len()],
    count: [AtomicU64; Stage::ALL.len()],
}

/// A running stage measurement (inert when the breakdown is off). `Copy`: one start
/// may end several nested stages.
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct Timer(Option<Ticks>);

impl Breakdown {
    /// On if the environment says `TRACE2E_BREAKDOWN=1`.
    pub fn from_env() -> Self {
        Self::new(std::env::var("TRACE2E_BREAKDOWN").is_ok_and(|v| v == "1"))
    }

    /// On or off.
    pub fn new(enabled: bool) -> Self {
        if enabled {
            ticks::init();
        }
        Self { enabled, total_ns: Default::default(), count: Default::default() }
    }

    /// Whether stages are being measured.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Starts timing a stage.
    #[inline]
    pub fn start(&self) -> Timer {
        Timer(self.enabled.then(ticks::now))
    }

    /// Ends a stage measurement.
    #[inline]
    pub fn stop(&self, stage: Stage, timer: Timer) {
        if let Some(start) = timer.0 {
            let ns = start.elapsed_ns();
            self.total_ns[stage as usize].fetch_add(ns, Ordering::Relaxed);
            self.count[stage as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `(name, total_ns, count)` per stage since start-up; empty when off.
    pub fn snapshot(&self) -> Vec<(&'static str, u64, u64)> {
        if !self.enabled {
            return Vec::new();
        }
        Stage::ALL
            .iter()
            .map(|&s| {
                (
                    s.name(),
                    self.total_ns[s as usize].load(Ordering::Relaxed),
                    self.count[s as usize].load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}

/// Accumulators are equal only to themselves (configurations holding the same one compare equal).
impl PartialEq for Breakdown {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Breakdown {}

impl Default for Breakdown {
    fn default() -> Self {
        Self::new(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_measures_nothing_and_on_accumulates() {
        let off = Breakdown::new(false);
        off.stop(Stage::Compliance, off.start());
        assert!(off.snapshot().is_empty());
        let on = Breakdown::new(true);
        on.stop(Stage::Compliance, on.start());
        on.stop(Stage::Compliance, on.start());
        let snap = on.snapshot();
        let compliance = snap.iter().find(|(n, ..)| *n == "compliance").unwrap();
        assert_eq!(compliance.2, 2);
        assert_eq!(snap.len(), Stage::ALL.len());
    }
}
