//! The block allocation table ([MS-VHDX] 2.5): payload block entries with a
//! sector bitmap entry after every chunk of them, and the arithmetic that
//! maps a guest range onto blocks.

/// Payload block states ([MS-VHDX] 2.5.1.1).
pub const NOT_PRESENT: u8 = 0;
/// The block's content is undefined (reads as zeros, or from the parent).
pub const UNDEFINED: u8 = 1;
/// The block reads as zeros, even over a parent.
pub const ZERO: u8 = 2;
/// The block was unmapped (trimmed).
pub const UNMAPPED: u8 = 3;
/// The value version 0.95 of the specification gave the unmapped state;
/// images made to it still read, as unmapped blocks.
pub const UNMAPPED_V095: u8 = 5;
/// The block's data is all in the file.
pub const FULLY_PRESENT: u8 = 6;
/// Some sectors are in the file (the sector bitmap says which), the rest in the parent.
pub const PARTIALLY_PRESENT: u8 = 7;
/// A sector bitmap block that is in the file.
pub const SB_PRESENT: u8 = 6;

/// Bytes of a sector bitmap block: 2^23 bits, one per logical sector of a chunk.
pub const BITMAP_BLOCK: u64 = 1 << 20;

/// The state bits of an entry.
pub fn state(e: u64) -> u8 {
    (e & 7) as u8
}

/// The file offset an entry points at (in 1 MiB units on disk).
pub fn offset(e: u64) -> u64 {
    (e >> 20) << 20
}

/// An entry of `state` pointing at `offset` (a multiple of 1 MiB).
pub fn entry(state: u8, offset: u64) -> u64 {
    ((offset >> 20) << 20) | u64::from(state & 7)
}

/// The name of a payload state, for messages.
pub fn state_name(s: u8) -> &'static str {
    match s {
        NOT_PRESENT => "not present",
        UNDEFINED => "undefined",
        ZERO => "zero",
        UNMAPPED | UNMAPPED_V095 => "unmapped",
        FULLY_PRESENT => "fully present",
        PARTIALLY_PRESENT => "partially present",
        _ => "invalid",
    }
}

/// The shape of the BAT for a disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes per payload block.
    pub block_size: u64,
    /// Bytes per logical sector.
    pub sector: u64,
    /// The disk's size.
    pub virtual_size: u64,
    /// Payload blocks per chunk (per sector bitmap block).
    pub chunk_ratio: u64,
    /// Payload blocks of the disk.
    pub data_blocks: u64,
    /// Sector bitmap blocks of the disk.
    pub bitmap_blocks: u64,
    /// Entries the BAT holds.
    pub entries: u64,
}

impl Geometry {
    /// The BAT's shape for these parameters (already validated: block size a
    /// power of two from 1 to 256 MiB, sector 512 or 4096, size non-zero).
    pub fn new(block_size: u64, sector: u64, virtual_size: u64, has_parent: bool) -> Geometry {
        let chunk_ratio = ((1u64 << 23) * sector) / block_size;
        let data_blocks = virtual_size.div_ceil(block_size);
        let bitmap_blocks = data_blocks.div_ceil(chunk_ratio);
        // [MS-VHDX] 2.5: a differencing disk has a bitmap entry after every
        // chunk, the last one included; other disks stop at the last payload.
        let entries = if has_parent {
            bitmap_blocks * (chunk_ratio + 1)
        } else {
            data_blocks + (data_blocks - 1) / chunk_ratio
        };
        Geometry {
            block_size,
            sector,
            virtual_size,
            chunk_ratio,
            data_blocks,
            bitmap_blocks,
            entries,
        }
    }

    /// The BAT index of payload block `block`.
    pub fn payload_index(&self, block: u64) -> u64 {
        block + block / self.chunk_ratio
    }

    /// The BAT index of the sector bitmap block of chunk `chunk`.
    pub fn bitmap_index(&self, chunk: u64) -> u64 {
        chunk * (self.chunk_ratio + 1) + self.chunk_ratio
    }

    /// Whether BAT index `i` is a sector bitmap entry.
    pub fn is_bitmap_index(&self, i: u64) -> bool {
        i % (self.chunk_ratio + 1) == self.chunk_ratio
    }

    /// Where the bits of payload block `block` start in its chunk's bitmap,
    /// in bits.
    pub fn bitmap_bit(&self, block: u64) -> u64 {
        (block % self.chunk_ratio) * (self.block_size / self.sector)
    }
}

pub use crate::block::{pieces, Piece};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_of_small_disks() {
        // 1 MiB blocks, 512-byte sectors: 4096 blocks per chunk.
        let g = Geometry::new(1 << 20, 512, 10 << 20, false);
        assert_eq!(g.chunk_ratio, 4096);
        assert_eq!(g.entries, 10);
        let d = Geometry::new(1 << 20, 512, 10 << 20, true);
        assert_eq!(d.entries, 4097);
        assert_eq!(d.bitmap_index(0), 4096);
        assert_eq!(g.payload_index(4096), 4097);
        let g = Geometry::new(256 << 20, 512, 17 << 30, false);
        assert_eq!(g.chunk_ratio, 16);
        assert_eq!(g.data_blocks, 68);
        assert_eq!(g.entries, 68 + 67 / 16);
    }

    #[test]
    fn entries_round_trip() {
        let e = entry(FULLY_PRESENT, 5 << 20);
        assert_eq!(state(e), FULLY_PRESENT);
        assert_eq!(offset(e), 5 << 20);
    }
}
