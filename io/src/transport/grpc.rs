//! P2M over gRPC (tonic) on the daemon's Unix socket: the baseline transport the
//! shared-memory one is measured against (`benches/`). Only with the `grpc` feature.
//!
//! Callers are synchronous std code, possibly running inside a tokio runtime of either
//! flavour, so the gRPC client lives on its own single-worker runtime. Each call is
//! spawned there and the caller waits on a std channel: that works from any thread,
//! where `Runtime::block_on` would panic inside a runtime and
//! `tokio::sync::oneshot::Receiver::blocking_recv` would panic in an async context.
//! Calls from many threads multiplex over one HTTP/2 connection.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use tonic::transport::Channel;
use trace2e_proto::pb::p2m::{self, p2m_client::P2mClient};
use trace2e_proto::{Decision, Direction, Fd, GrantId, IoOutcome};

use super::{Deadlines, Target, Transport};
use crate::breakdown;
use crate::error::{DaemonUnavailable, UnavailableKind};

/// How much longer than a call's own deadline the caller waits for the runtime to answer
/// before giving up on it (a backstop: the runtime enforces the deadline itself).
const BACKSTOP: Duration = Duration::from_secs(5);

/// The gRPC transport: a dedicated runtime and a lazily connected channel.
#[derive(Debug)]
pub(crate) struct GrpcTransport {
    /// Always `Some` until drop.
    runtime: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
    deadlines: Deadlines,
}

#[derive(Debug)]
struct Shared {
    socket: PathBuf,
    /// `None` until the first successful connect. Once connected, tonic's channel
    /// reconnects by itself if the daemon restarts.
    channel: tokio::sync::Mutex<Option<Channel>>,
}

