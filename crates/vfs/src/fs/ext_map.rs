//! Regular files without extents (ext2, ext3, and ext4 files made before
//! the extents feature was turned on), read through their block map by vmhub.
//!
//! `ext4-view` 1.0 reads block 0 as the indirect block when a hole covers
//! the whole range of one (i_block[12], [13] or [14] is 0, or an entry of a
//! double or triple indirect block is 0), and fails; holes must read as
//! zeros. The walk of the map ([`walk`]) is pure: it asks a [`Blocks`] for
//! indirect blocks and hands it runs of the file in order. [`read_file`]
//! is the I/O around it.
//!
//! ext4 disk layout, "Direct/Indirect Block Addressing" and "Inode Table".

use super::ext::{Descriptor, Geometry, INCOMPAT_RECOVER};
use crate::region::Region;
use crate::{Error, Result};
use std::io::Write;

/// i_flags: the file uses extents.
const EXTENTS_FL: u32 = 0x8_0000;
/// i_flags: the data is in the inode.
const INLINE_DATA_FL: u32 = 0x1000_0000;
/// i_flags: the data is encrypted (ext4-view refuses it).
const ENCRYPT_FL: u32 = 0x800;
/// i_mode: the file type bits, and the type of a regular file.
const S_IFMT: u16 = 0xF000;
const S_IFREG: u16 = 0x8000;
/// Block pointers in the inode: 12 direct, then single, double and triple
/// indirect.
const DIRECT: usize = 12;
/// Most bytes read from the volume at once.
const READ: u64 = 1 << 20;
/// Zeros written for holes, this many at a time.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// The fields of an inode used here.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Inode {
    mode: u16,
    flags: u32,
    /// i_size_lo and, for regular files, i_size_high.
    size: u64,
    /// i_block: the root of the block map.
    block: [u32; 15],
}

impl Inode {
    /// Parses the first 128 bytes of an inode; `None` when `d` is shorter.
    fn parse(d: &[u8]) -> Option<Inode> {
        let le32 = |at: usize| {
            d.get(at..at.checked_add(4)?)
                .and_then(|s| s.try_into().ok())
                .map(u32::from_le_bytes)
        };
        let mode = u16::from_le_bytes(d.get(0..2)?.try_into().ok()?);
        let mut block = [0u32; 15];
        for (i, b) in block.iter_mut().enumerate() {
            *b = le32(0x28 + 4 * i)?;
        }
        Some(Inode {
            mode,
            flags: le32(0x20)?,
            size: u64::from(le32(0x4)?) | u64::from(le32(0x6C)?) << 32,
            block,
        })
    }

    /// True for a regular file whose data is found through a block map.
    fn is_block_mapped_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
            && self.flags & (EXTENTS_FL | INLINE_DATA_FL | ENCRYPT_FL) == 0
    }
}

/// A stretch of a file: `count` blocks from file block `logical`, stored
/// from volume block `physical` on, or a hole when `physical` is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    logical: u64,
    count: u64,
    physical: u64,
}

impl Run {
    /// `next` with this run merged into it when it continues it.
    fn merge(self, next: Run) -> Option<Run> {
        let follows = self.logical.checked_add(self.count) == Some(next.logical);
        let contiguous = if self.physical == 0 {
            next.physical == 0
        } else {
            self.physical.checked_add(self.count) == Some(next.physical)
        };
        (follows && contiguous).then_some(Run {
            count: self.count + next.count,
            ..self
        })
    }
}

/// What [`walk`] needs from the volume.
trait Blocks {
    /// Fills `buf` (one block) with volume block `block`.
    fn read_block(&mut self, block: u64, buf: &mut [u8]) -> Result<()>;
    /// Takes the next run of the file.
    fn run(&mut self, run: Run) -> Result<()>;
}

/// The state of one walk of a block map.
struct Walk<'a> {
    blocks: &'a mut dyn Blocks,
    /// Blocks of the file (its size in blocks, rounded up).
    file_blocks: u64,
    /// Blocks of the volume: every pointer must be below.
    volume_blocks: u64,
    block_size: usize,
    /// File blocks covered by a pointer at depth 0 (data), 1, 2 and 3.
    spans: [u64; 4],
    /// One buffer per indirect level, reused.
    bufs: [Vec<u8>; 3],
    /// The run being built, handed on when the next one does not continue it.
    pending: Option<Run>,
    what: &'a str,
}

