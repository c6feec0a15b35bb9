//! The Unix sockets the daemon serves on (P2M, P2M over gRPC, O2M): preparing the path,
//! replacing a stale socket file, refusing to take over a live one, and the file's mode.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// Why a Unix socket cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// A socket path cannot be bound.
    #[error("cannot listen on {path}: {source}", path = path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another daemon already serves this socket.
    #[error("{} is in use by a running daemon", .0.display())]
    InUse(PathBuf),
}

/// Prepares `path` for a new Unix socket: creates its directory and removes a stale
/// socket file (one nobody listens on). Refuses to replace a live socket or anything that
/// is not a socket.
pub fn clear_stale_socket(path: &Path) -> Result<(), SocketError> {
    let bind_err = |source| SocketError::Bind { path: path.into(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(bind_err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // A stream connect to a live socket of another type (the shared-memory
            // handshake is SOCK_SEQPACKET) fails with EPROTOTYPE, not ECONNREFUSED.
            match std::os::unix::net::UnixStream::connect(path) {
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path).map_err(bind_err),
                _ => Err(SocketError::InUse(path.into())),
            }
        }
        Ok(_) => {
            Err(bind_err(io::Error::new(io::ErrorKind::AlreadyExists, "a file that is not a socket is in the way")))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(bind_err(e)),
    }
}

/// Sets a socket file's permission bits.
pub fn set_mode(path: &Path, mode: u32) -> Result<(), SocketError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|source| SocketError::Bind { path: path.into(), source })
}

/// Binds a Unix stream socket at `path` (see [`clear_stale_socket`]) with `mode`.
pub fn bind_unix(path: &Path, mode: u32) -> Result<UnixListener, SocketError> {
    clear_stale_socket(path)?;
    let listener = UnixListener::bind(path).map_err(|source| SocketError::Bind { path: path.into(), source })?;
    set_mode(path, mode)?;
    Ok(listener)
}
