//! Disk images made from a local folder, like WinImage's "inject a folder into
//! a new image": a FAT filesystem holding a copy of the folder, in one MBR or
//! GPT partition or alone on the disk (a "superfloppy").
//!
//! Everything that can be refused is refused before the image is created: the
//! folder is scanned and every name checked first, then the volume is sized.
//! The image is written under a temporary name beside the output and renamed
//! over it only once complete and durable.
//!
//! The FAT geometry (cluster size, table size) is whatever `fatfs` chooses for
//! a volume size; sizing asks it by formatting a sparse in-memory volume
//! ([`probe`]) rather than repeating its arithmetic here.

use crate::fs::detect::fat_kind;
use crate::fs::fat::FatVolume;
use crate::fs::{FsKind, Volume};
use crate::part::TableKind;
use crate::region::{from_io, share, Region, SharedDisk};
use crate::{Error, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;
/// Where the partition starts on a partitioned disk: 1 MiB, the alignment
/// every current partitioning tool uses.
const PART_START: u64 = MIB;
/// What a GPT keeps at the end of the disk: 32 sectors of partition entries
/// and the backup header (UEFI specification, 5.3).
const GPT_TAIL: u64 = 33 * SECTOR;
/// The largest file FAT records (a 32-bit size).
const MAX_FILE: u64 = u32::MAX as u64;
/// The most entries a fixed FAT12/16 root directory is given (a multiple of
/// 16 that fits the boot sector's 16-bit field).
const MAX_ROOT_ENTRIES: u64 = 65520;
/// Room left beyond what the files need when the size is chosen, in percent.
const SLACK_PERCENT: u64 = 10;

/// A FAT variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FatType {
    /// FAT12: fewer than 4085 clusters.
    Fat12,
    /// FAT16: 4085 to 65524 clusters.
    Fat16,
    /// FAT32: 65525 clusters or more.
    Fat32,
}

impl FatType {
    fn fatfs(self) -> fatfs::FatType {
        match self {
            FatType::Fat12 => fatfs::FatType::Fat12,
            FatType::Fat16 => fatfs::FatType::Fat16,
            FatType::Fat32 => fatfs::FatType::Fat32,
        }
    }

    fn of(kind: FsKind) -> Option<FatType> {
        match kind {
            FsKind::Fat12 => Some(FatType::Fat12),
            FsKind::Fat16 => Some(FatType::Fat16),
            FsKind::Fat32 => Some(FatType::Fat32),
            _ => None,
        }
    }

    /// The MBR partition type: FAT32 and FAT16 addressed by LBA (0x0c, 0x0e),
    /// FAT12 (0x01).
    fn mbr_type(self) -> u8 {
        match self {
            FatType::Fat12 => 0x01,
            FatType::Fat16 => 0x0e,
            FatType::Fat32 => 0x0c,
        }
    }

    /// The type for a volume of `bytes` when none is asked for.
    fn for_size(bytes: u64) -> FatType {
        if bytes < 16 * MIB {
            FatType::Fat12
        } else if bytes < 512 * MIB {
            FatType::Fat16
        } else {
            FatType::Fat32
        }
    }

    /// The smallest volume tried when sizing.
    fn smallest(self) -> u64 {
        match self {
            FatType::Fat12 => MIB,
            FatType::Fat16 => 4 * MIB,
            FatType::Fat32 => 32 * MIB,
        }
    }

    /// Roughly which volumes `fatfs` makes of this type, for messages.
    fn range(self) -> &'static str {
        match self {
            FatType::Fat12 => "volumes up to about 127 MiB",
            FatType::Fat16 => "volumes of about 4 MiB to 2 GiB",
            FatType::Fat32 => "volumes of about 33 MiB to 2 TiB",
        }
    }
}

impl fmt::Display for FatType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FatType::Fat12 => "FAT12",
            FatType::Fat16 => "FAT16",
            FatType::Fat32 => "FAT32",
        })
    }
}

impl std::str::FromStr for FatType {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "fat12" => Ok(FatType::Fat12),
            "fat16" => Ok(FatType::Fat16),
            "fat32" => Ok(FatType::Fat32),
            _ => Err(format!("{s}: not a FAT type (fat12, fat16 or fat32)")),
        }
    }
}

/// What [`from_dir`] makes.
#[derive(Clone, Debug)]
pub struct FromDirOptions {
    /// The image's size in bytes; `None` sizes it to the files with 10% to
    /// spare.
    pub size: Option<u64>,
    /// The FAT type; `None` chooses by volume size (FAT12 below 16 MiB,
    /// FAT16 below 512 MiB, else FAT32).
    pub fat: Option<FatType>,
    /// MBR, GPT, or none (the filesystem at sector 0).
    pub table: TableKind,
    /// Format and type of the image file.
    pub image: vdisk::CreateOptions,
    /// The volume label (up to 11 characters, stored upper-case).
    pub label: Option<String>,
    /// Replace the output if it exists.
    pub overwrite: bool,
}

