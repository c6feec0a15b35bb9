//! The P2M messages as compact bytes, for the shared-memory transport.
//!
//! The fast path moves opaque `(kind, payload)` messages; this module gives them meaning.
//! Every decoder takes untrusted bytes and returns a typed [`WireError`] — never panics,
//! never trusts a length it has not checked. Integers are little-endian; strings are
//! UTF-8, prefixed by a `u16` length, except a trailing one, which takes the rest.
//!
//! Requests (process → daemon):
//!
//! | kind | payload |
//! |---|---|
//! | [`kind::ENROLL`] | `fd i32, target u8 (1 file, 2 stream)`, then a path (rest) or `local str16, peer str16` |
//! | [`kind::UNENROLL`] | `fd i32` |
//! | [`kind::REQUEST`] | `fd i32, direction u8 (1 read, 2 write)` |
//! | [`kind::REPORT`] | `grant u64, ok u8, bytes u64` (may be posted one-way) |
//!
//! Responses (daemon → process): [`kind::ACK`] (empty), [`kind::ENROLLED`] (resource id,
//! rest), [`kind::GRANT`] (`grant u64`), [`kind::DENIED`] (`policy u8, resource str16,
//! reason rest`), [`kind::ERROR`] (`code u8, message rest`).
//!
//! A policy byte uses the numbering of `PolicyKind` in `proto/p2m.proto` (1
//! confidentiality, 2 integrity, 3 deletion, 4 consent, 5 busy, 6 unreachable, 7 audit-unavailable), so the
//! two transports share one numbering; this module does not depend on the generated code,
//! which only exists with the `grpc` feature.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::decision::{Decision, Denial, PolicyKind};
use crate::flow::{Direction, Fd, GrantId, IoOutcome};

/// Message kinds.
pub mod kind {
    /// Enroll an fd.
    pub const ENROLL: u16 = 1;
    /// Unenroll an fd.
    pub const UNENROLL: u16 = 2;
    /// Ask for one flow.
    pub const REQUEST: u16 = 3;
    /// Report a granted flow's outcome.
    pub const REPORT: u16 = 4;
    /// Done, nothing to say.
    pub const ACK: u16 = 0x81;
    /// Enrolled as this resource.
    pub const ENROLLED: u16 = 0x82;
    /// Granted.
    pub const GRANT: u16 = 0x83;
    /// Denied.
    pub const DENIED: u16 = 0x84;
    /// The daemon could not serve the request.
    pub const ERROR: u16 = 0x85;
}

/// Bytes that are not a valid message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Unknown message kind.
    #[error("unknown message kind {0:#x}")]
    UnknownKind(u16),
    /// The payload ends before a field.
    #[error("message truncated at {0}")]
    Truncated(&'static str),
    /// Bytes left after the last field.
    #[error("trailing bytes after the message")]
    Trailing,
    /// A field has a value outside its range.
    #[error("invalid value for {0}")]
    Invalid(&'static str),
}

/// What a client says an fd is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollTarget {
    /// A file, by absolute canonical path.
    File(PathBuf),
    /// A TCP stream.
    Stream {
        /// Local end.
        local: SocketAddr,
        /// Peer end.
        peer: SocketAddr,
    },
}

/// A P2M request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireRequest {
    /// Register `fd → target`.
    Enroll {
        /// The fd.
        fd: Fd,
        /// What it is.
        target: EnrollTarget,
    },
    /// Forget an fd.
    Unenroll {
        /// The fd.
        fd: Fd,
    },
    /// Ask for one flow.
    Request {
        /// The fd.
        fd: Fd,
        /// Read or write.
        direction: Direction,
    },
    /// Report a granted flow.
    Report {
        /// The grant.
        grant: GrantId,
        /// What happened.
        outcome: IoOutcome,
    },
}

/// Why the daemon could not serve a request (not a denial: that is a decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorCode {
    /// The request is malformed.
    InvalidArgument = 1,
    /// Unknown fd, grant or process.
    NotFound = 2,
    /// The claim about an fd is false.
    PermissionDenied = 3,
    /// The request cannot be served in the current state.
    FailedPrecondition = 4,
    /// The daemon failed.
    Internal = 5,
    /// The daemon's tables are full.
    ResourceExhausted = 6,
    /// The thing to create exists already.
    AlreadyExists = 7,
    /// The daemon cannot record the change asked for (disk full, I/O error); try again.
    Unavailable = 8,
}

