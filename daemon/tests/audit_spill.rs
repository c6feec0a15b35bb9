//! The audit trail's memory is bounded: a daemon with a small window writes older
//! records to an unlinked spill file, and the operator still reads every record back,
//! the oldest from disk, through the real CLI.

mod support;

use std::io::{Read, Seek, SeekFrom, Write};

/// Mediated reads the test makes: ~2 records each, several 4 MiB chunks (65 472 records)
/// beyond an 8 MiB window.
const READS: usize = 200_000;

#[test]
fn old_audit_records_go_to_disk_and_come_back() {
    let spill = tempfile::tempdir().unwrap();
    let spill_dir = spill.path().to_str().unwrap();
    let daemon =
        support::Daemon::start("node-a", &["127.0.0.1"], &["--audit-memory-mib", "8", "--audit-spill-dir", spill_dir]);
    // SAFETY: set before any thread of this test binary reads the environment (this
    // binary has a single test, and the io client reads it lazily on first use).
    unsafe { std::env::set_var("TRACE2E_SOCKET", &daemon.p2m) };

    let data = tempfile::tempdir().unwrap();
    let dir = data.path().canonicalize().unwrap();
    let (early, bulk, late) = (dir.join("early.txt"), dir.join("bulk.txt"), dir.join("late.txt"));
    trace2e_io::fs::write(&early, b"early bytes").unwrap();
    std::fs::write(&bulk, b"x").unwrap();
    let mut f = trace2e_io::fs::File::open(&early).unwrap();
    let mut text = String::new();
    f.read_to_string(&mut text).unwrap();
    assert_eq!(text, "early bytes");
    drop(f);
    let mut f = trace2e_io::fs::File::open(&bulk).unwrap();
    let mut byte = [0u8; 1];
    for _ in 0..READS {
        f.seek(SeekFrom::Start(0)).unwrap();
        assert_eq!(f.read(&mut byte).unwrap(), 1);
    }
    drop(f);
    let mut f = trace2e_io::fs::File::create(&late).unwrap();
    f.write_all(b"late").unwrap();
    drop(f);

    let status = daemon.cli_json(&["status", "--format", "json"]);
    let total = status["audit_records"].as_u64().unwrap();
    assert!(total >= 2 * READS as u64, "{status}");
    let on_disk = status["audit_records_on_disk"].as_u64().unwrap();
    // An 8 MiB window is one full chunk and the one filling: the rest left memory
    // once written (the writer may lag by a chunk or two on a loaded machine).
    assert!(on_disk >= 65_472 && on_disk < total, "{status}");

    // The daemon holds two unlinked spill files in the directory: the records (several
    // chunks long) and their rare fields (a short blob per chunk written).
    let mut spill_files: Vec<u64> = std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
        .unwrap()
        .filter_map(|fd| {
            let fd = fd.ok()?.path();
            let target = std::fs::read_link(&fd).ok()?;
            let target = target.to_str()?;
            (target.starts_with(spill_dir) && target.ends_with("(deleted)"))
                .then(|| std::fs::metadata(&fd).map(|m| m.len()).unwrap_or(0))
        })
        .collect();
    spill_files.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(spill_files.len(), 2, "two spill files: {spill_files:?}");
    assert!(spill_files[1] > 0 && spill_files[1] < 4096, "the rare fields' file: {spill_files:?}");
    assert!(spill_files[0] >= 2 * (4 << 20) - 8192, "at least two chunks written: {} bytes", spill_files[0]);
    assert!(std::fs::read_dir(spill.path()).unwrap().next().is_none(), "nothing is left in the directory");

    // The first file's records, long out of memory, come back whole.
    let early_id = format!("file://{}", early.display());
    let audit = daemon.cli_json(&["audit", "--resource", &early_id, "--limit", "0", "--format", "json"]);
    let records = audit["records"].as_array().unwrap();
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.iter().all(|s| *s < 100), "the early file's records are the trail's first: {seqs:?}");
    let kinds: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|r| (r["kind"].as_str().unwrap(), r["direction"].as_str().unwrap_or("-"), r["result"].as_str().unwrap()))
        .collect();
    for expected in [("request", "write", "granted"), ("report", "write", "ok"), ("request", "read", "granted")] {
        assert!(kinds.contains(&expected), "{expected:?} in {kinds:?}");
    }
    let read_report = records.iter().find(|r| r["kind"] == "report" && r["direction"] == "read").unwrap();
    assert_eq!(read_report["bytes"].as_u64(), Some(11), "{read_report}");
    assert!(read_report["source"].as_str().unwrap().contains("early.txt"), "{read_report}");

    // The newest, in memory, too; and a range that starts on disk is contiguous.
    let late_id = format!("file://{}", late.display());
    let late_records = daemon.cli_json(&["audit", "--resource", &late_id, "--limit", "0", "--format", "json"]);
    assert!(late_records["records"].as_array().unwrap().iter().all(|r| r["seq"].as_u64().unwrap() > 2 * READS as u64));
    let first = daemon.cli_json(&["audit", "--after", "0", "--limit", "0", "--decision", "denied", "--format", "json"]);
    assert!(first["records"].as_array().unwrap().is_empty(), "nothing was denied: {first}");
    let window = daemon.cli_json(&["audit", "--after", "100", "--limit", "5", "--format", "json"]);
    let window: Vec<u64> = window["records"].as_array().unwrap().iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(window, (total - 4..=total).collect::<Vec<_>>());
}
