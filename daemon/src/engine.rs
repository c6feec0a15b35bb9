//! The traceability engine: every decision of the daemon.
//!
//! Owns the flow of one mediated I/O — resolve `(process, fd)` to a flow, reserve its
//! labels, evaluate compliance (waiting for consent if needed), grant with a lease,
//! record provenance on report — and the operator operations (policies, deletion,
//! consent, provenance, audit, status). It does no I/O and knows no transport: `p2m`,
//! `operator` and `daemon` call it.
//!
//! Locks: `core` (durable [`State`] plus the compliance cache) is a `parking_lot` lock
//! held for short, non-async sections; `grants` is taken alone or inside `core`, never
//! the other way round; no lock is held across an `.await`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use trace2e_proto::{
    Confidentiality, Decision, Denial, Direction, Fd, GrantId, IntegrityLevel, IoOutcome, LocalizedResource, NodeId,
    Policy, PolicyKind, ProcessId, Resource,
};

use crate::audit::{AuditEntry, AuditKind, AuditOutcome, AuditQuery, AuditRecord};
use crate::compliance::{ComplianceCache, Destination, Rules, UnknownLabel, Verdict};
use crate::consent::{ConsentDestination, ConsentRequest, ConsentWaiters};
use crate::provenance::{LabelId, LineageEdge};
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
}

