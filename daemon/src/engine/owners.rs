//! Asking owners: the resources of a flow's provenance that peers own, grouped by owner
//! and asked in parallel (CheckSources), and the cache of their approvals.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use trace2e_proto::{Denial, LocalizedResource, NodeId, Policy, PolicyKind};

use super::{ApprovalKey, Engine, Flow};
use crate::FastMap;
use crate::compliance::{Destination, UnknownLabel};
use crate::provenance::LabelId;
use crate::remote::{RemoteError, RemoteTarget, SourcesQuestion};
use crate::state::State;

/// What a decision about a source depended on: the source's provenance version, this
/// node's policy epoch, and the peers' notice epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    pub(super) version: u64,
    pub(super) epoch: u64,
    pub(super) remote_epoch: u64,
}

impl Engine {
    pub(super) fn stamp(&self, state: &State, source: LabelId) -> Result<Stamp, UnknownLabel> {
        Ok(Stamp {
            version: state.label(source).ok_or(UnknownLabel(source))?.provenance.version(),
            epoch: state.epoch(),
            remote_epoch: self.remote_epoch.load(Ordering::Acquire),
        })
    }

    pub(super) fn fresh(&self, at: Instant) -> bool {
        at.elapsed() < self.config.remote_cache_ttl
    }

    pub(super) fn approved(&self, key: &ApprovalKey, stamp: Stamp) -> bool {
        self.approvals.lock().get(key).is_some_and(|(s, at)| *s == stamp && self.fresh(*at))
    }

    /// The resources among `source` and its provenance that other nodes own, by owner.
    pub(super) fn remote_owners(
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
    pub(super) fn remote_target(
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
    pub(super) async fn ask_owners(
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
}

/// The denial of a flow that needed `resource`'s node, which could not be asked.
pub(super) fn unreachable_denial(resource: LocalizedResource, e: &RemoteError) -> Denial {
    Denial { policy: PolicyKind::Unreachable, resource, reason: e.to_string() }
}
