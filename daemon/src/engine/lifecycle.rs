//! Process lifecycle and enrollment: client processes attach and exit, their fds
//! enroll (as a file or a stream) and unenroll.

use trace2e_proto::{Fd, GrantId, ProcessId, Resource};

use super::{Engine, EngineError, Grant, ProcessInfo, audit};
use crate::audit::clock::now_us;
use crate::audit::{AuditEntry, AuditKind, AuditOutcome};
use crate::provenance::LabelId;
use crate::state::{Change, State, StateError};

impl Engine {
    /// Registers a client process. Idempotent: attaching again with the same executable
    /// does nothing; with another executable (exec) it updates the process's attributes.
    pub fn attach_process(&self, info: ProcessInfo) {
        let mut core = self.core.write();
        let state = &mut core.state;
        if state.enrollments().process(info.id).is_some_and(|p| p.exe == info.exe) {
            return;
        }
        let result = (|| -> Result<(), StateError> {
            let label = state.intern(&self.local(&Resource::Process(info.id)))?;
            let exe_label = state.intern(&self.local(&Resource::Executable(info.exe.clone())))?;
            state.apply(Change::Attach { process: info.id, label, exe: info.exe.clone(), exe_label, uid: info.uid })?;
            let mut e = AuditEntry::new(AuditKind::Attach, now_us(), AuditOutcome::Ok);
            e.process = Some(info.id);
            e.resource = Some(label);
            e.exe = Some(info.exe.clone());
            audit(state, e);
            Ok(())
        })();
        if let Err(e) = result {
            tracing::error!(error = %e, process = %info.id, "attach failed");
        }
    }

    /// A client process is gone: its grants end as if performed, its fds are unenrolled,
    /// and its label stays (with its executable) in the provenance of what it wrote.
    pub fn process_exited(&self, id: ProcessId) {
        let attached = {
            let mut core = self.core.write();
            // Detach first: no new grant can be created for it after this point.
            core.state.apply_fact(Change::Detach { process: id }).is_ok()
        };
        let grants: Vec<(GrantId, Grant)> = {
            let grants = &mut self.core.write().grants;
            let ids: Vec<GrantId> = grants.iter().filter(|(_, g)| g.flow.process == id).map(|(k, _)| *k).collect();
            ids.into_iter().filter_map(|k| grants.remove(&k).map(|g| (k, g))).collect()
        };
        for (grant_id, grant) in grants {
            self.end_unreported(grant_id, grant);
        }
        let mut core = self.core.write();
        let state = &mut core.state;
        for fd in state.enrollments().fds_of(id) {
            self.unenroll_locked(state, id, fd);
        }
        if attached {
            let mut e = AuditEntry::new(AuditKind::Exit, now_us(), AuditOutcome::Ok);
            e.process = Some(id);
            e.resource = state.id(&self.local(&Resource::Process(id)));
            audit(state, e);
        }
    }

    /// Registers `fd` of `process` as `resource` (a file or a stream). A reused fd
    /// replaces its previous entry (audited as unenroll, then enroll).
    pub fn enroll(&self, process: ProcessId, fd: Fd, resource: Resource) -> Result<(), EngineError> {
        if !matches!(resource, Resource::File(_) | Resource::Stream(_)) {
            return Err(EngineError::NotAFlowEndpoint { resource });
        }
        let mut core = self.core.write();
        let state = &mut core.state;
        if state.enrollments().process(process).is_none() {
            return Err(EngineError::UnknownProcess { process });
        }
        let label = state.intern(&resource.at(self.node()))?;
        if state.enrollments().resource(process, fd).is_some() {
            self.unenroll_locked(state, process, fd);
        }
        state.apply(Change::Enroll { process, fd, label })?;
        let mut e = AuditEntry::new(AuditKind::Enroll, now_us(), AuditOutcome::Ok);
        e.process = Some(process);
        e.fd = Some(fd);
        e.resource = Some(label);
        audit(state, e);
        Ok(())
    }

    pub(super) fn unenroll_locked(&self, state: &mut State, process: ProcessId, fd: Fd) -> Option<LabelId> {
        let label = state.enrollments().resource(process, fd)?;
        state.apply_fact(Change::Unenroll { process, fd }).ok()?;
        let mut e = AuditEntry::new(AuditKind::Unenroll, now_us(), AuditOutcome::Ok);
        e.process = Some(process);
        e.fd = Some(fd);
        e.resource = Some(label);
        audit(state, e);
        Some(label)
    }

    /// Forgets `fd` of `process` (closed).
    pub fn unenroll(&self, process: ProcessId, fd: Fd) -> Result<(), EngineError> {
        let mut core = self.core.write();
        match self.unenroll_locked(&mut core.state, process, fd) {
            Some(_) => Ok(()),
            None => Err(EngineError::NotEnrolled { process, fd }),
        }
    }
}
