//! File helpers shared by the formats: positional I/O with errors that name the
//! file, holes, zero detection, and whole-file replacement by write-then-rename.

use crate::{Error, Result};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Reads exactly `buf.len()` bytes at `offset`; a short file is reported as
/// corruption of `what` (formatted only then: `format_args!` costs nothing on
/// the way that succeeds).
pub fn read_exact_at(
    file: &File,
    path: &Path,
    buf: &mut [u8],
    offset: u64,
    what: impl std::fmt::Display,
) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "{what} at offset {offset} ({} bytes) extends past the end of the file",
                        buf.len()
                    ),
                ))
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, "read", e)),
        }
    }
    Ok(())
}

/// Writes all of `buf` at `offset`.
pub fn write_all_at(file: &File, path: &Path, buf: &[u8], offset: u64) -> Result<()> {
    file.write_all_at(buf, offset)
        .map_err(|e| Error::io(path, "write", e))
}

/// The file's length in bytes.
pub fn file_len(file: &File, path: &Path) -> Result<u64> {
    Ok(file
        .metadata()
        .map_err(|e| Error::io(path, "stat", e))?
        .len())
}

/// Bytes the host filesystem has allocated for the file.
pub fn host_allocated(file: &File, path: &Path) -> Result<u64> {
    Ok(file
        .metadata()
        .map_err(|e| Error::io(path, "stat", e))?
        .blocks()
        * 512)
}

/// Makes the file's data durable.
pub fn sync_data(file: &File, path: &Path) -> Result<()> {
    file.sync_data().map_err(|e| Error::io(path, "fsync", e))
}

/// Asks the kernel to read `[offset, offset+len)` of `file` into the page cache
/// in the background. A hint: failure changes nothing.
pub fn prefetch(file: &File, offset: u64, len: u64) {
    if let Some(len) = std::num::NonZeroU64::new(len) {
        let _ = rustix::fs::fadvise(file, offset, Some(len), rustix::fs::Advice::WillNeed);
    }
}

/// Tells the kernel that `[offset, offset+len)` of `file` (to its end when
/// `len` is `None`) will not be read again, so that its clean cached pages
/// can go now. A hint: failure changes nothing.
pub fn forget(file: &File, offset: u64, len: Option<u64>) {
    let len = len.and_then(std::num::NonZeroU64::new);
    let _ = rustix::fs::fadvise(file, offset, len, rustix::fs::Advice::DontNeed);
}

/// Whether every byte of `buf` is zero.
pub fn is_zero(buf: &[u8]) -> bool {
    // Look at the first bytes alone first: data that is not zero almost always
    // shows it at once, so only zero (or nearly zero) buffers pay for a full scan.
    let (head, rest) = buf.split_at(buf.len().min(16));
    if head.iter().any(|&b| b != 0) {
        return false;
    }
    let mut chunks = rest.chunks_exact(64);
    for c in &mut chunks {
        if c.iter().fold(0u8, |a, &b| a | b) != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b == 0)
}

/// The data and hole runs of `[offset, end)` of a file, as `(start, end, is_data)`,
/// found with `SEEK_DATA`/`SEEK_HOLE`. Filesystems without hole support report
/// everything as data.
pub fn data_runs(file: &File, offset: u64, end: u64) -> Vec<(u64, u64, bool)> {
    use rustix::fs::{seek, SeekFrom};
    let mut runs = Vec::new();
    let mut pos = offset;
    while pos < end {
        let data = match seek(file, SeekFrom::Data(pos)) {
            Ok(d) => d.min(end),
            Err(rustix::io::Errno::NXIO) => end, // no data after pos: the rest is a hole
            Err(_) => {
                runs.push((pos, end, true));
                return runs;
            }
        };
        if data > pos {
            runs.push((pos, data, false));
        }
        if data >= end {
            break;
        }
        let hole = match seek(file, SeekFrom::Hole(data)) {
            Ok(h) => h.min(end),
            Err(_) => end,
        };
        // A filesystem that answers nonsense must not make this loop forever.
        let hole = hole.max(data + 1);
        runs.push((data, hole, true));
        pos = hole;
    }
    runs
}

