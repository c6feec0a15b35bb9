//! The append-only log: records in chunks, the window kept in memory, what was spilled
//! to disk, counters, and queries over both.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use super::chunk::*;
use super::record::*;
use super::spill;
use super::stored::*;
use super::{AuditConfig, AuditError};
use crate::provenance::LabelId;

/// The append-only log.
///
/// Entries live in fixed-size chunks: appending never moves earlier entries, so the log
/// can grow to millions of records without the multi-hundred-MB reallocations (under the
/// state lock, stalling every flow) a single `Vec` would make. With a spill directory,
/// full chunks are also written to a spill file ([`spill`]); once written, those older
/// than the memory window leave memory, and the oldest one's buffer holds the next
/// chunk's records. Queries read whatever part they need from either.
#[derive(Debug, Default)]
pub struct AuditLog {
    /// Full chunks in memory, oldest first: `full[k]` holds entries `(first + k) * CHUNK`
    /// onwards. Shared with the spill writer until it has written them.
    full: VecDeque<Arc<Vec<Stored>>>,
    /// What the [`Rare`] records of `full[k]` have, by offset in the chunk (ascending):
    /// it leaves memory with its chunk.
    full_rare: VecDeque<Arc<ChunkRare>>,
    /// The chunk index of `full[0]`: entries before `first * CHUNK` are only on disk.
    first: usize,
    /// The chunk being filled (no capacity before the first append).
    current: Vec<Stored>,
    /// What the [`Rare`] records of `current` have, by offset in the chunk (ascending).
    current_rare: ChunkRare,
    len: usize,
    granted: u64,
    denied: u64,
    spill: SpillState,
    /// Full chunks kept in memory once written.
    window: usize,
}

#[derive(Debug, Default)]
enum SpillState {
    /// Everything stays in memory.
    #[default]
    Off,
    /// The spill file is made when the first chunk fills.
    Pending(PathBuf),
    On(spill::Spill),
    /// The spill file could not be made (logged): everything stays in memory.
    Unavailable,
}

impl AuditLog {
    /// An empty log kept as `config` says.
    pub fn new(config: &AuditConfig) -> Self {
        Self {
            spill: config.spill_dir.clone().map_or(SpillState::Off, SpillState::Pending),
            window: config.memory_chunks.max(1),
            ..Self::default()
        }
    }

    /// Appends an entry; returns its sequence number.
    pub fn append(&mut self, entry: AuditEntry) -> u64 {
        if entry.kind == AuditKind::Request {
            match entry.result {
                AuditOutcome::Granted => self.granted += 1,
                AuditOutcome::Denied(_) => self.denied += 1,
                _ => {}
            }
        }
        let (stored, rare) = Stored::split(entry);
        self.push(stored, rare.as_ref())
    }

    /// Appends a flow's record (the same as appending [`FlowRecord::entry`]); returns
    /// its sequence number.
    pub fn append_flow(&mut self, record: FlowRecord) -> u64 {
        if record.kind == AuditKind::Request && record.result == FlowResult::Granted {
            self.granted += 1;
        }
        self.push(Stored::from(record), None)
    }

    fn push(&mut self, stored: Stored, rare: Option<&Rare>) -> u64 {
        if self.current.len() == CHUNK || self.current.capacity() == 0 {
            self.roll();
        }
        if let Some(rare) = rare {
            self.current_rare.push(self.current.len() as u32, rare);
        }
        self.current.push(stored);
        // Records ahead are lines never touched since their page was zeroed (or, in a
        // reused chunk, since long ago): fetch the one two records ahead now (each line
        // once, two appends early), while the flow goes on, not under a later decision
        // (1-client `t2e-load`; numbers in docs/decisions.md).
        #[cfg(target_arch = "x86_64")]
        if let Some(ahead) = self.current.spare_capacity_mut().get(1) {
            // SAFETY: a prefetch is a hint: it never faults and never changes memory;
            // SSE is baseline on x86_64.
            unsafe { core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(ahead.as_ptr().cast()) };
        }
        self.len += 1;
        self.len as u64
    }

