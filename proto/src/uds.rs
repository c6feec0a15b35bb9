//! The one gRPC connector to a local daemon's Unix-domain socket.
//!
//! The daemon serves P2M over gRPC (the baseline transport) and O2M (operators) on Unix
//! sockets; every client of those — `trace2e-io`'s gRPC transport, the `trace2e` CLI,
//! benches and tests — connects through [`connect`]. M2M (node ↔ node) uses TCP and is
//! not concerned.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// Connects a tonic [`Channel`] to the gRPC server listening on the Unix socket `path`.
///
/// Like [`Endpoint::connect`], the connection is made (and the HTTP/2 handshake started)
/// before this returns, so a missing socket or a daemon that is not running is reported
/// here, as a [`ConnectError`] naming `path`. Once connected, the channel reconnects by
/// itself (to the same path) if the server restarts.
///
/// There is no timeout: connecting to a Unix socket fails at once when nobody listens,
/// but a listener that never accepts can stall it, so callers that must not hang wrap
/// the call in `tokio::time::timeout`. Needs a tokio runtime with I/O enabled.
///
/// ```no_run
/// # async fn example() -> Result<(), trace2e_proto::uds::ConnectError> {
/// use trace2e_proto::pb::o2m::o2m_client::O2mClient;
/// let channel = trace2e_proto::uds::connect("/run/trace2e/o2m.sock").await?;
/// let client = O2mClient::new(channel);
/// # drop(client); Ok(()) }
/// ```
pub async fn connect(path: impl AsRef<Path>) -> Result<Channel, ConnectError> {
    let path = path.as_ref().to_owned();
    let socket = path.clone();
    // tonic requires a URI; it is never dialled, the connector always opens the socket.
    Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?)) }
        }))
        .await
        .map_err(|source| ConnectError { path, source })
}

/// [`connect`] failed: nothing listens on the socket, it is not accessible, or the
/// server did not speak HTTP/2.
#[derive(Debug)]
pub struct ConnectError {
    path: PathBuf,
    source: tonic::transport::Error,
}

impl ConnectError {
    /// The socket that could not be connected to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The innermost I/O error of the cause, if the failure was one (e.g. `NotFound`
    /// when there is no socket, `ConnectionRefused` when nobody listens on it).
    pub fn io_error(&self) -> Option<&io::Error> {
        let mut innermost = None;
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&self.source);
        while let Some(e) = next {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                innermost = Some(io);
            }
            next = e.source();
        }
        innermost
    }
}

/// `cannot connect to PATH: CAUSE`, where the cause is the innermost I/O error when there
/// is one (tonic's own message, "transport error", says little).
impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot connect to {}: ", self.path.display())?;
        match self.io_error() {
            Some(io) => write!(f, "{io}"),
            None => write!(f, "{}", self.source),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn a_missing_socket_is_an_error_naming_the_path() {
        let dir = std::env::temp_dir().join(format!("trace2e-uds-test-{}", std::process::id()));
        let path = dir.join("absent.sock");
        let e = runtime().block_on(connect(&path)).unwrap_err();
        assert_eq!(e.path(), path);
        assert_eq!(e.io_error().map(io::Error::kind), Some(io::ErrorKind::NotFound));
        let text = e.to_string();
        assert!(text.starts_with(&format!("cannot connect to {}: ", path.display())), "{text}");
        assert!(text.contains("No such file or directory"), "{text}");
    }

    #[test]
    fn a_socket_nobody_listens_on_is_connection_refused() {
        let dir = std::env::temp_dir().join(format!("trace2e-uds-refused-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("closed.sock");
        let _ = std::fs::remove_file(&path);
        // Bound, then closed: the file stays, nothing listens.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let e = runtime().block_on(connect(&path)).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(e.io_error().map(io::Error::kind), Some(io::ErrorKind::ConnectionRefused));
        assert_eq!(e.path(), path);
    }
}
