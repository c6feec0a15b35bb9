//! Audit trail: an append-only record of everything the engine decided or changed.
//!
//! Owns the record types, the in-memory log ([`AuditLog`]), its queries and its text and
//! JSON renderings. It does not decide what to record (the engine does) and appends only
//! through `state::State::apply`. Entries are stored as structured values with interned
//! labels ([`AuditEntry`]); identifiers and text are produced at query time, never on
//! the hot path.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex, Once, PoisonError};

use serde::ser::{SerializeStruct, Serializer};
use trace2e_proto::{Denial, Direction, Fd, GrantId, LocalizedResource, NodeId, Policy, ProcessId};

use crate::provenance::LabelId;

mod spill;

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
        seq: u64,
    },
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A process attached (or exec'd a new executable).
    Attach,
    /// A process exited (or detached).
    Exit,
    /// An fd was enrolled.
    Enroll,
    /// An fd was unenrolled.
    Unenroll,
    /// A flow was requested, with the decision.
    Request,
    /// A granted flow was reported.
    Report,
    /// A granted flow was never reported (lease expiry or process exit) and is assumed
    /// performed.
    Expired,
    /// An operator changed a policy.
    PolicyChange,
    /// An operator marked a resource deleted.
    Delete,
    /// An operator turned consent enforcement on or off.
    ConsentEnforced,
    /// An operator decided a consent request.
    ConsentDecision,
    /// A peer node asked this node (the owner) whether some of its resources may flow to
    /// a destination, with the answer.
    RemoteCheck,
    /// A peer node's process wrote to a stream whose receiving side is here: the
    /// provenance the peer sent was recorded (or, if the peer never reported, assumed).
    RemoteFlow,
    /// A peer node deleted one of its resources (a tombstone is kept here).
    RemoteDelete,
}

impl AuditKind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attach => "attach",
            Self::Exit => "exit",
            Self::Enroll => "enroll",
            Self::Unenroll => "unenroll",
            Self::Request => "request",
            Self::Report => "report",
            Self::Expired => "expired",
            Self::PolicyChange => "policy_change",
            Self::Delete => "delete",
            Self::ConsentEnforced => "consent_enforced",
            Self::ConsentDecision => "consent_decision",
            Self::RemoteCheck => "remote_check",
            Self::RemoteFlow => "remote_flow",
            Self::RemoteDelete => "remote_delete",
        }
    }
}

/// The result recorded with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditOutcome {
    /// A flow was granted.
    Granted,
    /// A flow was denied.
    Denied(Denial),
    /// The event succeeded (I/O reported ok, change applied).
    Ok,
    /// The reported I/O failed.
    Failed,
    /// A consent decision allowing the flows.
    Allowed,
    /// A consent decision refusing the flows.
    Refused,
}

impl AuditOutcome {
    fn name(&self) -> &'static str {
        match self {
            Self::Granted => "granted",
            Self::Denied(_) => "denied",
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Allowed => "allowed",
            Self::Refused => "refused",
        }
    }
}

/// One stored record, with labels interned. Built by the engine, numbered by the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Unix time, µs.
    pub time_us: u64,
    /// What happened.
    pub kind: AuditKind,
    /// The process concerned.
    pub process: Option<ProcessId>,
    /// Its fd, for enrollment events and requests.
    pub fd: Option<Fd>,
    /// The resource acted upon (enrolled, policy target, attached process).
    pub resource: Option<LabelId>,
    /// Flow source (or consent source).
    pub source: Option<LabelId>,
    /// Flow destination (or consent destination resource). For a flow to an external
    /// peer: the stream as the process enrolled it.
    pub destination: Option<LabelId>,
    /// The external peer a flow went to.
    pub external_peer: Option<SocketAddr>,
    /// A consent decision for a whole destination node.
    pub consent_node: Option<NodeId>,
    /// The peer node that asked (remote events).
    pub peer: Option<NodeId>,
    /// Flow direction.
    pub direction: Option<Direction>,
    /// Bytes reported.
    pub bytes: u64,
    /// The grant concerned.
    pub grant: Option<GrantId>,
    /// The policy after a change.
    pub policy: Option<Policy>,
    /// The executable of an attached process.
    pub exe: Option<PathBuf>,
    /// The result.
    pub result: AuditOutcome,
}

impl AuditEntry {
    /// An entry with only a kind, a time and a result.
    pub fn new(kind: AuditKind, time_us: u64, result: AuditOutcome) -> Self {
        Self {
            time_us,
            kind,
            process: None,
            fd: None,
            resource: None,
            source: None,
            destination: None,
            external_peer: None,
            consent_node: None,
            peer: None,
            direction: None,
            bytes: 0,
            grant: None,
            policy: None,
            exe: None,
            result,
        }
    }
}

/// Which decisions a query keeps (requests only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecisionFilter {
    /// Granted requests.
    Granted,
    /// Denied requests.
    Denied,
}

impl FromStr for DecisionFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "granted" => Ok(Self::Granted),
            "denied" => Ok(Self::Denied),
            other => Err(format!("unknown decision {other:?} (expected granted or denied)")),
        }
    }
}

/// A query over the audit trail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only records whose resource, source or destination is this.
    pub resource: Option<LocalizedResource>,
    /// Only requests with this decision.
    pub decision: Option<DecisionFilter>,
    /// At most the most recent `limit` matching records (0: all).
    pub limit: usize,
    /// Only records with a sequence number greater than this.
    pub after: u64,
}

/// One audit record as returned by queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Sequence number, from 1, without gaps.
    pub seq: u64,
    /// Unix time, µs.
    pub time_us: u64,
    /// The node that recorded it.
    pub node: NodeId,
    /// What happened.
    pub kind: AuditKind,
    /// The process concerned.
    pub process: Option<ProcessId>,
    /// Its fd.
    pub fd: Option<Fd>,
    /// The resource acted upon.
    pub resource: Option<LocalizedResource>,
    /// Flow (or consent) source.
    pub source: Option<LocalizedResource>,
    /// Flow (or consent) destination; for an external peer, the stream as enrolled.
    pub destination: Option<LocalizedResource>,
    /// The external peer a flow went to.
    pub external_peer: Option<SocketAddr>,
    /// A consent decision for a whole destination node.
    pub consent_node: Option<NodeId>,
    /// The peer node that asked (remote events).
    pub peer: Option<NodeId>,
    /// Flow direction.
    pub direction: Option<Direction>,
    /// Bytes reported.
    pub bytes: u64,
    /// The grant concerned.
    pub grant: Option<GrantId>,
    /// The policy after a change.
    pub policy: Option<Policy>,
    /// The executable of an attached process.
    pub exe: Option<PathBuf>,
    /// The result.
    pub result: AuditOutcome,
}

