//! Copying files and trees out of a volume into a local folder, safely: every
//! name from the image is checked before it becomes a local path, nothing is
//! written through a link, and nothing lands outside the destination.

use crate::fs::{EntryKind, Volume};
use crate::path::join;
use crate::{Error, Result};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};

/// How deep a tree may go before it is taken for a loop.
pub const MAX_DEPTH: usize = 256;

/// What an extraction did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Extracted {
    /// Regular files written.
    pub files: u64,
    /// Directories made.
    pub dirs: u64,
    /// Symbolic links made.
    pub links: u64,
    /// Bytes of file data written.
    pub bytes: u64,
    /// Entries not extracted (device nodes, FIFOs), with the reason.
    pub skipped: Vec<String>,
}

/// Checks that `name`, read from an image, can be one local path component.
pub fn check_name(dir: &str, name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\0')
        || (cfg!(windows) && name.contains('\\'));
    if bad {
        return Err(Error::Corrupt(format!(
            "{}: the directory holds an entry named {name:?}, which cannot be a file name",
            dir
        )));
    }
    Ok(())
}

/// Copies `src` (a file, link or directory tree of `vol`) to `local`.
///
/// A file goes to `local`, or into it when `local` is a directory. A directory
/// goes into `local/NAME` when `local` is an existing directory, else becomes
/// `local`; the root's contents go into `local` itself.
pub fn extract(vol: &mut dyn Volume, src: &str, local: &Path) -> Result<Extracted> {
    let entry = vol.stat(src)?;
    let name = crate::path::split(src).map(|(_, n)| n);
    let local_is_dir = fs::symlink_metadata(local)
        .map(|m| m.is_dir())
        .unwrap_or(false);
    let mut out = Extracted::default();
    match entry.kind {
        EntryKind::Dir => {
            let dest = match (local_is_dir, name) {
                (true, Some(n)) => {
                    check_name(src, n)?;
                    local.join(n)
                }
                (true, None) => local.to_path_buf(),
                (false, _) => local.to_path_buf(),
            };
            if dest != local || !local_is_dir {
                make_dir(&dest)?;
                out.dirs += 1;
            }
            let failed = Mutex::new(None);
            let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
            let rx = Mutex::new(rx);
            std::thread::scope(|scope| -> Result<()> {
                for _ in 0..WRITERS {
                    let (rx, failed) = (&rx, &failed);
                    scope.spawn(move || loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        if let Err(e) = write_job(&job) {
                            if let Ok(mut f) = failed.lock() {
                                f.get_or_insert(e);
                            }
                        }
                    });
                }
                let writers = Writers {
                    tx,
                    failed: &failed,
                };
                copy_tree(vol, src, &dest, 0, &mut out, &writers)
            })?;
            if let Some(e) = failed.into_inner().ok().flatten() {
                return Err(e);
            }
        }
        _ => {
            let dest = match (local_is_dir, name) {
                (true, Some(n)) => {
                    check_name(src, n)?;
                    local.join(n)
                }
                _ => local.to_path_buf(),
            };
            copy_one(vol, src, entry.kind, entry.modified, &dest, false, &mut out)?;
        }
    }
    Ok(out)
}

/// Files up to this size are read into memory and written by the writer
/// threads; larger ones are written as they are read.
const SMALL: u64 = 1 << 20;
/// Writer threads.
const WRITERS: usize = 2;
/// Files queued for the writers (at most QUEUE × SMALL bytes in memory).
const QUEUE: usize = 32;

/// A small file read whole, for a writer thread.
struct Job {
    path: PathBuf,
    data: Vec<u8>,
    modified: Option<i64>,
}

/// The writer threads of a tree's extraction. Creating a file costs the host
/// filesystem far more than copying a small file's bytes, and creations on
/// several threads overlap, so small files go to them.
struct Writers<'a> {
    tx: mpsc::SyncSender<Job>,
    /// The first error a writer met.
    failed: &'a Mutex<Option<Error>>,
}

impl Writers<'_> {
    /// Fails with a writer's error, if one has met one.
    fn check(&self) -> Result<()> {
        match self.failed.lock() {
            Ok(mut f) => match f.take() {
                Some(e) => Err(e),
                None => Ok(()),
            },
            Err(_) => Err(Error::Invalid("a writer thread failed".into())),
        }
    }
}

/// Writes a job's file where it goes (a folder the extraction made).
fn write_job(job: &Job) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&job.path)
        .map_err(|e| Error::local(&job.path, "create", e))?;
    let r = file
        .write_all(&job.data)
        .map_err(|e| Error::local(&job.path, "write", e));
    if r.is_err() {
        let _ = fs::remove_file(&job.path);
    }
    r?;
    if let Some(t) = job.modified.and_then(to_system_time) {
        let _ = file.set_modified(t);
    }
    Ok(())
}

