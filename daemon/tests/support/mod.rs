//! End-to-end test support: a real `trace2ed` in a temporary directory, real client
//! processes (`trace2e-proc`), the real CLI (`trace2e`), and a typed O2M client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use trace2e_proto::pb::o2m::o2m_client::O2mClient;

/// Generous bound for anything a loaded 2-core machine does in a test; only a hang hits it.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A running `trace2ed` ([`trace2e_daemon::launch`]: ready when it printed its readiness
/// line), stopped (SIGTERM) on drop.
pub struct Daemon {
    /// Declared before `dir`: the daemon stops before its directory is removed.
    running: trace2e_daemon::launch::Running,
    pub dir: tempfile::TempDir,
    /// P2M socket (shared-memory handshake; what `TRACE2E_SOCKET` names).
    pub p2m: PathBuf,
    /// P2M over gRPC socket (the daemon's default: the P2M socket's path + `.grpc`).
    pub p2m_grpc: PathBuf,
    pub o2m: PathBuf,
    pub node: String,
    /// The command line it was started with (for [`Daemon::restart`]), and its starts.
    args: Vec<std::ffi::OsString>,
    starts: usize,
}

impl Daemon {
    /// Starts a daemon for node `node` owning `addresses`, with extra flags.
    pub fn start(node: &str, addresses: &[&str], extra: &[&str]) -> Self {
        Self::start_with(node, addresses, extra, |_| {})
    }

    /// [`Daemon::start`], with `prepare` applied to the command before it is spawned.
    pub fn start_with(node: &str, addresses: &[&str], extra: &[&str], prepare: impl FnOnce(&mut Command)) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), node, addresses, extra, prepare)
    }

    /// The data directory (`DIR/data` unless the flags name another, or `--ephemeral`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn start_in(
        dir: tempfile::TempDir,
        node: &str,
        addresses: &[&str],
        extra: &[&str],
        prepare: impl FnOnce(&mut Command),
    ) -> Self {
        let p2m = dir.path().join("p2m.sock");
        let o2m = dir.path().join("o2m.sock");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trace2ed"));
        cmd.arg("--node").arg(node).arg("--p2m-socket").arg(&p2m).arg("--o2m-socket").arg(&o2m);
        for a in addresses {
            cmd.arg("--address").arg(a);
        }
        if !extra.iter().any(|a| *a == "--data-dir" || *a == "--ephemeral") {
            // Small segments: many daemons run at once in the tests.
            cmd.arg("--data-dir").arg(dir.path().join("data")).args(["--journal-segment-mib", "4"]);
        }
        cmd.args(extra);
        cmd.env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
        prepare(&mut cmd);
        let args = cmd.get_args().map(ToOwned::to_owned).collect();
        let running = trace2e_daemon::launch::start(cmd, &dir.path().join("trace2ed.log"), PATIENCE)
            .unwrap_or_else(|e| panic!("{node}: {e}"));
        let mut p2m_grpc = p2m.clone().into_os_string();
        p2m_grpc.push(".grpc");
        Self { running, dir, p2m, p2m_grpc: p2m_grpc.into(), o2m, node: node.into(), args, starts: 1 }
    }

    /// Starts the daemon again with the same command line (the same sockets and data
    /// directory) once it has stopped or been killed; its log goes to a new file.
    pub fn restart(&mut self) {
        assert!(!self.alive(), "restart: trace2ed (pid {}) is still running", self.pid());
        self.starts += 1;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trace2ed"));
        cmd.args(&self.args);
        cmd.env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
        let log = self.dir.path().join(format!("trace2ed.{}.log", self.starts));
        self.running =
            trace2e_daemon::launch::start(cmd, &log, PATIENCE).unwrap_or_else(|e| panic!("{} restart: {e}", self.node));
    }

    /// The daemon's log so far (of this run).
    pub fn log(&self) -> String {
        self.running.stderr()
    }

    /// A path inside the daemon's temporary directory (canonical).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().canonicalize().unwrap().join(name)
    }

    /// A `trace2e-proc` command wired to this daemon.
    pub fn proc_cmd(&self, args: &[&str]) -> Command {
        self.proc_cmd_with(&proc_bin(), args)
    }

    /// A command running `exe` (a copy of `trace2e-proc`) wired to this daemon.
    pub fn proc_cmd_with(&self, exe: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(exe);
        cmd.args(args).env("TRACE2E_SOCKET", &self.p2m).env_remove("TRACE2E_TRANSPORT");
        cmd
    }

    /// Runs `trace2e-proc` to completion.
    pub fn proc(&self, args: &[&str]) -> Output {
        run(self.proc_cmd(args))
    }

    /// Runs the operator CLI `trace2e` to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trace2e"));
        cmd.arg("--socket").arg(&self.o2m).args(args);
        run(cmd)
    }

    /// Runs the CLI and parses its stdout as JSON; panics with its stderr if it failed.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cli(args);
        assert!(out.status.success(), "trace2e {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// A typed O2M client.
    pub async fn o2m(&self) -> O2mClient<tonic::transport::Channel> {
        O2mClient::new(uds_channel(&self.o2m).await)
    }

    /// Whether the daemon process is still running.
    pub fn alive(&mut self) -> bool {
        self.running.alive()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.running.stop().unwrap().expect("trace2ed did not stop on SIGTERM")
    }

    /// Kills it (SIGKILL: no clean shutdown).
    pub fn kill(&mut self) {
        self.running.kill().unwrap();
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.running.pid()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.alive() {
            self.stop();
        }
        if std::thread::panicking() {
            eprintln!("--- trace2ed log ---\n{}", self.log());
        }
    }
}

