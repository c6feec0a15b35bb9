//! Decisions: a grant, or a denial that names the policy and the resource that caused it.

use std::fmt;

use crate::flow::GrantId;
use crate::resource::LocalizedResource;

/// The rule a denial comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum PolicyKind {
    /// Secret data on its way to a place it may not go.
    Confidentiality,
    /// A source's integrity level is below the destination's.
    Integrity,
    /// A source (or the destination) is deleted.
    Deletion,
    /// The owner refused, or did not answer in time.
    Consent,
    /// The resource stayed reserved by other flows until the timeout.
    Busy,
    /// A node whose decision the flow needs (the owner of a source, or the peer owning
    /// the destination stream) could not be asked in time: trace2e fails closed. The
    /// denial's reason names the node and the cause.
    Unreachable,
    /// The node cannot record the flow (its audit trail or state journal cannot be
    /// written: disk full, I/O error), so it does not allow it. Not a policy's verdict:
    /// the same flow is allowed again once writes succeed.
    AuditUnavailable,
}

impl PolicyKind {
    /// Lower-case name used in logs, audit records and CLI output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confidentiality => "confidentiality",
            Self::Integrity => "integrity",
            Self::Deletion => "deletion",
            Self::Consent => "consent",
            Self::Busy => "busy",
            Self::Unreachable => "unreachable",
            Self::AuditUnavailable => "audit-unavailable",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a flow was refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Denial {
    /// The rule.
    pub policy: PolicyKind,
    /// The source (or destination) that caused it.
    pub resource: LocalizedResource,
    /// A human-readable explanation.
    pub reason: String,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "denied by {} policy on {}: {}", self.policy, self.resource, self.reason)
    }
}

impl std::error::Error for Denial {}

/// The answer to a flow request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Perform the I/O, then report it under this id.
    Grant(GrantId),
    /// Do not perform the I/O.
    Denied(Denial),
}
