//! `trace2ed`'s configuration: command-line flags, an optional TOML file with the same
//! keys, and the defaults. Flags win over the file, the file over the defaults.
//!
//! This module owns parsing and validation only; [`crate::daemon`] acts on the result.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use trace2e_proto::{IntegrityLevel, NodeId};

use crate::engine::EngineConfig;
use crate::federation::{FederationConfig, PeerEndpoint, TlsFiles};
use crate::topology::Topology;

/// Default path of the P2M socket.
pub const DEFAULT_P2M_SOCKET: &str = "/run/trace2e/p2m.sock";
/// Default path of the O2M socket.
pub const DEFAULT_O2M_SOCKET: &str = "/run/trace2e/o2m.sock";

/// Configuration errors, each naming the offending key or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for trace2ed.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key).
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("invalid {key}: {message}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Command-line flags of `trace2ed`. Every flag can also be set in the `--config` file
/// under the same name (e.g. `p2m-socket = "/run/trace2e/p2m.sock"`, `address = ["10.0.0.1"]`).
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "trace2ed",
    version,
    about = "The trace2e daemon: mediates the file and TCP I/O of local processes, records provenance, enforces compliance policies and keeps an audit trail."
)]
pub struct DaemonArgs {
    /// TOML configuration file with the same keys as these flags.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's name [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// An IP address this node owns (repeatable) [default: all of the host's addresses].
    /// A TCP peer on an address that no managed node owns is external.
    #[arg(long = "address", value_name = "IP")]
    pub addresses: Vec<IpAddr>,
    /// Unix socket for processes (P2M) [default: /run/trace2e/p2m.sock].
    #[arg(long, value_name = "PATH")]
    pub p2m_socket: Option<PathBuf>,
    /// Unix socket for processes using P2M over gRPC, the baseline transport
    /// [default: the P2M socket's path followed by `.grpc`].
    #[arg(long, value_name = "PATH")]
    pub p2m_grpc_socket: Option<PathBuf>,
    /// How long a shared-memory channel's thread busy-polls after serving before it
    /// sleeps, in µs, while its client runs on another CPU; 0 never polls [default: 20].
    #[arg(long, value_name = "US")]
    pub shm_linger_us: Option<u64>,
    /// Unix socket for operators (O2M) [default: /run/trace2e/o2m.sock].
    #[arg(long, value_name = "PATH")]
    pub o2m_socket: Option<PathBuf>,
    /// Memory for the audit trail, in MiB (4 MiB chunks, at least 8): older records go
    /// to an unlinked spill file in --audit-spill-dir; 0 keeps the whole trail in
    /// memory [default: 64].
    #[arg(long, value_name = "MIB")]
    pub audit_memory_mib: Option<u64>,
    /// Directory of the audit spill file (deleted on exit; use a disk, not a tmpfs)
    /// [default: /var/tmp].
    #[arg(long, value_name = "DIR")]
    pub audit_spill_dir: Option<PathBuf>,
    /// Where this node's state lives: labels, policies, deletions, consent, the audit
    /// trail (one daemon per directory) [default: /var/lib/trace2e].
    #[arg(long, value_name = "DIR", conflicts_with = "ephemeral")]
    pub data_dir: Option<PathBuf>,
    /// Keep all state in memory only: a restart forgets every label, policy, deletion,
    /// consent decision and audit record.
    #[arg(long)]
    pub ephemeral: bool,
    /// How often recorded changes are flushed to stable storage, in ms: a power loss loses
    /// at most this much; 0 flushes every grant before it is answered (group commit)
    /// [default: 100]. A crash of the daemon alone loses nothing either way.
    #[arg(long, value_name = "MS")]
    pub fsync_interval_ms: Option<u64>,
    /// Size of a journal segment file, in MiB [default: 64].
    #[arg(long, value_name = "MIB", hide = true)]
    pub journal_segment_mib: Option<u64>,
    /// Integrity level of processes whose executable has no policy [default: 0].
    #[arg(long, value_name = "N")]
    pub process_integrity: Option<u32>,
    /// How long a flow waits for a reserved resource before a "busy" denial, in ms [default: 5000].
    #[arg(long, value_name = "MS")]
    pub reservation_timeout_ms: Option<u64>,
    /// How long a grant may stay unreported before it expires, in ms [default: 30000].
    #[arg(long, value_name = "MS")]
    pub lease_ms: Option<u64>,
    /// How long a flow waits for an owner's consent before it is denied, in ms [default: 30000].
    #[arg(long, value_name = "MS")]
    pub consent_timeout_ms: Option<u64>,
    /// Log format: text or json [default: text]. The level comes from RUST_LOG (default info).
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Serve M2M (federation with peer nodes) on this TCP address, e.g. 10.0.0.1:7100
    /// [default: no federation]. Required with --peer.
    #[arg(long, value_name = "ADDR:PORT")]
    pub m2m_listen: Option<SocketAddr>,
    /// A peer node: NAME=HOST:PORT, where HOST:PORT is its M2M endpoint and HOST (an IP
    /// address) is also an address it owns. Repeatable; repeating a name adds an address
    /// that node owns (its first entry stays its endpoint).
    #[arg(long = "peer", value_name = "NAME=HOST:PORT")]
    pub peers: Vec<String>,
    /// Deadline of one M2M call, in ms [default: 2000]. Questions that may wait for an
    /// owner's consent get the consent timeout on top; reservations peers take here last 5×
    /// this long without an update.
    #[arg(long, value_name = "MS")]
    pub m2m_timeout_ms: Option<u64>,
    /// How long a peer's positive decision may be reused without asking again, in ms; 0
    /// disables reuse [default: 1000].
    #[arg(long, value_name = "MS")]
    pub m2m_cache_ttl_ms: Option<u64>,
    /// This node's M2M TLS certificate (PEM). With --m2m-tls-key and --m2m-tls-ca, M2M
    /// uses mutual TLS: peers must present certificates signed by the CA.
    #[arg(long, value_name = "FILE")]
    pub m2m_tls_cert: Option<PathBuf>,
    /// The private key of --m2m-tls-cert (PEM).
    #[arg(long, value_name = "FILE")]
    pub m2m_tls_key: Option<PathBuf>,
    /// The CA certificate (PEM) that signs every node's M2M certificate.
    #[arg(long, value_name = "FILE")]
    pub m2m_tls_ca: Option<PathBuf>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    node: Option<String>,
    #[serde(default)]
    address: Vec<IpAddr>,
    p2m_socket: Option<PathBuf>,
    p2m_grpc_socket: Option<PathBuf>,
    shm_linger_us: Option<u64>,
    o2m_socket: Option<PathBuf>,
    audit_memory_mib: Option<u64>,
    audit_spill_dir: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    ephemeral: Option<bool>,
    fsync_interval_ms: Option<u64>,
    journal_segment_mib: Option<u64>,
    process_integrity: Option<u32>,
    reservation_timeout_ms: Option<u64>,
    lease_ms: Option<u64>,
    consent_timeout_ms: Option<u64>,
    log_format: Option<LogFormat>,
    m2m_listen: Option<SocketAddr>,
    #[serde(default)]
    peer: Vec<String>,
    m2m_timeout_ms: Option<u64>,
    m2m_cache_ttl_ms: Option<u64>,
    m2m_tls_cert: Option<PathBuf>,
    m2m_tls_key: Option<PathBuf>,
    m2m_tls_ca: Option<PathBuf>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The engine's settings (node, addresses, timeouts, default integrity).
    pub engine: EngineConfig,
    /// P2M socket path (shared-memory handshake).
    pub p2m_socket: PathBuf,
    /// P2M-over-gRPC socket path.
    pub p2m_grpc_socket: PathBuf,
    /// Shared-memory P2M server settings.
    pub shm: crate::p2m::shm::ShmConfig,
    /// O2M socket path.
    pub o2m_socket: PathBuf,
    /// Log format.
    pub log_format: LogFormat,
    /// M2M: where to serve it, the peers' endpoints, TLS.
    pub federation: FederationConfig,
    /// Where the state lives; `None`: in memory only (`--ephemeral`).
    pub durable: Option<crate::durable::DurableConfig>,
}