/// A gRPC channel over the Unix socket at `path`.
pub async fn uds_channel(path: &Path) -> tonic::transport::Channel {
    trace2e_proto::uds::connect(path).await.unwrap()
}

/// Waits for a child with [`PATIENCE`]; `None` if it did not exit (it is then killed).
pub fn wait_timeout(child: &mut Child) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Accepts one connection on `listener` within [`PATIENCE`]; panics otherwise.
pub fn accept_timeout(listener: &std::net::TcpListener) -> std::net::TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                return stream;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no connection on {:?} within {PATIENCE:?}", listener.local_addr());
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Runs a command to completion within [`PATIENCE`] (killed and failed otherwise).
pub fn run(mut cmd: Command) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let status = wait_timeout(&mut child).unwrap_or_else(|| panic!("{cmd:?} hung"));
    Output { status, stdout: out.join().unwrap().into_bytes(), stderr: err.join().unwrap().into_bytes() }
}

/// Spawns a command and waits for its first stdout line (e.g. "listening on ADDR").
pub fn spawn_until_line(mut cmd: Command) -> (Child, String) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(PATIENCE).expect("no first line");
    (child, line.trim().to_owned())
}

/// A copy of `trace2e-proc` at `to`: the same program under another path, so it can have a
/// policy of its own.
///
/// The copy is made by a `cp` child, not by `std::fs::copy`. While this process holds the
/// copy open for writing, any other test thread that forks (to start a daemon or a client)
/// hands its child that descriptor until the child execs, and executing the copy in that
/// window fails with "Text file busy" (ETXTBSY). A `cp` child's descriptor is never in
/// this process.
pub fn copy_proc_bin(to: &Path) {
    let mut cp = Command::new("cp");
    cp.arg(proc_bin()).arg(to);
    let out = run(cp);
    assert!(out.status.success(), "cp {:?} {to:?}: {}", proc_bin(), String::from_utf8_lossy(&out.stderr));
}

/// The `trace2e-proc` binary (built on demand: it belongs to the `trace2e-io` package).
pub fn proc_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            // target/<profile>/deps/<test> -> target/<profile>/trace2e-proc
            let exe = std::env::current_exe().unwrap();
            let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
            let bin = profile_dir.join("trace2e-proc");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = Command::new(cargo);
            build.args(["build", "-p", "trace2e-io", "--bin", "trace2e-proc"]);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                build.arg("--release");
            }
            // Always (re)build: cheap when up to date, and never runs a stale binary.
            let status = build.status().expect("run cargo build for trace2e-proc");
            assert!(status.success(), "building trace2e-proc failed");
            assert!(bin.exists(), "{} missing after build", bin.display());
            bin
        })
        .clone()
}

/// An example binary of this package (`daemon/examples/NAME.rs`), built on demand once
/// per test process.
pub fn example_bin(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, bin)) = built.iter().find(|(n, _)| n == name) {
        return bin.clone();
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let bin = profile_dir.join("examples").join(name);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "trace2e-daemon", "--example", name]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status().unwrap_or_else(|e| panic!("run cargo build for {name}: {e}"));
    assert!(status.success(), "building {name} failed");
    assert!(bin.exists(), "{} missing after build", bin.display());
    built.push((name.to_owned(), bin.clone()));
    bin
}

/// The `trace2e-test-child` example: the tests' client processes that misbehave on
/// purpose (hold a grant, go quiet).
pub fn child_bin() -> PathBuf {
    example_bin("trace2e-test-child")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts a `trace2e-proc` run was denied (exit 13) and returns its stderr.
pub fn assert_denied(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(13), "expected a denial (exit 13); stderr: {}", stderr(out));
    stderr(out)
}

/// Asserts a run succeeded.
pub fn assert_ok(out: &Output) {
    assert!(out.status.success(), "expected success; status {:?}, stderr: {}", out.status, stderr(out));
}
pub mod cluster;

/// Makes `cmd`'s process (and every thread it starts) run on CPU `cpu` only, like
/// `taskset -c cpu`.
pub fn pin_before_exec(cmd: &mut Command, cpu: usize) {
    use std::os::unix::process::CommandExt;
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    assert!(cpu < libc::CPU_SETSIZE as usize);
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above) and `set` is a valid cpu_set_t.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    let pin = move || {
        // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the forked
        // child's only thread. sched_setaffinity is a plain system call, safe between
        // fork and exec.
        if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: the closure only makes a system call on data it owns.
    unsafe { cmd.pre_exec(pin) };
}

/// Spawns `cmd` with its stdout piped and returns once it prints a line containing
/// `needle`; fails the test if that takes longer than [`PATIENCE`].
pub fn spawn_until_line_containing(mut cmd: Command, needle: &str) -> (Child, String) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted = needle.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains(&wanted) {
                let _ = tx.send(line);
                break;
            }
        }
    });
    let line = rx.recv_timeout(PATIENCE).unwrap_or_else(|_| panic!("the child never printed {needle:?}"));
    (child, line)
}
