//! FAT12/16/32 with long names, read and write, by the `fatfs` crate.
//!
//! `fatfs` trusts the allocation table: a cluster chain that cycles would make
//! it walk a directory for ever. So the table is checked once when the volume
//! is opened (every chain ends, every link points at a cluster that exists),
//! which also gives the free clusters for `compact --fs`.
//!
//! `layout` reads where things are from the boot sector, `table` reads
//! and checks the allocation table, and `dirfix` repairs the `.` and `..`
//! entries of directories `fatfs` makes.

mod dirfix;
mod layout;
mod table;

use super::{Entry, EntryKind, FsKind, Volume};
use crate::path::split;
use crate::region::{from_io, Region, SharedDisk};
use crate::{Error, Result};
use dirfix::fix_new_dirs;
use layout::Layout;
use std::io::{self, Read, Write};
use table::{check_chains, read_table};

/// The most entries a FAT directory can hold (the specification's limit of
/// 65,536 32-byte entries).
const MAX_ENTRIES: usize = 65536;

type Fs = fatfs::FileSystem<Region>;

/// A FAT volume.
pub struct FatVolume {
    /// Kept to reopen the filesystem after a flush.
    disk: SharedDisk,
    start: u64,
    len: u64,
    name: String,
    fs: Option<Fs>,
    kind: FsKind,
    layout: Layout,
    /// Directories were made since the last flush (see [`fix_new_dirs`]).
    made_dirs: bool,
    /// The last directory listed, by lower-case name, so that looking up
    /// each file of a directory in turn reads the directory once.
    listed: Option<(String, std::collections::HashMap<String, Entry>)>,
}
impl FatVolume {
    /// Opens the FAT volume in `region` and checks its allocation table.
    pub fn open(mut region: Region) -> Result<Self> {
        let name = region.name().to_string();
        let mut boot = [0u8; 512];
        region.read_at_checked(&mut boot, 0)?;
        let kind = super::detect::fat_kind(&boot)
            .ok_or_else(|| Error::Corrupt(format!("{name}: not a FAT boot sector")))?;
        let layout = Layout::read(&boot, &name)?;
        if layout
            .data_start
            .saturating_add(layout.clusters.saturating_mul(layout.cluster_size))
            > region.len()
        {
            return Err(Error::Corrupt(format!(
                "{name}: FAT boot sector describes {} clusters of {} bytes, more than the {} bytes of the volume",
                layout.clusters,
                layout.cluster_size,
                region.len()
            )));
        }
        let table = read_table(&mut region, kind, &layout, &name)?;
        check_chains(&table, &name)?;
        let (disk, start, len) = (region.disk().clone(), region.start(), region.len());
        let fs = mount(region, &name)?;
        Ok(FatVolume {
            disk,
            start,
            len,
            name,
            fs: Some(fs),
            kind,
            layout,
            made_dirs: false,
            listed: None,
        })
    }

    fn fs(&mut self) -> Result<&Fs> {
        if self.fs.is_none() {
            let region = Region::new(self.disk.clone(), self.start, self.len, self.name.clone())?;
            self.fs = Some(mount(region, &self.name)?);
        }
        self.fs
            .as_ref()
            .ok_or_else(|| Error::Corrupt(format!("{}: filesystem not mounted", self.name)))
    }

    /// Free bytes on the volume.
    fn free_bytes(&mut self) -> Result<u64> {
        let fs = self.fs()?;
        let stats = fs.stats().map_err(|e| from_io(e, "FAT statistics"))?;
        Ok(stats.free_clusters() as u64 * stats.cluster_size() as u64)
    }
}

/// Copies `file`, whose directory entry records `size` bytes, into `out`.
fn copy_file(
    file: &mut fatfs::File<'_, Region>,
    size: u64,
    out: &mut dyn Write,
    name: &str,
    path: &str,
) -> Result<u64> {
    let mut buf = vec![0u8; (256u64 << 10).min(size.max(1)) as usize];
    let mut done = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::Corrupt(format!("{name}: {path}: {}", from_io(e, "read"))))?;
        if n == 0 {
            break;
        }
        crate::extract::write_all(out, &buf[..n], path)?;
        done += n as u64;
    }
    if done != size {
        return Err(Error::Corrupt(format!(
            "{name}: {path}: the directory records {size} bytes, but its cluster chain holds {done}"
        )));
    }
    Ok(done)
}

fn fat_err(name: &str, path: &str, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound(path.to_string()),
        io::ErrorKind::AlreadyExists => Error::Exists(path.to_string()),
        _ => match e.downcast::<Error>() {
            Ok(inner) => inner,
            Err(e) => Error::Corrupt(format!("{name}: {path}: {e}")),
        },
    }
}

fn mount(region: Region, name: &str) -> Result<Fs> {
    fatfs::FileSystem::new(region, fatfs::FsOptions::new())
        .map_err(|e| Error::Corrupt(format!("{name}: FAT filesystem: {}", from_io(e, "mount"))))
}

