//! Mediated filesystem access: a drop-in for [`std::fs`].
//!
//! [`File`] and [`OpenOptions`] replace std's: opening enrolls the new descriptor with the
//! daemon as `file:///canonical/path`, every read and write is one flow the daemon must
//! grant, and dropping the file unenrolls it. [`read`], [`read_to_string`], [`write()`] and
//! [`copy`] go through [`File`]. The functions that move no data (metadata, directories,
//! renames, removal) are std's, re-exported so that `use trace2e_io::fs;` is enough.
//!
//! Generic consumers are mediated because [`File`] is its own type implementing
//! [`Read`], [`Write`] and [`Seek`]: `io::copy`, `BufReader`, `serde_json::from_reader`
//! all end up in [`File::read`]/[`File::write`]. Seeking, metadata and syncing are not
//! flows and are not mediated.
//!
//! Changing a file's content without moving data is a write flow of 0 bytes: truncation
//! at open (`File::create`, `OpenOptions::truncate`) and [`File::set_len`]. A file the
//! process may not write to is therefore never emptied; opening it with `truncate` fails
//! with the denial. Creating a file is not a flow.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::path::Path;

use trace2e_proto::Direction;

use crate::mediation::Enrollment;
use crate::transport::Target;

pub use std::fs::{
    DirBuilder, DirEntry, FileTimes, FileType, Metadata, Permissions, ReadDir, canonicalize, create_dir,
    create_dir_all, exists, hard_link, metadata, read_dir, read_link, remove_dir, remove_dir_all, remove_file, rename,
    set_permissions, symlink_metadata,
};

/// Replaces [`std::fs::File`]: an open file whose reads and writes are mediated.
///
/// Each `read`, `read_vectored`, `write`, `write_vectored` (and `read_at`/`write_at` of
/// [`FileExt`](std::os::unix::fs::FileExt)) is one flow: the daemon is asked first, the
/// std operation runs only if granted, and its outcome (bytes moved, or failure) is
/// reported. A refused flow fails with [`ErrorKind::PermissionDenied`](io::ErrorKind)
/// carrying a [`Denied`](crate::Denied); an unreachable daemon fails it with
/// [`ErrorKind::NotConnected`](io::ErrorKind) carrying a
/// [`DaemonUnavailable`](crate::DaemonUnavailable). `flush`, `seek`, metadata and sync
/// calls are not flows.
///
/// The escapes [`File::into_std`], [`IntoRawFd`] and `OwnedFd::from` hand out an
/// unmediated descriptor: they unenroll it and nothing done through it is traced.
/// [`AsFd`]/[`AsRawFd`] lend the descriptor: I/O done directly on it (`libc::read`,
/// `sendfile`, a std file built from a duplicate) is not mediated either.
pub struct File {
    // Declared first: it unenrolls the fd before `inner` closes it (see `Enrollment`).
    enrollment: Enrollment,
    inner: std::fs::File,
}

impl File {
    /// Replaces [`std::fs::File::open`]: opens read-only, then enrolls.
    pub fn open<P: AsRef<Path>>(path: P) -> io::Result<File> {
        OpenOptions::new().read(true).open(path)
    }

    /// Replaces [`std::fs::File::create`]: opens write-only, creating or truncating, then
    /// enrolls. Truncating a non-empty file is a write flow (see [`OpenOptions::truncate`]).
    pub fn create<P: AsRef<Path>>(path: P) -> io::Result<File> {
        OpenOptions::new().write(true).create(true).truncate(true).open(path)
    }

    /// Replaces [`std::fs::File::create_new`]: opens read-write, failing if the file
    /// exists, then enrolls.
    pub fn create_new<P: AsRef<Path>>(path: P) -> io::Result<File> {
        OpenOptions::new().read(true).write(true).create_new(true).open(path)
    }

    /// Replaces [`std::fs::File::options`].
    pub fn options() -> OpenOptions {
        OpenOptions::new()
    }

    /// Wraps a std file, enrolling it under the path `/proc/self/fd` gives for it.
    ///
    /// Fails (and closes `file`) if the daemon cannot be reached or the descriptor is not
    /// a path (a pipe, a socket).
    pub fn from_std(file: std::fs::File) -> io::Result<File> {
        let enrollment = Enrollment::file(file.as_fd())?;
        Ok(File { enrollment, inner: file })
    }

    /// Unwraps the std file. **An escape**: the descriptor is unenrolled and I/O through
    /// the returned file is not mediated nor traced.
    pub fn into_std(self) -> std::fs::File {
        let File { enrollment, inner } = self;
        drop(enrollment);
        inner
    }

    /// Replaces [`std::fs::File::try_clone`]: the duplicate descriptor is enrolled as the
    /// same file.
    pub fn try_clone(&self) -> io::Result<File> {
        let inner = self.inner.try_clone()?;
        let enrollment = self.enrollment.duplicate(inner.as_fd())?;
        Ok(File { enrollment, inner })
    }

    /// Replaces [`std::fs::File::metadata`] (not mediated: no data flows).
    pub fn metadata(&self) -> io::Result<Metadata> {
        self.inner.metadata()
    }

