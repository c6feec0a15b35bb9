//! Enrollment: which processes are attached and which resource each of their fds is.
//!
//! Owns the process table and the `(process, fd) → label` map. It does not check claims
//! against `/proc` (the P2M service does), decide flows, or mutate itself: only
//! `state::State::apply` calls its mutators.

use std::collections::BTreeSet;
use std::path::PathBuf;

use trace2e_proto::{Fd, ProcessId};

use crate::FastMap;
use crate::provenance::LabelId;

/// A Unix user id, as the kernel reported it for a process (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct UserId(pub u32);

/// An attached process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRecord {
    /// Its label (`process://PID.START@node`).
    pub label: LabelId,
    /// Its executable.
    pub exe: PathBuf,
    /// The label of its executable (`exe:///path@node`), holder of the shared policy.
    pub exe_label: LabelId,
    /// Its user id.
    pub uid: UserId,
}

/// Attached processes and their enrolled fds.
#[derive(Debug, Default)]
pub struct Enrollments {
    processes: FastMap<ProcessId, ProcessRecord>,
    fds: FastMap<(ProcessId, Fd), LabelId>,
    by_process: FastMap<ProcessId, BTreeSet<Fd>>,
}

impl Enrollments {
    /// An attached process.
    pub fn process(&self, id: ProcessId) -> Option<&ProcessRecord> {
        self.processes.get(&id)
    }

    /// The resource enrolled under `(process, fd)`.
    pub fn resource(&self, process: ProcessId, fd: Fd) -> Option<LabelId> {
        self.fds.get(&(process, fd)).copied()
    }

    /// The fds a process has enrolled, ascending.
    pub fn fds_of(&self, process: ProcessId) -> Vec<Fd> {
        self.by_process.get(&process).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    /// The attached processes, in ascending order.
    pub fn attached(&self) -> Vec<ProcessId> {
        let mut v: Vec<ProcessId> = self.processes.keys().copied().collect();
        v.sort();
        v
    }

    /// Number of attached processes.
    pub fn processes(&self) -> usize {
        self.processes.len()
    }

    /// Number of enrolled fds.
    pub fn enrolled(&self) -> usize {
        self.fds.len()
    }

    pub(crate) fn attach(&mut self, id: ProcessId, record: ProcessRecord) {
        self.processes.insert(id, record);
    }

    pub(crate) fn detach(&mut self, id: ProcessId) -> Option<ProcessRecord> {
        self.processes.remove(&id)
    }

    /// Enrolls, replacing any previous entry; returns the replaced label.
    pub(crate) fn enroll(&mut self, process: ProcessId, fd: Fd, label: LabelId) -> Option<LabelId> {
        self.by_process.entry(process).or_default().insert(fd);
        self.fds.insert((process, fd), label)
    }

    pub(crate) fn unenroll(&mut self, process: ProcessId, fd: Fd) -> Option<LabelId> {
        let old = self.fds.remove(&(process, fd));
        if let Some(set) = self.by_process.get_mut(&process) {
            set.remove(&fd);
            if set.is_empty() {
                self.by_process.remove(&process);
            }
        }
        old
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enroll_replace_unenroll() {
        let mut e = Enrollments::default();
        let p = ProcessId { pid: 1, starttime: 2 };
        let (a, b) = (LabelId::from_index(0).unwrap(), LabelId::from_index(1).unwrap());
        assert_eq!(e.enroll(p, Fd(3), a), None);
        assert_eq!(e.enroll(p, Fd(3), b), Some(a));
        assert_eq!(e.enroll(p, Fd(4), a), None);
        assert_eq!(e.fds_of(p), vec![Fd(3), Fd(4)]);
        assert_eq!(e.resource(p, Fd(3)), Some(b));
        assert_eq!(e.unenroll(p, Fd(3)), Some(b));
        assert_eq!(e.unenroll(p, Fd(4)), Some(a));
        assert_eq!(e.unenroll(p, Fd(4)), None);
        assert!(e.fds_of(p).is_empty());
        assert_eq!(e.enrolled(), 0);
    }
}
