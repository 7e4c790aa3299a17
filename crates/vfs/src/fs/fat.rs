//! FAT12/16/32 with long names, read and write, by the `fatfs` crate.
//!
//! `fatfs` trusts the allocation table: a cluster chain that cycles would make
//! it walk a directory for ever. So the table is checked once when the volume
//! is opened (every chain ends, every link points at a cluster that exists),
//! which also gives the free clusters for `compact --fs`.

use super::{Entry, EntryKind, FsKind, Volume};
use crate::path::split;
use crate::region::{from_io, Region, SharedDisk};
use crate::{Error, Result};
use std::io::{self, Read, Write};

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

/// Where things are, from the boot sector (Microsoft FAT specification,
/// "BPB").
#[derive(Clone, Copy, Debug)]
struct Layout {
    bytes_per_sector: u64,
    cluster_size: u64,
    /// Byte offset of the first FAT.
    fat_start: u64,
    /// Byte offset of cluster 2.
    data_start: u64,
    /// Clusters in the data area.
    clusters: u64,
    /// FAT12/16: byte offset and length of the fixed root directory.
    root_dir: (u64, u64),
    /// FAT32: the root directory's first cluster.
    root_cluster: u64,
}

impl Layout {
    fn read(boot: &[u8], name: &str) -> Result<Layout> {
        let le16 = |at: usize| u16::from_le_bytes([boot[at], boot[at + 1]]) as u64;
        let le32 = |at: usize| {
            u32::from_le_bytes([boot[at], boot[at + 1], boot[at + 2], boot[at + 3]]) as u64
        };
        let bytes_per_sector = le16(11);
        let per_cluster = boot[13] as u64;
        let reserved = le16(14);
        let fats = boot[16] as u64;
        let root_entries = le16(17);
        let total = if le16(19) != 0 { le16(19) } else { le32(32) };
        let fat_size = if le16(22) != 0 { le16(22) } else { le32(36) };
        let bad = |what: &str| Error::Corrupt(format!("{name}: FAT boot sector: {what}"));
        if bytes_per_sector == 0 || per_cluster == 0 {
            return Err(bad("zero bytes per sector or sectors per cluster"));
        }
        let root_sectors = (root_entries * 32).div_ceil(bytes_per_sector);
        let data_sector = reserved + fats * fat_size + root_sectors;
        let clusters = total
            .checked_sub(data_sector)
            .ok_or_else(|| bad("the data area starts past the end of the volume"))?
            / per_cluster;
        Ok(Layout {
            bytes_per_sector,
            cluster_size: per_cluster * bytes_per_sector,
            fat_start: reserved * bytes_per_sector,
            data_start: data_sector * bytes_per_sector,
            clusters,
            root_dir: (
                (reserved + fats * fat_size) * bytes_per_sector,
                root_sectors * bytes_per_sector,
            ),
            root_cluster: if le16(22) == 0 { le32(44) } else { 0 },
        })
    }
}

