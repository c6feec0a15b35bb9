//! Audit trail: an append-only record of everything the engine decided or changed.
//!
//! Owns the record types, the in-memory log ([`AuditLog`]), its queries and its text and
//! JSON renderings. It does not decide what to record (the engine does) and appends only
//! through `state::State::apply`. Entries are stored as structured values with interned
//! labels ([`AuditEntry`]); identifiers and text are produced at query time, never on
//! the hot path.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Condvar, Mutex, Once, PoisonError};

use serde::ser::{SerializeStruct, Serializer};
use trace2e_proto::{Denial, Direction, Fd, GrantId, LocalizedResource, NodeId, Policy, ProcessId};

use crate::provenance::LabelId;

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
/// are appended per mediated I/O, each to memory never touched before, so their size
/// is page faults and cache misses (a record straddling two lines cost ~10 % of 1-client
/// throughput, `t2e-load`): the fields of a flow's records are inline, their options as
/// presence bits, and everything else is boxed. Converted back at query time.
#[derive(Debug, Clone)]
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
    rare: Option<Box<Rare>>,
}

const _: () = assert!(size_of::<Stored>() == 64);

impl From<AuditEntry> for Stored {
    fn from(e: AuditEntry) -> Self {
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
        .then(|| {
            Box::new(Rare {
                denial,
                external_peer: e.external_peer,
                consent_node: e.consent_node,
                peer: e.peer,
                policy: e.policy,
                exe: e.exe,
            })
        });
        let mut present = Present::default();
        present.set(Present::GRANT, e.grant.is_some());
        present.set(Present::PROCESS, e.process.is_some());
        present.set(Present::FD, e.fd.is_some());
        present.set(Present::RESOURCE, e.resource.is_some());
        present.set(Present::SOURCE, e.source.is_some());
        present.set(Present::DESTINATION, e.destination.is_some());
        let label = |l: Option<LabelId>| l.map_or(0, |l| l.index() as u32);
        Self {
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
            rare,
        }
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
            rare: None,
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

    fn entry(&self) -> AuditEntry {
        let rare = self.rare.as_deref().cloned().unwrap_or_default();
        let result = match self.result {
            Outcome::Granted => AuditOutcome::Granted,
            // A denied record always carries its denial (see `From<AuditEntry>`).
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
/// state lock, stalling every flow) a single `Vec` would make.
#[derive(Debug, Default)]
pub struct AuditLog {
    /// Entry `i` (sequence number `i + 1`) is `chunks[i / CHUNK][i % CHUNK]`; every chunk
    /// but the last is full.
    chunks: Vec<Vec<Stored>>,
    len: usize,
    granted: u64,
    denied: u64,
}

impl AuditLog {
    /// Appends an entry; returns its sequence number.
    pub fn append(&mut self, entry: AuditEntry) -> u64 {
        if entry.kind == AuditKind::Request {
            match entry.result {
                AuditOutcome::Granted => self.granted += 1,
                AuditOutcome::Denied(_) => self.denied += 1,
                _ => {}
            }
        }
        self.push(Stored::from(entry))
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
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(spare_chunk());
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(stored);
            // Records ahead are lines never touched since their page was zeroed: fetch
            // the one two records ahead now (each line once, two appends early), while
            // the flow goes on, not under a later decision (1-client `t2e-load`, 16
            // alternating runs: median 378k -> 409k reads/s).
            #[cfg(target_arch = "x86_64")]
            if let Some(ahead) = chunk.spare_capacity_mut().get(1) {
                // SAFETY: a prefetch is a hint: it never faults and never changes memory;
                // SSE is baseline on x86_64.
                unsafe {
                    core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(ahead.as_ptr().cast())
                };
            }
        }
        self.len += 1;
        self.len as u64
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries from index `start` on, oldest first.
    fn entries_from(&self, start: usize) -> impl DoubleEndedIterator<Item = &Stored> {
        let first = start / CHUNK;
        self.chunks
            .iter()
            .enumerate()
            .skip(first)
            .flat_map(move |(i, c)| c[if i == first { start % CHUNK } else { 0 }..].iter())
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
    /// interned, which matches nothing.
    pub fn query(&self, query: &AuditQuery, resource: Option<Option<LabelId>>) -> Vec<(u64, AuditEntry)> {
        let resource = match resource {
            Some(None) => return Vec::new(),
            Some(Some(id)) => Some(id),
            None => None,
        };
        let start = usize::try_from(query.after).unwrap_or(usize::MAX).min(self.len);
        let limit = if query.limit == 0 { usize::MAX } else { query.limit };
        // Newest first, so that `limit` keeps the most recent matches; no copy of the log.
        let seqs = (start as u64 + 1..=self.len as u64).rev();
        let mut out: Vec<(u64, AuditEntry)> = seqs
            .zip(self.entries_from(start).rev())
            .filter(|(_, e)| {
                resource.is_none_or(|r| e.resource() == Some(r) || e.source() == Some(r) || e.destination() == Some(r))
            })
            .filter(|(_, e)| match query.decision {
                None => true,
                Some(DecisionFilter::Granted) => e.kind == AuditKind::Request && e.result == Outcome::Granted,
                Some(DecisionFilter::Denied) => e.kind == AuditKind::Request && e.result == Outcome::Denied,
            })
            .take(limit)
            .map(|(seq, e)| (seq, e.entry()))
            .collect();
        out.reverse();
        out
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
        let all = log.query(&AuditQuery { resource: None, decision: None, limit: 0, after: 0 }, None);
        assert_eq!(all.len(), 2 * CHUNK + 5);
        assert!(all.iter().all(|(seq, e)| *seq == e.bytes + 1));
        let tail = log.query(&AuditQuery { resource: None, decision: None, limit: 3, after: CHUNK as u64 - 1 }, None);
        assert_eq!(
            tail.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![2 * CHUNK as u64 + 3, 2 * CHUNK as u64 + 4, 2 * CHUNK as u64 + 5]
        );
        let across = log.query(&AuditQuery { resource: None, decision: None, limit: 0, after: CHUNK as u64 - 1 }, None);
        assert_eq!(across.first().map(|(s, _)| *s), Some(CHUNK as u64));
        assert_eq!(across.len(), CHUNK + 6);
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

        let all = log.query(&AuditQuery::default(), None);
        assert_eq!(all.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        let q = AuditQuery { decision: Some(DecisionFilter::Granted), ..Default::default() };
        assert_eq!(log.query(&q, None).iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![2, 4]);
        let q = AuditQuery { limit: 2, ..Default::default() };
        assert_eq!(log.query(&q, None).iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3, 4]);
        let q = AuditQuery { after: 2, ..Default::default() };
        assert_eq!(log.query(&q, None).iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3, 4]);
        let by_src = log.query(&AuditQuery::default(), Some(LabelId::from_index(2)));
        assert_eq!(by_src.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3, 4]);
        assert!(log.query(&AuditQuery::default(), Some(None)).is_empty());
        let q = AuditQuery { after: 99, ..Default::default() };
        assert!(log.query(&q, None).is_empty());
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
        let all = log.query(&AuditQuery::default(), None);
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
        assert_eq!(compact.query(&q, None), full.query(&q, None));
        assert_eq!(compact.query(&q, None).len(), 3);
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