    /// Starts a new current chunk; a full one joins `full` and is queued for the spill
    /// file.
    fn roll(&mut self) {
        let next = self.recycle().unwrap_or_else(spare_chunk);
        let done = std::mem::replace(&mut self.current, next);
        if done.len() != CHUNK {
            return; // the empty start
        }
        let done = Arc::new(done);
        // Sized as the last chunk's: one allocation each, not a doubling chain per chunk
        // (which fragments the heap as chunks come and go).
        let next_rare = self.current_rare.like();
        let done_rare = Arc::new(std::mem::replace(&mut self.current_rare, next_rare));
        let index = self.first + self.full.len();
        if let SpillState::Pending(dir) = &self.spill {
            self.spill = match spill::Spill::start(dir) {
                Ok(s) => SpillState::On(s),
                Err(e) => {
                    tracing::error!(
                        dir = %dir.display(),
                        error = %e,
                        "cannot make the audit spill file; the audit trail stays in memory"
                    );
                    SpillState::Unavailable
                }
            };
        }
        if let SpillState::On(s) = &self.spill {
            s.queue(index, &done, &done_rare);
        }
        self.full.push_back(done);
        self.full_rare.push_back(done_rare);
    }

    /// Takes the written chunks beyond the memory window out of memory; returns the
    /// buffer of one of them, emptied, for the next chunk.
    fn recycle(&mut self) -> Option<Vec<Stored>> {
        let SpillState::On(spill) = &self.spill else { return None };
        let durable = spill.durable();
        let mut reused = None;
        while self.full.len() > self.window && self.first < durable {
            let Some(oldest) = self.full.pop_front() else { break };
            self.full_rare.pop_front();
            self.first += 1;
            // The writer dropped its share before counting the chunk as written, and
            // queries hold none beyond the state lock: this is the last one.
            if reused.is_none()
                && let Ok(mut chunk) = Arc::try_unwrap(oldest)
            {
                chunk.clear();
                reused = Some(chunk);
            }
        }
        reused
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Records kept only in the spill file (the oldest ones).
    pub fn spilled(&self) -> usize {
        self.first * CHUNK
    }

    /// Entry `i`, which is in memory (`i >= self.spilled()`).
    fn in_memory(&self, i: usize) -> &Stored {
        match self.full.get(i / CHUNK - self.first) {
            Some(chunk) => &chunk[i % CHUNK],
            None => &self.current[i % CHUNK],
        }
    }

    /// Granted requests so far.
    pub fn granted(&self) -> u64 {
        self.granted
    }

    /// Denied requests so far.
    pub fn denied(&self) -> u64 {
        self.denied
    }

    /// Sequence numbers and entries matching `query`, ascending. `resource` is the
    /// query's resource already interned: `Some(None)` means a resource that was never
    /// interned, which matches nothing. Reads the spill file for records no longer in
    /// memory, holding `self` all along (for tests: the engine uses
    /// [`AuditLog::query_memory`], [`DiskScan::run`] and [`AuditLog::resolve`] to read
    /// the file without its lock).
    #[cfg(test)]
    pub fn query(
        &self,
        query: &AuditQuery,
        resource: Option<Option<LabelId>>,
    ) -> Result<Vec<(u64, AuditEntry)>, AuditError> {
        let (mut out, scan) = self.query_memory(query, resource);
        if let Some(scan) = scan {
            out.extend(self.resolve(scan.run()?));
        }
        out.reverse();
        Ok(out)
    }

    /// The part of `query`'s answer in memory, newest first, and the scan of the spill
    /// file that completes it if memory did not hold enough. The spilled records never
    /// change, so the scan may run after the caller released the log.
    pub fn query_memory(
        &self,
        query: &AuditQuery,
        resource: Option<Option<LabelId>>,
    ) -> (Vec<(u64, AuditEntry)>, Option<DiskScan>) {
        let resource = match resource {
            Some(None) => return (Vec::new(), None),
            Some(Some(id)) => Some(id),
            None => None,
        };
        let filter = Filter { resource, decision: query.decision };
        let start = usize::try_from(query.after.0).unwrap_or(usize::MAX).min(self.len);
        let limit = if query.limit == 0 { usize::MAX } else { query.limit };
        let spilled = self.spilled();
        // Newest first, so that `limit` keeps the most recent matches.
        let mut out = Vec::new();
        for i in (start.max(spilled)..self.len).rev() {
            if out.len() >= limit {
                return (out, None);
            }
            let e = self.in_memory(i);
            if filter.matches(e) {
                out.push((i as u64 + 1, e.entry(self.rare_of(i, e).as_ref())));
            }
        }
        let scan = match &self.spill {
            SpillState::On(spill) if start < spilled && out.len() < limit => {
                Some(DiskScan { file: spill.reader(), start, end: spilled, limit: limit - out.len(), filter })
            }
            _ => None,
        };
        (out, scan)
    }

    /// Entries for what a [`DiskScan`] found (newest first, as found).
    pub fn resolve(&self, found: Vec<(usize, StoredRecord)>) -> impl Iterator<Item = (u64, AuditEntry)> + '_ {
        found.into_iter().map(|(i, StoredRecord(e, rare))| (i as u64 + 1, e.entry(rare.as_ref())))
    }