impl AuditRecord {
    /// One line of text.
    pub fn to_text(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for AuditRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {} {} {}", self.seq, self.time_us, self.node, self.kind.as_str())?;
        if let Some(d) = self.direction {
            write!(f, " {d}")?;
        }
        if let Some(p) = self.process {
            write!(f, " process={p}")?;
        }
        if let Some(fd) = self.fd {
            write!(f, " fd={fd}")?;
        }
        if let Some(r) = &self.resource {
            write!(f, " {r}")?;
        }
        if let Some(e) = &self.exe {
            write!(f, " exe={}", e.display())?;
        }
        match (&self.source, &self.destination) {
            (Some(s), Some(d)) => write!(f, " {s} -> {d}")?,
            (Some(s), None) => write!(f, " {s} ->")?,
            (None, Some(d)) => write!(f, " -> {d}")?,
            (None, None) => {}
        }
        if let Some(p) = self.external_peer {
            write!(f, " (external peer {p})")?;
        }
        if let Some(n) = &self.consent_node {
            write!(f, " -> node:{n}")?;
        }
        if let Some(n) = &self.peer {
            write!(f, " (asked by {n})")?;
        }
        if let Some(g) = self.grant {
            write!(f, " grant={g}")?;
        }
        if matches!(self.kind, AuditKind::Report | AuditKind::Expired | AuditKind::RemoteFlow) {
            write!(f, " bytes={}", self.bytes)?;
        }
        if let Some(p) = &self.policy {
            write!(
                f,
                " policy=[{} integrity={}{}{}]",
                p.confidentiality,
                p.integrity,
                if p.deleted { " deleted" } else { "" },
                if p.consent { " consent" } else { "" }
            )?;
        }
        write!(f, ": {}", self.result.name())?;
        if let AuditOutcome::Denied(d) = &self.result {
            write!(f, " ({} on {}: {})", d.policy, d.resource, d.reason)?;
        }
        Ok(())
    }
}

impl serde::Serialize for AuditRecord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        fn text<T: fmt::Display>(v: &Option<T>) -> Option<String> {
            v.as_ref().map(ToString::to_string)
        }
        let mut st = s.serialize_struct("AuditRecord", 19)?;
        st.serialize_field("seq", &self.seq)?;
        st.serialize_field("time_us", &self.time_us)?;
        st.serialize_field("node", self.node.as_str())?;
        st.serialize_field("kind", &self.kind)?;
        st.serialize_field("process", &text(&self.process))?;
        st.serialize_field("fd", &self.fd.map(|f| f.0))?;
        st.serialize_field("resource", &text(&self.resource))?;
        st.serialize_field("source", &text(&self.source))?;
        st.serialize_field("destination", &text(&self.destination))?;
        st.serialize_field("external_peer", &text(&self.external_peer))?;
        st.serialize_field("consent_node", &text(&self.consent_node))?;
        st.serialize_field("peer", &text(&self.peer))?;
        st.serialize_field("direction", &text(&self.direction))?;
        st.serialize_field("bytes", &self.bytes)?;
        st.serialize_field("grant", &self.grant.map(|g| g.0))?;
        st.serialize_field(
            "policy",
            &self.policy.map(|p| {
                serde_json::json!({
                    "confidentiality": p.confidentiality,
                    "integrity": p.integrity,
                    "deleted": p.deleted,
                    "consent": p.consent,
                })
            }),
        )?;
        st.serialize_field("exe", &self.exe.as_ref().map(|e| e.to_string_lossy().into_owned()))?;
        st.serialize_field("result", self.result.name())?;
        st.serialize_field(
            "denial",
            &match &self.result {
                AuditOutcome::Denied(d) => Some(serde_json::json!({
                    "policy": d.policy.as_str(),
                    "resource": d.resource.to_string(),
                    "reason": d.reason,
                })),
                _ => None,
            },
        )?;
        st.end()
    }
}

/// Bytes of one chunk's buffer: 4 MiB less room for the allocator's header and
/// alignment, so that the buffer is one 4 MiB anonymous mapping, which the kernel
/// places on a 2 MiB boundary. See [`new_chunk`].
const CHUNK_BYTES: usize = (4 << 20) - 4096;

/// Entries per chunk of the log.
const CHUNK: usize = CHUNK_BYTES / size_of::<Stored>();

/// What most records never have, kept out of line so that a flow's records stay small.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Rare {
    denial: Option<Denial>,
    external_peer: Option<SocketAddr>,
    consent_node: Option<NodeId>,
    peer: Option<NodeId>,
    policy: Option<Policy>,
    exe: Option<PathBuf>,
}

/// [`AuditOutcome`] without the denial (kept in [`Rare`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Granted,
    Denied,
    Ok,
    Failed,
    Allowed,
    Refused,
}

/// The record of a flow request or report between two labels: the two records every
/// mediated I/O appends. The same record as the [`AuditEntry`] with these fields (see
/// [`FlowRecord::entry`]), appended without building one: an entry is ~0.4 KB of mostly
/// empty options, moved into a [`crate::state::Change`] and dropped again, on every
/// I/O's path (bench `engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRecord {
    /// Unix time, µs.
    pub time_us: u64,
    /// [`AuditKind::Request`] or [`AuditKind::Report`] (any kind is stored faithfully).
    pub kind: AuditKind,
    /// The process.
    pub process: ProcessId,
    /// Its fd.
    pub fd: Fd,
    /// Flow direction.
    pub direction: Direction,
    /// Flow source.
    pub source: LabelId,
    /// Flow destination.
    pub destination: LabelId,
    /// The grant concerned.
    pub grant: GrantId,
    /// Bytes reported.
    pub bytes: u64,
    /// The result.
    pub result: FlowResult,
}

