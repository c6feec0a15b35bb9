//! Durable state and its one mutation path.
//!
//! Owns every piece of state that must survive a restart — labels (policy, provenance,
//! process attributes), lineage, enrollment, remembered consent decisions and the audit
//! trail — and [`State::apply`], the only function that changes it: every change is a
//! [`Change`] value. With a journal attached ([`State::attach_journal`]), `apply` writes
//! every change it accepts to the journal, and recovery replays the journal through
//! `apply` again (`crate::durable`). It does not decide anything, and does not hold
//! transient state (reservations, grants, consent waiters, caches).
use std::path::PathBuf;

use trace2e_proto::{Confidentiality, Fd, IntegrityLevel, LocalizedResource, NodeId, ProcessId};

use crate::FastMap;
use crate::audit::{AuditEntry, AuditLog, FlowRecord};
use crate::durable::Journal;
use crate::enrollment::{Enrollments, ProcessRecord, UserId};
use crate::provenance::{LabelId, LabelProvenance, Lineage, Merge};

/// A policy as stored: which fields an operator set explicitly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct StoredPolicy {
    /// Set explicitly, else inherited (processes: from the executable) or the default.
    pub confidentiality: Option<Confidentiality>,
    /// Set explicitly, else inherited (processes: from the executable) or the default.
    pub integrity: Option<IntegrityLevel>,
    /// Deleted (final).
    pub deleted: bool,
    /// The owner decides each destination.
    pub consent: bool,
}

/// The process attributes a process label keeps, also after the process exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessAttributes {
    /// The executable.
    pub exe: PathBuf,
    /// The executable's label (`exe:///path@node`).
    pub exe_label: LabelId,
}

/// Provenance and policy of one resource.
#[derive(Debug, Clone)]
pub struct Label {
    /// The resource.
    pub resource: LocalizedResource,
    /// Its policy.
    pub policy: StoredPolicy,
    /// Where its data came from.
    pub provenance: LabelProvenance,
    /// For a process: its executable.
    pub process: Option<ProcessAttributes>,
}

impl Label {
    /// What a resource this node holds no label for is worth to the rules: the default
    /// policy, no provenance. Never stored: a question about such a resource must not
    /// create its label.
    pub fn unlabelled(resource: LocalizedResource) -> Self {
        Self { resource, policy: StoredPolicy::default(), provenance: LabelProvenance::default(), process: None }
    }
}

/// The destination of a remembered consent decision.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ConsentKey {
    /// One destination resource.
    Resource(LabelId),
    /// Every resource of a node.
    Node(NodeId),
}

/// One durable state change.
// Changes are built and applied at once; boxing the audit entry would cost an allocation
// per mediated I/O.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Change {
    /// Makes a label for a resource; its id is the next one ([`State::next_label`]).
    Intern(LocalizedResource),
    /// A process attached (or exec'd): its record and its label's attributes.
    Attach {
        /// The process.
        process: ProcessId,
        /// Its label.
        label: LabelId,
        /// Its executable.
        exe: PathBuf,
        /// Its executable's label.
        exe_label: LabelId,
        /// Its user id.
        uid: UserId,
    },
    /// A process is gone; its label (and attributes) stay.
    Detach {
        /// The process.
        process: ProcessId,
    },
    /// `(process, fd)` now refers to `label` (replacing any previous entry).
    Enroll {
        /// The process.
        process: ProcessId,
        /// Its fd.
        fd: Fd,
        /// The resource.
        label: LabelId,
    },
    /// `(process, fd)` no longer refers to anything.
    Unenroll {
        /// The process.
        process: ProcessId,
        /// Its fd.
        fd: Fd,
    },
    /// Sets the given policy fields.
    SetPolicy {
        /// The resource.
        label: LabelId,
        /// New confidentiality, if given.
        confidentiality: Option<Confidentiality>,
        /// New integrity, if given.
        integrity: Option<IntegrityLevel>,
    },
    /// Marks a resource deleted (final).
    Delete {
        /// The resource.
        label: LabelId,
    },
    /// Turns consent enforcement on or off.
    SetConsentEnforced {
        /// The resource.
        label: LabelId,
        /// On or off.
        enforce: bool,
    },
    /// Remembers (or overrides) a consent decision.
    ConsentDecision {
        /// The source.
        source: LabelId,
        /// The destination it applies to.
        destination: ConsentKey,
        /// Allowed or refused.
        grant: bool,
    },
    /// A flow happened: merges provenance and records the lineage edge.
    Flow {
        /// Source.
        source: LabelId,
        /// Destination.
        destination: LabelId,
        /// Bytes carried.
        bytes: u64,
        /// When, unix µs.
        time_us: u64,
    },
    /// A flow from another node happened (a peer's process wrote to a stream whose
    /// receiving side is here): the destination takes the writer and its provenance, as
    /// the peer sent them, and the lineage edge writer → destination is recorded.
    Import {
        /// The writer (a resource of the peer).
        writer: LabelId,
        /// The writer's provenance.
        provenance: Vec<LabelId>,
        /// Destination.
        destination: LabelId,
        /// Bytes carried.
        bytes: u64,
        /// When, unix µs.
        time_us: u64,
    },
    /// Appends an audit record.
    Audit(AuditEntry),
    /// Appends a flow's audit record (the same as `Audit` of [`FlowRecord::entry`]).
    FlowAudit(FlowRecord),
}