impl FatVolume {
    /// Opens the FAT volume in `region` and checks its allocation table.
    pub fn open(mut region: Region) -> Result<Self> {
        let name = region.name().to_string();
        let mut boot = [0u8; 512];
        region
            .read_at(&mut boot, 0)
            .map_err(|e| from_io(e, &name))?;
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

/// The first FAT as one entry per cluster (index = cluster number).
fn read_table(region: &mut Region, kind: FsKind, l: &Layout, name: &str) -> Result<Vec<u32>> {
    let entries = l.clusters + 2;
    let bytes = match kind {
        FsKind::Fat12 => (entries * 3).div_ceil(2),
        FsKind::Fat16 => entries * 2,
        _ => entries * 4,
    };
    if l.fat_start.saturating_add(bytes) > region.len() {
        return Err(Error::Corrupt(format!(
            "{name}: the allocation table runs past the end of the volume"
        )));
    }
    // Bounded by the volume's length, checked above.
    let mut raw = vec![0u8; bytes as usize];
    region
        .read_at(&mut raw, l.fat_start)
        .map_err(|e| from_io(e, name))?;
    let _ = l.bytes_per_sector;
    let mut out = Vec::with_capacity(entries as usize);
    for n in 0..entries as usize {
        let v = match kind {
            FsKind::Fat12 => {
                let at = n + n / 2;
                let pair = u16::from_le_bytes([raw[at], raw.get(at + 1).copied().unwrap_or(0)]);
                let v = if n % 2 == 0 { pair & 0x0FFF } else { pair >> 4 };
                // Normalize the special values to FAT32's.
                match v {
                    0xFF7 => 0x0FFF_FFF7,
                    v if v >= 0xFF8 => 0x0FFF_FFFF,
                    v => v as u32,
                }
            }
            FsKind::Fat16 => {
                let v = u16::from_le_bytes([raw[2 * n], raw[2 * n + 1]]);
                match v {
                    0xFFF7 => 0x0FFF_FFF7,
                    v if v >= 0xFFF8 => 0x0FFF_FFFF,
                    v => v as u32,
                }
            }
            _ => {
                u32::from_le_bytes([raw[4 * n], raw[4 * n + 1], raw[4 * n + 2], raw[4 * n + 3]])
                    & 0x0FFF_FFFF
            }
        };
        out.push(v);
    }
    Ok(out)
}

const BAD: u32 = 0x0FFF_FFF7;

/// Checks that every chain in the table ends: each link points at a cluster
/// of the volume, and no chain comes back to a cluster it went through.
fn check_chains(table: &[u32], name: &str) -> Result<()> {
    let n = table.len();
    // 0: not seen, 1: on the walk in progress, 2: known to end.
    let mut state = vec![0u8; n];
    let mut walk = Vec::new();
    for first in 2..n {
        if state[first] != 0 {
            continue;
        }
        let mut c = first;
        walk.clear();
        loop {
            match state[c] {
                2 => break,
                1 => {
                    return Err(Error::Corrupt(format!(
                        "{name}: the cluster chain through cluster {c} loops back on itself"
                    )))
                }
                _ => {}
            }
            state[c] = 1;
            walk.push(c);
            let next = table[c];
            if next == 0 || next >= BAD {
                break;
            }
            if next < 2 || next as usize >= n {
                return Err(Error::Corrupt(format!(
                    "{name}: cluster {c} links to cluster {next}, which is not on the volume (clusters 2–{})",
                    n - 1
                )));
            }
            c = next as usize;
        }
        for &w in &walk {
            state[w] = 2;
        }
    }
    Ok(())
}

/// The FAT entry of `cluster`, read from the first table.
fn fat_entry(region: &mut Region, kind: FsKind, l: &Layout, cluster: u64) -> Result<u32> {
    let name = region.name().to_string();
    let mut b = [0u8; 4];
    let v = match kind {
        FsKind::Fat12 => {
            region
                .read_at(&mut b[..2], l.fat_start + cluster + cluster / 2)
                .map_err(|e| from_io(e, &name))?;
            let pair = u16::from_le_bytes([b[0], b[1]]);
            let v = if cluster % 2 == 0 {
                pair & 0x0FFF
            } else {
                pair >> 4
            };
            if v >= 0xFF7 {
                BAD
            } else {
                v as u32
            }
        }
        FsKind::Fat16 => {
            region
                .read_at(&mut b[..2], l.fat_start + cluster * 2)
                .map_err(|e| from_io(e, &name))?;
            let v = u16::from_le_bytes([b[0], b[1]]);
            if v >= 0xFFF7 {
                BAD
            } else {
                v as u32
            }
        }
        _ => {
            region
                .read_at(&mut b, l.fat_start + cluster * 4)
                .map_err(|e| from_io(e, &name))?;
            u32::from_le_bytes(b) & 0x0FFF_FFFF
        }
    };
    Ok(v)
}

/// Byte ranges (offset, length) of the directory starting at `cluster`
/// (0: the root), following its chain for at most every cluster of the volume.
fn dir_extents(
    region: &mut Region,
    kind: FsKind,
    l: &Layout,
    cluster: u64,
) -> Result<Vec<(u64, u64)>> {
    let mut c = if cluster == 0 {
        l.root_cluster
    } else {
        cluster
    };
    if c == 0 {
        return Ok(vec![l.root_dir]);
    }
    let mut out = Vec::new();
    while (2..l.clusters + 2).contains(&c) {
        if out.len() as u64 > l.clusters {
            return Err(Error::Corrupt(format!(
                "{}: a directory's cluster chain loops",
                region.name()
            )));
        }
        out.push((l.data_start + (c - 2) * l.cluster_size, l.cluster_size));
        let next = fat_entry(region, kind, l, c)?;
        if next == 0 || next >= BAD {
            break;
        }
        c = next as u64;
    }
    Ok(out)
}

/// Rewrites the `.` and `..` entries of directories `fatfs` made.
///
/// `fatfs` 0.3 writes each of them with a long-name entry before it, which
/// `fsck.vfat` rejects (the first two slots of a directory must be the short
/// entries `.` and `..`), and points `..` of a FAT32 root's child at the root
/// cluster where the specification says 0. So after making directories the
/// tree is walked and every directory that starts that way is fixed: `.` and
/// `..` moved to slots 0 and 1, the two slots after them marked deleted
/// (entries after them stay where they are).
fn fix_new_dirs(region: &mut Region, kind: FsKind, l: &Layout) -> Result<()> {
    const DOT: &[u8; 11] = b".          ";
    const DOTDOT: &[u8; 11] = b"..         ";
    let name = region.name().to_string();
    let mut seen = std::collections::HashSet::new();
    // (directory's first cluster or 0 for the root, depth)
    let mut todo = vec![(0u64, 0usize)];
    while let Some((dir, depth)) = todo.pop() {
        if depth > crate::extract::MAX_DEPTH {
            continue;
        }
        for (off, len) in dir_extents(region, kind, l, dir)? {
            let mut data = vec![0u8; len as usize];
            region
                .read_at(&mut data, off)
                .map_err(|e| from_io(e, &name))?;
            for e in data.chunks_exact(32) {
                if e[0] == 0 {
                    break;
                }
                let attr = e[11];
                if e[0] == 0xE5 || attr & 0x3F == 0x0F || attr & 0x08 != 0 || attr & 0x10 == 0 {
                    continue;
                }
                if &e[..11] == DOT || &e[..11] == DOTDOT {
                    continue;
                }
                let hi = if kind == FsKind::Fat32 {
                    u16::from_le_bytes([e[20], e[21]]) as u64
                } else {
                    0
                };
                let child = hi << 16 | u16::from_le_bytes([e[26], e[27]]) as u64;
                if !(2..l.clusters + 2).contains(&child) || !seen.insert(child) {
                    continue;
                }
                let at = l.data_start + (child - 2) * l.cluster_size;
                let mut head = [0u8; 128];
                if l.cluster_size < 128 {
                    continue;
                }
                region
                    .read_at(&mut head, at)
                    .map_err(|e| from_io(e, &name))?;
                let broken = head[11] & 0x3F == 0x0F
                    && &head[32..43] == DOT
                    && head[64 + 11] & 0x3F == 0x0F
                    && &head[96..107] == DOTDOT;
                if broken {
                    let mut fixed = [0u8; 128];
                    fixed[64] = 0xE5;
                    fixed[96] = 0xE5;
                    fixed[..32].copy_from_slice(&head[32..64]);
                    fixed[32..64].copy_from_slice(&head[96..128]);
                    // `..` of a child of the root points at cluster 0.
                    let parent = if dir == 0 { 0 } else { dir };
                    fixed[32 + 26..32 + 28].copy_from_slice(&(parent as u16).to_le_bytes());
                    fixed[32 + 20..32 + 22].copy_from_slice(&((parent >> 16) as u16).to_le_bytes());
                    region.write_at(&fixed, at).map_err(|e| from_io(e, &name))?;
                }
                todo.push((child, depth + 1));
            }
        }
    }
    Ok(())
}

/// A FAT date and time as seconds since the Unix epoch (taken as UTC; FAT
/// records local time without a zone).
fn unix_time(t: fatfs::DateTime) -> Option<i64> {
    let (y, m, d) = (t.date.year as i64, t.date.month as i64, t.date.day as i64);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from 1970-01-01 to y-m-d (proleptic Gregorian).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
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
        let l = self.layout;
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (c, &v) in table.iter().enumerate().skip(2) {
            if v != 0 {
                continue;
            }
            let off = l.data_start + (c as u64 - 2) * l.cluster_size;
            match out.last_mut() {
                Some(last) if last.0 + last.1 == off => last.1 += l.cluster_size,
                _ => out.push((off, l.cluster_size)),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_that_loop_or_leave_are_found() {
        let ok = vec![0x0FFF_FFF8, 0x0FFF_FFFF, 3, 4, 0x0FFF_FFFF, 0, 0x0FFF_FFF7];
        check_chains(&ok, "t").unwrap();
        let looped = vec![0, 0, 3, 4, 2, 0];
        let e = check_chains(&looped, "t").unwrap_err().to_string();
        assert!(e.contains("loops"), "{e}");
        let out = vec![0, 0, 3, 99];
        let e = check_chains(&out, "t").unwrap_err().to_string();
        assert!(e.contains("not on the volume"), "{e}");
        // Two chains joining is odd but ends; it must not be taken for a loop.
        let join = vec![0, 0, 4, 4, 0x0FFF_FFFF];
        check_chains(&join, "t").unwrap();
    }

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
