//! Partition tables: MBR (with extended and logical partitions, by `mbrman`)
//! and GPT (protective MBR, both headers checked, by `gpt`).
//!
//! A disk with a filesystem at sector 0 and no table (a "superfloppy", an ISO)
//! has one pseudo-partition covering all of it.

mod names;

use crate::fs::detect::fat_kind;
use crate::fs::{detect, FsKind};
use crate::region::{Region, SharedDisk};
use crate::{Error, Result};
use serde::Serialize;

/// Which partition table a disk has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TableKind {
    /// A DOS/MBR table.
    Mbr,
    /// A GUID partition table.
    Gpt,
    /// No table: the disk is one filesystem, or empty.
    None,
}

/// One partition.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Partition {
    /// Its number, as `fs` paths name it: MBR 1–4 primary and 5… logical
    /// (the Linux numbering), GPT the entry's index from 1; 0 for a disk
    /// without a table.
    pub number: u32,
    /// First byte on the disk.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// The type: an MBR type byte ("0x83") or a GPT type GUID.
    pub type_id: String,
    /// What the type means ("Linux", "EFI System").
    pub type_name: String,
    /// The GPT partition name, if any.
    pub label: Option<String>,
    /// Bootable flag (MBR active, GPT legacy-BIOS-bootable attribute).
    pub bootable: bool,
    /// The filesystem found in it.
    pub filesystem: FsKind,
    /// An MBR extended partition (a container of logical ones).
    pub extended: bool,
}

/// A disk's partition table.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Table {
    /// MBR, GPT or none.
    pub kind: TableKind,
    /// Bytes per logical sector the table counts in.
    pub sector_size: u64,
    /// The disk's size in bytes.
    pub disk_size: u64,
    /// GPT disk GUID or MBR disk signature.
    pub disk_id: Option<String>,
    /// The partitions, by number.
    pub partitions: Vec<Partition>,
    /// Problems found that did not stop the table from being read (a bad GPT
    /// backup header, a partition past the end of the disk).
    pub warnings: Vec<String>,
}

impl Table {
    /// The partition numbered `n`.
    pub fn get(&self, n: u32) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.number == n)
    }
}

const SECTOR: u64 = 512;
/// The most GPT entries accepted (the usual table has 128).
const MAX_GPT_ENTRIES: u64 = 16384;

/// Reads the partition table of `disk`; `name` names the disk in messages.
pub fn read_table(disk: &SharedDisk, name: &str) -> Result<Table> {
    let mut whole = Region::whole(disk.clone(), name)?;
    let size = whole.len();
    let mut mbr = [0u8; 512];
    if size >= SECTOR {
        whole.read_at_checked(&mut mbr, 0)?;
    }
    let signed = size >= SECTOR && mbr[510] == 0x55 && mbr[511] == 0xAA;
    let entries: Vec<&[u8]> = (0..4).map(|i| &mbr[446 + 16 * i..462 + 16 * i]).collect();
    let protective = signed && entries.iter().any(|e| e[4] == 0xEE);
    if protective {
        return read_gpt(disk, name, &mut whole);
    }
    // A FAT or NTFS boot sector also ends in 55 AA; its BPB tells it apart.
    let boot_fs =
        fat_kind(&mbr).is_some() || &mbr[3..11] == b"NTFS    " || &mbr[3..11] == b"EXFAT   ";
    let plausible = signed
        && !boot_fs
        && entries.iter().all(|e| e[0] == 0 || e[0] == 0x80)
        && entries.iter().any(|e| e[4] != 0);
    if plausible {
        return read_mbr(disk, name, &mut whole);
    }
    let filesystem = detect(&mut whole)?;
    let partitions = if filesystem == FsKind::Unknown && !signed {
        Vec::new()
    } else {
        vec![Partition {
            number: 0,
            start: 0,
            size,
            type_id: String::new(),
            type_name: "whole disk".into(),
            label: None,
            bootable: false,
            filesystem,
            extended: false,
        }]
    };
    Ok(Table {
        kind: TableKind::None,
        sector_size: SECTOR,
        disk_size: size,
        disk_id: None,
        partitions,
        warnings: Vec::new(),
    })
}

/// Finds the filesystem in `[start, start+len)`, or explains why not.
fn probe(disk: &SharedDisk, name: &str, n: u32, start: u64, len: u64) -> (FsKind, Option<String>) {
    match Region::new(disk.clone(), start, len, format!("{name} partition {n}")) {
        Ok(mut r) => match detect(&mut r) {
            Ok(k) => (k, None),
            Err(e) => (FsKind::Unknown, Some(e.to_string())),
        },
        Err(e) => (FsKind::Unknown, Some(e.to_string())),
    }
}