/// A file written under a temporary name beside its destination, which appears
/// under its real name only when [`AtomicFile::commit`] has made it durable.
/// Dropped without commit, the temporary file is removed.
pub struct AtomicFile {
    temp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// Creates the temporary file for `dest`, and returns it opened read-write.
    pub fn create(dest: &Path) -> Result<(AtomicFile, File)> {
        let name = dest.file_name().ok_or_else(|| {
            Error::InvalidArgument(format!("{}: not a file name", dest.display()))
        })?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut rnd = [0u8; 6];
        getrandom::fill(&mut rnd)
            .map_err(|e| Error::io(dest, "getrandom", std::io::Error::other(e.to_string())))?;
        let suffix: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{suffix}.tmp"));
        let temp = dir.join(temp_name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| Error::io(&temp, "create", e))?;
        Ok((
            AtomicFile {
                temp,
                dest: dest.to_path_buf(),
                committed: false,
            },
            file,
        ))
    }

    /// The temporary path being written.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Makes `file` durable and renames it to its destination.
    pub fn commit(mut self, file: &File) -> Result<()> {
        file.sync_all()
            .map_err(|e| Error::io(&self.temp, "fsync", e))?;
        std::fs::rename(&self.temp, &self.dest).map_err(|e| Error::io(&self.dest, "rename", e))?;
        self.committed = true;
        if let Some(dir) = self.dest.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                // The rename is durable once the directory is; a filesystem that
                // cannot fsync a directory has nothing more to give.
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Frees `len` bytes of `file` at `offset` (they read as zeros after), where
/// the filesystem can; elsewhere nothing happens, which callers allow.
pub(crate) fn punch_hole(file: &File, offset: u64, len: u64) {
    use rustix::fs::{fallocate, FallocateFlags};
    let _ = fallocate(
        file,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        offset,
        len,
    );
}

/// Bytes written between two background syncs (see [`with_background_sync`]).
const WRITEBACK_EVERY: u64 = 32 << 20;

/// Runs `work`, which writes much into `file`, while a second thread syncs the
/// file's data after every [`WRITEBACK_EVERY`] bytes that `work` says it wrote
/// (by calling the function it is given with each write's length). The writes
/// then reach storage while the work goes on, instead of all in the final
/// flush. A sync already queued covers later ones; only the caller's final
/// flush reports errors.
pub(crate) fn with_background_sync<T>(
    file: &File,
    path: &Path,
    work: impl FnOnce(&mut dyn FnMut(u64)) -> Result<T>,
) -> Result<T> {
    let syncer = file.try_clone().map_err(|e| Error::io(path, "dup", e))?;
    let (kick, kicks) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for () in kicks {
                let _ = syncer.sync_data();
            }
        });
        let result = {
            let mut since = 0u64;
            let mut wrote = |n: u64| {
                since += n;
                if since >= WRITEBACK_EVERY {
                    since = 0;
                    let _ = kick.try_send(());
                }
            };
            work(&mut wrote)
        };
        drop(kick);
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0; 4096]));
        let mut b = vec![0u8; 4096];
        for i in [0, 15, 16, 79, 4000, 4095] {
            b[i] = 1;
            assert!(!is_zero(&b), "byte {i}");
            b[i] = 0;
        }
    }

    #[test]
    fn holes_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = File::create(&p).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(&[1; 4096], 4 << 20).unwrap();
        let runs = data_runs(&f, 0, 8 << 20);
        assert_eq!(runs.first().map(|r| r.2), Some(false));
        assert!(runs
            .iter()
            .any(|r| r.2 && r.0 <= 4 << 20 && r.1 >= (4 << 20) + 4096));
        let covered: u64 = runs.iter().map(|r| r.1 - r.0).sum();
        assert_eq!(covered, 8 << 20);
    }
}
