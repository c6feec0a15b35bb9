//! `trace2ed`: binds the sockets, serves P2M and O2M, expires leases, and shuts down
//! cleanly on SIGTERM/SIGINT (sockets removed).
//!
//! This module owns the daemon's lifecycle only; decisions are the engine's, protocol
//! translation the services'.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::DaemonConfig;
use crate::engine::Engine;
use crate::p2m::{self, Clients};

/// How often unreported grants are checked for lease expiry.
const LEASE_SWEEP: Duration = Duration::from_millis(100);

/// Failures that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A socket path cannot be bound.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another daemon already serves this socket.
    #[error("{0} is in use by a running daemon")]
    InUse(PathBuf),
    /// A server failed.
    #[error("{service} server failed: {source}")]
    Serve {
        /// Which service.
        service: &'static str,
        /// Why.
        source: tonic::transport::Error,
    },
}

/// Binds a Unix socket at `path`, creating its directory and replacing a stale socket file
/// (one nobody listens on). Refuses to replace anything that is not a socket.
pub fn bind_unix(path: &Path, mode: u32) -> Result<UnixListener, DaemonError> {
    let bind_err = |source| DaemonError::Bind { path: path.into(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(bind_err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(DaemonError::InUse(path.into()));
            }
            std::fs::remove_file(path).map_err(bind_err)?;
        }
        Ok(_) => {
            return Err(bind_err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(bind_err)?;
    Ok(listener)
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run_until(
    config: DaemonConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), DaemonError> {
    let engine = Arc::new(Engine::new(config.engine.clone()));
    // Any local process may talk P2M (it is identified by SO_PEERCRED); only the
    // daemon's user (and root) may act as operator.
    let p2m_listener = bind_unix(&config.p2m_socket, 0o666)?;
    let o2m_listener = match bind_unix(&config.o2m_socket, 0o600) {
        Ok(l) => l,
        Err(e) => {
            let _ = std::fs::remove_file(&config.p2m_socket);
            return Err(e);
        }
    };
    tracing::info!(
        node = %engine.node(),
        addresses = ?engine.topology().addresses,
        p2m = %config.p2m_socket.display(),
        o2m = %config.o2m_socket.display(),
        "trace2ed serving"
    );

    let clients = Clients::new(Arc::clone(&engine));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let p2m = tonic::transport::Server::builder()
        .add_service(p2m::server(Arc::clone(&engine), Arc::clone(&clients)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(p2m_listener), stopped(stop_rx.clone()));
    let o2m = tonic::transport::Server::builder()
        .add_service(crate::operator::server(Arc::clone(&engine)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(o2m_listener), stopped(stop_rx.clone()));
    let p2m = tokio::spawn(p2m);
    let o2m = tokio::spawn(o2m);

    let sweeper = {
        let engine = Arc::clone(&engine);
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(LEASE_SWEEP);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let expired = engine.expire_leases();
                        if expired > 0 {
                            tracing::warn!(expired, "grants expired without a report; reservations released");
                        }
                    }
                    _ = rx.wait_for(|s| *s) => break,
                }
            }
        })
    };

    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    // Open client connections (gRPC keeps them alive) must not hold the daemon up forever.
    let grace = Duration::from_secs(2);
    let results = tokio::time::timeout(grace, async { (p2m.await, o2m.await) }).await;
    sweeper.abort();
    for path in [&config.p2m_socket, &config.o2m_socket] {
        if let Err(e) = std::fs::remove_file(path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove socket");
        }
    }
    if let Ok((p, o)) = results {
        if let Ok(Err(source)) = p {
            return Err(DaemonError::Serve { service: "P2M", source });
        }
        if let Ok(Err(source)) = o {
            return Err(DaemonError::Serve { service: "O2M", source });
        }
    } else {
        tracing::warn!("connections still open after {grace:?}; stopped without waiting for them");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
