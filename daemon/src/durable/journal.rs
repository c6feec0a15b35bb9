//! The journal: every [`Change`] the state accepted, in order, in files of the data
//! directory mapped into the daemon's memory.
//!
//! # Why a shared mapping
//!
//! A record is written with a `memcpy` into a `MAP_SHARED` mapping of a preallocated
//! segment file: from that moment it belongs to the kernel's page cache, so it survives
//! the daemon's death (kill -9, panic, OOM kill) without any system call on the hot path.
//! Only a machine crash can lose what was not yet flushed: the flusher thread
//! (`t2e-journal`) `msync`s every `fsync_interval`; with an interval of zero, every grant
//! waits for a flush that covers it (group commit: one flush covers every record
//! written when it starts, see [`Syncer::sync_through`]).
//!
//! # Format
//!
//! Segment `{first_lsn:020}.journal`, preallocated (so that a full disk is an error at
//! the roll, never a `SIGBUS` on a write into the mapping):
//!
//! | bytes | segment header |
//! |---|---|
//! | 0..8 | magic `T2EJRNL1` |
//! | 8..16 | first record number (LSN), little-endian |
//! | 16..48 | chain value of the previous segments (zero: the first segment) |
//! | 48..52 | CRC-32 of bytes 0..48 |
//!
//! Then records from byte 64, each 8-aligned: `len u32` (payload bytes; 0 ends the
//! segment's records; written last), `crc u32` (CRC-32 of the LSN and the payload),
//! `lsn u64`, and the payload: the postcard encoding of the [`Change`].
//!
//! # Tamper evidence
//!
//! Each segment is hashed with BLAKE3, starting from its header's chain value: the
//! segment's final hash is the next one's chain value, and the hash so far is the head an
//! operator can anchor elsewhere. The flusher computes it off the hot path and stores the
//! last flushed point `(segment, offset, next lsn, hash)` in `checkpoint` (two slots
//! written in turn, each with a CRC). At start-up everything up to the checkpoint must
//! be intact and hash to the checkpoint's value, else the daemon refuses to start; what
//! follows it is what a machine crash may have torn, so a torn tail there is cut (and
//! logged) rather than refused. A daemon crash leaves no torn tail: records are complete
//! in the page cache.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};
use parking_lot::{Condvar, Mutex};

use crate::state::Change;

const MAGIC: &[u8; 8] = b"T2EJRNL1";
/// Bytes of a segment header.
pub const SEGMENT_HEADER: usize = 64;
/// Bytes of a record header.
const RECORD_HEADER: usize = 16;
/// The largest payload of one record.
const MAX_PAYLOAD: usize = 1 << 20;
const CHECKPOINT_SLOT: u64 = 64;
/// How often a failed roll (no space) is tried again while the journal is unavailable.
const RETRY: Duration = Duration::from_millis(50);

/// A 32-byte chain value.
pub type Hash = [u8; 32];

/// Why the journal cannot be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file of the journal cannot be made, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The journal holds something this daemon did not write, or lacks something it did.
    #[error("journal corrupt in {}: {problem}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The first record found wrong (its number), if a record is.
        lsn: Option<u64>,
        /// What is wrong.
        problem: String,
    },
    /// A change is too large for a record.
    #[error("a change of {0} bytes exceeds the journal's record limit")]
    TooLarge(usize),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io { path: path.to_owned(), source }
}

fn corrupt(path: &Path, lsn: Option<u64>, problem: impl Into<String>) -> JournalError {
    JournalError::Corrupt { path: path.to_owned(), lsn, problem: problem.into() }
}

/// Settings of a journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalConfig {
    /// Bytes of a segment file (rounded up to a page).
    pub segment_bytes: usize,
    /// How often the flusher makes records durable; zero: every grant waits for it.
    pub fsync_interval: Duration,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self { segment_bytes: 64 << 20, fsync_interval: Duration::from_millis(100) }
    }
}

fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.journal")
}

/// One segment file, mapped.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    first_lsn: u64,
    map: MmapRaw,
    /// Its published records: `count << 32 | end offset`, stored by the appender with
    /// Release after each record (one word, so that a reader sees an offset and the
    /// number of records before it that agree).
    written: AtomicU64,
    /// The appender moved to the next segment: `written` is final.
    sealed: AtomicBool,
}

fn pack(count: u64, offset: usize) -> u64 {
    (count << 32) | offset as u64
}

fn unpack(w: u64) -> (u64, usize) {
    (w >> 32, (w & 0xffff_ffff) as usize)
}

impl Segment {
    fn len(&self) -> usize {
        self.map.len()
    }

    /// The number of published records and where they end.
    fn published(&self) -> (u64, usize) {
        unpack(self.written.load(Ordering::Acquire))
    }

    /// The bytes `range` of the mapping.
    ///
    /// # Safety
    /// The bytes must be published (below `written`, or the header) and not written
    /// again while the slice lives.
    unsafe fn bytes(&self, from: usize, to: usize) -> &[u8] {
        assert!(from <= to && to <= self.len());
        // SAFETY: in bounds (checked above); the caller guarantees nobody writes them.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(from), to - from) }
    }

