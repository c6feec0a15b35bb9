//! The `trace2e` CLI against an O2M server run in-process on a temporary Unix socket.
//!
//! Each test starts its own engine and server, runs the built `trace2e` binary and checks
//! its exit status and output. Every CLI run has a timeout that fails the test.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use tempfile::TempDir;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use trace2e_daemon::engine::{Engine, EngineConfig};
use trace2e_daemon::operator;
use trace2e_daemon::topology::Topology;
use trace2e_proto::NodeId;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// An O2M server on a temporary socket; stops when dropped.
struct Server {
    dir: TempDir,
    socket: PathBuf,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("o2m.sock");
        let topology = Topology::new(NodeId::new("node-a").unwrap(), vec![IpAddr::from([127, 0, 0, 1])]);
        let engine = Arc::new(Engine::new(EngineConfig::new(topology)));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = {
            let _guard = runtime.enter();
            UnixListener::bind(&socket).unwrap()
        };
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(operator::server(engine))
                .serve_with_incoming(UnixListenerStream::new(listener)),
        );
        Self { dir, socket, _runtime: runtime }
    }

    /// Runs `trace2e --socket SOCKET ARGS…` in the server's directory.
    fn run(&self, args: &[&str]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_trace2e"));
        command.arg("--socket").arg(&self.socket).args(args).current_dir(self.dir.path());
        run(command)
    }

    fn path(&self, name: &str) -> PathBuf {
        std::fs::canonicalize(self.dir.path()).unwrap().join(name)
    }
}

/// The result of one CLI run.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "{self:#?}");
        self
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:#?}"))
    }
}

fn run(command: Command) -> Run {
    run_with(command, None)
}

/// Runs `command` with `TRACE2E_O2M_SOCKET` set to `socket_env` (or unset), under a timeout.
fn run_with(mut command: Command, socket_env: Option<&Path>) -> Run {
    match socket_env {
        Some(socket) => command.env("TRACE2E_O2M_SOCKET", socket),
        None => command.env_remove("TRACE2E_O2M_SOCKET"),
    };
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let output: Output = match rx.recv_timeout(RUN_TIMEOUT) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            panic!("{command:?} did not finish within {RUN_TIMEOUT:?}");
        }
    };
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn status_names_the_node() {
    let server = Server::start();
    let out = server.run(&["status"]).ok();
    assert!(out.stdout.starts_with("node           node-a\n"), "{out:#?}");
    let v = server.run(&["status", "--format", "json"]).ok().json();
    assert_eq!(v["node"], "node-a");
    assert_eq!(v["addresses"][0], "127.0.0.1");
}

#[test]
fn policy_set_then_get() {
    let server = Server::start();
    let out = server.run(&["policy", "set", "file:///data/x", "--confidentiality", "secret", "--integrity", "2"]).ok();
    assert!(out.stdout.ends_with("\nfile:///data/x  secret           2          no       no\n"), "{out:#?}");

    let v =
        server.run(&["policy", "get", "file:///data/x", "file:///data/other@node-a", "--format", "json"]).ok().json();
    assert_eq!(
        v,
        serde_json::json!({"policies": [
            {"resource": "file:///data/x@node-a", "confidentiality": "secret", "integrity": 2, "deleted": false, "consent": false},
            {"resource": "file:///data/other@node-a", "confidentiality": "public", "integrity": 0, "deleted": false, "consent": false},
        ]})
    );

    // Only one field changes.
    server.run(&["policy", "set", "file:///data/x", "--integrity", "5"]).ok();
    let v = server.run(&["policy", "get", "file:///data/x", "--format", "json"]).ok().json();
    assert_eq!(v["policies"][0]["confidentiality"], "secret");
    assert_eq!(v["policies"][0]["integrity"], 5);

    // Executables hold policies too.
    let out = server.run(&["policy", "set", "exe:///usr/bin/server", "--integrity", "3"]).ok();
    assert!(out.stdout.contains("\nexe:///usr/bin/server  public"), "{out:#?}");
}

#[test]
fn plain_paths_are_canonical_files() {
    let server = Server::start();
    std::fs::write(server.path("report.txt"), b"data").unwrap();
    // Relative to the CLI's working directory (the server's temporary directory).
    server.run(&["policy", "set", "./report.txt", "--integrity", "4"]).ok();
    let id = format!("file://{}", server.path("report.txt").display());
    let v = server.run(&["policy", "get", &id, "--format", "json"]).ok().json();
    assert_eq!(v["policies"][0]["resource"], format!("{id}@node-a"));
    assert_eq!(v["policies"][0]["integrity"], 4);
}

#[test]
fn delete_marks_the_resource_deleted() {
    let server = Server::start();
    let out = server.run(&["delete", "file:///data/cv.txt"]).ok();
    assert_eq!(out.stdout, "deleted file:///data/cv.txt\n");
    let v = server.run(&["policy", "get", "file:///data/cv.txt", "--format", "json"]).ok().json();
    assert_eq!(v["policies"][0]["deleted"], true);
}

