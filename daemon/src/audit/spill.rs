//! The audit spill file: where full chunks of the audit trail go so that the daemon's
//! memory holds only a bounded window of it.
//!
//! One unlinked file per log (`O_TMPFILE`, mode 0600), written with `O_DIRECT` by a
//! background thread (`t2e-audit-spill`), one chunk at a time, in order: record `i` is
//! at byte `64 * i`. The file lives as long as the daemon (records name interned labels,
//! meaningful only to this daemon) and disappears with it, even after a crash.
//!
//! The records' rare fields ([`Rare`](super::stored::Rare): denials, names, peers)
//! go with their chunk into a second unlinked file, one postcard blob per chunk, whose
//! place the writer notes before it counts the chunk as written: a chunk leaves memory
//! whole.
//!
//! Why: the trail grows by two records per mediated I/O, and memory never touched
//! before costs page zeroing on every new page: a sizeable share of the daemon's CPU
//! under load, and of every read's overhead with the daemon on its own CPU (bench
//! `file_read_placement/shm/other-core`; numbers in docs/decisions.md). Once a chunk is on disk and
//! out of the window, its memory is reused for the next one, already faulted in.
//! `O_DIRECT` keeps the page cache from growing by the same amount instead.

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use rustix::fs::{Mode, OFlags};

use super::AuditError;
use super::chunk::{CHUNK, CHUNK_BYTES};
use super::log::ChunkRare;
use super::stored::{RECORD_BYTES, Stored};

/// The file system's unit of direct I/O (and this code's): 64 records.
const BLOCK: usize = 4096;
/// Records per block.
const PER_BLOCK: usize = BLOCK / RECORD_BYTES;
/// Blocks per chunk: a chunk is written in one `pwritev` (at most `IOV_MAX`, 1024).
const BLOCKS: usize = CHUNK_BYTES / BLOCK;
const _: () = assert!(CHUNK_BYTES.is_multiple_of(BLOCK) && BLOCKS <= 1024 && CHUNK == BLOCKS * PER_BLOCK);

/// One block of encoded records, aligned as direct I/O needs.
#[repr(C, align(4096))]
struct Block([u8; BLOCK]);

impl Block {
    fn zeroed() -> Self {
        Self([0; BLOCK])
    }
}

/// A chunk to write: its index in the log (its place in the file), its records and
/// their rare fields.
type Job = (usize, Arc<Vec<Stored>>, Arc<ChunkRare>);

/// The spill file of one log and the thread that writes it.
#[derive(Debug)]
pub(super) struct Spill {
    shared: Arc<Shared>,
    jobs: mpsc::Sender<Job>,
}

#[derive(Debug)]
struct Shared {
    file: File,
    /// The rare fields, chunk after chunk (buffered I/O: blobs of any size).
    rare: File,
    /// Where chunk `k`'s rare fields are in `rare`: (offset, length), for `k < durable`.
    rare_at: parking_lot::Mutex<Vec<(u64, u32)>>,
    /// Chunks `0..durable` are written; only the writer thread stores it.
    durable: AtomicUsize,
    /// The directory, for messages.
    dir: PathBuf,
}

/// Checks that a spill file can be made in `dir` (at start-up, for a clear error).
pub fn check_dir(dir: &Path) -> io::Result<()> {
    open(dir, true).map(drop)
}

/// An unlinked read-write file in `dir`: `O_TMPFILE` with `O_DIRECT` (if `direct`) where
/// the file system has both; without `O_DIRECT` where it refuses it; a named file
/// unlinked at once where `O_TMPFILE` is missing.
fn open(dir: &Path, direct: bool) -> io::Result<File> {
    let base = OFlags::RDWR | OFlags::CLOEXEC;
    let mode = Mode::RUSR | Mode::WUSR;
    let modes: &[OFlags] = if direct { &[OFlags::DIRECT, OFlags::empty()] } else { &[OFlags::empty()] };
    for &direct in modes {
        match rustix::fs::open(dir, base | OFlags::TMPFILE | direct, mode) {
            Ok(fd) => return Ok(File::from(fd)),
            Err(rustix::io::Errno::INVAL) if !direct.is_empty() => continue,
            Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR) => break,
            Err(e) => return Err(e.into()),
        }
    }
    static NAMED: AtomicUsize = AtomicUsize::new(0);
    for &direct in modes {
        let n = NAMED.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".trace2ed-audit-{}-{n}.spill", std::process::id()));
        match rustix::fs::open(&path, base | OFlags::CREATE | OFlags::EXCL | direct, mode) {
            Ok(fd) => {
                std::fs::remove_file(&path)?;
                return Ok(File::from(fd));
            }
            Err(rustix::io::Errno::INVAL) if !direct.is_empty() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

impl Spill {
    /// Opens a spill file in `dir` and starts its writer.
    pub(super) fn start(dir: &Path) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            file: open(dir, true)?,
            rare: open(dir, false)?,
            rare_at: parking_lot::Mutex::new(Vec::new()),
            durable: AtomicUsize::new(0),
            dir: dir.into(),
        });
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new().name("t2e-audit-spill".into()).spawn({
            let shared = Arc::clone(&shared);
            move || write_all(&shared, &queue)
        })?;
        Ok(Self { shared, jobs })
    }

    /// Queues full chunk `index` (chunks are queued in order, each once).
    pub(super) fn queue(&self, index: usize, chunk: &Arc<Vec<Stored>>, rare: &Arc<ChunkRare>) {
        // A send fails only once the writer stopped on an error it logged: the chunk
        // then stays in memory, as every later one does.
        let _ = self.jobs.send((index, Arc::clone(chunk), Arc::clone(rare)));
    }

    /// Chunks written so far: `0..durable()`. The writer has released each of them.
    pub(super) fn durable(&self) -> usize {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// A handle that reads the written chunks, usable without the log.
    pub(super) fn reader(&self) -> Reader {
        Reader(Arc::clone(&self.shared))
    }
}

