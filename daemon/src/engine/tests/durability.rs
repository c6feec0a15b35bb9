//! The engine on a data directory: what a restart (clean or not) keeps, and the journal
//! replayed through `State::apply` into an identical state.

use super::*;
use crate::audit::AuditLog;
use crate::durable::{self, DataDir, DurableConfig, JournalConfig};
use crate::remote::NoPeers;
use crate::state::State;

fn durable_config(dir: &std::path::Path, fsync: Duration) -> DurableConfig {
    DurableConfig { dir: dir.to_owned(), journal: JournalConfig { segment_bytes: 1 << 16, fsync_interval: fsync } }
}

/// An engine on data directory `dir` (its lock is held by the returned `DataDir`).
fn open(dir: &std::path::Path, fsync: Duration) -> (Arc<Engine>, DataDir) {
    let data = DataDir::open(dir, &n1()).unwrap();
    let recovered = durable::recover(&data, &durable_config(dir, fsync), &Default::default()).unwrap();
    (Arc::new(Engine::recover(config(), Arc::new(NoPeers), recovered, &data)), data)
}

/// A bit of everything: attach, enroll, flows both ways, policies, a deletion, consent
/// enforcement and decisions, a denial, a failed I/O, an unenroll; enough records to
/// span several 64 KiB segments.
async fn workload(e: &Engine) {
    let p = attach(e, 10);
    let q = attach(e, 11);
    e.enroll(p, Fd(3), file("/src")).unwrap();
    e.enroll(p, Fd(4), file("/dst")).unwrap();
    e.enroll(q, Fd(3), file("/dst")).unwrap();
    e.enroll(q, Fd(5), file("/other")).unwrap();
    e.set_policy(&file("/src"), Some(Confidentiality::Secret), Some(IntegrityLevel(2))).unwrap();
    for _ in 0..400 {
        io(e, p, 3, Direction::Read, 64).await;
        io(e, p, 4, Direction::Write, 64).await;
    }
    io(e, q, 3, Direction::Read, 10).await;
    let g = grant_of(&ask(e, q, 5, Direction::Write).await);
    e.report(q, g, IoOutcome { ok: false, bytes: 0 }).unwrap();
    e.set_consent_enforced(&file("/other"), true).unwrap();
    e.decide_consent(&at(&file("/other")), ConsentDestination::Node(NodeId::new("n2").unwrap()), false);
    e.delete(&file("/dst")).unwrap();
    // q read /dst (derived from /src): writing it anywhere is now denied (deletion).
    let _ = denial_of(ask(e, q, 5, Direction::Write).await);
    e.unenroll(p, Fd(3)).unwrap();
}

#[tokio::test]
async fn the_journal_replays_into_an_identical_state() {
    for fsync in [Duration::from_millis(100), Duration::ZERO] {
        let dir = tempfile::tempdir().unwrap();
        let (e, data) = open(dir.path(), fsync);
        workload(&e).await;
        let live = e.state_dump();
        // Replayed by hand, change by change, into a state that never had a journal.
        let changes = durable::journal::read_changes(&data.journal_dir()).unwrap();
        assert!(changes.len() > 1600, "{} changes", changes.len());
        let mut replayed = State::with_audit(AuditLog::default());
        for c in changes {
            replayed.apply(c).unwrap();
        }
        assert_eq!(replayed.dump(), live, "fsync {fsync:?}");
        assert!(live.contains("audit 1609:"), "the workload's audit trail is in the dump");
    }
}