impl Default for FromDirOptions {
    fn default() -> Self {
        FromDirOptions {
            size: None,
            fat: None,
            table: TableKind::Mbr,
            image: vdisk::CreateOptions::default(),
            label: None,
            overwrite: false,
        }
    }
}

/// What [`from_dir`] made.
#[derive(Clone, Debug, Serialize)]
pub struct FromDirSummary {
    /// The image written.
    pub image: String,
    /// Regular files copied.
    pub files: u64,
    /// Folders made (not counting the root).
    pub dirs: u64,
    /// Bytes of file data copied.
    pub bytes: u64,
    /// The disk's size in bytes.
    pub image_size: u64,
    /// The filesystem.
    pub fs: FatType,
    /// The partition table.
    pub table: TableKind,
    /// Where the filesystem starts on the disk, in bytes.
    pub volume_start: u64,
    /// The filesystem's size in bytes.
    pub volume_size: u64,
    /// Bytes per cluster.
    pub cluster_size: u64,
    /// The volume label, if one was given.
    pub label: Option<String>,
    /// Entries of the folder that were not copied, and why.
    pub warnings: Vec<String>,
    /// Notes from making the image file (a size rounded up).
    pub notes: Vec<String>,
}

/// Makes the image `out` holding a copy of the folder `src` (see the module
/// documentation). `progress` is called with the bytes of file data copied so
/// far and the total.
pub fn from_dir(
    src: &Path,
    out: &Path,
    opts: &FromDirOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<FromDirSummary> {
    let label = opts.label.as_deref().map(label_bytes).transpose()?;
    let tree = scan(src)?;
    let plan = plan(&tree, opts)?;
    vdisk::format::refuse_existing(out, opts.overwrite)?;

    let (tmp, file) = vdisk::io::AtomicFile::create(out)?;
    let handle = file
        .try_clone()
        .map_err(|e| Error::local(tmp.temp_path(), "dup", e))?;
    let (disk, notes) = vdisk::format::create_in(handle, out, plan.disk_size, &opts.image)?;
    let disk_size = disk.virtual_size();
    let disk = share(disk);
    let name = out.display().to_string();
    let start = write_table(&disk, &name, opts.table, disk_size, plan.volume, plan.fat)?;
    let region_name = match opts.table {
        TableKind::None => name.clone(),
        _ => format!("{name} partition 1"),
    };
    let geometry = format_volume(&disk, start, plan.volume, &region_name, plan, label)?;
    copy_tree(&disk, start, plan.volume, &region_name, &tree, progress)?;
    crate::region::Region::whole(disk.clone(), name.as_str())?.flush_disk()?;
    drop(disk);
    tmp.commit(&file)?;

    Ok(FromDirSummary {
        image: name,
        files: tree.files,
        dirs: tree.dirs.len() as u64 - 1,
        bytes: tree.bytes,
        image_size: disk_size,
        fs: plan.fat,
        table: opts.table,
        volume_start: start,
        volume_size: plan.volume,
        cluster_size: geometry.cluster,
        label: label.map(|l| String::from_utf8_lossy(&l).trim_end().to_string()),
        warnings: tree.warnings,
        notes,
    })
}

// ---------------------------------------------------------------------------
// The folder.

/// The folder to copy, scanned and checked.
struct Tree {
    /// Its folders, each after its parent; `dirs[0]` is the root.
    dirs: Vec<Dir>,
    files: u64,
    bytes: u64,
    warnings: Vec<String>,
}

struct Dir {
    /// Path in the volume, `/`-separated, empty for the root.
    path: String,
    source: PathBuf,
    /// The real path, to notice symbolic links that lead back up.
    real: PathBuf,
    parent: usize,
    entries: Vec<Item>,
}

struct Item {
    name: String,
    source: PathBuf,
    /// `None` for a folder.
    file: Option<FileInfo>,
}

struct FileInfo {
    len: u64,
    modified: Option<SystemTime>,
}

/// 32-byte directory entries a name takes: its short entry and the long-name
/// entries (13 UTF-16 units each) in front of it. Every name is counted with
/// long-name entries, which only overestimates.
fn slots(name: &str) -> u64 {
    1 + (name.encode_utf16().count() as u64).div_ceil(13)
}

fn scan(src: &Path) -> Result<Tree> {
    let meta = std::fs::metadata(src).map_err(|e| Error::local(src, "stat", e))?;
    if !meta.is_dir() {
        return Err(Error::Invalid(format!("{}: not a folder", src.display())));
    }
    let root_real = std::fs::canonicalize(src).map_err(|e| Error::local(src, "resolve", e))?;
    let mut tree = Tree {
        dirs: vec![Dir {
            path: String::new(),
            source: src.to_path_buf(),
            real: root_real.clone(),
            parent: 0,
            entries: Vec::new(),
        }],
        files: 0,
        bytes: 0,
        warnings: Vec::new(),
    };
    let mut i = 0;
    while i < tree.dirs.len() {
        let source = tree.dirs[i].source.clone();
        let mut listing = Vec::new();
        for e in std::fs::read_dir(&source).map_err(|e| Error::local(&source, "read folder", e))? {
            listing.push(
                e.map_err(|e| Error::local(&source, "read folder", e))?
                    .path(),
            );
        }
        listing.sort();
        // FAT compares names without case: upper-cased name → name.
        let mut taken: HashMap<String, String> = HashMap::new();
        let mut entries = Vec::new();
        for path in listing {
            let Some(name) = path.file_name().map(|n| n.to_os_string()) else {
                continue;
            };
            let name = name.into_string().map_err(|_| {
                Error::Invalid(format!(
                    "{}: the name is not UTF-8, so it has no FAT long name",
                    path.display()
                ))
            })?;
            let lmeta =
                std::fs::symlink_metadata(&path).map_err(|e| Error::local(&path, "stat", e))?;
            let (meta, real) = if lmeta.file_type().is_symlink() {
                match std::fs::canonicalize(&path) {
                    Ok(t) if t.starts_with(&root_real) => {
                        let m =
                            std::fs::metadata(&path).map_err(|e| Error::local(&path, "stat", e))?;
                        (m, t)
                    }
                    Ok(t) => {
                        tree.warnings.push(format!(
                            "{}: skipped: a symbolic link to {}, outside {}",
                            path.display(),
                            t.display(),
                            src.display()
                        ));
                        continue;
                    }
                    Err(_) => {
                        tree.warnings.push(format!(
                            "{}: skipped: a broken symbolic link",
                            path.display()
                        ));
                        continue;
                    }
                }
            } else {
                (lmeta, PathBuf::new())
            };
            let file = if meta.is_file() {
                let len = meta.len();
                if len > MAX_FILE {
                    return Err(Error::Invalid(format!(
                        "{}: {len} bytes, more than the {MAX_FILE} a FAT file can hold",
                        path.display()
                    )));
                }
                Some(FileInfo {
                    len,
                    modified: meta.modified().ok(),
                })
            } else if meta.is_dir() {
                None
            } else {
                tree.warnings.push(format!(
                    "{}: skipped: not a regular file or folder (a device, FIFO or socket)",
                    path.display()
                ));
                continue;
            };
            check_name(&name, &path)?;
            if let Some(other) = taken.insert(name.to_uppercase(), name.clone()) {
                return Err(Error::Invalid(format!(
                    "{}: FAT names ignore case, and {other:?} in the same folder has the same name",
                    path.display()
                )));
            }
            if let Some(f) = &file {
                tree.files += 1;
                tree.bytes += f.len;
            } else {
                let real = if real.as_os_str().is_empty() {
                    std::fs::canonicalize(&path).map_err(|e| Error::local(&path, "resolve", e))?
                } else {
                    real
                };
                // A link to a folder this one is inside would copy for ever.
                let mut up = Some(i);
                while let Some(k) = up {
                    if tree.dirs[k].real == real {
                        tree.warnings.push(format!(
                            "{}: skipped: a symbolic link to {}, a folder it is inside",
                            path.display(),
                            real.display()
                        ));
                        break;
                    }
                    up = (k != 0).then_some(tree.dirs[k].parent);
                }
                if up.is_some() {
                    continue;
                }
                let parent_path = &tree.dirs[i].path;
                tree.dirs.push(Dir {
                    path: if parent_path.is_empty() {
                        name.clone()
                    } else {
                        format!("{parent_path}/{name}")
                    },
                    source: path.clone(),
                    real,
                    parent: i,
                    entries: Vec::new(),
                });
            }
            entries.push(Item {
                name,
                source: path,
                file,
            });
        }
        tree.dirs[i].entries = entries;
        i += 1;
    }
    Ok(tree)
}

/// Refuses names a FAT long name cannot hold, or that `fatfs` does not write.
///
/// The FAT specification forbids `" * / : < > ? \ |` and control characters;
/// Windows drops trailing dots and spaces, so such a file could not be opened
/// there. `fatfs` 0.3 further takes at most 255 bytes of UTF-8 and only
/// characters of the Basic Multilingual Plane.
fn check_name(name: &str, path: &Path) -> Result<()> {
    let bad = |why: String| Err(Error::Invalid(format!("{}: {why}", path.display())));
    for c in name.chars() {
        let ok = c.is_ascii_alphanumeric()
            || ('\u{80}'..='\u{FFFF}').contains(&c)
            || "$%'-_@~`!(){}. +,;=[]^#&".contains(c);
        if !ok {
            return if (c as u32) > 0xFFFF {
                bad(format!(
                    "the name holds {c:?}, outside the Basic Multilingual Plane, which the FAT writer cannot store"
                ))
            } else {
                bad(format!("FAT names cannot hold {c:?}"))
            };
        }
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return bad("FAT names cannot end with a dot or a space".into());
    }
    if name.len() > 255 {
        return bad(format!(
            "the name is {} bytes of UTF-8; the FAT writer takes at most 255",
            name.len()
        ));
    }
    Ok(())
}

/// The 11 bytes of a volume label: upper-case, padded with spaces.
fn label_bytes(label: &str) -> Result<[u8; 11]> {
    let up = label.to_ascii_uppercase();
    if up.is_empty() || up.len() > 11 {
        return Err(Error::Invalid(format!(
            "label {label:?}: a FAT label has 1 to 11 characters"
        )));
    }
    if let Some(c) = up
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || " !#$%&'()-@^_`{}~".contains(*c)))
    {
        return Err(Error::Invalid(format!(
            "label {label:?}: a FAT label holds letters, digits, spaces and ! # $ % & ' ( ) - @ ^ _ ` {{ }} ~, not {c:?}"
        )));
    }
    if up.starts_with(' ') {
        return Err(Error::Invalid(format!(
            "label {label:?}: a FAT label cannot start with a space"
        )));
    }
    let mut out = [b' '; 11];
    out[..up.len()].copy_from_slice(up.as_bytes());
    Ok(out)
}

