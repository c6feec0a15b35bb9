//! The CLI's O2M connection: tonic over the daemon's Unix socket, with a deadline on
//! every call so that the CLI never hangs on a stuck daemon.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Code, Status};
use trace2e_proto::pb::o2m::o2m_client::O2mClient;

use super::CliError;

/// A connected O2M client.
#[derive(Debug, Clone)]
pub struct Daemon {
    client: O2mClient<Channel>,
    socket: PathBuf,
    deadline: Duration,
}

impl Daemon {
    /// Connects to the daemon's O2M socket; `deadline` bounds the connection and each call.
    pub async fn connect(socket: &Path, deadline: Duration) -> Result<Self, CliError> {
        let channel = match tokio::time::timeout(deadline, trace2e_proto::uds::connect(socket)).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => {
                return Err(CliError::Unreachable { socket: socket.to_path_buf(), cause: io_cause(&e) });
            }
            Err(_) => {
                return Err(CliError::Timeout { socket: socket.to_path_buf(), deadline });
            }
        };
        Ok(Self { client: O2mClient::new(channel), socket: socket.to_path_buf(), deadline })
    }

    /// A handle for one call (clients are cheap clones of the channel).
    pub fn client(&self) -> O2mClient<Channel> {
        self.client.clone()
    }

    /// Awaits one call under the deadline and turns its failure into a [`CliError`].
    pub async fn call<T>(&self, call: impl Future<Output = Result<tonic::Response<T>, Status>>) -> Result<T, CliError> {
        match tokio::time::timeout(self.deadline, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.status_error(status)),
            Err(_) => Err(CliError::Timeout { socket: self.socket.clone(), deadline: self.deadline }),
        }
    }

    fn status_error(&self, status: Status) -> CliError {
        match status.code() {
            Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::OutOfRange => CliError::Refused { code: status.code(), message: status.message().to_owned() },
            Code::Unavailable => {
                CliError::Unreachable { socket: self.socket.clone(), cause: status.message().to_owned() }
            }
            Code::DeadlineExceeded | Code::Cancelled => {
                CliError::Timeout { socket: self.socket.clone(), deadline: self.deadline }
            }
            code => CliError::Daemon { code, message: status.message().to_owned() },
        }
    }
}

/// The most telling cause of a connection failure: the innermost I/O error, in words.
fn io_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: Option<&io::Error> = None;
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            cause = Some(io);
        }
        next = e.source();
    }
    match cause.map(io::Error::kind) {
        Some(io::ErrorKind::NotFound) => "no such socket".to_owned(),
        Some(io::ErrorKind::ConnectionRefused) => "connection refused".to_owned(),
        Some(io::ErrorKind::PermissionDenied) => "permission denied".to_owned(),
        Some(_) => cause.map(io::Error::to_string).unwrap_or_default(),
        None => error.to_string(),
    }
}