    fn sync(&self, from: usize, to: usize) -> io::Result<()> {
        if to > from { self.map.flush_range(from, to - from) } else { Ok(()) }
    }

    fn chain_value(&self) -> Hash {
        // SAFETY: the header is written before the segment is shared, and its chain value
        // only by the flusher (the caller) afterwards.
        let h = unsafe { self.bytes(16, 48) };
        h.try_into().unwrap()
    }

    /// Writes the chain value into the header (with the header's CRC).
    fn set_chain_value(&self, chain: &Hash) {
        let mut header = [0u8; 48];
        // SAFETY: header bytes; only the flusher writes them once the segment is shared.
        header.copy_from_slice(unsafe { self.bytes(0, 48) });
        header[16..48].copy_from_slice(chain);
        let crc = crc32fast::hash(&header);
        // SAFETY: in bounds; nobody else writes these bytes (see above); no reference to
        // them lives.
        unsafe {
            let p = self.map.as_mut_ptr();
            std::ptr::copy_nonoverlapping(chain.as_ptr(), p.add(16), 32);
            std::ptr::copy_nonoverlapping(crc.to_le_bytes().as_ptr(), p.add(48), 4);
        }
    }
}

fn header_bytes(first_lsn: u64, chain: &Hash) -> [u8; SEGMENT_HEADER] {
    let mut h = [0u8; SEGMENT_HEADER];
    h[0..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&first_lsn.to_le_bytes());
    h[16..48].copy_from_slice(chain);
    let crc = crc32fast::hash(&h[0..48]);
    h[48..52].copy_from_slice(&crc.to_le_bytes());
    h
}

fn record_crc(lsn: u64, payload: &[u8]) -> u32 {
    let mut c = crc32fast::Hasher::new();
    c.update(&lsn.to_le_bytes());
    c.update(payload);
    c.finalize()
}

const fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// Maps a segment file (made and preallocated by the caller).
fn map_segment(path: &Path, file: &File, populate: bool) -> Result<MmapRaw, JournalError> {
    let mut options = MmapOptions::new();
    if populate {
        options.populate();
    }
    options.map_raw(file).map_err(io_err(path))
}

/// Makes a preallocated, zeroed file of `bytes`.
fn preallocate(path: &Path, bytes: usize) -> Result<File, JournalError> {
    let file = OpenOptions::new().read(true).write(true).create_new(true).open(path).map_err(io_err(path))?;
    let made = rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, bytes as u64);
    if let Err(e) = made {
        let _ = std::fs::remove_file(path);
        return Err(JournalError::Io { path: path.to_owned(), source: e.into() });
    }
    Ok(file)
}

/// The last flushed point, as the checkpoint file keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Segment (its first LSN).
    pub segment: u64,
    /// Offset in it: the end of the last record flushed.
    pub offset: u64,
    /// Number of the next record.
    pub next_lsn: u64,
    /// The segment's hash up to `offset`.
    pub hash: Hash,
    /// Written in turn: the newer slot has the larger count.
    count: u64,
}

impl Checkpoint {
    fn encode(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0..8].copy_from_slice(&self.segment.to_le_bytes());
        b[8..16].copy_from_slice(&self.offset.to_le_bytes());
        b[16..24].copy_from_slice(&self.next_lsn.to_le_bytes());
        b[24..56].copy_from_slice(&self.hash);
        b[56..60].copy_from_slice(&(self.count as u32).to_le_bytes());
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let crc = u32::from_le_bytes(b[60..64].try_into().unwrap());
        if crc != crc32fast::hash(&b[0..60]) || b.iter().all(|&x| x == 0) {
            return None;
        }
        let u = |r: std::ops::Range<usize>| u64::from_le_bytes(b[r].try_into().unwrap());
        Some(Self {
            segment: u(0..8),
            offset: u(8..16),
            next_lsn: u(16..24),
            hash: b[24..56].try_into().unwrap(),
            count: u64::from(u32::from_le_bytes(b[56..60].try_into().unwrap())),
        })
    }
}

/// Reads the newer valid slot of the checkpoint file.
pub fn read_checkpoint(dir: &Path) -> Result<Checkpoint, JournalError> {
    let path = dir.join("checkpoint");
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    if bytes.len() != 2 * CHECKPOINT_SLOT as usize {
        return Err(corrupt(&path, None, format!("{} bytes, expected 128", bytes.len())));
    }
    let slots = [Checkpoint::decode(&bytes[..64]), Checkpoint::decode(&bytes[64..])];
    // The counter is 32 bits on disk: compare with wrap-around.
    match slots {
        [Some(a), Some(b)] => Ok(if (b.count as u32).wrapping_sub(a.count as u32) < 1 << 31 { b } else { a }),
        [Some(a), None] | [None, Some(a)] => Ok(a),
        [None, None] => Err(corrupt(&path, None, "no valid checkpoint slot")),
    }
}