/// The results a [`FlowRecord`] can have: those that carry nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowResult {
    /// A request was granted.
    Granted,
    /// A report of an I/O that succeeded.
    Ok,
    /// A report of an I/O that failed.
    Failed,
}

impl FlowRecord {
    /// The equivalent entry.
    pub fn entry(&self) -> AuditEntry {
        let result = match self.result {
            FlowResult::Granted => AuditOutcome::Granted,
            FlowResult::Ok => AuditOutcome::Ok,
            FlowResult::Failed => AuditOutcome::Failed,
        };
        let mut e = AuditEntry::new(self.kind, self.time_us, result);
        e.process = Some(self.process);
        e.fd = Some(self.fd);
        e.direction = Some(self.direction);
        e.source = Some(self.source);
        e.destination = Some(self.destination);
        e.grant = Some(self.grant);
        e.bytes = self.bytes;
        e
    }
}

/// Which of [`Stored`]'s optional fields hold a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Present(u8);

impl Present {
    const GRANT: u8 = 1;
    const PROCESS: u8 = 1 << 1;
    const FD: u8 = 1 << 2;
    const RESOURCE: u8 = 1 << 3;
    const SOURCE: u8 = 1 << 4;
    const DESTINATION: u8 = 1 << 5;

    fn set(&mut self, bit: u8, present: bool) {
        if present {
            self.0 |= bit;
        }
    }

    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// How the log keeps an [`AuditEntry`]: one cache line, aligned on one. Two records
/// are appended per mediated I/O, so their size is page faults, cache misses and spill
/// bytes (a record straddling two lines cost ~10 % of 1-client throughput, `t2e-load`):
/// the fields of a flow's records are inline, their options as presence bits, and
/// everything else is in the log's [`Rare`] map. Converted back at query time; 64 bytes
/// on disk too ([`Stored::encode`]).
#[derive(Debug, Clone, Copy)]
#[repr(align(64))]
struct Stored {
    time_us: u64,
    bytes: u64,
    /// Valid if [`Present::GRANT`].
    grant: u64,
    /// The process's start time and pid: valid if [`Present::PROCESS`].
    starttime: u64,
    pid: u32,
    /// Valid if [`Present::FD`].
    fd: i32,
    /// Resource, source, destination: each valid if its bit is present.
    labels: [u32; 3],
    kind: AuditKind,
    direction: Option<Direction>,
    result: Outcome,
    present: Present,
    /// The log's [`Rare`] map has an entry for this record.
    has_rare: bool,
}

/// Bytes of a record, in memory and in the spill file.
const RECORD_BYTES: usize = 64;
const _: () = assert!(size_of::<Stored>() == RECORD_BYTES);

/// Every [`AuditKind`], by its code in the spill file.
const KINDS: [AuditKind; 14] = [
    AuditKind::Attach,
    AuditKind::Exit,
    AuditKind::Enroll,
    AuditKind::Unenroll,
    AuditKind::Request,
    AuditKind::Report,
    AuditKind::Expired,
    AuditKind::PolicyChange,
    AuditKind::Delete,
    AuditKind::ConsentEnforced,
    AuditKind::ConsentDecision,
    AuditKind::RemoteCheck,
    AuditKind::RemoteFlow,
    AuditKind::RemoteDelete,
];
/// Every [`Outcome`], by its code in the spill file.
const OUTCOMES: [Outcome; 6] =
    [Outcome::Granted, Outcome::Denied, Outcome::Ok, Outcome::Failed, Outcome::Allowed, Outcome::Refused];

impl Stored {
    /// `e` as stored, and what of it goes to the log's [`Rare`] map.
    fn split(e: AuditEntry) -> (Self, Option<Rare>) {
        let (result, denial) = match e.result {
            AuditOutcome::Granted => (Outcome::Granted, None),
            AuditOutcome::Denied(d) => (Outcome::Denied, Some(d)),
            AuditOutcome::Ok => (Outcome::Ok, None),
            AuditOutcome::Failed => (Outcome::Failed, None),
            AuditOutcome::Allowed => (Outcome::Allowed, None),
            AuditOutcome::Refused => (Outcome::Refused, None),
        };
        // Built only when needed: a flow's records (nearly all of them) have none of it.
        let rare = (denial.is_some()
            || e.external_peer.is_some()
            || e.consent_node.is_some()
            || e.peer.is_some()
            || e.policy.is_some()
            || e.exe.is_some())
        .then_some(Rare {
            denial,
            external_peer: e.external_peer,
            consent_node: e.consent_node,
            peer: e.peer,
            policy: e.policy,
            exe: e.exe,
        });
        let mut present = Present::default();
        present.set(Present::GRANT, e.grant.is_some());
        present.set(Present::PROCESS, e.process.is_some());
        present.set(Present::FD, e.fd.is_some());
        present.set(Present::RESOURCE, e.resource.is_some());
        present.set(Present::SOURCE, e.source.is_some());
        present.set(Present::DESTINATION, e.destination.is_some());
        let label = |l: Option<LabelId>| l.map_or(0, |l| l.index() as u32);
        let stored = Self {
            time_us: e.time_us,
            bytes: e.bytes,
            grant: e.grant.map_or(0, |g| g.0),
            starttime: e.process.map_or(0, |p| p.starttime),
            pid: e.process.map_or(0, |p| p.pid),
            fd: e.fd.map_or(0, |fd| fd.0),
            labels: [label(e.resource), label(e.source), label(e.destination)],
            kind: e.kind,
            direction: e.direction,
            result,
            present,
            has_rare: rare.is_some(),
        };
        (stored, rare)
    }

    /// The spill file's form: little-endian fields at fixed offsets, the enums as codes.
    fn encode(&self, out: &mut [u8; RECORD_BYTES]) {
        out[0..8].copy_from_slice(&self.time_us.to_le_bytes());
        out[8..16].copy_from_slice(&self.bytes.to_le_bytes());
        out[16..24].copy_from_slice(&self.grant.to_le_bytes());
        out[24..32].copy_from_slice(&self.starttime.to_le_bytes());
        out[32..36].copy_from_slice(&self.pid.to_le_bytes());
        out[36..40].copy_from_slice(&self.fd.to_le_bytes());
        for (i, l) in self.labels.iter().enumerate() {
            out[40 + 4 * i..44 + 4 * i].copy_from_slice(&l.to_le_bytes());
        }
        out[52] = KINDS.iter().position(|k| *k == self.kind).unwrap_or(usize::MAX) as u8;
        out[53] = match self.direction {
            None => 0,
            Some(Direction::Read) => 1,
            Some(Direction::Write) => 2,
        };
        out[54] = OUTCOMES.iter().position(|o| *o == self.result).unwrap_or(usize::MAX) as u8;
        out[55] = self.present.0;
        out[56] = u8::from(self.has_rare);
        out[57..].fill(0);
    }

