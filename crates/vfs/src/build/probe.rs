//! What `fatfs` makes of a volume size: the geometry of a volume formatted
//! in memory.

use super::{random, FatType, SECTOR};
use crate::fs::detect::fat_kind;
use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// What a formatted volume looks like, from its boot sector.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geometry {
    pub(super) fat: FatType,
    pub(super) cluster: u64,
    pub(super) clusters: u64,
    /// Byte offset of the root directory's first entry.
    pub(super) root_dir: u64,
}

impl Geometry {
    /// Reads the BPB (Microsoft FAT specification, section 3).
    pub(super) fn read(boot: &[u8]) -> Option<Geometry> {
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

pub(super) fn format_options(
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
pub(super) fn probe(bytes: u64, fat: FatType, root_entries: u16) -> Option<Geometry> {
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

#[cfg(test)]
mod tests {
    use super::super::MIB;
    use super::*;

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
