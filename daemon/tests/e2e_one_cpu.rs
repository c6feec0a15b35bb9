//! End to end: a daemon and its client confined to one CPU. The channel thread then polls
//! with a `sched_yield` between scans and the client yields for its answers instead of
//! spinning or sleeping; every mediated I/O must still be decided, answered, reported and
//! recorded, on every client thread's lane.

mod support;

use std::io::Write;
use std::time::Duration;

use support::*;

/// Reads per client thread.
const READS: usize = 2_000;
/// Client threads: each one its own lane, the second one's first call made while the
/// channel thread polls for the first.
const THREADS: usize = 2;

/// Child mode: `THREADS` threads each read their own file `READS` times through
/// `trace2e_io`, then we print a line and wait to be killed.
#[test]
fn child_read_many() {
    let Ok(dir) = std::env::var("T2E_CHILD_ONE_CPU_DIR") else {
        return; // not running as the child
    };
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let path = std::path::Path::new(&dir).join(format!("in{t}.txt"));
            std::thread::spawn(move || {
                use std::io::{Read, Seek};
                let mut file = trace2e_io::fs::File::open(&path).unwrap();
                let mut buf = [0u8; 64];
                for _ in 0..READS {
                    file.rewind().unwrap();
                    assert_eq!(file.read(&mut buf).unwrap(), 64);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    println!("done {}", READS * THREADS);
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn every_read_is_mediated_and_recorded_with_daemon_and_client_on_one_cpu() {
    let d = Daemon::start_with("node-a", &["127.0.0.2"], &[], |cmd| pin_before_exec(cmd, 0));
    for t in 0..THREADS {
        std::fs::write(d.path(&format!("in{t}.txt")), [b'x'; 64]).unwrap();
    }
    let mut child_cmd = std::process::Command::new(std::env::current_exe().unwrap());
    child_cmd
        .args(["--exact", "child_read_many", "--nocapture", "--test-threads", "1"])
        .env("T2E_CHILD_ONE_CPU_DIR", d.dir.path())
        .env("TRACE2E_SOCKET", &d.p2m)
        .env_remove("TRACE2E_TRANSPORT");
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