fn read_mbr(disk: &SharedDisk, name: &str, whole: &mut Region) -> Result<Table> {
    let size = whole.len();
    std::io::Seek::seek(whole, std::io::SeekFrom::Start(0))
        .map_err(|e| crate::region::from_io(e, name))?;
    let mbr = mbrman::MBR::read_from(whole, SECTOR as u32)
        .map_err(|e| Error::Corrupt(format!("{name}: MBR partition table: {e}")))?;
    let mut parts = Vec::new();
    let mut warnings = Vec::new();
    let mut add =
        |number: u32, e: &mbrman::MBRPartitionEntry, extended: bool, parts: &mut Vec<Partition>| {
            let start = e.starting_lba as u64 * SECTOR;
            let len = e.sectors as u64 * SECTOR;
            let (filesystem, warning) = if extended || start + len > size {
                (FsKind::Unknown, None)
            } else {
                probe(disk, name, number, start, len)
            };
            if start + len > size {
                warnings.push(format!(
                    "partition {number} ends at byte {}, past the end of the disk ({size} bytes)",
                    start + len
                ));
            }
            if let Some(w) = warning {
                warnings.push(w);
            }
            parts.push(Partition {
                number,
                start,
                size: len,
                type_id: format!("0x{:02x}", e.sys),
                type_name: names::mbr_type(e.sys).to_string(),
                label: None,
                bootable: e.boot == mbrman::BOOT_ACTIVE,
                filesystem,
                extended: matches!(e.sys, 0x05 | 0x0f | 0x85),
            });
        };
    // Primary entries are numbered 1–4 by slot, logical ones 5 and up.
    for (i, e) in mbr.iter() {
        if e.is_used() {
            let extended = i <= 4 && matches!(e.sys, 0x05 | 0x0f | 0x85);
            add(i as u32, e, extended, &mut parts);
        }
    }
    Ok(Table {
        kind: TableKind::Mbr,
        sector_size: SECTOR,
        disk_size: size,
        disk_id: Some(format!(
            "{:02x}{:02x}{:02x}{:02x}",
            mbr.header.disk_signature[3],
            mbr.header.disk_signature[2],
            mbr.header.disk_signature[1],
            mbr.header.disk_signature[0]
        )),
        partitions: parts,
        warnings,
    })
}

/// The GPT header at `lba`, checked for the fields the `gpt` crate would
/// trust without bounds: `Ok(None)` when there is no header there.
fn check_gpt_header(whole: &mut Region, lba: u64) -> Result<Option<String>> {
    let mut h = [0u8; 92];
    let Some(off) = lba.checked_mul(SECTOR).filter(|o| o + 92 <= whole.len()) else {
        return Ok(None);
    };
    whole.read_at_checked(&mut h, off)?;
    if &h[0..8] != b"EFI PART" {
        return Ok(None);
    }
    let num = u32::from_le_bytes([h[80], h[81], h[82], h[83]]) as u64;
    let entry = u32::from_le_bytes([h[84], h[85], h[86], h[87]]);
    if entry != 128 {
        return Ok(Some(format!(
            "GPT header at sector {lba}: partition entries of {entry} bytes (vmhub reads 128-byte entries)"
        )));
    }
    if num > MAX_GPT_ENTRIES {
        return Ok(Some(format!(
            "GPT header at sector {lba}: {num} partition entries (more than {MAX_GPT_ENTRIES})"
        )));
    }
    Ok(Some(String::new()))
}

fn read_gpt(disk: &SharedDisk, name: &str, whole: &mut Region) -> Result<Table> {
    let size = whole.len();
    let last = size / SECTOR - 1;
    let mut warnings = Vec::new();
    let primary = check_gpt_header(whole, 1)?;
    let backup = check_gpt_header(whole, last)?;
    for (which, h) in [("primary", &primary), ("backup", &backup)] {
        match h {
            Some(p) if !p.is_empty() => {
                return Err(Error::Corrupt(format!("{name}: {p} ({which} header)")))
            }
            None => warnings.push(format!("the {which} GPT header is missing")),
            _ => {}
        }
    }
    if primary.is_none() && backup.is_none() {
        return Err(Error::Corrupt(format!(
            "{name}: a protective MBR announces a GPT, but neither GPT header is there"
        )));
    }
    let device = whole.reopen()?;
    let gpt = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .open_from_device(device)
        .map_err(|e| Error::Corrupt(format!("{name}: GUID partition table: {e}")))?;
    if let Err(e) = gpt.primary_header() {
        warnings.push(format!("primary GPT header: {e}"));
    }
    if let Err(e) = gpt.backup_header() {
        warnings.push(format!("backup GPT header: {e}"));
    }
    let mut parts = Vec::new();
    for (&n, p) in gpt.partitions() {
        if !p.is_used() {
            continue;
        }
        let start = p.first_lba.saturating_mul(SECTOR);
        let len = p
            .last_lba
            .checked_sub(p.first_lba)
            .and_then(|d| d.checked_add(1))
            .and_then(|s| s.checked_mul(SECTOR));
        let Some(len) = len else {
            warnings.push(format!(
                "partition {n}: last sector {} before first sector {}",
                p.last_lba, p.first_lba
            ));
            continue;
        };
        let (filesystem, warning) = if start.saturating_add(len) > size {
            warnings.push(format!(
                "partition {n} ends at byte {}, past the end of the disk ({size} bytes)",
                start.saturating_add(len)
            ));
            (FsKind::Unknown, None)
        } else {
            probe(disk, name, n, start, len)
        };
        if let Some(w) = warning {
            warnings.push(w);
        }
        let guid = p.part_type_guid.guid.to_string().to_uppercase();
        parts.push(Partition {
            number: n,
            start,
            size: len,
            type_name: names::gpt_type(&guid).to_string(),
            type_id: guid,
            label: Some(p.name.clone()).filter(|s| !s.is_empty()),
            bootable: p.flags & 4 != 0,
            filesystem,
            extended: false,
        });
    }
    Ok(Table {
        kind: TableKind::Gpt,
        sector_size: SECTOR,
        disk_size: size,
        disk_id: Some(gpt.guid().to_string().to_uppercase()),
        partitions: parts,
        warnings,
    })
}