/// A change that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// A label id that was never allocated.
    #[error("unknown label {0:?}")]
    UnknownLabel(LabelId),
    /// The resource is deleted: its policy is frozen.
    #[error("{0} is deleted: its policy can no longer change")]
    Deleted(LocalizedResource),
    /// The process is not attached.
    #[error("process {0} is not attached")]
    UnknownProcess(ProcessId),
    /// Nothing is enrolled under this fd.
    #[error("fd {fd} of process {process} is not enrolled")]
    NotEnrolled {
        /// The process.
        process: ProcessId,
        /// The fd.
        fd: Fd,
    },
    /// A resource is already interned.
    #[error("{0} already has a label")]
    AlreadyInterned(LocalizedResource),
    /// No more label ids.
    #[error("label table full")]
    Full,
    /// The journal cannot record the change (disk full, I/O error): it was not applied.
    #[error("the change cannot be recorded: {0}")]
    Unrecorded(String),
}

/// All durable state of one engine.
#[derive(Debug, Default)]
pub struct State {
    labels: Vec<Label>,
    ids: FastMap<LocalizedResource, LabelId>,
    enrollments: Enrollments,
    consent: FastMap<(LabelId, ConsentKey), bool>,
    lineage: Lineage,
    audit: AuditLog,
    /// Bumped by every change a compliance decision may depend on other than provenance
    /// (policies, deletion, consent, process attributes).
    epoch: u64,
    /// Where accepted changes are recorded; `None`: in memory only.
    journal: Option<Journal>,
}

impl State {
    /// Empty state, its audit trail all in memory.
    pub fn new() -> Self {
        Self::with_audit(AuditLog::default())
    }

    /// Empty state with an (empty) audit trail kept as `audit` is.
    pub fn with_audit(audit: AuditLog) -> Self {
        Self {
            labels: Vec::new(),
            ids: FastMap::default(),
            enrollments: Enrollments::default(),
            consent: FastMap::default(),
            lineage: Lineage::default(),
            audit,
            epoch: 0,
            journal: None,
        }
    }

    /// From now on, records every change it accepts in `journal` first.
    pub fn attach_journal(&mut self, journal: Journal) {
        self.journal = Some(journal);
    }

    /// The journal, if the state is durable.
    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    /// Number of the next record of the journal (0 without one).
    pub fn next_record(&self) -> u64 {
        self.journal.as_ref().map_or(0, Journal::next_lsn)
    }

    /// The label of `r`, if it has one.
    pub fn id(&self, r: &LocalizedResource) -> Option<LabelId> {
        self.ids.get(r).copied()
    }

    /// The label `id`.
    pub fn label(&self, id: LabelId) -> Option<&Label> {
        self.labels.get(id.index())
    }