impl EngineConfig {
    /// Defaults: level 0, reservation timeout 5 s, lease 30 s, consent timeout 30 s.
    pub fn new(topology: Topology) -> Self {
        Self {
            topology,
            default_process_integrity: IntegrityLevel(0),
            reservation_timeout: Duration::from_secs(5),
            lease: Duration::from_secs(30),
            consent_timeout: Duration::from_secs(30),
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
    /// Granted requests.
    pub granted: u64,
    /// Denied requests.
    pub denied: u64,
    /// Flows waiting for a consent decision.
    pub pending_consents: usize,
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
    fn claims(&self) -> Vec<Claim<LabelId>> {
        let mut claims = vec![Claim::read(self.source)];
        if let Destination::Label(d) = self.destination {
            claims.push(Claim::write(d));
        }
        claims
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
}

/// The traceability engine of one node. `Send + Sync`; share it as `Arc<Engine>`.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    rules: Rules,
    core: RwLock<Core>,
    reservations: ReservationTable<LabelId>,
    grants: Mutex<HashMap<GrantId, Grant>>,
    next_grant: AtomicU64,
    consent: ConsentWaiters,
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Appends an audit entry. Appending cannot fail; a failure would be a bug in `apply`.
fn audit(state: &mut State, entry: AuditEntry) {
    if let Err(e) = state.apply(Change::Audit(entry)) {
        tracing::error!(error = %e, "audit append failed");
    }
}

impl Engine {
    /// An engine with empty state.
    pub fn new(config: EngineConfig) -> Self {
        let rules =
            Rules { topology: config.topology.clone(), default_process_integrity: config.default_process_integrity };
        Self {
            core: RwLock::new(Core {
                state: State::new(config.topology.node.clone()),
                cache: ComplianceCache::default(),
            }),
            rules,
            config,
            reservations: ReservationTable::new(),
            grants: Mutex::new(HashMap::new()),
            next_grant: AtomicU64::new(1),
            consent: ConsentWaiters::default(),
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
            let mut grants = self.grants.lock();
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
    pub async fn request(&self, process: ProcessId, fd: Fd, direction: Direction) -> Result<Decision, EngineError> {
        let flow = {
            let mut core = self.core.write();
            self.resolve(&mut core.state, process, fd, direction)?
        };
        let reservation = match self.reservations.acquire(flow.claims(), self.config.reservation_timeout).await {
            Ok(r) => r,
            Err(Busy { key }) => {
                let mut core = self.core.write();
                let state = &mut core.state;
                let resource = state.resource(key).cloned().ok_or(UnknownLabel(key))?;
                let denial = Denial {
                    policy: PolicyKind::Busy,
                    reason: format!(
                        "{resource} stayed reserved by other flows for {:?}",
                        self.config.reservation_timeout
                    ),
                    resource,
                };
                audit(state, flow.entry(AuditKind::Request, now_us(), AuditOutcome::Denied(denial.clone())));
                return Ok(Decision::Denied(denial));
            }
        };
        let deadline = Instant::now() + self.config.consent_timeout;
        loop {
            let (wait, remaining) = {
                let mut core = self.core.write();
                let Core { state, cache } = &mut *core;
                let next = match cache.evaluate(state, &self.rules, flow.source, flow.destination)? {
                    Verdict::Grant => return self.grant(state, flow, reservation),
                    Verdict::Deny(denial) => Pending::Deny(denial),
                    Verdict::AskConsent { source, destination } => {
                        let remaining = deadline.saturating_duration_since(Instant::now());
                        let src = state.resource(source).cloned().ok_or(UnknownLabel(source))?;
                        let dst = state.resource(destination).cloned().ok_or(UnknownLabel(destination))?;
                        if remaining.is_zero() {
                            Pending::Deny(Denial {
                                policy: PolicyKind::Consent,
                                reason: format!(
                                    "the owner of {src} did not decide on {dst} within {:?}",
                                    self.config.consent_timeout
                                ),
                                resource: src,
                            })
                        } else {
                            // Registered under the state lock: a decision recorded after this
                            // evaluation finds the waiter.
                            Pending::Wait(self.consent.register(src, dst), remaining)
                        }
                    }
                };
                match next {
                    Pending::Wait(wait, remaining) => (wait, remaining),
                    Pending::Deny(denial) => {
                        audit(state, flow.entry(AuditKind::Request, now_us(), AuditOutcome::Denied(denial.clone())));
                        return Ok(Decision::Denied(denial));
                    }
                }
            };
            // Whether woken or timed out, evaluate again: a timeout ends as a denial above.
            wait.wait(remaining).await;
        }
    }

    fn grant(&self, state: &mut State, flow: Flow, reservation: Reservation<LabelId>) -> Result<Decision, EngineError> {
        if state.enrollments().process(flow.process).is_none() {
            // Exited while we were deciding: its grants were already ended.
            return Err(EngineError::UnknownProcess { process: flow.process });
        }
        let id = GrantId(self.next_grant.fetch_add(1, Ordering::Relaxed));
        let mut e = flow.entry(AuditKind::Request, now_us(), AuditOutcome::Granted);
        e.grant = Some(id);
        audit(state, e);
        let grant = Grant { flow, deadline: Instant::now() + self.config.lease, _reservation: reservation };
        self.grants.lock().insert(id, grant);
        Ok(Decision::Grant(id))
    }

    /// Ends a grant: if the I/O succeeded and moved bytes, the destination's provenance
    /// takes the source's (and the lineage edge is recorded); then the reservations are
    /// released. The grant must belong to `process` (else it is left untouched).
    pub fn report(&self, process: ProcessId, grant: GrantId, outcome: IoOutcome) -> Result<(), EngineError> {
        let g = {
            let mut grants = self.grants.lock();
            match grants.get(&grant) {
                None => return Err(EngineError::UnknownGrant { grant }),
                Some(g) if g.flow.process != process => {
                    return Err(EngineError::WrongProcess { grant, process });
                }
                Some(_) => grants.remove(&grant).ok_or(EngineError::UnknownGrant { grant })?,
            }
        };
        {
            let mut core = self.core.write();
            let state = &mut core.state;
            let time_us = now_us();
            if outcome.ok
                && outcome.bytes > 0
                && let Destination::Label(destination) = g.flow.destination
            {
                state.apply(Change::Flow { source: g.flow.source, destination, bytes: outcome.bytes, time_us })?;
            }
            let result = if outcome.ok { AuditOutcome::Ok } else { AuditOutcome::Failed };
            let mut e = g.flow.entry(AuditKind::Report, time_us, result);
            e.grant = Some(grant);
            e.bytes = outcome.bytes;
            audit(state, e);
        }
        drop(g);
        Ok(())
    }

    /// A grant never reported: the I/O may have happened, so provenance is merged
    /// conservatively; then its reservations are released.
    fn end_unreported(&self, id: GrantId, grant: Grant) {
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
        drop(grant);
    }

    /// Ends every grant whose lease has passed; returns how many.
    pub fn expire_leases(&self) -> usize {
        let now = Instant::now();
        let expired: Vec<(GrantId, Grant)> = {
            let mut grants = self.grants.lock();
            let ids: Vec<GrantId> = grants.iter().filter(|(_, g)| g.deadline <= now).map(|(k, _)| *k).collect();
            ids.into_iter().filter_map(|k| grants.remove(&k).map(|g| (k, g))).collect()
        };
        let n = expired.len();
        for (id, grant) in expired {
            self.end_unreported(id, grant);
        }
        n
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

    /// Audit records matching `query`, ascending by sequence number.
    pub fn audit(&self, query: &AuditQuery) -> Vec<AuditRecord> {
        let core = self.core.read();
        let state = &core.state;
        let resource = query.resource.as_ref().map(|r| state.id(r));
        let name = |id: Option<LabelId>| id.and_then(|id| state.resource(id).cloned());
        state
            .audit()
            .query(query, resource)
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
                direction: e.direction,
                bytes: e.bytes,
                grant: e.grant,
                policy: e.policy,
                exe: e.exe.clone(),
                result: e.result.clone(),
            })
            .collect()
    }

    /// Counters.
    pub fn status(&self) -> EngineStatus {
        let active_grants = self.grants.lock().len();
        let core = self.core.read();
        let state = &core.state;
        EngineStatus {
            processes: state.enrollments().processes(),
            enrolled_fds: state.enrollments().enrolled(),
            active_grants,
            labelled_resources: state.labels(),
            audit_records: state.audit().len(),
            granted: state.audit().granted(),
            denied: state.audit().denied(),
            pending_consents: self.consent.len(),
        }
    }

    /// Whether no reservation is held or awaited (for tests and diagnostics).
    pub fn reservations_idle(&self) -> bool {
        self.reservations.is_empty()
    }
}

/// After an evaluation that did not grant: wait for consent, or deny.
#[derive(Debug)]
enum Pending {
    Wait(crate::consent::ConsentWait, Duration),
    Deny(Denial),
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
        let kinds: Vec<AuditKind> = e.audit(&AuditQuery::default()).iter().map(|r| r.kind).collect();
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
        let reports = e.audit(&AuditQuery::default());
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

        let all = e.audit(&AuditQuery::default());
        assert!(all.windows(2).all(|w| w[0].seq + 1 == w[1].seq) && all[0].seq == 1);
        let read = all.iter().find(|r| r.kind == AuditKind::Request && r.direction == Some(Direction::Read)).unwrap();
        assert_eq!(read.source, Some(at(&file("/in"))));
        assert_eq!(read.destination, Some(at(&Resource::Process(p))));
        assert_eq!(read.result, AuditOutcome::Granted);
        assert!(read.grant.is_some() && read.node == n1() && read.fd == Some(Fd(3)));
        let report = all.iter().find(|r| r.kind == AuditKind::Report).unwrap();
        assert_eq!((report.bytes, report.grant), (5, read.grant));

        let q = AuditQuery { decision: Some(DecisionFilter::Denied), ..Default::default() };
        let denied = e.audit(&q);
        assert_eq!(denied.len(), 1);
        assert_eq!(denied[0].result, AuditOutcome::Denied(denial));
        assert!(denied[0].to_text().contains("denied (integrity on process://12.7@n1"), "{}", denied[0].to_text());
        let q = AuditQuery { resource: Some(at(&file("/in"))), ..Default::default() };
        let kinds: Vec<AuditKind> = e.audit(&q).iter().map(|r| r.kind).collect();
        assert_eq!(kinds, [AuditKind::Enroll, AuditKind::Request, AuditKind::Report]);
        let q = AuditQuery { limit: 2, ..Default::default() };
        assert_eq!(e.audit(&q).iter().map(|r| r.seq).collect::<Vec<_>>(), [all.len() as u64 - 1, all.len() as u64]);
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
        assert_eq!(s.audit_records, e.audit(&AuditQuery::default()).len());
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
        let kinds: Vec<AuditKind> = e.audit(&AuditQuery::default()).iter().map(|r| r.kind).collect();
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
        let records = e.audit(&AuditQuery { decision: Some(DecisionFilter::Denied), ..Default::default() });
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
        assert!(e.audit(&AuditQuery::default()).iter().any(|r| r.kind == AuditKind::Expired && r.grant == Some(g)));
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
            e.audit(&AuditQuery { after: 4, ..Default::default() }).iter().map(|r| r.kind).collect();
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
        let decisions = e.audit(&AuditQuery::default()).into_iter().filter(|r| r.kind == AuditKind::ConsentDecision);
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
}