    /// The rare fields of entry `i`, which is in memory.
    fn rare_of(&self, i: usize, e: &Stored) -> Option<Rare> {
        if !e.has_rare {
            return None;
        }
        match self.full_rare.get(i / CHUNK - self.first) {
            Some(chunk) => chunk.get(i),
            None => self.current_rare.get(i),
        }
    }

    /// Bytes of memory the rare fields of the records in memory take (for tests).
    #[cfg(test)]
    fn rare_in_memory(&self) -> usize {
        self.current_rare.heap_bytes() + self.full_rare.iter().map(|c| c.heap_bytes()).sum::<usize>()
    }
}

/// Which records a query wants, by their stored fields.
#[derive(Debug, Clone, Copy)]
struct Filter {
    resource: Option<LabelId>,
    decision: Option<DecisionFilter>,
}

impl Filter {
    fn matches(&self, e: &Stored) -> bool {
        self.resource.is_none_or(|r| e.resource() == Some(r) || e.source() == Some(r) || e.destination() == Some(r))
            && match self.decision {
                None => true,
                Some(DecisionFilter::Granted) => e.kind == AuditKind::Request && e.result == Outcome::Granted,
                Some(DecisionFilter::Denied) => e.kind == AuditKind::Request && e.result == Outcome::Denied,
            }
    }
}

/// The rare fields of one chunk's records, encoded (postcard): a few bytes each (an
/// external peer's address takes 8), where the decoded [`Rare`] takes hundreds.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct ChunkRare {
    /// Offsets in the chunk of the records that have rare fields, ascending.
    at: Vec<u32>,
    /// Where each one's encoding ends in `bytes`.
    ends: Vec<u32>,
    bytes: Vec<u8>,
}

impl ChunkRare {
    fn push(&mut self, offset: u32, rare: &Rare) {
        match postcard::to_extend(rare, std::mem::take(&mut self.bytes)) {
            Ok(bytes) => self.bytes = bytes,
            // Encoding into memory fails only on a value serde cannot express: none of
            // Rare's. Keep the record without its rare fields rather than lose it.
            Err(e) => {
                tracing::error!(error = %e, "cannot encode an audit record's rare fields");
                return;
            }
        }
        self.at.push(offset);
        self.ends.push(self.bytes.len() as u32);
    }

    /// An empty one with the capacity this one uses.
    fn like(&self) -> Self {
        Self {
            at: Vec::with_capacity(self.at.len()),
            ends: Vec::with_capacity(self.ends.len()),
            bytes: Vec::with_capacity(self.bytes.len()),
        }
    }

    /// The rare fields of entry `i` of this chunk.
    fn get(&self, i: usize) -> Option<Rare> {
        let k = self.at.binary_search(&((i % CHUNK) as u32)).ok()?;
        let start = if k == 0 { 0 } else { self.ends[k - 1] as usize };
        postcard::from_bytes(&self.bytes[start..self.ends[k] as usize]).ok()
    }

    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.at.capacity() * 4 + self.ends.capacity() * 4 + self.bytes.capacity()
    }
}

