//! A process that dies is noticed by the other side: a killed client by the
//! daemon (control socket hang-up / pidfd), a killed daemon by a client blocked in a
//! call (liveness check after its futex timeout).
//!
//! The other process is the peer binary (`tests/bin/peer.rs`).

mod common;

use std::io::{BufRead, BufReader};
use std::process::ChildStdout;
use std::time::{Duration, Instant};

use common::{BLACKHOLE, ECHO, Event, TestServer, spawn_role, wait_until, with_timeout};
use trace2e_fastpath::{CallError, Client};

/// Reads the child's stdout until a line equal to `wanted`; fails the test if the child
/// exits first or after 60 s. Returns the reader for later lines.
fn wait_line(stdout: BufReader<ChildStdout>, wanted: String) -> BufReader<ChildStdout> {
    with_timeout(Duration::from_secs(60), move || {
        let mut reader = stdout;
        let mut line = String::new();
        while line.trim_end() != wanted {
            line.clear();
            assert_ne!(reader.read_line(&mut line).unwrap(), 0, "child exited before printing {wanted:?}");
        }
        reader
    })
}

#[test]
fn killed_client_is_noticed() {
    let server = TestServer::start(trace2e_fastpath::ServerConfig::default());
    let mut child = common::Reaped(spawn_role("client", &server.path));
    let id = match server.next_event(Duration::from_secs(60)) {
        Event::Attached { id, pid } => {
            assert_eq!(pid, child.id(), "identity comes from SO_PEERCRED");
            id
        }
        other => panic!("{other:?}"),
    };
    let _stdout = wait_line(BufReader::new(child.stdout.take().unwrap()), "ready".to_owned());
    // The client's echo and its unanswered call have both reached the daemon.
    wait_until(Duration::from_secs(30), "the in-flight call reaches the daemon", || server.handled() == 2);
    let killed = Instant::now();
    child.kill().unwrap();
    match server.next_event(Duration::from_secs(10)) {
        Event::Gone { id: gone, at } => {
            assert_eq!(gone, id);
            eprintln!("daemon noticed the death after {:?}", at.duration_since(killed));
        }
        other => panic!("{other:?}"),
    }
    child.wait().unwrap();
}

#[test]
fn killed_daemon_fails_blocked_calls() {
    let path = common::socket_path("daemon-child");
    let mut daemon = common::Reaped(spawn_role("daemon", &path));
    let stdout = wait_line(BufReader::new(daemon.stdout.take().unwrap()), "ready".to_owned());
    let client = Client::connect(&path).unwrap();
    assert_eq!(client.call(ECHO, b"x").unwrap().payload, b"x");
    let caller = {
        let client = client.clone();
        std::thread::spawn(move || client.call(BLACKHOLE, b"wait"))
    };
    // The daemon announces each request it reads: the call is in flight once it has.
    let _stdout = wait_line(stdout, format!("request {BLACKHOLE}"));
    let killed = Instant::now();
    daemon.kill().unwrap();
    let r = with_timeout(Duration::from_secs(30), move || caller.join().unwrap());
    eprintln!("client noticed the daemon's death after {:?}", killed.elapsed());
    assert_eq!(r, Err(CallError::Disconnected));
    assert_eq!(client.call(ECHO, b"x"), Err(CallError::Disconnected));
    daemon.wait().unwrap();
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