/// A P2M response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireResponse {
    /// Done.
    Ack,
    /// Enrolled as this resource id.
    Enrolled(String),
    /// A decision.
    Decision(Decision),
    /// The request failed.
    Error {
        /// Class of failure.
        code: ErrorCode,
        /// Explanation.
        message: String,
    },
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], WireError> {
        if self.bytes.len() < n {
            return Err(WireError::Truncated(field));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, field)?[0])
    }
    fn i32(&mut self, field: &'static str) -> Result<i32, WireError> {
        let b = self.take(4, field)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn str16(&mut self, field: &'static str) -> Result<&'a str, WireError> {
        let len = self.take(2, field)?;
        let len = u16::from_le_bytes([len[0], len[1]]) as usize;
        std::str::from_utf8(self.take(len, field)?).map_err(|_| WireError::Invalid(field))
    }
    fn rest_str(&mut self, field: &'static str) -> Result<&'a str, WireError> {
        let rest = std::mem::take(&mut self.bytes);
        std::str::from_utf8(rest).map_err(|_| WireError::Invalid(field))
    }
    fn end(&self) -> Result<(), WireError> {
        if self.bytes.is_empty() { Ok(()) } else { Err(WireError::Trailing) }
    }
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    // Callers bound these strings (socket addresses, resource ids) well below 64 KiB;
    // longer ones are cut at a char boundary rather than corrupting the frame.
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn direction_byte(d: Direction) -> u8 {
    match d {
        Direction::Read => 1,
        Direction::Write => 2,
    }
}

// The numbering of `PolicyKind` in `proto/p2m.proto` (see the module docs).
fn policy_byte(p: PolicyKind) -> u8 {
    match p {
        PolicyKind::Confidentiality => 1,
        PolicyKind::Integrity => 2,
        PolicyKind::Deletion => 3,
        PolicyKind::Consent => 4,
        PolicyKind::Busy => 5,
        PolicyKind::Unreachable => 6,
        PolicyKind::AuditUnavailable => 7,
    }
}

fn policy_from(b: u8) -> Result<PolicyKind, WireError> {
    match b {
        1 => Ok(PolicyKind::Confidentiality),
        2 => Ok(PolicyKind::Integrity),
        3 => Ok(PolicyKind::Deletion),
        4 => Ok(PolicyKind::Consent),
        5 => Ok(PolicyKind::Busy),
        6 => Ok(PolicyKind::Unreachable),
        7 => Ok(PolicyKind::AuditUnavailable),
        _ => Err(WireError::Invalid("policy")),
    }
}

impl WireRequest {
    /// Encodes into `(kind, payload)`; `out` is cleared first.
    pub fn encode(&self, out: &mut Vec<u8>) -> u16 {
        out.clear();
        match self {
            Self::Enroll { fd, target } => {
                out.extend_from_slice(&fd.0.to_le_bytes());
                match target {
                    EnrollTarget::File(path) => {
                        out.push(1);
                        out.extend_from_slice(path.as_os_str().as_encoded_bytes());
                    }
                    EnrollTarget::Stream { local, peer } => {
                        out.push(2);
                        put_str16(out, &local.to_string());
                        put_str16(out, &peer.to_string());
                    }
                }
                kind::ENROLL
            }
            Self::Unenroll { fd } => {
                out.extend_from_slice(&fd.0.to_le_bytes());
                kind::UNENROLL
            }
            Self::Request { fd, direction } => {
                out.extend_from_slice(&fd.0.to_le_bytes());
                out.push(direction_byte(*direction));
                kind::REQUEST
            }
            Self::Report { grant, outcome } => {
                out.extend_from_slice(&grant.0.to_le_bytes());
                out.push(u8::from(outcome.ok));
                out.extend_from_slice(&outcome.bytes.to_le_bytes());
                kind::REPORT
            }
        }
    }

    /// Decodes an untrusted message.
    pub fn decode(kind: u16, payload: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader { bytes: payload };
        let msg = match kind {
            kind::ENROLL => {
                let fd = Fd(r.i32("fd")?);
                match r.u8("target")? {
                    1 => {
                        let path = std::mem::take(&mut r.bytes);
                        if path.first() != Some(&b'/') || path.contains(&0) {
                            return Err(WireError::Invalid("path"));
                        }
                        use std::os::unix::ffi::OsStrExt;
                        let path = PathBuf::from(std::ffi::OsStr::from_bytes(path));
                        Self::Enroll { fd, target: EnrollTarget::File(path) }
                    }
                    2 => {
                        let local = r.str16("local")?.parse().map_err(|_| WireError::Invalid("local"))?;
                        let peer = r.str16("peer")?.parse().map_err(|_| WireError::Invalid("peer"))?;
                        Self::Enroll { fd, target: EnrollTarget::Stream { local, peer } }
                    }
                    _ => return Err(WireError::Invalid("target")),
                }
            }
            kind::UNENROLL => Self::Unenroll { fd: Fd(r.i32("fd")?) },
            kind::REQUEST => {
                let fd = Fd(r.i32("fd")?);
                let direction = match r.u8("direction")? {
                    1 => Direction::Read,
                    2 => Direction::Write,
                    _ => return Err(WireError::Invalid("direction")),
                };
                Self::Request { fd, direction }
            }
            kind::REPORT => {
                let grant = r.u64("grant")?;
                if grant == 0 {
                    return Err(WireError::Invalid("grant"));
                }
                let ok = match r.u8("ok")? {
                    0 => false,
                    1 => true,
                    _ => return Err(WireError::Invalid("ok")),
                };
                let bytes = r.u64("bytes")?;
                Self::Report { grant: GrantId(grant), outcome: IoOutcome { ok, bytes: if ok { bytes } else { 0 } } }
            }
            other => return Err(WireError::UnknownKind(other)),
        };
        r.end()?;
        Ok(msg)
    }
}

impl WireResponse {
    /// Encodes into `(kind, payload)`; `out` is cleared first.
    pub fn encode(&self, out: &mut Vec<u8>) -> u16 {
        out.clear();
        match self {
            Self::Ack => kind::ACK,
            Self::Enrolled(resource) => {
                out.extend_from_slice(resource.as_bytes());
                kind::ENROLLED
            }
            Self::Decision(Decision::Grant(id)) => {
                out.extend_from_slice(&id.0.to_le_bytes());
                kind::GRANT
            }
            Self::Decision(Decision::Denied(d)) => {
                out.push(policy_byte(d.policy));
                put_str16(out, &d.resource.to_string());
                out.extend_from_slice(d.reason.as_bytes());
                kind::DENIED
            }
            Self::Error { code, message } => {
                out.push(*code as u8);
                out.extend_from_slice(message.as_bytes());
                kind::ERROR
            }
        }
    }

    /// Decodes a message from the daemon (checked: the daemon's memory is shared too).
    pub fn decode(kind: u16, payload: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader { bytes: payload };
        let msg = match kind {
            kind::ACK => Self::Ack,
            kind::ENROLLED => Self::Enrolled(r.rest_str("resource")?.to_owned()),
            kind::GRANT => {
                let id = r.u64("grant")?;
                if id == 0 {
                    return Err(WireError::Invalid("grant"));
                }
                Self::Decision(Decision::Grant(GrantId(id)))
            }
            kind::DENIED => {
                let policy = policy_from(r.u8("policy")?)?;
                let resource = r.str16("resource")?.parse().map_err(|_| WireError::Invalid("resource"))?;
                let reason = r.rest_str("reason")?.to_owned();
                Self::Decision(Decision::Denied(Denial { policy, resource, reason }))
            }
            kind::ERROR => {
                let code = match r.u8("code")? {
                    1 => ErrorCode::InvalidArgument,
                    2 => ErrorCode::NotFound,
                    3 => ErrorCode::PermissionDenied,
                    4 => ErrorCode::FailedPrecondition,
                    5 => ErrorCode::Internal,
                    6 => ErrorCode::ResourceExhausted,
                    7 => ErrorCode::AlreadyExists,
                    8 => ErrorCode::Unavailable,
                    _ => return Err(WireError::Invalid("code")),
                };
                Self::Error { code, message: r.rest_str("message")?.to_owned() }
            }
            other => return Err(WireError::UnknownKind(other)),
        };
        r.end()?;
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{NodeId, Resource};
    use proptest::prelude::*;

    fn round_trip_request(m: WireRequest) {
        let mut buf = Vec::new();
        let k = m.encode(&mut buf);
        assert_eq!(WireRequest::decode(k, &buf).unwrap(), m);
    }

    #[test]
    fn requests_round_trip() {
        let long = format!("/{}", "a".repeat(4095));
        round_trip_request(WireRequest::Enroll { fd: Fd(3), target: EnrollTarget::File(long.into()) });
        round_trip_request(WireRequest::Enroll {
            fd: Fd(4),
            target: EnrollTarget::Stream { local: "[::1]:80".parse().unwrap(), peer: "10.0.0.1:5".parse().unwrap() },
        });
        round_trip_request(WireRequest::Unenroll { fd: Fd(7) });
        round_trip_request(WireRequest::Request { fd: Fd(7), direction: Direction::Write });
        round_trip_request(WireRequest::Report { grant: GrantId(9), outcome: IoOutcome { ok: true, bytes: 64 } });
    }

    #[test]
    fn responses_round_trip() {
        let node = NodeId::new("n").unwrap();
        for m in [
            WireResponse::Ack,
            WireResponse::Enrolled("file:///x".into()),
            WireResponse::Decision(Decision::Grant(GrantId(5))),
            WireResponse::Decision(Decision::Denied(Denial {
                policy: PolicyKind::Deletion,
                resource: Resource::file("/x").unwrap().at(&node),
                reason: "gone".into(),
            })),
            WireResponse::Error { code: ErrorCode::NotFound, message: "fd 3".into() },
        ] {
            let mut buf = Vec::new();
            let k = m.encode(&mut buf);
            assert_eq!(WireResponse::decode(k, &buf).unwrap(), m);
        }
    }

    const ALL_POLICIES: [PolicyKind; 7] = [
        PolicyKind::Confidentiality,
        PolicyKind::Integrity,
        PolicyKind::Deletion,
        PolicyKind::Consent,
        PolicyKind::Busy,
        PolicyKind::Unreachable,
        PolicyKind::AuditUnavailable,
    ];

    #[test]
    fn policy_bytes_are_the_documented_numbers() {
        // The table of the module docs, written out independently of `policy_byte`.
        let documented = [1u8, 2, 3, 4, 5, 6, 7];
        for (p, b) in ALL_POLICIES.into_iter().zip(documented) {
            assert_eq!(policy_byte(p), b, "{p}");
            assert_eq!(policy_from(b), Ok(p));
        }
        assert_eq!(policy_from(0), Err(WireError::Invalid("policy")));
        assert_eq!(policy_from(8), Err(WireError::Invalid("policy")));
    }

    /// One numbering for both transports: a policy byte is the P2M protobuf enum value.
    #[cfg(feature = "grpc")]
    #[test]
    fn policy_bytes_are_the_protobuf_numbers() {
        use crate::pb::p2m::PolicyKind as Pb;
        let generated = [
            Pb::Confidentiality,
            Pb::Integrity,
            Pb::Deletion,
            Pb::Consent,
            Pb::Busy,
            Pb::Unreachable,
            Pb::AuditUnavailable,
        ];
        for (p, pb) in ALL_POLICIES.into_iter().zip(generated) {
            assert_eq!(i32::from(policy_byte(p)), pb as i32, "{p}");
        }
    }

    #[test]
    fn malformed_requests_are_typed_errors() {
        assert_eq!(WireRequest::decode(99, &[]), Err(WireError::UnknownKind(99)));
        assert_eq!(WireRequest::decode(kind::REQUEST, &[1, 0, 0]), Err(WireError::Truncated("fd")));
        assert_eq!(WireRequest::decode(kind::REQUEST, &[1, 0, 0, 0, 9]), Err(WireError::Invalid("direction")));
        assert_eq!(WireRequest::decode(kind::REQUEST, &[1, 0, 0, 0, 1, 0]), Err(WireError::Trailing));
        assert_eq!(WireRequest::decode(kind::ENROLL, &[1, 0, 0, 0, 1, b'x']), Err(WireError::Invalid("path")));
        assert_eq!(WireRequest::decode(kind::ENROLL, &[1, 0, 0, 0, 2, 200, 0]), Err(WireError::Truncated("local")));
        assert_eq!(WireRequest::decode(kind::REPORT, &[0; 17]), Err(WireError::Invalid("grant")));
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(kind in 0u16..300, bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = WireRequest::decode(kind, &bytes);
            let _ = WireResponse::decode(kind, &bytes);
        }
    }
}