impl Walk<'_> {
    fn push(&mut self, run: Run) -> Result<()> {
        match self.pending {
            Some(p) => match p.merge(run) {
                Some(m) => self.pending = Some(m),
                None => {
                    self.blocks.run(p)?;
                    self.pending = Some(run);
                }
            },
            None => self.pending = Some(run),
        }
        Ok(())
    }

    /// Visits the pointer `ptr` at `depth` (0: a data block), which maps
    /// the file from block `logical` on; `logical` is inside the file.
    fn visit(&mut self, ptr: u32, depth: usize, logical: u64) -> Result<()> {
        let span = self.spans.get(depth).copied().unwrap_or(1);
        let count = span.min(self.file_blocks.saturating_sub(logical));
        let ptr = u64::from(ptr);
        if ptr == 0 {
            return self.push(Run {
                logical,
                count,
                physical: 0,
            });
        }
        if ptr >= self.volume_blocks {
            let level = ["data", "indirect", "double indirect", "triple indirect"]
                .get(depth)
                .copied()
                .unwrap_or("indirect");
            return Err(Error::Corrupt(format!(
                "{}: the block map points to block {ptr} as the {level} block for file block {logical}, outside the volume's {} blocks",
                self.what, self.volume_blocks
            )));
        }
        if depth == 0 {
            return self.push(Run {
                logical,
                count: 1,
                physical: ptr,
            });
        }
        let Some(slot) = self.bufs.get_mut(depth - 1) else {
            return Ok(());
        };
        let mut buf = std::mem::take(slot);
        buf.resize(self.block_size, 0);
        let read = self.blocks.read_block(ptr, &mut buf);
        let child = self.spans.get(depth - 1).copied().unwrap_or(1);
        let mut result = read;
        let mut at = logical;
        if result.is_ok() {
            for entry in buf.chunks_exact(4) {
                if at >= self.file_blocks {
                    break;
                }
                let p = u32::from_le_bytes(entry.try_into().unwrap_or([0; 4]));
                result = self.visit(p, depth - 1, at);
                if result.is_err() {
                    break;
                }
                at = at.saturating_add(child);
            }
        }
        if let Some(slot) = self.bufs.get_mut(depth - 1) {
            *slot = buf;
        }
        result
    }
}

/// Walks the block map rooted at `root` of a file of `file_blocks` blocks
/// of `block_size` bytes, on a volume of `volume_blocks` blocks, handing
/// `blocks` the file's runs in order, merged where they continue each other.
/// A pointer of 0 is a hole; pointers outside the volume are errors naming
/// `what`. The work is bounded by `file_blocks`: every pointer visited maps
/// a part of the file not mapped before.
fn walk(
    root: &[u32; 15],
    file_blocks: u64,
    block_size: u64,
    volume_blocks: u64,
    blocks: &mut dyn Blocks,
    what: &str,
) -> Result<()> {
    let per = block_size / 4;
    let too_big = || {
        Error::Corrupt(format!(
            "{what}: {file_blocks} blocks of {block_size} bytes are more than a block map can hold"
        ))
    };
    let spans = [1, per, per * per, per.checked_pow(3).ok_or_else(too_big)?];
    let most = spans
        .iter()
        .skip(1)
        .try_fold(DIRECT as u64, |a, &s| a.checked_add(s))
        .ok_or_else(too_big)?;
    if file_blocks > most {
        return Err(too_big());
    }
    let mut w = Walk {
        blocks,
        file_blocks,
        volume_blocks,
        block_size: usize::try_from(block_size).map_err(|_| too_big())?,
        spans,
        bufs: Default::default(),
        pending: None,
        what,
    };
    // File block where each pointer of the inode starts, and its depth.
    let mut logical = 0u64;
    for (i, &ptr) in root.iter().enumerate() {
        if logical >= file_blocks {
            break;
        }
        let depth = i.saturating_sub(DIRECT - 1);
        w.visit(ptr, depth, logical)?;
        logical = logical.saturating_add(spans.get(depth).copied().unwrap_or(1));
    }
    if let Some(p) = w.pending.take() {
        w.blocks.run(p)?;
    }
    Ok(())
}

/// [`Blocks`] over a volume: copies the runs' bytes (zeros for holes) to
/// `out`, the last block cut at the file's size.
struct Copy<'a> {
    region: &'a mut Region,
    out: &'a mut dyn Write,
    block_size: u64,
    size: u64,
    /// Bytes written so far.
    done: u64,
    buf: Vec<u8>,
    what: &'a str,
}