impl Tree {
    /// Entries in the root directory, with one for the volume label.
    fn root_slots(&self) -> u64 {
        1 + self.dirs[0]
            .entries
            .iter()
            .map(|e| slots(&e.name))
            .sum::<u64>()
    }

    /// Root directory entries to format a FAT12/16 volume with.
    fn root_entries(&self) -> Result<u16> {
        let n = self.root_slots().next_multiple_of(16).max(512);
        if n > MAX_ROOT_ENTRIES {
            return Err(Error::Invalid(format!(
                "{}: its top level needs {n} directory entries, more than FAT12 and FAT16 give the root ({MAX_ROOT_ENTRIES}); use FAT32, or move files into a subfolder",
                self.dirs[0].source.display()
            )));
        }
        Ok(n as u16)
    }

    /// Clusters the tree takes with clusters of `cluster` bytes; on FAT32 the
    /// root directory is in clusters too.
    fn clusters(&self, cluster: u64, fat32: bool) -> u64 {
        let mut n = 0;
        for (i, d) in self.dirs.iter().enumerate() {
            let mut entries = 0;
            for e in &d.entries {
                entries += slots(&e.name);
                if let Some(f) = &e.file {
                    n += f.len.div_ceil(cluster);
                }
            }
            if i == 0 && !fat32 {
                continue;
            }
            // The root has the label; others have `.` and `..`, each of which
            // `fatfs` 0.3 writes with a long-name entry.
            entries += if i == 0 { 1 } else { 4 };
            n += (entries * 32).div_ceil(cluster).max(1);
        }
        n
    }
}

