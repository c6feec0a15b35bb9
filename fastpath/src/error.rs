//! Small, `Copy`, non-allocating errors. Each operation has its own.

use core::fmt;
use rustix::io::Errno;

use crate::layout::GeometryError;

/// A lane: one client thread's single-producer path. In `0 .. lanes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lane(pub u16);

/// The tag a client put on a request; the response must carry it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tag(pub u32);

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lane {}", self.0)
    }
}

/// A system call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OsError {
    /// What we were doing (`"memfd_create"`, `"sendmsg"`, …).
    pub op: &'static str,
    /// The error number.
    pub errno: Errno,
}

impl OsError {
    pub(crate) fn new(op: &'static str) -> impl FnOnce(Errno) -> Self {
        move |errno| Self { op, errno }
    }
}

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.op, self.errno)
    }
}

impl std::error::Error for OsError {}

impl From<OsError> for std::io::Error {
    fn from(e: OsError) -> Self {
        std::io::Error::from_raw_os_error(e.errno.raw_os_error())
    }
}

/// The check a client's shared memory failed (the daemon then detaches it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// A request slot's stamp was neither "empty" (`expected - 1`) nor "full"
    /// (`expected`) for the daemon's position.
    RequestStamp {
        /// The "full" value for the daemon's position.
        expected: u32,
        /// What the slot held.
        found: u32,
    },
    /// A response slot's stamp (which the client frees) was neither "free"
    /// (`expected`) nor "not yet consumed" for the daemon's position.
    ResponseStamp {
        /// The "free" value for the daemon's position.
        expected: u32,
        /// What the slot held.
        found: u32,
    },
    /// Flag bits this version does not define.
    UnknownFlags(u16),
    /// A payload longer than the data area.
    Length {
        /// Claimed length.
        len: u32,
        /// The data area size.
        max: u32,
    },
    /// A payload offset that is misaligned or runs past the data area.
    Offset {
        /// Claimed offset.
        off: u32,
        /// Claimed length.
        len: u32,
    },
}

/// A client wrote something into its region that a correct client never writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Corruption {
    /// Where.
    pub lane: Lane,
    /// Which check failed.
    pub check: Check,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.check {
            Check::RequestStamp { expected, found } => {
                write!(f, "{}: request stamp {found:#x}, expected {expected:#x}", self.lane)
            }
            Check::ResponseStamp { expected, found } => {
                write!(f, "{}: response stamp {found:#x}, expected {expected:#x}", self.lane)
            }
            Check::UnknownFlags(flags) => write!(f, "{}: unknown flags {flags:#x}", self.lane),
            Check::Length { len, max } => write!(f, "{}: payload length {len} > {max}", self.lane),
            Check::Offset { off, len } => {
                write!(f, "{}: payload at {off} + {len} outside the data area", self.lane)
            }
        }
    }
}

impl std::error::Error for Corruption {}

/// Why [`Channel::respond`](crate::Channel::respond) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RespondError {
    /// The channel was detached (after corruption or [`detach`](crate::Channel::detach)).
    Detached,
    /// No such lane in this region.
    NoSuchLane(Lane),
    /// The payload is longer than the data area.
    TooLarge {
        /// Payload length.
        len: usize,
        /// Largest payload.
        max: usize,
    },
    /// The client has not consumed earlier responses on this lane (no free slot or
    /// data space). A correct client never lets this happen; the response is dropped
    /// and its call will time out.
    Full,
    /// The client corrupted its response ring; the channel is now detached.
    Corrupt(Corruption),
}

impl fmt::Display for RespondError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Detached => f.write_str("channel detached"),
            Self::NoSuchLane(l) => write!(f, "no {l}"),
            Self::TooLarge { len, max } => write!(f, "response of {len} bytes > {max}"),
            Self::Full => f.write_str("client has not consumed its responses"),
            Self::Corrupt(c) => write!(f, "corrupt response ring: {c}"),
        }
    }
}

impl std::error::Error for RespondError {}

/// Why [`Listener::accept`](crate::Listener::accept) or
/// [`Incoming::attach`](crate::Incoming::attach) failed. Only that client is affected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptError {
    /// A system call failed.
    Os(OsError),
    /// The peer is already gone.
    PeerGone,
}