    /// The record [`Stored::encode`] wrote, or `None` for bytes it cannot have written.
    fn decode(b: &[u8; RECORD_BYTES]) -> Option<Self> {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Some(Self {
            time_us: u64_at(0),
            bytes: u64_at(8),
            grant: u64_at(16),
            starttime: u64_at(24),
            pid: u32_at(32),
            fd: u32_at(36) as i32,
            labels: [u32_at(40), u32_at(44), u32_at(48)],
            kind: *KINDS.get(usize::from(b[52]))?,
            direction: match b[53] {
                0 => None,
                1 => Some(Direction::Read),
                2 => Some(Direction::Write),
                _ => return None,
            },
            result: *OUTCOMES.get(usize::from(b[54]))?,
            present: Present(b[55]),
            has_rare: match b[56] {
                0 => false,
                1 => true,
                _ => return None,
            },
        })
    }
}

impl From<FlowRecord> for Stored {
    fn from(r: FlowRecord) -> Self {
        Self {
            time_us: r.time_us,
            bytes: r.bytes,
            grant: r.grant.0,
            starttime: r.process.starttime,
            pid: r.process.pid,
            fd: r.fd.0,
            labels: [0, r.source.index() as u32, r.destination.index() as u32],
            kind: r.kind,
            direction: Some(r.direction),
            result: match r.result {
                FlowResult::Granted => Outcome::Granted,
                FlowResult::Ok => Outcome::Ok,
                FlowResult::Failed => Outcome::Failed,
            },
            present: Present(Present::GRANT | Present::PROCESS | Present::FD | Present::SOURCE | Present::DESTINATION),
            has_rare: false,
        }
    }
}

impl Stored {
    fn label(&self, i: usize, bit: u8) -> Option<LabelId> {
        self.present.has(bit).then(|| LabelId::from_index(self.labels[i] as usize)).flatten()
    }

    fn resource(&self) -> Option<LabelId> {
        self.label(0, Present::RESOURCE)
    }

    fn source(&self) -> Option<LabelId> {
        self.label(1, Present::SOURCE)
    }

    fn destination(&self) -> Option<LabelId> {
        self.label(2, Present::DESTINATION)
    }

    /// The entry, given what the log's [`Rare`] map holds for it.
    fn entry(&self, rare: Option<&Rare>) -> AuditEntry {
        let rare = rare.cloned().unwrap_or_default();
        let result = match self.result {
            Outcome::Granted => AuditOutcome::Granted,
            // A denied record always carries its denial (see `Stored::split`).
            Outcome::Denied => rare.denial.map_or(AuditOutcome::Failed, AuditOutcome::Denied),
            Outcome::Ok => AuditOutcome::Ok,
            Outcome::Failed => AuditOutcome::Failed,
            Outcome::Allowed => AuditOutcome::Allowed,
            Outcome::Refused => AuditOutcome::Refused,
        };
        AuditEntry {
            time_us: self.time_us,
            kind: self.kind,
            process: self
                .present
                .has(Present::PROCESS)
                .then_some(ProcessId { pid: self.pid, starttime: self.starttime }),
            fd: self.present.has(Present::FD).then_some(Fd(self.fd)),
            resource: self.resource(),
            source: self.source(),
            destination: self.destination(),
            external_peer: rare.external_peer,
            consent_node: rare.consent_node,
            peer: rare.peer,
            direction: self.direction,
            bytes: self.bytes,
            grant: self.present.has(Present::GRANT).then_some(GrantId(self.grant)),
            policy: rare.policy,
            exe: rare.exe,
            result,
        }
    }
}

/// An empty chunk with room for [`CHUNK`] entries, backed by huge pages where the
/// kernel offers them.
///
/// The log only grows, so every append past a page boundary is a page fault, taken by
/// the channel thread in the middle of a decision: one per 64 records with 4 KiB
/// pages. Measured on a nested VM (2026-12-01), a 4 KiB fault costs ~3.4 µs, longer
/// than a client spins for its answer, so ~3 % of mediated reads fell back to a
/// sleeping hand-off (a 10–20 µs tail). A transparent huge page is one fault per
/// 2 MiB, ~0.4 µs per 4 KiB of it. `MADV_HUGEPAGE` asks for them (with THP in
/// `madvise` mode, the common default); the allocator has already touched the first
/// page (its header), so that first 2 MiB is collapsed at once (`MADV_COLLAPSE`, Linux
/// 6.1+). Where either is refused, or the allocator did not place the buffer on a
/// 2 MiB boundary (glibc serves it from its heap once its mmap threshold has grown past
/// 4 MiB), the chunk keeps 4 KiB pages for some or all of it: slower, never wrong.
fn new_chunk() -> Vec<Stored> {
    let chunk: Vec<Stored> = Vec::with_capacity(CHUNK);
    let begin = chunk.as_ptr() as usize;
    let start = begin & !(PAGE - 1);
    let len = begin + CHUNK * size_of::<Stored>() - start;
    advise(start, len, libc::MADV_HUGEPAGE);
    #[cfg(target_env = "gnu")]
    advise(start, HUGE_PAGE.min(len), libc::MADV_COLLAPSE);
    chunk
}

const PAGE: usize = 4096;
#[cfg(target_env = "gnu")]
const HUGE_PAGE: usize = 2 << 20;

/// The chunk prepared for the next log that fills its last one (at most one, for all
/// the logs of the process).
static SPARE: Mutex<Option<Vec<Stored>>> = Mutex::new(None);
/// Signalled when the spare is taken.
static SPARE_TAKEN: Condvar = Condvar::new();
/// Starts the thread that prepares spares.
static PREPARER: Once = Once::new();

/// An empty chunk for a log whose last chunk is full: the one prepared in advance if
/// there is one, else a new one (whose pages then fault in as it fills).
///
/// Preparing a chunk (allocation, `MADV_COLLAPSE`, zeroing its huge pages by touching
/// every page) is done by a background thread, one chunk ahead: done by the channel
/// thread during appends, it was ~4 % of a busy daemon's samples (`perf record`, 1
/// client, 2026-12-02), the page zeroing of a huge page at a time in the middle of a
/// decision. Costs 4 MiB of memory held ahead.
fn spare_chunk() -> Vec<Stored> {
    PREPARER.call_once(|| {
        if let Err(e) = std::thread::Builder::new().name("t2e-audit-prep".into()).spawn(prepare_spares) {
            tracing::warn!(error = %e, "cannot start the audit chunk preparer; chunks fault in as they fill");
        }
    });
    let spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner).take();
    SPARE_TAKEN.notify_one();
    spare.unwrap_or_else(new_chunk)
}