impl Blocks for Copy<'_> {
    fn read_block(&mut self, block: u64, buf: &mut [u8]) -> Result<()> {
        self.region
            .read_at_checked(buf, block.saturating_mul(self.block_size))
    }

    fn run(&mut self, run: Run) -> Result<()> {
        let start = run.logical.saturating_mul(self.block_size);
        if start != self.done {
            return Err(Error::Corrupt(format!(
                "{}: the block map skips from byte {} to {start}",
                self.what, self.done
            )));
        }
        let end = run
            .count
            .saturating_mul(self.block_size)
            .saturating_add(start)
            .min(self.size);
        let mut at = run.physical.saturating_mul(self.block_size);
        while self.done < end {
            let n = (end - self.done).min(READ);
            if run.physical == 0 {
                let n = n.min(ZEROS.len() as u64) as usize;
                let zeros = &ZEROS[..n];
                crate::extract::write_all(self.out, zeros, self.what)?;
                self.done += zeros.len() as u64;
                continue;
            }
            // n <= READ, so it fits.
            let n = n as usize;
            if self.buf.len() < n {
                self.buf.resize(n, 0);
            }
            let buf = &mut self.buf[..n];
            self.region.read_at_checked(buf, at)?;
            crate::extract::write_all(self.out, buf, self.what)?;
            self.done += n as u64;
            at += n as u64;
        }
        Ok(())
    }
}

/// Copies the regular file with inode `inode` and `size` bytes (as
/// ext4-view found them) to `out` through its block map; `what` names it
/// in errors. `Ok(None)` when the file is not block-mapped, or the volume
/// is one this reader leaves to ext4-view: a journal needing recovery (whose
/// blocks ext4-view reads in place of the stale ones), or a superblock or
/// inode that does not match what ext4-view read.
pub(super) fn read_file(
    region: &mut Region,
    inode: u64,
    size: u64,
    what: &str,
    out: &mut dyn Write,
) -> Result<Option<u64>> {
    let mut sb = [0u8; 1024];
    region.read_at_checked(&mut sb, 1024)?;
    let Ok(g) = Geometry::parse(&sb, region.len(), region.name()) else {
        return Ok(None);
    };
    if g.incompat & INCOMPAT_RECOVER != 0 {
        return Ok(None);
    }
    let Some(at) = inode_at(region, &g, inode, what)? else {
        return Ok(None);
    };
    let mut raw = [0u8; 128];
    region.read_at_checked(&mut raw, at)?;
    let Some(node) = Inode::parse(&raw) else {
        return Ok(None);
    };
    if !node.is_block_mapped_file() || node.size != size {
        return Ok(None);
    }
    let file_blocks = size.div_ceil(g.block_size);
    let mut copy = Copy {
        region,
        out,
        block_size: g.block_size,
        size,
        done: 0,
        buf: Vec::new(),
        what,
    };
    walk(
        &node.block,
        file_blocks,
        g.block_size,
        g.blocks,
        &mut copy,
        what,
    )?;
    if copy.done != size {
        return Err(Error::Corrupt(format!(
            "{what}: the inode records {size} bytes, but the block map gives {}",
            copy.done
        )));
    }
    Ok(Some(size))
}

