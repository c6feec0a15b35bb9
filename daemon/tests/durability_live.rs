//! Live processes across a daemon restart: a process attached before it re-attaches by
//! itself, re-enrolls what it has open, keeps its provenance, and waits for the daemon
//! while it is away (up to `TRACE2E_TIMEOUT_MS`, then fails closed).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;

use support::*;

/// A `trace2e-test-child script` process: one command a line, one answer a line.
struct Script {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<String>,
}

impl Script {
    fn spawn(d: &Daemon, transport: &str, timeout_ms: u64) -> Self {
        let mut cmd = d.proc_cmd_with(&child_bin(), &["script"]);
        cmd.env("TRACE2E_TRANSPORT", transport).env("TRACE2E_TIMEOUT_MS", timeout_ms.to_string());
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        Self::from(cmd)
    }

    fn from(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, stdin, answers }
    }

    /// Sends a command without waiting for its answer.
    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The answer to the oldest command not answered yet.
    fn answer(&mut self) -> String {
        self.answers.recv_timeout(PATIENCE).expect("the script process did not answer")
    }

    fn run(&mut self, command: &str) -> String {
        self.send(command);
        self.answer()
    }

    /// `process://PID.STARTTIME` of the script process.
    fn resource(&self) -> String {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // Field 22 (starttime), counted after the parenthesised command name.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let starttime = after.split(' ').nth(19).unwrap();
        format!("process://{pid}.{starttime}")
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn provenance(d: &Daemon, resource: &str) -> Vec<String> {
    let v = d.cli_json(&["provenance", resource, "--format", "json"]);
    let mut ids: Vec<String> = v["provenance"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().into()).collect();
    ids.sort();
    ids
}

#[test]
fn a_live_process_reattaches_across_a_crash_and_keeps_its_provenance() {
    carries_on_across_a_crash("shm");
}

/// The same over the gRPC baseline transport.
#[test]
fn a_live_process_reattaches_across_a_crash_over_grpc() {
    carries_on_across_a_crash("grpc");
}

fn carries_on_across_a_crash(transport: &str) {
    // The node owns 127.0.0.2 only: 127.0.0.9 is an external peer.
    let mut d = Daemon::start("node-a", &["127.0.0.2"], &[]);
    let (secret, out) = (d.path("secret.txt"), d.path("out.txt"));
    std::fs::write(&secret, b"top secret").unwrap();
    let secret_id = format!("file://{}@node-a", secret.display());
    assert_ok(&d.cli(&["policy", "set", secret.to_str().unwrap(), "--confidentiality", "secret"]));

    let external = std::net::TcpListener::bind("127.0.0.9:0").unwrap();
    let addr = external.local_addr().unwrap().to_string();
    let (tx, received) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = accept_timeout(&external);
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut buf);
        let _ = tx.send(buf);
    });

    let mut p = Script::spawn(&d, transport, PATIENCE.as_millis() as u64);
    assert_eq!(p.run(&format!("open s {}", secret.display())), "ok 0");
    assert_eq!(p.run("read s"), "ok 10");
    assert_eq!(p.run(&format!("create out {}", out.display())), "ok 0");
    assert_eq!(p.run(&format!("connect net {addr}")), "ok 0");
    let process = p.resource();
    let process_id = format!("{process}@node-a");
    assert_eq!(provenance(&d, &process), vec![secret_id.clone()]);

    d.kill();
    // Sent while no daemon runs: it can only succeed by waiting for the next one.
    p.send("write out");
    d.restart();
    assert_eq!(p.answer(), "ok 10", "the write waited for the daemon and went through after it");

    // The same process (same pid and start time) still carries the secret.
    assert_eq!(provenance(&d, &process), vec![secret_id.clone()]);
    let mut expected = vec![process_id, secret_id.clone()];
    expected.sort();
    assert_eq!(provenance(&d, out.to_str().unwrap()), expected, "the write after the restart was mediated");
    assert_eq!(std::fs::read(&out).unwrap(), b"top secret");

    // The stream opened before the crash was enrolled again: sending is judged, and refused.
    let answer = p.run("write net");
    assert!(answer.starts_with("denied "), "{answer}");
    assert!(answer.contains("confidentiality") && answer.contains(&secret_id), "{answer}");
    drop(p);
    assert_eq!(received.recv_timeout(PATIENCE).unwrap(), b"", "no secret byte reached the external peer");
}

#[test]
fn io_waits_for_the_daemon_up_to_its_timeout_then_fails_closed_and_recovers_later() {
    let mut d = Daemon::start("node-a", &["127.0.0.2"], &[]);
    let file = d.path("in.txt");
    std::fs::write(&file, b"0123456789").unwrap();
    let mut p = Script::spawn(&d, "shm", 300);
    assert_eq!(p.run(&format!("open f {}", file.display())), "ok 0");
    assert_eq!(p.run("read f"), "ok 10");

    d.stop();
    let answer = p.run("read f");
    assert!(answer.starts_with("unavailable trace2e daemon unreachable during "), "{answer}");
    assert!(answer.ends_with("; the daemon did not come back within 300 ms"), "{answer}");

    // A failed wait is not the end: once the daemon is back, the next read re-attaches
    // (the file is where the first read left it: at its end).
    d.restart();
    assert_eq!(p.run("read f"), "ok 0");
    // Both granted reads are on record (the one before the stop survived it); the one in
    // the gap never reached a daemon.
    let v = d.cli_json(&["audit", "--format", "json"]);
    let process = p.resource();
    let reads: Vec<&serde_json::Value> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "request" && r["process"] == process.as_str() && r["direction"] == "read")
        .collect();
    assert_eq!(reads.len(), 2, "{v:#}");
    assert!(reads.iter().all(|r| r["result"] == "granted"), "{v:#}");
    assert_eq!((reads[0]["grant"].as_u64(), reads[1]["grant"].as_u64()), (Some(1), Some(2)), "grant ids continue");
}
