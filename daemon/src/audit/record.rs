//! The audit trail's record types: what the engine appends ([`AuditEntry`], the
//! compact [`FlowRecord`]), what queries ask ([`AuditQuery`]) and return ([`AuditRecord`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use trace2e_proto::{Denial, Direction, Fd, GrantId, LocalizedResource, NodeId, Policy, ProcessId};

use crate::provenance::LabelId;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// One stored record, with labels interned. Built by the engine, numbered by the log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// The source, named in full, when this node holds no label for it (a peer's
    /// question about a resource never seen here must not create its label).
    pub named_source: Option<LocalizedResource>,
    /// The destination, named in full, when this node holds no label for it.
    pub named_destination: Option<LocalizedResource>,
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
            named_source: None,
            named_destination: None,
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

/// The sequence number of an audit record: from 1, without gaps, in the order of
/// appends (0 means "before the first record" in [`AuditQuery::after`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AuditSeq(pub u64);

impl std::fmt::Display for AuditSeq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
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
    pub after: AuditSeq,
}

/// One audit record as returned by queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Sequence number, from 1, without gaps.
    pub seq: AuditSeq,
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
    /// The query form of entry `seq` of `node`'s trail, its labels named by `name`.
    pub fn resolve(
        seq: u64,
        e: AuditEntry,
        node: &NodeId,
        name: impl Fn(LabelId) -> Option<LocalizedResource>,
    ) -> Self {
        Self {
            seq: AuditSeq(seq),
            time_us: e.time_us,
            node: node.clone(),
            kind: e.kind,
            process: e.process,
            fd: e.fd,
            resource: e.resource.and_then(&name),
            source: e.source.and_then(&name).or(e.named_source),
            destination: e.destination.and_then(&name).or(e.named_destination),
            external_peer: e.external_peer,
            consent_node: e.consent_node,
            peer: e.peer,
            direction: e.direction,
            bytes: e.bytes,
            grant: e.grant,
            policy: e.policy,
            exe: e.exe,
            result: e.result,
        }
    }
}

/// The record of a flow request or report between two labels: the two records every
/// mediated I/O appends. The same record as the [`AuditEntry`] with these fields (see
/// [`FlowRecord::entry`]), appended without building one: an entry is ~0.4 KB of mostly
/// empty options, moved into a [`crate::state::Change`] and dropped again, on every
/// I/O's path (bench `engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