// ---------------------------------------------------------------------------
// Sizing.

/// What a formatted volume looks like, from its boot sector.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    fat: FatType,
    cluster: u64,
    clusters: u64,
    /// Byte offset of the root directory's first entry.
    root_dir: u64,
}

impl Geometry {
    /// Reads the BPB (Microsoft FAT specification, section 3).
    fn read(boot: &[u8]) -> Option<Geometry> {
        let fat = FatType::of(fat_kind(boot)?)?;
        let le16 = |at: usize| u16::from_le_bytes([boot[at], boot[at + 1]]) as u64;
        let le32 = |at: usize| {
            u32::from_le_bytes([boot[at], boot[at + 1], boot[at + 2], boot[at + 3]]) as u64
        };
        let bps = le16(11);
        let cluster = boot[13] as u64 * bps;
        let reserved = le16(14);
        let fats = boot[16] as u64;
        let root_sectors = (le16(17) * 32).div_ceil(bps.max(1));
        let total = if le16(19) != 0 { le16(19) } else { le32(32) };
        let fat_size = if le16(22) != 0 { le16(22) } else { le32(36) };
        let data = reserved + fats * fat_size + root_sectors;
        let clusters = total.checked_sub(data)? / boot[13].max(1) as u64;
        let root_dir = if fat == FatType::Fat32 {
            (data + le32(44).checked_sub(2)? * boot[13] as u64) * bps
        } else {
            (reserved + fats * fat_size) * bps
        };
        Some(Geometry {
            fat,
            cluster,
            clusters,
            root_dir,
        })
    }
}

