//! `fastpath-test-peer ROLE SOCKET`: the other process of the multi-process tests
//! (`tests/process_death.rs`, `tests/fork.rs`), started through
//! `CARGO_BIN_EXE_fastpath-test-peer`. Not a test itself: a separate binary, so the
//! test harness never lists a child mode as a passing test.
//!
//! Roles:
//! - `client`: connects, echoes once, prints `ready`, then blocks in a call the daemon
//!   never answers (until it is killed);
//! - `daemon`: binds SOCKET, prints `ready`, serves one client (echo; every request is
//!   announced on stdout as `request KIND` before it is handled) until the client is gone;
//! - `forker`: connects, echoes, forks; the child checks that it must reconnect, does,
//!   and echoes under its own pid. Exit status 0 when every check passed.
//!
//! Any failed check panics (exit status 101) or exits with a non-zero status.

#[path = "../common/kinds.rs"]
#[allow(dead_code)] // the peer speaks only some of the kinds the tests know
mod kinds;

use std::io::Write;
use std::path::{Path, PathBuf};

use kinds::{BLACKHOLE, ECHO};
use trace2e_fastpath::{CallError, Client, Listener, ServeError, ServerConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [role, path] = args.as_slice() else {
        eprintln!("usage: fastpath-test-peer client|daemon|forker SOCKET");
        std::process::exit(2);
    };
    let path = PathBuf::from(path);
    match role.as_str() {
        "client" => client(&path),
        "daemon" => daemon(&path),
        "forker" => forker(&path),
        other => {
            eprintln!("unknown role {other}");
            std::process::exit(2);
        }
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

fn client(path: &Path) {
    let client = Client::connect(path).unwrap();
    assert_eq!(client.call(ECHO, b"hi").unwrap().payload, b"hi");
    say("ready");
    // Blocks with a request in flight until we are killed (or, if the test process died
    // first, until the daemon is gone).
    let _ = client.call(BLACKHOLE, b"in flight");
    std::process::exit(1);
}

fn daemon(path: &Path) {
    let listener = Listener::bind(path, ServerConfig::default()).unwrap();
    say("ready");
    let mut channel = listener.accept().unwrap().attach().unwrap();
    let mut handler = |req: &trace2e_fastpath::Request<'_>, reply: &mut Vec<u8>| {
        say(&format!("request {}", req.kind));
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

fn forker(path: &Path) {
    let client = Client::connect(path).unwrap();
    assert_eq!(client.call(ECHO, b"parent").unwrap().payload, b"parent");
    assert!(client.is_valid_in_this_process());
    // SAFETY: this process has a single thread (this binary starts none, and the client
    // starts none), so the child starts with consistent allocator and lock state.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = forked_child(client, path);
        // SAFETY: leave without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for the child we just forked; `status` is a valid out pointer.
    let waited = unsafe { libc::waitpid(pid, &raw mut status, 0) };
    assert_eq!(waited, pid);
    assert!(libc::WIFEXITED(status), "forked child died: status {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "forked child check failed");
    // The parent's channel is unaffected by the child.
    assert_eq!(client.call(ECHO, b"still here").unwrap().payload, b"still here");
}

/// The checks of the forked child, as an exit status: 0 when all passed.
fn forked_child(old: Client, path: &Path) -> i32 {
    if old.is_valid_in_this_process() {
        return 10;
    }
    if old.call(ECHO, b"x") != Err(CallError::Forked) {
        return 11;
    }
    if old.post(ECHO, b"x") != Err(CallError::Forked) {
        return 12;
    }
    drop(old); // must not unmap anything in the child
    let Ok(new) = Client::connect(path) else { return 13 };
    match new.call(ECHO, b"child") {
        Ok(r) if r.payload == b"child" => 0,
        _ => 14,
    }
}
