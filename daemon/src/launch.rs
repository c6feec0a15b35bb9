//! Starting a `trace2ed` process and waiting until it serves: the one implementation the
//! demo (`trace2e demo`), the benches and the end-to-end tests share.
//!
//! This module owns the process's life only (spawn, readiness, stop); what the daemon is
//! started with is the caller's [`Command`]. Readiness is the line [`READY`] that
//! `trace2ed` prints on stdout once every socket it serves is bound (so a connection
//! made after it is answered), never a guess by sleeping. A daemon that exits, or does
//! not get ready within the caller's patience, is an error carrying its stderr.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::process::Command;
//! use std::time::Duration;
//! let mut cmd = Command::new("trace2ed");
//! cmd.args(["--node", "node-a", "--p2m-socket", "/tmp/p2m.sock", "--o2m-socket", "/tmp/o2m.sock"]);
//! let daemon = trace2e_daemon::launch::start(cmd, "/tmp/trace2ed.log".as_ref(), Duration::from_secs(30))?;
//! // ... use the daemon; dropping it stops it (SIGTERM, then SIGKILL).
//! # drop(daemon); Ok(()) }
//! ```

use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The first word of the line `trace2ed` prints on stdout when it serves.
pub const READY: &str = "trace2ed ready";

/// Why a daemon could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The process could not be spawned, or its log file created.
    #[error("cannot start trace2ed: {0}")]
    Spawn(#[from] io::Error),
    /// The daemon exited before it was ready.
    #[error("trace2ed exited ({status}) before it was ready; its stderr:\n{stderr}")]
    Exited {
        /// How it ended.
        status: ExitStatus,
        /// What it wrote on stderr.
        stderr: String,
    },
    /// The daemon did not print its readiness line in time (it is killed).
    #[error("trace2ed was not ready within {patience:?}; its stderr:\n{stderr}")]
    NotReady {
        /// How long it was given.
        patience: Duration,
        /// What it wrote on stderr.
        stderr: String,
    },
}

/// A running `trace2ed` that printed its readiness line; stopped on drop (SIGTERM, then
/// SIGKILL if it does not exit within the patience it was started with).
#[derive(Debug)]
pub struct Running {
    child: Child,
    log: PathBuf,
    patience: Duration,
    /// The readiness line, e.g. `trace2ed ready node=node-a m2m=127.0.0.2:7100`.
    ready_line: String,
}

/// Spawns `cmd` (a `trace2ed` command line), its stderr appended to the file `log` and
/// its stdout read for the [`READY`] line, and waits at most `patience` for that line.
pub fn start(mut cmd: Command, log: &Path, patience: Duration) -> Result<Running, LaunchError> {
    let stderr = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(stderr));
    let mut child = cmd.spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| io::Error::other("trace2ed's stdout is not piped"))?;
    let (tx, rx) = mpsc::channel();
    // Reads stdout to its end, so the daemon never blocks on a full pipe; hands over the
    // readiness line (or end of file, as None).
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with(READY)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(Some(line));
            }
        }
        if let Some(tx) = tx {
            let _ = tx.send(None);
        }
    });
    let mut running = Running { child, log: log.to_path_buf(), patience, ready_line: String::new() };
    let deadline = Instant::now() + patience;
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Some(line)) => {
            running.ready_line = line;
            Ok(running)
        }
        Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            // stdout closed without the line: the daemon is exiting; wait for its status.
            let status = running.wait_until(deadline)?;
            match status {
                Some(status) => Err(LaunchError::Exited { status, stderr: running.stderr() }),
                None => Err(LaunchError::NotReady { patience, stderr: running.stderr() }),
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => Err(LaunchError::NotReady { patience, stderr: running.stderr() }),
    }
}

impl Running {
    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The readiness line it printed.
    pub fn ready_line(&self) -> &str {
        &self.ready_line
    }

    /// What the daemon wrote on stderr so far (its log).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills it (SIGKILL: no clean shutdown) and reaps it.
    pub fn kill(&mut self) -> io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(drop)
    }

    /// Sends SIGTERM and waits for the exit status, at most the patience it was started
    /// with; `None` if it did not exit (it is then killed).
    pub fn stop(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(Some(status));
        }
        if let Some(pid) = i32::try_from(self.child.id()).ok().and_then(rustix::process::Pid::from_raw) {
            // Our own child, not reaped yet (try_wait above), so the pid is still its.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let status = self.wait_until(Instant::now() + self.patience)?;
        if status.is_none() {
            self.kill()?;
        }
        Ok(status)
    }

    fn wait_until(&mut self, deadline: Instant) -> io::Result<Option<ExitStatus>> {
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("cannot stop trace2ed (pid {}): {e}", self.child.id());
        }
    }
}
