//! Compliance: whether data may flow from a source (and everything in its provenance) to
//! a destination.
//!
//! Owns the policy rules of ARCHITECTURE.md (deletion, integrity, confidentiality, and
//! the lookup of remembered consent decisions), the effective policy of a resource
//! (processes inherit from their executable), and the decision cache. It does not wait
//! for consent (the engine does, with `consent`), reserve anything, or change state.
//!
//! Evaluation order: a deleted destination first; then deletion, integrity and
//! confidentiality, each over the sources in the order "the source itself, then its
//! provenance sorted by `LocalizedResource`" (the first offender is named); then consent.
//! Consent is asked only when every deterministic rule passes.
//!
//! Over 600 lines with its unit tests (two fifths of the file: one per rule and per
//! interaction of rules), kept beside the rules they check.

use std::net::SocketAddr;

use trace2e_proto::{Confidentiality, Denial, IntegrityLevel, LocalizedResource, NodeId, Policy, PolicyKind, Resource};

use crate::FastMap;
use crate::provenance::LabelId;
use crate::state::{ConsentKey, Label, State};
use crate::topology::{Owner, Topology};

/// Where a flow's data goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    /// A labelled resource (on this node or, with federation, another managed node).
    Label(LabelId),
    /// An external peer: no label, level 0, never receives secret data. `stream` is the
    /// stream as the writing process enrolled it (used to name it and for consent).
    External {
        /// The enrolled stream.
        stream: LabelId,
        /// The peer's address.
        peer: SocketAddr,
    },
}

/// The outcome of evaluating the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every rule passes (and every consent needed was given).
    Grant,
    /// A rule refuses.
    Deny(Denial),
    /// The deterministic rules pass, but the owner of `source` enforces consent and has
    /// not decided for this destination yet.
    AskConsent {
        /// The source needing a decision (for the destination the caller evaluated).
        source: LabelId,
    },
}

/// A label id that is not in the state (an engine bug, never client input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown label {0:?}")]
pub struct UnknownLabel(pub LabelId);

/// The node-wide parameters of the rules.
#[derive(Debug, Clone)]
pub struct Rules {
    /// This node and its addresses.
    pub topology: Topology,
    /// The integrity level of processes whose executable has no policy.
    pub default_process_integrity: IntegrityLevel,
}

impl Rules {
    fn exe_policy<'s>(&self, state: &'s State, label: &Label) -> Option<&'s Label> {
        label.process.as_ref().and_then(|p| state.label(p.exe_label))
    }

    fn is_local(&self, label: &Label) -> bool {
        label.resource.node == self.topology.node
    }

    /// Effective integrity level of a labelled resource.
    pub fn integrity(&self, state: &State, label: &Label) -> IntegrityLevel {
        match &label.resource.resource {
            Resource::Process(_) if self.is_local(label) => label
                .policy
                .integrity
                .or_else(|| self.exe_policy(state, label).and_then(|e| e.policy.integrity))
                .unwrap_or(self.default_process_integrity),
            Resource::Stream(s) if self.is_local(label) && self.topology.owner(s.peer.ip()) == Owner::External => {
                IntegrityLevel(0)
            }
            _ => label.policy.integrity.unwrap_or_default(),
        }
    }

    /// Whether a label is a *conduit* as a source: the receiving side of a stream from a
    /// managed peer node, without an explicit integrity level. Its data comes from its
    /// provenance, whose owners judge it; a default level 0 would make every stream
    /// between nodes unacceptable to a destination of level > 0.
    pub fn conduit(&self, label: &Label) -> bool {
        match &label.resource.resource {
            Resource::Stream(s) if self.is_local(label) && label.policy.integrity.is_none() => {
                matches!(self.topology.owner(s.peer.ip()), Owner::Peer(_))
            }
            _ => false,
        }
    }

    /// Effective confidentiality of a labelled resource.
    pub fn confidentiality(&self, state: &State, label: &Label) -> Confidentiality {
        match &label.resource.resource {
            Resource::Process(_) => label
                .policy
                .confidentiality
                .or_else(|| self.exe_policy(state, label).and_then(|e| e.policy.confidentiality))
                .unwrap_or_default(),
            _ => label.policy.confidentiality.unwrap_or_default(),
        }
    }

    /// The effective policy of a label.
    pub fn policy(&self, state: &State, label: &Label) -> Policy {
        Policy {
            confidentiality: self.confidentiality(state, label),
            integrity: self.integrity(state, label),
            deleted: label.policy.deleted,
            consent: label.policy.consent,
        }
    }

    /// The effective policy of a resource without a label.
    pub fn default_policy(&self, r: &LocalizedResource) -> Policy {
        let integrity = match r.resource {
            Resource::Process(_) if r.node == self.topology.node => self.default_process_integrity,
            _ => IntegrityLevel(0),
        };
        Policy { integrity, ..Policy::default() }
    }
}

