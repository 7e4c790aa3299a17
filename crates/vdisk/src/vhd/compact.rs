//! `img compact`: rebuild a dynamic or differencing VHD without what it does not
//! need, and without space that belongs to nothing.
//!
//! A dynamic disk drops the blocks that read as zeros. A differencing disk drops
//! the sectors that read the same as its parent there: they hide nothing, so the
//! chain reads the same without them, and a zero sector over a parent that holds
//! data is kept.
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
        None => copy_data(&src, &mut dst, progress)?,
        Some(parent) => copy_differences(&src, parent, &mut dst, progress)?,
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
    dst: &mut VhdDisk,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    const CHUNK: u64 = 4 << 20;
    let ranges = child.own_ranges()?;
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