/// Keeps [`SPARE`] filled with a prefaulted chunk, for ever.
fn prepare_spares() {
    loop {
        let mut spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner);
        while spare.is_some() {
            spare = SPARE_TAKEN.wait(spare).unwrap_or_else(PoisonError::into_inner);
        }
        drop(spare);
        let mut chunk = new_chunk();
        prefault(&mut chunk);
        let mut spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner);
        if spare.is_none() {
            *spare = Some(chunk);
        }
    }
}

/// Touches every page of `chunk`'s (empty) buffer, so that appends never fault.
fn prefault(chunk: &mut Vec<Stored>) {
    debug_assert!(chunk.is_empty());
    let base = chunk.as_mut_ptr().cast::<u8>();
    for offset in (0..chunk.capacity() * size_of::<Stored>()).step_by(PAGE) {
        // SAFETY: `offset` is inside the buffer the Vec allocated for its capacity, which
        // is writable memory of this process that no element occupies yet (the Vec is
        // empty); a byte written there is overwritten by the record that lands on it.
        unsafe { base.add(offset).write_volatile(0) };
    }
}

/// madvise(2) with advice that changes how pages are backed, never their contents.
fn advise(start: usize, len: usize, advice: libc::c_int) {
    // SAFETY: [start, start + len) is the chunk's buffer widened to whole pages, so it
    // is mapped memory of this process; the widened edges may hold the allocator's own
    // bytes or other allocations. Both advices used (MADV_HUGEPAGE, MADV_COLLAPSE) only
    // change how pages are backed and preserve every byte's contents; a range the kernel
    // refuses is an error, ignored.
    let _ = unsafe { libc::madvise(start as *mut libc::c_void, len, advice) };
}

/// The append-only log.
///
/// Entries live in fixed-size chunks: appending never moves earlier entries, so the log
/// can grow to millions of records without the multi-hundred-MB reallocations (under the
/// state lock, stalling every flow) a single `Vec` would make. With a spill directory,
/// full chunks are also written to a spill file ([`spill`]); once written, those older
/// than the memory window leave memory, and the oldest one's buffer holds the next
/// chunk's records. Queries read whatever part they need from either.
#[derive(Debug, Default)]
pub struct AuditLog {
    /// Full chunks in memory, oldest first: `full[k]` holds entries `(first + k) * CHUNK`
    /// onwards. Shared with the spill writer until it has written them.
    full: VecDeque<Arc<Vec<Stored>>>,
    /// The chunk index of `full[0]`: entries before `first * CHUNK` are only on disk.
    first: usize,
    /// The chunk being filled (no capacity before the first append).
    current: Vec<Stored>,
    /// What [`Rare`] records have, by entry index.
    rare: BTreeMap<usize, Rare>,
    len: usize,
    granted: u64,
    denied: u64,
    spill: SpillState,
    /// Full chunks kept in memory once written.
    window: usize,
}

#[derive(Debug, Default)]
enum SpillState {
    /// Everything stays in memory.
    #[default]
    Off,
    /// The spill file is made when the first chunk fills.
    Pending(PathBuf),
    On(spill::Spill),
    /// The spill file could not be made (logged): everything stays in memory.
    Unavailable,
}

impl AuditLog {
    /// An empty log kept as `config` says.
    pub fn new(config: &AuditConfig) -> Self {
        Self {
            spill: config.spill_dir.clone().map_or(SpillState::Off, SpillState::Pending),
            window: config.memory_chunks.max(1),
            ..Self::default()
        }
    }

    /// Appends an entry; returns its sequence number.
    pub fn append(&mut self, entry: AuditEntry) -> u64 {
        if entry.kind == AuditKind::Request {
            match entry.result {
                AuditOutcome::Granted => self.granted += 1,
                AuditOutcome::Denied(_) => self.denied += 1,
                _ => {}
            }
        }
        let (stored, rare) = Stored::split(entry);
        if let Some(rare) = rare {
            self.rare.insert(self.len, rare);
        }
        self.push(stored)
    }

    /// Appends a flow's record (the same as appending [`FlowRecord::entry`]); returns
    /// its sequence number.
    pub fn append_flow(&mut self, record: FlowRecord) -> u64 {
        if record.kind == AuditKind::Request && record.result == FlowResult::Granted {
            self.granted += 1;
        }
        self.push(Stored::from(record))
    }

    fn push(&mut self, stored: Stored) -> u64 {
        if self.current.len() == CHUNK || self.current.capacity() == 0 {
            self.roll();
        }
        self.current.push(stored);
        // Records ahead are lines never touched since their page was zeroed (or, in a
        // reused chunk, since long ago): fetch the one two records ahead now (each line
        // once, two appends early), while the flow goes on, not under a later decision
        // (1-client `t2e-load`, 16 alternating runs: median 378k -> 409k reads/s).
        #[cfg(target_arch = "x86_64")]
        if let Some(ahead) = self.current.spare_capacity_mut().get(1) {
            // SAFETY: a prefetch is a hint: it never faults and never changes memory;
            // SSE is baseline on x86_64.
            unsafe { core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(ahead.as_ptr().cast()) };
        }
        self.len += 1;
        self.len as u64
    }

