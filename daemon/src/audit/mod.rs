//! Audit trail: an append-only record of everything the engine decided or changed.
//!
//! Owns the record types and their query form ([`record`]), the fixed 64-byte stored
//! form of a record ([`stored`]), the memory the trail lives in ([`chunk`]: huge pages,
//! prefaulting, the spare-chunk thread), the log and its queries ([`log`]), the spill
//! file that bounds the memory ([`spill`]), and audit time ([`clock`]). It does not
//! decide what to record (the engine does) and appends only through
//! `state::State::apply`. Entries are stored as structured values with interned labels
//! ([`AuditEntry`]); identifiers and text are produced at query time, never on the hot
//! path.

mod chunk;
pub mod clock;
mod log;
mod record;
mod spill;
mod stored;

use std::path::PathBuf;

pub use log::{AuditLog, DiskScan, StoredRecord};
pub use record::{
    AuditEntry, AuditKind, AuditOutcome, AuditQuery, AuditRecord, AuditSeq, DecisionFilter, FlowRecord, FlowResult,
};
pub use spill::check_dir as check_spill_dir;

/// Where the audit trail is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// Where full chunks older than the memory window go (an unlinked spill file);
    /// `None` keeps the whole trail in memory.
    pub spill_dir: Option<PathBuf>,
    /// Full chunks ([`CHUNK_MIB`] each) kept in memory besides the one filling, once
    /// they are on disk (at least 1).
    pub memory_chunks: usize,
}

impl Default for AuditConfig {
    /// Everything in memory (what tests of the engine want); `trace2ed` spills.
    fn default() -> Self {
        Self { spill_dir: None, memory_chunks: 16 }
    }
}

/// Size of a chunk of the trail, in MiB (rounded: 4 MiB less one page).
pub const CHUNK_MIB: usize = 4;

/// Why the records asked for cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The spill file cannot be read.
    #[error("cannot read the audit spill file (in {}): {source}", dir.display())]
    Read {
        /// The spill directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The spill file holds a record this daemon did not write.
    #[error("the audit spill file holds a corrupt record (#{seq})")]
    Corrupt {
        /// Its sequence number.
        seq: AuditSeq,
    },
}