    /// Replaces [`std::fs::File::set_len`]: a write flow of 0 bytes, since it changes the
    /// content.
    pub fn set_len(&self, size: u64) -> io::Result<()> {
        self.enrollment.flow(Direction::Write, || self.inner.set_len(size).map(|()| 0)).map(drop)
    }

    /// Replaces [`std::fs::File::sync_all`] (not mediated).
    pub fn sync_all(&self) -> io::Result<()> {
        self.inner.sync_all()
    }

    /// Replaces [`std::fs::File::sync_data`] (not mediated).
    pub fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }

    /// Replaces [`std::fs::File::set_permissions`] (not mediated).
    pub fn set_permissions(&self, perm: Permissions) -> io::Result<()> {
        self.inner.set_permissions(perm)
    }

    /// Replaces [`std::fs::File::set_times`] (not mediated).
    pub fn set_times(&self, times: FileTimes) -> io::Result<()> {
        self.inner.set_times(times)
    }

    /// Replaces [`std::fs::File::set_modified`] (not mediated).
    pub fn set_modified(&self, time: std::time::SystemTime) -> io::Result<()> {
        self.inner.set_modified(time)
    }

    /// Bytes left to read, to size `read_to_end`'s buffer as std does.
    fn remaining_hint(&self) -> Option<usize> {
        let len = self.inner.metadata().ok()?.len();
        let pos = (&self.inner).stream_position().ok()?;
        usize::try_from(len.saturating_sub(pos)).ok()
    }
}

/// `read_to_end` for a reader whose every `read` is a flow: the buffer is sized to
/// `hint` up front (as std's `File` does) and each read fills all the spare capacity, so
/// that a whole file costs two flows (its data, then end of file) instead of the default
/// implementation's adaptive 8 KiB, 16 KiB, ... reads.
fn read_to_end_sized(mut reader: impl Read, buf: &mut Vec<u8>, hint: Option<usize>) -> io::Result<usize> {
    const PROBE: usize = 32;
    let start = buf.len();
    if let Some(hint) = hint {
        buf.try_reserve(hint).map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;
    }
    loop {
        if buf.len() == buf.capacity() {
            // Full: probe for end of file before growing (the usual case with a hint).
            let mut probe = [0u8; PROBE];
            match reader.read(&mut probe) {
                Ok(0) => return Ok(buf.len() - start),
                Ok(n) => buf.extend_from_slice(&probe[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let grow = buf.capacity().max(8 * 1024);
            buf.try_reserve(grow).map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;
            continue;
        }
        let len = buf.len();
        buf.resize(buf.capacity(), 0);
        let result = reader.read(&mut buf[len..]);
        match result {
            Ok(0) => {
                buf.truncate(len);
                return Ok(len - start);
            }
            Ok(n) => buf.truncate(len + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(len),
            Err(e) => {
                buf.truncate(len);
                return Err(e);
            }
        }
    }
}

impl Read for &File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let inner = &self.inner;
        self.enrollment.flow(Direction::Read, || (&*inner).read(buf))
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        let inner = &self.inner;
        self.enrollment.flow(Direction::Read, || (&*inner).read_vectored(bufs))
    }

    /// One flow per chunk read; the buffer is first sized to the file, as std does, so a
    /// whole file typically takes two flows (the data, then end of file).
    fn read_to_end(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let hint = self.remaining_hint();
        read_to_end_sized(self, buf, hint)
    }

    /// As `read_to_end`; `buf` is unchanged if the data is not UTF-8 or a read fails.
    fn read_to_string(&mut self, buf: &mut String) -> io::Result<usize> {
        let mut bytes = Vec::new();
        let hint = self.remaining_hint();
        read_to_end_sized(self, &mut bytes, hint)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "stream did not contain valid UTF-8"))?;
        buf.push_str(&text);
        Ok(text.len())
    }
}

impl Read for File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&*self).read_vectored(bufs)
    }

    fn read_to_end(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        (&*self).read_to_end(buf)
    }

    fn read_to_string(&mut self, buf: &mut String) -> io::Result<usize> {
        (&*self).read_to_string(buf)
    }
}

impl Write for &File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let inner = &self.inner;
        self.enrollment.flow(Direction::Write, || (&*inner).write(buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let inner = &self.inner;
        self.enrollment.flow(Direction::Write, || (&*inner).write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        (&self.inner).flush()
    }
}

impl Write for File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
    }
}

impl Seek for &File {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        (&self.inner).seek(pos)
    }
}

impl Seek for File {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        (&self.inner).seek(pos)
    }
}

impl std::os::unix::fs::FileExt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.enrollment.flow(Direction::Read, || self.inner.read_at(buf, offset))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.enrollment.flow(Direction::Write, || self.inner.write_at(buf, offset))
    }
}

