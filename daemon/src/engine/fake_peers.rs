//! A fake [`Federation`] for the engine's tests: two engines wired together in-process,
//! calling each other directly, counting the calls, and able to play dead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;
use trace2e_proto::{Denial, LocalizedResource, NodeId, Policy};

use super::{Engine, EngineError};
use crate::FastMap;
use crate::remote::{BoxFuture, Federation, RemoteError, RemoteToken, ReserveQuestion, SourcesQuestion};

/// A fake [`Federation`]: calls the other engine directly, counts the calls, and can
/// play dead.
#[derive(Debug)]
pub(crate) struct Loopback {
    me: NodeId,
    peer: OnceLock<Weak<Engine>>,
    calls: Mutex<FastMap<&'static str, usize>>,
    dead: AtomicBool,
}

impl Loopback {
    /// The federation of node `me`, not yet connected to its peer.
    pub(crate) fn new(me: NodeId) -> Arc<Self> {
        Arc::new(Self {
            me,
            peer: OnceLock::new(),
            calls: Mutex::new(FastMap::default()),
            dead: AtomicBool::new(false),
        })
    }

    /// Connects to the peer's engine (once).
    pub(crate) fn connect(&self, peer: &Arc<Engine>) {
        self.peer.set(Arc::downgrade(peer)).expect("connected once");
    }

    /// While `dead`, every call fails as an unreachable node.
    pub(crate) fn set_dead(&self, dead: bool) {
        self.dead.store(dead, Ordering::SeqCst);
    }

    /// How many times `call` was made (`reserve`, `release`, `update`, `check`,
    /// `deletion`, `notice`).
    pub(crate) fn count(&self, call: &'static str) -> usize {
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
    fn release_destination(&self, node: &NodeId, token: RemoteToken) -> BoxFuture<Result<(), RemoteError>> {
        let r =
            self.peer("release", node).and_then(|p| p.remote_release(&self.me, token).map_err(|e| refused(node, e)));
        Box::pin(async move { r })
    }
    fn update_provenance(
        &self,
        node: &NodeId,
        token: RemoteToken,
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
