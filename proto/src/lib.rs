//! `trace2e-proto`: the model shared by the daemon and the io crate.
//!
//! It owns the vocabulary of trace2e — [`Resource`] identifiers and their one textual
//! form, [`Policy`], [`Decision`]/[`Denial`], flow [`Direction`] — and the generated
//! protobuf services ([`pb`]) with typed conversions between the two. It holds no
//! decisions and does no I/O: the daemon decides, `trace2e-io` asks.
//!
//! ```
//! use trace2e_proto::{LocalizedResource, Resource};
//! let r: LocalizedResource = "file:///data/cv.txt@node-a".parse().unwrap();
//! assert!(matches!(r.resource, Resource::File(_)));
//! assert_eq!(r.to_string(), "file:///data/cv.txt@node-a");
//! ```
//!
//! Next: `resource` for identifiers, `policy` for the compliance vocabulary,
//! `convert` for the protobuf mapping.

pub mod convert;
pub mod decision;
pub mod flow;
pub mod policy;
pub mod resource;
pub mod wire;

pub use decision::{Decision, Denial, PolicyKind};
pub use flow::{Direction, Fd, GrantId, IoOutcome};
pub use policy::{Confidentiality, IntegrityLevel, Policy};
pub use resource::{InvalidIdentifier, LocalizedResource, NodeId, ProcessId, Resource, StreamId};

/// Generated protobuf types and tonic services. Convert to the domain types with
/// [`convert`] before using them.
pub mod pb {
    /// P2M over gRPC: process ↔ local daemon (baseline transport).
    pub mod p2m {
        #![allow(missing_docs, clippy::all, missing_debug_implementations)]
        tonic::include_proto!("trace2e.p2m");
    }
    /// O2M: operator ↔ daemon.
    pub mod o2m {
        #![allow(missing_docs, clippy::all, missing_debug_implementations)]
        tonic::include_proto!("trace2e.o2m");
    }
    /// M2M: daemon ↔ daemon (federation).
    pub mod m2m {
        #![allow(missing_docs, clippy::all, missing_debug_implementations)]
        tonic::include_proto!("trace2e.m2m");
    }
}