/// The sizes chosen for an image.
#[derive(Clone, Copy, Debug)]
struct Plan {
    fat: FatType,
    volume: u64,
    disk_size: u64,
    root_entries: u16,
}

fn format_options(
    fat: FatType,
    root_entries: u16,
    label: Option<[u8; 11]>,
) -> fatfs::FormatVolumeOptions {
    let mut o = fatfs::FormatVolumeOptions::new()
        .fat_type(fat.fatfs())
        .max_root_dir_entries(root_entries)
        .volume_id(random() as u32);
    if let Some(l) = label {
        o = o.volume_label(l);
    }
    o
}

/// The geometry `fatfs` gives a volume of `bytes` asked to be `fat`, found by
/// formatting a sparse volume in memory; `None` when it cannot make one.
fn probe(bytes: u64, fat: FatType, root_entries: u16) -> Option<Geometry> {
    let mut dev = Sparse {
        len: bytes,
        pos: 0,
        sectors: BTreeMap::new(),
    };
    fatfs::format_volume(&mut dev, format_options(fat, root_entries, None)).ok()?;
    let mut boot = [0u8; 512];
    dev.read_at(&mut boot, 0);
    Geometry::read(&boot)
}

/// Disk bytes a volume of `volume` bytes takes with `table`.
fn disk_for(volume: u64, table: TableKind) -> u64 {
    match table {
        TableKind::None => volume,
        TableKind::Mbr => PART_START + volume,
        TableKind::Gpt => (PART_START + volume + GPT_TAIL).next_multiple_of(MIB),
    }
}

/// Volume bytes a disk of `disk` bytes leaves with `table`.
fn volume_for(disk: u64, table: TableKind) -> Option<u64> {
    let v = match table {
        TableKind::None => Some(disk),
        TableKind::Mbr => disk.checked_sub(PART_START),
        TableKind::Gpt => disk.checked_sub(PART_START + GPT_TAIL),
    }?;
    Some(v / SECTOR * SECTOR).filter(|&v| v > 0)
}

/// The smallest volume (a whole number of MiB) of type `fat` that holds the
/// tree with `slack` percent to spare.
fn fit(tree: &Tree, fat: FatType, slack: u64) -> Result<(u64, Geometry)> {
    let root_entries = if fat == FatType::Fat32 {
        0
    } else {
        tree.root_entries()?
    };
    let too_big = || {
        Error::Invalid(format!(
            "{}: {} bytes in {} files do not fit in {fat}, which makes {}",
            tree.dirs[0].source.display(),
            tree.bytes,
            tree.files,
            fat.range()
        ))
    };
    let mut size = fat.smallest();
    for _ in 0..1000 {
        size = size.next_multiple_of(MIB);
        if size / SECTOR > u32::MAX as u64 {
            return Err(too_big());
        }
        match probe(size, fat, root_entries) {
            Some(g) if g.fat == fat => {
                let need =
                    (tree.clusters(g.cluster, fat == FatType::Fat32) * (100 + slack)).div_ceil(100);
                if g.clusters >= need {
                    return Ok((size, g));
                }
                size += (need - g.clusters) * g.cluster;
            }
            // Past the most clusters of the type.
            Some(g) if g.fat > fat => return Err(too_big()),
            // Too few clusters for the type yet.
            _ => size += (size / 8).max(MIB),
        }
    }
    Err(too_big())
}

