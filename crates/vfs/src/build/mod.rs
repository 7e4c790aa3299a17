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
//!
//! The steps, one module each: `scan` walks and checks the folder, with
//! `names` for the names FAT can hold; `size` chooses the volume size and
//! FAT type, asking `probe` what `fatfs` makes; `table` writes the
//! partition table; `copy` formats the volume and copies the folder in.

mod copy;
mod names;
mod probe;
mod scan;
mod size;
mod table;

use crate::fs::FsKind;
use crate::part::TableKind;
use crate::region::share;
use crate::{Error, Result};
use copy::{copy_tree, format_volume};
use names::label_bytes;
use scan::scan;
use serde::Serialize;
use size::plan;
use std::fmt;
use std::path::Path;
use std::time::SystemTime;
use table::write_table;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;

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
