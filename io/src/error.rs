//! The two errors trace2e adds to std's: a flow the daemon refused ([`Denied`]) and a
//! daemon that could not be asked ([`DaemonUnavailable`]).
//!
//! Both travel inside a [`std::io::Error`] (a drop-in cannot change signatures) and are
//! recovered with [`Denied::of`] / [`DaemonUnavailable::of`], or with
//! `err.get_ref().and_then(|e| e.downcast_ref::<Denied>())`.

use std::fmt;
use std::io;

use trace2e_proto::{Denial, Direction, LocalizedResource, PolicyKind};

/// A read or write the daemon refused. Carried by an [`io::Error`] of kind
/// [`io::ErrorKind::PermissionDenied`]; the I/O was not performed.
///
/// ```
/// # fn f(err: std::io::Error) {
/// if let Some(denied) = trace2e_io::Denied::of(&err) {
///     eprintln!("{} policy, caused by {}", denied.policy(), denied.resource());
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    direction: Direction,
    denial: Denial,
}

impl Denied {
    pub(crate) fn new(direction: Direction, denial: Denial) -> Self {
        Self { direction, denial }
    }

    /// The `Denied` inside `err`, if `err` is a trace2e denial.
    pub fn of(err: &io::Error) -> Option<&Denied> {
        err.get_ref().and_then(|e| e.downcast_ref::<Denied>())
    }

    /// The daemon's decision: policy, resource and reason.
    pub fn denial(&self) -> &Denial {
        &self.denial
    }

    /// The policy that refused the flow.
    pub fn policy(&self) -> PolicyKind {
        self.denial.policy
    }

    /// The resource (a source of the flow, or its destination) that caused the denial.
    pub fn resource(&self) -> &LocalizedResource {
        &self.denial.resource
    }

    /// The daemon's human-readable explanation.
    pub fn reason(&self) -> &str {
        &self.denial.reason
    }

    /// Whether the refused I/O was a read or a write.
    pub fn direction(&self) -> Direction {
        self.direction
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.denial;
        match d.policy {
            // Not a policy: the node that decides could not be asked (fail closed).
            PolicyKind::Unreachable => write!(
                f,
                "trace2e: {} denied because the node deciding for {} could not be asked: {}",
                self.direction, d.resource, d.reason
            ),
            // Not a policy: the node could not record the flow (disk full, I/O error).
            PolicyKind::AuditUnavailable => write!(
                f,
                "trace2e: {} denied because the daemon cannot record it (audit trail unavailable) for {}: {}",
                self.direction, d.resource, d.reason
            ),
            _ => write!(
                f,
                "trace2e: {} denied by the {} policy on {}: {}",
                self.direction, d.policy, d.resource, d.reason
            ),
        }
    }
}

impl std::error::Error for Denied {}

impl From<Denied> for io::Error {
    fn from(d: Denied) -> Self {
        io::Error::new(io::ErrorKind::PermissionDenied, d)
    }
}

/// What went wrong when trace2e could not get an answer from its daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UnavailableKind {
    /// The client configuration (`TRACE2E_TRANSPORT`, `TRACE2E_TIMEOUT_MS`, ...) is invalid.
    Misconfigured,
    /// The daemon's socket could not be reached.
    Unreachable,
    /// The daemon did not answer before the deadline.
    TimedOut,
    /// The daemon answered with an error, or with a message that does not parse.
    Failed,
}

impl fmt::Display for UnavailableKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Misconfigured => "misconfigured",
            Self::Unreachable => "unreachable",
            Self::TimedOut => "timed out",
            Self::Failed => "failed",
        })
    }
}

/// The daemon could not be asked, so the I/O was not performed (trace2e fails closed).
/// Carried by an [`io::Error`] of kind [`io::ErrorKind::NotConnected`].
///
/// Opening a file or a stream fails with it too, since the new descriptor could not be
/// enrolled. A failure to *report* an I/O that already happened is not an error: the I/O's
/// result is returned and a warning is logged (the daemon's lease releases the grant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonUnavailable {
    kind: UnavailableKind,
    operation: &'static str,
    detail: String,
}

impl DaemonUnavailable {
    pub(crate) fn new(kind: UnavailableKind, operation: &'static str, detail: impl Into<String>) -> Self {
        Self { kind, operation, detail: detail.into() }
    }

    /// The `DaemonUnavailable` inside `err`, if there is one.
    pub fn of(err: &io::Error) -> Option<&DaemonUnavailable> {
        err.get_ref().and_then(|e| e.downcast_ref::<DaemonUnavailable>())
    }

    /// What went wrong.
    pub fn kind(&self) -> UnavailableKind {
        self.kind
    }

    /// The call that failed: `connect`, `enroll`, `unenroll`, `request` or `report`.
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// Details (the socket path, the gRPC status, ...).
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for DaemonUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "trace2e daemon {} during {}: {}", self.kind, self.operation, self.detail)
    }
}

impl std::error::Error for DaemonUnavailable {}

impl From<DaemonUnavailable> for io::Error {
    fn from(d: DaemonUnavailable) -> Self {
        io::Error::new(io::ErrorKind::NotConnected, d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trace2e_proto::{NodeId, Resource};

    #[test]
    fn denied_is_permission_denied_and_downcasts() {
        let denial = Denial {
            policy: PolicyKind::Confidentiality,
            resource: Resource::file("/data/cv.txt").unwrap().at(&NodeId::new("node-a").unwrap()),
            reason: "secret data may not leave node-a".into(),
        };
        let err: io::Error = Denied::new(Direction::Write, denial.clone()).into();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        let d = Denied::of(&err).unwrap();
        assert_eq!(d.denial(), &denial);
        assert_eq!(
            err.to_string(),
            "trace2e: write denied by the confidentiality policy on file:///data/cv.txt@node-a: \
             secret data may not leave node-a"
        );
        assert!(DaemonUnavailable::of(&err).is_none());
    }

    #[test]
    fn an_unreachable_node_is_a_denial_that_names_the_node() {
        let denial = Denial {
            policy: PolicyKind::Unreachable,
            resource: Resource::file("/data/cv.txt").unwrap().at(&NodeId::new("node-c").unwrap()),
            reason: "node node-c unreachable: connection refused".into(),
        };
        let err: io::Error = Denied::new(Direction::Read, denial).into();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(Denied::of(&err).unwrap().policy(), PolicyKind::Unreachable);
        assert_eq!(
            err.to_string(),
            "trace2e: read denied because the node deciding for file:///data/cv.txt@node-c could not be asked: \
             node node-c unreachable: connection refused"
        );
    }

    #[test]
    fn unavailable_is_not_connected_and_downcasts() {
        let err: io::Error =
            DaemonUnavailable::new(UnavailableKind::Unreachable, "enroll", "/run/x.sock: no such file").into();
        assert_eq!(err.kind(), io::ErrorKind::NotConnected);
        assert_eq!(DaemonUnavailable::of(&err).unwrap().kind(), UnavailableKind::Unreachable);
        assert_eq!(err.to_string(), "trace2e daemon unreachable during enroll: /run/x.sock: no such file");
    }
}