    /// The resource of label `id` (`None` for an id never allocated).
    pub fn resource(&self, id: LabelId) -> Option<&LocalizedResource> {
        self.label(id).map(|l| &l.resource)
    }

    /// The id the next [`Change::Intern`] allocates.
    pub fn next_label(&self) -> Option<LabelId> {
        LabelId::from_index(self.labels.len())
    }

    /// Number of labels.
    pub fn labels(&self) -> usize {
        self.labels.len()
    }

    /// Enrollment tables.
    pub fn enrollments(&self) -> &Enrollments {
        &self.enrollments
    }

    /// A remembered consent decision.
    pub fn consent_decision(&self, source: LabelId, destination: &ConsentKey) -> Option<bool> {
        self.consent.get(&(source, destination.clone())).copied()
    }

    /// The lineage graph.
    pub fn lineage(&self) -> &Lineage {
        &self.lineage
    }

    /// The audit trail.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The policy epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    fn label_mut(&mut self, id: LabelId) -> Result<&mut Label, StateError> {
        self.labels.get_mut(id.index()).ok_or(StateError::UnknownLabel(id))
    }

    fn check(&self, id: LabelId) -> Result<(), StateError> {
        self.label(id).map(|_| ()).ok_or(StateError::UnknownLabel(id))
    }

    /// Applies one change: the only way this state changes. A change that returns an
    /// error changed nothing. With a journal, the change is encoded into it first and
    /// published once applied: a change is on record exactly when it is in force
    /// ([`StateError::Unrecorded`] when it cannot be recorded).
    pub fn apply(&mut self, change: Change) -> Result<(), StateError> {
        self.apply_recorded(change).map_err(|failed| failed.0)
    }

    /// [`State::apply`], handing the change back when it could not be recorded (boxed:
    /// only a failure pays for it).
    fn apply_recorded(&mut self, change: Change) -> Result<(), Box<(StateError, Option<Change>)>> {
        let Some(mut journal) = self.journal.take() else {
            return self.apply_in_memory(change).map_err(|e| Box::new((e, None)));
        };
        let result = match journal.stage(&change) {
            Err(why) => Err(Box::new((StateError::Unrecorded(why), Some(change)))),
            Ok(staged) => match self.apply_in_memory(change) {
                Ok(()) => {
                    journal.commit(staged);
                    Ok(())
                }
                Err(e) => {
                    journal.discard(staged);
                    Err(Box::new((e, None)))
                }
            },
        };
        self.journal = Some(journal);
        result
    }

    /// Applies a change that reflects something that already happened (a flow that was
    /// performed, a process that is gone) even when it cannot be recorded: in memory at
    /// least, so that the live daemon keeps enforcing it (recovery derives it again from
    /// the grant on record). Returns whether it was recorded.
    pub fn apply_fact(&mut self, change: Change) -> Result<bool, StateError> {
        let Err(failed) = self.apply_recorded(change) else { return Ok(true) };
        match *failed {
            (StateError::Unrecorded(why), Some(change)) => {
                tracing::error!(problem = %why, "a change is kept in memory only");
                self.apply_in_memory(change).map(|()| false)
            }
            (e, _) => Err(e),
        }
    }

    fn apply_in_memory(&mut self, change: Change) -> Result<(), StateError> {
        match change {
            Change::Intern(r) => {
                if self.ids.contains_key(&r) {
                    return Err(StateError::AlreadyInterned(r));
                }
                let id = self.next_label().ok_or(StateError::Full)?;
                self.ids.insert(r.clone(), id);
                self.labels.push(Label {
                    resource: r,
                    policy: StoredPolicy::default(),
                    provenance: LabelProvenance::default(),
                    process: None,
                });
            }
            Change::Attach { process, label, exe, exe_label, uid } => {
                self.check(exe_label)?;
                let l = self.label_mut(label)?;
                l.process = Some(ProcessAttributes { exe: exe.clone(), exe_label });
                self.enrollments.attach(process, ProcessRecord { label, exe, exe_label, uid });
                self.epoch += 1;
            }
            Change::Detach { process } => {
                self.enrollments.detach(process).ok_or(StateError::UnknownProcess(process))?;
            }
            Change::Enroll { process, fd, label } => {
                self.check(label)?;
                if self.enrollments.process(process).is_none() {
                    return Err(StateError::UnknownProcess(process));
                }
                self.enrollments.enroll(process, fd, label);
            }
            Change::Unenroll { process, fd } => {
                self.enrollments.unenroll(process, fd).ok_or(StateError::NotEnrolled { process, fd })?;
            }
            Change::SetPolicy { label, confidentiality, integrity } => {
                let l = self.label_mut(label)?;
                if l.policy.deleted {
                    return Err(StateError::Deleted(l.resource.clone()));
                }
                if confidentiality.is_some() {
                    l.policy.confidentiality = confidentiality;
                }
                if integrity.is_some() {
                    l.policy.integrity = integrity;
                }
                self.epoch += 1;
            }
            Change::Delete { label } => {
                self.label_mut(label)?.policy.deleted = true;
                self.epoch += 1;
            }
            Change::SetConsentEnforced { label, enforce } => {
                let l = self.label_mut(label)?;
                if l.policy.deleted {
                    return Err(StateError::Deleted(l.resource.clone()));
                }
                l.policy.consent = enforce;
                self.epoch += 1;
            }
            Change::ConsentDecision { source, destination, grant } => {
                self.check(source)?;
                if let ConsentKey::Resource(d) = &destination {
                    self.check(*d)?;
                }
                self.consent.insert((source, destination), grant);
                self.epoch += 1;
            }
            Change::Flow { source, destination, bytes, time_us } => {
                self.check(source)?;
                self.check(destination)?;
                if source != destination {
                    let (s, d) = (source.index(), destination.index());
                    // Split borrows: the source is read while the destination grows.
                    let (src, dst) = if s < d {
                        let (lo, hi) = self.labels.split_at_mut(d);
                        (&lo[s], &mut hi[0])
                    } else {
                        let (lo, hi) = self.labels.split_at_mut(s);
                        (&hi[0], &mut lo[d])
                    };
                    let _: Merge = dst.provenance.merge(destination, source, &src.provenance);
                }
                self.lineage.record(source, destination, bytes, time_us);
            }
            Change::Import { writer, provenance, destination, bytes, time_us } => {
                self.check(writer)?;
                for id in &provenance {
                    self.check(*id)?;
                }
                let mut all = provenance;
                all.push(writer);
                let _: Merge = self.label_mut(destination)?.provenance.merge_set(destination, &all);
                self.lineage.record(writer, destination, bytes, time_us);
            }
            Change::Audit(entry) => {
                self.audit.append(entry);
            }
            Change::FlowAudit(record) => {
                self.audit.append_flow(record);
            }
        }
        Ok(())
    }

    /// Everything this state holds, as deterministic text (for tests that compare
    /// states: labels with their provenance, consent, lineage, enrollments, epoch, audit).
    #[cfg(test)]
    pub fn dump(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for (i, l) in self.labels.iter().enumerate() {
            let _ = writeln!(out, "label {i}: {l:?}");
        }
        let mut consent: Vec<String> = self.consent.iter().map(|(k, v)| format!("consent {k:?} = {v}")).collect();
        consent.sort();
        let mut lineage: Vec<String> = self.lineage.edges().map(|(k, v)| format!("edge {k:?} {v:?}")).collect();
        lineage.sort();
        let mut enrolled: Vec<String> = self
            .enrollments
            .attached()
            .into_iter()
            .map(|p| format!("process {p} {:?} fds {:?}", self.enrollments.process(p), self.enrollments.fds_of(p)))
            .collect();
        enrolled.sort();
        for line in consent.iter().chain(&lineage).chain(&enrolled) {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "epoch {}", self.epoch);
        let all = crate::audit::AuditQuery { limit: 0, ..Default::default() };
        for (seq, e) in self.audit.query(&all, None).unwrap() {
            let _ = writeln!(out, "audit {seq}: {e:?}");
        }
        out
    }

    /// The label of `r`, interning it first if needed.
    pub fn intern(&mut self, r: &LocalizedResource) -> Result<LabelId, StateError> {
        if let Some(id) = self.id(r) {
            return Ok(id);
        }
        let id = self.next_label().ok_or(StateError::Full)?;
        self.apply(Change::Intern(r.clone()))?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trace2e_proto::Resource;

    fn n1() -> NodeId {
        NodeId::new("n1").unwrap()
    }

    fn file(state: &mut State, p: &str) -> LabelId {
        let r = Resource::file(p).unwrap().at(&n1());
        state.intern(&r).unwrap()
    }

    #[test]
    fn interning_is_stable_and_dense() {
        let mut s = State::new();
        let a = file(&mut s, "/a");
        let b = file(&mut s, "/b");
        assert_eq!(file(&mut s, "/a"), a);
        assert_eq!((a.index(), b.index()), (0, 1));
        assert_eq!(s.resource(b).unwrap().to_string(), "file:///b@n1");
        let dup = s.resource(a).unwrap().clone();
        assert!(matches!(s.apply(Change::Intern(dup)), Err(StateError::AlreadyInterned(_))));
    }

    #[test]
    fn deleted_labels_are_frozen_and_policy_changes_bump_the_epoch() {
        let mut s = State::new();
        let a = file(&mut s, "/a");
        let e0 = s.epoch();
        s.apply(Change::SetPolicy { label: a, confidentiality: None, integrity: Some(IntegrityLevel(2)) }).unwrap();
        assert!(s.epoch() > e0);
        s.apply(Change::Delete { label: a }).unwrap();
        s.apply(Change::Delete { label: a }).unwrap();
        let err = s.apply(Change::SetPolicy { label: a, confidentiality: None, integrity: None }).unwrap_err();
        assert!(matches!(err, StateError::Deleted(_)));
        assert_eq!(s.label(a).unwrap().policy.integrity, Some(IntegrityLevel(2)));
    }

    #[test]
    fn flows_merge_provenance_and_lineage() {
        let mut s = State::new();
        let (f1, p, f2) = (file(&mut s, "/f1"), file(&mut s, "/p"), file(&mut s, "/f2"));
        s.apply(Change::Flow { source: f1, destination: p, bytes: 3, time_us: 1 }).unwrap();
        s.apply(Change::Flow { source: p, destination: f2, bytes: 4, time_us: 2 }).unwrap();
        // Destination before source in id order as well.
        s.apply(Change::Flow { source: f2, destination: f1, bytes: 1, time_us: 3 }).unwrap();
        assert_eq!(s.label(f2).unwrap().provenance.labels(), &[f1, p]);
        assert_eq!(s.label(f1).unwrap().provenance.labels(), &[p, f2]);
        assert_eq!(s.lineage().len(), 3);
        let bad = LabelId::from_index(99).unwrap();
        assert!(s.apply(Change::Flow { source: bad, destination: p, bytes: 0, time_us: 0 }).is_err());
    }

    #[test]
    fn enrollment_requires_an_attached_process() {
        let mut s = State::new();
        let f = file(&mut s, "/f");
        let process = ProcessId { pid: 1, starttime: 1 };
        let err = s.apply(Change::Enroll { process, fd: Fd(3), label: f }).unwrap_err();
        assert_eq!(err, StateError::UnknownProcess(process));
        let pl = s.intern(&Resource::Process(process).at(&n1())).unwrap();
        let el = s.intern(&Resource::Executable("/bin/x".into()).at(&n1())).unwrap();
        s.apply(Change::Attach { process, label: pl, exe: "/bin/x".into(), exe_label: el, uid: UserId(0) }).unwrap();
        s.apply(Change::Enroll { process, fd: Fd(3), label: f }).unwrap();
        assert_eq!(s.enrollments().resource(process, Fd(3)), Some(f));
        s.apply(Change::Detach { process }).unwrap();
        assert_eq!(s.label(pl).unwrap().process.as_ref().unwrap().exe, PathBuf::from("/bin/x"));
    }
}
