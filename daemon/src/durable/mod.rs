//! Durability: the data directory a daemon keeps its state in, and the recovery of that
//! state at start-up.
//!
//! Owns the data directory (`DIR/LOCK`, one daemon per directory; `DIR/node`, the node it
//! belongs to; `DIR/epoch`, counted up at every start; `DIR/journal/`, the [`journal`]) and
//! [`recover`], which reads the journal back into a [`State`] through
//! [`State::apply`], the same path every change took when it was made. It does not decide
//! anything: what a recovered grant or process means is the engine's business
//! (`Engine::recover`).

pub mod journal;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use trace2e_proto::{GrantId, NodeId, ProcessId};

use crate::audit::{AuditConfig, AuditEntry, AuditKind, AuditLog, AuditOutcome, FlowResult};
use crate::provenance::LabelId;
use crate::state::{Change, State};
pub use journal::{Journal, JournalConfig, JournalError, Syncer};

/// Where and how a daemon keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableConfig {
    /// The data directory.
    pub dir: PathBuf,
    /// The journal's settings.
    pub journal: JournalConfig,
}

impl DurableConfig {
    /// `dir` with the default journal settings (flush every 100 ms).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), journal: JournalConfig::default() }
    }

    /// The fsync interval (zero: every grant is flushed before it is answered).
    pub fn fsync_interval(mut self, interval: Duration) -> Self {
        self.journal.fsync_interval = interval;
        self
    }
}

/// Why a data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The path cannot be made a directory, or used as one.
    #[error("cannot use data directory {}: {problem}", dir.display())]
    Unusable {
        /// The directory.
        dir: PathBuf,
        /// Why (the operating system's reason).
        problem: String,
    },
    /// Another daemon holds it.
    #[error("data directory {} is in use by another trace2ed ({})", dir.display(), holder(*pid))]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The pid written by the daemon holding it, if readable.
        pid: Option<u32>,
    },
    /// It belongs to another node.
    #[error("data directory {} belongs to node {found}, not {expected}", dir.display())]
    OtherNode {
        /// The directory.
        dir: PathBuf,
        /// The node it belongs to.
        found: String,
        /// This daemon's node.
        expected: NodeId,
    },
    /// The journal cannot be read back, or is not intact.
    #[error("{0}")]
    Journal(#[from] JournalError),
}

fn holder(pid: Option<u32>) -> String {
    pid.map_or_else(|| "pid unknown".into(), |p| format!("pid {p}"))
}

fn unusable(dir: &Path, what: &str, e: impl std::fmt::Display) -> DataDirError {
    DataDirError::Unusable { dir: dir.to_owned(), problem: format!("{what}: {e}") }
}

/// A data directory this daemon holds (the lock lasts as long as this value, or the
/// process).
#[derive(Debug)]
pub struct DataDir {
    dir: PathBuf,
    _lock: File,
    epoch: u64,
}

