//! The memory the audit trail lives in: fixed-size chunks backed by huge pages where
//! the kernel offers them, prefaulted by a background thread (`t2e-audit-prep`) so that
//! no decision takes a page fault.

use std::sync::{Condvar, Mutex, Once, PoisonError};

use super::stored::Stored;

/// Bytes of one chunk's buffer: 4 MiB less room for the allocator's header and
/// alignment, so that the buffer is one 4 MiB anonymous mapping, which the kernel
/// places on a 2 MiB boundary. See [`new_chunk`].
pub(super) const CHUNK_BYTES: usize = (4 << 20) - 4096;

/// Entries per chunk of the log.
pub(super) const CHUNK: usize = CHUNK_BYTES / size_of::<Stored>();

/// An empty chunk with room for [`CHUNK`] entries, backed by huge pages where the
/// kernel offers them.
///
/// The log only grows, so every append past a page boundary is a page fault, taken by
/// the channel thread in the middle of a decision: one per 64 records with 4 KiB
/// pages. On a VM a 4 KiB fault costs longer than a client spins for its answer, so
/// some mediated reads fell back to a sleeping hand-off (a tail in the bench `io`); a
/// transparent huge page is one fault per 2 MiB, far less per 4 KiB of it (numbers in
/// docs/decisions.md). `MADV_HUGEPAGE` asks for them (with THP in
/// `madvise` mode, the common default); the allocator has already touched the first
/// page (its header), so that first 2 MiB is collapsed at once (`MADV_COLLAPSE`, Linux
/// 6.1+). Where either is refused, or the allocator did not place the buffer on a
/// 2 MiB boundary (glibc serves it from its heap once its mmap threshold has grown past
/// 4 MiB), the chunk keeps 4 KiB pages for some or all of it: slower, never wrong.
pub(super) fn new_chunk() -> Vec<Stored> {
    let chunk: Vec<Stored> = Vec::with_capacity(CHUNK);
    let begin = chunk.as_ptr() as usize;
    let start = begin & !(PAGE - 1);
    let len = begin + CHUNK * size_of::<Stored>() - start;
    advise(start, len, libc::MADV_HUGEPAGE);
    #[cfg(target_env = "gnu")]
    advise(start, HUGE_PAGE.min(len), libc::MADV_COLLAPSE);
    chunk
}

pub(super) const PAGE: usize = 4096;
#[cfg(target_env = "gnu")]
pub(super) const HUGE_PAGE: usize = 2 << 20;

/// The chunk prepared for the next log that fills its last one (at most one, for all
/// the logs of the process).
pub(super) static SPARE: Mutex<Option<Vec<Stored>>> = Mutex::new(None);
/// Signalled when the spare is taken.
pub(super) static SPARE_TAKEN: Condvar = Condvar::new();
/// Starts the thread that prepares spares.
pub(super) static PREPARER: Once = Once::new();

/// An empty chunk for a log whose last chunk is full: the one prepared in advance if
/// there is one, else a new one (whose pages then fault in as it fills).
///
/// Preparing a chunk (allocation, `MADV_COLLAPSE`, zeroing its huge pages by touching
/// every page) is done by a background thread, one chunk ahead: done by the channel
/// thread during appends, it showed in a busy daemon's profile (`perf record` of
/// `t2e-load`, docs/decisions.md) as the page zeroing of a huge page at a time in the
/// middle of a decision. Costs 4 MiB of memory held ahead.
pub(super) fn spare_chunk() -> Vec<Stored> {
    PREPARER.call_once(|| {
        if let Err(e) = std::thread::Builder::new().name("t2e-audit-prep".into()).spawn(prepare_spares) {
            tracing::warn!(error = %e, "cannot start the audit chunk preparer; chunks fault in as they fill");
        }
    });
    let spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner).take();
    SPARE_TAKEN.notify_one();
    spare.unwrap_or_else(new_chunk)
}

/// Keeps [`SPARE`] filled with a prefaulted chunk, for ever.
pub(super) fn prepare_spares() {
    loop {
        let mut spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner);
        while spare.is_some() {
            spare = SPARE_TAKEN.wait(spare).unwrap_or_else(PoisonError::into_inner);
        }
        drop(spare);
        let mut chunk = new_chunk();
        prefault(&mut chunk);
        let mut spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner);
        if spare.is_none() {
            *spare = Some(chunk);
        }
    }
}

/// Touches every page of `chunk`'s (empty) buffer, so that appends never fault.
pub(super) fn prefault(chunk: &mut Vec<Stored>) {
    debug_assert!(chunk.is_empty());
    let base = chunk.as_mut_ptr().cast::<u8>();
    for offset in (0..chunk.capacity() * size_of::<Stored>()).step_by(PAGE) {
        // SAFETY: `offset` is inside the buffer the Vec allocated for its capacity, which
        // is writable memory of this process that no element occupies yet (the Vec is
        // empty); a byte written there is overwritten by the record that lands on it.
        unsafe { base.add(offset).write_volatile(0) };
    }
}

/// madvise(2) with advice that changes how pages are backed, never their contents.
pub(super) fn advise(start: usize, len: usize, advice: libc::c_int) {
    // SAFETY: [start, start + len) is the chunk's buffer widened to whole pages, so it
    // is mapped memory of this process; the widened edges may hold the allocator's own
    // bytes or other allocations. Both advices used (MADV_HUGEPAGE, MADV_COLLAPSE) only
    // change how pages are backed and preserve every byte's contents; a range the kernel
    // refuses is an error, ignored.
    let _ = unsafe { libc::madvise(start as *mut libc::c_void, len, advice) };
}