    /// Starts a new current chunk; a full one joins `full` and is queued for the spill
    /// file.
    fn roll(&mut self) {
        let next = self.recycle().unwrap_or_else(spare_chunk);
        let done = std::mem::replace(&mut self.current, next);
        if done.len() != CHUNK {
            return; // the empty start
        }
        let done = Arc::new(done);
        let index = self.first + self.full.len();
        if let SpillState::Pending(dir) = &self.spill {
            self.spill = match spill::Spill::start(dir) {
                Ok(s) => SpillState::On(s),
                Err(e) => {
                    tracing::error!(
                        dir = %dir.display(),
                        error = %e,
                        "cannot make the audit spill file; the audit trail stays in memory"
                    );
                    SpillState::Unavailable
                }
            };
        }
        if let SpillState::On(s) = &self.spill {
            s.queue(index, &done);
        }
        self.full.push_back(done);
    }

    /// Takes the written chunks beyond the memory window out of memory; returns the
    /// buffer of one of them, emptied, for the next chunk.
    fn recycle(&mut self) -> Option<Vec<Stored>> {
        let SpillState::On(spill) = &self.spill else { return None };
        let durable = spill.durable();
        let mut reused = None;
        while self.full.len() > self.window && self.first < durable {
            let Some(oldest) = self.full.pop_front() else { break };
            self.first += 1;
            // The writer dropped its share before counting the chunk as written, and
            // queries hold none beyond the state lock: this is the last one.
            if reused.is_none()
                && let Ok(mut chunk) = Arc::try_unwrap(oldest)
            {
                chunk.clear();
                reused = Some(chunk);
            }
        }
        reused
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Records kept only in the spill file (the oldest ones).
    pub fn spilled(&self) -> usize {
        self.first * CHUNK
    }

    /// Entry `i`, which is in memory (`i >= self.spilled()`).
    fn in_memory(&self, i: usize) -> &Stored {
        match self.full.get(i / CHUNK - self.first) {
            Some(chunk) => &chunk[i % CHUNK],
            None => &self.current[i % CHUNK],
        }
    }

    /// Granted requests so far.
    pub fn granted(&self) -> u64 {
        self.granted
    }

    /// Denied requests so far.
    pub fn denied(&self) -> u64 {
        self.denied
    }

    /// Sequence numbers and entries matching `query`, ascending. `resource` is the
    /// query's resource already interned: `Some(None)` means a resource that was never
    /// interned, which matches nothing. Reads the spill file for records no longer in
    /// memory, holding `self` all along (for tests: the engine uses
    /// [`AuditLog::query_memory`], [`DiskScan::run`] and [`AuditLog::resolve`] to read
    /// the file without its lock).
    #[cfg(test)]
    pub fn query(
        &self,
        query: &AuditQuery,
        resource: Option<Option<LabelId>>,
    ) -> Result<Vec<(u64, AuditEntry)>, AuditError> {
        let (mut out, scan) = self.query_memory(query, resource);
        if let Some(scan) = scan {
            out.extend(self.resolve(scan.run()?));
        }
        out.reverse();
        Ok(out)
    }

    /// The part of `query`'s answer in memory, newest first, and the scan of the spill
    /// file that completes it if memory did not hold enough. The spilled records never
    /// change, so the scan may run after the caller released the log.
    pub fn query_memory(
        &self,
        query: &AuditQuery,
        resource: Option<Option<LabelId>>,
    ) -> (Vec<(u64, AuditEntry)>, Option<DiskScan>) {
        let resource = match resource {
            Some(None) => return (Vec::new(), None),
            Some(Some(id)) => Some(id),
            None => None,
        };
        let filter = Filter { resource, decision: query.decision };
        let start = usize::try_from(query.after).unwrap_or(usize::MAX).min(self.len);
        let limit = if query.limit == 0 { usize::MAX } else { query.limit };
        let spilled = self.spilled();
        // Newest first, so that `limit` keeps the most recent matches.
        let mut out = Vec::new();
        for i in (start.max(spilled)..self.len).rev() {
            if out.len() >= limit {
                return (out, None);
            }
            let e = self.in_memory(i);
            if filter.matches(e) {
                out.push((i as u64 + 1, e.entry(self.rare_of(i, e))));
            }
        }
        let scan = match &self.spill {
            SpillState::On(spill) if start < spilled && out.len() < limit => {
                Some(DiskScan { file: spill.reader(), start, end: spilled, limit: limit - out.len(), filter })
            }
            _ => None,
        };
        (out, scan)
    }

    /// Entries for what a [`DiskScan`] found (newest first, as found).
    pub fn resolve(&self, found: Vec<(usize, StoredRecord)>) -> impl Iterator<Item = (u64, AuditEntry)> + '_ {
        found.into_iter().map(|(i, StoredRecord(e))| (i as u64 + 1, e.entry(self.rare_of(i, &e))))
    }

    fn rare_of(&self, i: usize, e: &Stored) -> Option<&Rare> {
        if e.has_rare { self.rare.get(&i) } else { None }
    }
}

/// Which records a query wants, by their stored fields.
#[derive(Debug, Clone, Copy)]
struct Filter {
    resource: Option<LabelId>,
    decision: Option<DecisionFilter>,
}

impl Filter {
    fn matches(&self, e: &Stored) -> bool {
        self.resource.is_none_or(|r| e.resource() == Some(r) || e.source() == Some(r) || e.destination() == Some(r))
            && match self.decision {
                None => true,
                Some(DecisionFilter::Granted) => e.kind == AuditKind::Request && e.result == Outcome::Granted,
                Some(DecisionFilter::Denied) => e.kind == AuditKind::Request && e.result == Outcome::Denied,
            }
    }
}

/// A record read back from the spill file, to be turned into an entry by
/// [`AuditLog::resolve`].
#[derive(Debug, Clone, Copy)]
pub struct StoredRecord(Stored);

/// The part of a query that reads the spill file (see [`AuditLog::query_memory`]).
#[derive(Debug)]
pub struct DiskScan {
    file: spill::Reader,
    start: usize,
    end: usize,
    limit: usize,
    filter: Filter,
}

