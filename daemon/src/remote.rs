//! Remote: what the engine asks of peer nodes, as a trait the daemon injects.
//!
//! Owns the questions of the M2M protocol in domain terms ([`Federation`],
//! [`ReserveQuestion`], [`SourcesQuestion`]) and how an unanswered question is reported
//! ([`RemoteError`]). It does no I/O: `federation` implements [`Federation`] over tonic,
//! tests use fakes, and [`NoPeers`] serves a node without peers.
//!
//! Every method returns a `'static` boxed future, so that the engine can run questions to
//! several owners in parallel and finish a question in the background (a reservation
//! released after its flow was denied) without holding any lock or borrowing itself.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use trace2e_proto::{Denial, LocalizedResource, NodeId, Policy, Resource};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Names one reservation this node takes on a peer's stream side (ReserveDestination),
/// in the later ReleaseDestination or UpdateProvenance. Chosen by the reserving node,
/// unique among its reservations; meaningful only together with that node's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteToken(pub u64);

impl fmt::Display for RemoteToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A question a peer did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// The peer could not be reached, or did not answer before the deadline.
    #[error("node {node} unreachable: {cause}")]
    Unreachable {
        /// The peer.
        node: NodeId,
        /// Why (connection refused, deadline exceeded, ...).
        cause: String,
    },
    /// The peer answered with an error (it does not know this node, the message was
    /// malformed, the token unknown).
    #[error("node {node} refused the question: {cause}")]
    Refused {
        /// The peer.
        node: NodeId,
        /// Its status message.
        cause: String,
    },
    /// The node is not a configured peer.
    #[error("node {0} is not a configured peer")]
    NotAPeer(NodeId),
}

/// ReserveDestination: reserve the peer's side of a stream for one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveQuestion {
    /// Chosen by the asking node; names the reservation in later calls.
    pub token: RemoteToken,
    /// The peer's side of the stream (`tcp://PEER_ADDR/OUR_ADDR`), not localized.
    pub destination: Resource,
    /// The writing resource (localized here).
    pub writer: LocalizedResource,
    /// The writer's provenance: merged into the destination when the write is reported
    /// (or assumed performed when the peer's lease for it expires).
    pub provenance: Vec<LocalizedResource>,
}

/// CheckSources: may the owner's resources flow to this destination?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcesQuestion {
    /// The owner's resources among the flow's sources, sorted.
    pub sources: Vec<LocalizedResource>,
    /// Where the data goes.
    pub target: RemoteTarget,
}

/// A flow's destination as described to the owners of its sources.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteTarget {
    /// The destination (for an external peer: the stream as the process enrolled it).
    pub resource: LocalizedResource,
    /// Set when the data goes to an external peer.
    pub external_peer: Option<SocketAddr>,
    /// The destination's effective policy, as its owner states it.
    pub policy: Policy,
}

/// The peer operations the engine needs. Implementations apply a deadline to every call
/// and never panic on a peer's answer.
pub trait Federation: Send + Sync + fmt::Debug {
    /// Reserves the destination; `Ok(Ok(policy))` when reserved, `Ok(Err(denial))` when
    /// the peer refused to reserve it.
    fn reserve_destination(
        &self,
        node: &NodeId,
        question: ReserveQuestion,
    ) -> BoxFuture<Result<Result<Policy, Denial>, RemoteError>>;

    /// Gives a reservation up without merging.
    fn release_destination(&self, node: &NodeId, token: RemoteToken) -> BoxFuture<Result<(), RemoteError>>;

    /// The write happened (`performed`) or not; the peer merges, then releases.
    fn update_provenance(
        &self,
        node: &NodeId,
        token: RemoteToken,
        performed: bool,
        bytes: u64,
    ) -> BoxFuture<Result<(), RemoteError>>;

    /// Asks an owner about its resources; `Ok(None)` is a grant.
    fn check_sources(&self, node: &NodeId, question: SourcesQuestion)
    -> BoxFuture<Result<Option<Denial>, RemoteError>>;

    /// Tells every peer that this node deleted `resource`. Best effort: resolves when every
    /// peer answered or its deadline passed.
    fn broadcast_deletion(&self, resource: LocalizedResource) -> BoxFuture<()>;

    /// Tells every peer that something this node decides changed. Best effort.
    fn policy_changed(&self) -> BoxFuture<()>;
}

/// The federation of a node without peers: every question is about a node that is not a
/// peer, and notices go nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPeers;

fn not_a_peer<T: Send + 'static>(node: &NodeId) -> BoxFuture<Result<T, RemoteError>> {
    let e = RemoteError::NotAPeer(node.clone());
    Box::pin(async move { Err(e) })
}

impl Federation for NoPeers {
    fn reserve_destination(
        &self,
        node: &NodeId,
        _: ReserveQuestion,
    ) -> BoxFuture<Result<Result<Policy, Denial>, RemoteError>> {
        not_a_peer(node)
    }

    fn release_destination(&self, node: &NodeId, _: RemoteToken) -> BoxFuture<Result<(), RemoteError>> {
        not_a_peer(node)
    }

    fn update_provenance(&self, node: &NodeId, _: RemoteToken, _: bool, _: u64) -> BoxFuture<Result<(), RemoteError>> {
        not_a_peer(node)
    }

    fn check_sources(&self, node: &NodeId, _: SourcesQuestion) -> BoxFuture<Result<Option<Denial>, RemoteError>> {
        not_a_peer(node)
    }

    fn broadcast_deletion(&self, _: LocalizedResource) -> BoxFuture<()> {
        Box::pin(async {})
    }

    fn policy_changed(&self) -> BoxFuture<()> {
        Box::pin(async {})
    }
}
