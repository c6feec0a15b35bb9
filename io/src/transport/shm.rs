//! P2M over shared-memory rings (`trace2e-fastpath`): the default transport.
//!
//! Each call is one `(kind, payload)` message on the calling thread's own lane, encoded
//! with `trace2e_proto::wire`. A request waits for its decision; a report is *posted*
//! (one-way, without even ringing the daemon's doorbell): the daemon applies it before
//! the next message on the same lane, or within its drain interval (1 ms) if the thread
//! goes quiet. That keeps the synchronous cost of a mediated I/O at one round trip
//! without weakening consistency: the flow's reservations are released only when the
//! daemon applies the report, so another process touching the same resource still waits
//! until the provenance is recorded (see the daemon's `p2m::shm` module).

use std::cell::RefCell;
use std::path::Path;
use std::time::Duration;

use trace2e_fastpath::{CallError, Client, ClientConfig};
use trace2e_proto::wire::{EnrollTarget, ErrorCode, WireRequest, WireResponse};
use trace2e_proto::{Decision, Direction, Fd, GrantId, IoOutcome};

use super::{Deadlines, Target, Transport};
use crate::breakdown;
use crate::error::{DaemonUnavailable, UnavailableKind};

/// The shared-memory transport: one fastpath client per process.
#[derive(Debug)]
pub(crate) struct ShmTransport {
    client: Client,
    socket: std::path::PathBuf,
}

thread_local! {
    /// Per-thread encode and response buffers: a mediated I/O allocates nothing here.
    static BUFFERS: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

impl ShmTransport {
    /// Attaches to the daemon (handshake over its Unix socket, then shared memory).
    pub(crate) fn connect(socket: &Path, deadlines: Deadlines) -> Result<Self, DaemonUnavailable> {
        let config = ClientConfig {
            call_timeout: deadlines.request,
            handshake_timeout: deadlines.short.min(Duration::from_secs(5)),
            ..ClientConfig::default()
        };
        let client = Client::connect_with(socket, config).map_err(|e| {
            DaemonUnavailable::new(
                UnavailableKind::Unreachable,
                "connect",
                format!("cannot attach to {}: {e}", socket.display()),
            )
        })?;
        Ok(Self { client, socket: socket.to_owned() })
    }

    fn call(&self, operation: &'static str, request: &WireRequest) -> Result<WireResponse, DaemonUnavailable> {
        BUFFERS.with(|buffers| {
            let mut buffers = buffers.borrow_mut();
            let (out, input) = &mut *buffers;
            let encoding = breakdown::start();
            let kind = request.encode(out);
            breakdown::stop(breakdown::Stage::Encode, encoding);
            let calling = breakdown::start();
            let reply = self.client.call_into(kind, out, input);
            breakdown::stop(breakdown::Stage::RoundTrip, calling);
            let reply = reply.map_err(|e| self.call_error(operation, e))?;
            let response = WireResponse::decode(reply, input).map_err(|e| {
                DaemonUnavailable::new(
                    UnavailableKind::Failed,
                    operation,
                    format!("malformed answer from the daemon: {e}"),
                )
            })?;
            match response {
                WireResponse::Error { code, message } => Err(DaemonUnavailable::new(
                    UnavailableKind::Failed,
                    operation,
                    format!("{} ({}): {message}", self.socket.display(), code_name(code)),
                )),
                other => Ok(other),
            }
        })
    }

    fn call_error(&self, operation: &'static str, e: CallError) -> DaemonUnavailable {
        let kind = match e {
            CallError::Timeout => UnavailableKind::TimedOut,
            CallError::Disconnected | CallError::Forked => UnavailableKind::Unreachable,
            _ => UnavailableKind::Failed,
        };
        DaemonUnavailable::new(kind, operation, format!("{}: {e}", self.socket.display()))
    }

    fn unexpected(operation: &'static str, response: &WireResponse) -> DaemonUnavailable {
        DaemonUnavailable::new(
            UnavailableKind::Failed,
            operation,
            format!("unexpected answer from the daemon: {response:?}"),
        )
    }
}

fn code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidArgument => "InvalidArgument",
        ErrorCode::NotFound => "NotFound",
        ErrorCode::PermissionDenied => "PermissionDenied",
        ErrorCode::FailedPrecondition => "FailedPrecondition",
        ErrorCode::Internal => "Internal",
        ErrorCode::ResourceExhausted => "ResourceExhausted",
        ErrorCode::AlreadyExists => "AlreadyExists",
        ErrorCode::Unavailable => "Unavailable",
    }
}

impl Transport for ShmTransport {
    fn enroll(&self, fd: Fd, target: &Target) -> Result<(), DaemonUnavailable> {
        let target = match target {
            Target::File(path) => EnrollTarget::File(path.clone()),
            Target::Stream { local, peer } => EnrollTarget::Stream { local: *local, peer: *peer },
        };
        match self.call("enroll", &WireRequest::Enroll { fd, target })? {
            WireResponse::Enrolled(_) | WireResponse::Ack => Ok(()),
            other => Err(Self::unexpected("enroll", &other)),
        }
    }

    fn unenroll(&self, fd: Fd) -> Result<(), DaemonUnavailable> {
        match self.call("unenroll", &WireRequest::Unenroll { fd })? {
            WireResponse::Ack => Ok(()),
            other => Err(Self::unexpected("unenroll", &other)),
        }
    }

    fn request(&self, fd: Fd, direction: Direction) -> Result<Decision, DaemonUnavailable> {
        match self.call("request", &WireRequest::Request { fd, direction })? {
            WireResponse::Decision(d) => Ok(d),
            other => Err(Self::unexpected("request", &other)),
        }
    }

    fn report(&self, grant: GrantId, outcome: IoOutcome) -> Result<(), DaemonUnavailable> {
        BUFFERS.with(|buffers| {
            let mut buffers = buffers.borrow_mut();
            let out = &mut buffers.0;
            let kind = WireRequest::Report { grant, outcome }.encode(out);
            // Posted without a doorbell: the daemon drains it with the lane's next message
            // or within its drain interval (module docs).
            self.client.post_deferred(kind, out).map_err(|e| self.call_error("report", e))
        })
    }
}
