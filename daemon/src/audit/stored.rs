//! The stored form of an audit record: plain data of 64 bytes ([`Stored`]), its fixed
//! little-endian encoding in the spill file (validated when read back), and the rare
//! fields kept out of line ([`Rare`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use trace2e_proto::{Denial, Direction, Fd, GrantId, LocalizedResource, NodeId, Policy, ProcessId};

use super::record::*;
use crate::provenance::LabelId;

/// What most records never have, kept out of line so that a flow's records stay small.
/// Leaves memory with its record's chunk: the spill writer stores each chunk's rare
/// fields (postcard) in a second spill file.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Rare {
    pub(super) denial: Option<Denial>,
    pub(super) named_source: Option<LocalizedResource>,
    pub(super) named_destination: Option<LocalizedResource>,
    pub(super) external_peer: Option<SocketAddr>,
    pub(super) consent_node: Option<NodeId>,
    pub(super) peer: Option<NodeId>,
    pub(super) policy: Option<Policy>,
    pub(super) exe: Option<PathBuf>,
}

/// [`AuditOutcome`] without the denial (kept in [`Rare`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Granted,
    Denied,
    Ok,
    Failed,
    Allowed,
    Refused,
}

/// Which of [`Stored`]'s optional fields hold a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Present(u8);

impl Present {
    const GRANT: u8 = 1;
    const PROCESS: u8 = 1 << 1;
    const FD: u8 = 1 << 2;
    const RESOURCE: u8 = 1 << 3;
    const SOURCE: u8 = 1 << 4;
    const DESTINATION: u8 = 1 << 5;

    pub(super) fn set(&mut self, bit: u8, present: bool) {
        if present {
            self.0 |= bit;
        }
    }

    pub(super) fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// How the log keeps an [`AuditEntry`]: one cache line, aligned on one. Two records
/// are appended per mediated I/O, so their size is page faults, cache misses and spill
/// bytes (a record straddling two lines cost ~10 % of 1-client throughput, `t2e-load`):
/// the fields of a flow's records are inline, their options as presence bits, and
/// everything else is in the log's [`Rare`] map. Converted back at query time; 64 bytes
/// on disk too ([`Stored::encode`]).
#[derive(Debug, Clone, Copy)]
#[repr(align(64))]
pub(super) struct Stored {
    pub(super) time_us: u64,
    pub(super) bytes: u64,
    /// Valid if [`Present::GRANT`].
    pub(super) grant: u64,
    /// The process's start time and pid: valid if [`Present::PROCESS`].
    pub(super) starttime: u64,
    pub(super) pid: u32,
    /// Valid if [`Present::FD`].
    pub(super) fd: i32,
    /// Resource, source, destination: each valid if its bit is present.
    pub(super) labels: [u32; 3],
    pub(super) kind: AuditKind,
    pub(super) direction: Option<Direction>,
    pub(super) result: Outcome,
    pub(super) present: Present,
    /// The log's [`Rare`] map has an entry for this record.
    pub(super) has_rare: bool,
}

/// Bytes of a record, in memory and in the spill file.
pub(super) const RECORD_BYTES: usize = 64;
const _: () = assert!(size_of::<Stored>() == RECORD_BYTES);

/// Every [`AuditKind`], by its code in the spill file.
pub(super) const KINDS: [AuditKind; 14] = [
    AuditKind::Attach,
    AuditKind::Exit,
    AuditKind::Enroll,
    AuditKind::Unenroll,
    AuditKind::Request,
    AuditKind::Report,
    AuditKind::Expired,
    AuditKind::PolicyChange,
    AuditKind::Delete,
    AuditKind::ConsentEnforced,
    AuditKind::ConsentDecision,
    AuditKind::RemoteCheck,
    AuditKind::RemoteFlow,
    AuditKind::RemoteDelete,
];
/// Every [`Outcome`], by its code in the spill file.
pub(super) const OUTCOMES: [Outcome; 6] =
    [Outcome::Granted, Outcome::Denied, Outcome::Ok, Outcome::Failed, Outcome::Allowed, Outcome::Refused];

impl Stored {
    /// `e` as stored, and what of it goes to the log's [`Rare`] map.
    pub(super) fn split(e: AuditEntry) -> (Self, Option<Rare>) {
        let (result, denial) = match e.result {
            AuditOutcome::Granted => (Outcome::Granted, None),
            AuditOutcome::Denied(d) => (Outcome::Denied, Some(d)),
            AuditOutcome::Ok => (Outcome::Ok, None),
            AuditOutcome::Failed => (Outcome::Failed, None),
            AuditOutcome::Allowed => (Outcome::Allowed, None),
            AuditOutcome::Refused => (Outcome::Refused, None),
        };
        // Built only when needed: a flow's records (nearly all of them) have none of it.
        let rare = (denial.is_some()
            || e.named_source.is_some()
            || e.named_destination.is_some()
            || e.external_peer.is_some()
            || e.consent_node.is_some()
            || e.peer.is_some()
            || e.policy.is_some()
            || e.exe.is_some())
        .then_some(Rare {
            denial,
            named_source: e.named_source,
            named_destination: e.named_destination,
            external_peer: e.external_peer,
            consent_node: e.consent_node,
            peer: e.peer,
            policy: e.policy,
            exe: e.exe,
        });
        let mut present = Present::default();
        present.set(Present::GRANT, e.grant.is_some());
        present.set(Present::PROCESS, e.process.is_some());
        present.set(Present::FD, e.fd.is_some());
        present.set(Present::RESOURCE, e.resource.is_some());
        present.set(Present::SOURCE, e.source.is_some());
        present.set(Present::DESTINATION, e.destination.is_some());
        let label = |l: Option<LabelId>| l.map_or(0, |l| l.index() as u32);
        let stored = Self {
            time_us: e.time_us,
            bytes: e.bytes,
            grant: e.grant.map_or(0, |g| g.0),
            starttime: e.process.map_or(0, |p| p.starttime),
            pid: e.process.map_or(0, |p| p.pid),
            fd: e.fd.map_or(0, |fd| fd.0),
            labels: [label(e.resource), label(e.source), label(e.destination)],
            kind: e.kind,
            direction: e.direction,
            result,
            present,
            has_rare: rare.is_some(),
        };
        (stored, rare)
    }