/// Reads a spill file's written chunks.
#[derive(Debug)]
pub(super) struct Reader(Arc<Shared>);

impl Reader {
    /// The rare fields of written chunk `chunk`.
    pub(super) fn rare(&self, chunk: usize) -> Result<ChunkRare, AuditError> {
        let shared = &self.0;
        let Some(&(offset, len)) = shared.rare_at.lock().get(chunk) else {
            return Err(AuditError::Corrupt { seq: super::AuditSeq((chunk * CHUNK) as u64 + 1) });
        };
        let mut blob = vec![0u8; len as usize];
        shared
            .rare
            .read_exact_at(&mut blob, offset)
            .map_err(|e| AuditError::Read { dir: shared.dir.clone(), source: e })?;
        postcard::from_bytes(&blob)
            .map_err(|_| AuditError::Corrupt { seq: super::AuditSeq((chunk * CHUNK) as u64 + 1) })
    }

    /// Visits the records of `start..end` (all written) newest first, until `visit`
    /// says it has enough.
    pub(super) fn visit_back(
        &self,
        start: usize,
        end: usize,
        mut visit: impl FnMut(usize, &Stored) -> bool,
    ) -> Result<(), AuditError> {
        let mut block = Block::zeroed();
        let mut i = end;
        while i > start {
            let first = (i - 1) / PER_BLOCK * PER_BLOCK;
            let offset = (first * RECORD_BYTES) as u64;
            self.0
                .file
                .read_exact_at(&mut block.0, offset)
                .map_err(|e| AuditError::Read { dir: self.0.dir.clone(), source: e })?;
            while i > start.max(first) {
                i -= 1;
                let at = (i - first) * RECORD_BYTES;
                let bytes: &[u8; RECORD_BYTES] = block.0[at..at + RECORD_BYTES].try_into().expect("one record");
                let stored = Stored::decode(bytes).ok_or(AuditError::Corrupt { seq: super::AuditSeq(i as u64 + 1) })?;
                if visit(i, &stored) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// The writer: encodes each queued chunk into one buffer (allocated once) and writes it
/// at its place. Stops at the first error, logged: later chunks stay in memory.
fn write_all(shared: &Shared, queue: &mpsc::Receiver<Job>) {
    let mut blocks: Vec<Block> = (0..BLOCKS).map(|_| Block::zeroed()).collect();
    let mut rare_end = 0u64;
    for (index, chunk, rare) in queue {
        debug_assert_eq!(index, shared.durable.load(Ordering::Relaxed));
        for (i, stored) in chunk.iter().enumerate() {
            let at = (i % PER_BLOCK) * RECORD_BYTES;
            let out: &mut [u8; RECORD_BYTES] =
                (&mut blocks[i / PER_BLOCK].0[at..at + RECORD_BYTES]).try_into().expect("one record");
            stored.encode(out);
        }
        let written = chunk.len();
        drop(chunk);
        if written != CHUNK {
            tracing::error!(index, written, "audit chunk queued before it was full; spilling stops");
            return;
        }
        let blob = match postcard::to_allocvec(&*rare) {
            Ok(blob) => blob,
            Err(e) => {
                tracing::error!(index, error = %e, "cannot encode an audit chunk's rare fields; spilling stops");
                return;
            }
        };
        drop(rare);
        let written = write_chunk(&shared.file, &blocks, (index * CHUNK_BYTES) as u64)
            .and_then(|()| shared.rare.write_all_at(&blob, rare_end));
        if let Err(e) = written {
            tracing::error!(
                dir = %shared.dir.display(),
                error = %e,
                "cannot write the audit spill file; the audit trail now stays in memory"
            );
            return;
        }
        shared.rare_at.lock().push((rare_end, blob.len() as u32));
        rare_end += blob.len() as u64;
        shared.durable.store(index + 1, Ordering::Release);
    }
}

/// Writes `blocks` at `offset`, resuming after short writes (from the start of the
/// block they stopped in, as direct I/O needs).
fn write_chunk(file: &File, blocks: &[Block], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < blocks.len() {
        let slices: Vec<IoSlice<'_>> = blocks[done..].iter().map(|b| IoSlice::new(&b.0)).collect();
        match rustix::io::pwritev(file.as_fd(), &slices, offset + (done * BLOCK) as u64) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n / BLOCK,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
