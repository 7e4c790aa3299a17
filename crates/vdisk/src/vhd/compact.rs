//! `img compact`: rebuild a dynamic VHD without the blocks that read as zeros
//! and without space that belongs to nothing.
//!
//! The new file is written beside the old one and renamed over it once complete
//! and durable, so a crash leaves either the old image or the new one. It keeps
//! the footer's identity (unique id, timestamp, creator), so differencing disks
//! made over it still accept it as their parent.

use super::bat::{self, Bat};
use super::footer::{DiskType, NO_DATA_OFFSET};
use super::header::{DynamicHeader, HEADER_SIZE};
use super::VhdDisk;
use crate::io::{file_len, write_all_at, AtomicFile};
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

/// Compacts the dynamic VHD at `path` in place.
pub fn compact(path: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<Compacted> {
    let src = VhdDisk::open(path, false)?;
    match src.footer().kind() {
        Some(DiskType::Dynamic) => {}
        Some(DiskType::Fixed) => {
            return Err(Error::InvalidArgument(format!(
                "{}: a fixed disk has no blocks to drop; `vmhub img convert` it to a dynamic one",
                path.display()
            )))
        }
        _ => {
            return Err(Error::unsupported(
                path,
                "compacting differencing disks is not supported yet",
            ))
        }
    }
    let before = std::fs::metadata(path)
        .map_err(|e| Error::io(path, "stat", e))?
        .len();
    let block_size = src.info()?.vhd.and_then(|v| v.block_size).unwrap_or(0);
    let entries = u32::try_from(src.virtual_size().div_ceil(block_size.max(1)))
        .ok()
        .filter(|&n| n <= bat::MAX_ENTRIES)
        .ok_or_else(|| Error::corrupt(path, "too many blocks"))?;

    let (tmp, file) = AtomicFile::create(path)?;
    let perms = std::fs::metadata(path)
        .map_err(|e| Error::io(path, "stat", e))?
        .permissions();
    file.set_permissions(perms)
        .map_err(|e| Error::io(tmp.temp_path(), "chmod", e))?;
    let mut footer = src.footer().clone();
    if footer.data_offset == NO_DATA_OFFSET {
        return Err(Error::corrupt(path, "footer: no dynamic header"));
    }
    footer.data_offset = 512;
    let fb = footer.encode();
    let header = DynamicHeader::new(512 + HEADER_SIZE as u64, entries, block_size as u32);
    let mut buf = Vec::new();
    buf.extend_from_slice(&fb);
    buf.extend_from_slice(&header.encode());
    buf.extend_from_slice(&Bat::new(entries).encode());
    buf.extend_from_slice(&fb);
    write_all_at(&file, tmp.temp_path(), &buf, 0)?;
    let handle = file
        .try_clone()
        .map_err(|e| Error::io(tmp.temp_path(), "dup", e))?;
    let mut dst = VhdDisk::from_file(handle, tmp.temp_path(), true)?;
    copy_data(&src, &mut dst, progress)?;
    dst.flush()?;
    drop(dst);
    let after = file_len(&file, tmp.temp_path())?;
    tmp.commit(&file)?;
    Ok(Compacted { before, after })
}
