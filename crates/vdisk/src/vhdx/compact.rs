//! `img compact` of a dynamic or differencing VHDX, in place, as Optimize-VHD
//! does.
//!
//! 1. Payload blocks that hold nothing leave the BAT, in one transaction of
//!    the log, and their space is punched out of the file. In a dynamic disk
//!    those are the blocks that read as zeros; in a differencing disk, the
//!    blocks that read the same as the parent, which then reads there again
//!    (their sector bits are cleared in the same transaction). Bytes in
//!    ranges the caller says are free (a filesystem's free space) count as
//!    nothing in both.
//! 2. Blocks near the end of the file are copied into the free places nearer
//!    its start; once the copies are synced, their BAT entries move to them
//!    in a second transaction.
//! 3. The file is cut after the last block still in use.
//!
//! A crash at any point leaves a disk that reads the same: until a
//! transaction is durable the BAT names the old places, whose bytes are not
//! touched before it is, and a transaction cut off is replayed (or dropped
//! whole) by the next open. The disk's DataWriteGuid stays, as what it reads
//! does not change, so its children still find it.

use super::bat;
use super::header::{ALIGN, HEADER_SECTION};
use super::store::read_regions;
use super::VhdxDisk;
use crate::io::{file_len, is_zero, punch_hole, sync_data, write_all_at};
use crate::{Disk, Error, Result};
use std::path::Path;

/// Bytes read or copied at a time.
const PIECE: u64 = 1 << 20;

/// What a compaction of a VHDX did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Compacted {
    /// File size before.
    pub before: u64,
    /// File size after.
    pub after: u64,
    /// Blocks dropped (they read as zeros, or held only free space).
    pub dropped: u64,
    /// Blocks moved nearer the start of the file.
    pub moved: u64,
}

/// Compacts the dynamic or differencing VHDX at `path`; the byte ranges
/// `free` of the virtual disk (sorted `(offset, length)`) may be dropped
/// whatever they hold (a differencing disk then reads its parent's there).
pub fn compact(
    path: &Path,
    free: &[(u64, u64)],
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Compacted> {
    let file = crate::format::open_file(path, true)?;
    let before = file_len(&file, path)?;
    let mut disk = VhdxDisk::load(file, path, true, false)?;
    let differencing = disk.meta.has_parent;
    if differencing {
        // Its blocks are compared with the parent's data.
        disk.open_parent()?;
    }
    if disk.meta.leave_blocks_allocated {
        return Err(Error::InvalidArgument(format!(
            "{}: a fixed VHDX keeps every block in the file; `vmhub img convert --type dynamic` it to make a smaller copy",
            path.display()
        )));
    }
    disk.keep_data_write_guid = true;
    let bs = disk.geo.block_size;
    let blocks = disk.geo.data_blocks;

    // 1. Blocks that hold nothing.
    let mut buf = vec![0u8; PIECE.min(bs) as usize];
    let mut theirs = if differencing {
        vec![0u8; buf.len()]
    } else {
        Vec::new()
    };
    let mut empty = Vec::new();
    for block in 0..blocks {
        progress(block, blocks);
        let e = disk.entry(block);
        let in_file = match bat::state(e) {
            bat::FULLY_PRESENT => true,
            bat::PARTIALLY_PRESENT => differencing,
            _ => false,
        };
        if !in_file {
            continue;
        }
        let at = disk.block_offset(block, e)?;
        let nothing = if differencing {
            disk.hides_nothing(block, &mut buf, &mut theirs, free)?
        } else {
            disk.holds_nothing(block, at, &mut buf, free)?
        };
        if nothing {
            empty.push((block, at));
        }
    }
    if !empty.is_empty() {
        disk.begin_writing()?;
        for &(block, _) in &empty {
            disk.set_entry(
                disk.geo.payload_index(block),
                bat::entry(bat::NOT_PRESENT, 0),
            );
            if differencing {
                // Not needed to read the parent there, but a later write
                // into the block then starts from clear bits.
                disk.mark_bits(block, 0, bs / disk.geo.sector, false)?;
            }
        }
        disk.commit_bat()?;
        for &(_, at) in &empty {
            punch_hole(&disk.store.file, at, bs);
        }
    }

    // 2. The blocks still used, last first, into the lowest free places.
    let regions = read_regions(&disk.store)?;
    let log_end = disk.header.log_offset + u64::from(disk.header.log_length);
    let floor = regions
        .regions
        .iter()
        .map(|r| r.offset + u64::from(r.length))
        .chain([HEADER_SECTION, log_end])
        .max()
        .unwrap_or(HEADER_SECTION)
        .div_ceil(ALIGN)
        * ALIGN;
    let mut used: Vec<(u64, u64)> = (0..disk.geo.entries)
        .filter_map(|i| {
            let e = disk.bat.get(i as usize).copied()?;
            let present = if disk.geo.is_bitmap_index(i) {
                bat::state(e) == bat::SB_PRESENT
            } else {
                matches!(bat::state(e), bat::FULLY_PRESENT | bat::PARTIALLY_PRESENT)
            };
            present.then(|| (bat::offset(e), i))
        })
        .collect();
    used.sort_unstable();
    let geo = disk.geo;
    let size_of = |i: u64| {
        if geo.is_bitmap_index(i) {
            bat::BITMAP_BLOCK
        } else {
            bs
        }
    };
    let mut moves = Vec::new();
    // Free places: the gaps between `floor` and the used blocks, in order.
    let mut gaps: Vec<(u64, u64)> = Vec::new();
    let mut at = floor;
    for &(off, i) in &used {
        if off > at {
            gaps.push((at, off));
        }
        at = at.max(off + size_of(i));
    }
    let mut gap = 0;
    while let Some(&(off, i)) = used.last() {
        let len = size_of(i);
        // The first gap with room for the block, aligned as blocks are.
        while let Some(&(s, e)) = gaps.get(gap) {
            let s = s.div_ceil(ALIGN) * ALIGN;
            if s + len <= e {
                break;
            }
            gap += 1;
        }
        let Some(&(s, e)) = gaps.get(gap) else { break };
        let s = s.div_ceil(ALIGN) * ALIGN;
        if s + len > off {
            break;
        }
        used.pop();
        disk.copy_within_file(off, s, len, &mut buf)?;
        moves.push((i, s));
        if let Some(g) = gaps.get_mut(gap) {
            *g = (s + len, e);
        }
    }
    if !moves.is_empty() {
        disk.begin_writing()?;
        for &(i, to) in &moves {
            let e = disk.bat.get(i as usize).copied().unwrap_or(0);
            disk.set_entry(i, bat::entry(bat::state(e), to));
        }
        // Syncs the copies before the entries that point at them.
        disk.commit_bat()?;
    }

    // 3. Cut the file after the last block used.
    let end = moves
        .iter()
        .map(|&(i, to)| to + size_of(i))
        .chain(used.iter().map(|&(off, i)| off + size_of(i)))
        .chain([floor])
        .max()
        .unwrap_or(floor)
        .div_ceil(ALIGN)
        * ALIGN;
    let path = disk.store.path.clone();
    let file = &disk.store.file;
    if end < file_len(file, &path)? {
        file.set_len(end)
            .map_err(|e| Error::io(&path, "truncate", e))?;
        sync_data(file, &path)?;
    }
    progress(blocks, blocks);
    let after = file_len(file, &path)?;
    Ok(Compacted {
        before,
        after,
        dropped: empty.len() as u64,
        moved: moves.len() as u64,
    })
}

/// The parts of the virtual disk's `[pos, pos + n)` that lie in the sorted
/// ranges `free`, as ranges of a buffer holding it.
fn free_within(
    free: &[(u64, u64)],
    pos: u64,
    n: u64,
) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let first = free.partition_point(|&(fs, fl)| fs.saturating_add(fl) <= pos);
    free.get(first..)
        .unwrap_or_default()
        .iter()
        .take_while(move |&&(fs, _)| fs < pos + n)
        .filter_map(move |&(fs, fl)| {
            let (s, e) = (fs.max(pos), fs.saturating_add(fl).min(pos + n));
            (s < e).then(|| (s - pos) as usize..(e - pos) as usize)
        })
}

