//! The traceability engine: every decision of the daemon.
//!
//! It does no I/O and knows no transport: `p2m`, `operator`, `federation` and `daemon`
//! call it. One file per concern:
//!
//! - [`lifecycle`]: client processes attach and exit, fds enroll and unenroll;
//! - [`flow`]: the local flow decision — resolve `(process, fd)` to a flow, reserve its
//!   labels, evaluate compliance (waiting for consent if needed), grant with a lease,
//!   record provenance on report, expire leases;
//! - [`owners`]: asking the owner nodes of a flow's remote sources, and the cache of
//!   their approvals;
//! - [`stream_sync`]: a write to a stream whose receiving side a peer owns — reserving
//!   that side there and pushing the provenance, and the steady-state shortcut;
//! - [`peers`]: the M2M server side, questions peers ask this node;
//! - [`operations`]: what operators do (policies, deletion, consent, provenance, audit,
//!   status);
//! - [`error`]: [`EngineError`], a failure or misuse (a denial is a [`Decision`]).
//!
//! Peers are asked through an injected [`Federation`] (no I/O of its own). See
//! [`Engine::request`] for the protocol across nodes and its consistency argument.
//!
//! Locks: `core` (durable [`State`], the compliance cache and the grants) is a
//! `parking_lot` lock held for short, non-async sections; the reservation table,
//! `remote_holds`, `approvals` and `pushed` are taken alone or inside `core`,
//! never the other way round; no lock is held across an `.await`.

mod error;
#[cfg(test)]
pub(crate) mod fake_peers;
mod flow;
mod lifecycle;
mod operations;
mod owners;
mod peers;
mod stream_sync;
#[cfg(test)]
mod tests;

pub use error::EngineError;
use owners::Stamp;
use peers::RemoteHold;
use stream_sync::{PushedMap, RemoteClaim};

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use trace2e_proto::{Direction, Fd, GrantId, IntegrityLevel, LocalizedResource, NodeId, Policy, ProcessId, Resource};

use crate::FastMap;
use crate::audit::clock::now_us;
use crate::audit::{AuditEntry, AuditKind, AuditLog, AuditOutcome, FlowRecord, FlowResult};
use crate::compliance::{ComplianceCache, Destination, Rules};
use crate::consent::ConsentWaiters;
use crate::enrollment::UserId;
use crate::provenance::LabelId;
use crate::remote::{Federation, NoPeers, RemoteToken};
use crate::reservation::{Claim, Reservation, ReservationTable};
use crate::state::{Change, State};
use crate::topology::Topology;

/// The engine's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// This node and the addresses it owns.
    pub topology: Topology,
    /// The integrity level of processes whose executable has no policy.
    pub default_process_integrity: IntegrityLevel,
    /// Waiting longer than this for a reservation denies the flow as busy.
    pub reservation_timeout: Duration,
    /// A grant never reported expires after this long (assumed performed).
    pub lease: Duration,
    /// Waiting longer than this for a consent decision denies the flow.
    pub consent_timeout: Duration,
    /// Deadline of one M2M call to a peer (a question that may wait for the owner's
    /// consent gets the consent timeout on top).
    pub m2m_timeout: Duration,
    /// How long a positive decision of a peer (and a peer's copy of a stream's provenance)
    /// may be reused without asking again, as a bound on staleness when a peer's notice is
    /// lost. Zero disables the reuse.
    pub remote_cache_ttl: Duration,
    /// How long a reservation a peer took here (ReserveDestination) lasts without its
    /// UpdateProvenance/ReleaseDestination; then the write is assumed performed.
    pub remote_lease: Duration,
    /// Per-stage timing of mediated I/Os (off unless `TRACE2E_BREAKDOWN=1`).
    pub breakdown: std::sync::Arc<crate::breakdown::Breakdown>,
    /// Where the audit trail is kept (all in memory unless a spill directory is set).
    pub audit: crate::audit::AuditConfig,
}

impl EngineConfig {
    /// Defaults: level 0, reservation timeout 5 s, lease 30 s, consent timeout 30 s, M2M
    /// timeout 2 s, remote cache TTL 1 s, remote lease 10 s.
    pub fn new(topology: Topology) -> Self {
        Self {
            topology,
            default_process_integrity: IntegrityLevel(0),
            reservation_timeout: Duration::from_secs(5),
            lease: Duration::from_secs(30),
            consent_timeout: Duration::from_secs(30),
            m2m_timeout: Duration::from_secs(2),
            remote_cache_ttl: Duration::from_secs(1),
            remote_lease: Duration::from_secs(10),
            breakdown: std::sync::Arc::new(crate::breakdown::Breakdown::default()),
            audit: crate::audit::AuditConfig::default(),
        }
    }
}

/// What the daemon knows of a client process when it attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The process instance.
    pub id: ProcessId,
    /// Its executable.
    pub exe: PathBuf,
    /// Its user id.
    pub uid: UserId,
}

