//! Where things are on a FAT volume, from its boot sector.

use crate::{Error, Result};

/// Where things are, from the boot sector (Microsoft FAT specification,
/// "BPB").
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    pub(super) bytes_per_sector: u64,
    pub(super) cluster_size: u64,
    /// Byte offset of the first FAT.
    pub(super) fat_start: u64,
    /// Byte offset of cluster 2.
    pub(super) data_start: u64,
    /// Clusters in the data area.
    pub(super) clusters: u64,
    /// FAT12/16: byte offset and length of the fixed root directory.
    pub(super) root_dir: (u64, u64),
    /// FAT32: the root directory's first cluster.
    pub(super) root_cluster: u64,
}

impl Layout {
    pub(super) fn read(boot: &[u8], name: &str) -> Result<Layout> {
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
