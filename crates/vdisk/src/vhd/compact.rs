//! `img compact`: rebuild a dynamic VHD without the blocks that read as zeros
//! and without space that belongs to nothing.
//!
//! The new file is written beside the old one and renamed over it once complete
//! and durable, so a crash leaves either the old image or the new one. It keeps
//! the footer's identity (unique id, timestamp, creator), so differencing disks
//! made over it still accept it as their parent.

use super::bat;
use super::footer::DiskType;
use super::header::{DynamicHeader, HEADER_SIZE};
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
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, "stat", e))?;
    let before = meta.len();
    let block_size = src.block_size().unwrap_or(0);
    let entries = bat::entries_for(src.virtual_size(), block_size)
        .ok_or_else(|| Error::corrupt(path, "too many blocks"))?;

    let (tmp, file) = AtomicFile::create(path)?;
    file.set_permissions(meta.permissions())
        .map_err(|e| Error::io(tmp.temp_path(), "chmod", e))?;
    // The same identity, in the layout of a new disk.
    let mut footer = src.footer().clone();
    footer.data_offset = 512;
    let header = DynamicHeader::new(512 + HEADER_SIZE as u64, entries, block_size as u32);
    super::meta::write_empty_dynamic(&file, tmp.temp_path(), &footer, &header, &[])?;
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