#[test]
fn provenance_of_an_unknown_file_is_empty() {
    let server = Server::start();
    let out = server.run(&["provenance", "gone.txt"]).ok();
    let id = format!("file://{}@node-a", server.path("gone.txt").display());
    assert_eq!(out.stdout, format!("{id}\nprovenance: none\nlineage: none\n"));
    assert!(out.stderr.contains("note: gone.txt does not exist here"), "{out:#?}");
    let v = server.run(&["provenance", "gone.txt", "--format", "json"]).ok().json();
    assert_eq!(v, serde_json::json!({"resource": id, "provenance": [], "lineage": []}));
}

#[test]
fn audit_lists_operator_changes() {
    let server = Server::start();
    server.run(&["policy", "set", "file:///data/x", "--integrity", "1"]).ok();
    server.run(&["delete", "file:///data/y"]).ok();
    let v = server.run(&["audit", "--format", "json"]).ok().json();
    let records = v["records"].as_array().unwrap();
    assert!(records.iter().any(|r| r["source"] == "file:///data/x@node-a"), "{v:#}");
    assert!(records.iter().all(|r| r["seq"].is_u64() && r["time"].is_string()), "{v:#}");
    let v = server.run(&["audit", "--resource", "file:///data/y", "--format", "json"]).ok().json();
    let records = v["records"].as_array().unwrap();
    assert!(!records.is_empty() && records.iter().all(|r| r["source"] == "file:///data/y@node-a"), "{v:#}");
    let out = server.run(&["audit", "--decision", "denied"]).ok();
    assert_eq!(out.stdout, "no audit records\n");
    let out = server.run(&["audit", "--limit", "1"]).ok();
    assert_eq!(out.stdout.lines().count(), 2, "{out:#?}");
}

#[test]
fn consent_commands() {
    let server = Server::start();
    let out = server.run(&["consent", "enforce", "file:///data/cv.txt"]).ok();
    assert_eq!(out.stdout, "consent enforced on file:///data/cv.txt\n");
    let v = server.run(&["policy", "get", "file:///data/cv.txt", "--format", "json"]).ok().json();
    assert_eq!(v["policies"][0]["consent"], true);
    let out = server.run(&["consent", "list"]).ok();
    assert_eq!(out.stdout, "no pending consent requests\n");
    let out = server.run(&["consent", "decide", "file:///data/cv.txt", "node:node-b", "--grant"]).ok();
    assert_eq!(out.stdout, "granted: file:///data/cv.txt → node:node-b\n");
    server.run(&["consent", "decide", "file:///data/cv.txt", "file:///in@node-b", "--deny"]).ok();
    server.run(&["consent", "enforce", "file:///data/cv.txt", "--off"]).ok();
    let v = server.run(&["policy", "get", "file:///data/cv.txt", "--format", "json"]).ok().json();
    assert_eq!(v["policies"][0]["consent"], false);
}

#[test]
fn another_nodes_resource_is_refused() {
    let server = Server::start();
    let out = server.run(&["policy", "set", "file:///data/x@node-b", "--integrity", "1"]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(
        out.stderr.starts_with("trace2e: resource file:///data/x@node-b belongs to node node-b; ask that node"),
        "{out:#?}"
    );
    assert_eq!(out.stderr.lines().count(), 1, "{out:#?}");
}

#[test]
fn usage_errors_exit_with_2() {
    let server = Server::start();
    for args in [
        &["policy", "set", "file:///x"][..],
        &["policy", "get"],
        &["delete", "ftp:///x"],
        &["audit", "--decision", "maybe"],
        &["consent", "decide", "file:///x", "node:node-b"],
        &["nonsense"],
    ] {
        let out = server.run(args);
        assert_eq!(out.code, Some(2), "{args:?}: {out:#?}");
    }
}

#[test]
fn no_daemon_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("absent.sock");
    let mut command = Command::new(env!("CARGO_BIN_EXE_trace2e"));
    command.arg("--socket").arg(&socket).arg("status");
    let out = run(command);
    assert_eq!(out.code, Some(1), "{out:#?}");
    let want = format!(
        "trace2e: cannot reach the daemon at {}: no such socket (is trace2ed running? set --socket or TRACE2E_O2M_SOCKET)\n",
        socket.display()
    );
    assert_eq!(out.stderr, want);
    assert_eq!(out.stdout, "");
}

#[test]
fn socket_from_the_environment() {
    let server = Server::start();
    let mut command = Command::new(env!("CARGO_BIN_EXE_trace2e"));
    command.args(["status", "--format", "json"]);
    let out = run_with(command, Some(&server.socket)).ok();
    assert_eq!(out.json()["node"], "node-a");
}
