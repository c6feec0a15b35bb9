//! The local flow decision: resolve `(process, fd, direction)` to a flow, reserve its
//! labels, evaluate compliance (waiting for consent or for the owners of remote sources),
//! grant with a lease or deny; on report, merge provenance and release; leases that end
//! unreported count as performed.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use trace2e_proto::{
    Decision, Denial, Direction, Fd, GrantId, IoOutcome, LocalizedResource, NodeId, PolicyKind, ProcessId, Resource,
};

use super::owners::Stamp;
use super::peers::RemoteHold;
use super::stream_sync::RemoteClaim;
use super::{Core, Engine, EngineError, Flow, Grant, audit, audit_flow};
use crate::FastMap;
use crate::audit::clock::{now_us, resync_clock, wall_us};
use crate::audit::{AuditKind, AuditOutcome, FlowResult};
use crate::breakdown::Stage;
use crate::compliance::{Destination, UnknownLabel, Verdict};
use crate::provenance::LabelId;
use crate::remote::{RemoteTarget, RemoteToken};
use crate::reservation::{Busy, Reservation};
use crate::state::{Change, State, StateError};
use crate::topology::Owner;

impl Engine {
    pub(super) fn resolve(
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
            None => {
                let decided = self.request_waiting(process, fd, direction).await;
                // In synchronous mode the flush blocks this task's worker for one flush
                // (a decision that waited already took milliseconds).
                Ok(self.durable_answer(process, self.unrecorded(process, decided)?))
            }
        }
    }

    /// A state change this flow needed could not be recorded: the flow is denied
    /// ([`PolicyKind::AuditUnavailable`]), not failed.
    fn unrecorded(&self, process: ProcessId, decided: Result<Decision, EngineError>) -> Result<Decision, EngineError> {
        match decided {
            Err(EngineError::State(StateError::Unrecorded(why))) => Ok(Decision::Denied(audit_unavailable(
                self.local(&Resource::Process(process)),
                "record the flow",
                &why,
            ))),
            other => other,
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
    /// recorded. The append writes a cache line of memory never touched before, which on
    /// a VM is a measurable part of every read's critical path (1-client `t2e-load`;
    /// docs/decisions.md). A denial is audited first and only
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
        if self.syncer.is_none() {
            return match self.decide_now(process, fd, direction, answer) {
                Ok(d) => Ok(d),
                Err(e) => self.unrecorded(process, Err(e)).map(Some),
            };
        }
        // Synchronous mode: answered only once on stable storage, outside the lock.
        match self.decide_now(process, fd, direction, |_| {}) {
            Ok(Some(d)) => Ok(Some(self.durable_answer(process, d))),
            Ok(None) => Ok(None),
            Err(e) => self.unrecorded(process, Err(e)).map(Some),
        }
    }

    /// [`Engine::try_request_answering`] under one acquisition of the state lock.
    fn decide_now(
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
    pub(super) async fn request_waiting(
        &self,
        process: ProcessId,
        fd: Fd,
        direction: Direction,
    ) -> Result<Decision, EngineError> {
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
                    Verdict::AskConsent { source } => {
                        let destination = match flow.destination {
                            Destination::Label(d) | Destination::External { stream: d, .. } => d,
                        };
                        let dst = state.resource(destination).cloned().ok_or(UnknownLabel(destination))?;
                        match self.await_consent(state, source, dst, deadline)? {
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

    /// A flow needs the consent of `source`'s owner for `dst`: the waiter to await until
    /// `deadline`, or the Consent denial once the deadline has passed. Called under the
    /// state lock, so a decision recorded after this evaluation finds the waiter.
    pub(super) fn await_consent(
        &self,
        state: &State,
        source: LabelId,
        dst: LocalizedResource,
        deadline: Instant,
    ) -> Result<Result<(crate::consent::ConsentWait, Duration), Denial>, EngineError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let src = state.resource(source).cloned().ok_or(UnknownLabel(source))?;
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
    pub(super) fn deny(&self, flow: &Flow, denial: Denial) -> Decision {
        Self::deny_locked(&mut self.core.write().state, flow, denial)
    }

    /// [`Engine::deny`] under the state lock.
    pub(super) fn deny_locked(state: &mut State, flow: &Flow, denial: Denial) -> Decision {
        audit(state, flow.entry(AuditKind::Request, now_us(), AuditOutcome::Denied(denial.clone())));
        Decision::Denied(denial)
    }

    /// Grants `flow` and records it; `answer` gets the grant first (see
    /// [`Engine::try_request_answering`]).
    pub(super) fn grant(
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
        // On record before the process hears of it: a crash after the answer finds it.
        let appending = self.config.breakdown.start();
        let recorded = audit_flow(state, &flow, AuditKind::Request, wall_us(now), id, 0, FlowResult::Granted);
        self.config.breakdown.stop(Stage::AuditAppend, appending);
        if let Err(StateError::Unrecorded(why)) = recorded {
            // Not audited either: the trail is what cannot be written.
            return Ok(Decision::Denied(self.unrecorded_denial(state, &flow, &why)));
        }
        let grant = Grant { flow, deadline: now + self.config.lease, _reservation: reservation, remote };
        grants.insert(id, grant);
        let decision = Decision::Grant(id);
        answer(&decision);
        Ok(decision)
    }

    /// The denial of a flow this node cannot record.
    pub(super) fn unrecorded_denial(&self, state: &State, flow: &Flow, why: &str) -> Denial {
        let resource =
            state.resource(flow.source).cloned().unwrap_or_else(|| self.local(&Resource::Process(flow.process)));
        audit_unavailable(resource, "record the flow", why)
    }

    /// With `--fsync-interval-ms 0`: waits until every record published so far (the
    /// grant's among them) is on stable storage. On failure, the grant is ended as not
    /// performed and the flow denied.
    pub(super) fn durable_answer(&self, process: ProcessId, decision: Decision) -> Decision {
        let (Some(syncer), Decision::Grant(id)) = (&self.syncer, &decision) else { return decision };
        let upto = self.core.read().state.next_record();
        match syncer.sync_through(upto) {
            Ok(()) => decision,
            Err(why) => {
                let _ = self.report(process, *id, IoOutcome { ok: false, bytes: 0 });
                Decision::Denied(audit_unavailable(
                    self.local(&Resource::Process(process)),
                    "make the flow's record durable",
                    &why,
                ))
            }
        }
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
                state.apply_fact(Change::Flow { source: g.flow.source, destination, bytes: outcome.bytes, time_us })?;
                breakdown.stop(Stage::ProvenanceUpdate, merging);
            }
            let result = if outcome.ok { FlowResult::Ok } else { FlowResult::Failed };
            let appending = breakdown.start();
            let _ = audit_flow(state, &g.flow, AuditKind::Report, time_us, grant, outcome.bytes, result);
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
    pub(super) fn end_unreported(&self, id: GrantId, mut grant: Grant) {
        {
            let mut core = self.core.write();
            let state = &mut core.state;
            let time_us = now_us();
            if let Destination::Label(destination) = grant.flow.destination
                && let Err(e) =
                    state.apply_fact(Change::Flow { source: grant.flow.source, destination, bytes: 0, time_us })
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
        let holds: Vec<((NodeId, RemoteToken), RemoteHold)> = {
            let mut holds = self.remote_holds.lock();
            let keys: Vec<(NodeId, RemoteToken)> =
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
}

/// The denial of a flow this node cannot `what` ("record the flow", ...).
fn audit_unavailable(resource: LocalizedResource, what: &str, why: &str) -> Denial {
    Denial {
        policy: PolicyKind::AuditUnavailable,
        resource,
        reason: format!("this node cannot {what}, so it does not allow it ({why})"),
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
