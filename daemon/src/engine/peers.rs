//! The M2M server side: the questions peers ask this node (ReserveDestination,
//! ReleaseDestination, UpdateProvenance, CheckSources, BroadcastDeletion, PolicyChanged).

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use trace2e_proto::{Denial, LocalizedResource, NodeId, Policy, PolicyKind, Resource};

use super::{Engine, EngineError, audit};
use crate::audit::clock::now_us;
use crate::audit::{AuditEntry, AuditKind, AuditOutcome};
use crate::compliance::{Target, UnknownLabel, Verdict, evaluate_owned};
use crate::provenance::LabelId;
use crate::remote::{RemoteTarget, RemoteToken};
use crate::reservation::{Busy, Claim, Reservation};
use crate::state::{Change, Label, StateError};
use crate::topology::Owner;

/// A reservation a peer holds here on the receiving side of one of its streams.
#[derive(Debug)]
pub(super) struct RemoteHold {
    pub(super) destination: LabelId,
    /// Labelled only when the write is merged (see [`Engine::remote_reserve`]).
    pub(super) writer: LocalizedResource,
    pub(super) provenance: Vec<LocalizedResource>,
    pub(super) deadline: Instant,
    pub(super) _reservation: Reservation<LabelId>,
}

impl Engine {
    pub(super) fn check_peer(&self, node: &NodeId) -> Result<(), EngineError> {
        if self.config.topology.is_peer(node) { Ok(()) } else { Err(EngineError::UnknownPeer { node: node.clone() }) }
    }

    /// ReserveDestination from `caller`: reserves this node's side of a stream the
    /// caller's process writes to, for writing, until [`Engine::remote_update`],
    /// [`Engine::remote_release`] or the remote lease. `Ok(Err(denial))` when it stayed
    /// busy; `Ok(Ok(policy))` with the side's effective policy when reserved.
    pub async fn remote_reserve(
        &self,
        caller: &NodeId,
        token: RemoteToken,
        side: Resource,
        writer: LocalizedResource,
        provenance: Vec<LocalizedResource>,
    ) -> Result<Result<Policy, Denial>, EngineError> {
        self.check_peer(caller)?;
        let Resource::Stream(s) = &side else {
            return Err(EngineError::NotOwned { resource: self.local(&side), problem: "not a stream" });
        };
        if self.config.topology.owner(s.local.ip()) != Owner::Local {
            return Err(EngineError::NotOwned {
                resource: self.local(&side),
                problem: "its local end is not this node's",
            });
        }
        if self.config.topology.owner(s.peer.ip()) != Owner::Peer(caller.clone()) {
            return Err(EngineError::NotOwned {
                resource: self.local(&side),
                problem: "its peer end is not an address of the asking node",
            });
        }
        if writer.node != *caller {
            return Err(EngineError::NotOwned { resource: writer, problem: "the writer is not the asking node's" });
        }
        let key = (caller.clone(), token);
        if self.remote_holds.lock().contains_key(&key) {
            return Err(EngineError::DuplicateToken { node: caller.clone(), token });
        }
        // Only this node's own side of the stream gets a label now: a local reader's claim
        // must wait on it. The writer and its provenance are labelled when the write is
        // reported performed (a merge), never for a reservation given up.
        let destination = self.core.write().state.intern(&self.local(&side))?;
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
    pub fn remote_release(&self, caller: &NodeId, token: RemoteToken) -> Result<(), EngineError> {
        drop(self.take_hold(caller, token)?);
        Ok(())
    }

    /// The reservation `caller` holds here under `token`, taken out of the table.
    fn take_hold(&self, caller: &NodeId, token: RemoteToken) -> Result<RemoteHold, EngineError> {
        self.check_peer(caller)?;
        self.remote_holds
            .lock()
            .remove(&(caller.clone(), token))
            .ok_or(EngineError::UnknownReservation { node: caller.clone(), token })
    }

    /// UpdateProvenance: the caller's write happened (`performed`: merge the provenance
    /// sent with the reservation) or not; then the reservation is released.
    pub fn remote_update(
        &self,
        caller: &NodeId,
        token: RemoteToken,
        performed: bool,
        bytes: u64,
    ) -> Result<(), EngineError> {
        let hold = self.take_hold(caller, token)?;
        self.end_hold(caller, hold, performed, bytes, AuditKind::RemoteFlow);
        Ok(())
    }

    pub(super) fn end_hold(&self, caller: &NodeId, hold: RemoteHold, performed: bool, bytes: u64, kind: AuditKind) {
        {
            let mut core = self.core.write();
            let state = &mut core.state;
            let time_us = now_us();
            let mut e = AuditEntry::new(kind, time_us, if performed { AuditOutcome::Ok } else { AuditOutcome::Failed });
            if performed {
                let merged = (|| -> Result<LabelId, StateError> {
                    let writer = state.intern(&hold.writer)?;
                    let provenance = hold.provenance.iter().map(|r| state.intern(r)).collect::<Result<Vec<_>, _>>()?;
                    let destination = hold.destination;
                    state.apply_fact(Change::Import { writer, provenance, destination, bytes, time_us })?;
                    Ok(writer)
                })();
                match merged {
                    Ok(writer) => e.source = Some(writer),
                    Err(err) => tracing::error!(error = %err, "merge of a peer's provenance failed"),
                }
            }
            if e.source.is_none() {
                match state.id(&hold.writer) {
                    Some(writer) => e.source = Some(writer),
                    None => e.named_source = Some(hold.writer.clone()),
                }
            }
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
    ///
    /// A question reads and never creates labels: a source this node holds no label for
    /// is judged with the default policy, and a target it has never seen is named in the
    /// audit record rather than interned (a peer's questions must not grow the table).
    pub async fn check_sources(
        &self,
        caller: &NodeId,
        sources: Vec<LocalizedResource>,
        target: RemoteTarget,
    ) -> Result<Option<Denial>, EngineError> {
        self.check_peer(caller)?;
        if let Some(r) = sources.iter().find(|r| r.node != *self.node()) {
            return Err(EngineError::NotOwned { resource: r.clone(), problem: "not a resource of this node" });
        }
        if sources.is_empty() {
            return Err(EngineError::NoSources);
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
                let ids: Vec<Option<LabelId>> = sources.iter().map(|r| state.id(r)).collect();
                // A source without a label is judged as one with the default policy, made
                // here and never stored.
                let labels: Vec<Cow<'_, Label>> = ids
                    .iter()
                    .zip(&sources)
                    .map(|(id, r)| match id.and_then(|id| state.label(id)) {
                        Some(label) => Cow::Borrowed(label),
                        None => Cow::Owned(Label::unlabelled(r.clone())),
                    })
                    .collect();
                let judged: Vec<(Option<LabelId>, &Label)> =
                    ids.iter().zip(&labels).map(|(id, label)| (*id, label.as_ref())).collect();
                let destination = state.id(&target.resource);
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
                let step = match evaluate_owned(state, &self.rules, &judged, &t)? {
                    Verdict::Grant => Owned::Answer(None),
                    Verdict::Deny(denial) => Owned::Answer(Some(denial)),
                    Verdict::AskConsent { source } => {
                        match self.await_consent(state, source, target.resource.clone(), deadline)? {
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
                        match ids[0] {
                            Some(id) => e.source = Some(id),
                            None => e.named_source = Some(sources[0].clone()),
                        }
                        match destination {
                            Some(id) => e.destination = Some(id),
                            None => e.named_destination = Some(target.resource.clone()),
                        }
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
                resource: resource.clone(),
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
}
