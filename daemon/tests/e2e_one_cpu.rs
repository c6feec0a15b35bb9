//! End to end: a daemon and its client confined to one CPU. The channel thread then polls
//! with a `sched_yield` between scans and the client yields for its answers instead of
//! spinning or sleeping; every mediated I/O must still be decided, answered, reported and
//! recorded, on every client thread's lane.

mod support;

use std::time::Duration;

use support::*;

/// Reads per client thread.
const READS: usize = 2_000;
/// Client threads: each one its own lane, the second one's first call made while the
/// channel thread polls for the first.
const THREADS: usize = 2;

#[test]
fn every_read_is_mediated_and_recorded_with_daemon_and_client_on_one_cpu() {
    let d = Daemon::start_with("node-a", &["127.0.0.2"], &[], |cmd| pin_before_exec(cmd, 0));
    for t in 0..THREADS {
        std::fs::write(d.path(&format!("in{t}.txt")), [b'x'; 64]).unwrap();
    }
    // THREADS threads each read their own file READS times through trace2e-io, then the
    // child prints a line and waits to be killed.
    let mut child_cmd = d.proc_cmd_with(
        &child_bin(),
        &["read-many", d.dir.path().to_str().unwrap(), &THREADS.to_string(), &READS.to_string()],
    );
    pin_before_exec(&mut child_cmd, 0);
    let (mut child, line) = spawn_until_line_containing(child_cmd, "done ");
    assert!(line.ends_with(&format!("done {}", READS * THREADS)), "{line}");

    // Every read was granted over shared memory and its posted report applied (the
    // child is still alive, so no grant can have been settled by its exit).
    let deadline = std::time::Instant::now() + PATIENCE;
    let (requests, reports) = loop {
        let audit = d.cli_json(&["audit", "--limit", "0", "--format", "json"]);
        let records = audit["records"].as_array().cloned().unwrap_or_default();
        let count =
            |kind: &str, result: &str| records.iter().filter(|r| r["kind"] == kind && r["result"] == result).count();
        let (granted, reports) = (count("request", "granted"), count("report", "ok"));
        if reports >= READS * THREADS || std::time::Instant::now() >= deadline {
            break (granted, reports);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(requests, READS * THREADS, "granted requests recorded");
    assert_eq!(reports, READS * THREADS, "reports recorded");
    let log = d.log();
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "daemon complained:\n{log}");
}