/// The data directory when none is given.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/trace2e";

impl DaemonArgs {
    /// Merges flags, the config file (if any) and defaults.
    pub fn resolve(&self) -> Result<DaemonConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let node_name = match self.node.clone().or(file.node) {
            Some(n) => n,
            None => hostname()?,
        };
        let node = NodeId::new(node_name).map_err(|e| ConfigError::Invalid { key: "node", message: e.to_string() })?;
        let peer_texts = if self.peers.is_empty() { &file.peer } else { &self.peers };
        let peers = peer_texts.iter().map(|t| parse_peer(t)).collect::<Result<Vec<_>, _>>()?;
        let explicit = !self.addresses.is_empty() || !file.address.is_empty();
        let mut addresses = if !self.addresses.is_empty() {
            self.addresses.clone()
        } else if !file.address.is_empty() {
            file.address
        } else {
            host_addresses().map_err(|e| ConfigError::Invalid {
                key: "address",
                message: format!("cannot list the host's addresses: {e}"),
            })?
        };
        for (name, endpoint) in &peers {
            if *name == node {
                return Err(ConfigError::Invalid { key: "peer", message: format!("{name} is this node's own name") });
            }
            let ip = endpoint.ip().to_canonical();
            if addresses.iter().any(|a| a.to_canonical() == ip) {
                if explicit {
                    return Err(ConfigError::Invalid {
                        key: "peer",
                        message: format!("{ip} is both this node's address and peer {name}'s"),
                    });
                }
                // Detected on this host (several nodes on one machine): the peer owns it.
                addresses.retain(|a| a.to_canonical() != ip);
            }
        }
        let ms = |key: &'static str,
                  flag: Option<u64>,
                  file: Option<u64>,
                  default: u64|
         -> Result<Duration, ConfigError> {
            let v = flag.or(file).unwrap_or(default);
            if v == 0 || v > 24 * 3600 * 1000 {
                return Err(ConfigError::Invalid { key, message: format!("{v} ms is out of range (1 ms to 24 h)") });
            }
            Ok(Duration::from_millis(v))
        };
        let mut topology = Topology::new(node, addresses);
        let mut endpoints: Vec<PeerEndpoint> = Vec::new();
        for (name, endpoint) in peers {
            topology = topology.with_peer(name.clone(), vec![endpoint.ip()]);
            if !endpoints.iter().any(|p| p.node == name) {
                endpoints.push(PeerEndpoint { node: name, endpoint });
            }
        }
        let listen = self.m2m_listen.or(file.m2m_listen);
        if listen.is_none() && !endpoints.is_empty() {
            return Err(ConfigError::Invalid {
                key: "m2m-listen",
                message: "peers need this node's M2M endpoint: set --m2m-listen".into(),
            });
        }
        let m2m_timeout = ms("m2m-timeout-ms", self.m2m_timeout_ms, file.m2m_timeout_ms, 2_000)?;
        let cache_ttl = self.m2m_cache_ttl_ms.or(file.m2m_cache_ttl_ms).unwrap_or(1_000);
        if cache_ttl > 24 * 3600 * 1000 {
            return Err(ConfigError::Invalid {
                key: "m2m-cache-ttl-ms",
                message: format!("{cache_ttl} ms is out of range (0 to 24 h)"),
            });
        }
        let tls = match (
            self.m2m_tls_cert.clone().or(file.m2m_tls_cert),
            self.m2m_tls_key.clone().or(file.m2m_tls_key),
            self.m2m_tls_ca.clone().or(file.m2m_tls_ca),
        ) {
            (None, None, None) => None,
            (Some(cert), Some(key), Some(ca)) => Some(TlsFiles { cert, key, ca }),
            _ => {
                return Err(ConfigError::Invalid {
                    key: "m2m-tls-cert",
                    message: "M2M TLS needs all of --m2m-tls-cert, --m2m-tls-key and --m2m-tls-ca".into(),
                });
            }
        };
        let federation = FederationConfig { listen, peers: endpoints, timeout: m2m_timeout, tls };
        let mut engine = EngineConfig::new(topology);
        engine.m2m_timeout = m2m_timeout;
        engine.remote_cache_ttl = Duration::from_millis(cache_ttl);
        engine.remote_lease = m2m_timeout * 5;
        engine.default_process_integrity =
            IntegrityLevel(self.process_integrity.or(file.process_integrity).unwrap_or(0));
        engine.reservation_timeout =
            ms("reservation-timeout-ms", self.reservation_timeout_ms, file.reservation_timeout_ms, 5_000)?;
        engine.lease = ms("lease-ms", self.lease_ms, file.lease_ms, 30_000)?;
        engine.breakdown = std::sync::Arc::new(crate::breakdown::Breakdown::from_env());
        engine.consent_timeout = ms("consent-timeout-ms", self.consent_timeout_ms, file.consent_timeout_ms, 30_000)?;
        let p2m_socket = self.p2m_socket.clone().or(file.p2m_socket).unwrap_or_else(|| DEFAULT_P2M_SOCKET.into());
        let o2m_socket = self.o2m_socket.clone().or(file.o2m_socket).unwrap_or_else(|| DEFAULT_O2M_SOCKET.into());
        let p2m_grpc_socket = self.p2m_grpc_socket.clone().or(file.p2m_grpc_socket).unwrap_or_else(|| {
            let mut s = p2m_socket.clone().into_os_string();
            s.push(".grpc");
            PathBuf::from(s)
        });
        if p2m_socket == o2m_socket || p2m_grpc_socket == o2m_socket || p2m_socket == p2m_grpc_socket {
            return Err(ConfigError::Invalid {
                key: "o2m-socket",
                message: "p2m-socket, p2m-grpc-socket and o2m-socket must be three different paths".into(),
            });
        }
        let audit_mib = self.audit_memory_mib.or(file.audit_memory_mib).unwrap_or(64);
        if (1..8).contains(&audit_mib) || audit_mib > 1 << 20 {
            return Err(ConfigError::Invalid {
                key: "audit-memory-mib",
                message: format!("{audit_mib} MiB is out of range (0, or 8 MiB to 1 TiB)"),
            });
        }
        engine.audit = crate::audit::AuditConfig {
            spill_dir: (audit_mib > 0)
                .then(|| self.audit_spill_dir.clone().or(file.audit_spill_dir).unwrap_or_else(|| "/var/tmp".into())),
            // One chunk fills while the others are kept.
            memory_chunks: (audit_mib as usize / crate::audit::CHUNK_MIB).saturating_sub(1),
        };
        let ephemeral = self.ephemeral || file.ephemeral.unwrap_or(false);
        let data_dir = self.data_dir.clone().or(file.data_dir);
        if ephemeral && data_dir.is_some() {
            return Err(ConfigError::Invalid {
                key: "ephemeral",
                message: "--ephemeral keeps no state: it cannot be combined with --data-dir".into(),
            });
        }
        let fsync_ms = self.fsync_interval_ms.or(file.fsync_interval_ms).unwrap_or(100);
        if fsync_ms > 60_000 {
            return Err(ConfigError::Invalid {
                key: "fsync-interval-ms",
                message: format!("{fsync_ms} ms is more than a minute"),
            });
        }
        let segment_mib = self.journal_segment_mib.or(file.journal_segment_mib).unwrap_or(64);
        if !(1..=2048).contains(&segment_mib) {
            return Err(ConfigError::Invalid {
                key: "journal-segment-mib",
                message: format!("{segment_mib} MiB is out of range (1 to 2048)"),
            });
        }
        let durable = (!ephemeral).then(|| crate::durable::DurableConfig {
            dir: data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            journal: crate::durable::JournalConfig {
                segment_bytes: segment_mib as usize * (1 << 20),
                fsync_interval: Duration::from_millis(fsync_ms),
            },
        });
        let mut shm = crate::p2m::shm::ShmConfig::default();
        if let Some(us) = self.shm_linger_us.or(file.shm_linger_us) {
            if us > 1_000_000 {
                return Err(ConfigError::Invalid {
                    key: "shm-linger-us",
                    message: format!("{us} µs is more than 1 s"),
                });
            }
            shm.server.linger = Duration::from_micros(us);
        }
        Ok(DaemonConfig {
            engine,
            p2m_socket,
            p2m_grpc_socket,
            shm,
            o2m_socket,
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            federation,
            durable,
        })
    }
}

