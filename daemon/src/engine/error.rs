//! EngineError: what the engine reports when it failed or was misused.

use trace2e_proto::{Fd, GrantId, LocalizedResource, NodeId, ProcessId, Resource};

use crate::compliance::UnknownLabel;
use crate::remote::RemoteToken;
use crate::state::StateError;

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
    /// A remote question from a node that is not a configured peer.
    #[error("node {node} is not a configured peer of this node")]
    UnknownPeer {
        /// The node that asked.
        node: NodeId,
    },
    /// A remote question about a resource the asking node may not ask about here.
    #[error("{resource}: {problem}")]
    NotOwned {
        /// The resource.
        resource: LocalizedResource,
        /// What is wrong.
        problem: &'static str,
    },
    /// A CheckSources question with no sources.
    #[error("a question about no sources")]
    NoSources,
    /// No reservation of this peer under this token (released, expired, never taken).
    #[error("no reservation {token} of node {node}")]
    UnknownReservation {
        /// The peer.
        node: NodeId,
        /// Its token.
        token: RemoteToken,
    },
    /// The peer already holds a reservation under this token.
    #[error("node {node} already holds reservation {token}")]
    DuplicateToken {
        /// The peer.
        node: NodeId,
        /// Its token.
        token: RemoteToken,
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