fn plan(tree: &Tree, opts: &FromDirOptions) -> Result<Plan> {
    let table = opts.table;
    let with_root = |fat: FatType, volume: u64| -> Result<Plan> {
        Ok(Plan {
            fat,
            volume,
            disk_size: disk_for(volume, table),
            root_entries: if fat == FatType::Fat32 {
                0
            } else {
                tree.root_entries()?
            },
        })
    };
    let Some(disk) = opts.size else {
        let (fat, volume) = match opts.fat {
            Some(f) => (f, fit(tree, f, SLACK_PERCENT)?.0),
            None => {
                let small = [(FatType::Fat12, 16 * MIB), (FatType::Fat16, 512 * MIB)]
                    .into_iter()
                    .find_map(|(f, below)| {
                        fit(tree, f, SLACK_PERCENT)
                            .ok()
                            .filter(|(v, _)| *v < below)
                            .map(|(v, _)| (f, v))
                    });
                match small {
                    Some(s) => s,
                    None => (FatType::Fat32, fit(tree, FatType::Fat32, SLACK_PERCENT)?.0),
                }
            }
        };
        return with_root(fat, volume);
    };
    let too_small = |fat: FatType| {
        let needed = match fit(tree, fat, 0) {
            Ok((v, _)) => {
                let d = disk_for(v, table);
                format!("at least {} ({d} bytes)", mib(d))
            }
            Err(e) => format!("more ({e})"),
        };
        Error::Invalid(format!(
            "an image of {} ({disk} bytes) is too small for {}: with {fat} and {} it needs {needed}",
            mib(disk),
            tree.dirs[0].source.display(),
            table_name(table),
        ))
    };
    let Some(volume) = volume_for(disk, table) else {
        return Err(too_small(opts.fat.unwrap_or(FatType::Fat12)));
    };
    let fat = opts.fat.unwrap_or(FatType::for_size(volume));
    let plan = with_root(fat, volume)?;
    match probe(volume, fat, plan.root_entries) {
        Some(g) if g.fat == fat => {
            let need = tree.clusters(g.cluster, fat == FatType::Fat32);
            if g.clusters < need {
                return Err(too_small(fat));
            }
        }
        _ => {
            return Err(Error::Invalid(format!(
                "{fat} cannot be made on a volume of {} ({volume} bytes): fatfs makes {fat} on {}",
                mib(volume),
                fat.range()
            )))
        }
    }
    Ok(plan)
}

fn table_name(t: TableKind) -> &'static str {
    match t {
        TableKind::Mbr => "an MBR partition table",
        TableKind::Gpt => "a GUID partition table",
        TableKind::None => "no partition table",
    }
}

fn mib(bytes: u64) -> String {
    if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / KIB as f64)
    }
}

/// A volume in memory that stores only the sectors written with something
/// other than zeros, for [`probe`].
struct Sparse {
    len: u64,
    pos: u64,
    sectors: BTreeMap<u64, Vec<u8>>,
}

impl Sparse {
    fn read_at(&self, buf: &mut [u8], off: u64) {
        for (i, b) in buf.iter_mut().enumerate() {
            let at = off + i as u64;
            *b = self
                .sectors
                .get(&(at / SECTOR))
                .map_or(0, |s| s[(at % SECTOR) as usize]);
        }
    }
}

impl Read for Sparse {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.len.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        self.read_at(&mut buf[..n], self.pos);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Sparse {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (self.len.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "past the end of the volume",
            ));
        }
        let mut done = 0;
        while done < n {
            let at = self.pos + done as u64;
            let within = (at % SECTOR) as usize;
            let k = (SECTOR as usize - within).min(n - done);
            let part = &buf[done..done + k];
            let key = at / SECTOR;
            if let Some(s) = self.sectors.get_mut(&key) {
                s[within..within + k].copy_from_slice(part);
            } else if part.iter().any(|&b| b != 0) {
                let mut s = vec![0u8; SECTOR as usize];
                s[within..within + k].copy_from_slice(part);
                self.sectors.insert(key, s);
            }
            done += k;
        }
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Sparse {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

/// A number that differs from run to run, for the volume serial number and
/// the MBR disk signature (std's hasher keys are random per process).
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(now);
    h.finish()
}

// ---------------------------------------------------------------------------
// Writing.