#[tokio::test]
async fn a_restart_keeps_policies_deletions_consent_provenance_and_the_audit_trail() {
    let dir = tempfile::tempdir().unwrap();
    let (e, data) = open(dir.path(), Duration::from_millis(100));
    workload(&e).await;
    let records = e.audit(&AuditQuery { limit: 0, ..Default::default() }).unwrap();
    let before = e.state_dump();
    drop((e, data));

    let (e, _data) = open(dir.path(), Duration::from_millis(100));
    // The recovered state is the one before, plus what the restart itself recorded: the
    // two processes attached before it are gone (their fds unenrolled).
    let after = e.state_dump();
    let kept: Vec<&str> = before.lines().filter(|l| l.starts_with("label ") || l.starts_with("edge ")).collect();
    for line in &kept {
        assert!(after.contains(line), "lost after restart: {line}");
    }
    assert_eq!(e.policy(&file("/src")).confidentiality, Confidentiality::Secret);
    assert_eq!(e.policy(&file("/src")).integrity, IntegrityLevel(2));
    assert!(e.policy(&file("/dst")).deleted);
    assert!(e.policy(&file("/other")).consent);
    // Sorted as resources sort: processes before files.
    let p10 = at(&Resource::Process(ProcessId { pid: 10, starttime: 7 }));
    assert_eq!(e.provenance(&file("/dst")), vec![p10, at(&file("/src"))]);
    let again = e.audit(&AuditQuery { limit: 0, ..Default::default() }).unwrap();
    assert_eq!(&again[..records.len()], &records[..], "every record kept, unchanged, same numbers");
    // Sequence numbers continue: the restart's own records come next.
    assert_eq!(again[records.len()].seq, AuditSeq(records.last().unwrap().seq.0 + 1));
    let exits: Vec<_> = again[records.len()..].iter().filter(|r| r.kind == AuditKind::Exit).collect();
    assert_eq!(exits.len(), 2);
    assert_eq!(e.status().processes, 0);

    // A process that read the secret before the restart keeps its provenance when the
    // same process instance attaches again.
    let p = attach(&e, 10);
    assert_eq!(e.provenance(&Resource::Process(p)), vec![at(&file("/src"))]);
}

#[tokio::test]
async fn a_grant_never_reported_before_a_crash_counts_as_performed() {
    let dir = tempfile::tempdir().unwrap();
    let (e, data) = open(dir.path(), Duration::from_millis(100));
    let p = attach(&e, 10);
    e.enroll(p, Fd(3), file("/secret")).unwrap();
    e.set_policy(&file("/secret"), Some(Confidentiality::Secret), None).unwrap();
    let granted = grant_of(&ask(&e, p, 3, Direction::Read).await);
    // A crash: nothing runs after this point (no report, no clean shutdown).
    std::mem::forget(e);
    drop(data);

    let (e, _data) = open(dir.path(), Duration::from_millis(100));
    assert_eq!(e.provenance(&Resource::Process(p)), vec![at(&file("/secret"))]);
    let expired = e.audit(&AuditQuery { limit: 0, ..Default::default() }).unwrap();
    let last = expired.iter().rev().find(|r| r.kind == AuditKind::Expired).expect("an Expired record");
    assert_eq!(last.grant, Some(granted));
    // Grant ids continue after the last one on record.
    let p = attach(&e, 10);
    e.enroll(p, Fd(4), file("/x")).unwrap();
    let next = grant_of(&ask(&e, p, 4, Direction::Read).await);
    assert!(next.0 > granted.0, "{next:?} after {granted:?}");
}

#[test]
fn one_daemon_per_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let first = DataDir::open(dir.path(), &n1()).unwrap();
    let err = DataDir::open(dir.path(), &n1()).unwrap_err();
    assert!(matches!(err, durable::DataDirError::Locked { pid: Some(pid), .. } if pid == std::process::id()), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&dir.path().display().to_string()) && text.contains(&format!("pid {}", std::process::id())),
        "{text}"
    );
    drop(first);
    let again = DataDir::open(dir.path(), &n1()).unwrap();
    assert_eq!(again.epoch(), 2);
    let other = DataDir::open(dir.path(), &NodeId::new("n9").unwrap());
    assert!(matches!(other, Err(durable::DataDirError::Locked { .. })));
    drop(again);
    let other = DataDir::open(dir.path(), &NodeId::new("n9").unwrap()).unwrap_err();
    assert_eq!(other.to_string(), format!("data directory {} belongs to node n1, not n9", dir.path().display()));
}

#[test]
fn an_unusable_data_directory_is_refused_with_its_path_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let err = DataDir::open(&file, &n1()).unwrap_err().to_string();
    assert_eq!(err, format!("cannot use data directory {}: not a directory: it is a file", file.display()));
    let under = file.join("sub");
    let err = DataDir::open(&under, &n1()).unwrap_err().to_string();
    assert_eq!(
        err,
        format!("cannot use data directory {}: cannot read it: Not a directory (os error 20)", under.display())
    );
}