impl AsFd for File {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl AsRawFd for File {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

/// **An escape**: the descriptor is unenrolled and no longer mediated.
impl IntoRawFd for File {
    fn into_raw_fd(self) -> RawFd {
        self.into_std().into_raw_fd()
    }
}

/// **An escape**: the descriptor is unenrolled and no longer mediated.
impl From<File> for OwnedFd {
    fn from(file: File) -> OwnedFd {
        file.into_std().into()
    }
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("File");
        d.field("fd", &self.inner.as_raw_fd());
        if let Target::File(path) = self.enrollment.target() {
            d.field("path", path);
        }
        d.finish_non_exhaustive()
    }
}

/// Replaces [`std::fs::OpenOptions`]: the same builder; [`OpenOptions::open`] returns an
/// enrolled [`File`]. Implements [`std::os::unix::fs::OpenOptionsExt`] (`mode`,
/// `custom_flags`).
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Everything but truncation, which [`OpenOptions::open`] does itself as a flow.
    std: std::fs::OpenOptions,
    write: bool,
    append: bool,
    truncate: bool,
    create_new: bool,
}

impl OpenOptions {
    /// Replaces [`std::fs::OpenOptions::new`].
    #[allow(clippy::new_without_default)] // std has no Default either
    pub fn new() -> Self {
        Self { std: std::fs::OpenOptions::new(), write: false, append: false, truncate: false, create_new: false }
    }

    /// Replaces [`std::fs::OpenOptions::read`].
    pub fn read(&mut self, read: bool) -> &mut Self {
        self.std.read(read);
        self
    }

    /// Replaces [`std::fs::OpenOptions::write`].
    pub fn write(&mut self, write: bool) -> &mut Self {
        self.write = write;
        self.std.write(write);
        self
    }

    /// Replaces [`std::fs::OpenOptions::append`].
    pub fn append(&mut self, append: bool) -> &mut Self {
        self.append = append;
        self.std.append(append);
        self
    }

    /// Replaces [`std::fs::OpenOptions::truncate`]. The file is opened without `O_TRUNC`,
    /// enrolled, then, if not empty, truncated under a write flow of 0 bytes: if that flow
    /// is denied the content is untouched and `open` fails with the denial.
    pub fn truncate(&mut self, truncate: bool) -> &mut Self {
        self.truncate = truncate;
        self
    }

    /// Replaces [`std::fs::OpenOptions::create`].
    pub fn create(&mut self, create: bool) -> &mut Self {
        self.std.create(create);
        self
    }

    /// Replaces [`std::fs::OpenOptions::create_new`].
    pub fn create_new(&mut self, create_new: bool) -> &mut Self {
        self.create_new = create_new;
        self.std.create_new(create_new);
        self
    }

    /// Replaces [`std::fs::OpenOptions::open`]: opens, then enrolls the descriptor as the
    /// file's canonical path. If the daemon cannot be reached the file is closed and the
    /// open fails with [`DaemonUnavailable`](crate::DaemonUnavailable).
    pub fn open<P: AsRef<Path>>(&self, path: P) -> io::Result<File> {
        // std rejects these combinations; it cannot see `truncate`, so check them here.
        if self.truncate && ((!self.write && !self.append) || (self.append && !self.create_new)) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let file = File::from_std(self.std.open(path)?)?;
        if self.truncate && file.inner.metadata()?.len() > 0 {
            file.set_len(0)?;
        }
        Ok(file)
    }
}

/// `custom_flags` are passed to `open(2)` as std does: `O_TRUNC` given there truncates at
/// open, unmediated (use [`OpenOptions::truncate`]).
impl std::os::unix::fs::OpenOptionsExt for OpenOptions {
    fn mode(&mut self, mode: u32) -> &mut Self {
        self.std.mode(mode);
        self
    }

    fn custom_flags(&mut self, flags: i32) -> &mut Self {
        self.std.custom_flags(flags);
        self
    }
}

/// Replaces [`std::fs::read`]: the reads are flows of a mediated [`File`].
pub fn read<P: AsRef<Path>>(path: P) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Replaces [`std::fs::read_to_string`]: the reads are flows of a mediated [`File`].
pub fn read_to_string<P: AsRef<Path>>(path: P) -> io::Result<String> {
    let mut text = String::new();
    File::open(path)?.read_to_string(&mut text)?;
    Ok(text)
}

/// Replaces [`std::fs::write`]: the truncation and the writes are flows of a mediated
/// [`File`].
pub fn write<P: AsRef<Path>, C: AsRef<[u8]>>(path: P, contents: C) -> io::Result<()> {
    File::create(path)?.write_all(contents.as_ref())
}

/// Replaces [`std::fs::copy`]: the data passes through the process as mediated reads of
/// `from` and writes to `to` (no `copy_file_range` shortcut), so provenance follows it.
/// Permissions are copied as std does.
pub fn copy<P: AsRef<Path>, Q: AsRef<Path>>(from: P, to: Q) -> io::Result<u64> {
    let mut source = File::open(from)?;
    let permissions = source.metadata()?.permissions();
    let mut destination = File::create(to)?;
    let n = io::copy(&mut source, &mut destination)?;
    destination.set_permissions(permissions)?;
    Ok(n)
}
