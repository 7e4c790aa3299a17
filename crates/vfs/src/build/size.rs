//! Sizing: how much room the folder takes, and the volume size and FAT type
//! that hold it.

use super::probe::{probe, Geometry};
use super::scan::Tree;
use super::table::{disk_for, table_name, volume_for};
use super::{FatType, FromDirOptions, KIB, MIB, SECTOR};
use crate::{Error, Result};

/// The most entries a fixed FAT12/16 root directory is given (a multiple of
/// 16 that fits the boot sector's 16-bit field).
const MAX_ROOT_ENTRIES: u64 = 65520;
/// Room left beyond what the files need when the size is chosen, in percent.
const SLACK_PERCENT: u64 = 10;

// ---------------------------------------------------------------------------
// Sizing.

/// 32-byte directory entries a name takes: its short entry and the long-name
/// entries (13 UTF-16 units each) in front of it. Every name is counted with
/// long-name entries, which only overestimates.
fn slots(name: &str) -> u64 {
    1 + (name.encode_utf16().count() as u64).div_ceil(13)
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

/// The sizes chosen for an image.
#[derive(Clone, Copy, Debug)]
pub(super) struct Plan {
    pub(super) fat: FatType,
    pub(super) volume: u64,
    pub(super) disk_size: u64,
    pub(super) root_entries: u16,
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

pub(super) fn plan(tree: &Tree, opts: &FromDirOptions) -> Result<Plan> {
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

fn mib(bytes: u64) -> String {
    if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / KIB as f64)
    }
}
