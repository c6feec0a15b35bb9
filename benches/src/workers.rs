//! Client processes for the multi-process benches: the parent side of `t2e-load`
//! (`benches/src/bin/t2e-load.rs`).
//!
//! Protocol, one line each way: the worker opens its file through trace2e-io (or std, for
//! the baseline), performs one 64 B read (so it is attached and enrolled), prints `ready`; then for each
//! line `N` on its stdin it performs N 64 B reads and prints `done <ns>`. It exits
//! when its stdin closes. An idle worker is one that is never sent a line.

use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::{Daemon, binary};
use crate::transport::Variant;

/// The size of one worker read.
pub const READ_SIZE: usize = 64;

/// A running `t2e-load` process; closing its stdin on drop ends it.
#[derive(Debug)]
pub struct LoadWorker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl LoadWorker {
    /// Starts a worker reading `file` the `variant` way (std, or trace2e over a
    /// transport of `daemon`), and waits until it is ready (for trace2e: attached,
    /// enrolled, one read done).
    pub fn spawn(daemon: &Daemon, variant: Variant, file: &Path) -> io::Result<LoadWorker> {
        let mut cmd = Command::new(binary("trace2e-benches", "t2e-load")?);
        cmd.arg(file).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        match variant {
            Variant::Std => cmd.arg("--std"),
            Variant::Traced(transport) => cmd
                .env("TRACE2E_SOCKET", daemon.socket_for(transport))
                .env("TRACE2E_TRANSPORT", transport)
                .env_remove("TRACE2E_GRPC_SOCKET"),
        };
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().ok_or_else(|| io::Error::other("no stdout"))?);
        let mut worker = LoadWorker { child, stdin, stdout };
        let line = worker.line()?;
        if line != "ready" {
            return Err(io::Error::other(format!("t2e-load did not get ready: {line:?}")));
        }
        Ok(worker)
    }

    /// The worker's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Tells the worker to perform `reads` mediated reads now.
    pub fn start(&mut self, reads: u64) -> io::Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| io::Error::other("worker closed"))?;
        writeln!(stdin, "{reads}")?;
        stdin.flush()
    }

    /// Waits for the end of the reads started last; returns the time the worker measured.
    pub fn finish(&mut self) -> io::Result<Duration> {
        let line = self.line()?;
        let ns = line
            .strip_prefix("done ")
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| io::Error::other(format!("t2e-load: unexpected answer {line:?}")))?;
        Ok(Duration::from_nanos(ns))
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err(io::Error::other("t2e-load exited (see its stderr above)"));
        }
        Ok(line.trim().to_owned())
    }
}

impl Drop for LoadWorker {
    fn drop(&mut self) {
        drop(self.stdin.take());
        for _ in 0..500 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One iteration of a multi-process bench: `reads` reads in every worker at once, timed
/// from telling the first to start to the last one's end.
pub fn run_together(workers: &mut [LoadWorker], reads: u64) -> io::Result<Duration> {
    let start = Instant::now();
    for w in workers.iter_mut() {
        w.start(reads)?;
    }
    for w in workers.iter_mut() {
        w.finish()?;
    }
    Ok(start.elapsed())
}