/// A FAT date and time as seconds since the Unix epoch (taken as UTC; FAT
/// records local time without a zone).
fn unix_time(t: fatfs::DateTime) -> Option<i64> {
    let (y, m, d) = (t.date.year as i64, t.date.month as i64, t.date.day as i64);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let days = crate::time::days_from_civil(y, m, d);
    Some(days * 86_400 + t.time.hour as i64 * 3600 + t.time.min as i64 * 60 + t.time.sec as i64)
}

fn entry_of(e: &fatfs::DirEntry<'_, Region>) -> Entry {
    Entry {
        name: e.file_name(),
        kind: if e.is_dir() {
            EntryKind::Dir
        } else {
            EntryKind::File
        },
        size: if e.is_dir() { 0 } else { e.len() },
        modified: unix_time(e.modified()),
        mode: None,
    }
}

/// `fatfs` paths: relative to the root, no leading slash.
fn rel(path: &str) -> &str {
    path.trim_start_matches('/')
}

impl FatVolume {
    fn entries(&mut self, path: &str) -> Result<Vec<Entry>> {
        let name = self.name.clone();
        let fs = self.fs()?;
        let root = fs.root_dir();
        let dir = if rel(path).is_empty() {
            root
        } else {
            match root.open_dir(rel(path)) {
                Ok(d) => d,
                Err(e) => {
                    let err = fat_err(&name, path, e);
                    return Err(match err {
                        Error::Corrupt(_) => Error::NotDir(path.to_string()),
                        other => other,
                    });
                }
            }
        };
        let mut out = Vec::new();
        for item in dir.iter() {
            let e = item.map_err(|e| {
                Error::Corrupt(format!("{name}: directory {path}: {}", from_io(e, "read")))
            })?;
            let n = e.file_name();
            if n == "." || n == ".." {
                continue;
            }
            if out.len() >= MAX_ENTRIES {
                return Err(Error::Corrupt(format!(
                    "{name}: directory {path} holds more than {MAX_ENTRIES} entries"
                )));
            }
            out.push(entry_of(&e));
        }
        Ok(out)
    }
}

impl Volume for FatVolume {
    fn kind(&self) -> FsKind {
        self.kind
    }

    fn label(&self) -> Option<String> {
        let fs = self.fs.as_ref()?;
        let from_root = fs.read_volume_label_from_root_dir().ok().flatten();
        let label = from_root.unwrap_or_else(|| fs.volume_label());
        let label = label.trim_end().to_string();
        (!label.is_empty() && label != "NO NAME").then_some(label)
    }

    fn list(&mut self, path: &str) -> Result<Vec<Entry>> {
        let e = self.stat(path)?;
        if e.kind != EntryKind::Dir {
            return Err(Error::NotDir(path.to_string()));
        }
        self.entries(path)
    }

    fn stat(&mut self, path: &str) -> Result<Entry> {
        let Some((dir, name)) = split(path) else {
            return Ok(Entry {
                name: "/".into(),
                kind: EntryKind::Dir,
                size: 0,
                modified: None,
                mode: None,
            });
        };
        if self.listed.as_ref().is_none_or(|(d, _)| d != dir) {
            let parent = match self.entries(dir) {
                Ok(p) => p,
                Err(Error::NotFound(_)) | Err(Error::NotDir(_)) => {
                    return Err(Error::NotFound(path.to_string()))
                }
                Err(e) => return Err(e),
            };
            let mut map = std::collections::HashMap::with_capacity(parent.len());
            for e in parent {
                // The first of two names that differ only in case wins, as
                // in a lookup by fatfs.
                map.entry(e.name.to_ascii_lowercase()).or_insert(e);
            }
            self.listed = Some((dir.to_string(), map));
        }
        self.listed
            .as_ref()
            .and_then(|(_, m)| m.get(&name.to_ascii_lowercase()))
            .cloned()
            .ok_or_else(|| Error::NotFound(path.to_string()))
    }

    fn read_file(&mut self, path: &str, out: &mut dyn Write) -> Result<u64> {
        let e = self.stat(path)?;
        if e.kind == EntryKind::Dir {
            return Err(Error::IsDir(path.to_string()));
        }
        let name = self.name.clone();
        let fs = self.fs()?;
        let mut file = match fs.root_dir().open_file(rel(path)) {
            Ok(f) => f,
            Err(e) => return Err(fat_err(&name, path, e)),
        };
        copy_file(&mut file, e.size, out, &name, path)
    }

    fn read_dir_files(&mut self, dir: &str, each: &mut super::FileVisitor<'_>) -> Result<()> {
        let name = self.name.clone();
        let fs = self.fs()?;
        let root = fs.root_dir();
        let d = if rel(dir).is_empty() {
            root
        } else {
            root.open_dir(rel(dir))
                .map_err(|e| fat_err(&name, dir, e))?
        };
        let mut seen = 0usize;
        for item in d.iter() {
            let e = item.map_err(|e| {
                Error::Corrupt(format!("{name}: directory {dir}: {}", from_io(e, "read")))
            })?;
            seen += 1;
            if seen > MAX_ENTRIES {
                return Err(Error::Corrupt(format!(
                    "{name}: directory {dir} holds more than {MAX_ENTRIES} entries"
                )));
            }
            if e.is_dir() {
                continue;
            }
            let entry = entry_of(&e);
            // As in `list`: these names are the links to the directory and
            // its parent, whatever the entry's attributes say.
            if entry.name == "." || entry.name == ".." {
                continue;
            }
            let path = crate::path::join(dir, &entry.name);
            let size = entry.size;
            each(&entry, &mut |w| {
                copy_file(&mut e.to_file(), size, w, &name, &path)
            })?;
        }
        Ok(())
    }