fn copy_tree(
    vol: &mut dyn Volume,
    dir: &str,
    dest: &Path,
    depth: usize,
    out: &mut Extracted,
    writers: &Writers<'_>,
) -> Result<()> {
    writers.check()?;
    if depth >= MAX_DEPTH {
        return Err(Error::Corrupt(format!(
            "{dir}: directories nested more than {MAX_DEPTH} deep (a loop in the directory tree?)"
        )));
    }
    let entries = vol.list(dir)?;
    for e in &entries {
        check_name(dir, &e.name)?;
    }
    // Files first, in one pass over the directory.
    vol.read_dir_files(dir, &mut |e, copy| {
        check_name(dir, &e.name)?;
        let path = dest.join(&e.name);
        if e.size <= SMALL {
            let mut data = Vec::with_capacity(e.size as usize);
            out.bytes += copy(&mut data)?;
            writers.check()?;
            writers
                .tx
                .send(Job {
                    path,
                    data,
                    modified: e.modified,
                })
                .map_err(|_| Error::Invalid("the writer threads are gone".into()))?;
        } else {
            out.bytes += write_file(copy, e.modified, &path, true)?;
        }
        out.files += 1;
        Ok(())
    })?;
    for e in entries {
        let src = join(dir, &e.name);
        let to = dest.join(&e.name);
        match e.kind {
            EntryKind::Dir => {
                make_dir(&to)?;
                out.dirs += 1;
                copy_tree(vol, &src, &to, depth + 1, out, writers)?;
            }
            EntryKind::File => {}
            kind => copy_one(vol, &src, kind, e.modified, &to, true, out)?,
        }
    }
    Ok(())
}

/// Makes the directory `p`, which must not exist (so that nothing already
/// there, a link above all, is written through).
fn make_dir(p: &Path) -> Result<()> {
    fs::create_dir(p).map_err(|e| Error::local(p, "create directory", e))
}

fn copy_one(
    vol: &mut dyn Volume,
    src: &str,
    kind: EntryKind,
    modified: Option<i64>,
    dest: &Path,
    fresh: bool,
    out: &mut Extracted,
) -> Result<()> {
    match kind {
        EntryKind::File => {
            out.bytes += write_file(&mut |w| vol.read_file(src, w), modified, dest, fresh)?;
            out.files += 1;
        }
        EntryKind::Symlink => {
            let target = vol.read_link(src)?;
            if target.contains('\0') {
                return Err(Error::Corrupt(format!(
                    "{src}: link target holds a NUL byte"
                )));
            }
            make_link(&target, dest)?;
            out.links += 1;
        }
        EntryKind::Other => out
            .skipped
            .push(format!("{src}: not a file, directory or link")),
        EntryKind::Dir => return Err(Error::IsDir(src.to_string())),
    }
    Ok(())
}

#[cfg(unix)]
fn make_link(target: &str, dest: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, dest).map_err(|e| Error::local(dest, "create link", e))
}

#[cfg(not(unix))]
fn make_link(_target: &str, dest: &Path) -> Result<()> {
    Err(Error::Unsupported(format!(
        "{}: symbolic links cannot be made here",
        dest.display()
    )))
}

/// Writes a file at `dest`. Into a folder this extraction made (`fresh`), the
/// file is created where it goes, refusing anything already there; elsewhere
/// it is written beside `dest` under a temporary name and renamed over it, so
/// a link at `dest` is replaced, never followed. Either way a failed copy
/// leaves nothing half-written.
fn write_file(
    copy: &mut crate::fs::FileCopier<'_>,
    modified: Option<i64>,
    dest: &Path,
    fresh: bool,
) -> Result<u64> {
    let tmp = if fresh {
        dest.to_path_buf()
    } else {
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = dest
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("{}: not a file name", dest.display())))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(base);
        tmp_name.push(format!(".vmhub-{}", std::process::id()));
        dir.join(tmp_name)
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| Error::local(&tmp, "create", e))?;
    let result = (|| {
        // Volumes write in pieces of up to 256 KiB: no buffer needed.
        let n = copy(&mut file)?;
        if let Some(t) = modified.and_then(to_system_time) {
            let _ = file.set_modified(t);
        }
        if !fresh {
            fs::rename(&tmp, dest).map_err(|e| Error::local(dest, "rename into place", e))?;
        }
        Ok(n)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn to_system_time(secs: i64) -> Option<std::time::SystemTime> {
    let epoch = std::time::UNIX_EPOCH;
    if secs >= 0 {
        epoch.checked_add(std::time::Duration::from_secs(secs as u64))
    } else {
        epoch.checked_sub(std::time::Duration::from_secs(secs.unsigned_abs()))
    }
}

/// Writes `data` to `w`, for volumes that copy file data in pieces.
pub(crate) fn write_all(w: &mut dyn Write, data: &[u8], what: &str) -> Result<()> {
    w.write_all(data).map_err(|e| Error::Local {
        path: what.to_string(),
        op: "write",
        source: e,
    })
}