/// A record read back from the spill files, to be turned into an entry by
/// [`AuditLog::resolve`].
#[derive(Debug, Clone)]
pub struct StoredRecord(Stored, Option<Rare>);

/// The part of a query that reads the spill file (see [`AuditLog::query_memory`]).
#[derive(Debug)]
pub struct DiskScan {
    file: spill::Reader,
    start: usize,
    end: usize,
    limit: usize,
    filter: Filter,
}

impl DiskScan {
    /// Reads the matching records, newest first, up to the query's limit.
    pub fn run(self) -> Result<Vec<(usize, StoredRecord)>, AuditError> {
        let mut found = Vec::new();
        self.file.visit_back(self.start, self.end, |i, e| {
            if self.filter.matches(e) {
                found.push((i, StoredRecord(*e, None)));
            }
            found.len() >= self.limit
        })?;
        // Newest first: each chunk's rare fields are read once.
        let mut chunk: Option<(usize, ChunkRare)> = None;
        for (i, StoredRecord(e, rare)) in &mut found {
            if !e.has_rare {
                continue;
            }
            if chunk.as_ref().is_none_or(|(c, _)| *c != *i / CHUNK) {
                chunk = Some((*i / CHUNK, self.file.rare(*i / CHUNK)?));
            }
            let (_, of_chunk) = chunk.as_ref().expect("just read");
            *rare = Some(of_chunk.get(*i).ok_or(AuditError::Corrupt { seq: AuditSeq(*i as u64 + 1) })?);
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::check_spill_dir;
    use trace2e_proto::{Denial, Direction, Fd, GrantId, NodeId, Policy, ProcessId};
    use trace2e_proto::{PolicyKind, Resource};

    #[test]
    fn chunks_keep_sequence_numbers_and_queries_across_boundaries() {
        let mut log = AuditLog::default();
        for i in 0..(2 * CHUNK + 5) {
            let mut e = AuditEntry::new(AuditKind::Request, i as u64, AuditOutcome::Granted);
            e.bytes = i as u64;
            assert_eq!(log.append(e), i as u64 + 1);
        }
        let all =
            log.query(&AuditQuery { resource: None, decision: None, limit: 0, after: AuditSeq(0) }, None).unwrap();
        assert_eq!(all.len(), 2 * CHUNK + 5);
        assert!(all.iter().all(|(seq, e)| *seq == e.bytes + 1));
        let tail = log
            .query(&AuditQuery { resource: None, decision: None, limit: 3, after: AuditSeq(CHUNK as u64 - 1) }, None)
            .unwrap();
        assert_eq!(
            tail.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![2 * CHUNK as u64 + 3, 2 * CHUNK as u64 + 4, 2 * CHUNK as u64 + 5]
        );
        let across = log
            .query(&AuditQuery { resource: None, decision: None, limit: 0, after: AuditSeq(CHUNK as u64 - 1) }, None)
            .unwrap();
        assert_eq!(across.first().map(|(s, _)| *s), Some(CHUNK as u64));
        assert_eq!(across.len(), CHUNK + 6);
    }

    fn wait_written(log: &AuditLog, chunks: usize) {
        let SpillState::On(spill) = &log.spill else { panic!("the log does not spill") };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while spill.durable() < chunks {
            assert!(std::time::Instant::now() < deadline, "the spill writer is stuck");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn written_chunks_leave_memory_and_queries_read_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AuditLog::new(&AuditConfig { spill_dir: Some(dir.path().into()), memory_chunks: 1 });
        let total = 4 * CHUNK + 5;
        let append = |log: &mut AuditLog, i: usize| {
            // Every 10 000th record a denial (its denial kept aside), the rest flows.
            let result = if i.is_multiple_of(10_000) { AuditOutcome::Denied(denial()) } else { AuditOutcome::Granted };
            let mut e = request(result, (i % 3) as u32);
            e.bytes = i as u64;
            assert_eq!(log.append(e), i as u64 + 1);
        };
        for i in 0..2 * CHUNK + 1 {
            append(&mut log, i);
        }
        wait_written(&log, 2);
        for i in 2 * CHUNK + 1..total {
            append(&mut log, i);
        }
        assert!(log.spilled() >= 2 * CHUNK, "written chunks left memory: {} spilled", log.spilled());
        assert!(log.full.len() <= 2, "memory holds the window: {} full chunks", log.full.len());
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "the spill file is unlinked");

        let all = log.query(&AuditQuery::default(), None).unwrap();
        assert_eq!(all.len(), total);
        assert!(
            all.iter().all(|(seq, e)| *seq == e.bytes + 1 && e.source == LabelId::from_index((e.bytes % 3) as usize))
        );
        let denied =
            log.query(&AuditQuery { decision: Some(DecisionFilter::Denied), ..Default::default() }, None).unwrap();
        assert_eq!(denied.len(), total.div_ceil(10_000));
        assert!(denied.iter().all(|(_, e)| e.result == AuditOutcome::Denied(denial())));
        assert_eq!(log.denied(), denied.len() as u64);
        // A window across the disk and memory, and one on disk only.
        let across =
            log.query(&AuditQuery { after: AuditSeq(CHUNK as u64), limit: 0, ..Default::default() }, None).unwrap();
        assert_eq!(across.len(), total - CHUNK);
        assert_eq!(across.first().map(|(s, _)| *s), Some(CHUNK as u64 + 1));
        let by_src = log.query(
            &AuditQuery { after: AuditSeq(10), limit: 2, ..Default::default() },
            LabelId::from_index(1).map(Some),
        );
        let seqs: Vec<u64> = by_src.unwrap().iter().map(|(s, _)| *s).collect();
        let mut newest_src1: Vec<u64> = (0..total).rev().filter(|i| i % 3 == 1).map(|i| i as u64 + 1).take(2).collect();
        newest_src1.reverse();
        assert_eq!(seqs, newest_src1);
        let oldest = log.query(&AuditQuery { after: AuditSeq(0), limit: 0, ..Default::default() }, None).unwrap();
        assert_eq!(oldest[0].1.bytes, 0);
        assert_eq!(oldest[0].1.result, AuditOutcome::Denied(denial()), "a record on disk keeps its denial");
    }

    #[test]
    fn rare_fields_leave_memory_with_their_chunk_and_are_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AuditLog::new(&AuditConfig { spill_dir: Some(dir.path().into()), memory_chunks: 1 });
        // Every record has a rare field (as every write to an external peer does).
        let append = |log: &mut AuditLog, i: usize| {
            let mut e = request(AuditOutcome::Granted, 1);
            e.bytes = i as u64;
            e.external_peer = Some(std::net::SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 443)));
            assert_eq!(log.append(e), i as u64 + 1);
        };
        let total = 5 * CHUNK + 7;
        for i in 0..total {
            append(&mut log, i);
            if (i + 1) % CHUNK == 1 && i > CHUNK {
                // Let the writer catch up so that chunks can leave memory.
                wait_written(&log, (i + 1) / CHUNK - 1);
            }
        }
        assert!(log.spilled() >= 3 * CHUNK, "{} spilled", log.spilled());
        assert!(log.full_rare.len() <= 2, "the window's chunks only: {}", log.full_rare.len());
        // Three chunks at most (the window, one written but kept, the current one), of
        // 8 bytes of index and 8 of address a record, with Vec's doubling.
        assert!(
            log.rare_in_memory() <= 3 * CHUNK * 16 * 2,
            "rare fields of at most three chunks in memory: {} B",
            log.rare_in_memory()
        );
        let all = log.query(&AuditQuery::default(), None).unwrap();
        assert_eq!(all.len(), total);
        for (seq, e) in &all {
            let i = (*seq - 1) as usize;
            assert_eq!(e.bytes, i as u64);
            assert_eq!(e.external_peer, Some(std::net::SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 443))));
        }
    }

    #[test]
    fn an_unusable_spill_directory_keeps_everything_in_memory() {
        let mut log =
            AuditLog::new(&AuditConfig { spill_dir: Some("/nonexistent/trace2e-spill".into()), memory_chunks: 1 });
        for i in 0..3 * CHUNK {
            log.append(request(AuditOutcome::Granted, (i % 2) as u32));
        }
        assert!(matches!(log.spill, SpillState::Unavailable));
        assert_eq!(log.spilled(), 0);
        assert_eq!(log.query(&AuditQuery::default(), None).unwrap().len(), 3 * CHUNK);
        assert!(check_spill_dir(std::path::Path::new("/nonexistent/trace2e-spill")).is_err());
    }

    fn request(result: AuditOutcome, src: u32) -> AuditEntry {
        let mut e = AuditEntry::new(AuditKind::Request, 10, result);
        e.source = LabelId::from_index(src as usize);
        e.destination = LabelId::from_index(100);
        e
    }

    fn denial() -> Denial {
        Denial {
            policy: PolicyKind::Integrity,
            resource: Resource::file("/x").unwrap().at(&NodeId::new("n1").unwrap()),
            reason: "too low".into(),
        }
    }

    #[test]
    fn sequence_numbers_counters_and_filters() {
        let mut log = AuditLog::default();
        assert_eq!(log.append(AuditEntry::new(AuditKind::Attach, 1, AuditOutcome::Ok)), 1);
        assert_eq!(log.append(request(AuditOutcome::Granted, 1)), 2);
        assert_eq!(log.append(request(AuditOutcome::Denied(denial()), 2)), 3);
        assert_eq!(log.append(request(AuditOutcome::Granted, 2)), 4);
        assert_eq!((log.granted(), log.denied()), (2, 1));

        let all = log.query(&AuditQuery::default(), None).unwrap();
        assert_eq!(all.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        let q = AuditQuery { decision: Some(DecisionFilter::Granted), ..Default::default() };
        assert_eq!(log.query(&q, None).unwrap().iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![2, 4]);
        let q = AuditQuery { limit: 2, ..Default::default() };
        assert_eq!(log.query(&q, None).unwrap().iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3, 4]);
        let q = AuditQuery { after: AuditSeq(2), ..Default::default() };
        assert_eq!(log.query(&q, None).unwrap().iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3, 4]);
        let by_src = log.query(&AuditQuery::default(), Some(LabelId::from_index(2))).unwrap();
        assert_eq!(by_src.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3, 4]);
        assert!(log.query(&AuditQuery::default(), Some(None)).unwrap().is_empty());
        let q = AuditQuery { after: AuditSeq(99), ..Default::default() };
        assert!(log.query(&q, None).unwrap().is_empty());
    }

    #[test]
    fn every_field_survives_the_compact_storage() {
        let mut full = AuditEntry::new(AuditKind::RemoteCheck, 99, AuditOutcome::Denied(denial()));
        full.process = Some(ProcessId { pid: 5, starttime: 6 });
        full.fd = Some(Fd(9));
        full.resource = LabelId::from_index(1);
        full.source = LabelId::from_index(2);
        full.destination = LabelId::from_index(3);
        full.external_peer = Some("9.9.9.9:443".parse().unwrap());
        full.consent_node = Some(NodeId::new("n2").unwrap());
        full.peer = Some(NodeId::new("n3").unwrap());
        full.direction = Some(Direction::Write);
        full.bytes = 64;
        full.grant = Some(GrantId(77));
        full.policy = Some(Policy::default());
        full.exe = Some("/bin/x".into());
        let mut plain = AuditEntry::new(AuditKind::Report, 100, AuditOutcome::Ok);
        plain.grant = Some(GrantId(78));
        // Present fields whose value is zero stay present (presence is not "non-zero").
        let mut zeros = AuditEntry::new(AuditKind::Request, 0, AuditOutcome::Denied(denial()));
        zeros.process = Some(ProcessId { pid: 0, starttime: 0 });
        zeros.fd = Some(Fd(0));
        zeros.resource = LabelId::from_index(0);
        zeros.source = LabelId::from_index(0);
        zeros.destination = LabelId::from_index(0);
        zeros.grant = Some(GrantId(0));
        let mut log = AuditLog::default();
        log.append(full.clone());
        log.append(plain.clone());
        log.append(zeros.clone());
        let all = log.query(&AuditQuery::default(), None).unwrap();
        assert_eq!(all, vec![(1, full), (2, plain), (3, zeros)]);
    }
}