impl DiskScan {
    /// Reads the matching records, newest first, up to the query's limit.
    pub fn run(self) -> Result<Vec<(usize, StoredRecord)>, AuditError> {
        let mut found = Vec::new();
        self.file.visit_back(self.start, self.end, |i, e| {
            if self.filter.matches(e) {
                found.push((i, StoredRecord(*e)));
            }
            found.len() >= self.limit
        })?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trace2e_proto::{PolicyKind, Resource};

    #[test]
    fn chunks_keep_sequence_numbers_and_queries_across_boundaries() {
        let mut log = AuditLog::default();
        for i in 0..(2 * CHUNK + 5) {
            let mut e = AuditEntry::new(AuditKind::Request, i as u64, AuditOutcome::Granted);
            e.bytes = i as u64;
            assert_eq!(log.append(e), i as u64 + 1);
        }
        let all = log.query(&AuditQuery { resource: None, decision: None, limit: 0, after: 0 }, None).unwrap();
        assert_eq!(all.len(), 2 * CHUNK + 5);
        assert!(all.iter().all(|(seq, e)| *seq == e.bytes + 1));
        let tail =
            log.query(&AuditQuery { resource: None, decision: None, limit: 3, after: CHUNK as u64 - 1 }, None).unwrap();
        assert_eq!(
            tail.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![2 * CHUNK as u64 + 3, 2 * CHUNK as u64 + 4, 2 * CHUNK as u64 + 5]
        );
        let across =
            log.query(&AuditQuery { resource: None, decision: None, limit: 0, after: CHUNK as u64 - 1 }, None).unwrap();
        assert_eq!(across.first().map(|(s, _)| *s), Some(CHUNK as u64));
        assert_eq!(across.len(), CHUNK + 6);
    }

    #[test]
    fn every_kind_and_outcome_survives_the_spill_encoding() {
        let mut stored = Vec::new();
        for kind in KINDS {
            for result in OUTCOMES {
                for direction in [None, Some(Direction::Read), Some(Direction::Write)] {
                    stored.push(Stored {
                        time_us: u64::MAX - 1,
                        bytes: 1 << 40,
                        grant: 3,
                        starttime: 4,
                        pid: u32::MAX,
                        fd: -1,
                        labels: [7, 8, u32::MAX],
                        kind,
                        direction,
                        result,
                        present: Present(0x3f),
                        has_rare: result == Outcome::Denied,
                    });
                }
            }
        }
        for s in stored {
            let mut bytes = [0u8; RECORD_BYTES];
            s.encode(&mut bytes);
            let back = Stored::decode(&bytes).expect("decodes");
            assert_eq!(back.entry(None), s.entry(None));
            assert_eq!(back.has_rare, s.has_rare);
        }
        assert!(Stored::decode(&[0xff; RECORD_BYTES]).is_none(), "garbage is refused");
    }

    /// Waits (bounded) until the spill writer has written `chunks` chunks.
    fn wait_written(log: &AuditLog, chunks: usize) {
        let SpillState::On(spill) = &log.spill else { panic!("the log does not spill") };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while spill.durable() < chunks {
            assert!(std::time::Instant::now() < deadline, "the spill writer is stuck");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn written_chunks_leave_memory_and_queries_read_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AuditLog::new(&AuditConfig { spill_dir: Some(dir.path().into()), memory_chunks: 1 });
        let total = 4 * CHUNK + 5;
        let append = |log: &mut AuditLog, i: usize| {
            // Every 10 000th record a denial (its denial kept aside), the rest flows.
            let result = if i.is_multiple_of(10_000) { AuditOutcome::Denied(denial()) } else { AuditOutcome::Granted };
            let mut e = request(result, (i % 3) as u32);
            e.bytes = i as u64;
            assert_eq!(log.append(e), i as u64 + 1);
        };
        for i in 0..2 * CHUNK + 1 {
            append(&mut log, i);
        }
        wait_written(&log, 2);
        for i in 2 * CHUNK + 1..total {
            append(&mut log, i);
        }
        assert!(log.spilled() >= 2 * CHUNK, "written chunks left memory: {} spilled", log.spilled());
        assert!(log.full.len() <= 2, "memory holds the window: {} full chunks", log.full.len());
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "the spill file is unlinked");

        let all = log.query(&AuditQuery::default(), None).unwrap();
        assert_eq!(all.len(), total);
        assert!(
            all.iter().all(|(seq, e)| *seq == e.bytes + 1 && e.source == LabelId::from_index((e.bytes % 3) as usize))
        );
        let denied =
            log.query(&AuditQuery { decision: Some(DecisionFilter::Denied), ..Default::default() }, None).unwrap();
        assert_eq!(denied.len(), total.div_ceil(10_000));
        assert!(denied.iter().all(|(_, e)| e.result == AuditOutcome::Denied(denial())));
        assert_eq!(log.denied(), denied.len() as u64);
        // A window across the disk and memory, and one on disk only.
        let across = log.query(&AuditQuery { after: CHUNK as u64, limit: 0, ..Default::default() }, None).unwrap();
        assert_eq!(across.len(), total - CHUNK);
        assert_eq!(across.first().map(|(s, _)| *s), Some(CHUNK as u64 + 1));
        let by_src =
            log.query(&AuditQuery { after: 10, limit: 2, ..Default::default() }, LabelId::from_index(1).map(Some));
        let seqs: Vec<u64> = by_src.unwrap().iter().map(|(s, _)| *s).collect();
        let mut newest_src1: Vec<u64> = (0..total).rev().filter(|i| i % 3 == 1).map(|i| i as u64 + 1).take(2).collect();
        newest_src1.reverse();
        assert_eq!(seqs, newest_src1);
        let oldest = log.query(&AuditQuery { after: 0, limit: 0, ..Default::default() }, None).unwrap();
        assert_eq!(oldest[0].1.bytes, 0);
        assert_eq!(oldest[0].1.result, AuditOutcome::Denied(denial()), "a record on disk keeps its denial");
    }

    #[test]
    fn an_unusable_spill_directory_keeps_everything_in_memory() {
        let mut log =
            AuditLog::new(&AuditConfig { spill_dir: Some("/nonexistent/trace2e-spill".into()), memory_chunks: 1 });
        for i in 0..3 * CHUNK {
            log.append(request(AuditOutcome::Granted, (i % 2) as u32));
        }
        assert!(matches!(log.spill, SpillState::Unavailable));
        assert_eq!(log.spilled(), 0);
        assert_eq!(log.query(&AuditQuery::default(), None).unwrap().len(), 3 * CHUNK);
        assert!(check_spill_dir(std::path::Path::new("/nonexistent/trace2e-spill")).is_err());
    }

    fn request(result: AuditOutcome, src: u32) -> AuditEntry {
        let mut e = AuditEntry::new(AuditKind::Request, 10, result);
        e.source = LabelId::from_index(src as usize);
        e.destination = LabelId::from_index(100);
        e
    }

    fn denial() -> Denial {
        Denial {
            policy: PolicyKind::Integrity,
            resource: Resource::file("/x").unwrap().at(&NodeId::new("n1").unwrap()),
            reason: "too low".into(),
        }
    }

    #[test]
    fn sequence_numbers_counters_and_filters() {
        let mut log = AuditLog::default();
        assert_eq!(log.append(AuditEntry::new(AuditKind::Attach, 1, AuditOutcome::Ok)), 1);
        assert_eq!(log.append(request(AuditOutcome::Granted, 1)), 2);
        assert_eq!(log.append(request(AuditOutcome::Denied(denial()), 2)), 3);
        assert_eq!(log.append(request(AuditOutcome::Granted, 2)), 4);
        assert_eq!((log.granted(), log.denied()), (2, 1));

        let all = log.query(&AuditQuery::default(), None).unwrap();
        assert_eq!(all.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        let q = AuditQuery { decision: Some(DecisionFilter::Granted), ..Default::default() };
        assert_eq!(log.query(&q, None).unwrap().iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![2, 4]);
        let q = AuditQuery { limit: 2, ..Default::default() };
        assert_eq!(log.query(&q, None).unwrap().iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3, 4]);
        let q = AuditQuery { after: 2, ..Default::default() };
        assert_eq!(log.query(&q, None).unwrap().iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3, 4]);
        let by_src = log.query(&AuditQuery::default(), Some(LabelId::from_index(2))).unwrap();
        assert_eq!(by_src.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3, 4]);
        assert!(log.query(&AuditQuery::default(), Some(None)).unwrap().is_empty());
        let q = AuditQuery { after: 99, ..Default::default() };
        assert!(log.query(&q, None).unwrap().is_empty());
    }

    #[test]
    fn every_field_survives_the_compact_storage() {
        let mut full = AuditEntry::new(AuditKind::RemoteCheck, 99, AuditOutcome::Denied(denial()));
        full.process = Some(ProcessId { pid: 5, starttime: 6 });
        full.fd = Some(Fd(9));
        full.resource = LabelId::from_index(1);
        full.source = LabelId::from_index(2);
        full.destination = LabelId::from_index(3);
        full.external_peer = Some("9.9.9.9:443".parse().unwrap());
        full.consent_node = Some(NodeId::new("n2").unwrap());
        full.peer = Some(NodeId::new("n3").unwrap());
        full.direction = Some(Direction::Write);
        full.bytes = 64;
        full.grant = Some(GrantId(77));
        full.policy = Some(Policy::default());
        full.exe = Some("/bin/x".into());
        let mut plain = AuditEntry::new(AuditKind::Report, 100, AuditOutcome::Ok);
        plain.grant = Some(GrantId(78));
        // Present fields whose value is zero stay present (presence is not "non-zero").
        let mut zeros = AuditEntry::new(AuditKind::Request, 0, AuditOutcome::Denied(denial()));
        zeros.process = Some(ProcessId { pid: 0, starttime: 0 });
        zeros.fd = Some(Fd(0));
        zeros.resource = LabelId::from_index(0);
        zeros.source = LabelId::from_index(0);
        zeros.destination = LabelId::from_index(0);
        zeros.grant = Some(GrantId(0));
        let mut log = AuditLog::default();
        log.append(full.clone());
        log.append(plain.clone());
        log.append(zeros.clone());
        let all = log.query(&AuditQuery::default(), None).unwrap();
        assert_eq!(all, vec![(1, full), (2, plain), (3, zeros)]);
    }

    #[test]
    fn a_flow_record_is_stored_as_its_entry_would_be() {
        let record = |kind, result, grant, bytes| FlowRecord {
            time_us: 1234,
            kind,
            process: ProcessId { pid: 7, starttime: 8 },
            fd: Fd(3),
            direction: Direction::Read,
            source: LabelId::from_index(4).unwrap(),
            destination: LabelId::from_index(0).unwrap(),
            grant: GrantId(grant),
            bytes,
            result,
        };
        let records = [
            record(AuditKind::Request, FlowResult::Granted, 9, 0),
            record(AuditKind::Report, FlowResult::Ok, 9, 64),
            record(AuditKind::Report, FlowResult::Failed, 0, 0),
        ];
        let (mut compact, mut full) = (AuditLog::default(), AuditLog::default());
        for r in records {
            compact.append_flow(r);
            full.append(r.entry());
        }
        let q = AuditQuery::default();
        assert_eq!(compact.query(&q, None).unwrap(), full.query(&q, None).unwrap());
        assert_eq!(compact.query(&q, None).unwrap().len(), 3);
        assert_eq!((compact.granted(), compact.denied()), (1, 0));
        assert_eq!((full.granted(), full.denied()), (1, 0));
    }

    #[test]
    fn records_render_as_text_and_json() {
        let n1 = NodeId::new("n1").unwrap();
        let r = AuditRecord {
            seq: 7,
            time_us: 42,
            node: n1.clone(),
            kind: AuditKind::Request,
            process: Some(ProcessId { pid: 12, starttime: 34 }),
            fd: Some(Fd(3)),
            resource: None,
            source: Some(Resource::Process(ProcessId { pid: 12, starttime: 34 }).at(&n1)),
            destination: Some(Resource::file("/x").unwrap().at(&n1)),
            external_peer: None,
            consent_node: None,
            peer: None,
            direction: Some(Direction::Write),
            bytes: 0,
            grant: None,
            policy: None,
            exe: None,
            result: AuditOutcome::Denied(denial()),
        };
        let text = r.to_text();
        assert!(text.starts_with("#7 42 n1 request write process=12.34 fd=3"), "{text}");
        assert!(
            text.contains("process://12.34@n1 -> file:///x@n1: denied (integrity on file:///x@n1: too low)"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["seq"], 7);
        assert_eq!(json["kind"], "request");
        assert_eq!(json["result"], "denied");
        assert_eq!(json["denial"]["policy"], "integrity");
        assert_eq!(json["destination"], "file:///x@n1");
    }
}
