//! Which filesystem a region holds, from the signatures at its start.

use crate::region::Region;
use crate::Result;
use serde::Serialize;

/// A filesystem (or other content) found at the start of a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FsKind {
    /// FAT with 12-bit entries.
    Fat12,
    /// FAT with 16-bit entries.
    Fat16,
    /// FAT with 32-bit entries.
    Fat32,
    /// exFAT (recognized only).
    Exfat,
    /// NTFS.
    Ntfs,
    /// ext2.
    Ext2,
    /// ext3 (ext2 with a journal).
    Ext3,
    /// ext4 (extents, 64-bit, flex groups ...).
    Ext4,
    /// ISO 9660 (CD/DVD image).
    Iso9660,
    /// XFS (recognized only).
    Xfs,
    /// Btrfs (recognized only).
    Btrfs,
    /// Linux swap space.
    Swap,
    /// An LVM physical volume (recognized only).
    Lvm,
    /// Nothing recognized.
    Unknown,
}

impl FsKind {
    /// The name shown to users ("fat32", "ext4", "iso9660").
    pub fn name(self) -> &'static str {
        match self {
            FsKind::Fat12 => "fat12",
            FsKind::Fat16 => "fat16",
            FsKind::Fat32 => "fat32",
            FsKind::Exfat => "exfat",
            FsKind::Ntfs => "ntfs",
            FsKind::Ext2 => "ext2",
            FsKind::Ext3 => "ext3",
            FsKind::Ext4 => "ext4",
            FsKind::Iso9660 => "iso9660",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
            FsKind::Swap => "swap",
            FsKind::Lvm => "lvm2",
            FsKind::Unknown => "unknown",
        }
    }

    /// True for the kinds whose files vmhub can read.
    pub fn readable(self) -> bool {
        matches!(
            self,
            FsKind::Fat12
                | FsKind::Fat16
                | FsKind::Fat32
                | FsKind::Ntfs
                | FsKind::Ext2
                | FsKind::Ext3
                | FsKind::Ext4
                | FsKind::Iso9660
        )
    }

    /// True for FAT of any width.
    pub fn is_fat(self) -> bool {
        matches!(self, FsKind::Fat12 | FsKind::Fat16 | FsKind::Fat32)
    }
}

impl std::fmt::Display for FsKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn le16(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]) as u64)
        .unwrap_or(0)
}

fn le32(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as u64)
        .unwrap_or(0)
}

/// Reads `n` bytes at `off`, or `None` when the region is shorter.
fn peek(r: &mut Region, off: u64, n: usize) -> Result<Option<Vec<u8>>> {
    if off.saturating_add(n as u64) > r.len() {
        return Ok(None);
    }
    let mut b = vec![0u8; n];
    r.read_at_checked(&mut b, off)?;
    Ok(Some(b))
}

/// The FAT width a boot sector describes, from its BPB, or `None` when the
/// sector is not a plausible FAT boot sector (Microsoft FAT specification,
/// "FAT type determination": by the count of data clusters).
pub fn fat_kind(boot: &[u8]) -> Option<FsKind> {
    if boot.len() < 512 || boot[510] != 0x55 || boot[511] != 0xAA {
        return None;
    }
    if !matches!(boot[0], 0xEB | 0xE9) {
        return None;
    }
    let bytes_per_sector = le16(boot, 11);
    let per_cluster = boot[13] as u64;
    let reserved = le16(boot, 14);
    let fats = boot[16] as u64;
    let root_entries = le16(boot, 17);
    let total16 = le16(boot, 19);
    let fat16_size = le16(boot, 22);
    let total32 = le32(boot, 32);
    let fat32_size = le32(boot, 36);
    if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
        || per_cluster == 0
        || !per_cluster.is_power_of_two()
        || reserved == 0
        || fats == 0
    {
        return None;
    }
    let fat_size = if fat16_size != 0 {
        fat16_size
    } else {
        fat32_size
    };
    let total = if total16 != 0 { total16 } else { total32 };
    if fat_size == 0 || total == 0 {
        return None;
    }
    let root_sectors = (root_entries * 32).div_ceil(bytes_per_sector);
    let meta = reserved + fats * fat_size + root_sectors;
    let clusters = total.checked_sub(meta)? / per_cluster;
    Some(if clusters < 4085 {
        FsKind::Fat12
    } else if clusters < 65525 {
        FsKind::Fat16
    } else {
        FsKind::Fat32
    })
}

/// What the region holds, judged by the signatures at its start.
pub fn detect(r: &mut Region) -> Result<FsKind> {
    if let Some(boot) = peek(r, 0, 512)? {
        if &boot[3..11] == b"NTFS    " {
            return Ok(FsKind::Ntfs);
        }
        if &boot[3..11] == b"EXFAT   " {
            return Ok(FsKind::Exfat);
        }
        if &boot[0..4] == b"XFSB" {
            return Ok(FsKind::Xfs);
        }
        if let Some(k) = fat_kind(&boot) {
            return Ok(k);
        }
    }
    if let Some(sb) = peek(r, 1024, 1024)? {
        if le16(&sb, 56) == 0xEF53 {
            let compat = le32(&sb, 92);
            let incompat = le32(&sb, 96);
            let ro_compat = le32(&sb, 100);
            // ext4-only features: extents, 64bit, flex_bg, huge_file,
            // dir_nlink, extra_isize, metadata_csum.
            let ext4 = incompat & (0x40 | 0x80 | 0x200) != 0
                || ro_compat & (0x8 | 0x20 | 0x40 | 0x400) != 0;
            return Ok(if ext4 {
                FsKind::Ext4
            } else if compat & 0x4 != 0 {
                FsKind::Ext3
            } else {
                FsKind::Ext2
            });
        }
    }
    if let Some(lvm) = peek(r, 512, 8)? {
        if lvm == b"LABELONE" {
            return Ok(FsKind::Lvm);
        }
    }
    if let Some(swap) = peek(r, 4086, 10)? {
        if swap == b"SWAPSPACE2" || swap == b"SWAP-SPACE" {
            return Ok(FsKind::Swap);
        }
    }
    if let Some(pvd) = peek(r, 16 * 2048, 6)? {
        if &pvd[1..6] == b"CD001" {
            return Ok(FsKind::Iso9660);
        }
    }
    if let Some(b) = peek(r, 0x10040, 8)? {
        if b == b"_BHRfS_M" {
            return Ok(FsKind::Btrfs);
        }
    }
    Ok(FsKind::Unknown)
}