impl DataDir {
    /// Makes (mode 0700) or opens `dir`, takes its lock, checks it belongs to `node`, and
    /// counts the start in its epoch.
    pub fn open(dir: &Path, node: &NodeId) -> Result<Self, DataDirError> {
        match std::fs::metadata(dir) {
            Ok(m) if !m.is_dir() => return Err(unusable(dir, "not a directory", "it is a file")),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(|e| unusable(dir, "cannot create it", e))?;
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
            }
            Err(e) => return Err(unusable(dir, "cannot read it", e)),
        }
        let lock_path = dir.join("LOCK");
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| unusable(dir, "cannot write in it", e))?;
        if let Err(e) = rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            if e == rustix::io::Errno::WOULDBLOCK {
                let mut text = String::new();
                let _ = lock.read_to_string(&mut text);
                return Err(DataDirError::Locked { dir: dir.to_owned(), pid: text.trim().parse().ok() });
            }
            return Err(unusable(dir, "cannot lock it", io::Error::from(e)));
        }
        let write_pid = || -> io::Result<()> {
            lock.set_len(0)?;
            use std::os::unix::fs::FileExt;
            lock.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)?;
            lock.sync_data()
        };
        write_pid().map_err(|e| unusable(dir, "cannot write in it", e))?;
        let node_path = dir.join("node");
        match std::fs::read_to_string(&node_path) {
            Ok(found) if found.trim() == node.as_str() => {}
            Ok(found) => {
                return Err(DataDirError::OtherNode {
                    dir: dir.to_owned(),
                    found: found.trim().to_owned(),
                    expected: node.clone(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                write_durably(&node_path, format!("{node}\n").as_bytes())
                    .map_err(|e| unusable(dir, "cannot write in it", e))?;
            }
            Err(e) => return Err(unusable(dir, "cannot read its node file", e)),
        }
        let epoch_path = dir.join("epoch");
        let epoch = match std::fs::read_to_string(&epoch_path) {
            Ok(text) => {
                text.trim().parse::<u64>().map_err(|e| {
                    DataDirError::Journal(JournalError::Corrupt {
                        path: epoch_path.clone(),
                        lsn: None,
                        problem: format!("not a number: {e}"),
                    })
                })? + 1
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => 1,
            Err(e) => return Err(unusable(dir, "cannot read its epoch file", e)),
        };
        write_durably(&epoch_path, format!("{epoch}\n").as_bytes())
            .map_err(|e| unusable(dir, "cannot write in it", e))?;
        Ok(Self { dir: dir.to_owned(), _lock: lock, epoch })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// How many times a daemon started on this directory, this one included.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The journal's directory.
    pub fn journal_dir(&self) -> PathBuf {
        journal_dir(&self.dir)
    }
}

/// The journal's directory in data directory `dir`.
pub fn journal_dir(dir: &Path) -> PathBuf {
    dir.join("journal")
}

/// Replaces `path` with `bytes`, durably (a temporary file, fsync, rename, fsync of the
/// directory).
fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// A grant on record whose report is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenGrant {
    /// The grant.
    pub grant: GrantId,
    /// The process it was given to.
    pub process: ProcessId,
    /// Its flow's source.
    pub source: LabelId,
    /// Its flow's destination (a label of this node's state).
    pub destination: LabelId,
}

/// A state read back from a data directory.
#[derive(Debug)]
pub struct Recovered {
    /// The state, with the journal attached for what follows.
    pub state: State,
    /// Records read back.
    pub replayed: u64,
    /// Grants on record that were never reported: they count as performed.
    pub open_grants: Vec<OpenGrant>,
    /// Processes attached when the daemon stopped: they are gone for it now.
    pub attached: Vec<ProcessId>,
    /// The largest grant id on record.
    pub last_grant: u64,
    /// A torn tail cut after the last checkpoint (a machine crash), described.
    pub cut: Option<String>,
}

/// Reads the journal of `data` back into a new state, checking it, and attaches the
/// journal to that state for what follows.
pub fn recover(data: &DataDir, config: &DurableConfig, audit: &AuditConfig) -> Result<Recovered, DataDirError> {
    let opened = Journal::open(&data.journal_dir(), config.journal)?;
    let mut state = State::with_audit(AuditLog::new(audit));
    let mut tracker = Tracker::default();
    let replayed = opened.changes.len() as u64;
    for (i, change) in opened.changes.into_iter().enumerate() {
        tracker.see(&change);
        if let Err(e) = state.apply(change) {
            return Err(DataDirError::Journal(JournalError::Corrupt {
                path: data.journal_dir(),
                lsn: Some(i as u64),
                problem: format!("record {i} does not apply to the state before it: {e}"),
            }));
        }
    }
    state.attach_journal(opened.journal);
    let mut open_grants: Vec<OpenGrant> = tracker.open.into_values().collect();
    open_grants.sort_by_key(|g| g.grant);
    let attached = state.enrollments().attached();
    Ok(Recovered { state, replayed, open_grants, attached, last_grant: tracker.last_grant, cut: opened.cut })
}

/// Follows grants through the changes replayed.
#[derive(Debug, Default)]
struct Tracker {
    open: crate::FastMap<GrantId, OpenGrant>,
    last_grant: u64,
}

impl Tracker {
    fn see(&mut self, change: &Change) {
        match change {
            Change::FlowAudit(r) => {
                self.last_grant = self.last_grant.max(r.grant.0);
                match (r.kind, r.result) {
                    (AuditKind::Request, FlowResult::Granted) => {
                        self.open.insert(
                            r.grant,
                            OpenGrant {
                                grant: r.grant,
                                process: r.process,
                                source: r.source,
                                destination: r.destination,
                            },
                        );
                    }
                    (AuditKind::Report | AuditKind::Expired, _) => {
                        self.open.remove(&r.grant);
                    }
                    _ => {}
                }
            }
            Change::Audit(e) => self.see_entry(e),
            _ => {}
        }
    }

    fn see_entry(&mut self, e: &AuditEntry) {
        let Some(grant) = e.grant else { return };
        self.last_grant = self.last_grant.max(grant.0);
        match (e.kind, &e.result) {
            // A flow to an external peer: no provenance here to merge, nothing to end.
            (AuditKind::Request, AuditOutcome::Granted) => {}
            (AuditKind::Report | AuditKind::Expired, _) => {
                self.open.remove(&grant);
            }
            _ => {}
        }
    }
}