/// `NAME=HOST:PORT`.
fn parse_peer(text: &str) -> Result<(NodeId, SocketAddr), ConfigError> {
    let invalid = |message: String| ConfigError::Invalid { key: "peer", message };
    let (name, endpoint) = text.split_once('=').ok_or_else(|| invalid(format!("{text:?} is not NAME=HOST:PORT")))?;
    let node = NodeId::new(name).map_err(|e| invalid(e.to_string()))?;
    let endpoint: SocketAddr = endpoint
        .parse()
        .map_err(|_| invalid(format!("{endpoint:?} is not IP:PORT (HOST is an IP address the peer owns)")))?;
    if endpoint.port() == 0 || endpoint.ip().is_unspecified() {
        return Err(invalid(format!("{endpoint} is not a reachable endpoint")));
    }
    Ok((node, endpoint))
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })
}

fn hostname() -> Result<String, ConfigError> {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy().into_owned();
    // Keep the first label of a fully qualified name only if the whole is not a valid node id.
    if NodeId::new(name.clone()).is_ok() {
        Ok(name)
    } else {
        Err(ConfigError::Invalid {
            key: "node",
            message: format!("the host name {name:?} is not a valid node name; set --node"),
        })
    }
}

/// Every IP address configured on the host's interfaces.
pub fn host_addresses() -> std::io::Result<Vec<IpAddr>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a pointer to a list it allocated into `list`; on success we
    // walk it read-only and free it exactly once with freeifaddrs below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a non-null node of the list returned by getifaddrs, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr is non-null and points to a sockaddr whose family says its real type.
            let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            if family == libc::AF_INET {
                // SAFETY: family AF_INET means the storage is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes()));
            } else if family == libc::AF_INET6 {
                // SAFETY: family AF_INET6 means the storage is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `list` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn flags_win_over_file_and_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(
            &path,
            "node = \"from-file\"\naddress = [\"127.0.0.2\"]\nprocess-integrity = 3\nlease-ms = 1000\np2m-socket = \"/tmp/p\"\n",
        )
        .unwrap();
        let args = DaemonArgs::parse_from(["trace2ed", "--config", path.to_str().unwrap(), "--node", "from-flag"]);
        let cfg = args.resolve().unwrap();
        assert_eq!(cfg.engine.topology.node.as_str(), "from-flag");
        assert_eq!(cfg.engine.topology.addresses, vec!["127.0.0.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(cfg.engine.default_process_integrity, IntegrityLevel(3));
        assert_eq!(cfg.engine.lease, Duration::from_millis(1000));
        assert_eq!(cfg.p2m_socket, PathBuf::from("/tmp/p"));
        assert_eq!(cfg.o2m_socket, PathBuf::from(DEFAULT_O2M_SOCKET));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "nod = \"x\"\n").unwrap();
        let err = DaemonArgs::parse_from(["trace2ed", "--config", path.to_str().unwrap()]).resolve().unwrap_err();
        assert!(err.to_string().contains("nod"), "{err}");
        let err = DaemonArgs::parse_from(["trace2ed", "--node", "a b"]).resolve().unwrap_err();
        assert!(err.to_string().contains("node"), "{err}");
        let err = DaemonArgs::parse_from(["trace2ed", "--node", "n", "--lease-ms", "0"]).resolve().unwrap_err();
        assert!(err.to_string().contains("lease-ms"), "{err}");
    }

    #[test]
    fn peers_and_m2m_settings() {
        let args = DaemonArgs::parse_from([
            "trace2ed",
            "--node",
            "node-a",
            "--address",
            "127.0.0.2",
            "--m2m-listen",
            "127.0.0.2:7100",
            "--peer",
            "node-b=127.0.0.3:7100",
            "--peer",
            "node-c=127.0.0.4:7200",
            "--peer",
            "node-b=10.1.0.3:7100",
            "--m2m-timeout-ms",
            "300",
            "--m2m-cache-ttl-ms",
            "0",
        ]);
        let cfg = args.resolve().unwrap();
        let t = &cfg.engine.topology;
        let b = NodeId::new("node-b").unwrap();
        assert_eq!(t.owner("127.0.0.3".parse().unwrap()), crate::topology::Owner::Peer(b.clone()));
        assert_eq!(t.owner("10.1.0.3".parse().unwrap()), crate::topology::Owner::Peer(b.clone()));
        assert_eq!(cfg.federation.peers.len(), 2);
        assert_eq!(cfg.federation.peers[0].endpoint, "127.0.0.3:7100".parse().unwrap());
        assert_eq!(cfg.federation.listen, Some("127.0.0.2:7100".parse().unwrap()));
        assert_eq!(cfg.engine.m2m_timeout, Duration::from_millis(300));
        assert_eq!(cfg.engine.remote_lease, Duration::from_millis(1500));
        assert!(cfg.engine.remote_cache_ttl.is_zero());
        assert!(cfg.federation.tls.is_none());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(
            &path,
            "node = \"node-b\"\naddress = [\"127.0.0.3\"]\nm2m-listen = \"127.0.0.3:7100\"\npeer = [\"node-a=127.0.0.2:7100\"]\n",
        )
        .unwrap();
        let cfg = DaemonArgs::parse_from(["trace2ed", "--config", path.to_str().unwrap()]).resolve().unwrap();
        assert_eq!(cfg.federation.peers[0].node.as_str(), "node-a");
    }

    #[test]
    fn bad_peers_are_named() {
        let base = ["trace2ed", "--node", "node-a", "--address", "127.0.0.2", "--m2m-listen", "127.0.0.2:7100"];
        for (peer, want) in [
            ("node-b", "NAME=HOST:PORT"),
            ("node b=127.0.0.3:1", "node name"),
            ("node-b=localhost:1", "IP:PORT"),
            ("node-b=127.0.0.3:0", "reachable"),
            ("node-a=127.0.0.3:1", "own name"),
            ("node-b=127.0.0.2:1", "both"),
        ] {
            let mut args: Vec<&str> = base.to_vec();
            args.extend(["--peer", peer]);
            let err = DaemonArgs::parse_from(args).resolve().unwrap_err().to_string();
            assert!(err.contains("peer") && err.contains(want), "{peer}: {err}");
        }
        let err =
            DaemonArgs::parse_from(["trace2ed", "--node", "a", "--address", "127.0.0.2", "--peer", "b=127.0.0.3:1"])
                .resolve()
                .unwrap_err();
        assert!(err.to_string().contains("m2m-listen"), "{err}");
        let mut args: Vec<&str> = base.to_vec();
        args.extend(["--m2m-tls-cert", "/x"]);
        let err = DaemonArgs::parse_from(args).resolve().unwrap_err();
        assert!(err.to_string().contains("m2m-tls"), "{err}");
    }

    #[test]
    fn host_addresses_include_loopback() {
        assert!(host_addresses().unwrap().contains(&IpAddr::from([127, 0, 0, 1])));
    }
}