/// Counters for operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStatus {
    /// Attached processes.
    pub processes: usize,
    /// Enrolled fds.
    pub enrolled_fds: usize,
    /// Granted flows not yet reported.
    pub active_grants: usize,
    /// Resources with a label.
    pub labelled_resources: usize,
    /// Audit records.
    pub audit_records: usize,
    /// Of those, the oldest ones kept only in the spill file.
    pub audit_records_on_disk: usize,
    /// Granted requests.
    pub granted: u64,
    /// Denied requests.
    pub denied: u64,
    /// Flows waiting for a consent decision.
    pub pending_consents: usize,
    /// Stream sides reserved here by peer nodes (ReserveDestination) and not yet released.
    pub remote_reservations: usize,
}

/// Where the engine's state is kept, for operators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DurabilityStatus {
    /// The data directory; `None`: memory only (`--ephemeral`).
    pub data_dir: Option<PathBuf>,
    /// Starts of a daemon on that directory, this one included.
    pub epoch: u64,
    /// Records in the journal.
    pub records: u64,
    /// The journal's hash at its last checkpoint (hex), and the records it covers.
    pub head: Option<(u64, String)>,
    /// Why flows are denied as unrecordable, if they are.
    pub problem: Option<String>,
    /// Whether every grant is flushed to stable storage before it is answered.
    pub synchronous: bool,
}

/// The state and what is decided under its lock.
#[derive(Debug)]
struct Core {
    state: State,
    cache: ComplianceCache,
    /// Granted flows not yet reported, under the same lock as the state: a decision and
    /// a report each take one lock.
    grants: FastMap<GrantId, Grant>,
    /// Sources whose provenance, at the recorded version, holds only this node's
    /// resources: the common case needs no walk over a large provenance on every flow
    /// (bench `provenance/10000`). Under the lock every decision already holds, not a
    /// lock of its own (bench `engine`).
    all_local: FastMap<LabelId, u64>,
}

/// One flow as resolved from `(process, fd, direction)`.
#[derive(Debug, Clone, Copy)]
struct Flow {
    process: ProcessId,
    fd: Fd,
    direction: Direction,
    source: LabelId,
    destination: Destination,
}

impl Flow {
    fn claims(&self) -> impl Iterator<Item = Claim<LabelId>> + use<> {
        let destination = match self.destination {
            Destination::Label(d) => Some(Claim::write(d)),
            Destination::External { .. } => None,
        };
        std::iter::once(Claim::read(self.source)).chain(destination)
    }

    fn entry(&self, kind: AuditKind, time_us: u64, result: AuditOutcome) -> AuditEntry {
        let mut e = AuditEntry::new(kind, time_us, result);
        e.process = Some(self.process);
        e.fd = Some(self.fd);
        e.direction = Some(self.direction);
        e.source = Some(self.source);
        match self.destination {
            Destination::Label(d) => e.destination = Some(d),
            Destination::External { stream, peer } => {
                e.destination = Some(stream);
                e.external_peer = Some(peer);
            }
        }
        e
    }
}

#[derive(Debug)]
struct Grant {
    flow: Flow,
    deadline: Instant,
    /// Released when the grant ends, however it ends.
    _reservation: Reservation<LabelId>,
    /// The peer's side of the destination stream, reserved there (M2M).
    remote: Option<RemoteClaim>,
}

/// The traceability engine of one node. `Send + Sync`; share it as `Arc<Engine>`.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    rules: Rules,
    core: RwLock<Core>,
    reservations: ReservationTable<LabelId>,
    next_grant: AtomicU64,
    consent: ConsentWaiters,
    federation: Arc<dyn Federation>,
    /// Stream sides peers reserved here, by (peer, token).
    remote_holds: Mutex<FastMap<(NodeId, RemoteToken), RemoteHold>>,
    /// Tokens of the reservations this node takes on peers.
    next_token: AtomicU64,
    /// Bumped by every notice from a peer (policy change, deletion, restart): invalidates
    /// [`Engine::approvals`] and [`Engine::pushed`].
    remote_epoch: AtomicU64,
    /// Positive answers of the owners of a flow's remote sources.
    approvals: Mutex<FastMap<ApprovalKey, (Stamp, Instant)>>,
    /// What peers already hold of a source's provenance on a stream side (shared with the
    /// background tasks that finish a remote write).
    pushed: PushedMap,
    /// The data directory and its epoch, when the state is durable.
    data_dir: Option<(PathBuf, u64)>,
    /// With `--fsync-interval-ms 0`: what a grant waits with before it is answered.
    syncer: Option<crate::durable::Syncer>,
}

/// A flow as far as the owners of its remote sources were asked about it.
type ApprovalKey = (LabelId, Destination, Option<Policy>);

/// Appends an audit entry.
fn audit(state: &mut State, entry: AuditEntry) {
    let _ = append_audit(state, Change::Audit(entry));
}

/// Applies an audit change. Appending fails only when the journal cannot record it
/// ([`crate::state::StateError::Unrecorded`], logged here).
fn append_audit(state: &mut State, change: Change) -> Result<(), crate::state::StateError> {
    let result = state.apply(change);
    if let Err(e) = &result {
        tracing::error!(error = %e, "audit append failed");
    }
    result
}