/// What the flusher and the appenders share.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    config: JournalConfig,
    /// Segments not yet wholly flushed and hashed (the active one last).
    segments: Mutex<Vec<Arc<Segment>>>,
    /// Group commit.
    sync: Mutex<SyncState>,
    synced: Condvar,
    /// Number of the next record (published).
    next_lsn: AtomicU64,
    /// Why the journal cannot be extended (no space for a segment); cleared by a roll
    /// that succeeds.
    roll_problem: Mutex<Option<String>>,
    /// Why the last flush failed; cleared by one that succeeds.
    flush_problem: Mutex<Option<String>>,
    /// Either is set.
    unhealthy: AtomicBool,
    /// The hash up to the last checkpoint, for status.
    head: Mutex<(u64, Hash)>,
    /// A prepared next segment (the flusher makes it ahead of the roll).
    spare: Mutex<Option<(PathBuf, File, MmapRaw)>>,
    stop: AtomicBool,
    wake: Condvar,
    wake_lock: Mutex<()>,
    checkpoint_file: File,
    checkpoint_count: AtomicU32,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Every record below this is flushed.
    durable_lsn: u64,
    /// Per segment (first LSN): flushed up to this offset.
    flushed: Vec<(u64, usize)>,
    /// A thread is flushing.
    flushing: bool,
    /// The last flush failed.
    failed: Option<String>,
}

impl Shared {
    fn set_problem(&self, flush: bool, problem: Option<String>) {
        let (mut roll, mut flushing) = (self.roll_problem.lock(), self.flush_problem.lock());
        let p = if flush { &mut *flushing } else { &mut *roll };
        if p.as_ref() != problem.as_ref() {
            match &problem {
                Some(why) => {
                    tracing::error!(problem = %why, "the journal cannot be written: flows are denied until it can")
                }
                None => tracing::info!("the journal can be written again"),
            }
        }
        *p = problem;
        self.unhealthy.store(roll.is_some() || flushing.is_some(), Ordering::Release);
    }

    fn problem(&self) -> Option<String> {
        if !self.unhealthy.load(Ordering::Acquire) {
            return None;
        }
        self.flush_problem.lock().clone().or_else(|| self.roll_problem.lock().clone())
    }

    /// Flushes every published record of every segment not yet flushed: returns the LSN
    /// below which everything is durable.
    fn flush_published(&self) -> Result<u64, String> {
        let target = self.next_lsn.load(Ordering::Acquire);
        let segments: Vec<Arc<Segment>> = self.segments.lock().clone();
        let flushed: Vec<(u64, usize)> = self.sync.lock().flushed.clone();
        let mut done = Vec::with_capacity(segments.len());
        for s in &segments {
            let (_, end) = s.published();
            let from = flushed.iter().find(|(f, _)| *f == s.first_lsn).map_or(0, |(_, o)| *o);
            s.sync(from, end).map_err(|e| format!("flushing {}: {e}", s.path.display()))?;
            done.push((s.first_lsn, end));
        }
        let mut st = self.sync.lock();
        st.flushed = done;
        Ok(target)
    }
}

/// A change encoded into the active segment, not yet published ([`Journal::commit`]).
#[derive(Debug)]
#[must_use]
pub struct Staged {
    len: usize,
}

/// The appending side of the journal (owned by the state, under its lock).
#[derive(Debug)]
pub struct Journal {
    shared: Arc<Shared>,
    active: Option<Arc<Segment>>,
    /// Offset of the next record in the active segment.
    pos: usize,
    /// Records in the active segment.
    count: u64,
    next_lsn: u64,
    /// While no segment can be made: when to try again.
    retry_at: Option<Instant>,
    /// The encoding of the change being staged.
    scratch: Vec<u8>,
    flusher: Option<std::thread::JoinHandle<()>>,
}

/// What [`Journal::open`] found.
#[derive(Debug)]
pub struct Opened {
    /// The journal, positioned after the last record.
    pub journal: Journal,
    /// Every change on record, in order.
    pub changes: Vec<Change>,
    /// A torn tail after the last checkpoint that was cut: where, and why.
    pub cut: Option<String>,
}