    fn writable(&self) -> bool {
        true
    }

    fn write_file(&mut self, path: &str, data: &mut dyn Read, len: u64) -> Result<()> {
        let existing = match self.stat(path) {
            Ok(e) if e.kind == EntryKind::Dir => return Err(Error::IsDir(path.to_string())),
            Ok(e) => Some(e.size),
            Err(Error::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        if let Some((dir, _)) = split(path) {
            if self.stat(dir)?.kind != EntryKind::Dir {
                return Err(Error::NotDir(dir.to_string()));
            }
        }
        // Refuse before writing anything when the data cannot fit.
        let cluster = self.layout.cluster_size;
        let need = len.div_ceil(cluster) * cluster;
        let have =
            self.free_bytes()? + existing.map(|s| s.div_ceil(cluster) * cluster).unwrap_or(0);
        if need > have {
            return Err(Error::Invalid(format!(
                "{}: {path}: no space: the file needs {need} bytes, the volume has {have} free",
                self.name
            )));
        }
        let name = self.name.clone();
        self.listed = None;
        let fs = self.fs()?;
        let root = fs.root_dir();
        let mut file = root
            .create_file(rel(path))
            .map_err(|e| fat_err(&name, path, e))?;
        file.truncate().map_err(|e| fat_err(&name, path, e))?;
        let mut buf = vec![0u8; 256 << 10];
        let mut left = len;
        while left > 0 {
            let want = (buf.len() as u64).min(left) as usize;
            let n = data.read(&mut buf[..want]).map_err(|e| Error::Local {
                path: path.to_string(),
                op: "read",
                source: e,
            })?;
            if n == 0 {
                return Err(Error::Invalid(format!(
                    "{path}: the source ended after {} of {len} bytes",
                    len - left
                )));
            }
            file.write_all(&buf[..n])
                .map_err(|e| Error::Corrupt(format!("{name}: {path}: {}", from_io(e, "write"))))?;
            left -= n as u64;
        }
        file.flush().map_err(|e| fat_err(&name, path, e))?;
        Ok(())
    }

    fn mkdir(&mut self, path: &str) -> Result<()> {
        match self.stat(path) {
            Ok(_) => return Err(Error::Exists(path.to_string())),
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        if let Some((dir, _)) = split(path) {
            match self.stat(dir) {
                Ok(e) if e.kind == EntryKind::Dir => {}
                Ok(_) => return Err(Error::NotDir(dir.to_string())),
                Err(e) => return Err(e),
            }
        }
        let name = self.name.clone();
        self.listed = None;
        let fs = self.fs()?;
        let r = fs.root_dir().create_dir(rel(path)).map(|_| ());
        self.made_dirs = true;
        r.map_err(|e| fat_err(&name, path, e))
    }

    fn remove(&mut self, path: &str) -> Result<()> {
        let e = self.stat(path)?;
        if path == "/" {
            return Err(Error::Invalid(
                "/: the root directory cannot be removed".into(),
            ));
        }
        if e.kind == EntryKind::Dir && !self.entries(path)?.is_empty() {
            return Err(Error::NotEmpty(path.to_string()));
        }
        let name = self.name.clone();
        self.listed = None;
        let fs = self.fs()?;
        let r = fs.root_dir().remove(rel(path));
        r.map_err(|e| fat_err(&name, path, e))
    }

    fn flush(&mut self) -> Result<()> {
        self.listed = None;
        if let Some(fs) = self.fs.take() {
            fs.unmount().map_err(|e| {
                Error::Corrupt(format!("{}: unmount: {}", self.name, from_io(e, "write")))
            })?;
        }
        if self.made_dirs {
            let mut region =
                Region::new(self.disk.clone(), self.start, self.len, self.name.clone())?;
            fix_new_dirs(&mut region, self.kind, &self.layout)?;
            self.made_dirs = false;
        }
        let mut disk = self
            .disk
            .lock()
            .map_err(|_| Error::Invalid("the disk was left in an unknown state".into()))?;
        disk.flush()?;
        Ok(())
    }

    fn free_ranges(&mut self) -> Result<Vec<(u64, u64)>> {
        let mut region = Region::new(self.disk.clone(), self.start, self.len, self.name.clone())?;
        let table = read_table(&mut region, self.kind, &self.layout, &self.name)?;
        Ok(table::free_ranges(&table, &self.layout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fat_times() {
        let t = fatfs::DateTime {
            date: fatfs::Date {
                year: 2024,
                month: 2,
                day: 29,
            },
            time: fatfs::Time {
                hour: 12,
                min: 30,
                sec: 4,
                millis: 0,
            },
        };
        assert_eq!(unix_time(t), Some(1_709_209_804));
    }
}