/// `file:///x@n1`, or `process://1.2@n1 (/usr/bin/x)` for a process.
fn describe(label: &Label) -> String {
    match &label.process {
        Some(p) => format!("{} ({})", label.resource, p.exe.display()),
        None => label.resource.to_string(),
    }
}

fn get(state: &State, id: LabelId) -> Result<&Label, UnknownLabel> {
    state.label(id).ok_or(UnknownLabel(id))
}

/// The first offender of one rule: the source itself, else the smallest resource.
struct Offender<'s> {
    found: Option<(bool, &'s Label)>,
}

impl<'s> Offender<'s> {
    fn offer(&mut self, is_source: bool, label: &'s Label) {
        let better = match self.found {
            None => true,
            Some((true, _)) => false,
            Some((false, cur)) => is_source || label.resource < cur.resource,
        };
        if better {
            self.found = Some((is_source, label));
        }
    }
}

/// What the rules need to know of a flow's destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// How denials name it (`file:///x@n1`, `external peer 9.9.9.9:80`).
    pub name: String,
    /// The node it lives on; `None` for an external peer.
    pub node: Option<NodeId>,
    /// Its integrity level (0 for an external peer).
    pub integrity: IntegrityLevel,
    /// Its confidentiality (external peers are never secret).
    pub confidentiality: Confidentiality,
    /// The label consent decisions for it are remembered under; `None` for a resource
    /// this node holds no label for (only node-wide decisions can apply to it).
    pub consent_key: Option<LabelId>,
}

/// Which sources of a flow this node judges with the policies it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Judged {
    /// Every source, with the policies in this state (the rules in isolation).
    All,
    /// This node's own resources; a resource of another node only by its deletion
    /// tombstone (its owner decides the rest, asked over M2M).
    OwnOnly,
}

/// Evaluates a flow of `source` (and its provenance) to `destination`, without cache.
/// `destination_policy`, when given, is the destination's policy as its owner states it
/// (a stream side owned by a peer); a local tombstone on the destination still counts.
pub fn evaluate_with(
    state: &State,
    rules: &Rules,
    source: LabelId,
    destination: Destination,
    destination_policy: Option<Policy>,
    judged: Judged,
) -> Result<Verdict, UnknownLabel> {
    let src = get(state, source)?;
    let target = match destination {
        Destination::Label(d) => {
            let dst = get(state, d)?;
            let (integrity, confidentiality, deleted) = match destination_policy {
                Some(p) => (p.integrity, p.confidentiality, p.deleted || dst.policy.deleted),
                None => (rules.integrity(state, dst), rules.confidentiality(state, dst), dst.policy.deleted),
            };
            if deleted {
                return Ok(Verdict::Deny(Denial {
                    policy: PolicyKind::Deletion,
                    resource: dst.resource.clone(),
                    reason: format!("destination {} is deleted: nothing may flow into it", dst.resource),
                }));
            }
            Target {
                name: dst.resource.to_string(),
                node: Some(dst.resource.node.clone()),
                integrity,
                confidentiality,
                consent_key: Some(d),
            }
        }
        Destination::External { stream, peer } => Target {
            name: format!("external peer {peer}"),
            node: None,
            integrity: IntegrityLevel(0),
            confidentiality: Confidentiality::Public,
            consent_key: Some(stream),
        },
    };
    let sources = std::iter::once(Ok((true, src, Some(source))))
        .chain(src.provenance.labels().iter().map(|id| get(state, *id).map(|l| (false, l, Some(*id)))));
    let own = &rules.topology.node;
    judge(state, rules, sources, |l| judged == Judged::All || &l.resource.node == own, &target)
}

