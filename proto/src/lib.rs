//! `trace2e-proto`: the model shared by the daemon and the io crate.
//!
//! It owns the vocabulary of trace2e — [`Resource`] identifiers and their one textual
//! form, [`Policy`], [`Decision`]/[`Denial`], flow [`Direction`] — and the P2M message
//! encoding of the shared-memory transport ([`wire`]). It holds no decisions and does no
//! I/O: the daemon decides, `trace2e-io` asks.
//!
//! With the `grpc` feature (off by default, so applications that link `trace2e-io` get
//! no gRPC stack) it also holds the generated protobuf services (`pb`: P2M over gRPC,
//! O2M, M2M), typed conversions between them and the domain model (`convert`), and the
//! one Unix-socket gRPC connector (`uds::connect`).
//!
//! ```
//! use trace2e_proto::{LocalizedResource, Resource};
//! let r: LocalizedResource = "file:///data/cv.txt@node-a".parse().unwrap();
//! assert!(matches!(r.resource, Resource::File(_)));
//! assert_eq!(r.to_string(), "file:///data/cv.txt@node-a");
//! ```
//!
//! Next: `resource` for identifiers, `policy` for the compliance vocabulary, `wire` for
//! the shared-memory encoding, `convert` for the protobuf mapping.

#[cfg(feature = "grpc")]
pub mod convert;
pub mod decision;
pub mod flow;
pub mod policy;
pub mod resource;
#[cfg(feature = "grpc")]
pub mod uds;
pub mod wire;

pub use decision::{Decision, Denial, PolicyKind};
pub use flow::{Direction, Fd, GrantId, IoOutcome};
pub use policy::{Confidentiality, IntegrityLevel, Policy};
pub use resource::{InvalidIdentifier, LocalizedResource, NodeId, ProcessId, Resource, StreamId};

/// Generated protobuf types and tonic services. Convert to the domain types with
/// [`convert`] before using them.
#[cfg(feature = "grpc")]
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