/// Byte offset of inode `inode` in the volume (ext4 disk layout, "Finding
/// an Inode"); `None` when the geometry has no place for it.
fn inode_at(region: &mut Region, g: &Geometry, inode: u64, what: &str) -> Result<Option<u64>> {
    let Some(index) = inode.checked_sub(1) else {
        return Ok(None);
    };
    if g.inodes_per_group == 0 {
        return Ok(None);
    }
    let group = index / g.inodes_per_group;
    let Some(desc_at) = g.descriptor_at(group) else {
        return Ok(None);
    };
    let mut desc = vec![0u8; usize::try_from(g.desc_size).unwrap_or(32)];
    region.read_at_checked(&mut desc, desc_at)?;
    let table = Descriptor::parse(&desc).inode_table;
    if table == 0 || table.saturating_add(g.inode_table_blocks) > g.blocks {
        return Err(Error::Corrupt(format!(
            "{what}: the inode table of group {group} at block {table} is outside the volume's {} blocks",
            g.blocks
        )));
    }
    let within = (index % g.inodes_per_group) * g.inode_size;
    Ok(Some(table * g.block_size + within))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A volume of blocks held in memory; records the runs.
    struct Fake {
        blocks: Vec<Vec<u8>>,
        runs: Vec<Run>,
        reads: usize,
    }

    impl Blocks for Fake {
        fn read_block(&mut self, block: u64, buf: &mut [u8]) -> Result<()> {
            self.reads += 1;
            buf.copy_from_slice(&self.blocks[block as usize]);
            Ok(())
        }
        fn run(&mut self, run: Run) -> Result<()> {
            self.runs.push(run);
            Ok(())
        }
    }

    /// A volume of `n` blocks of 16 bytes (4 pointers each).
    fn fake(n: usize) -> Fake {
        Fake {
            blocks: vec![vec![0u8; 16]; n],
            runs: Vec::new(),
            reads: 0,
        }
    }

    fn pointers(b: &mut [u8], ptrs: &[u32]) {
        for (i, p) in ptrs.iter().enumerate() {
            b[4 * i..4 * i + 4].copy_from_slice(&p.to_le_bytes());
        }
    }

    fn run(logical: u64, count: u64, physical: u64) -> Run {
        Run {
            logical,
            count,
            physical,
        }
    }

    #[test]
    fn direct_blocks_merge_and_holes_join() {
        let mut f = fake(64);
        let mut root = [0u32; 15];
        root[..5].copy_from_slice(&[10, 11, 12, 0, 0]);
        root[6] = 20;
        walk(&root, 7, 16, 64, &mut f, "t").unwrap();
        assert_eq!(f.runs, [run(0, 3, 10), run(3, 3, 0), run(6, 1, 20)]);
        assert_eq!(f.reads, 0);
    }

    #[test]
    fn holes_over_whole_indirect_ranges_read_nothing() {
        // 12 direct + 4 single + 16 double + 64 triple blocks.
        let mut f = fake(64);
        let mut root = [0u32; 15];
        root[0] = 5;
        root[14] = 40;
        pointers(&mut f.blocks[40], &[0, 41]);
        pointers(&mut f.blocks[41], &[0, 0, 42]);
        pointers(&mut f.blocks[42], &[0, 50]);
        let first_triple = 12 + 4 + 16;
        walk(&root, first_triple + 64, 16, 64, &mut f, "t").unwrap();
        let at = first_triple + 16 + 8 + 1;
        assert_eq!(
            f.runs,
            [
                run(0, 1, 5),
                run(1, at - 1, 0),
                run(at, 1, 50),
                run(at + 1, first_triple + 64 - at - 1, 0)
            ]
        );
        assert_eq!(f.reads, 3);
    }

    #[test]
    fn the_file_size_bounds_the_walk() {
        // An indirect block that points to itself everywhere.
        let mut f = fake(64);
        pointers(&mut f.blocks[7], &[7, 7, 7, 7]);
        let mut root = [0u32; 15];
        root[12] = 7;
        root[13] = 7;
        root[14] = 7;
        walk(&root, 12 + 4 + 16 + 3, 16, 64, &mut f, "t").unwrap();
        let total: u64 = f.runs.iter().map(|r| r.count).sum();
        assert_eq!(total, 12 + 4 + 16 + 3);
        assert!(f.reads <= 1 + 5 + 3);
        // A huge file of holes is one run.
        let mut f = fake(1);
        let root = [0u32; 15];
        let blocks = 12 + (1 << 10) + (1 << 20) + (1 << 30);
        walk(&root, blocks, 4096, 1, &mut f, "t").unwrap();
        assert_eq!(f.runs, [run(0, blocks, 0)]);
        assert!(walk(&root, blocks + 1, 4096, 1, &mut f, "t").is_err());
    }

    #[test]
    fn pointers_outside_the_volume_are_errors() {
        let mut f = fake(64);
        let mut root = [0u32; 15];
        root[12] = 9;
        pointers(&mut f.blocks[9], &[3, 64]);
        let e = walk(&root, 14, 16, 64, &mut f, "vol: /x").unwrap_err();
        assert!(e.to_string().contains("vol: /x"), "{e}");
        assert!(e.to_string().contains("block 64"), "{e}");
        root[12] = 1000;
        assert!(walk(&root, 14, 16, 64, &mut f, "t").is_err());
    }

    #[test]
    fn inodes_parse() {
        let mut d = vec![0u8; 128];
        d[0..2].copy_from_slice(&0o100644u16.to_le_bytes());
        d[4..8].copy_from_slice(&5u32.to_le_bytes());
        d[0x6C..0x70].copy_from_slice(&1u32.to_le_bytes());
        d[0x28..0x2C].copy_from_slice(&77u32.to_le_bytes());
        let i = Inode::parse(&d).unwrap();
        assert_eq!((i.size, i.block[0]), ((1 << 32) + 5, 77));
        assert!(i.is_block_mapped_file());
        d[0x20..0x24].copy_from_slice(&EXTENTS_FL.to_le_bytes());
        assert!(!Inode::parse(&d).unwrap().is_block_mapped_file());
        assert!(Inode::parse(&d[..100]).is_none());
    }
}
