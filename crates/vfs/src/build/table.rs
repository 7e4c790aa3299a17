//! The partition table: MBR, GPT, or none, and the room each takes.

use super::{random, FatType, MIB, SECTOR};
use crate::part::TableKind;
use crate::region::{Region, SharedDisk};
use crate::{Error, Result};
use std::fmt;

/// Where the partition starts on a partitioned disk: 1 MiB, the alignment
/// every current partitioning tool uses.
const PART_START: u64 = MIB;
/// What a GPT keeps at the end of the disk: 32 sectors of partition entries
/// and the backup header (UEFI specification, 5.3).
const GPT_TAIL: u64 = 33 * SECTOR;

/// Disk bytes a volume of `volume` bytes takes with `table`.
pub(super) fn disk_for(volume: u64, table: TableKind) -> u64 {
    match table {
        TableKind::None => volume,
        TableKind::Mbr => PART_START + volume,
        TableKind::Gpt => (PART_START + volume + GPT_TAIL).next_multiple_of(MIB),
    }
}

/// Volume bytes a disk of `disk` bytes leaves with `table`.
pub(super) fn volume_for(disk: u64, table: TableKind) -> Option<u64> {
    let v = match table {
        TableKind::None => Some(disk),
        TableKind::Mbr => disk.checked_sub(PART_START),
        TableKind::Gpt => disk.checked_sub(PART_START + GPT_TAIL),
    }?;
    Some(v / SECTOR * SECTOR).filter(|&v| v > 0)
}

pub(super) fn table_name(t: TableKind) -> &'static str {
    match t {
        TableKind::Mbr => "an MBR partition table",
        TableKind::Gpt => "a GUID partition table",
        TableKind::None => "no partition table",
    }
}

// ---------------------------------------------------------------------------
// Writing.

/// Writes the partition table; returns where the volume starts.
pub(super) fn write_table(
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
