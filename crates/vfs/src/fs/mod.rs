//! Filesystems: what is at the start of a region ([`detect`]), and one
//! [`Volume`] interface over every kind vmhub reads (and, for FAT, writes).
//!
//! Paths inside a volume are absolute, `/`-separated and already normalized by
//! [`crate::path::normalize`]: no `.` or `..` components, no empty ones.

pub mod detect;
pub mod ext;
mod ext_map;
pub mod fat;
pub mod iso;
pub mod ntfs;

pub use detect::{detect, FsKind};

use crate::region::Region;
use crate::{Error, Result};
use serde::Serialize;
use std::io::{Read, Write};

/// What kind of entry a directory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else (device node, FIFO, socket).
    Other,
}

/// One entry of a directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Its name in the directory (never empty, never `.` or `..`).
    pub name: String,
    /// File, directory, link or other.
    pub kind: EntryKind,
    /// Size in bytes (0 for directories where the filesystem has none).
    pub size: u64,
    /// Last modification, seconds since the Unix epoch, when recorded.
    pub modified: Option<i64>,
    /// Unix permission bits, when the filesystem has them.
    pub mode: Option<u32>,
}

/// Copies one file's data into a writer; returns the bytes copied.
pub type FileCopier<'a> = dyn FnMut(&mut dyn Write) -> Result<u64> + 'a;

/// What [`Volume::read_dir_files`] calls for each file.
pub type FileVisitor<'a> = dyn FnMut(&Entry, &mut FileCopier<'_>) -> Result<()> + 'a;

/// A filesystem opened on a region of a disk.
///
/// Reads are on every kind; writes only where [`Volume::writable`] says so.
/// The default write methods refuse with [`Error::Unsupported`].
pub trait Volume {
    /// Which filesystem this is.
    fn kind(&self) -> FsKind;

    /// The volume label, if it has one.
    fn label(&self) -> Option<String>;

    /// The entries of the directory `path`, in the filesystem's order.
    fn list(&mut self, path: &str) -> Result<Vec<Entry>>;

    /// The entry at `path` (for `/`, a directory named `/`).
    fn stat(&mut self, path: &str) -> Result<Entry>;

    /// Copies the file `path` into `out`; returns the bytes copied.
    fn read_file(&mut self, path: &str, out: &mut dyn Write) -> Result<u64>;

    /// Copies the regular files of the directory `dir` in one pass over it:
    /// `each` gets every file's entry and a function that copies its data
    /// into a writer. The default looks each file up by its path;
    /// filesystems that can open a file from its directory entry do better.
    fn read_dir_files(&mut self, dir: &str, each: &mut FileVisitor<'_>) -> Result<()> {
        for e in self.list(dir)? {
            if e.kind == EntryKind::File {
                let path = crate::path::join(dir, &e.name);
                each(&e, &mut |w| self.read_file(&path, w))?;
            }
        }
        Ok(())
    }

    /// Where the symbolic link `path` points.
    fn read_link(&mut self, path: &str) -> Result<String> {
        Err(Error::Unsupported(format!(
            "{path}: {} has no symbolic links",
            self.kind()
        )))
    }

    /// True when this volume can be written.
    fn writable(&self) -> bool {
        false
    }

    /// Makes the file `path` with `len` bytes from `data`, replacing a file
    /// that is there. Its directory must exist.
    fn write_file(&mut self, path: &str, data: &mut dyn Read, len: u64) -> Result<()> {
        let _ = (data, len);
        Err(self.read_only(path))
    }

    /// Makes the directory `path`; its parent must exist.
    fn mkdir(&mut self, path: &str) -> Result<()> {
        Err(self.read_only(path))
    }

    /// Removes the file or empty directory `path`.
    fn remove(&mut self, path: &str) -> Result<()> {
        Err(self.read_only(path))
    }

    /// Makes every change durable in the disk image.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    /// Byte ranges of the region that hold no data according to the
    /// filesystem (free clusters or blocks), sorted, for `compact --fs`.
    fn free_ranges(&mut self) -> Result<Vec<(u64, u64)>> {
        Err(Error::Unsupported(format!(
            "{}: finding free space is not supported",
            self.kind()
        )))
    }

    /// The error for a write to a kind that cannot be written.
    fn read_only(&self, path: &str) -> Error {
        Error::Unsupported(format!(
            "{path}: {} is read-only in vmhub (only FAT can be written)",
            self.kind()
        ))
    }
}

/// Opens the filesystem in `region`, writable if asked and the kind allows it.
pub fn open_volume(region: Region, writable: bool) -> Result<Box<dyn Volume>> {
    let mut probe = region.reopen()?;
    let kind = detect(&mut probe)?;
    let name = region.name().to_string();
    let vol: Box<dyn Volume> = match kind {
        FsKind::Fat12 | FsKind::Fat16 | FsKind::Fat32 => Box::new(fat::FatVolume::open(region)?),
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => Box::new(ext::ExtVolume::open(region, kind)?),
        FsKind::Ntfs => Box::new(ntfs::NtfsVolume::open(region)?),
        FsKind::Iso9660 => Box::new(iso::IsoVolume::open(region)?),
        FsKind::Unknown => {
            return Err(Error::Unsupported(format!(
                "{name}: no filesystem vmhub can read was found"
            )))
        }
        other => {
            return Err(Error::Unsupported(format!(
                "{name}: {other} is recognized, but vmhub cannot read its files"
            )))
        }
    };
    if writable && !vol.writable() {
        return Err(Error::Unsupported(format!(
            "{name}: {kind} is read-only in vmhub (only FAT can be written)"
        )));
    }
    Ok(vol)
}
