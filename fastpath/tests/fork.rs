//! A forked child must not speak on its parent's channel: it sees
//! `CallError::Forked`, connects again, and the daemon knows it by its own pid.
//!
//! The forking process is the peer binary in role `forker` (`tests/bin/peer.rs`), which
//! runs the child's checks and reports them in its exit status.

mod common;

use std::time::Duration;

use common::{Event, TestServer, spawn_role, with_timeout};
use trace2e_fastpath::ServerConfig;

#[test]
fn forked_child_reconnects_under_its_own_pid() {
    let server = TestServer::start(ServerConfig::default());
    let mut child = common::Reaped(spawn_role("forker", &server.path));
    let pid_of = |e: Event| match e {
        Event::Attached { pid, .. } => pid,
        other => panic!("{other:?}"),
    };
    let first = pid_of(server.next_event(Duration::from_secs(60)));
    assert_eq!(first, child.id());
    let second = pid_of(server.next_event(Duration::from_secs(60)));
    assert_ne!(second, first, "the forked child must be its own peer");
    let status = with_timeout(Duration::from_secs(60), move || child.wait().unwrap());
    let _ = &server;
    assert!(status.success(), "child process failed: {status}");
}
