//! `img compact`: rebuild a dynamic or differencing VHD without what it does not
//! need, and without space that belongs to nothing.
//!
//! A dynamic disk drops the blocks that read as zeros. A differencing disk drops
//! the sectors that read the same as its parent there: they hide nothing, so the
//! chain reads the same without them, and a zero sector over a parent that holds
//! data is kept.
//!
//! [`compact_with`] also drops the ranges a caller knows to hold nothing (the
//! free space of the filesystems inside, found by `vfs`): a dynamic disk reads
//! them as zeros, a differencing disk lets them fall through to its parent.
//!
//! The new file is written beside the old one and renamed over it once complete
//! and durable, so a crash leaves either the old image or the new one. It keeps
//! the footer's identity (unique id, timestamp, creator), so differencing disks
//! made over it still accept it as their parent, and a differencing disk keeps
//! its parent links (name, id, timestamp, locators) as they were.

use super::bat;
use super::footer::DiskType;
use super::header::{DynamicHeader, ParentLocator, HEADER_SIZE};
use super::VhdDisk;
use crate::io::{file_len, AtomicFile};
use crate::ops::convert::copy_data;
use crate::{Disk, Error, Result};
use std::path::Path;

/// What compacting did: the file size before and after.
#[derive(Clone, Copy, Debug)]
pub struct Compacted {
    /// File size before.
    pub before: u64,
    /// File size after.
    pub after: u64,
}

/// Compacts the dynamic or differencing VHD at `path` in place.
pub fn compact(path: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<Compacted> {
    compact_with(path, &[], progress)
}

/// [`compact`], also dropping the byte ranges `free` of the virtual disk
/// (whole sectors inside them; the rest of a sector they cover in part is
/// kept).
pub fn compact_with(
    path: &Path,
    free: &[(u64, u64)],
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Compacted> {
    crate::format::require_vhd(
        path,
        "compacting",
        "`vmhub img convert` writes a copy without the unused blocks",
    )?;
    let free = sectors_within(free);
    let src = VhdDisk::open(path, false)?;
    let (Some(old), Some(block_size)) = (src.dynamic_header(), src.block_size()) else {
        return Err(Error::InvalidArgument(format!(
            "{}: a fixed disk has no blocks to drop; `vmhub img convert` it to a dynamic one",
            path.display()
        )));
    };
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, "stat", e))?;
    let before = meta.len();
    let entries = bat::entries_for(src.virtual_size(), block_size)
        .ok_or_else(|| Error::corrupt(path, "too many blocks"))?;

    // The same identity and parent links, in the layout of a new disk.
    let mut footer = src.footer().clone();
    footer.data_offset = 512;
    let table_offset = 512 + HEADER_SIZE as u64;
    let mut header = DynamicHeader::new(table_offset, entries, block_size as u32);
    let mut links = Vec::new();
    if src.footer().kind() == Some(DiskType::Differencing) {
        header.parent_unique_id = old.parent_unique_id;
        header.parent_timestamp = old.parent_timestamp;
        header.parent_unicode_name = old.parent_unicode_name;
        let len = file_len(src.file(), path)?;
        let mut at = table_offset + bat::table_size(entries);
        for (i, l) in old.locators.iter().enumerate().filter(|(_, l)| l.is_used()) {
            let data = super::chain::read_locator(src.file(), path, i, l, len)?;
            let space = (data.len() as u64).div_ceil(512) * 512;
            header.locators[i] = ParentLocator {
                platform_code: l.platform_code,
                platform_data_space: space as u32,
                platform_data_length: data.len() as u32,
                reserved: 0,
                platform_data_offset: at,
            };
            links.extend_from_slice(&data);
            links.resize(links.len() + (space as usize - data.len()), 0);
            at += space;
        }
    }

    let (tmp, file) = AtomicFile::create(path)?;
    file.set_permissions(meta.permissions())
        .map_err(|e| Error::io(tmp.temp_path(), "chmod", e))?;
    super::meta::write_empty_dynamic(&file, tmp.temp_path(), &footer, &header, &links)?;
    let handle = file
        .try_clone()
        .map_err(|e| Error::io(tmp.temp_path(), "dup", e))?;
    // A differencing disk opens here over the same parent: the new file sits
    // in the same folder, so its locators lead where the old ones did.
    let mut dst = VhdDisk::from_file(handle, tmp.temp_path(), true)?;
    match src.parent() {
        None if free.is_empty() => copy_data(&src, &mut dst, progress)?,
        None => copy_data(
            &Masked {
                inner: &src,
                free: &free,
            },
            &mut dst,
            progress,
        )?,
        Some(parent) => copy_differences(&src, parent, &free, &mut dst, progress)?,
    }
    dst.flush()?;
    drop(dst);
    let after = file_len(&file, tmp.temp_path())?;
    tmp.commit(&file)?;
    Ok(Compacted { before, after })
}

