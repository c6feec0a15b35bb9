//! The traceability engine: every decision of the daemon.
//!
//! Owns the flow of one mediated I/O — resolve `(process, fd)` to a flow, reserve its
//! labels, evaluate compliance (waiting for consent if needed), grant with a lease,
//! record provenance on report — and the operator operations (policies, deletion,
//! consent, provenance, audit, status). It does no I/O and knows no transport: `p2m`,
//! `operator` and `daemon` call it.
//!
//! Federation: the engine asks peer nodes through an injected [`Federation`] (no I/O of
//! its own), and answers their questions ([`Engine::remote_reserve`],
//! [`Engine::check_sources`], ...) for `federation`'s M2M server. See "Across nodes"
//! below [`Engine::request`] for the protocol and its consistency argument.
//!
//! Locks: `core` (durable [`State`], the compliance cache and the grants) is a
//! `parking_lot` lock held for short, non-async sections; the reservation table,
//! `remote_holds`, `approvals` and `pushed` are taken alone or inside `core`,
//! never the other way round; no lock is held across an `.await`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use trace2e_proto::{
    Confidentiality, Decision, Denial, Direction, Fd, GrantId, IntegrityLevel, IoOutcome, LocalizedResource, NodeId,
    Policy, PolicyKind, ProcessId, Resource,
};

use crate::FastMap;
use crate::audit::{
    AuditEntry, AuditError, AuditKind, AuditLog, AuditOutcome, AuditQuery, AuditRecord, FlowRecord, FlowResult,
};
use crate::breakdown::Stage;
use crate::compliance::{ComplianceCache, Destination, Rules, Target, UnknownLabel, Verdict, evaluate_owned};
use crate::consent::{ConsentDestination, ConsentRequest, ConsentWaiters};
use crate::provenance::{LabelId, LineageEdge};
use crate::remote::{BoxFuture, Federation, NoPeers, RemoteError, RemoteTarget, ReserveQuestion, SourcesQuestion};
use crate::reservation::{Busy, Claim, Reservation, ReservationTable};
use crate::state::{Change, ConsentKey, State, StateError};
use crate::topology::{Owner, Topology};

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
    pub uid: u32,
}

/// Counters for operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
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

/// A misuse of the engine or a failure (a denial is a [`Decision`], not an error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The process is not attached.
    #[error("process {process} is not attached")]
    UnknownProcess {
        /// The process.
        process: ProcessId,
    },
    /// Nothing is enrolled under this fd.
    #[error("fd {fd} of process {process} is not enrolled")]
    NotEnrolled {
        /// The process.
        process: ProcessId,
        /// The fd.
        fd: Fd,
    },
    /// No such grant is active.
    #[error("no active grant {grant}")]
    UnknownGrant {
        /// The grant.
        grant: GrantId,
    },
    /// The grant belongs to another process.
    #[error("grant {grant} does not belong to process {process}")]
    WrongProcess {
        /// The grant.
        grant: GrantId,
        /// The process that reported it.
        process: ProcessId,
    },
    /// The resource cannot take part in this operation (e.g. enrolling a process, deleting
    /// an executable).
    #[error("{resource} is not a flow endpoint for this operation")]
    NotAFlowEndpoint {
        /// The resource.
        resource: Resource,
    },
    /// The resource is deleted: its policy is frozen.
    #[error("{resource} is deleted: its policy can no longer change")]
    Deleted {
        /// The resource.
        resource: LocalizedResource,
    },
    /// A remote question from a node that is not a configured peer.
    #[error("node {node} is not a configured peer of this node")]
    UnknownPeer {
        /// The node that asked.
        node: NodeId,
    },
    /// A remote question about a resource the asking node may not ask about here.
    #[error("{resource}: {problem}")]
    NotOwned {
        /// The resource.
        resource: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// No reservation of this peer under this token (released, expired, never taken).
    #[error("no reservation {token} of node {node}")]
    UnknownReservation {
        /// The peer.
        node: NodeId,
        /// Its token.
        token: u64,
    },
    /// The peer already holds a reservation under this token.
    #[error("node {node} already holds reservation {token}")]
    DuplicateToken {
        /// The peer.
        node: NodeId,
        /// Its token.
        token: u64,
    },
    /// Internal failure of the state (a bug or exhausted capacity).
    #[error("internal state error: {0}")]
    State(StateError),
}

impl From<StateError> for EngineError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::Deleted(resource) => Self::Deleted { resource },
            StateError::UnknownProcess(process) => Self::UnknownProcess { process },
            StateError::NotEnrolled { process, fd } => Self::NotEnrolled { process, fd },
            other => Self::State(other),
        }
    }
}

impl From<UnknownLabel> for EngineError {
    fn from(e: UnknownLabel) -> Self {
        Self::State(StateError::UnknownLabel(e.0))
    }
}

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
    remote_holds: Mutex<FastMap<(NodeId, u64), RemoteHold>>,
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
}

/// What peers hold of a source's provenance, by (source, peer's stream side mirrored here).
type PushedMap = Arc<Mutex<FastMap<(LabelId, LabelId), Pushed>>>;

/// A flow as far as the owners of its remote sources were asked about it.
type ApprovalKey = (LabelId, Destination, Option<Policy>);

/// What a decision about a source depended on: the source's provenance version, this
/// node's policy epoch, and the peers' notice epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    version: u64,
    epoch: u64,
    remote_epoch: u64,
}

/// The last successful UpdateProvenance of a source to a peer's stream side.
#[derive(Debug, Clone, Copy)]
struct Pushed {
    /// The source's provenance version the peer merged.
    version: u64,
    /// The notice epoch when the reservation was taken.
    remote_epoch: u64,
    /// The destination's policy the peer returned then.
    policy: Policy,
    at: Instant,
}

/// A reservation a peer holds here on the receiving side of one of its streams.
#[derive(Debug)]
struct RemoteHold {
    destination: LabelId,
    writer: LabelId,
    provenance: Vec<LabelId>,
    deadline: Instant,
    _reservation: Reservation<LabelId>,
}

/// This node's reservation of a peer's stream side, for one flow. Ending it is
/// [`RemoteClaim::finish`] (UpdateProvenance); dropping it unfinished releases it
/// (ReleaseDestination) — on every path: denial, error, cancellation. Both run in the
/// background; the peer's own lease is the backstop when they cannot reach it.
#[derive(Debug)]
struct RemoteClaim {
    federation: Arc<dyn Federation>,
    node: NodeId,
    token: u64,
    /// Recorded in `pushed` when the update succeeds.
    record: Option<(PushedMap, (LabelId, LabelId), Pushed)>,
    finished: bool,
}

fn in_background(task: BoxFuture<()>) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(task);
        }
        Err(_) => tracing::warn!("no runtime to finish a remote reservation; the peer's lease will release it"),
    }
}

impl RemoteClaim {
    /// UpdateProvenance in the background: the peer merges (if `performed`) and releases.
    fn finish(mut self, performed: bool, bytes: u64) {
        self.finished = true;
        let update = self.federation.update_provenance(&self.node, self.token, performed, bytes);
        let record = self.record.take().filter(|_| performed);
        let (node, token) = (self.node.clone(), self.token);
        in_background(Box::pin(async move {
            match update.await {
                Ok(()) => {
                    if let Some((map, key, pushed)) = record {
                        map.lock().insert(key, pushed);
                    }
                }
                Err(e) => tracing::warn!(%node, token, error = %e, "UpdateProvenance failed; the peer's lease ends it"),
            }
        }));
    }
}

impl Drop for RemoteClaim {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let release = self.federation.release_destination(&self.node, self.token);
        let (node, token) = (self.node.clone(), self.token);
        in_background(Box::pin(async move {
            if let Err(e) = release.await {
                tracing::debug!(%node, token, error = %e, "ReleaseDestination failed; the peer's lease ends it");
            }
        }));
    }
}

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

/// Unix µs of the monotonic instant `at`.
fn wall_us(at: Instant) -> u64 {
    let mut offset = CLOCK_OFFSET_US.load(Ordering::Relaxed);
    if offset == 0 {
        resync_clock();
        offset = CLOCK_OFFSET_US.load(Ordering::Relaxed);
    }
    offset + at.saturating_duration_since(*CLOCK_ORIGIN).as_micros() as u64
}

fn now_us() -> u64 {
    wall_us(Instant::now())
}

/// Appends an audit entry.
fn audit(state: &mut State, entry: AuditEntry) {
    append_audit(state, Change::Audit(entry));
}

