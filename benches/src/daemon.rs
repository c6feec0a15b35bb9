//! A real `trace2ed` for the benches: started in a temporary directory (node `bench`,
//! owning 127.0.0.1), optionally pinned to CPUs, stopped with SIGTERM on drop.
//!
//! The binaries of other packages (`trace2ed`, the `trace2e` CLI) are built with the
//! bench's own profile next to the bench executable, as the daemon's end-to-end tests do.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use trace2e_daemon::launch::{self, Running};

use crate::placement::CpuSet;

/// How long the daemon may take to start or stop on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// How to start a [`Daemon`].
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// Pin every thread of the daemon to these CPUs (set before `exec`, so inherited by
    /// the threads it starts). `None`: the scheduler decides.
    pub cpus: Option<CpuSet>,
    /// Extra environment variables (e.g. `TRACE2E_BREAKDOWN=1`).
    pub env: Vec<(String, String)>,
    /// Extra `trace2ed` flags (e.g. `--shm-linger-us 200`).
    pub args: Vec<String>,
}

/// A running `trace2ed`, stopped (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct Daemon {
    /// Declared before `dir`: the daemon stops before its directory is removed.
    running: Running,
    dir: tempfile::TempDir,
    p2m: PathBuf,
    o2m: PathBuf,
}

impl Daemon {
    /// Starts a daemon and waits until it serves ([`launch::start`]: its readiness line).
    pub fn start(options: &DaemonOptions) -> io::Result<Daemon> {
        let dir = tempfile::Builder::new().prefix("trace2e-bench-").tempdir()?;
        let p2m = dir.path().join("p2m.sock");
        let o2m = dir.path().join("o2m.sock");
        let mut cmd = Command::new(binary("trace2e-daemon", "trace2ed")?);
        cmd.args(["--node", "bench", "--address", "127.0.0.1"])
            .arg("--p2m-socket")
            .arg(&p2m)
            .arg("--o2m-socket")
            .arg(&o2m);
        if !options.args.iter().any(|a| a == "--data-dir" || a == "--ephemeral") {
            cmd.arg("--data-dir").arg(dir.path().join("data"));
        }
        cmd.args(&options.args).envs(options.env.iter().map(|(k, v)| (k, v)));
        if let Some(cpus) = options.cpus {
            cpus.apply_before_exec(&mut cmd);
        }
        let running = launch::start(cmd, &dir.path().join("trace2ed.log"), PATIENCE).map_err(io::Error::other)?;
        Ok(Daemon { running, dir, p2m, o2m })
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.running.pid()
    }

    /// The P2M socket (what `TRACE2E_SOCKET` names).
    pub fn p2m_socket(&self) -> &Path {
        &self.p2m
    }

    /// The O2M socket (what the `trace2e` CLI's `--socket` names).
    pub fn o2m_socket(&self) -> &Path {
        &self.o2m
    }

    /// The socket `TRACE2E_SOCKET` names for a client of `transport`: the P2M socket for
    /// both (the shm handshake is on it; the gRPC client derives `<it>.grpc` from it).
    pub fn socket_for(&self, _transport: &str) -> &Path {
        &self.p2m
    }

    /// A fresh directory for a bench's files, inside the daemon's temporary directory
    /// (removed with it), canonical (what the daemon names resources by).
    pub fn workdir(&self, name: &str) -> io::Result<PathBuf> {
        let dir = self.dir.path().canonicalize()?.join(name);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        self.running.stderr()
    }

    /// Runs the operator CLI against this daemon with `--format json` and parses its output.
    pub fn cli_json(&self, args: &[&str]) -> io::Result<serde_json::Value> {
        let out: Output = Command::new(binary("trace2e-daemon", "trace2e")?)
            .arg("--socket")
            .arg(&self.o2m)
            .args(args)
            .args(["--format", "json"])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "trace2e {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        serde_json::from_slice(&out.stdout).map_err(io::Error::other)
    }
}

/// The profile directory of the running executable: `target/<profile>` for a bench
/// (`target/<profile>/deps/<bench>-<hash>`) or for a binary of this package
/// (`target/<profile>/<bin>`).
pub fn profile_dir() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let parent = exe.parent().ok_or_else(|| io::Error::other("executable has no directory"))?;
    let dir = if parent.file_name().is_some_and(|n| n == "deps") { parent.parent() } else { Some(parent) };
    dir.map(Path::to_path_buf).ok_or_else(|| io::Error::other("executable is not in a cargo target directory"))
}

/// The binary `bin` of workspace package `package`, built (once per bench process) with
/// the profile of the running bench: `cargo build [--release] -p PACKAGE --bin BIN`, which
/// is cheap when it is up to date and never lets a stale binary be measured.
pub fn binary(package: &str, bin: &str) -> io::Result<PathBuf> {
    static BUILT: OnceLock<std::sync::Mutex<Vec<String>>> = OnceLock::new();
    let dir = profile_dir()?;
    let path = dir.join(bin);
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !built.iter().any(|b| b == bin) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", package, "--bin", bin]);
        // `cargo bench` builds into target/release (the bench profile inherits release).
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status()?;
        if !status.success() || !path.exists() {
            return Err(io::Error::other(format!("building {bin} ({package}) failed: {status}")));
        }
        built.push(bin.to_owned());
    }
    Ok(path)
}