impl Journal {
    /// Opens (or makes) the journal in `dir`, reads every record back, checks it against
    /// the checkpoint, and starts the flusher.
    pub fn open(dir: &Path, config: JournalConfig) -> Result<Opened, JournalError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let segment_bytes = config.segment_bytes.clamp(1 << 16, 1 << 31).next_multiple_of(4096);
        let config = JournalConfig { segment_bytes, ..config };
        // A spare left by an earlier run is not part of the journal.
        let _ = std::fs::remove_file(dir.join("spare"));
        let scan = scan(dir, true)?;
        let checkpoint_path = dir.join("checkpoint");
        let checkpoint_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&checkpoint_path)
            .map_err(io_err(&checkpoint_path))?;
        let mut count = scan.checkpoint.map_or(0, |c| c.count as u32);
        if scan.last.is_none() {
            // A new journal: its first checkpoint (the empty first segment) is durable
            // before the segment exists, so that no crash leaves a segment without one.
            let mut h = blake3::Hasher::new();
            h.update(&[0; 32]);
            let c = Checkpoint {
                segment: scan.next_lsn,
                offset: SEGMENT_HEADER as u64,
                next_lsn: scan.next_lsn,
                hash: *h.finalize().as_bytes(),
                count: 1,
            };
            let mut both = [0u8; 128];
            both[64..].copy_from_slice(&c.encode());
            checkpoint_file.write_all_at(&both, 0).map_err(io_err(&checkpoint_path))?;
            checkpoint_file.sync_all().map_err(io_err(&checkpoint_path))?;
            count = 1;
        }
        for (path, chain) in &scan.unchained {
            // Segments a crash left before the flusher gave them their chain value.
            let file = OpenOptions::new().read(true).write(true).open(path).map_err(io_err(path))?;
            let mut header = [0u8; 48];
            file.read_exact_at(&mut header, 0).map_err(io_err(path))?;
            header[16..48].copy_from_slice(chain);
            let crc = crc32fast::hash(&header);
            file.write_all_at(&header[16..48], 16).map_err(io_err(path))?;
            file.write_all_at(&crc.to_le_bytes(), 48).map_err(io_err(path))?;
            file.sync_data().map_err(io_err(path))?;
        }
        let mut segments = Vec::new();
        let (active, pos, in_active) = match &scan.last {
            Some(last) => {
                let file = OpenOptions::new().read(true).write(true).open(&last.path).map_err(io_err(&last.path))?;
                let map = map_segment(&last.path, &file, true)?;
                let seg = Arc::new(Segment {
                    path: last.path.clone(),
                    first_lsn: last.first_lsn,
                    map,
                    written: AtomicU64::new(pack(last.records, last.end)),
                    sealed: AtomicBool::new(false),
                });
                // What followed the last good record (a torn tail) is zeroed, so that the
                // next record's header starts clean.
                let tail = seg.len() - last.end;
                // SAFETY: the mapping is this thread's alone until shared below; in bounds.
                unsafe { std::ptr::write_bytes(seg.map.as_mut_ptr().add(last.end), 0, tail) };
                segments.push(Arc::clone(&seg));
                (Some(seg), last.end, last.records)
            }
            None => (None, 0, 0),
        };
        let head = scan.checkpoint.map_or((scan.next_lsn, [0; 32]), |c| (c.next_lsn, c.hash));
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            config,
            segments: Mutex::new(segments),
            sync: Mutex::new(SyncState { durable_lsn: 0, ..SyncState::default() }),
            synced: Condvar::new(),
            next_lsn: AtomicU64::new(scan.next_lsn),
            roll_problem: Mutex::new(None),
            flush_problem: Mutex::new(None),
            unhealthy: AtomicBool::new(false),
            head: Mutex::new(head),
            spare: Mutex::new(None),
            stop: AtomicBool::new(false),
            wake: Condvar::new(),
            wake_lock: Mutex::new(()),
            checkpoint_file,
            checkpoint_count: AtomicU32::new(count),
        });
        let mut journal = Journal {
            shared: Arc::clone(&shared),
            active,
            pos,
            count: in_active,
            next_lsn: scan.next_lsn,
            retry_at: None,
            scratch: Vec::with_capacity(256),
            flusher: None,
        };
        if journal.active.is_none() {
            journal.roll()?;
        }
        // What was found is the new starting point: hashed, flushed and checkpointed
        // before serving.
        let mut flusher = Flusher { shared: Arc::clone(&shared), hashing: scan.hasher_state, checkpointed: None };
        flusher.run_once().map_err(|e| corrupt(dir, None, e))?;
        journal.flusher = Some(
            std::thread::Builder::new().name("t2e-journal".into()).spawn(move || flusher.run()).map_err(io_err(dir))?,
        );
        Ok(Opened { journal, changes: scan.changes, cut: scan.cut })
    }

    /// Number of the next record.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Why the journal cannot be written, if it cannot.
    pub fn problem(&self) -> Option<String> {
        self.shared.problem()
    }

    /// The hash up to the last checkpoint, and the number of records it covers.
    pub fn head(&self) -> (u64, Hash) {
        *self.shared.head.lock()
    }

    /// Encodes `change` into the journal without publishing it: a crash before
    /// [`Journal::commit`] leaves no trace of it. Fails (and changes nothing) while the
    /// journal cannot be written.
    pub fn stage(&mut self, change: &Change) -> Result<Staged, String> {
        if self.shared.unhealthy.load(Ordering::Acquire)
            && let Some(why) = self.shared.flush_problem.lock().clone()
        {
            return Err(why);
        }
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let buf = postcard::to_extend(change, buf).map_err(|e| format!("cannot encode a change: {e}"))?;
        let len = buf.len();
        if len > MAX_PAYLOAD {
            self.scratch = buf;
            return Err(JournalError::TooLarge(len).to_string());
        }
        loop {
            if let Some(seg) = &self.active
                && self.pos + RECORD_HEADER + len <= seg.len()
            {
                // SAFETY: the bytes after `pos` are unpublished: only this appender (under
                // the state lock) touches them; the flusher reads below `written` only. In
                // bounds (checked above).
                unsafe {
                    std::ptr::copy_nonoverlapping(buf.as_ptr(), seg.map.as_mut_ptr().add(self.pos + RECORD_HEADER), len)
                };
                self.scratch = buf;
                return Ok(Staged { len });
            }
            if let Some(at) = self.retry_at
                && Instant::now() < at
            {
                self.scratch = buf;
                return Err(self.problem().unwrap_or_else(|| "the journal cannot be extended".into()));
            }
            if let Err(e) = self.roll() {
                self.retry_at = Some(Instant::now() + RETRY);
                let why = format!("cannot extend the journal: {e}");
                self.shared.set_problem(false, Some(why.clone()));
                self.scratch = buf;
                return Err(why);
            }
            if self.retry_at.take().is_some() {
                self.shared.set_problem(false, None);
            }
        }
    }

    /// Publishes a staged change; returns its number.
    pub fn commit(&mut self, staged: Staged) -> u64 {
        let seg = self.active.as_ref().expect("staged without a segment");
        let lsn = self.next_lsn;
        let at = self.pos;
        // SAFETY: unpublished bytes of this appender (see `stage`); in bounds (the payload
        // was copied there); the length word is 8-aligned (records are).
        unsafe {
            let p = seg.map.as_mut_ptr().add(at);
            let payload = std::slice::from_raw_parts(p.add(RECORD_HEADER), staged.len);
            let crc = record_crc(lsn, payload);
            std::ptr::copy_nonoverlapping(crc.to_le_bytes().as_ptr(), p.add(4), 4);
            std::ptr::copy_nonoverlapping(lsn.to_le_bytes().as_ptr(), p.add(8), 8);
            // The length last: a record is there once its length is.
            (*(p as *const AtomicU32)).store(staged.len as u32, Ordering::Release);
        }
        self.pos = align8(at + RECORD_HEADER + staged.len);
        self.count += 1;
        self.next_lsn += 1;
        seg.written.store(pack(self.count, self.pos), Ordering::Release);
        self.shared.next_lsn.store(self.next_lsn, Ordering::Release);
        lsn
    }

    /// Forgets a staged change (the state refused it).
    pub fn discard(&mut self, staged: Staged) {
        if let Some(seg) = &self.active {
            // SAFETY: unpublished bytes of this appender (see `stage`), in bounds.
            unsafe { std::ptr::write_bytes(seg.map.as_mut_ptr().add(self.pos + RECORD_HEADER), 0, staged.len) };
        }
    }

    /// Seals the active segment and starts the next one.
    fn roll(&mut self) -> Result<(), JournalError> {
        let first_lsn = self.next_lsn;
        let path = self.shared.dir.join(segment_name(first_lsn));
        let prepared = self.shared.spare.lock().take();
        let map = match prepared {
            Some((spare, _file, map)) => {
                std::fs::rename(&spare, &path).map_err(io_err(&path))?;
                map
            }
            None => {
                let file = preallocate(&path, self.shared.config.segment_bytes)?;
                map_segment(&path, &file, true)?
            }
        };
        // The chain value is filled in by the flusher once the previous segment is hashed
        // (zero for the first segment).
        let header = header_bytes(first_lsn, &[0; 32]);
        // SAFETY: a new mapping of at least a page, not shared yet.
        unsafe { std::ptr::copy_nonoverlapping(header.as_ptr(), map.as_mut_ptr(), SEGMENT_HEADER) };
        let seg = Arc::new(Segment {
            path,
            first_lsn,
            map,
            written: AtomicU64::new(pack(0, SEGMENT_HEADER)),
            sealed: AtomicBool::new(false),
        });
        {
            let mut segments = self.shared.segments.lock();
            if let Some(old) = &self.active {
                old.sealed.store(true, Ordering::Release);
            }
            segments.push(Arc::clone(&seg));
        }
        self.active = Some(seg);
        self.pos = SEGMENT_HEADER;
        self.count = 0;
        // A new directory entry: durable with the directory.
        if let Ok(d) = File::open(&self.shared.dir) {
            let _ = d.sync_all();
        }
        self.shared.wake.notify_one();
        Ok(())
    }

    /// What the grant paths wait with, outside the state lock.
    pub fn syncer(&self) -> Syncer {
        Syncer(Arc::clone(&self.shared))
    }

    /// Whether grants wait for a flush before they are answered.
    pub fn synchronous(&self) -> bool {
        self.shared.config.fsync_interval.is_zero()
    }
}

