//! A forked child must not speak on its parent's channel: it sees
//! `CallError::Forked`, connects again, and the daemon knows it by its own pid.

mod common;

use std::time::Duration;

use common::{ECHO, Event, TestServer, role, spawn_role, with_timeout};
use trace2e_fastpath::{CallError, Client, ServerConfig};

/// Child process: connect, call, fork; the grandchild checks it must reconnect.
#[test]
fn child_role() {
    let Some((role, path)) = role() else { return };
    assert_eq!(role, "forker");
    let client = Client::connect(&path).unwrap();
    assert_eq!(client.call(ECHO, b"parent").unwrap().payload, b"parent");
    assert!(client.is_valid_in_this_process());
    // SAFETY: this process runs a single test on its main thread (--test-threads=1),
    // so the child starts with consistent allocator and lock state.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = grandchild(client, &path);
        // SAFETY: leave without running the parent's destructors or test harness.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for the child we just forked; `status` is a valid out pointer.
    let waited = unsafe { libc::waitpid(pid, &raw mut status, 0) };
    assert_eq!(waited, pid);
    assert!(libc::WIFEXITED(status), "grandchild died: status {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "grandchild check failed");
    // The parent's channel is unaffected by the child.
    assert_eq!(client.call(ECHO, b"still here").unwrap().payload, b"still here");
}

fn grandchild(old: Client, path: &std::path::Path) -> i32 {
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

#[test]
fn forked_child_reconnects_under_its_own_pid() {
    let server = TestServer::start(ServerConfig::default());
    let mut child = common::Reaped(spawn_role("child_role", "forker", &server.path));
    let pid_of = |e: Event| match e {
        Event::Attached { pid, .. } => pid,
        other => panic!("{other:?}"),
    };
    let first = pid_of(server.next_event(Duration::from_secs(60)));
    assert_eq!(first, child.id());
    let second = pid_of(server.next_event(Duration::from_secs(60)));
    assert_ne!(second, first, "the grandchild must be its own peer");
    let status = with_timeout(Duration::from_secs(60), move || child.wait().unwrap());
    let _ = &server;
    assert!(status.success(), "child process failed: {status}");
}