/// Writes the partition table; returns where the volume starts.
fn write_table(
    disk: &SharedDisk,
    name: &str,
    table: TableKind,
    disk_size: u64,
    volume: u64,
    fat: FatType,
) -> Result<u64> {
    let start_lba = PART_START / SECTOR;
    let sectors = volume / SECTOR;
    match table {
        TableKind::None => Ok(0),
        TableKind::Mbr => {
            let sectors = u32::try_from(sectors).map_err(|_| {
                Error::Invalid(format!(
                    "{name}: an MBR partition holds at most 2 TiB; use --table gpt"
                ))
            })?;
            let mut whole = Region::whole(disk.clone(), name)?;
            let bad = |e: mbrman::Error| Error::Invalid(format!("{name}: writing the MBR: {e}"));
            let sig = (random() as u32).to_le_bytes();
            let mut mbr = mbrman::MBR::new_from(&mut whole, SECTOR as u32, sig).map_err(bad)?;
            mbr[1] = mbrman::MBRPartitionEntry {
                boot: mbrman::BOOT_INACTIVE,
                first_chs: mbrman::CHS::empty(),
                sys: fat.mbr_type(),
                last_chs: mbrman::CHS::empty(),
                starting_lba: start_lba as u32,
                sectors,
            };
            mbr.write_into(&mut whole).map_err(bad)?;
            Ok(PART_START)
        }
        TableKind::Gpt => {
            let mut whole = Region::whole(disk.clone(), name)?;
            let lbas = disk_size / SECTOR;
            let bad = |what: &str, e: &dyn fmt::Display| {
                Error::Invalid(format!(
                    "{name}: writing the GUID partition table: {what}: {e}"
                ))
            };
            // The protective MBR covers the disk after sector 0, or as much
            // of it as 32 bits count (UEFI specification, 5.2.3).
            let covered = u32::try_from(lbas - 1).unwrap_or(u32::MAX);
            gpt::mbr::ProtectiveMBR::with_lb_size(covered)
                .overwrite_lba0(&mut whole)
                .map_err(|e| bad("protective MBR", &e))?;
            let mut g = gpt::GptConfig::new()
                .writable(true)
                .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
                .create_from_device(whole, None)
                .map_err(|e| bad("headers", &e))?;
            g.add_partition_at(
                "Basic data partition",
                1,
                start_lba,
                sectors,
                gpt::partition_types::BASIC,
                0,
            )
            .map_err(|e| bad("partition 1", &e))?;
            g.write().map_err(|e| bad("write", &e))?;
            Ok(PART_START)
        }
    }
}

/// Formats the volume and writes the label into the root directory too,
/// where Windows and mtools read it.
fn format_volume(
    disk: &SharedDisk,
    start: u64,
    len: u64,
    name: &str,
    plan: Plan,
    label: Option<[u8; 11]>,
) -> Result<Geometry> {
    let mut region = Region::new(disk.clone(), start, len, name)?;
    fatfs::format_volume(
        &mut region,
        format_options(plan.fat, plan.root_entries, label),
    )
    .map_err(|e| from_io(e, &format!("{name}: formatting {}", plan.fat)))?;
    let mut boot = [0u8; 512];
    region.read_at(&mut boot, 0).map_err(|e| from_io(e, name))?;
    let g = Geometry::read(&boot)
        .filter(|g| g.fat == plan.fat)
        .ok_or_else(|| {
            Error::Corrupt(format!(
                "{name}: the new {} boot sector does not read back",
                plan.fat
            ))
        })?;
    if let Some(l) = label {
        let mut entry = [0u8; 32];
        entry[..11].copy_from_slice(&l);
        entry[11] = 0x08; // ATTR_VOLUME_ID
        let (date, time) = fat_date_time(SystemTime::now());
        entry[22..24].copy_from_slice(&time.to_le_bytes());
        entry[24..26].copy_from_slice(&date.to_le_bytes());
        region
            .write_at(&entry, g.root_dir)
            .map_err(|e| from_io(e, name))?;
    }
    Ok(g)
}

/// Copies the tree into the formatted volume: folders first, through
/// [`FatVolume`] (which repairs the `.` and `..` entries `fatfs` writes),
/// then the files, streamed, with their modification times.
fn copy_tree(
    disk: &SharedDisk,
    start: u64,
    len: u64,
    name: &str,
    tree: &Tree,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let mut vol = FatVolume::open(Region::new(disk.clone(), start, len, name)?)?;
    for d in tree.dirs.iter().skip(1) {
        vol.mkdir(&format!("/{}", d.path))?;
    }
    vol.flush()?;
    drop(vol);

    let fs = fatfs::FileSystem::new(
        Region::new(disk.clone(), start, len, name)?,
        fatfs::FsOptions::new(),
    )
    .map_err(|e| from_io(e, &format!("{name}: mounting the new volume")))?;
    let mut buf = vec![0u8; 256 << 10];
    let mut done = 0u64;
    progress(0, tree.bytes);
    {
        let root = fs.root_dir();
        for d in &tree.dirs {
            let dir = if d.path.is_empty() {
                root.clone()
            } else {
                root.open_dir(&d.path)
                    .map_err(|e| from_io(e, &format!("{name}: /{}", d.path)))?
            };
            for item in &d.entries {
                let Some(info) = &item.file else { continue };
                let at = if d.path.is_empty() {
                    format!("/{}", item.name)
                } else {
                    format!("/{}/{}", d.path, item.name)
                };
                let werr = |e: io::Error| from_io(e, &format!("{name}: {at}"));
                let src = std::fs::File::open(&item.source)
                    .map_err(|e| Error::local(&item.source, "open", e))?;
                let mut src = src.take(info.len);
                let mut file = dir.create_file(&item.name).map_err(werr)?;
                let mut copied = 0u64;
                loop {
                    let n = match src.read(&mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(Error::local(&item.source, "read", e)),
                    };
                    if n == 0 {
                        break;
                    }
                    file.write_all(&buf[..n]).map_err(werr)?;
                    copied += n as u64;
                    done += n as u64;
                    progress(done, tree.bytes);
                }
                if copied != info.len {
                    return Err(Error::Invalid(format!(
                        "{}: shrank from {} to {copied} bytes while being copied",
                        item.source.display(),
                        info.len
                    )));
                }
                if let Some(t) = info.modified {
                    // Set last: every write stamps the time of the write.
                    #[allow(deprecated)]
                    file.set_modified(fat_datetime(t));
                }
                file.flush().map_err(werr)?;
            }
        }
    }
    // Counting the free clusters records the count in the FAT32 FSInfo
    // sector at unmount, instead of leaving it "unknown".
    fs.stats()
        .map_err(|e| from_io(e, &format!("{name}: counting free clusters")))?;
    fs.unmount()
        .map_err(|e| from_io(e, &format!("{name}: unmounting the new volume")))?;
    Ok(())
}