/// Waits for durability outside the state lock.
#[derive(Debug, Clone)]
pub struct Syncer(Arc<Shared>);

impl Syncer {
    /// Waits until every record below `upto` is on stable storage (group commit: the
    /// first waiter flushes for all).
    pub fn sync_through(&self, upto: u64) -> Result<(), String> {
        sync_through(&self.0, upto)
    }
}

fn sync_through(shared: &Shared, upto: u64) -> Result<(), String> {
    let mut st = shared.sync.lock();
    loop {
        if st.durable_lsn >= upto {
            return Ok(());
        }
        if st.flushing {
            shared.synced.wait(&mut st);
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            continue;
        }
        st.flushing = true;
        drop(st);
        let result = shared.flush_published();
        st = shared.sync.lock();
        st.flushing = false;
        shared.synced.notify_all();
        match result {
            Ok(durable) => {
                st.durable_lsn = st.durable_lsn.max(durable);
                let was = st.failed.take();
                drop(st);
                if was.is_some() {
                    shared.set_problem(true, None);
                }
                st = shared.sync.lock();
                if st.durable_lsn < upto && durable < upto {
                    // Published after the flush started but asked for: impossible (the
                    // caller's record was published before it asked).
                    return Err(format!("record {} is not in the journal", upto.saturating_sub(1)));
                }
            }
            Err(e) => {
                st.failed = Some(e.clone());
                drop(st);
                shared.set_problem(true, Some(e.clone()));
                return Err(e);
            }
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        {
            let _g = self.shared.wake_lock.lock();
            self.shared.wake.notify_all();
        }
        if let Some(t) = self.flusher.take() {
            let _ = t.join();
        }
    }
}

/// The flusher: hashes what was appended, flushes it, writes the checkpoint, prepares
/// the next segment.
struct Flusher {
    shared: Arc<Shared>,
    /// The segment being hashed (its first LSN), its hasher, and how far.
    hashing: Option<(u64, blake3::Hasher, usize)>,
    /// The last point checkpointed (segment, offset).
    checkpointed: Option<(u64, usize)>,
}

impl Flusher {
    fn run(mut self) {
        let interval = self.shared.config.fsync_interval;
        // In synchronous mode grants flush for themselves; hashing and checkpoints go on.
        let tick = if interval.is_zero() { Duration::from_millis(100) } else { interval };
        loop {
            {
                let mut g = self.shared.wake_lock.lock();
                if !self.shared.stop.load(Ordering::Acquire) {
                    self.shared.wake.wait_for(&mut g, tick);
                }
            }
            let stopping = self.shared.stop.load(Ordering::Acquire);
            if let Err(e) = self.run_once() {
                self.shared.set_problem(true, Some(e));
            }
            if stopping {
                return;
            }
        }
    }

    /// One round: hash, flush, checkpoint, spare.
    fn run_once(&mut self) -> Result<(), String> {
        let segments: Vec<Arc<Segment>> = self.shared.segments.lock().clone();
        let mut finished: Vec<u64> = Vec::new();
        // The point hashed: segment, offset, records up to it, hash.
        let mut point = None;
        for (i, s) in segments.iter().enumerate() {
            if self.hashing.as_ref().is_some_and(|(seg, _, _)| *seg > s.first_lsn) {
                continue;
            }
            if self.hashing.as_ref().map(|(seg, _, _)| *seg) != Some(s.first_lsn) {
                let mut h = blake3::Hasher::new();
                h.update(&s.chain_value());
                self.hashing = Some((s.first_lsn, h, SEGMENT_HEADER));
            }
            let Some((seg, hasher, from)) = self.hashing.as_mut() else { continue };
            // Sealed first: then the published end read next is final.
            let sealed = s.sealed.load(Ordering::Acquire);
            let (count, end) = s.published();
            // SAFETY: below the published end: never written again.
            hasher.update(unsafe { s.bytes(*from, end) });
            *from = end;
            let hash: Hash = *hasher.finalize().as_bytes();
            point = Some((*seg, end, s.first_lsn + count, hash));
            if sealed && let Some(next) = segments.get(i + 1) {
                next.set_chain_value(&hash);
                next.sync(0, SEGMENT_HEADER).map_err(|e| format!("flushing {}: {e}", next.path.display()))?;
                finished.push(*seg);
                self.hashing = None;
            }
        }
        let upto = self.shared.next_lsn.load(Ordering::Acquire);
        sync_through(&self.shared, upto)?;
        if let Some((segment, offset, next_lsn, hash)) = point
            && self.checkpointed != Some((segment, offset))
        {
            // The point hashed was published before `upto` was read: it is durable now.
            let count = self.shared.checkpoint_count.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
            let c = Checkpoint { segment, offset: offset as u64, next_lsn, hash, count: u64::from(count) };
            let slot = u64::from(count % 2) * CHECKPOINT_SLOT;
            let path = self.shared.dir.join("checkpoint");
            let file = &self.shared.checkpoint_file;
            file.write_all_at(&c.encode(), slot).map_err(|e| format!("{}: {e}", path.display()))?;
            file.sync_data().map_err(|e| format!("{}: {e}", path.display()))?;
            *self.shared.head.lock() = (c.next_lsn, c.hash);
            self.checkpointed = Some((segment, offset));
        }
        if !finished.is_empty() {
            self.shared.segments.lock().retain(|s| !finished.contains(&s.first_lsn));
            self.shared.sync.lock().flushed.retain(|(f, _)| !finished.contains(f));
        }
        // Prepare the next segment ahead of the roll.
        let mut spare = self.shared.spare.lock();
        if spare.is_none() {
            let path = self.shared.dir.join("spare");
            let _ = std::fs::remove_file(&path);
            match preallocate(&path, self.shared.config.segment_bytes)
                .and_then(|f| map_segment(&path, &f, true).map(|m| (f, m)))
            {
                Ok((f, m)) => *spare = Some((path, f, m)),
                // Not an error yet: the roll tries again, and fails visibly.
                Err(e) => tracing::debug!(error = %e, "cannot prepare the next journal segment"),
            }
        }
        Ok(())
    }
}

/// The last segment as found: where its records end.
#[derive(Debug)]
struct LastSegment {
    path: PathBuf,
    first_lsn: u64,
    end: usize,
    records: u64,
}

/// Everything read back from a journal directory.
struct Scan {
    changes: Vec<Change>,
    next_lsn: u64,
    last: Option<LastSegment>,
    checkpoint: Option<Checkpoint>,
    /// The hasher of the last segment, after its last record.
    hasher_state: Option<(u64, blake3::Hasher, usize)>,
    cut: Option<String>,
    /// Segments whose header lacks its chain value (a crash before the flusher gave it),
    /// with the value.
    unchained: Vec<(PathBuf, Hash)>,
    records: u64,
    head: Hash,
}

/// The segments of `dir`, by first LSN.
fn segments_of(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".journal") {
            let first: u64 = stem.parse().map_err(|_| corrupt(&entry.path(), None, "not a journal segment name"))?;
            out.push((first, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every record of `dir` back (decoding them if `decode`) and checks it (see the
/// module docs): a torn tail after the checkpoint is reported in `cut`, anything else
/// wrong is an error.
fn scan(dir: &Path, decode: bool) -> Result<Scan, JournalError> {
    let segments = segments_of(dir)?;
    let checkpoint = if segments.is_empty() { None } else { Some(read_checkpoint(dir)?) };
    let mut changes = Vec::new();
    let mut next_lsn = segments.first().map_or(0, |(f, _)| *f);
    let mut chain: Option<Hash> = None;
    let mut last = None;
    let mut hasher_state = None;
    let mut cut = None;
    let mut records = 0u64;
    let mut head = [0u8; 32];
    let mut unchained = Vec::new();
    let mut past_checkpoint = checkpoint.is_none();
    for (i, (first, path)) in segments.iter().enumerate() {
        let is_last = i + 1 == segments.len();
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        if bytes.len() < SEGMENT_HEADER {
            return Err(corrupt(path, Some(*first), format!("segment truncated to {} bytes", bytes.len())));
        }
        let h = &bytes[..SEGMENT_HEADER];
        let crc = u32::from_le_bytes(h[48..52].try_into().unwrap());
        let zero_chain = h[16..48].iter().all(|&b| b == 0);
        let stored_chain: Hash = h[16..48].try_into().unwrap();
        if &h[0..8] != MAGIC {
            return Err(corrupt(path, Some(*first), "not a trace2e journal segment (bad magic)"));
        }
        let header_first = u64::from_le_bytes(h[8..16].try_into().unwrap());
        if header_first != *first {
            return Err(corrupt(path, Some(*first), format!("header says it starts at record {header_first}")));
        }
        if *first != next_lsn {
            return Err(corrupt(
                path,
                Some(next_lsn),
                format!("records {next_lsn} to {} are missing (segment deleted?)", first.saturating_sub(1)),
            ));
        }
        let crc_ok = crc == crc32fast::hash(&h[..48]);
        // The chain value: zero in the first segment; in a later one, the previous
        // segment's hash — unless the flusher had not filled it in yet (a crash right after
        // a roll), which is only possible past the checkpoint.
        let expected_chain = chain.unwrap_or([0; 32]);
        let header_ok = crc_ok && (stored_chain == expected_chain || (zero_chain && i > 0));
        if !header_ok {
            return Err(corrupt(path, Some(*first), "segment header altered (chain value or CRC)"));
        }
        if zero_chain && i > 0 {
            if checkpoint.is_some_and(|c| c.segment >= *first) {
                return Err(corrupt(path, Some(*first), "segment header lost its chain value"));
            }
            unchained.push((path.clone(), expected_chain));
        }
        let in_segment = records;
        let mut hasher = blake3::Hasher::new();
        hasher.update(&expected_chain);
        let mut pos = SEGMENT_HEADER;
        let mut hashed_to = SEGMENT_HEADER;
        let checkpoint_here = checkpoint.filter(|c| c.segment == *first);
        loop {
            if let Some(c) = checkpoint_here
                && pos == c.offset as usize
            {
                hasher.update(&bytes[hashed_to..pos]);
                hashed_to = pos;
                if *hasher.finalize().as_bytes() != c.hash || next_lsn != c.next_lsn {
                    return Err(corrupt(
                        path,
                        Some(next_lsn),
                        "records before the last checkpoint were altered (hash mismatch)",
                    ));
                }
                past_checkpoint = true;
            }
            let bad = |problem: String| -> Result<Option<String>, JournalError> {
                if past_checkpoint && is_last { Ok(Some(problem)) } else { Err(corrupt(path, Some(next_lsn), problem)) }
            };
            if pos + RECORD_HEADER > bytes.len() {
                break;
            }
            let r = &bytes[pos..pos + RECORD_HEADER];
            let len = u32::from_le_bytes(r[0..4].try_into().unwrap()) as usize;
            if len == 0 {
                // The end of this segment's records: the rest must be zero.
                if let Some(nz) = bytes[pos..].iter().position(|&b| b != 0)
                    && let Some(why) = bad(format!("garbage after the last record (offset {})", pos + nz))?
                {
                    cut = Some(format!("{}: {why}", path.display()));
                }
                break;
            }
            let crc = u32::from_le_bytes(r[4..8].try_into().unwrap());
            let lsn = u64::from_le_bytes(r[8..16].try_into().unwrap());
            let end = pos + RECORD_HEADER + len;
            if end > bytes.len() || len > MAX_PAYLOAD {
                match bad(format!("record {next_lsn} runs past the segment's end"))? {
                    Some(why) => {
                        cut = Some(format!("{}: {why}", path.display()));
                        break;
                    }
                    None => unreachable!(),
                }
            }
            let payload = &bytes[pos + RECORD_HEADER..end];
            if lsn != next_lsn {
                let problem = if lsn < next_lsn {
                    format!("record {lsn} appears again where {next_lsn} belongs (reordered)")
                } else {
                    format!("record {next_lsn} is missing (found {lsn} in its place)")
                };
                match bad(problem)? {
                    Some(why) => {
                        cut = Some(format!("{}: {why}", path.display()));
                        break;
                    }
                    None => unreachable!(),
                }
            }
            if crc != record_crc(lsn, payload) {
                match bad(format!("record {lsn} altered (CRC mismatch)"))? {
                    Some(why) => {
                        cut = Some(format!("{}: {why}", path.display()));
                        break;
                    }
                    None => unreachable!(),
                }
            }
            if decode {
                let change: Change = postcard::from_bytes(payload)
                    .map_err(|e| corrupt(path, Some(lsn), format!("record {lsn} cannot be decoded: {e}")))?;
                changes.push(change);
            }
            records += 1;
            next_lsn += 1;
            pos = align8(end);
        }
        if !past_checkpoint && checkpoint_here.is_some() {
            return Err(corrupt(path, Some(next_lsn), "the journal ends before its last checkpoint (truncated)"));
        }
        hasher.update(&bytes[hashed_to..pos.min(bytes.len())]);
        head = *hasher.finalize().as_bytes();
        chain = Some(head);
        if is_last {
            last = Some(LastSegment {
                path: path.clone(),
                first_lsn: *first,
                end: pos.min(bytes.len()),
                records: records - in_segment,
            });
            hasher_state = Some((*first, hasher, pos.min(bytes.len())));
        }
    }
    if !past_checkpoint {
        let c = checkpoint.unwrap();
        return Err(corrupt(
            dir,
            Some(c.next_lsn),
            format!("the checkpoint names segment {} which is missing (deleted?)", segment_name(c.segment)),
        ));
    }
    Ok(Scan { changes, next_lsn, last, checkpoint, hasher_state, cut, unchained, records, head })
}

/// What [`verify`] found in an intact journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Records.
    pub records: u64,
    /// The number of the first one kept.
    pub first_lsn: u64,
    /// The hash of the whole journal (the head).
    pub head: Hash,
}

/// Checks the whole journal in `dir` (a running daemon's too): every record intact, in
/// order, none missing, the hash chain matching the checkpoint.
pub fn verify(dir: &Path) -> Result<Verified, JournalError> {
    let segments = segments_of(dir)?;
    let first_lsn = segments.first().map_or(0, |(f, _)| *f);
    let s = scan(dir, false)?;
    if let Some(cut) = s.cut {
        return Err(corrupt(dir, None, cut));
    }
    Ok(Verified { records: s.records, first_lsn, head: s.head })
}

/// Every change on record in `dir`, in order (checked as at start-up).
pub fn read_changes(dir: &Path) -> Result<Vec<Change>, JournalError> {
    Ok(scan(dir, true)?.changes)
}

/// Lower-case hex of a hash.
pub fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}