/// The owner's side of a remote question: may `sources` (resources of this node, with
/// their label here if they have one) flow to `target`? Every source is judged; the
/// smallest offender is named.
pub fn evaluate_owned<'s>(
    state: &'s State,
    rules: &Rules,
    sources: &[(Option<LabelId>, &'s Label)],
    target: &Target,
) -> Result<Verdict, UnknownLabel> {
    judge(state, rules, sources.iter().map(|(id, l)| Ok((false, *l, *id))), |_| true, target)
}

/// The rules over `sources` (`(is the flow's source itself, label, id)`). A source for
/// which `full` is false is judged only by its deletion tombstone.
fn judge<'s>(
    state: &'s State,
    rules: &Rules,
    sources: impl Iterator<Item = Result<(bool, &'s Label, Option<LabelId>), UnknownLabel>>,
    full: impl Fn(&Label) -> bool,
    target: &Target,
) -> Result<Verdict, UnknownLabel> {
    let dst_name = &target.name;
    let mut deleted = Offender { found: None };
    let mut integrity = Offender { found: None };
    let mut secret = Offender { found: None };
    let mut consent: Vec<(bool, &Label, LabelId)> = Vec::new();
    for s in sources {
        let (is_source, s, id) = s?;
        if s.policy.deleted {
            deleted.offer(is_source, s);
        }
        if !full(s) {
            continue;
        }
        if rules.integrity(state, s) < target.integrity && !rules.conduit(s) {
            integrity.offer(is_source, s);
        }
        if rules.confidentiality(state, s) == Confidentiality::Secret {
            let allowed = match &target.node {
                None => false,
                Some(node) => node == &s.resource.node || target.confidentiality == Confidentiality::Secret,
            };
            if !allowed {
                secret.offer(is_source, s);
            }
        }
        if s.policy.consent
            && let Some(id) = id
        {
            consent.push((is_source, s, id));
        }
    }
    if let Some((_, s)) = deleted.found {
        return Ok(Verdict::Deny(Denial {
            policy: PolicyKind::Deletion,
            resource: s.resource.clone(),
            reason: format!("{} is deleted: nothing derived from it may flow to {dst_name}", s.resource),
        }));
    }
    if let Some((_, s)) = integrity.found {
        return Ok(Verdict::Deny(Denial {
            policy: PolicyKind::Integrity,
            resource: s.resource.clone(),
            reason: format!(
                "integrity {} of {} is below {} required by {dst_name}",
                rules.integrity(state, s),
                describe(s),
                target.integrity
            ),
        }));
    }
    if let Some((_, s)) = secret.found {
        let reason = match target.node {
            None => format!("secret data of {} may never flow to {dst_name}", describe(s)),
            Some(_) => format!(
                "secret data of {} (owned by {}) may not flow to {dst_name}, which is not secret",
                describe(s),
                s.resource.node
            ),
        };
        return Ok(Verdict::Deny(Denial { policy: PolicyKind::Confidentiality, resource: s.resource.clone(), reason }));
    }
    if consent.is_empty() {
        return Ok(Verdict::Grant);
    }
    Ok(consent_verdict(state, consent, target))
}

fn consent_verdict(state: &State, sources: Vec<(bool, &Label, LabelId)>, target: &Target) -> Verdict {
    let node_key = target.node.as_ref().map(|n| ConsentKey::Node(n.clone()));
    let resource_key = target.consent_key.map(ConsentKey::Resource);
    let decision = |id: LabelId| {
        resource_key
            .as_ref()
            .and_then(|k| state.consent_decision(id, k))
            .or_else(|| node_key.as_ref().and_then(|k| state.consent_decision(id, k)))
    };
    let mut refused = Offender { found: None };
    let mut ask: Option<(bool, &Label, LabelId)> = None;
    for (is_source, s, id) in sources {
        match decision(id) {
            Some(true) => {}
            Some(false) => refused.offer(is_source, s),
            None => {
                let better = match ask {
                    None => true,
                    Some((true, _, _)) => false,
                    Some((false, cur, _)) => is_source || s.resource < cur.resource,
                };
                if better {
                    ask = Some((is_source, s, id));
                }
            }
        }
    }
    if let Some((_, s)) = refused.found {
        return Verdict::Deny(Denial {
            policy: PolicyKind::Consent,
            resource: s.resource.clone(),
            reason: format!("the owner of {} refused consent for {}", s.resource, target.name),
        });
    }
    match ask {
        Some((_, _, id)) => Verdict::AskConsent { source: id },
        None => Verdict::Grant,
    }
}

/// Remembers verdicts of repeated flows so that an unchanged flow is decided in O(1).
///
/// Keyed by (source, destination); valid while the source's provenance version and the
/// state's policy epoch (bumped by every policy, deletion, consent and process attribute
/// change) are those it was computed with. `AskConsent` is never cached.
#[derive(Debug, Default)]
pub struct ComplianceCache {
    entries: FastMap<(LabelId, Destination, Option<Policy>), (u64, Verdict)>,
    epoch: u64,
    hits: u64,
}

impl ComplianceCache {
    /// Bound on entries; the cache is cleared when it is reached.
    const CAPACITY: usize = 1 << 16;

    /// [`evaluate_with`] (this node's own judgement: [`Judged::OwnOnly`]), through the
    /// cache; `destination_policy` is the destination's policy as its owner (a peer)
    /// states it, and part of the key.
    pub fn evaluate_for(
        &mut self,
        state: &State,
        rules: &Rules,
        source: LabelId,
        destination: Destination,
        destination_policy: Option<Policy>,
    ) -> Result<Verdict, UnknownLabel> {
        if state.epoch() != self.epoch {
            self.entries.clear();
            self.epoch = state.epoch();
        }
        let version = get(state, source)?.provenance.version();
        let key = (source, destination, destination_policy);
        if let Some((v, verdict)) = self.entries.get(&key)
            && *v == version
        {
            self.hits += 1;
            return Ok(verdict.clone());
        }
        let verdict = evaluate_with(state, rules, source, destination, destination_policy, Judged::OwnOnly)?;
        if !matches!(verdict, Verdict::AskConsent { .. }) {
            if self.entries.len() >= Self::CAPACITY {
                self.entries.clear();
            }
            self.entries.insert(key, (version, verdict.clone()));
        }
        Ok(verdict)
    }

    /// How many evaluations the cache answered.
    pub fn hits(&self) -> u64 {
        self.hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrollment::UserId;
    use crate::state::Change;
    use trace2e_proto::{NodeId, ProcessId};

    fn n(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    fn rules(default: u32) -> Rules {
        Rules {
            topology: Topology::new(n("n1"), vec!["10.0.0.1".parse().unwrap()]),
            default_process_integrity: IntegrityLevel(default),
        }
    }

    struct World {
        state: State,
    }

    impl World {
        fn new() -> Self {
            Self { state: State::new() }
        }

        fn label(&mut self, text: &str) -> LabelId {
            let r: LocalizedResource = text.parse().unwrap();
            self.state.intern(&r).unwrap()
        }

        fn policy(&mut self, id: LabelId, conf: Option<Confidentiality>, integrity: Option<u32>) {
            let change =
                Change::SetPolicy { label: id, confidentiality: conf, integrity: integrity.map(IntegrityLevel) };
            self.state.apply(change).unwrap();
        }

        fn delete(&mut self, id: LabelId) {
            self.state.apply(Change::Delete { label: id }).unwrap();
        }

        fn flow(&mut self, from: LabelId, to: LabelId) {
            self.state.apply(Change::Flow { source: from, destination: to, bytes: 1, time_us: 0 }).unwrap();
        }

        fn process(&mut self, pid: u32, exe: &str) -> LabelId {
            let process = ProcessId { pid, starttime: 1 };
            let label = self.state.intern(&Resource::Process(process).at(&n("n1"))).unwrap();
            let exe_label = self.state.intern(&Resource::Executable(exe.into()).at(&n("n1"))).unwrap();
            let change = Change::Attach { process, label, exe: exe.into(), exe_label, uid: UserId(0) };
            self.state.apply(change).unwrap();
            label
        }

        fn eval(&self, rules: &Rules, src: LabelId, dst: Destination) -> Verdict {
            evaluate_with(&self.state, rules, src, dst, None, Judged::All).unwrap()
        }
    }

    fn kind(v: &Verdict) -> Option<PolicyKind> {
        match v {
            Verdict::Grant => None,
            Verdict::Deny(d) => Some(d.policy),
            Verdict::AskConsent { .. } => Some(PolicyKind::Consent),
        }
    }

    const PUBLIC: Confidentiality = Confidentiality::Public;
    const SECRET: Confidentiality = Confidentiality::Secret;

    #[derive(Clone, Copy, Debug)]
    enum Dst {
        /// A file on this node (n1), with its confidentiality.
        Local(Confidentiality),
        /// A file on another managed node (n2), with its confidentiality.
        Foreign(Confidentiality),
        External,
    }

    /// (source owner, source conf, source level, source deleted, destination,
    /// destination level, destination deleted, expected denial)
    type Row = (&'static str, Confidentiality, u32, bool, Dst, u32, bool, Option<PolicyKind>);

    #[test]
    fn confidentiality_integrity_deletion_matrix() {
        // (source owner, source conf, source level, source deleted,
        //  destination, destination level, destination deleted) → expected
        #[rustfmt::skip]
        let table: &[Row] = &[

            ("n1", PUBLIC, 0, false, Dst::Local(PUBLIC), 0, false, None),
            ("n1", PUBLIC, 0, false, Dst::Foreign(PUBLIC), 0, false, None),
            ("n1", PUBLIC, 0, false, Dst::External, 0, false, None),
            ("n1", SECRET, 0, false, Dst::Local(PUBLIC), 0, false, None),
            ("n1", SECRET, 0, false, Dst::Foreign(PUBLIC), 0, false, Some(PolicyKind::Confidentiality)),
            ("n1", SECRET, 0, false, Dst::Foreign(SECRET), 0, false, None),
            ("n1", SECRET, 0, false, Dst::External, 0, false, Some(PolicyKind::Confidentiality)),
            ("n2", SECRET, 0, false, Dst::Local(PUBLIC), 0, false, Some(PolicyKind::Confidentiality)),
            ("n2", SECRET, 0, false, Dst::Local(SECRET), 0, false, None),
            ("n2", SECRET, 0, false, Dst::Foreign(PUBLIC), 0, false, None),
            ("n2", SECRET, 0, false, Dst::External, 0, false, Some(PolicyKind::Confidentiality)),
            ("n1", PUBLIC, 1, false, Dst::Local(PUBLIC), 1, false, None),
            ("n1", PUBLIC, 2, false, Dst::Local(PUBLIC), 1, false, None),
            ("n1", PUBLIC, 0, false, Dst::Local(PUBLIC), 1, false, Some(PolicyKind::Integrity)),
            ("n1", PUBLIC, 0, false, Dst::Foreign(SECRET), 3, false, Some(PolicyKind::Integrity)),
            ("n1", PUBLIC, 0, true, Dst::Local(PUBLIC), 0, false, Some(PolicyKind::Deletion)),
            ("n1", PUBLIC, 0, false, Dst::Local(PUBLIC), 0, true, Some(PolicyKind::Deletion)),
            ("n1", SECRET, 0, true, Dst::External, 0, false, Some(PolicyKind::Deletion)),
            ("n1", SECRET, 0, false, Dst::Local(PUBLIC), 5, false, Some(PolicyKind::Integrity)),
            ("n1", SECRET, 0, false, Dst::Foreign(PUBLIC), 5, false, Some(PolicyKind::Integrity)),
            ("n2", PUBLIC, 0, true, Dst::Local(PUBLIC), 1, false, Some(PolicyKind::Deletion)),
        ];
        let rules = rules(0);
        for (i, &(owner, conf, level, deleted, dst, dlevel, ddeleted, want)) in table.iter().enumerate() {
            let mut w = World::new();
            // The checked resource sits in the provenance of a default local file that is
            // the flow's source, so both the source itself and provenance are covered.
            let origin = w.label(&format!("file:///origin@{owner}"));
            w.policy(origin, Some(conf), Some(level));
            if deleted {
                w.delete(origin);
            }
            let via = w.label("file:///via@n1");
            w.policy(via, None, Some(100));
            w.flow(origin, via);
            let destination = match dst {
                Dst::Local(c) | Dst::Foreign(c) => {
                    let node = if matches!(dst, Dst::Local(_)) { "n1" } else { "n2" };
                    let d = w.label(&format!("file:///dst@{node}"));
                    w.policy(d, Some(c), Some(dlevel));
                    if ddeleted {
                        w.delete(d);
                    }
                    Destination::Label(d)
                }
                Dst::External => {
                    let s = w.label("tcp://10.0.0.1:4000/9.9.9.9:80@n1");
                    Destination::External { stream: s, peer: "9.9.9.9:80".parse().unwrap() }
                }
            };
            let got = w.eval(&rules, via, destination);
            assert_eq!(kind(&got), want, "row {i}: {got:?}");
            if let Verdict::Deny(d) = &got
                && !ddeleted
            {
                assert_eq!(d.resource.to_string(), format!("file:///origin@{owner}"), "row {i}: names the offender");
            }
            // The same flow directly from the origin.
            let direct = w.eval(&rules, origin, destination);
            assert_eq!(kind(&direct), want, "row {i} direct: {direct:?}");
        }
    }

    #[test]
    fn a_deleted_destination_denies_even_without_provenance() {
        let mut w = World::new();
        let p = w.process(10, "/bin/app");
        let d = w.label("file:///gone@n1");
        w.delete(d);
        let v = w.eval(&rules(0), p, Destination::Label(d));
        let Verdict::Deny(denial) = v else { panic!("granted") };
        assert_eq!(denial.policy, PolicyKind::Deletion);
        assert_eq!(denial.resource.to_string(), "file:///gone@n1");
    }

    #[test]
    fn a_local_process_reads_local_secret_data() {
        let mut w = World::new();
        let s = w.label("file:///secret@n1");
        w.policy(s, Some(SECRET), None);
        let p = w.process(10, "/bin/app");
        assert_eq!(w.eval(&rules(0), s, Destination::Label(p)), Verdict::Grant);
        w.flow(s, p);
        // ... but cannot send what it read to an external peer.
        let stream = w.label("tcp://10.0.0.1:4000/9.9.9.9:80@n1");
        let v = w.eval(&rules(0), p, Destination::External { stream, peer: "9.9.9.9:80".parse().unwrap() });
        let Verdict::Deny(d) = v else { panic!("granted") };
        assert_eq!((d.policy, d.resource.to_string()), (PolicyKind::Confidentiality, "file:///secret@n1".into()));
        assert!(d.reason.contains("external peer 9.9.9.9:80"), "{}", d.reason);
    }

    #[test]
    fn process_levels_come_from_policy_then_exe_then_default() {
        let mut w = World::new();
        let p = w.process(12, "/usr/bin/x");
        let f = w.label("file:///p@n1");
        w.policy(f, None, Some(2));
        assert_eq!(kind(&w.eval(&rules(2), p, Destination::Label(f))), None, "default level 2");
        let v = w.eval(&rules(1), p, Destination::Label(f));
        let Verdict::Deny(d) = v else { panic!("granted") };
        assert_eq!(d.reason, "integrity 1 of process://12.1@n1 (/usr/bin/x) is below 2 required by file:///p@n1");
        let exe = w.label("exe:///usr/bin/x@n1");
        w.policy(exe, None, Some(3));
        assert_eq!(kind(&w.eval(&rules(1), p, Destination::Label(f))), None, "exe level 3");
        w.policy(p, None, Some(1));
        assert_eq!(kind(&w.eval(&rules(5), p, Destination::Label(f))), Some(PolicyKind::Integrity), "explicit 1");
        // Confidentiality is inherited too: a secret executable's processes keep data home.
        w.policy(exe, Some(SECRET), None);
        let stream = w.label("tcp://10.0.0.1:4000/9.9.9.9:80@n1");
        let ext = Destination::External { stream, peer: "9.9.9.9:80".parse().unwrap() };
        assert_eq!(kind(&w.eval(&rules(0), p, ext)), Some(PolicyKind::Confidentiality));
    }

    #[test]
    fn streams_from_external_peers_have_level_zero() {
        let mut w = World::new();
        let s = w.label("tcp://10.0.0.1:4000/9.9.9.9:80@n1");
        w.policy(s, None, Some(5));
        let local = w.label("tcp://10.0.0.1:4001/10.0.0.1:5000@n1");
        w.policy(local, None, Some(5));
        let p = w.process(1, "/bin/a");
        w.policy(p, None, Some(1));
        assert_eq!(kind(&w.eval(&rules(0), s, Destination::Label(p))), Some(PolicyKind::Integrity));
        assert_eq!(kind(&w.eval(&rules(0), local, Destination::Label(p))), None);
    }

    #[test]
    fn the_source_itself_is_named_first_then_the_smallest_resource() {
        let mut w = World::new();
        let b = w.label("file:///b@n1");
        let a = w.label("file:///a@n1");
        let p = w.process(1, "/bin/a");
        w.flow(b, p);
        w.flow(a, p);
        let d = w.label("file:///d@n1");
        w.policy(d, None, Some(1));
        let Verdict::Deny(x) = w.eval(&rules(0), p, Destination::Label(d)) else { panic!() };
        assert_eq!(x.resource, w.state.resource(p).unwrap().clone());
        let Verdict::Deny(x) = w.eval(&rules(1), p, Destination::Label(d)) else { panic!() };
        assert_eq!(x.resource.to_string(), "file:///a@n1");
    }

    #[test]
    fn remembered_consent_and_specificity() {
        let mut w = World::new();
        let s = w.label("file:///s@n1");
        w.state.apply(Change::SetConsentEnforced { label: s, enforce: true }).unwrap();
        let d = w.label("file:///d@n1");
        let r = rules(0);
        assert_eq!(w.eval(&r, s, Destination::Label(d)), Verdict::AskConsent { source: s });
        let decide = |w: &mut World, key: ConsentKey, grant: bool| {
            w.state.apply(Change::ConsentDecision { source: s, destination: key, grant }).unwrap();
        };
        decide(&mut w, ConsentKey::Node(n("n1")), true);
        assert_eq!(w.eval(&r, s, Destination::Label(d)), Verdict::Grant);
        decide(&mut w, ConsentKey::Resource(d), false);
        assert_eq!(kind(&w.eval(&r, s, Destination::Label(d))), Some(PolicyKind::Consent), "resource beats node");
        decide(&mut w, ConsentKey::Node(n("n1")), false);
        decide(&mut w, ConsentKey::Resource(d), true);
        assert_eq!(w.eval(&r, s, Destination::Label(d)), Verdict::Grant, "resource beats node");
        // Deterministic rules first: no consent is asked for a flow that is denied anyway.
        let d2 = w.label("file:///d2@n1");
        w.policy(d2, None, Some(1));
        assert_eq!(kind(&w.eval(&r, s, Destination::Label(d2))), Some(PolicyKind::Integrity));
    }

    #[test]
    fn the_cache_is_invalidated_by_policy_and_provenance_changes() {
        let mut w = World::new();
        let r = rules(0);
        let s = w.label("file:///s@n1");
        let d = w.label("file:///d@n1");
        let mut cache = ComplianceCache::default();
        assert_eq!(cache.evaluate_for(&w.state, &r, s, Destination::Label(d), None).unwrap(), Verdict::Grant);
        assert_eq!(cache.evaluate_for(&w.state, &r, s, Destination::Label(d), None).unwrap(), Verdict::Grant);
        assert_eq!(cache.hits(), 1);
        w.policy(d, None, Some(1));
        assert_eq!(
            kind(&cache.evaluate_for(&w.state, &r, s, Destination::Label(d), None).unwrap()),
            Some(PolicyKind::Integrity)
        );
        w.policy(s, None, Some(1));
        assert_eq!(cache.evaluate_for(&w.state, &r, s, Destination::Label(d), None).unwrap(), Verdict::Grant);
        // Provenance grows with a low-integrity source: the cached grant is not reused.
        let low = w.label("file:///low@n1");
        w.flow(low, s);
        assert_eq!(
            kind(&cache.evaluate_for(&w.state, &r, s, Destination::Label(d), None).unwrap()),
            Some(PolicyKind::Integrity)
        );
        assert_eq!(cache.hits(), 1);
    }
}