/// Appends a flow's request or report record: the compact form when the destination is
/// a label (see [`FlowRecord`]), else the full entry (it names the external peer).
fn audit_flow(
    state: &mut State,
    flow: &Flow,
    kind: AuditKind,
    time_us: u64,
    grant: GrantId,
    bytes: u64,
    result: FlowResult,
) -> Result<(), crate::state::StateError> {
    let (destination, external_peer) = match flow.destination {
        Destination::Label(d) => (d, None),
        Destination::External { stream, peer } => (stream, Some(peer)),
    };
    let record = FlowRecord {
        time_us,
        kind,
        process: flow.process,
        fd: flow.fd,
        direction: flow.direction,
        source: flow.source,
        destination,
        grant,
        bytes,
        result,
    };
    match external_peer {
        None => append_audit(state, Change::FlowAudit(record)),
        Some(peer) => {
            let mut e = record.entry();
            e.external_peer = Some(peer);
            append_audit(state, Change::Audit(e))
        }
    }
}

impl Engine {
    /// An engine with empty state and no peers.
    pub fn new(config: EngineConfig) -> Self {
        Self::with_federation(config, Arc::new(NoPeers))
    }

    /// An engine with empty state that asks its peers through `federation`.
    pub fn with_federation(config: EngineConfig, federation: Arc<dyn Federation>) -> Self {
        let state = State::with_audit(AuditLog::new(&config.audit));
        Self::with_state(config, federation, state)
    }

    /// An engine on the state recovered from data directory `data` (see
    /// [`crate::durable::recover`]): grants on record that were never reported count as
    /// performed (as at a lease's expiry), processes attached before are gone, grant ids
    /// continue after the last one on record.
    pub fn recover(
        config: EngineConfig,
        federation: Arc<dyn Federation>,
        recovered: crate::durable::Recovered,
        data: &crate::durable::DataDir,
    ) -> Self {
        let crate::durable::Recovered { state, replayed, open_grants, attached, last_grant, cut } = recovered;
        let mut engine = Self::with_state(config, federation, state);
        engine.next_grant = AtomicU64::new(last_grant + 1);
        engine.data_dir = Some((data.path().to_owned(), data.epoch()));
        {
            let mut core = engine.core.write();
            let state = &mut core.state;
            engine.syncer = state.journal().filter(|j| j.synchronous()).map(|j| j.syncer());
            let time_us = now_us();
            for g in &open_grants {
                if let Err(e) =
                    state.apply_fact(Change::Flow { source: g.source, destination: g.destination, bytes: 0, time_us })
                {
                    tracing::error!(error = %e, grant = %g.grant, "merge of a grant open at the restart failed");
                }
                let mut e = AuditEntry::new(AuditKind::Expired, time_us, AuditOutcome::Ok);
                e.process = Some(g.process);
                e.grant = Some(g.grant);
                e.source = Some(g.source);
                e.destination = Some(g.destination);
                audit(state, e);
            }
        }
        // Gone for this daemon: as if they exited (fds unenrolled, exit recorded).
        for &process in &attached {
            engine.process_exited(process);
        }
        if let Some(cut) = &cut {
            tracing::warn!(%cut, "the journal's tail after its last checkpoint was torn (a machine crash?) and was cut");
        }
        tracing::info!(
            data_dir = %data.path().display(),
            epoch = data.epoch(),
            records = replayed,
            labels = engine.core.read().state.labels(),
            open_grants = open_grants.len(),
            processes_gone = attached.len(),
            "state recovered"
        );
        engine
    }

    fn with_state(config: EngineConfig, federation: Arc<dyn Federation>, state: State) -> Self {
        let rules =
            Rules { topology: config.topology.clone(), default_process_integrity: config.default_process_integrity };
        Self {
            core: RwLock::new(Core {
                state,
                cache: ComplianceCache::default(),
                grants: FastMap::default(),
                all_local: FastMap::default(),
            }),
            rules,
            config,
            reservations: ReservationTable::new(),
            next_grant: AtomicU64::new(1),
            consent: ConsentWaiters::default(),
            federation,
            remote_holds: Mutex::new(FastMap::default()),
            // Distinct from the tokens of an earlier run of this node that a peer may still
            // hold (until its lease ends).
            next_token: AtomicU64::new(now_us().wrapping_mul(1 << 12).max(1)),
            remote_epoch: AtomicU64::new(0),
            approvals: Mutex::new(FastMap::default()),
            pushed: Arc::new(Mutex::new(FastMap::default())),
            data_dir: None,
            syncer: None,
        }
    }

    /// The whole state as text ([`State::dump`]).
    #[cfg(test)]
    pub(crate) fn state_dump(&self) -> String {
        self.core.read().state.dump()
    }

    /// This node.
    pub fn node(&self) -> &NodeId {
        &self.config.topology.node
    }

    /// This node's topology.
    pub fn topology(&self) -> &Topology {
        &self.config.topology
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    fn local(&self, r: &Resource) -> LocalizedResource {
        r.clone().at(self.node())
    }
}