impl VhdxDisk {
    /// Whether payload block `block`, at file offset `at`, holds only zeros
    /// outside the virtual disk's `free` ranges (and past its end).
    fn holds_nothing(
        &self,
        block: u64,
        at: u64,
        buf: &mut [u8],
        free: &[(u64, u64)],
    ) -> Result<bool> {
        let bs = self.geo.block_size;
        let start = block * bs;
        let end = (start + bs).min(self.geo.virtual_size);
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(buf.len() as u64);
            let piece = &mut buf[..n as usize];
            self.store
                .read(piece, at + (pos - start), format_args!("block {block}"))?;
            // Bytes inside free ranges count as zeros.
            for r in free_within(free, pos, n) {
                piece[r].fill(0);
            }
            if !is_zero(piece) {
                return Ok(false);
            }
            pos += n;
        }
        Ok(true)
    }

    /// Whether payload block `block` of a differencing disk reads the same
    /// as the parent there, outside the virtual disk's `free` ranges: `mine`
    /// and `theirs` are buffers of the same length.
    fn hides_nothing(
        &self,
        block: u64,
        mine: &mut [u8],
        theirs: &mut [u8],
        free: &[(u64, u64)],
    ) -> Result<bool> {
        let bs = self.geo.block_size;
        let start = block * bs;
        let end = (start + bs).min(self.geo.virtual_size);
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(mine.len() as u64).min(theirs.len() as u64) as usize;
            let (a, b) = (&mut mine[..n], &mut theirs[..n]);
            self.read_at(a, pos)?;
            self.read_parent(b, pos)?;
            // Bytes inside free ranges count as the parent's.
            for r in free_within(free, pos, n as u64) {
                a[r.clone()].copy_from_slice(&b[r]);
            }
            if a != b {
                return Ok(false);
            }
            pos += n as u64;
        }
        Ok(true)
    }

    /// Copies `len` bytes of the file from `from` to `to` (not overlapping).
    fn copy_within_file(&self, from: u64, to: u64, len: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(buf.len() as u64);
            let piece = &mut buf[..n as usize];
            self.store
                .read(piece, from + done, format_args!("block at {from}"))?;
            write_all_at(&self.store.file, &self.store.path, piece, to + done)?;
            done += n;
        }
        Ok(())
    }
}
