//! How the engine's failures are told to callers: one gRPC code per [`EngineError`],
//! used by every service — P2M over gRPC and over shared memory, O2M and M2M — so that
//! the same failure reads the same wherever it is reported.
//!
//! This module owns the mapping only. Denials are decisions, never statuses; each
//! service maps its own request errors (malformed messages, false fd claims) itself.

use tonic::{Code, Status};
use trace2e_proto::wire::ErrorCode;

use crate::engine::EngineError;
use crate::state::StateError;

/// The gRPC code of an engine failure.
pub fn engine_code(e: &EngineError) -> Code {
    match e {
        // Asking about something that is not there (any more).
        EngineError::UnknownProcess { .. }
        | EngineError::NotEnrolled { .. }
        | EngineError::UnknownGrant { .. }
        | EngineError::UnknownReservation { .. } => Code::NotFound,
        // A caller speaking for what is not its own: another process's grant, a node that
        // is not a peer.
        EngineError::WrongProcess { .. } | EngineError::UnknownPeer { .. } => Code::PermissionDenied,
        // A request that can never succeed as asked.
        EngineError::NotAFlowEndpoint { .. } | EngineError::NotOwned { .. } | EngineError::NoSources => {
            Code::InvalidArgument
        }
        // A valid request in the wrong state: a deleted resource's policy is frozen.
        EngineError::Deleted { .. } => Code::FailedPrecondition,
        EngineError::DuplicateToken { .. } => Code::AlreadyExists,
        EngineError::State(StateError::Full) => Code::ResourceExhausted,
        // The journal cannot be written (disk full, I/O error): retry once it can.
        EngineError::State(StateError::Unrecorded(_)) => Code::Unavailable,
        EngineError::State(_) => Code::Internal,
    }
}

/// An engine failure as a gRPC status: [`engine_code`] and the error's text.
pub fn engine_status(e: &EngineError) -> Status {
    Status::new(engine_code(e), e.to_string())
}

/// The shared-memory wire's code for a gRPC code (the wire carries the codes the daemon
/// uses; any other is `Internal`).
pub fn wire_code(code: Code) -> ErrorCode {
    match code {
        Code::InvalidArgument => ErrorCode::InvalidArgument,
        Code::NotFound => ErrorCode::NotFound,
        Code::PermissionDenied => ErrorCode::PermissionDenied,
        Code::FailedPrecondition => ErrorCode::FailedPrecondition,
        Code::ResourceExhausted => ErrorCode::ResourceExhausted,
        Code::AlreadyExists => ErrorCode::AlreadyExists,
        Code::Unavailable => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    }
}

#[cfg(test)]
mod tests {
    use trace2e_proto::wire::WireResponse;
    use trace2e_proto::{Fd, GrantId, NodeId, ProcessId, Resource};

    use super::*;
    use crate::operator::OperatorError;
    use crate::remote::RemoteToken;

    /// Every engine failure with the code it must have, written out by hand (not from
    /// [`engine_code`]).
    fn expected() -> Vec<(EngineError, Code, ErrorCode)> {
        let process = ProcessId { pid: 1, starttime: 2 };
        let node = NodeId::new("n1").unwrap();
        let file = Resource::file("/x").unwrap();
        let token = RemoteToken(7);
        vec![
            (EngineError::UnknownProcess { process }, Code::NotFound, ErrorCode::NotFound),
            (EngineError::NotEnrolled { process, fd: Fd(3) }, Code::NotFound, ErrorCode::NotFound),
            (EngineError::UnknownGrant { grant: GrantId(4) }, Code::NotFound, ErrorCode::NotFound),
            (
                EngineError::WrongProcess { grant: GrantId(4), process },
                Code::PermissionDenied,
                ErrorCode::PermissionDenied,
            ),
            (
                EngineError::NotAFlowEndpoint { resource: Resource::Executable("/bin/x".into()) },
                Code::InvalidArgument,
                ErrorCode::InvalidArgument,
            ),
            (
                EngineError::Deleted { resource: file.clone().at(&node) },
                Code::FailedPrecondition,
                ErrorCode::FailedPrecondition,
            ),
            (EngineError::UnknownPeer { node: node.clone() }, Code::PermissionDenied, ErrorCode::PermissionDenied),
            (
                EngineError::NotOwned { resource: file.at(&node), problem: "not a stream" },
                Code::InvalidArgument,
                ErrorCode::InvalidArgument,
            ),
            (EngineError::NoSources, Code::InvalidArgument, ErrorCode::InvalidArgument),
            (EngineError::UnknownReservation { node: node.clone(), token }, Code::NotFound, ErrorCode::NotFound),
            (EngineError::DuplicateToken { node, token }, Code::AlreadyExists, ErrorCode::AlreadyExists),
            (EngineError::State(StateError::Unrecorded("disk full".into())), Code::Unavailable, ErrorCode::Unavailable),
            (EngineError::State(StateError::Full), Code::ResourceExhausted, ErrorCode::ResourceExhausted),
            (
                EngineError::State(StateError::UnknownLabel(crate::provenance::LabelId::from_index(0).unwrap())),
                Code::Internal,
                ErrorCode::Internal,
            ),
        ]
    }

    #[test]
    fn every_service_reports_an_engine_failure_with_the_same_code() {
        for (e, code, wire) in expected() {
            let o2m = Status::from(OperatorError::Engine(e.clone()));
            assert_eq!(o2m.code(), code, "O2M: {e}");
            assert_eq!(crate::federation::engine_status(e.clone()).code(), code, "M2M: {e}");
            assert_eq!(crate::p2m::grpc::engine_status(e.clone()).code(), code, "P2M over gRPC: {e}");
            match crate::p2m::shm::engine_error(e.clone()) {
                WireResponse::Error { code: c, message } => {
                    assert_eq!(c, wire, "P2M over shared memory: {e}");
                    assert_eq!(message, e.to_string());
                }
                other => panic!("P2M over shared memory answered {other:?} for {e}"),
            }
        }
    }
}
