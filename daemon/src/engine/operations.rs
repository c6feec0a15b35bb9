//! Operator operations (O2M): policies, deletion, consent, provenance and lineage,
//! audit queries, status, and the notices that tell peers about them.

use trace2e_proto::{Confidentiality, IntegrityLevel, LocalizedResource, Policy, Resource};

use super::{DurabilityStatus, Engine, EngineError, EngineStatus, audit};
use crate::audit::clock::now_us;
use crate::audit::{AuditEntry, AuditError, AuditKind, AuditOutcome, AuditQuery, AuditRecord};
use crate::compliance::UnknownLabel;
use crate::consent::{ConsentDestination, ConsentRequest};
use crate::provenance::{LabelId, LineageEdge};
use crate::remote::BoxFuture;
use crate::state::{Change, ConsentKey, State, StateError};

impl Engine {
    /// Tells the peers that something this node decides changed (policy, consent).
    /// Resolves when each peer answered or its deadline passed.
    pub fn announce_policy_change(&self) -> BoxFuture<()> {
        self.federation.policy_changed()
    }

    /// Tells the peers that this node deleted `r`.
    pub fn announce_deletion(&self, r: &Resource) -> BoxFuture<()> {
        self.federation.broadcast_deletion(self.local(r))
    }

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

    pub(super) fn policy_audit(
        &self,
        state: &mut State,
        label: LabelId,
        kind: AuditKind,
    ) -> Result<Policy, EngineError> {
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
        let name = |id: LabelId| state.resource(id).cloned();
        Ok(records.into_iter().map(|(seq, e)| AuditRecord::resolve(seq, e, self.node(), name)).collect())
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

    /// Where the state is kept, and whether the journal can be written.
    pub fn durability(&self) -> DurabilityStatus {
        let core = self.core.read();
        let Some(journal) = core.state.journal() else { return DurabilityStatus::default() };
        let (covered, head) = journal.head();
        DurabilityStatus {
            data_dir: self.data_dir.as_ref().map(|(d, _)| d.clone()),
            epoch: self.data_dir.as_ref().map_or(0, |(_, e)| *e),
            records: journal.next_lsn(),
            head: Some((covered, crate::durable::journal::hex(&head))),
            problem: journal.problem(),
            synchronous: journal.synchronous(),
        }
    }

    /// Waits until every change recorded so far is on stable storage (a no-op in
    /// memory-only mode).
    pub fn flush(&self) -> Result<(), String> {
        let (syncer, upto) = {
            let core = self.core.read();
            match core.state.journal() {
                None => return Ok(()),
                Some(j) => (j.syncer(), j.next_lsn()),
            }
        };
        syncer.sync_through(upto)
    }

    /// Whether no reservation is held or awaited (for tests and diagnostics).
    pub fn reservations_idle(&self) -> bool {
        self.reservations.is_empty()
    }
}