/// Applies an audit change. Appending cannot fail; a failure would be a bug in `apply`.
fn append_audit(state: &mut State, change: Change) {
    if let Err(e) = state.apply(change) {
        tracing::error!(error = %e, "audit append failed");
    }
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
) {
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
            audit(state, e);
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
        let rules =
            Rules { topology: config.topology.clone(), default_process_integrity: config.default_process_integrity };
        Self {
            core: RwLock::new(Core {
                state: State::with_audit(config.topology.node.clone(), AuditLog::new(&config.audit)),
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
        }
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

    // ---- processes and enrollment -------------------------------------------------

    /// Registers a client process. Idempotent: attaching again with the same executable
    /// does nothing; with another executable (exec) it updates the process's attributes.
    pub fn attach_process(&self, info: ProcessInfo) {
        let mut core = self.core.write();
        let state = &mut core.state;
        if state.enrollments().process(info.id).is_some_and(|p| p.exe == info.exe) {
            return;
        }
        let result = (|| -> Result<(), StateError> {
            let label = state.intern(&self.local(&Resource::Process(info.id)))?;
            let exe_label = state.intern(&self.local(&Resource::Executable(info.exe.clone())))?;
            state.apply(Change::Attach { process: info.id, label, exe: info.exe.clone(), exe_label, uid: info.uid })?;
            let mut e = AuditEntry::new(AuditKind::Attach, now_us(), AuditOutcome::Ok);
            e.process = Some(info.id);
            e.resource = Some(label);
            e.exe = Some(info.exe.clone());
            audit(state, e);
            Ok(())
        })();
        if let Err(e) = result {
            tracing::error!(error = %e, process = %info.id, "attach failed");
        }
    }

    /// A client process is gone: its grants end as if performed, its fds are unenrolled,
    /// and its label stays (with its executable) in the provenance of what it wrote.
    pub fn process_exited(&self, id: ProcessId) {
        let attached = {
            let mut core = self.core.write();
            // Detach first: no new grant can be created for it after this point.
            core.state.apply(Change::Detach { process: id }).is_ok()
        };
        let grants: Vec<(GrantId, Grant)> = {
            let grants = &mut self.core.write().grants;
            let ids: Vec<GrantId> = grants.iter().filter(|(_, g)| g.flow.process == id).map(|(k, _)| *k).collect();
            ids.into_iter().filter_map(|k| grants.remove(&k).map(|g| (k, g))).collect()
        };
        for (grant_id, grant) in grants {
            self.end_unreported(grant_id, grant);
        }
        let mut core = self.core.write();
        let state = &mut core.state;
        for fd in state.enrollments().fds_of(id) {
            self.unenroll_locked(state, id, fd);
        }
        if attached {
            let mut e = AuditEntry::new(AuditKind::Exit, now_us(), AuditOutcome::Ok);
            e.process = Some(id);
            e.resource = state.id(&self.local(&Resource::Process(id)));
            audit(state, e);
        }
    }

    /// Registers `fd` of `process` as `resource` (a file or a stream). A reused fd
    /// replaces its previous entry (audited as unenroll, then enroll).
    pub fn enroll(&self, process: ProcessId, fd: Fd, resource: Resource) -> Result<(), EngineError> {
        if !matches!(resource, Resource::File(_) | Resource::Stream(_)) {
            return Err(EngineError::NotAFlowEndpoint { resource });
        }
        let mut core = self.core.write();
        let state = &mut core.state;
        if state.enrollments().process(process).is_none() {
            return Err(EngineError::UnknownProcess { process });
        }
        let label = state.intern(&resource.at(self.node()))?;
        if state.enrollments().resource(process, fd).is_some() {
            self.unenroll_locked(state, process, fd);
        }
        state.apply(Change::Enroll { process, fd, label })?;
        let mut e = AuditEntry::new(AuditKind::Enroll, now_us(), AuditOutcome::Ok);
        e.process = Some(process);
        e.fd = Some(fd);
        e.resource = Some(label);
        audit(state, e);
        Ok(())
    }

    fn unenroll_locked(&self, state: &mut State, process: ProcessId, fd: Fd) -> Option<LabelId> {
        let label = state.enrollments().resource(process, fd)?;
        state.apply(Change::Unenroll { process, fd }).ok()?;
        let mut e = AuditEntry::new(AuditKind::Unenroll, now_us(), AuditOutcome::Ok);
        e.process = Some(process);
        e.fd = Some(fd);
        e.resource = Some(label);
        audit(state, e);
        Some(label)
    }

    /// Forgets `fd` of `process` (closed).
    pub fn unenroll(&self, process: ProcessId, fd: Fd) -> Result<(), EngineError> {
        let mut core = self.core.write();
        match self.unenroll_locked(&mut core.state, process, fd) {
            Some(_) => Ok(()),
            None => Err(EngineError::NotEnrolled { process, fd }),
        }
    }

    // ---- flows ----------------------------------------------------------------------

    fn resolve(
        &self,
        state: &mut State,
        process: ProcessId,
        fd: Fd,
        direction: Direction,
    ) -> Result<Flow, EngineError> {
        let resource = state.enrollments().resource(process, fd).ok_or(EngineError::NotEnrolled { process, fd })?;
        let process_label = state.enrollments().process(process).ok_or(EngineError::UnknownProcess { process })?.label;
        let (source, destination) = match direction {
            Direction::Read => (resource, Destination::Label(process_label)),
            Direction::Write => {
                let stream = match state.resource(resource).map(|r| &r.resource) {
                    Some(Resource::Stream(s)) => Some(*s),
                    _ => None,
                };
                let destination = match stream {
                    // The receiving end's view of the stream, owned by the peer's node.
                    Some(s) => match self.config.topology.owner(s.peer.ip()) {
                        Owner::Local => Destination::Label(state.intern(&self.local(&Resource::Stream(s.mirrored())))?),
                        // The peer reserves and labels its side; this label mirrors it here.
                        Owner::Peer(node) => {
                            Destination::Label(state.intern(&Resource::Stream(s.mirrored()).at(&node))?)
                        }
                        _ => Destination::External { stream: resource, peer: s.peer },
                    },
                    None => Destination::Label(resource),
                };
                (process_label, destination)
            }
        };
        Ok(Flow { process, fd, direction, source, destination })
    }

    /// Decides one I/O of `process` on `fd`: reserves the flow's labels, evaluates the
    /// policies (waiting for consent if an owner requires it), and grants it with a lease
    /// or denies it. Every decision is audited.
    ///
    /// # Across nodes
    ///
    /// - *Destination on a peer* (a write to a stream whose peer address a peer node
    ///   owns): after the local claims (fixed order: local, then remote) the peer's side is
    ///   reserved there with ReserveDestination, which returns its policy and carries the
    ///   writer's provenance. The peer's readers of that stream wait on the reservation
    ///   until the report's UpdateProvenance (or a release, or its lease, which then
    ///   assumes the write performed). Every path that does not end in a report releases
    ///   it ([`RemoteClaim`]'s drop).
    /// - *Sources owned by peers*: after the local rules pass, the remote sources are
    ///   grouped by owner and every owner is asked in parallel (CheckSources, deadline:
    ///   consent timeout + M2M timeout); all must agree. A node that cannot be asked is an
    ///   [`PolicyKind::Unreachable`] denial naming it. Tombstones of deletions broadcast
    ///   by owners deny locally without asking.
    /// - *Steady state*: a positive answer of the owners is reused while the source's
    ///   provenance version, this node's policy epoch and the peers' notice epoch are
    ///   unchanged, for at most `remote_cache_ttl`. A write to a peer's stream side whose
    ///   source provenance is unchanged since the last successful UpdateProvenance to that
    ///   same side skips ReserveDestination/UpdateProvenance entirely: see
    ///   [`Engine::shortcut`] for why that keeps the guarantee.
    pub async fn request(&self, process: ProcessId, fd: Fd, direction: Direction) -> Result<Decision, EngineError> {
        match self.try_request(process, fd, direction)? {
            Some(decision) => Ok(decision),
            None => self.request_waiting(process, fd, direction).await,
        }
    }

    /// [`Engine::request`] when it needs no waiting: `None` (and nothing taken or
    /// recorded) when the flow's labels are reserved by others or queued on, its
    /// destination is on a peer that must be asked (not the steady state of
    /// [`Engine::shortcut`]), an owner must consent, or a peer owns one of its sources
    /// and has not approved this flow recently; the caller then runs
    /// [`Engine::request`]. Otherwise the whole decision — resolve, reserve, evaluate,
    /// grant or deny, audit — under one acquisition of the state lock, allocating
    /// nothing (bench `engine`).
    pub fn try_request(
        &self,
        process: ProcessId,
        fd: Fd,
        direction: Direction,
    ) -> Result<Option<Decision>, EngineError> {
        self.try_request_answering(process, fd, direction, |_| {})
    }

    /// [`Engine::try_request`], calling `answer` with a grant as soon as it is taken, so
    /// that the process can go on while its audit record is appended. Still under the
    /// state lock: the audit trail keeps the order of decisions, and the grant's report
    /// (which the same caller handles next) cannot be applied before its request is
    /// recorded. The append writes a cache line of memory never touched before: on a VM,
    /// up to ~0.3 µs on the critical path of every read (1-client `t2e-load` with no
    /// request record at all: +12 % reads/s). A denial is audited first and only
    /// returned: the rare path stays simple.
    ///
    /// A shared-memory channel thread calls this inline.
    pub fn try_request_answering(
        &self,
        process: ProcessId,
        fd: Fd,
        direction: Direction,
        answer: impl FnOnce(&Decision),
    ) -> Result<Option<Decision>, EngineError> {
        let breakdown = &self.config.breakdown;
        let reserving = breakdown.start();
        let mut core = self.core.write();
        let flow = self.resolve(&mut core.state, process, fd, direction)?;
        let remote = self.remote_destination(&core.state, &flow).is_some();
        let Some(reservation) = self.reservations.try_acquire(flow.claims()) else {
            return Ok(None);
        };
        breakdown.stop(Stage::Reservation, reserving);
        let Core { state, cache, grants, all_local } = &mut *core;
        // A destination on a peer is decided here only in the steady state that needs
        // no M2M call (see [`Engine::shortcut`]; the source is reserved and the state
        // locked, so its provenance version cannot change before the grant).
        let destination_policy = match (remote, flow.destination) {
            (false, _) => None,
            (true, Destination::Label(destination)) => {
                let version = state.label(flow.source).ok_or(UnknownLabel(flow.source))?.provenance.version();
                let epoch = self.remote_epoch.load(Ordering::Acquire);
                match self.shortcut(flow.source, destination, version, epoch) {
                    Some(policy) => Some(policy),
                    None => return Ok(None),
                }
            }
            (true, Destination::External { .. }) => return Ok(None),
        };
        let evaluating = breakdown.start();
        let verdict = cache.evaluate_for(state, &self.rules, flow.source, flow.destination, destination_policy);
        breakdown.stop(Stage::Compliance, evaluating);
        match verdict? {
            Verdict::Grant => {
                let local = self.remote_owners(state, all_local, flow.source)?.is_empty();
                let key = (flow.source, flow.destination, destination_policy);
                if local || self.approved(&key, self.stamp(state, flow.source)?) {
                    return self.grant(state, grants, flow, reservation, None, answer).map(Some);
                }
                Ok(None)
            }
            Verdict::Deny(denial) => Ok(Some(Self::deny_locked(state, &flow, denial))),
            Verdict::AskConsent { .. } => Ok(None),
        }
    }

    /// [`Engine::request`] for a flow that may have to wait (see [`Engine::try_request`]).
    async fn request_waiting(&self, process: ProcessId, fd: Fd, direction: Direction) -> Result<Decision, EngineError> {
        let breakdown = &self.config.breakdown;
        let reserving = breakdown.start();
        let (flow, remote) = {
            let mut core = self.core.write();
            let flow = self.resolve(&mut core.state, process, fd, direction)?;
            let remote = self.remote_destination(&core.state, &flow);
            (flow, remote)
        };
        let acquired = self.reservations.acquire(flow.claims(), self.config.reservation_timeout).await;
        breakdown.stop(Stage::Reservation, reserving);
        let reservation = match acquired {
            Ok(r) => r,
            Err(Busy { key }) => {
                let resource = self.core.read().state.resource(key).cloned().ok_or(UnknownLabel(key))?;
                let denial = Denial {
                    policy: PolicyKind::Busy,
                    reason: format!(
                        "{resource} stayed reserved by other flows for {:?}",
                        self.config.reservation_timeout
                    ),
                    resource,
                };
                return Ok(self.deny(&flow, denial));
            }
        };
        let mut destination_policy = None;
        let mut remote_claim = None;
        if let Some((node, side)) = remote {
            match self.reserve_remote(&flow, node, side).await? {
                Ok((policy, claim)) => {
                    destination_policy = Some(policy);
                    remote_claim = claim;
                }
                Err(denial) => return Ok(self.deny(&flow, denial)),
            }
        }
        let deadline = Instant::now() + self.config.consent_timeout;
        // The stamp at which every remote owner last agreed to this flow.
        let mut approved: Option<Stamp> = None;
        loop {
            let step = {
                let mut core = self.core.write();
                let Core { state, cache, grants, all_local } = &mut *core;
                let evaluating = breakdown.start();
                let verdict = cache.evaluate_for(state, &self.rules, flow.source, flow.destination, destination_policy);
                breakdown.stop(Stage::Compliance, evaluating);
                match verdict? {
                    Verdict::Grant => {
                        let stamp = self.stamp(state, flow.source)?;
                        let owners = self.remote_owners(state, all_local, flow.source)?;
                        let key = (flow.source, flow.destination, destination_policy);
                        if owners.is_empty() || approved == Some(stamp) || self.approved(&key, stamp) {
                            return self.grant(state, grants, flow, reservation, remote_claim, |_| {});
                        }
                        Step::AskOwners(owners, self.remote_target(state, &flow, destination_policy)?, stamp)
                    }
                    Verdict::Deny(denial) => Step::Deny(denial),
                    Verdict::AskConsent { source, destination } => {
                        match self.await_consent(state, source, destination, deadline)? {
                            Ok((wait, remaining)) => Step::Wait(wait, remaining),
                            Err(denial) => Step::Deny(denial),
                        }
                    }
                }
            };
            match step {
                Step::Deny(denial) => return Ok(self.deny(&flow, denial)),
                // Whether woken or timed out, evaluate again: a timeout ends as a denial above.
                Step::Wait(wait, remaining) => {
                    wait.wait(remaining).await;
                }
                Step::AskOwners(owners, target, stamp) => match self.ask_owners(owners, target).await {
                    Some(denial) => return Ok(self.deny(&flow, denial)),
                    None => {
                        // Evaluate again under the lock: the grant is given only if nothing
                        // the owners' answers depended on changed meanwhile.
                        approved = Some(stamp);
                        if !self.config.remote_cache_ttl.is_zero() {
                            let key = (flow.source, flow.destination, destination_policy);
                            let mut approvals = self.approvals.lock();
                            if approvals.len() >= 1 << 16 {
                                approvals.clear();
                            }
                            approvals.insert(key, (stamp, Instant::now()));
                        }
                    }
                },
            }
        }
    }

    /// A flow needs the consent of `source`'s owner for `destination`: the waiter to
    /// await until `deadline`, or the Consent denial once the deadline has passed. Called
    /// under the state lock, so a decision recorded after this evaluation finds the waiter.
    fn await_consent(
        &self,
        state: &State,
        source: LabelId,
        destination: LabelId,
        deadline: Instant,
    ) -> Result<Result<(crate::consent::ConsentWait, Duration), Denial>, EngineError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let src = state.resource(source).cloned().ok_or(UnknownLabel(source))?;
        let dst = state.resource(destination).cloned().ok_or(UnknownLabel(destination))?;
        if remaining.is_zero() {
            return Ok(Err(Denial {
                policy: PolicyKind::Consent,
                reason: format!("the owner of {src} did not decide on {dst} within {:?}", self.config.consent_timeout),
                resource: src,
            }));
        }
        Ok(Ok((self.consent.register(src, dst), remaining)))
    }

    /// Audits and returns a denial.
    fn deny(&self, flow: &Flow, denial: Denial) -> Decision {
        Self::deny_locked(&mut self.core.write().state, flow, denial)
    }

    /// [`Engine::deny`] under the state lock.
    fn deny_locked(state: &mut State, flow: &Flow, denial: Denial) -> Decision {
        audit(state, flow.entry(AuditKind::Request, now_us(), AuditOutcome::Denied(denial.clone())));
        Decision::Denied(denial)
    }

    /// For a write to a stream side a peer owns: the peer and its side (not localized).
    fn remote_destination(&self, state: &State, flow: &Flow) -> Option<(NodeId, Resource)> {
        let Destination::Label(d) = flow.destination else {
            return None;
        };
        let r = state.resource(d)?;
        (r.node != *self.node() && r.resource.is_stream()).then(|| (r.node.clone(), r.resource.clone()))
    }

    fn stamp(&self, state: &State, source: LabelId) -> Result<Stamp, UnknownLabel> {
        Ok(Stamp {
            version: state.label(source).ok_or(UnknownLabel(source))?.provenance.version(),
            epoch: state.epoch(),
            remote_epoch: self.remote_epoch.load(Ordering::Acquire),
        })
    }

    fn fresh(&self, at: Instant) -> bool {
        at.elapsed() < self.config.remote_cache_ttl
    }

    fn approved(&self, key: &ApprovalKey, stamp: Stamp) -> bool {
        self.approvals.lock().get(key).is_some_and(|(s, at)| *s == stamp && self.fresh(*at))
    }

    /// The resources among `source` and its provenance that other nodes own, by owner.
    fn remote_owners(
        &self,
        state: &State,
        all_local: &mut FastMap<LabelId, u64>,
        source: LabelId,
    ) -> Result<BTreeMap<NodeId, Vec<LocalizedResource>>, UnknownLabel> {
        let label = state.label(source).ok_or(UnknownLabel(source))?;
        let version = label.provenance.version();
        if all_local.get(&source) == Some(&version) {
            return Ok(BTreeMap::new());
        }
        let mut owners: BTreeMap<NodeId, Vec<LocalizedResource>> = BTreeMap::new();
        for id in std::iter::once(&source).chain(label.provenance.labels()) {
            let r = state.resource(*id).ok_or(UnknownLabel(*id))?;
            if r.node != *self.node() {
                owners.entry(r.node.clone()).or_default().push(r.clone());
            }
        }
        for list in owners.values_mut() {
            list.sort();
        }
        if owners.is_empty() {
            // Provenance only grows and a resource's node never changes: a remote entry
            // can only appear with a new version.
            if all_local.len() >= 1 << 16 {
                all_local.clear();
            }
            all_local.insert(source, version);
        }
        Ok(owners)
    }

    /// The flow's destination as described to the owners of its sources.
    fn remote_target(
        &self,
        state: &State,
        flow: &Flow,
        destination_policy: Option<Policy>,
    ) -> Result<RemoteTarget, UnknownLabel> {
        Ok(match flow.destination {
            Destination::Label(d) => {
                let label = state.label(d).ok_or(UnknownLabel(d))?;
                RemoteTarget {
                    resource: label.resource.clone(),
                    external_peer: None,
                    policy: destination_policy.unwrap_or_else(|| self.rules.policy(state, label)),
                }
            }
            Destination::External { stream, peer } => RemoteTarget {
                resource: state.resource(stream).cloned().ok_or(UnknownLabel(stream))?,
                external_peer: Some(peer),
                policy: Policy::default(),
            },
        })
    }

    /// Asks every owner in parallel; the first real denial (by owner name) wins over an
    /// owner that could not be asked. `None`: all agreed.
    async fn ask_owners(
        &self,
        owners: BTreeMap<NodeId, Vec<LocalizedResource>>,
        target: RemoteTarget,
    ) -> Option<Denial> {
        let deadline = self.config.consent_timeout + self.config.m2m_timeout;
        let asked: Vec<(NodeId, LocalizedResource)> =
            owners.iter().filter_map(|(n, list)| Some((n.clone(), list.first()?.clone()))).collect();
        let mut set = tokio::task::JoinSet::new();
        for (i, (node, sources)) in owners.into_iter().enumerate() {
            let question = self.federation.check_sources(&node, SourcesQuestion { sources, target: target.clone() });
            set.spawn(async move { (i, tokio::time::timeout(deadline, question).await) });
        }
        let mut answers: Vec<Option<Result<Option<Denial>, RemoteError>>> = vec![None; asked.len()];
        while let Some(joined) = set.join_next().await {
            if let Ok((i, answer)) = joined
                && let Some(slot) = answers.get_mut(i)
            {
                *slot = Some(answer.unwrap_or_else(|_| {
                    Err(RemoteError::Unreachable {
                        node: asked[i].0.clone(),
                        cause: format!("no answer within {deadline:?}"),
                    })
                }));
            }
        }
        let mut unreachable = None;
        for ((node, first), answer) in asked.into_iter().zip(answers) {
            match answer {
                Some(Ok(None)) => {}
                Some(Ok(Some(denial))) => return Some(denial),
                Some(Err(e)) => {
                    unreachable.get_or_insert_with(|| unreachable_denial(first, &e));
                }
                None => {
                    let e = RemoteError::Unreachable { node, cause: "the question failed".into() };
                    unreachable.get_or_insert_with(|| unreachable_denial(first, &e));
                }
            }
        }
        unreachable
    }

    /// Reserves the peer's side of the destination stream (or takes the shortcut); the
    /// destination's policy and the claim to finish, or a denial.
    async fn reserve_remote(
        &self,
        flow: &Flow,
        node: NodeId,
        side: Resource,
    ) -> Result<Result<(Policy, Option<RemoteClaim>), Denial>, EngineError> {
        let Destination::Label(destination) = flow.destination else {
            return Err(EngineError::State(StateError::UnknownLabel(flow.source)));
        };
        let (writer, provenance, version, dst_resource) = {
            let core = self.core.read();
            let state = &core.state;
            let label = state.label(flow.source).ok_or(UnknownLabel(flow.source))?;
            let provenance: Vec<LocalizedResource> =
                label.provenance.labels().iter().filter_map(|id| state.resource(*id).cloned()).collect();
            let dst = state.resource(destination).cloned().ok_or(UnknownLabel(destination))?;
            (label.resource.clone(), provenance, label.provenance.version(), dst)
        };
        let remote_epoch = self.remote_epoch.load(Ordering::Acquire);
        if let Some(policy) = self.shortcut(flow.source, destination, version, remote_epoch) {
            return Ok(Ok((policy, None)));
        }
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let question = ReserveQuestion { token, destination: side, writer, provenance };
        let answer =
            tokio::time::timeout(self.config.m2m_timeout, self.federation.reserve_destination(&node, question));
        // From here on, dropping the claim (denial, error, cancellation) releases the
        // reservation, even one the peer took after our deadline.
        let mut claim = RemoteClaim {
            federation: Arc::clone(&self.federation),
            node: node.clone(),
            token,
            record: None,
            finished: false,
        };
        let error = match answer.await {
            Ok(Ok(Ok(policy))) => {
                let pushed = Pushed { version, remote_epoch, policy, at: Instant::now() };
                if !self.config.remote_cache_ttl.is_zero() {
                    claim.record = Some((Arc::clone(&self.pushed), (flow.source, destination), pushed));
                }
                return Ok(Ok((policy, Some(claim))));
            }
            Ok(Ok(Err(denial))) => {
                // The peer reserved nothing.
                claim.finished = true;
                return Ok(Err(denial));
            }
            Ok(Err(e)) => e,
            Err(_) => RemoteError::Unreachable {
                node: node.clone(),
                cause: format!("no answer within {:?}", self.config.m2m_timeout),
            },
        };
        if matches!(error, RemoteError::NotAPeer(_)) {
            claim.finished = true;
        }
        Ok(Err(unreachable_denial(dst_resource, &error)))
    }

    /// Whether a write of `source` to the peer's stream side `destination` may skip the
    /// M2M reservation; the destination's policy if so.
    ///
    /// Why this keeps the guarantee ("the peer records the provenance before any of its
    /// processes can read those bytes"): the last successful UpdateProvenance of `source`
    /// to this same side merged `{source} ∪ prov(source)` at version `version` into the
    /// peer's label; labels only grow, so the peer still holds all of it. The source is
    /// read-reserved here for the whole flow, so the bytes of this write derive from
    /// exactly `prov(source)` at `version`: whenever the peer's process reads them, its
    /// label already carries everything the full protocol would have merged (the
    /// reservation only orders "record, then read", and the record is already there). The
    /// decision itself is re-made locally as usual (the destination policy the peer gave
    /// with that reservation, through the compliance cache; the owners of remote sources
    /// through their own cache). What can make the peer's copy or that policy stale is
    /// covered by the key: a peer notice (policy change, deletion, restart — a restarted
    /// peer lost its labels and says so at start-up) bumps `remote_epoch`; a lost notice is
    /// bounded by `remote_cache_ttl`. Measured by the bench `cross_node_stream_write`.
    fn shortcut(&self, source: LabelId, destination: LabelId, version: u64, remote_epoch: u64) -> Option<Policy> {
        let pushed = self.pushed.lock();
        let p = pushed.get(&(source, destination))?;
        (p.version == version && p.remote_epoch == remote_epoch && self.fresh(p.at)).then_some(p.policy)
    }

    /// Grants `flow` and records it; `answer` gets the grant first (see
    /// [`Engine::try_request_answering`]).
    fn grant(
        &self,
        state: &mut State,
        grants: &mut FastMap<GrantId, Grant>,
        flow: Flow,
        reservation: Reservation<LabelId>,
        remote: Option<RemoteClaim>,
        answer: impl FnOnce(&Decision),
    ) -> Result<Decision, EngineError> {
        if state.enrollments().process(flow.process).is_none() {
            // Exited while we were deciding: its grants were already ended.
            return Err(EngineError::UnknownProcess { process: flow.process });
        }
        let id = GrantId(self.next_grant.fetch_add(1, Ordering::Relaxed));
        let now = Instant::now();
        let grant = Grant { flow, deadline: now + self.config.lease, _reservation: reservation, remote };
        grants.insert(id, grant);
        let decision = Decision::Grant(id);
        answer(&decision);
        let appending = self.config.breakdown.start();
        audit_flow(state, &flow, AuditKind::Request, wall_us(now), id, 0, FlowResult::Granted);
        self.config.breakdown.stop(Stage::AuditAppend, appending);
        Ok(decision)
    }

    /// Ends a grant: if the I/O succeeded and moved bytes, the destination's provenance
    /// takes the source's (and the lineage edge is recorded); then the reservations are
    /// released. The grant must belong to `process` (else it is left untouched). For a
    /// destination on a peer, the peer is told in the background (UpdateProvenance); its
    /// readers wait on its reservation until then, so the answer to the process need not.
    pub fn report(&self, process: ProcessId, grant: GrantId, outcome: IoOutcome) -> Result<(), EngineError> {
        let performed = outcome.ok && outcome.bytes > 0;
        let mut g = {
            let mut core = self.core.write();
            let Core { state, grants, .. } = &mut *core;
            let g = match grants.get(&grant) {
                None => return Err(EngineError::UnknownGrant { grant }),
                Some(g) if g.flow.process != process => {
                    return Err(EngineError::WrongProcess { grant, process });
                }
                Some(_) => grants.remove(&grant).ok_or(EngineError::UnknownGrant { grant })?,
            };
            let time_us = now_us();
            let breakdown = &self.config.breakdown;
            if performed && let Destination::Label(destination) = g.flow.destination {
                let merging = breakdown.start();
                state.apply(Change::Flow { source: g.flow.source, destination, bytes: outcome.bytes, time_us })?;
                breakdown.stop(Stage::ProvenanceUpdate, merging);
            }
            let result = if outcome.ok { FlowResult::Ok } else { FlowResult::Failed };
            let appending = breakdown.start();
            audit_flow(state, &g.flow, AuditKind::Report, time_us, grant, outcome.bytes, result);
            breakdown.stop(Stage::AuditAppend, appending);
            g
        };
        // The reservations are released (dropping `g`) only now that the report is applied.
        if let Some(claim) = g.remote.take() {
            claim.finish(performed, outcome.bytes);
        }
        drop(g);
        Ok(())
    }

    /// A grant never reported: the I/O may have happened, so provenance is merged
    /// conservatively (here and, for a destination on a peer, there); then its
    /// reservations are released.
    fn end_unreported(&self, id: GrantId, mut grant: Grant) {
        {
            let mut core = self.core.write();
            let state = &mut core.state;
            let time_us = now_us();
            if let Destination::Label(destination) = grant.flow.destination
                && let Err(e) = state.apply(Change::Flow { source: grant.flow.source, destination, bytes: 0, time_us })
            {
                tracing::error!(error = %e, grant = %id, "merge of an expired grant failed");
            }
            let mut e = grant.flow.entry(AuditKind::Expired, time_us, AuditOutcome::Ok);
            e.grant = Some(id);
            audit(state, e);
        }
        if let Some(claim) = grant.remote.take() {
            claim.finish(true, 0);
        }
        drop(grant);
    }

    /// Ends every grant whose lease has passed; returns how many.
    pub fn expire_leases(&self) -> usize {
        resync_clock();
        let now = Instant::now();
        let expired: Vec<(GrantId, Grant)> = {
            let grants = &mut self.core.write().grants;
            let ids: Vec<GrantId> = grants.iter().filter(|(_, g)| g.deadline <= now).map(|(k, _)| *k).collect();
            ids.into_iter().filter_map(|k| grants.remove(&k).map(|g| (k, g))).collect()
        };
        let mut n = expired.len();
        for (id, grant) in expired {
            self.end_unreported(id, grant);
        }
        let holds: Vec<((NodeId, u64), RemoteHold)> = {
            let mut holds = self.remote_holds.lock();
            let keys: Vec<(NodeId, u64)> =
                holds.iter().filter(|(_, h)| h.deadline <= now).map(|(k, _)| k.clone()).collect();
            keys.into_iter().filter_map(|k| holds.remove(&k).map(|h| (k, h))).collect()
        };
        n += holds.len();
        for ((node, _), hold) in holds {
            tracing::warn!(%node, "a peer's stream reservation expired; its write is assumed performed");
            self.end_hold(&node, hold, true, 0, AuditKind::Expired);
        }
        n
    }

    // ---- peers: the questions of other nodes (M2M server side) -----------------------

    fn check_peer(&self, node: &NodeId) -> Result<(), EngineError> {
        if self.config.topology.is_peer(node) { Ok(()) } else { Err(EngineError::UnknownPeer { node: node.clone() }) }
    }

    /// ReserveDestination from `caller`: reserves this node's side of a stream the
    /// caller's process writes to, for writing, until [`Engine::remote_update`],
    /// [`Engine::remote_release`] or the remote lease. `Ok(Err(denial))` when it stayed
    /// busy; `Ok(Ok(policy))` with the side's effective policy when reserved.
    pub async fn remote_reserve(
        &self,
        caller: &NodeId,
        token: u64,
        side: Resource,
        writer: LocalizedResource,
        provenance: Vec<LocalizedResource>,
    ) -> Result<Result<Policy, Denial>, EngineError> {
        self.check_peer(caller)?;
        let Resource::Stream(s) = &side else {
            return Err(EngineError::NotOwned { resource: side.to_string(), problem: "not a stream" });
        };
        if self.config.topology.owner(s.local.ip()) != Owner::Local {
            return Err(EngineError::NotOwned {
                resource: side.to_string(),
                problem: "its local end is not this node's",
            });
        }
        if self.config.topology.owner(s.peer.ip()) != Owner::Peer(caller.clone()) {
            return Err(EngineError::NotOwned {
                resource: side.to_string(),
                problem: "its peer end is not an address of the asking node",
            });
        }
        if writer.node != *caller {
            return Err(EngineError::NotOwned {
                resource: writer.to_string(),
                problem: "the writer is not the asking node's",
            });
        }
        let key = (caller.clone(), token);
        if self.remote_holds.lock().contains_key(&key) {
            return Err(EngineError::DuplicateToken { node: caller.clone(), token });
        }
        let (destination, writer, provenance) = {
            let mut core = self.core.write();
            let state = &mut core.state;
            let destination = state.intern(&self.local(&side))?;
            let writer = state.intern(&writer)?;
            let provenance = provenance.iter().map(|r| state.intern(r)).collect::<Result<Vec<_>, _>>()?;
            (destination, writer, provenance)
        };
        let reservation =
            match self.reservations.acquire([Claim::write(destination)], self.config.reservation_timeout).await {
                Ok(r) => r,
                Err(Busy { .. }) => {
                    return Ok(Err(Denial {
                        policy: PolicyKind::Busy,
                        resource: self.local(&side),
                        reason: format!(
                            "{} stayed reserved by other flows for {:?}",
                            self.local(&side),
                            self.config.reservation_timeout
                        ),
                    }));
                }
            };
        let policy = {
            let core = self.core.read();
            let label = core.state.label(destination).ok_or(UnknownLabel(destination))?;
            self.rules.policy(&core.state, label)
        };
        let hold = RemoteHold {
            destination,
            writer,
            provenance,
            deadline: Instant::now() + self.config.remote_lease,
            _reservation: reservation,
        };
        let mut holds = self.remote_holds.lock();
        if holds.contains_key(&key) {
            return Err(EngineError::DuplicateToken { node: caller.clone(), token });
        }
        holds.insert(key, hold);
        Ok(Ok(policy))
    }

    /// ReleaseDestination: the caller's write was denied or abandoned.
    pub fn remote_release(&self, caller: &NodeId, token: u64) -> Result<(), EngineError> {
        self.check_peer(caller)?;
        let hold = self
            .remote_holds
            .lock()
            .remove(&(caller.clone(), token))
            .ok_or(EngineError::UnknownReservation { node: caller.clone(), token })?;
        drop(hold);
        Ok(())
    }

    /// UpdateProvenance: the caller's write happened (`performed`: merge the provenance
    /// sent with the reservation) or not; then the reservation is released.
    pub fn remote_update(&self, caller: &NodeId, token: u64, performed: bool, bytes: u64) -> Result<(), EngineError> {
        self.check_peer(caller)?;
        let hold = self
            .remote_holds
            .lock()
            .remove(&(caller.clone(), token))
            .ok_or(EngineError::UnknownReservation { node: caller.clone(), token })?;
        self.end_hold(caller, hold, performed, bytes, AuditKind::RemoteFlow);
        Ok(())
    }

    fn end_hold(&self, caller: &NodeId, hold: RemoteHold, performed: bool, bytes: u64, kind: AuditKind) {
        {
            let mut core = self.core.write();
            let state = &mut core.state;
            let time_us = now_us();
            if performed {
                let change = Change::Import {
                    writer: hold.writer,
                    provenance: hold.provenance.clone(),
                    destination: hold.destination,
                    bytes,
                    time_us,
                };
                if let Err(e) = state.apply(change) {
                    tracing::error!(error = %e, "merge of a peer's provenance failed");
                }
            }
            let mut e = AuditEntry::new(kind, time_us, if performed { AuditOutcome::Ok } else { AuditOutcome::Failed });
            e.source = Some(hold.writer);
            e.destination = Some(hold.destination);
            e.bytes = bytes;
            e.peer = Some(caller.clone());
            audit(state, e);
        }
        drop(hold);
    }

    /// CheckSources from `caller`: may these resources of this node flow to `target`?
    /// Decided with this node's policies and consent (waiting for the operator's decision
    /// up to the consent timeout). `Ok(None)` is a grant. Audited.
    pub async fn check_sources(
        &self,
        caller: &NodeId,
        sources: Vec<LocalizedResource>,
        target: RemoteTarget,
    ) -> Result<Option<Denial>, EngineError> {
        self.check_peer(caller)?;
        if let Some(r) = sources.iter().find(|r| r.node != *self.node()) {
            return Err(EngineError::NotOwned { resource: r.to_string(), problem: "not a resource of this node" });
        }
        if sources.is_empty() {
            return Err(EngineError::NotOwned { resource: String::new(), problem: "no sources to check" });
        }
        enum Owned {
            Answer(Option<Denial>),
            Wait(crate::consent::ConsentWait, Duration),
        }
        let deadline = Instant::now() + self.config.consent_timeout;
        loop {
            let (wait, remaining) = {
                let mut core = self.core.write();
                let state = &mut core.state;
                let labels = sources.iter().map(|r| state.intern(r)).collect::<Result<Vec<_>, _>>()?;
                let destination = state.intern(&target.resource)?;
                let t = Target {
                    name: match target.external_peer {
                        Some(peer) => format!("external peer {peer}"),
                        None => target.resource.to_string(),
                    },
                    node: target.external_peer.is_none().then(|| target.resource.node.clone()),
                    integrity: target.policy.integrity,
                    confidentiality: target.policy.confidentiality,
                    consent_key: destination,
                };
                let step = match evaluate_owned(state, &self.rules, &labels, &t)? {
                    Verdict::Grant => Owned::Answer(None),
                    Verdict::Deny(denial) => Owned::Answer(Some(denial)),
                    Verdict::AskConsent { source, destination } => {
                        match self.await_consent(state, source, destination, deadline)? {
                            Ok((wait, remaining)) => Owned::Wait(wait, remaining),
                            Err(denial) => Owned::Answer(Some(denial)),
                        }
                    }
                };
                match step {
                    Owned::Wait(wait, remaining) => (wait, remaining),
                    Owned::Answer(answer) => {
                        let result = match &answer {
                            None => AuditOutcome::Granted,
                            Some(d) => AuditOutcome::Denied(d.clone()),
                        };
                        let mut e = AuditEntry::new(AuditKind::RemoteCheck, now_us(), result);
                        e.source = labels.first().copied();
                        e.destination = Some(destination);
                        e.external_peer = target.external_peer;
                        e.peer = Some(caller.clone());
                        audit(state, e);
                        return Ok(answer);
                    }
                }
            };
            wait.wait(remaining).await;
        }
    }

    /// BroadcastDeletion from `caller`: it deleted one of its resources. A tombstone is
    /// kept here, so every later flow of data derived from it is denied locally.
    pub fn remote_deleted(&self, caller: &NodeId, resource: &LocalizedResource) -> Result<(), EngineError> {
        self.check_peer(caller)?;
        if resource.node != *caller {
            return Err(EngineError::NotOwned {
                resource: resource.to_string(),
                problem: "a node broadcasts the deletion of its own resources only",
            });
        }
        if matches!(resource.resource, Resource::Executable(_)) {
            return Err(EngineError::NotAFlowEndpoint { resource: resource.resource.clone() });
        }
        {
            let mut core = self.core.write();
            let state = &mut core.state;
            let label = state.intern(resource)?;
            if !state.label(label).is_some_and(|l| l.policy.deleted) {
                state.apply(Change::Delete { label })?;
                let mut e = AuditEntry::new(AuditKind::RemoteDelete, now_us(), AuditOutcome::Ok);
                e.resource = Some(label);
                e.peer = Some(caller.clone());
                audit(state, e);
            }
        }
        self.remote_epoch.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// PolicyChanged from `caller`: forget every reused decision of peers.
    pub fn peer_changed(&self, caller: &NodeId) -> Result<(), EngineError> {
        self.check_peer(caller)?;
        self.remote_epoch.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Tells the peers that something this node decides changed (policy, consent).
    /// Resolves when each peer answered or its deadline passed.
    pub fn announce_policy_change(&self) -> BoxFuture<()> {
        self.federation.policy_changed()
    }

    /// Tells the peers that this node deleted `r`.
    pub fn announce_deletion(&self, r: &Resource) -> BoxFuture<()> {
        self.federation.broadcast_deletion(self.local(r))
    }

    // ---- operators ------------------------------------------------------------------

    /// The effective policy of `r` on this node (defaults if it has none; a process's
    /// levels inherited from its executable or the node default). Changes nothing.
    pub fn policy(&self, r: &Resource) -> Policy {
        let core = self.core.read();
        let lr = self.local(r);
        match core.state.id(&lr).and_then(|id| core.state.label(id)) {
            Some(label) => self.rules.policy(&core.state, label),
            None => self.rules.default_policy(&lr),
        }
    }

    /// Sets the given policy fields of `r` (a file, stream, process or executable of this
    /// node) and returns its effective policy. A deleted resource is frozen.
    pub fn set_policy(
        &self,
        r: &Resource,
        confidentiality: Option<Confidentiality>,
        integrity: Option<IntegrityLevel>,
    ) -> Result<Policy, EngineError> {
        let mut core = self.core.write();
        let state = &mut core.state;
        let label = state.intern(&self.local(r))?;
        state.apply(Change::SetPolicy { label, confidentiality, integrity })?;
        self.policy_audit(state, label, AuditKind::PolicyChange)
    }

    fn policy_audit(&self, state: &mut State, label: LabelId, kind: AuditKind) -> Result<Policy, EngineError> {
        let policy = self.rules.policy(state, state.label(label).ok_or(UnknownLabel(label))?);
        let mut e = AuditEntry::new(kind, now_us(), AuditOutcome::Ok);
        e.resource = Some(label);
        e.policy = Some(policy);
        audit(state, e);
        Ok(policy)
    }

    /// Marks `r` deleted: final; nothing derived from it flows anywhere any more, nothing
    /// flows into it. Deleting again is a no-op.
    pub fn delete(&self, r: &Resource) -> Result<(), EngineError> {
        if matches!(r, Resource::Executable(_)) {
            return Err(EngineError::NotAFlowEndpoint { resource: r.clone() });
        }
        let mut core = self.core.write();
        let state = &mut core.state;
        let label = state.intern(&self.local(r))?;
        if state.label(label).is_some_and(|l| l.policy.deleted) {
            return Ok(());
        }
        state.apply(Change::Delete { label })?;
        self.policy_audit(state, label, AuditKind::Delete)?;
        Ok(())
    }

    /// Turns consent enforcement on `r` on or off.
    pub fn set_consent_enforced(&self, r: &Resource, enforce: bool) -> Result<(), EngineError> {
        if matches!(r, Resource::Executable(_)) {
            return Err(EngineError::NotAFlowEndpoint { resource: r.clone() });
        }
        let mut core = self.core.write();
        let state = &mut core.state;
        let label = state.intern(&self.local(r))?;
        state.apply(Change::SetConsentEnforced { label, enforce })?;
        self.policy_audit(state, label, AuditKind::ConsentEnforced)?;
        Ok(())
    }

    /// Flows waiting for a consent decision.
    pub fn pending_consents(&self) -> Vec<ConsentRequest> {
        self.consent.pending()
    }

    /// Remembers the owner's decision for data of `source` going to `destination`
    /// (overriding an earlier one) and wakes the flows waiting for it.
    pub fn decide_consent(&self, source: &LocalizedResource, destination: ConsentDestination, grant: bool) {
        {
            let mut core = self.core.write();
            let state = &mut core.state;
            let result = (|| -> Result<(), StateError> {
                let source_label = state.intern(source)?;
                let mut e = AuditEntry::new(
                    AuditKind::ConsentDecision,
                    now_us(),
                    if grant { AuditOutcome::Allowed } else { AuditOutcome::Refused },
                );
                e.source = Some(source_label);
                let key = match &destination {
                    ConsentDestination::Resource(r) => {
                        let d = state.intern(r)?;
                        e.destination = Some(d);
                        ConsentKey::Resource(d)
                    }
                    ConsentDestination::Node(n) => {
                        e.consent_node = Some(n.clone());
                        ConsentKey::Node(n.clone())
                    }
                };
                state.apply(Change::ConsentDecision { source: source_label, destination: key, grant })?;
                audit(state, e);
                Ok(())
            })();
            if let Err(e) = result {
                tracing::error!(error = %e, "recording a consent decision failed");
                return;
            }
        }
        self.consent.decided(source, &destination);
    }

    /// Everything `r` (on this node) derives from, sorted. Empty for an unknown resource.
    pub fn provenance(&self, r: &Resource) -> Vec<LocalizedResource> {
        let core = self.core.read();
        let state = &core.state;
        let Some(label) = state.id(&self.local(r)).and_then(|id| state.label(id)) else {
            return Vec::new();
        };
        let mut out: Vec<LocalizedResource> =
            label.provenance.labels().iter().filter_map(|id| state.resource(*id).cloned()).collect();
        out.sort();
        out
    }

    /// Every direct flow edge reachable backwards from `r`, sorted.
    pub fn lineage(&self, r: &Resource) -> Vec<LineageEdge> {
        let core = self.core.read();
        let state = &core.state;
        let Some(id) = state.id(&self.local(r)) else {
            return Vec::new();
        };
        let mut out: Vec<LineageEdge> = state
            .lineage()
            .reachable(id)
            .into_iter()
            .filter_map(|(s, d, stats)| {
                Some(LineageEdge {
                    source: state.resource(s)?.clone(),
                    destination: state.resource(d)?.clone(),
                    first_us: stats.first_us,
                    last_us: stats.last_us,
                    flows: stats.flows,
                    bytes: stats.bytes,
                })
            })
            .collect();
        out.sort();
        out
    }

    /// Audit records matching `query`, ascending by sequence number. Fails only if
    /// records that left memory cannot be read back from the spill file.
    ///
    /// Records that left memory are read from the spill file without the state lock,
    /// so that a deep query does not stall every flow: written records never change,
    /// and labels are never removed, so the answer is the same.
    pub fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
        let (mut records, scan) = {
            let core = self.core.read();
            let state = &core.state;
            let resource = query.resource.as_ref().map(|r| state.id(r));
            state.audit().query_memory(query, resource)
        };
        let found = scan.map(|s| s.run()).transpose()?;
        let core = self.core.read();
        let state = &core.state;
        if let Some(found) = found {
            records.extend(state.audit().resolve(found));
        }
        records.reverse();
        let name = |id: Option<LabelId>| id.and_then(|id| state.resource(id).cloned());
        Ok(records
            .into_iter()
            .map(|(seq, e)| AuditRecord {
                seq,
                time_us: e.time_us,
                node: self.node().clone(),
                kind: e.kind,
                process: e.process,
                fd: e.fd,
                resource: name(e.resource),
                source: name(e.source),
                destination: name(e.destination),
                external_peer: e.external_peer,
                consent_node: e.consent_node.clone(),
                peer: e.peer.clone(),
                direction: e.direction,
                bytes: e.bytes,
                grant: e.grant,
                policy: e.policy,
                exe: e.exe.clone(),
                result: e.result.clone(),
            })
            .collect())
    }

    /// Counters.
    pub fn status(&self) -> EngineStatus {
        let core = self.core.read();
        let active_grants = core.grants.len();
        let state = &core.state;
        EngineStatus {
            processes: state.enrollments().processes(),
            enrolled_fds: state.enrollments().enrolled(),
            active_grants,
            labelled_resources: state.labels(),
            audit_records: state.audit().len(),
            audit_records_on_disk: state.audit().spilled(),
            granted: state.audit().granted(),
            denied: state.audit().denied(),
            pending_consents: self.consent.len(),
            remote_reservations: self.remote_holds.lock().len(),
        }
    }

    /// Whether no reservation is held or awaited (for tests and diagnostics).
    pub fn reservations_idle(&self) -> bool {
        self.reservations.is_empty()
    }
}

/// After an evaluation that did not grant: wait for consent, ask the owners of remote
/// sources, or deny.
#[derive(Debug)]
enum Step {
    Wait(crate::consent::ConsentWait, Duration),
    AskOwners(BTreeMap<NodeId, Vec<LocalizedResource>>, RemoteTarget, Stamp),
    Deny(Denial),
}

/// The denial of a flow that needed `resource`'s node, which could not be asked.
fn unreachable_denial(resource: LocalizedResource, e: &RemoteError) -> Denial {
    Denial { policy: PolicyKind::Unreachable, resource, reason: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::DecisionFilter;
    use std::sync::Arc;

    fn n1() -> NodeId {
        NodeId::new("n1").unwrap()
    }

    fn config() -> EngineConfig {
        let mut c = EngineConfig::new(Topology::new(n1(), vec!["10.0.0.1".parse().unwrap()]));
        c.reservation_timeout = Duration::from_millis(200);
        c.consent_timeout = Duration::from_millis(300);
        c
    }

    fn engine() -> Arc<Engine> {
        Arc::new(Engine::new(config()))
    }

    fn file(p: &str) -> Resource {
        Resource::file(p).unwrap()
    }

    fn at(r: &Resource) -> LocalizedResource {
        r.clone().at(&n1())
    }

    fn attach(e: &Engine, pid: u32) -> ProcessId {
        let id = ProcessId { pid, starttime: 7 };
        e.attach_process(ProcessInfo { id, exe: format!("/bin/app{pid}").into(), uid: 1000 });
        id
    }

    /// Fails the test instead of hanging.
    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(20), f).await.expect("timed out")
    }

    async fn ask(e: &Engine, p: ProcessId, fd: i32, dir: Direction) -> Decision {
        within(e.request(p, Fd(fd), dir)).await.unwrap()
    }

    fn grant_of(d: &Decision) -> GrantId {
        match d {
            Decision::Grant(g) => *g,
            Decision::Denied(d) => panic!("denied: {d}"),
        }
    }

    fn denial_of(d: Decision) -> Denial {
        match d {
            Decision::Denied(d) => d,
            Decision::Grant(g) => panic!("granted {g}"),
        }
    }

    /// A granted I/O of `bytes`, reported.
    async fn io(e: &Engine, p: ProcessId, fd: i32, dir: Direction, bytes: u64) {
        let g = grant_of(&ask(e, p, fd, dir).await);
        e.report(p, g, IoOutcome { ok: true, bytes }).unwrap();
    }

    #[tokio::test]
    async fn try_request_decides_at_once_or_takes_nothing() {
        let e = engine();
        let (p, q) = (attach(&e, 1), attach(&e, 2));
        e.enroll(p, Fd(3), file("/a")).unwrap();
        e.enroll(q, Fd(3), file("/a")).unwrap();
        let g = grant_of(&e.try_request(p, Fd(3), Direction::Write).unwrap().expect("decided at once"));
        let recorded = e.audit(&AuditQuery::default()).unwrap().len();
        assert!(e.try_request(q, Fd(3), Direction::Read).unwrap().is_none(), "p's write holds /a");
        assert_eq!(e.audit(&AuditQuery::default()).unwrap().len(), recorded, "a refused try records nothing");
        assert_eq!(e.status().active_grants, 1);
        let waiting = {
            let e = Arc::clone(&e);
            tokio::spawn(async move { e.request(q, Fd(3), Direction::Read).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        e.report(p, g, IoOutcome { ok: true, bytes: 4 }).unwrap();
        let read = grant_of(&within(waiting).await.unwrap().unwrap());
        e.report(q, read, IoOutcome { ok: true, bytes: 4 }).unwrap();
        assert!(e.provenance(&Resource::Process(q)).contains(&at(&Resource::Process(p))));
        assert!(e.reservations_idle());
    }

    #[test]
    fn the_engine_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Engine>();
    }

    #[tokio::test]
    async fn enroll_unenroll_and_fd_reuse() {
        let e = engine();
        let p = attach(&e, 1);
        attach(&e, 1); // idempotent
        e.enroll(p, Fd(3), file("/a")).unwrap();
        e.enroll(p, Fd(3), file("/b")).unwrap(); // reused fd
        assert_eq!(e.status().enrolled_fds, 1);
        io(&e, p, 3, Direction::Read, 1).await;
        assert_eq!(e.provenance(&Resource::Process(p)), vec![at(&file("/b"))]);
        let kinds: Vec<AuditKind> = e.audit(&AuditQuery::default()).unwrap().iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [
                AuditKind::Attach,
                AuditKind::Enroll,
                AuditKind::Unenroll,
                AuditKind::Enroll,
                AuditKind::Request,
                AuditKind::Report
            ]
        );
        e.unenroll(p, Fd(3)).unwrap();
        assert_eq!(e.unenroll(p, Fd(3)), Err(EngineError::NotEnrolled { process: p, fd: Fd(3) }));
        assert_eq!(e.request(p, Fd(3), Direction::Read).await, Err(EngineError::NotEnrolled { process: p, fd: Fd(3) }));
        let stranger = ProcessId { pid: 99, starttime: 1 };
        assert_eq!(e.enroll(stranger, Fd(3), file("/a")), Err(EngineError::UnknownProcess { process: stranger }));
        let exe = Resource::Executable("/bin/x".into());
        assert!(matches!(e.enroll(p, Fd(4), exe), Err(EngineError::NotAFlowEndpoint { .. })));
        assert!(matches!(e.enroll(p, Fd(4), Resource::Process(p)), Err(EngineError::NotAFlowEndpoint { .. })));
    }

    #[tokio::test]
    async fn provenance_follows_read_then_write() {
        let e = engine();
        let p1 = attach(&e, 1);
        e.enroll(p1, Fd(3), file("/file1")).unwrap();
        e.enroll(p1, Fd(4), file("/file2")).unwrap();
        io(&e, p1, 3, Direction::Read, 10).await;
        io(&e, p1, 4, Direction::Write, 4).await;
        io(&e, p1, 4, Direction::Write, 6).await;
        let mut want = vec![at(&file("/file1")), at(&Resource::Process(p1))];
        want.sort();
        assert_eq!(e.provenance(&file("/file2")), want);
        assert!(e.provenance(&file("/unknown")).is_empty());
        let lineage = e.lineage(&file("/file2"));
        assert_eq!(lineage.len(), 2);
        let last = lineage.iter().find(|l| l.destination == at(&file("/file2"))).unwrap();
        assert_eq!((last.flows, last.bytes), (2, 10));
        assert!(last.first_us <= last.last_us);
        assert!(e.reservations_idle());
    }

    #[tokio::test]
    async fn failed_and_empty_reports_do_not_merge() {
        let e = engine();
        let p = attach(&e, 1);
        e.enroll(p, Fd(3), file("/a")).unwrap();
        let g = grant_of(&ask(&e, p, 3, Direction::Read).await);
        e.report(p, g, IoOutcome { ok: false, bytes: 0 }).unwrap();
        let g = grant_of(&ask(&e, p, 3, Direction::Read).await);
        e.report(p, g, IoOutcome { ok: true, bytes: 0 }).unwrap();
        assert!(e.provenance(&Resource::Process(p)).is_empty());
        assert!(e.lineage(&Resource::Process(p)).is_empty());
        let reports = e.audit(&AuditQuery::default()).unwrap();
        let results: Vec<&AuditOutcome> =
            reports.iter().filter(|r| r.kind == AuditKind::Report).map(|r| &r.result).collect();
        assert_eq!(results, [&AuditOutcome::Failed, &AuditOutcome::Ok]);
    }

    #[tokio::test]
    async fn a_report_by_another_process_is_rejected_and_the_grant_kept() {
        let e = engine();
        let (p1, p2) = (attach(&e, 1), attach(&e, 2));
        e.enroll(p1, Fd(3), file("/a")).unwrap();
        let g = grant_of(&ask(&e, p1, 3, Direction::Read).await);
        let ok = IoOutcome { ok: true, bytes: 1 };
        assert_eq!(e.report(p2, g, ok), Err(EngineError::WrongProcess { grant: g, process: p2 }));
        assert_eq!(e.status().active_grants, 1);
        e.report(p1, g, ok).unwrap();
        assert_eq!(e.report(p1, g, ok), Err(EngineError::UnknownGrant { grant: g }));
        assert_eq!(e.report(p1, GrantId(0), ok), Err(EngineError::UnknownGrant { grant: GrantId(0) }));
        assert!(e.reservations_idle());
    }

    #[tokio::test]
    async fn grants_and_denials_are_audited() {
        let e = engine();
        let p = attach(&e, 12);
        e.enroll(p, Fd(3), file("/in")).unwrap();
        e.enroll(p, Fd(4), file("/out")).unwrap();
        e.set_policy(&file("/out"), None, Some(IntegrityLevel(1))).unwrap();
        io(&e, p, 3, Direction::Read, 5).await;
        let denial = denial_of(ask(&e, p, 4, Direction::Write).await);
        assert_eq!(denial.policy, PolicyKind::Integrity);
        assert_eq!(denial.resource, at(&Resource::Process(p)));
        assert_eq!(
            denial.reason,
            "integrity 0 of process://12.7@n1 (/bin/app12) is below 1 required by file:///out@n1"
        );

        let all = e.audit(&AuditQuery::default()).unwrap();
        assert!(all.windows(2).all(|w| w[0].seq + 1 == w[1].seq) && all[0].seq == 1);
        let read = all.iter().find(|r| r.kind == AuditKind::Request && r.direction == Some(Direction::Read)).unwrap();
        assert_eq!(read.source, Some(at(&file("/in"))));
        assert_eq!(read.destination, Some(at(&Resource::Process(p))));
        assert_eq!(read.result, AuditOutcome::Granted);
        assert!(read.grant.is_some() && read.node == n1() && read.fd == Some(Fd(3)));
        let report = all.iter().find(|r| r.kind == AuditKind::Report).unwrap();
        assert_eq!((report.bytes, report.grant), (5, read.grant));

        let q = AuditQuery { decision: Some(DecisionFilter::Denied), ..Default::default() };
        let denied = e.audit(&q).unwrap();
        assert_eq!(denied.len(), 1);
        assert_eq!(denied[0].result, AuditOutcome::Denied(denial));
        assert!(denied[0].to_text().contains("denied (integrity on process://12.7@n1"), "{}", denied[0].to_text());
        let q = AuditQuery { resource: Some(at(&file("/in"))), ..Default::default() };
        let kinds: Vec<AuditKind> = e.audit(&q).unwrap().iter().map(|r| r.kind).collect();
        assert_eq!(kinds, [AuditKind::Enroll, AuditKind::Request, AuditKind::Report]);
        let q = AuditQuery { limit: 2, ..Default::default() };
        assert_eq!(
            e.audit(&q).unwrap().iter().map(|r| r.seq).collect::<Vec<_>>(),
            [all.len() as u64 - 1, all.len() as u64]
        );
        assert!(e.reservations_idle(), "a denial releases its reservations");
    }

    #[tokio::test]
    async fn status_counts() {
        let e = engine();
        let p = attach(&e, 1);
        e.enroll(p, Fd(3), file("/a")).unwrap();
        e.enroll(p, Fd(4), file("/b")).unwrap();
        let g = grant_of(&ask(&e, p, 3, Direction::Read).await);
        e.delete(&file("/b")).unwrap();
        denial_of(ask(&e, p, 4, Direction::Write).await);
        let s = e.status();
        assert_eq!((s.processes, s.enrolled_fds, s.active_grants, s.granted, s.denied), (1, 2, 1, 1, 1));
        assert_eq!(s.labelled_resources, 4, "process, exe, /a, /b");
        assert_eq!(s.audit_records, e.audit(&AuditQuery::default()).unwrap().len());
        e.report(p, g, IoOutcome { ok: true, bytes: 1 }).unwrap();
        e.process_exited(p);
        let s = e.status();
        assert_eq!((s.processes, s.enrolled_fds, s.active_grants), (0, 0, 0));
    }

    #[tokio::test]
    async fn operator_policies() {
        let e = engine();
        let before = e.status().labelled_resources;
        assert_eq!(e.policy(&file("/x")), Policy::default());
        assert_eq!(e.status().labelled_resources, before, "policy() inserts nothing");
        let p = e.set_policy(&file("/x"), Some(Confidentiality::Secret), None).unwrap();
        assert_eq!((p.confidentiality, p.integrity), (Confidentiality::Secret, IntegrityLevel(0)));
        let p = e.set_policy(&file("/x"), None, Some(IntegrityLevel(4))).unwrap();
        assert_eq!((p.confidentiality, p.integrity), (Confidentiality::Secret, IntegrityLevel(4)));
        e.delete(&file("/x")).unwrap();
        e.delete(&file("/x")).unwrap();
        assert!(e.policy(&file("/x")).deleted);
        assert!(matches!(e.set_policy(&file("/x"), None, Some(IntegrityLevel(1))), Err(EngineError::Deleted { .. })));
        let exe = Resource::Executable("/usr/bin/server".into());
        assert_eq!(e.set_policy(&exe, None, Some(IntegrityLevel(2))).unwrap().integrity, IntegrityLevel(2));
        assert!(matches!(e.delete(&exe), Err(EngineError::NotAFlowEndpoint { .. })));
        let p = ProcessId { pid: 5, starttime: 5 };
        e.attach_process(ProcessInfo { id: p, exe: "/usr/bin/server".into(), uid: 0 });
        assert_eq!(e.policy(&Resource::Process(p)).integrity, IntegrityLevel(2), "inherited from exe");
        let kinds: Vec<AuditKind> = e.audit(&AuditQuery::default()).unwrap().iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [
                AuditKind::PolicyChange,
                AuditKind::PolicyChange,
                AuditKind::Delete,
                AuditKind::PolicyChange,
                AuditKind::Attach
            ]
        );
    }

    #[tokio::test]
    async fn a_policy_change_invalidates_cached_decisions() {
        let e = engine();
        let p = attach(&e, 1);
        e.enroll(p, Fd(3), file("/out")).unwrap();
        io(&e, p, 3, Direction::Write, 1).await;
        io(&e, p, 3, Direction::Write, 1).await; // cached
        e.set_policy(&file("/out"), None, Some(IntegrityLevel(1))).unwrap();
        assert_eq!(denial_of(ask(&e, p, 3, Direction::Write).await).policy, PolicyKind::Integrity);
        e.set_policy(&Resource::Executable("/bin/app1".into()), None, Some(IntegrityLevel(1))).unwrap();
        io(&e, p, 3, Direction::Write, 1).await;
    }

    #[tokio::test]
    async fn a_deleted_destination_denies_without_any_provenance() {
        let e = engine();
        let p = attach(&e, 1);
        e.enroll(p, Fd(3), file("/gone")).unwrap();
        e.delete(&file("/gone")).unwrap();
        let d = denial_of(ask(&e, p, 3, Direction::Write).await);
        assert_eq!((d.policy, d.resource), (PolicyKind::Deletion, at(&file("/gone"))));
        // And what was read from a deleted file can go nowhere.
        e.enroll(p, Fd(4), file("/other")).unwrap();
        let q = attach(&e, 2);
        e.enroll(q, Fd(3), file("/src")).unwrap();
        e.enroll(q, Fd(4), file("/dst")).unwrap();
        io(&e, q, 3, Direction::Read, 1).await;
        e.delete(&file("/src")).unwrap();
        let d = denial_of(ask(&e, q, 4, Direction::Write).await);
        assert_eq!((d.policy, d.resource), (PolicyKind::Deletion, at(&file("/src"))));
    }

    #[tokio::test]
    async fn streams_between_local_processes_carry_provenance() {
        let e = engine();
        let (writer, reader) = (attach(&e, 1), attach(&e, 2));
        let a: std::net::SocketAddr = "10.0.0.1:4000".parse().unwrap();
        let b: std::net::SocketAddr = "10.0.0.1:5000".parse().unwrap();
        e.enroll(writer, Fd(3), file("/data")).unwrap();
        e.enroll(writer, Fd(4), Resource::stream(a, b)).unwrap();
        e.enroll(reader, Fd(3), Resource::stream(b, a)).unwrap();
        io(&e, writer, 3, Direction::Read, 8).await;
        io(&e, writer, 4, Direction::Write, 8).await;
        assert!(e.provenance(&Resource::stream(a, b)).is_empty(), "the sender's view is not the destination");
        assert!(e.provenance(&Resource::stream(b, a)).contains(&at(&file("/data"))));
        io(&e, reader, 3, Direction::Read, 8).await;
        let prov = e.provenance(&Resource::Process(reader));
        assert!(prov.contains(&at(&file("/data"))) && prov.contains(&at(&Resource::Process(writer))));
    }

    #[tokio::test]
    async fn secret_data_never_goes_to_an_external_peer() {
        let e = engine();
        let p = attach(&e, 1);
        let stream = Resource::stream("10.0.0.1:4000".parse().unwrap(), "9.9.9.9:443".parse().unwrap());
        e.enroll(p, Fd(3), file("/secret")).unwrap();
        e.enroll(p, Fd(4), stream.clone()).unwrap();
        io(&e, p, 4, Direction::Write, 3).await; // nothing secret yet
        e.set_policy(&file("/secret"), Some(Confidentiality::Secret), None).unwrap();
        io(&e, p, 3, Direction::Read, 3).await; // a local process may read local secrets
        let d = denial_of(ask(&e, p, 4, Direction::Write).await);
        assert_eq!((d.policy, d.resource), (PolicyKind::Confidentiality, at(&file("/secret"))));
        let records = e.audit(&AuditQuery { decision: Some(DecisionFilter::Denied), ..Default::default() }).unwrap();
        assert_eq!(records[0].external_peer, Some("9.9.9.9:443".parse().unwrap()));
        assert_eq!(records[0].destination, Some(at(&stream)));
        assert!(e.reservations_idle());
    }

    #[tokio::test]
    async fn a_busy_resource_denies_after_the_timeout() {
        let e = engine();
        let (p1, p2) = (attach(&e, 1), attach(&e, 2));
        e.enroll(p1, Fd(3), file("/shared")).unwrap();
        e.enroll(p2, Fd(3), file("/shared")).unwrap();
        let g = grant_of(&ask(&e, p1, 3, Direction::Write).await);
        let d = denial_of(ask(&e, p2, 3, Direction::Read).await);
        assert_eq!((d.policy, d.resource), (PolicyKind::Busy, at(&file("/shared"))));
        e.report(p1, g, IoOutcome { ok: true, bytes: 1 }).unwrap();
        io(&e, p2, 3, Direction::Read, 1).await;
        assert!(e.reservations_idle());
    }

    #[tokio::test]
    async fn leases_expire_and_release() {
        let mut c = config();
        c.lease = Duration::from_millis(500);
        let e = Arc::new(Engine::new(c));
        let p = attach(&e, 1);
        e.enroll(p, Fd(3), file("/a")).unwrap();
        let g = grant_of(&ask(&e, p, 3, Direction::Read).await);
        assert_eq!(e.expire_leases(), 0);
        let expired = within(async {
            loop {
                match e.expire_leases() {
                    0 => tokio::time::sleep(Duration::from_millis(10)).await,
                    n => return n,
                }
            }
        })
        .await;
        assert_eq!(expired, 1);
        assert!(e.reservations_idle());
        assert_eq!(e.provenance(&Resource::Process(p)), vec![at(&file("/a"))], "assumed performed");
        assert_eq!(e.report(p, g, IoOutcome { ok: true, bytes: 1 }), Err(EngineError::UnknownGrant { grant: g }));
        assert!(
            e.audit(&AuditQuery::default()).unwrap().iter().any(|r| r.kind == AuditKind::Expired && r.grant == Some(g))
        );
    }

    #[tokio::test]
    async fn process_exit_ends_grants_and_enrollments() {
        let e = engine();
        let p = attach(&e, 1);
        e.enroll(p, Fd(3), file("/a")).unwrap();
        e.enroll(p, Fd(4), file("/b")).unwrap();
        grant_of(&ask(&e, p, 3, Direction::Read).await);
        e.process_exited(p);
        assert!(e.reservations_idle());
        assert_eq!(e.status().enrolled_fds, 0);
        assert_eq!(e.request(p, Fd(3), Direction::Read).await, Err(EngineError::NotEnrolled { process: p, fd: Fd(3) }));
        let kinds: Vec<AuditKind> =
            e.audit(&AuditQuery { after: 4, ..Default::default() }).unwrap().iter().map(|r| r.kind).collect();
        assert_eq!(kinds, [AuditKind::Expired, AuditKind::Unenroll, AuditKind::Unenroll, AuditKind::Exit]);
        // The label keeps the executable: a reader of what it wrote sees it.
        assert!(e.policy(&Resource::Process(p)) == Policy::default());
        e.process_exited(p); // idempotent
    }

    #[tokio::test]
    async fn a_cancelled_request_leaks_nothing() {
        let e = engine();
        let (p1, p2) = (attach(&e, 1), attach(&e, 2));
        e.enroll(p1, Fd(3), file("/a")).unwrap();
        e.enroll(p2, Fd(3), file("/a")).unwrap();
        let g = grant_of(&ask(&e, p1, 3, Direction::Write).await);
        let pending = e.request(p2, Fd(3), Direction::Write);
        assert!(tokio::time::timeout(Duration::from_millis(10), pending).await.is_err());
        e.report(p1, g, IoOutcome { ok: true, bytes: 1 }).unwrap();
        assert!(e.reservations_idle());
    }

    fn consent_engine() -> (Arc<Engine>, ProcessId) {
        let e = engine();
        let p = attach(&e, 1);
        e.enroll(p, Fd(3), file("/owned")).unwrap();
        e.set_consent_enforced(&file("/owned"), true).unwrap();
        (e, p)
    }

    #[tokio::test]
    async fn consent_times_out_as_a_denial() {
        let (e, p) = consent_engine();
        let d = denial_of(ask(&e, p, 3, Direction::Read).await);
        assert_eq!((d.policy, d.resource), (PolicyKind::Consent, at(&file("/owned"))));
        assert!(e.pending_consents().is_empty() && e.reservations_idle());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_consent_decision_wakes_the_waiting_flow() {
        let mut c = config();
        c.consent_timeout = Duration::from_secs(20);
        let e = Arc::new(Engine::new(c));
        let p = attach(&e, 1);
        e.enroll(p, Fd(3), file("/owned")).unwrap();
        e.set_consent_enforced(&file("/owned"), true).unwrap();
        let task = tokio::spawn({
            let e = e.clone();
            async move { e.request(p, Fd(3), Direction::Read).await }
        });
        within(async {
            while e.pending_consents().is_empty() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        let pending = e.pending_consents();
        let want = ConsentRequest {
            source: at(&file("/owned")),
            destination: ConsentDestination::Resource(at(&Resource::Process(p))),
        };
        assert_eq!(pending, vec![want.clone()]);
        e.decide_consent(&want.source, want.destination.clone(), true);
        let g = grant_of(&within(task).await.unwrap().unwrap());
        e.report(p, g, IoOutcome { ok: true, bytes: 1 }).unwrap();
        // Remembered: the next flow does not wait. Then revoked at node level, but the
        // resource-level decision is more specific and still allows.
        io(&e, p, 3, Direction::Read, 1).await;
        e.decide_consent(&want.source, ConsentDestination::Node(n1()), false);
        io(&e, p, 3, Direction::Read, 1).await;
        e.decide_consent(&want.source, want.destination.clone(), false);
        let d = denial_of(ask(&e, p, 3, Direction::Read).await);
        assert_eq!(d.policy, PolicyKind::Consent);
        assert!(d.reason.contains("refused"), "{}", d.reason);
        let decisions =
            e.audit(&AuditQuery::default()).unwrap().into_iter().filter(|r| r.kind == AuditKind::ConsentDecision);
        assert_eq!(decisions.count(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_flows_complete_and_release_everything() {
        let e = engine();
        let mut tasks = Vec::new();
        for pid in 1..=8u32 {
            let p = attach(&e, pid);
            for fd in 0..3 {
                e.enroll(p, Fd(fd), file(&format!("/shared{fd}"))).unwrap();
            }
            let e = e.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..30 {
                    let dir = if (i + pid) % 3 == 0 { Direction::Write } else { Direction::Read };
                    if let Decision::Grant(g) = e.request(p, Fd((i % 3) as i32), dir).await.unwrap() {
                        tokio::task::yield_now().await;
                        e.report(p, g, IoOutcome { ok: true, bytes: 1 }).unwrap();
                    }
                }
            }));
        }
        within(async {
            for t in tasks {
                t.await.unwrap();
            }
        })
        .await;
        assert!(e.reservations_idle());
        assert_eq!(e.status().active_grants, 0);
    }

    // ---- federation, with two engines wired together in-process -----------------------

    use std::sync::{OnceLock, Weak};

    /// A fake [`Federation`]: calls the other engine directly, counts the calls, and can
    /// play dead.
    #[derive(Debug)]
    struct Loopback {
        me: NodeId,
        peer: OnceLock<Weak<Engine>>,
        calls: Mutex<FastMap<&'static str, usize>>,
        dead: std::sync::atomic::AtomicBool,
    }

    impl Loopback {
        fn count(&self, call: &'static str) -> usize {
            self.calls.lock().get(call).copied().unwrap_or(0)
        }

        fn peer(&self, call: &'static str, node: &NodeId) -> Result<Arc<Engine>, RemoteError> {
            *self.calls.lock().entry(call).or_default() += 1;
            if self.dead.load(Ordering::SeqCst) {
                return Err(RemoteError::Unreachable { node: node.clone(), cause: "connection refused".into() });
            }
            self.peer.get().and_then(Weak::upgrade).ok_or(RemoteError::NotAPeer(node.clone()))
        }
    }

    fn refused(node: &NodeId, e: EngineError) -> RemoteError {
        RemoteError::Refused { node: node.clone(), cause: e.to_string() }
    }

    impl Federation for Loopback {
        fn reserve_destination(
            &self,
            node: &NodeId,
            q: ReserveQuestion,
        ) -> BoxFuture<Result<Result<Policy, Denial>, RemoteError>> {
            let (peer, me, node) = (self.peer("reserve", node), self.me.clone(), node.clone());
            Box::pin(async move {
                peer?
                    .remote_reserve(&me, q.token, q.destination, q.writer, q.provenance)
                    .await
                    .map_err(|e| refused(&node, e))
            })
        }
        fn release_destination(&self, node: &NodeId, token: u64) -> BoxFuture<Result<(), RemoteError>> {
            let r = self
                .peer("release", node)
                .and_then(|p| p.remote_release(&self.me, token).map_err(|e| refused(node, e)));
            Box::pin(async move { r })
        }
        fn update_provenance(
            &self,
            node: &NodeId,
            token: u64,
            performed: bool,
            bytes: u64,
        ) -> BoxFuture<Result<(), RemoteError>> {
            let r = self
                .peer("update", node)
                .and_then(|p| p.remote_update(&self.me, token, performed, bytes).map_err(|e| refused(node, e)));
            Box::pin(async move { r })
        }
        fn check_sources(&self, node: &NodeId, q: SourcesQuestion) -> BoxFuture<Result<Option<Denial>, RemoteError>> {
            let (peer, me, node) = (self.peer("check", node), self.me.clone(), node.clone());
            Box::pin(async move { peer?.check_sources(&me, q.sources, q.target).await.map_err(|e| refused(&node, e)) })
        }
        fn broadcast_deletion(&self, resource: LocalizedResource) -> BoxFuture<()> {
            if let Ok(p) = self.peer("deletion", &self.me) {
                let _ = p.remote_deleted(&self.me, &resource);
            }
            Box::pin(async {})
        }
        fn policy_changed(&self) -> BoxFuture<()> {
            if let Ok(p) = self.peer("notice", &self.me) {
                let _ = p.peer_changed(&self.me);
            }
            Box::pin(async {})
        }
    }

    fn n2() -> NodeId {
        NodeId::new("n2").unwrap()
    }

    const N1_ADDR: &str = "10.0.0.1:4000";
    const N2_ADDR: &str = "10.0.0.2:5000";

    /// Engines of n1 (10.0.0.1) and n2 (10.0.0.2), peers of each other.
    fn pair() -> (Arc<Engine>, Arc<Loopback>, Arc<Engine>, Arc<Loopback>) {
        let make = |me: NodeId, ip: &str, peer: NodeId, peer_ip: &str| {
            let topology =
                Topology::new(me.clone(), vec![ip.parse().unwrap()]).with_peer(peer, vec![peer_ip.parse().unwrap()]);
            let mut c = EngineConfig::new(topology);
            c.reservation_timeout = Duration::from_millis(300);
            c.consent_timeout = Duration::from_millis(300);
            c.m2m_timeout = Duration::from_millis(500);
            c.remote_cache_ttl = Duration::from_secs(60);
            let fed = Arc::new(Loopback {
                me,
                peer: OnceLock::new(),
                calls: Mutex::new(FastMap::default()),
                dead: std::sync::atomic::AtomicBool::new(false),
            });
            (Arc::new(Engine::with_federation(c, fed.clone())), fed)
        };
        let (e1, f1) = make(n1(), "10.0.0.1", n2(), "10.0.0.2");
        let (e2, f2) = make(n2(), "10.0.0.2", n1(), "10.0.0.1");
        f1.peer.set(Arc::downgrade(&e2)).unwrap();
        f2.peer.set(Arc::downgrade(&e1)).unwrap();
        (e1, f1, e2, f2)
    }

    /// The stream from n1's writer to n2's reader, as each end enrolls it.
    fn streams() -> (Resource, Resource) {
        let (a, b) = (N1_ADDR.parse().unwrap(), N2_ADDR.parse().unwrap());
        (Resource::stream(a, b), Resource::stream(b, a))
    }

    /// n1's process 1 reads 4 bytes of `path` (fd 3) and writes them to n2 over the
    /// stream (fd 4); returns it and n2's side of the stream once n2 merged the write.
    async fn sent_to_n2(e1: &Engine, f1: &Loopback, e2: &Engine, path: &str) -> (ProcessId, Resource) {
        let writer = attach(e1, 1);
        let (out, inn) = streams();
        e1.enroll(writer, Fd(3), file(path)).unwrap();
        e1.enroll(writer, Fd(4), out).unwrap();
        io(e1, writer, 3, Direction::Read, 4).await;
        io(e1, writer, 4, Direction::Write, 4).await;
        settle(|| f1.count("update") == 1 && e2.status().remote_reservations == 0).await;
        (writer, inn)
    }

    async fn settle(cond: impl Fn() -> bool) {
        within(async {
            while !cond() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_remote_stream_write_carries_provenance_and_repeats_skip_m2m() {
        let (e1, f1, e2, f2) = pair();
        let writer = attach(&e1, 1);
        let (out, inn) = streams();
        e1.enroll(writer, Fd(3), file("/a")).unwrap();
        e1.enroll(writer, Fd(4), out).unwrap();
        io(&e1, writer, 3, Direction::Read, 4).await;
        io(&e1, writer, 4, Direction::Write, 4).await;
        assert_eq!((f1.count("reserve"), f1.count("check")), (1, 0), "all sources are n1's own");
        // The record of what n2 holds is kept once the update succeeded.
        settle(|| !e1.pushed.lock().is_empty()).await;
        let at1 = |r: &Resource| r.clone().at(&n1());
        let prov = e2.provenance(&inn);
        assert!(prov.contains(&at1(&file("/a"))) && prov.contains(&at1(&Resource::Process(writer))), "{prov:?}");

        // Unchanged provenance: the next writes go without any M2M call.
        for _ in 0..5 {
            io(&e1, writer, 4, Direction::Write, 4).await;
        }
        assert_eq!((f1.count("reserve"), f1.count("update")), (1, 1));

        // n2's reader asks n1 once about n1's resources, then reuses the answer.
        let reader = attach(&e2, 2);
        e2.enroll(reader, Fd(3), inn.clone()).unwrap();
        io(&e2, reader, 3, Direction::Read, 4).await;
        io(&e2, reader, 3, Direction::Read, 4).await;
        assert_eq!(f2.count("check"), 1);
        let prov = e2.provenance(&Resource::Process(reader));
        assert!(prov.contains(&at1(&file("/a"))), "{prov:?}");
        assert!(e2.audit(&AuditQuery::default()).unwrap().iter().any(|r| r.kind == AuditKind::RemoteFlow));
        assert!(e1.audit(&AuditQuery::default()).unwrap().iter().any(|r| r.kind == AuditKind::RemoteCheck));

        // New provenance: the full protocol again.
        e1.enroll(writer, Fd(5), file("/b")).unwrap();
        io(&e1, writer, 5, Direction::Read, 1).await;
        io(&e1, writer, 4, Direction::Write, 1).await;
        assert_eq!(f1.count("reserve"), 2);
        settle(|| f1.count("update") == 2 && e2.status().remote_reservations == 0).await;
        assert!(e2.provenance(&inn).contains(&at1(&file("/b"))));
        // A notice from n2 (its policy changed, it restarted): no reuse.
        f2.policy_changed().await;
        io(&e1, writer, 4, Direction::Write, 1).await;
        assert_eq!(f1.count("reserve"), 3);
        settle(|| e2.status().remote_reservations == 0).await;
        assert!(e1.reservations_idle() && e2.reservations_idle());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn owners_decide_for_their_resources_and_unreachable_owners_deny() {
        let (e1, f1, e2, f2) = pair();
        let (writer, inn) = sent_to_n2(&e1, &f1, &e2, "/secret").await;
        let reader = attach(&e2, 2);
        e2.enroll(reader, Fd(3), inn).unwrap();
        e2.enroll(reader, Fd(4), file("/copy")).unwrap();
        io(&e2, reader, 3, Direction::Read, 4).await;

        // n1 marks its file secret and tells n2: n2's process may no longer read it.
        e1.set_policy(&file("/secret"), Some(Confidentiality::Secret), None).unwrap();
        e1.announce_policy_change().await;
        e2.enroll(reader, Fd(5), file("/copy")).unwrap();
        let d = denial_of(ask(&e2, reader, 4, Direction::Write).await);
        assert_eq!((d.policy, d.resource.clone()), (PolicyKind::Confidentiality, file("/secret").at(&n1())));
        // n1 itself still uses it locally.
        e1.enroll(writer, Fd(6), file("/local")).unwrap();
        io(&e1, writer, 6, Direction::Write, 1).await;
        // And n1's writes of it to n2 are denied after n2's side was reserved (new
        // provenance: no shortcut): released.
        e1.enroll(writer, Fd(7), file("/fresh")).unwrap();
        io(&e1, writer, 7, Direction::Read, 1).await;
        let d = denial_of(ask(&e1, writer, 4, Direction::Write).await);
        assert_eq!(d.policy, PolicyKind::Confidentiality);
        settle(|| f1.count("release") == 1 && e2.status().remote_reservations == 0).await;

        // Unreachable owner: a clear denial naming it, nothing held.
        e1.set_policy(&file("/secret"), Some(Confidentiality::Public), None).unwrap();
        f2.dead.store(true, Ordering::SeqCst);
        let d = denial_of(ask(&e2, reader, 4, Direction::Write).await);
        assert_eq!(d.policy, PolicyKind::Unreachable);
        assert!(d.reason.contains("node n1 unreachable: connection refused"), "{}", d.reason);
        f2.dead.store(false, Ordering::SeqCst);
        io(&e2, reader, 4, Direction::Write, 1).await;

        // Deletion is broadcast: n2 denies locally, without asking.
        e1.delete(&file("/secret")).unwrap();
        e1.announce_deletion(&file("/secret")).await;
        let checks = f2.count("check");
        let d = denial_of(ask(&e2, reader, 4, Direction::Write).await);
        assert_eq!((d.policy, d.resource), (PolicyKind::Deletion, file("/secret").at(&n1())));
        assert_eq!(f2.count("check"), checks);
        assert!(e1.reservations_idle() && e2.reservations_idle());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_remote_consent_question_waits_for_the_owner() {
        let (e1, f1, e2, _f2) = pair();
        let (_writer, inn) = sent_to_n2(&e1, &f1, &e2, "/owned").await;
        e1.set_consent_enforced(&file("/owned"), true).unwrap();
        let reader = attach(&e2, 2);
        e2.enroll(reader, Fd(3), inn).unwrap();
        let task = tokio::spawn({
            let e2 = e2.clone();
            async move { e2.request(reader, Fd(3), Direction::Read).await }
        });
        settle(|| !e1.pending_consents().is_empty()).await;
        let pending = e1.pending_consents();
        assert_eq!(pending[0].destination, ConsentDestination::Resource(Resource::Process(reader).at(&n2())));
        e1.decide_consent(&pending[0].source, ConsentDestination::Node(n2()), true);
        let g = grant_of(&within(task).await.unwrap().unwrap());
        e2.report(reader, g, IoOutcome { ok: true, bytes: 4 }).unwrap();
    }

    #[tokio::test]
    async fn peers_questions_are_checked() {
        let (e1, _f1, _e2, _f2) = pair();
        let stranger = NodeId::new("n9").unwrap();
        let (out, inn) = streams();
        let w = Resource::Process(ProcessId { pid: 1, starttime: 1 }).at(&n2());
        assert!(matches!(
            e1.remote_reserve(&stranger, 1, out.clone(), w.clone(), vec![]).await,
            Err(EngineError::UnknownPeer { .. })
        ));
        // n1's side of the stream is `out` (local end 10.0.0.1); `inn` is n2's.
        assert!(matches!(e1.remote_reserve(&n2(), 1, inn, w.clone(), vec![]).await, Err(EngineError::NotOwned { .. })));
        let file_w = file("/x").at(&n1());
        assert!(matches!(
            e1.remote_reserve(&n2(), 1, out.clone(), file_w, vec![]).await,
            Err(EngineError::NotOwned { .. })
        ));
        assert_eq!(e1.remote_release(&n2(), 77), Err(EngineError::UnknownReservation { node: n2(), token: 77 }));
        assert!(matches!(e1.remote_update(&n2(), 77, true, 1), Err(EngineError::UnknownReservation { .. })));
        let target = RemoteTarget { resource: file("/y").at(&n2()), external_peer: None, policy: Policy::default() };
        let theirs = vec![file("/x").at(&n2())];
        assert!(matches!(e1.check_sources(&n2(), theirs, target).await, Err(EngineError::NotOwned { .. })));
        assert!(matches!(e1.remote_deleted(&n2(), &file("/x").at(&n1())), Err(EngineError::NotOwned { .. })));
        // A reservation whose holder never comes back ends with its lease, assumed performed.
        let mut c = e1.config().clone();
        c.remote_lease = Duration::from_millis(50);
        let e = Engine::new(c);
        let r = e.remote_reserve(&n2(), 5, out.clone(), w.clone(), vec![file("/z").at(&n2())]).await.unwrap();
        assert_eq!(r, Ok(Policy::default()));
        assert!(matches!(
            e.remote_reserve(&n2(), 5, out.clone(), w, vec![]).await,
            Err(EngineError::DuplicateToken { .. })
        ));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(e.expire_leases(), 1);
        assert!(e.provenance(&out).contains(&file("/z").at(&n2())));
        assert!(e.reservations_idle());
    }
}
