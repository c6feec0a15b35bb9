//! `trace2ed`: binds the sockets, serves P2M and O2M, expires leases, and shuts down
//! cleanly on SIGTERM/SIGINT (sockets removed).
//!
//! This module owns the daemon's lifecycle only; decisions are the engine's, protocol
//! translation the services'.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::wrappers::UnixListenerStream;

use crate::config::DaemonConfig;
use crate::engine::Engine;
use crate::federation::{self, FederationError, Tls};
use crate::p2m::{self, Clients};
use crate::socket::{SocketError, bind_unix};

/// How often unreported grants are checked for lease expiry.
const LEASE_SWEEP: Duration = Duration::from_millis(100);

/// Failures that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A Unix socket cannot be served.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The audit spill directory cannot hold the spill file.
    #[error(
        "cannot make the audit spill file in {}: {source} (set --audit-spill-dir, or --audit-memory-mib 0 to keep the audit trail in memory)",
        dir.display()
    )]
    AuditSpill {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The M2M address cannot be bound.
    #[error("cannot serve M2M on {addr}: {source}")]
    BindM2m {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// Federation (M2M TLS, peers) cannot be set up.
    #[error(transparent)]
    Federation(#[from] FederationError),
    /// The data directory cannot be used, or its state cannot be read back.
    #[error(transparent)]
    DataDir(#[from] crate::durable::DataDirError),
    /// A server failed.
    #[error("{service} server failed: {source}")]
    Serve {
        /// Which service.
        service: &'static str,
        /// Why.
        source: tonic::transport::Error,
    },
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run_until(
    config: DaemonConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), DaemonError> {
    if let Some(dir) = &config.engine.audit.spill_dir {
        crate::audit::check_spill_dir(dir).map_err(|source| DaemonError::AuditSpill { dir: dir.clone(), source })?;
    }
    let tls = config.federation.tls.as_ref().map(Tls::load).transpose()?;
    let peers = federation::client(
        &config.engine.topology.node,
        &config.federation,
        tls.as_ref(),
        config.engine.consent_timeout,
    )?;
    let federation: Arc<dyn crate::remote::Federation> = match peers.clone() {
        Some(peers) => Arc::new(peers),
        None => Arc::new(crate::remote::NoPeers),
    };
    // The data directory stays locked until this function returns.
    let (engine, _data_dir) = match &config.durable {
        None => {
            tracing::warn!("--ephemeral: state is kept in memory only and is lost when the daemon stops");
            (Arc::new(Engine::with_federation(config.engine.clone(), federation)), None)
        }
        Some(durable) => {
            let data = crate::durable::DataDir::open(&durable.dir, &config.engine.topology.node)?;
            let recovered = crate::durable::recover(&data, durable, &config.engine.audit)?;
            (Arc::new(Engine::recover(config.engine.clone(), federation, recovered, &data)), Some(data))
        }
    };
    // Any local process may talk P2M (it is identified by SO_PEERCRED); only the
    // daemon's user (and root) may act as operator.
    let sockets = [&config.p2m_socket, &config.p2m_grpc_socket, &config.o2m_socket];
    let remove_sockets = || {
        for path in sockets {
            if let Err(e) = std::fs::remove_file(path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove socket");
            }
        }
    };
    let bound = (|| {
        let shm = p2m::shm::bind(&config.p2m_socket, &config.shm)?;
        let grpc = bind_unix(&config.p2m_grpc_socket, 0o666)?;
        let o2m = bind_unix(&config.o2m_socket, 0o600)?;
        Ok::<_, DaemonError>((shm, grpc, o2m))
    })();
    let (shm_listener, p2m_listener, o2m_listener) = match bound {
        Ok(b) => b,
        Err(e) => {
            // Only remove what we created: a socket in use by another daemon is not ours.
            if !matches!(e, DaemonError::Socket(SocketError::InUse(_))) {
                remove_sockets();
            }
            return Err(e);
        }
    };
    let m2m_listener = match config.federation.listen {
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => Some(listener),
            Err(source) => {
                remove_sockets();
                return Err(DaemonError::BindM2m { addr, source });
            }
        },
        None => None,
    };
    if let Some(listener) = &m2m_listener {
        tracing::info!(m2m = ?listener.local_addr().ok(), peers = config.federation.peers.len(), tls = tls.is_some(), "serving M2M");
    }
    tracing::info!(
        node = %engine.node(),
        addresses = ?engine.topology().addresses,
        p2m = %config.p2m_socket.display(),
        p2m_grpc = %config.p2m_grpc_socket.display(),
        o2m = %config.o2m_socket.display(),
        "trace2ed serving"
    );

    let clients = Clients::new(Arc::clone(&engine));
    let mut shm = p2m::shm::ShmServer::start(
        shm_listener,
        config.shm.clone(),
        Arc::clone(&engine),
        Arc::clone(&clients),
        tokio::runtime::Handle::current(),
    )
    .map_err(|source| SocketError::Bind { path: config.p2m_socket.clone(), source })?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let p2m = tonic::transport::Server::builder()
        .add_service(p2m::grpc::server(Arc::clone(&engine), Arc::clone(&clients)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(p2m_listener), stopped(stop_rx.clone()));
    let o2m = tonic::transport::Server::builder()
        .add_service(crate::operator::server(Arc::clone(&engine)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(o2m_listener), stopped(stop_rx.clone()));
    let p2m = tokio::spawn(p2m);
    let o2m = tokio::spawn(o2m);
    let m2m_bound = m2m_listener.as_ref().and_then(|l| l.local_addr().ok());
    let m2m = m2m_listener.map(|listener| {
        tokio::spawn(federation::serve(Arc::clone(&engine), listener, tls.clone(), stopped(stop_rx.clone())))
    });
    // Poll the shutdown future once before saying we are ready: `termination()` installs
    // its signal handlers when first polled, and a SIGTERM sent before that would kill the
    // daemon without the clean stop (sockets left behind).
    let mut shutdown = std::pin::pin!(shutdown);
    let stopped_already = tokio::select! {
        biased;
        () = &mut shutdown => true,
        () = std::future::ready(()) => false,
    };
    // Every socket is bound and served: connections made from now on are answered. The
    // launcher (`launch::start`) waits for this line.
    {
        use std::io::Write as _;
        let m2m_addr = m2m_bound.map_or_else(|| "none".to_owned(), |a| a.to_string());
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{} node={} m2m={m2m_addr}", crate::launch::READY, engine.node());
        let _ = out.flush();
    }
    if m2m.is_some() {
        // Peers drop what they reused from an earlier run of this node (approvals, stream
        // shortcuts): nothing from before a restart is trusted without asking again.
        tokio::spawn(engine.announce_policy_change());
    }

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

    if !stopped_already {
        shutdown.await;
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    // Open client connections (gRPC keeps them alive) must not hold the daemon up forever.
    let grace = Duration::from_secs(2);
    let results = tokio::time::timeout(grace, async { (p2m.await, o2m.await) }).await;
    if let Some(m2m) = m2m
        && let Ok(Ok(Err(source))) = tokio::time::timeout(grace, m2m).await
    {
        tracing::warn!(error = %source, "M2M server failed");
    }
    sweeper.abort();
    // Joining the accept thread blocks (at most one poll interval): not on a runtime thread.
    let _ = tokio::task::spawn_blocking(move || shm.stop()).await;
    remove_sockets();
    if let Err(why) = engine.flush() {
        tracing::error!(problem = %why, "the journal could not be flushed at shutdown");
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
