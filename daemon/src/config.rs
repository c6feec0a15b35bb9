//! `trace2ed`'s configuration: command-line flags, an optional TOML file with the same
//! keys, and the defaults. Flags win over the file, the file over the defaults.
//!
//! This module owns parsing and validation only; [`crate::daemon`] acts on the result.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use trace2e_proto::{IntegrityLevel, NodeId};

use crate::engine::EngineConfig;
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
    /// Unix socket for operators (O2M) [default: /run/trace2e/o2m.sock].
    #[arg(long, value_name = "PATH")]
    pub o2m_socket: Option<PathBuf>,
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
    o2m_socket: Option<PathBuf>,
    process_integrity: Option<u32>,
    reservation_timeout_ms: Option<u64>,
    lease_ms: Option<u64>,
    consent_timeout_ms: Option<u64>,
    log_format: Option<LogFormat>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The engine's settings (node, addresses, timeouts, default integrity).
    pub engine: EngineConfig,
    /// P2M socket path.
    pub p2m_socket: PathBuf,
    /// O2M socket path.
    pub o2m_socket: PathBuf,
    /// Log format.
    pub log_format: LogFormat,
}

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
        let addresses = if !self.addresses.is_empty() {
            self.addresses.clone()
        } else if !file.address.is_empty() {
            file.address
        } else {
            host_addresses().map_err(|e| ConfigError::Invalid {
                key: "address",
                message: format!("cannot list the host's addresses: {e}"),
            })?
        };
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
        let mut engine = EngineConfig::new(Topology { node, addresses });
        engine.default_process_integrity =
            IntegrityLevel(self.process_integrity.or(file.process_integrity).unwrap_or(0));
        engine.reservation_timeout =
            ms("reservation-timeout-ms", self.reservation_timeout_ms, file.reservation_timeout_ms, 5_000)?;
        engine.lease = ms("lease-ms", self.lease_ms, file.lease_ms, 30_000)?;
        engine.consent_timeout = ms("consent-timeout-ms", self.consent_timeout_ms, file.consent_timeout_ms, 30_000)?;
        let p2m_socket = self.p2m_socket.clone().or(file.p2m_socket).unwrap_or_else(|| DEFAULT_P2M_SOCKET.into());
        let o2m_socket = self.o2m_socket.clone().or(file.o2m_socket).unwrap_or_else(|| DEFAULT_O2M_SOCKET.into());
        if p2m_socket == o2m_socket {
            return Err(ConfigError::Invalid { key: "o2m-socket", message: "must differ from p2m-socket".into() });
        }
        Ok(DaemonConfig {
            engine,
            p2m_socket,
            o2m_socket,
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
        })
    }
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
    fn host_addresses_include_loopback() {
        assert!(host_addresses().unwrap().contains(&IpAddr::from([127, 0, 0, 1])));
    }
}