/// Writes into `dst` the sectors `child` holds that read otherwise in `parent`.
fn copy_differences(
    child: &VhdDisk,
    parent: &VhdDisk,
    free: &[(u64, u64)],
    dst: &mut VhdDisk,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    const CHUNK: u64 = 4 << 20;
    let ranges = subtract(&child.own_ranges()?, free);
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    let mut mine = vec![0u8; CHUNK as usize];
    let mut theirs = vec![0u8; CHUNK as usize];
    let mut done = 0;
    for (start, len) in ranges {
        let mut off = start;
        while off < start + len {
            let n = CHUNK.min(start + len - off) as usize;
            let (a, b) = (&mut mine[..n], &mut theirs[..n]);
            child.read_at(a, off)?;
            parent.read_at(b, off)?;
            // Runs of sectors that differ, each written whole.
            let mut s = 0;
            while s < n {
                let e = (s + 512).min(n);
                if a[s..e] == b[s..e] {
                    s = e;
                    continue;
                }
                let mut end = e;
                while end < n {
                    let next = (end + 512).min(n);
                    if a[end..next] == b[end..next] {
                        break;
                    }
                    end = next;
                }
                dst.write_at(&a[s..end], off + s as u64)?;
                s = end;
            }
            off += n as u64;
            done += n as u64;
            progress(done, total);
        }
    }
    Ok(())
}

/// `ranges` sorted, joined where they touch, and cut inward to whole sectors.
fn sectors_within(ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut r: Vec<(u64, u64)> = ranges
        .iter()
        .filter_map(|&(s, n)| {
            let start = s.checked_add(511)? / 512 * 512;
            let end = s.checked_add(n)? / 512 * 512;
            (end > start).then_some((start, end))
        })
        .collect();
    r.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in r {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out.into_iter().map(|(s, e)| (s, e - s)).collect()
}

/// The parts of `ranges` (offset, length; sorted) outside `cut` (sorted,
/// disjoint).
fn subtract(ranges: &[(u64, u64)], cut: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(start, len) in ranges {
        let end = start + len;
        let mut at = start;
        let first = cut.partition_point(|&(s, n)| s + n <= start);
        for &(s, n) in &cut[first..] {
            if s >= end {
                break;
            }
            if s > at {
                out.push((at, s - at));
            }
            at = at.max(s + n);
        }
        if at < end {
            out.push((at, end - at));
        }
    }
    out
}

/// A disk that reads as `inner` except that `free` reads as zeros and maps
/// as unallocated, so that a copy leaves it out.
struct Masked<'a> {
    inner: &'a VhdDisk,
    free: &'a [(u64, u64)],
}

impl Disk for Masked<'_> {
    fn virtual_size(&self) -> u64 {
        self.inner.virtual_size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.inner.read_at(buf, offset)?;
        let end = offset + buf.len() as u64;
        let first = self.free.partition_point(|&(s, n)| s + n <= offset);
        for &(s, n) in &self.free[first..] {
            if s >= end {
                break;
            }
            let a = s.max(offset) - offset;
            let b = (s + n).min(end) - offset;
            buf[a as usize..b as usize].fill(0);
        }
        Ok(())
    }

    fn write_at(&mut self, _buf: &[u8], _offset: u64) -> Result<()> {
        Err(Error::ReadOnly {
            path: self.inner.path().to_path_buf(),
        })
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<crate::Extent>> {
        let mut out = Vec::new();
        for e in self.inner.map(offset, len)? {
            if e.kind == crate::ExtentKind::Unallocated {
                crate::push_extent(&mut out, e);
                continue;
            }
            let kept = subtract(&[(e.offset, e.length)], self.free);
            let mut at = e.offset;
            for (s, n) in kept {
                if s > at {
                    crate::push_extent(
                        &mut out,
                        crate::Extent {
                            offset: at,
                            length: s - at,
                            kind: crate::ExtentKind::Unallocated,
                        },
                    );
                }
                crate::push_extent(
                    &mut out,
                    crate::Extent {
                        offset: s,
                        length: n,
                        kind: e.kind,
                    },
                );
                at = s + n;
            }
            if at < e.end() {
                crate::push_extent(
                    &mut out,
                    crate::Extent {
                        offset: at,
                        length: e.end() - at,
                        kind: crate::ExtentKind::Unallocated,
                    },
                );
            }
        }
        Ok(out)
    }

    fn info(&self) -> Result<crate::ImageInfo> {
        self.inner.info()
    }

    fn path(&self) -> &Path {
        self.inner.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cut_to_sectors_and_subtracted() {
        assert_eq!(
            sectors_within(&[(100, 2000), (2048, 512), (0, 100)]),
            vec![(512, 2048)]
        );
        assert_eq!(sectors_within(&[(0, 511)]), vec![]);
        let r = subtract(&[(0, 4096), (8192, 512)], &[(512, 1024), (2048, 8192)]);
        assert_eq!(r, vec![(0, 512), (1536, 512)]);
        assert_eq!(subtract(&[(0, 100)], &[]), vec![(0, 100)]);
    }
}