impl GrpcTransport {
    /// Builds the runtime; does not connect yet (the first call does).
    pub(crate) fn new(socket: PathBuf, deadlines: Deadlines) -> Result<Self, DaemonUnavailable> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("trace2e-io-grpc")
            .enable_all()
            .build()
            .map_err(|e| {
                DaemonUnavailable::new(
                    UnavailableKind::Failed,
                    "connect",
                    format!("cannot start the gRPC client runtime: {e}"),
                )
            })?;
        let shared = Arc::new(Shared { socket, channel: tokio::sync::Mutex::new(None) });
        Ok(Self { runtime: Some(runtime), shared, deadlines })
    }

    /// Runs `call` on the client's runtime with a connected client, within `deadline`,
    /// and blocks the calling thread until it finishes.
    fn call<T, F, Fut>(&self, operation: &'static str, deadline: Duration, call: F) -> Result<T, DaemonUnavailable>
    where
        T: Send + 'static,
        F: FnOnce(P2mClient<Channel>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, tonic::Status>> + Send,
    {
        let Some(runtime) = self.runtime.as_ref() else {
            return Err(DaemonUnavailable::new(UnavailableKind::Failed, operation, "the gRPC client is shut down"));
        };
        let shared = self.shared.clone();
        let (tx, rx) = mpsc::sync_channel(1);
        runtime.spawn(async move {
            let work = async {
                let client = P2mClient::new(shared.channel(operation).await?);
                call(client).await.map_err(|status| from_status(operation, &shared.socket, &status))
            };
            let result = match tokio::time::timeout(deadline, work).await {
                Ok(result) => result,
                Err(_) => Err(timed_out(operation, deadline)),
            };
            // The caller may have given up (backstop); nothing to do then.
            let _ = tx.send(result);
        });
        match rx.recv_timeout(deadline + BACKSTOP) {
            Ok(result) => result,
            Err(_) => Err(timed_out(operation, deadline)),
        }
    }
}

impl Drop for GrpcTransport {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside an async context.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Shared {
    async fn channel(&self, operation: &'static str) -> Result<Channel, DaemonUnavailable> {
        let mut channel = self.channel.lock().await;
        if let Some(c) = channel.as_ref() {
            return Ok(c.clone());
        }
        let c = trace2e_proto::uds::connect(&self.socket)
            .await
            .map_err(|e| DaemonUnavailable::new(UnavailableKind::Unreachable, operation, e.to_string()))?;
        *channel = Some(c.clone());
        Ok(c)
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn timed_out(operation: &'static str, deadline: Duration) -> DaemonUnavailable {
    DaemonUnavailable::new(UnavailableKind::TimedOut, operation, format!("no answer within {deadline:?}"))
}

fn from_status(operation: &'static str, socket: &Path, status: &tonic::Status) -> DaemonUnavailable {
    let kind = match status.code() {
        tonic::Code::Unavailable => UnavailableKind::Unreachable,
        // The connection broke (the daemon died): as unreachable as a refused connect.
        tonic::Code::Unknown
            if std::error::Error::source(status).is_some_and(|s| s.is::<tonic::transport::Error>()) =>
        {
            UnavailableKind::Unreachable
        }
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => UnavailableKind::TimedOut,
        _ => UnavailableKind::Failed,
    };
    let mut detail = format!("{} ({:?}): {}", socket.display(), status.code(), status.message());
    if let Some(source) = std::error::Error::source(status) {
        detail.push_str(": ");
        detail.push_str(&error_chain(source));
    }
    DaemonUnavailable::new(kind, operation, detail)
}

fn with_deadline<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    request
}

impl Transport for GrpcTransport {
    fn enroll(&self, fd: Fd, target: &Target) -> Result<(), DaemonUnavailable> {
        let target = match target {
            Target::File(path) => {
                let path = path.to_str().ok_or_else(|| {
                    DaemonUnavailable::new(
                        UnavailableKind::Failed,
                        "enroll",
                        format!("{} is not UTF-8, which P2M over gRPC cannot carry", path.display()),
                    )
                })?;
                p2m::enroll_request::Target::File(p2m::FileTarget { path: path.to_owned() })
            }
            Target::Stream { local, peer } => p2m::enroll_request::Target::Stream(p2m::StreamTarget {
                local: local.to_string(),
                peer: peer.to_string(),
            }),
        };
        let message = p2m::EnrollRequest { fd: fd.0, target: Some(target) };
        let deadline = self.deadlines.short;
        self.call(
            "enroll",
            deadline,
            move |mut c| async move { c.enroll(with_deadline(message, deadline)).await.map(drop) },
        )
    }

    fn unenroll(&self, fd: Fd) -> Result<(), DaemonUnavailable> {
        let deadline = self.deadlines.short;
        self.call("unenroll", deadline, move |mut c| async move {
            c.unenroll(with_deadline(p2m::UnenrollRequest { fd: fd.0 }, deadline)).await.map(drop)
        })
    }

    fn request(&self, fd: Fd, direction: Direction) -> Result<Decision, DaemonUnavailable> {
        let deadline = self.deadlines.request;
        let message = p2m::IoRequest { fd: fd.0, direction: p2m::Direction::from(direction) as i32 };
        // The round trip includes the message's encoding (prost, inside tonic).
        let calling = breakdown::start();
        let decision = self
            .call("request", deadline, move |mut c| async move { c.request(with_deadline(message, deadline)).await });
        breakdown::stop(breakdown::Stage::RoundTrip, calling);
        let decision = decision?;
        Decision::try_from(decision.into_inner()).map_err(|e| {
            DaemonUnavailable::new(
                UnavailableKind::Failed,
                "request",
                format!("malformed decision from the daemon: {e}"),
            )
        })
    }

    fn report(&self, grant: GrantId, outcome: IoOutcome) -> Result<(), DaemonUnavailable> {
        let deadline = self.deadlines.short;
        let message = p2m::IoReport { grant: grant.0, ok: outcome.ok, bytes: outcome.bytes };
        self.call(
            "report",
            deadline,
            move |mut c| async move { c.report(with_deadline(message, deadline)).await.map(drop) },
        )
    }
}