impl From<OsError> for AcceptError {
    fn from(e: OsError) -> Self {
        Self::Os(e)
    }
}

impl fmt::Display for AcceptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Os(e) => e.fmt(f),
            Self::PeerGone => f.write_str("peer closed the connection during the handshake"),
        }
    }
}

impl std::error::Error for AcceptError {}

/// Why [`Client::connect`](crate::Client::connect) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// A system call failed.
    Os(OsError),
    /// The daemon closed the connection without a welcome.
    Closed,
    /// The welcome or its control data was truncated (`MSG_TRUNC`/`MSG_CTRUNC`).
    Truncated,
    /// The welcome did not carry exactly two fds (region, doorbell).
    Fds(usize),
    /// A welcome field is wrong: which one.
    Welcome(&'static str),
    /// The welcome's geometry is invalid.
    Geometry(GeometryError),
    /// The memfd's size is not the announced region size.
    Size {
        /// Announced size.
        expected: u64,
        /// `fstat` size.
        found: u64,
    },
    /// The memfd lacks `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL` or has a write seal.
    Seals(u32),
    /// A header field in the region disagrees with the welcome: which one.
    Header(&'static str),
}

impl From<OsError> for ConnectError {
    fn from(e: OsError) -> Self {
        Self::Os(e)
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Os(e) => e.fmt(f),
            Self::Closed => f.write_str("daemon closed the connection during the handshake"),
            Self::Truncated => f.write_str("truncated welcome"),
            Self::Fds(n) => write!(f, "welcome carried {n} fds, expected 2"),
            Self::Welcome(what) => write!(f, "bad welcome: {what}"),
            Self::Geometry(e) => write!(f, "bad geometry: {e}"),
            Self::Size { expected, found } => {
                write!(f, "region is {found} bytes, expected {expected}")
            }
            Self::Seals(s) => write!(f, "region not sealed against resizing (seals {s:#x})"),
            Self::Header(what) => write!(f, "region header disagrees with welcome: {what}"),
        }
    }
}

impl std::error::Error for ConnectError {}

impl From<ConnectError> for std::io::Error {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Os(os) => os.into(),
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        }
    }
}

/// Why [`Client::call`](crate::Client::call) or [`Client::post`](crate::Client::post)
/// failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallError {
    /// No response within the call timeout (the daemon still looked alive).
    Timeout,
    /// The daemon closed the channel or died.
    Disconnected,
    /// This process is a fork of the one that connected; connect again.
    Forked,
    /// The payload is longer than the region's data area.
    TooLarge {
        /// Payload length.
        len: usize,
        /// Largest payload.
        max: usize,
    },
    /// The daemon broke the protocol: which check failed.
    Protocol(&'static str),
    /// A system call failed.
    Os(OsError),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("no response from the daemon in time"),
            Self::Disconnected => f.write_str("daemon closed the channel"),
            Self::Forked => f.write_str("channel belongs to the parent process; reconnect"),
            Self::TooLarge { len, max } => write!(f, "payload of {len} bytes > {max}"),
            Self::Protocol(what) => write!(f, "daemon broke the protocol: {what}"),
            Self::Os(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for CallError {}

impl From<CallError> for std::io::Error {
    fn from(e: CallError) -> Self {
        use std::io::ErrorKind;
        let kind = match e {
            CallError::Os(os) => return os.into(),
            CallError::Timeout => ErrorKind::TimedOut,
            CallError::Disconnected | CallError::Forked => ErrorKind::NotConnected,
            CallError::TooLarge { .. } => ErrorKind::InvalidInput,
            CallError::Protocol(_) => ErrorKind::InvalidData,
        };
        std::io::Error::new(kind, e)
    }
}

/// Why [`Channel::serve`](crate::Channel::serve) stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServeError {
    /// The client closed its control socket or exited.
    PeerGone,
    /// The client corrupted its region; the channel is now detached.
    Corrupt(Corruption),
    /// A response could not be sent.
    Respond(RespondError),
    /// A system call failed.
    Os(OsError),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PeerGone => f.write_str("client gone"),
            Self::Corrupt(c) => write!(f, "client detached: {c}"),
            Self::Respond(e) => e.fmt(f),
            Self::Os(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ServeError {}
