//! The daemon's memory stays bounded: a million writes to an external peer (each with a
//! record whose rare fields name the peer) cost no more memory than a hundred thousand.
//!
//! Why 100k and not 10k: between 10k and 100k writes the audit trail's memory window
//! (`--audit-memory-mib`) fills, by design, as the journal's mapped segment does; what
//! must not happen is growth after that (before, every such record left ~220 B behind
//! for good). Numbers and the reasoning: docs/decisions.md.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;

use support::*;

/// Resident memory of process `pid`, in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_million_external_writes_keep_memory_within_ten_percent_of_a_hundred_thousand() {
    let spill = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        "node-a",
        &["127.0.0.2"],
        &["--audit-memory-mib", "8", "--audit-spill-dir", spill.path().to_str().unwrap()],
    );
    // The node owns 127.0.0.2 only: 127.0.0.9 is an external peer, which drains what
    // it gets.
    let external = std::net::TcpListener::bind("127.0.0.9:0").unwrap();
    let addr = external.local_addr().unwrap().to_string();
    let (tx, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = accept_timeout(&external);
        let mut total = 0u64;
        let mut buf = [0u8; 65536];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        let _ = tx.send(total);
    });

    let mut cmd = d.proc_cmd_with(&child_bin(), &["send-many", &addr, "10000", "100000", "1000000"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut at = |count: u64| {
        assert_eq!(lines.next().unwrap().unwrap(), format!("sent {count}"));
        rss_kib(d.pid())
    };
    let after_10k = at(10_000);
    writeln!(stdin, "go").unwrap();
    let after_100k = at(100_000);
    writeln!(stdin, "go").unwrap();
    let after_1m = at(1_000_000);
    writeln!(stdin, "go").unwrap();
    assert!(wait_timeout(&mut child).unwrap().success());
    assert_eq!(received.recv_timeout(PATIENCE).unwrap(), 1_000_000);
    let status = d.cli_json(&["status", "--format", "json"]);
    eprintln!("daemon RSS after 10k external writes: {after_10k} KiB, 100k: {after_100k} KiB, 1M: {after_1m} KiB");
    // Every write is on record: a request and a report each.
    assert_eq!(status["granted"], 1_000_000);
    assert!(status["audit_records"].as_u64().unwrap() >= 2_000_000, "{status}");
    assert!(
        after_1m * 10 <= after_100k * 11,
        "RSS after 1M external writes ({after_1m} KiB) exceeds RSS after 100k ({after_100k} KiB) by more than 10 %"
    );
}