    /// The spill file's form: little-endian fields at fixed offsets, the enums as codes.
    pub(super) fn encode(&self, out: &mut [u8; RECORD_BYTES]) {
        out[0..8].copy_from_slice(&self.time_us.to_le_bytes());
        out[8..16].copy_from_slice(&self.bytes.to_le_bytes());
        out[16..24].copy_from_slice(&self.grant.to_le_bytes());
        out[24..32].copy_from_slice(&self.starttime.to_le_bytes());
        out[32..36].copy_from_slice(&self.pid.to_le_bytes());
        out[36..40].copy_from_slice(&self.fd.to_le_bytes());
        for (i, l) in self.labels.iter().enumerate() {
            out[40 + 4 * i..44 + 4 * i].copy_from_slice(&l.to_le_bytes());
        }
        out[52] = KINDS.iter().position(|k| *k == self.kind).unwrap_or(usize::MAX) as u8;
        out[53] = match self.direction {
            None => 0,
            Some(Direction::Read) => 1,
            Some(Direction::Write) => 2,
        };
        out[54] = OUTCOMES.iter().position(|o| *o == self.result).unwrap_or(usize::MAX) as u8;
        out[55] = self.present.0;
        out[56] = u8::from(self.has_rare);
        out[57..].fill(0);
    }

    /// The record [`Stored::encode`] wrote, or `None` for bytes it cannot have written.
    pub(super) fn decode(b: &[u8; RECORD_BYTES]) -> Option<Self> {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Some(Self {
            time_us: u64_at(0),
            bytes: u64_at(8),
            grant: u64_at(16),
            starttime: u64_at(24),
            pid: u32_at(32),
            fd: u32_at(36) as i32,
            labels: [u32_at(40), u32_at(44), u32_at(48)],
            kind: *KINDS.get(usize::from(b[52]))?,
            direction: match b[53] {
                0 => None,
                1 => Some(Direction::Read),
                2 => Some(Direction::Write),
                _ => return None,
            },
            result: *OUTCOMES.get(usize::from(b[54]))?,
            present: Present(b[55]),
            has_rare: match b[56] {
                0 => false,
                1 => true,
                _ => return None,
            },
        })
    }
}

impl From<FlowRecord> for Stored {
    fn from(r: FlowRecord) -> Self {
        Self {
            time_us: r.time_us,
            bytes: r.bytes,
            grant: r.grant.0,
            starttime: r.process.starttime,
            pid: r.process.pid,
            fd: r.fd.0,
            labels: [0, r.source.index() as u32, r.destination.index() as u32],
            kind: r.kind,
            direction: Some(r.direction),
            result: match r.result {
                FlowResult::Granted => Outcome::Granted,
                FlowResult::Ok => Outcome::Ok,
                FlowResult::Failed => Outcome::Failed,
            },
            present: Present(Present::GRANT | Present::PROCESS | Present::FD | Present::SOURCE | Present::DESTINATION),
            has_rare: false,
        }
    }
}

impl Stored {
    pub(super) fn label(&self, i: usize, bit: u8) -> Option<LabelId> {
        self.present.has(bit).then(|| LabelId::from_index(self.labels[i] as usize)).flatten()
    }