/// A time as FAT stores it: UTC (FAT has no zone; vmhub reads FAT times as
/// UTC too), clamped to the years FAT counts (1980–2107).
fn fat_datetime(t: SystemTime) -> fatfs::DateTime {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (date, time) = if year < 1980 {
        ((1980, 1, 1), (0, 0, 0))
    } else if year > 2107 {
        ((2107, 12, 31), (23, 59, 58))
    } else {
        ((year, month, day), (rem / 3600, rem % 3600 / 60, rem % 60))
    };
    fatfs::DateTime {
        date: fatfs::Date {
            year: date.0 as u16,
            month: date.1 as u16,
            day: date.2 as u16,
        },
        time: fatfs::Time {
            hour: time.0 as u16,
            min: time.1 as u16,
            sec: time.2 as u16,
            millis: 0,
        },
    }
}

/// The on-disk date and time words of a directory entry (FAT specification,
/// "Date and Time Formats").
fn fat_date_time(t: SystemTime) -> (u16, u16) {
    let d = fat_datetime(t);
    let date = ((d.date.year - 1980) << 9) | (d.date.month << 5) | d.date.day;
    let time = (d.time.hour << 11) | (d.time.min << 5) | (d.time.sec / 2);
    (date, time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn names_fat_cannot_hold_are_refused() {
        let p = Path::new("x");
        for ok in [
            "a.txt",
            "résumé été.txt",
            "日本語.txt",
            "a b [1] (2) {3}.tar.gz",
            ".hidden",
        ] {
            check_name(ok, p).unwrap();
        }
        for bad in [
            "a:b", "a*", "q?", "\"", "<", ">", "|", "a\\b", "dot.", "space ", "\u{1}", "😀",
        ] {
            assert!(check_name(bad, p).is_err(), "{bad:?}");
        }
        assert!(check_name(&"é".repeat(128), p).is_err());
    }

    #[test]
    fn labels() {
        assert_eq!(&label_bytes("data").unwrap(), b"DATA       ");
        assert!(label_bytes("twelve chars").is_err());
        assert!(label_bytes("a.b").is_err());
        assert!(label_bytes("").is_err());
    }

    #[test]
    fn times() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_209_804);
        let d = fat_datetime(t);
        assert_eq!((d.date.year, d.date.month, d.date.day), (2024, 2, 29));
        assert_eq!((d.time.hour, d.time.min, d.time.sec), (12, 30, 4));
        let d = fat_datetime(SystemTime::UNIX_EPOCH);
        assert_eq!((d.date.year, d.date.month, d.date.day), (1980, 1, 1));
    }

    #[test]
    fn probe_finds_the_types_fatfs_makes() {
        assert_eq!(
            probe(8 * MIB, FatType::Fat12, 512).map(|g| g.fat),
            Some(FatType::Fat12)
        );
        assert_eq!(
            probe(64 * MIB, FatType::Fat16, 512).map(|g| g.fat),
            Some(FatType::Fat16)
        );
        assert_eq!(
            probe(40 * MIB, FatType::Fat32, 0).map(|g| g.fat),
            Some(FatType::Fat32)
        );
        // Too small for FAT32: fatfs falls back or fails, never FAT32.
        assert_ne!(
            probe(8 * MIB, FatType::Fat32, 0).map(|g| g.fat),
            Some(FatType::Fat32)
        );
    }
}
