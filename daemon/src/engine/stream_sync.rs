//! Stream sync with a peer: a write to a stream whose receiving side a peer owns reserves
//! that side there (ReserveDestination) and pushes the writer's provenance on report
//! (UpdateProvenance); the steady-state shortcut skips both when the peer already holds it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use parking_lot::Mutex;
use trace2e_proto::{Denial, LocalizedResource, NodeId, Policy, Resource};

use super::owners::unreachable_denial;
use super::{Engine, EngineError, Flow};
use crate::FastMap;
use crate::compliance::{Destination, UnknownLabel};
use crate::provenance::LabelId;
use crate::remote::{BoxFuture, Federation, RemoteError, RemoteToken, ReserveQuestion};
use crate::state::{State, StateError};

/// What peers hold of a source's provenance, by (source, peer's stream side mirrored here).
pub(super) type PushedMap = Arc<Mutex<FastMap<(LabelId, LabelId), Pushed>>>;

/// The last successful UpdateProvenance of a source to a peer's stream side.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pushed {
    /// The source's provenance version the peer merged.
    pub(super) version: u64,
    /// The notice epoch when the reservation was taken.
    pub(super) remote_epoch: u64,
    /// The destination's policy the peer returned then.
    pub(super) policy: Policy,
    pub(super) at: Instant,
}

/// This node's reservation of a peer's stream side, for one flow. Ending it is
/// [`RemoteClaim::finish`] (UpdateProvenance); dropping it unfinished releases it
/// (ReleaseDestination) — on every path: denial, error, cancellation. Both run in the
/// background; the peer's own lease is the backstop when they cannot reach it.
#[derive(Debug)]
pub(super) struct RemoteClaim {
    pub(super) federation: Arc<dyn Federation>,
    pub(super) node: NodeId,
    pub(super) token: RemoteToken,
    /// Recorded in `pushed` when the update succeeds.
    pub(super) record: Option<(PushedMap, (LabelId, LabelId), Pushed)>,
    pub(super) finished: bool,
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
    pub(super) fn finish(mut self, performed: bool, bytes: u64) {
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
                Err(e) => {
                    tracing::warn!(%node, %token, error = %e, "UpdateProvenance failed; the peer's lease ends it")
                }
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
                tracing::debug!(%node, %token, error = %e, "ReleaseDestination failed; the peer's lease ends it");
            }
        }));
    }
}

impl Engine {
    /// For a write to a stream side a peer owns: the peer and its side (not localized).
    pub(super) fn remote_destination(&self, state: &State, flow: &Flow) -> Option<(NodeId, Resource)> {
        let Destination::Label(d) = flow.destination else {
            return None;
        };
        let r = state.resource(d)?;
        (r.node != *self.node() && r.resource.is_stream()).then(|| (r.node.clone(), r.resource.clone()))
    }

    /// Reserves the peer's side of the destination stream (or takes the shortcut); the
    /// destination's policy and the claim to finish, or a denial.
    pub(super) async fn reserve_remote(
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
        let token = RemoteToken(self.next_token.fetch_add(1, Ordering::Relaxed));
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
    pub(super) fn shortcut(
        &self,
        source: LabelId,
        destination: LabelId,
        version: u64,
        remote_epoch: u64,
    ) -> Option<Policy> {
        let pushed = self.pushed.lock();
        let p = pushed.get(&(source, destination))?;
        (p.version == version && p.remote_epoch == remote_epoch && self.fresh(p.at)).then_some(p.policy)
    }
}
