//! A process that dies is noticed by the other side: a killed client by the
//! daemon (control socket hang-up / pidfd), a killed daemon by a client blocked in a
//! call (liveness check after its futex timeout).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use common::{BLACKHOLE, ECHO, Event, TestServer, role, spawn_role, with_timeout};
use trace2e_fastpath::{CallError, Client, Listener, ServeError, ServerConfig};

/// Entry point of the child processes (a no-op in a normal test run).
#[test]
fn child_role() {
    let Some((role, path)) = role() else { return };
    match role.as_str() {
        "client" => {
            let client = Client::connect(&path).unwrap();
            assert_eq!(client.call(ECHO, b"hi").unwrap().payload, b"hi");
            println!("ready");
            std::io::stdout().flush().unwrap();
            // Blocks with a request in flight until we are killed (or, if the test
            // process died first, until the daemon is gone).
            let _ = client.call(BLACKHOLE, b"in flight");
            std::process::exit(1);
        }
        "daemon" => {
            let listener = Listener::bind(&path, ServerConfig::default()).unwrap();
            println!("ready");
            std::io::stdout().flush().unwrap();
            let mut channel = listener.accept().unwrap().attach().unwrap();
            let mut handler = |req: &trace2e_fastpath::Request<'_>, reply: &mut Vec<u8>| {
                (req.kind == ECHO).then(|| {
                    reply.extend_from_slice(req.payload);
                    ECHO + 1
                })
            };
            loop {
                match channel.serve(None, &mut handler) {
                    Ok(_) => {}
                    Err(ServeError::PeerGone) => return,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn wait_ready(child: &mut std::process::Child) {
    let stdout = child.stdout.take().unwrap();
    with_timeout(Duration::from_secs(60), move || {
        // The child's test harness prints its own lines first.
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        while !line.trim_end().ends_with("ready") {
            line.clear();
            assert_ne!(reader.read_line(&mut line).unwrap(), 0, "child exited before it was ready");
        }
    });
}

#[test]
fn killed_client_is_noticed() {
    let server = TestServer::start(ServerConfig::default());
    let mut child = common::Reaped(spawn_role("child_role", "client", &server.path));
    let id = match server.next_event(Duration::from_secs(60)) {
        Event::Attached { id, pid } => {
            assert_eq!(pid, child.id(), "identity comes from SO_PEERCRED");
            id
        }
        other => panic!("{other:?}"),
    };
    wait_ready(&mut child);
    std::thread::sleep(Duration::from_millis(50)); // let the in-flight call start
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
    let mut daemon = common::Reaped(spawn_role("child_role", "daemon", &path));
    wait_ready(&mut daemon);
    let client = Client::connect(&path).unwrap();
    assert_eq!(client.call(ECHO, b"x").unwrap().payload, b"x");
    let caller = {
        let client = client.clone();
        std::thread::spawn(move || client.call(BLACKHOLE, b"wait"))
    };
    std::thread::sleep(Duration::from_millis(50));
    let killed = Instant::now();
    daemon.kill().unwrap();
    let r = with_timeout(Duration::from_secs(30), move || caller.join().unwrap());
    eprintln!("client noticed the daemon's death after {:?}", killed.elapsed());
    assert_eq!(r, Err(CallError::Disconnected));
    assert_eq!(client.call(ECHO, b"x"), Err(CallError::Disconnected));
    daemon.wait().unwrap();
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