    pub(super) fn resource(&self) -> Option<LabelId> {
        self.label(0, Present::RESOURCE)
    }

    pub(super) fn source(&self) -> Option<LabelId> {
        self.label(1, Present::SOURCE)
    }

    pub(super) fn destination(&self) -> Option<LabelId> {
        self.label(2, Present::DESTINATION)
    }

    /// The entry, given what the log's [`Rare`] map holds for it.
    pub(super) fn entry(&self, rare: Option<&Rare>) -> AuditEntry {
        let rare = rare.cloned().unwrap_or_default();
        let result = match self.result {
            Outcome::Granted => AuditOutcome::Granted,
            // A denied record always carries its denial (see `Stored::split`).
            Outcome::Denied => rare.denial.map_or(AuditOutcome::Failed, AuditOutcome::Denied),
            Outcome::Ok => AuditOutcome::Ok,
            Outcome::Failed => AuditOutcome::Failed,
            Outcome::Allowed => AuditOutcome::Allowed,
            Outcome::Refused => AuditOutcome::Refused,
        };
        AuditEntry {
            time_us: self.time_us,
            kind: self.kind,
            process: self
                .present
                .has(Present::PROCESS)
                .then_some(ProcessId { pid: self.pid, starttime: self.starttime }),
            fd: self.present.has(Present::FD).then_some(Fd(self.fd)),
            resource: self.resource(),
            source: self.source(),
            destination: self.destination(),
            named_source: rare.named_source,
            named_destination: rare.named_destination,
            external_peer: rare.external_peer,
            consent_node: rare.consent_node,
            peer: rare.peer,
            direction: self.direction,
            bytes: self.bytes,
            grant: self.present.has(Present::GRANT).then_some(GrantId(self.grant)),
            policy: rare.policy,
            exe: rare.exe,
            result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditLog;

    #[test]
    fn every_kind_and_outcome_survives_the_spill_encoding() {
        let mut stored = Vec::new();
        for kind in KINDS {
            for result in OUTCOMES {
                for direction in [None, Some(Direction::Read), Some(Direction::Write)] {
                    stored.push(Stored {
                        time_us: u64::MAX - 1,
                        bytes: 1 << 40,
                        grant: 3,
                        starttime: 4,
                        pid: u32::MAX,
                        fd: -1,
                        labels: [7, 8, u32::MAX],
                        kind,
                        direction,
                        result,
                        present: Present(0x3f),
                        has_rare: result == Outcome::Denied,
                    });
                }
            }
        }
        for s in stored {
            let mut bytes = [0u8; RECORD_BYTES];
            s.encode(&mut bytes);
            let back = Stored::decode(&bytes).expect("decodes");
            assert_eq!(back.entry(None), s.entry(None));
            assert_eq!(back.has_rare, s.has_rare);
        }
        assert!(Stored::decode(&[0xff; RECORD_BYTES]).is_none(), "garbage is refused");
    }

    #[test]
    fn a_flow_record_is_stored_as_its_entry_would_be() {
        let record = |kind, result, grant, bytes| FlowRecord {
            time_us: 1234,
            kind,
            process: ProcessId { pid: 7, starttime: 8 },
            fd: Fd(3),
            direction: Direction::Read,
            source: LabelId::from_index(4).unwrap(),
            destination: LabelId::from_index(0).unwrap(),
            grant: GrantId(grant),
            bytes,
            result,
        };
        let records = [
            record(AuditKind::Request, FlowResult::Granted, 9, 0),
            record(AuditKind::Report, FlowResult::Ok, 9, 64),
            record(AuditKind::Report, FlowResult::Failed, 0, 0),
        ];
        let (mut compact, mut full) = (AuditLog::default(), AuditLog::default());
        for r in records {
            compact.append_flow(r);
            full.append(r.entry());
        }
        let q = AuditQuery::default();
        assert_eq!(compact.query(&q, None).unwrap(), full.query(&q, None).unwrap());
        assert_eq!(compact.query(&q, None).unwrap().len(), 3);
        assert_eq!((compact.granted(), compact.denied()), (1, 0));
        assert_eq!((full.granted(), full.denied()), (1, 0));
    }
}
