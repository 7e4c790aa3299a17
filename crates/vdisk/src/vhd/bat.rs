//! The Block Allocation Table: one big-endian sector offset per block, all ones
//! for a block that is not allocated. Plus the pure arithmetic that splits a guest
//! range into per-block pieces.

/// A BAT entry for a block that has no storage.
pub const UNUSED: u32 = u32::MAX;
/// Entries held by one sector of the table.
pub const ENTRIES_PER_SECTOR: usize = 512 / 4;
/// The most entries accepted (a 64 MiB table: 2040 GiB in 128 KiB blocks).
pub const MAX_ENTRIES: u32 = 1 << 24;

/// The table, held in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bat {
    entries: Vec<u32>,
}

/// Entries a table needs for a disk of `size` bytes in blocks of `block_size`,
/// or `None` when that is more than [`MAX_ENTRIES`].
pub fn entries_for(size: u64, block_size: u64) -> Option<u32> {
    u32::try_from(size.div_ceil(block_size.max(1)))
        .ok()
        .filter(|&n| n <= MAX_ENTRIES)
}

/// Bytes the table of `entries` entries occupies on disk, rounded up to whole sectors.
pub fn table_size(entries: u32) -> u64 {
    (u64::from(entries) * 4).div_ceil(512) * 512
}

impl Bat {
    /// A table of `entries` unused entries.
    pub fn new(entries: u32) -> Bat {
        Bat {
            entries: vec![UNUSED; entries as usize],
        }
    }

    /// Decodes `entries` entries from `bytes`, which must hold at least `4 × entries` bytes.
    pub fn decode(bytes: &[u8], entries: u32) -> Option<Bat> {
        let n = entries as usize;
        let raw = bytes.get(..n.checked_mul(4)?)?;
        Some(Bat {
            entries: raw
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        })
    }

    /// The table as stored: entries then all-ones padding to a whole sector.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(table_size(self.len()) as usize);
        for e in &self.entries {
            out.extend_from_slice(&e.to_be_bytes());
        }
        out.resize(table_size(self.len()) as usize, 0xff);
        out
    }

    /// The `index`-th sector of the stored table.
    pub fn encode_sector(&self, index: usize) -> [u8; 512] {
        let mut out = [0xff; 512];
        let first = index * ENTRIES_PER_SECTOR;
        for (i, e) in self
            .entries
            .iter()
            .skip(first)
            .take(ENTRIES_PER_SECTOR)
            .enumerate()
        {
            out[i * 4..i * 4 + 4].copy_from_slice(&e.to_be_bytes());
        }
        out
    }

    /// Number of entries.
    pub fn len(&self) -> u32 {
        // Built from a u32 count, so it fits.
        self.entries.len() as u32
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The file offset (bytes) of block `index`'s bitmap, or `None` when the block
    /// is unallocated or past the table.
    pub fn block_offset(&self, index: u64) -> Option<u64> {
        let e = *self.entries.get(usize::try_from(index).ok()?)?;
        (e != UNUSED).then(|| u64::from(e) * 512)
    }

    /// The raw entry for block `index`.
    pub fn raw(&self, index: usize) -> Option<u32> {
        self.entries.get(index).copied()
    }

    /// Points block `index` at `sector`. Returns the table sector that changed.
    pub fn set(&mut self, index: usize, sector: u32) -> Option<usize> {
        let e = self.entries.get_mut(index)?;
        *e = sector;
        Some(index / ENTRIES_PER_SECTOR)
    }

    /// Allocated blocks, as `(block index, file offset of its bitmap)`.
    pub fn allocated(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, &e)| e != UNUSED)
            .map(|(i, &e)| (i as u64, u64::from(e) * 512))
    }

    /// Number of allocated blocks.
    pub fn allocated_count(&self) -> u64 {
        self.entries.iter().filter(|&&e| e != UNUSED).count() as u64
    }
}

pub use crate::block::{pieces, Piece};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        let mut b = Bat::new(3);
        assert_eq!(b.set(1, 7), Some(0));
        let bytes = b.encode();
        assert_eq!(bytes.len(), 512);
        assert_eq!(&bytes[4..8], &[0, 0, 0, 7]);
        assert!(bytes[12..].iter().all(|&x| x == 0xff));
        let d = Bat::decode(&bytes, 3).unwrap();
        assert_eq!(d, b);
        assert_eq!(d.block_offset(1), Some(7 * 512));
        assert_eq!(d.block_offset(0), None);
        assert_eq!(d.block_offset(99), None);
        assert_eq!(d.encode_sector(0).to_vec(), bytes);
        assert!(Bat::decode(&bytes[..8], 3).is_none());
        assert_eq!(d.allocated().collect::<Vec<_>>(), vec![(1, 3584)]);
    }

    #[test]
    fn pieces_split_at_blocks() {
        let p: Vec<Piece> = pieces(1000, 5000, 2048).collect();
        assert_eq!(
            p,
            vec![
                Piece {
                    block: 0,
                    within: 1000,
                    len: 1048,
                    at: 0
                },
                Piece {
                    block: 1,
                    within: 0,
                    len: 2048,
                    at: 1048
                },
                Piece {
                    block: 2,
                    within: 0,
                    len: 1904,
                    at: 3096
                },
            ]
        );
        assert_eq!(pieces(0, 0, 512).count(), 0);
    }
}
