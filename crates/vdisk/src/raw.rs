//! Raw images: the file is the disk, byte for byte. Holes in the file read as zeros.

use crate::io::{file_len, host_allocated, prefetch, read_exact_at, sync_data, write_all_at};
use crate::{check_range, push_file_extents, Disk, Error, Extent, ImageInfo, Result};
use std::fs::File;
use std::path::{Path, PathBuf};

/// An open raw image.
pub struct RawDisk {
    path: PathBuf,
    file: File,
    size: u64,
    writable: bool,
}

impl RawDisk {
    /// Opens the raw image at `path`.
    pub fn open(path: &Path, writable: bool) -> Result<RawDisk> {
        RawDisk::from_file(crate::format::open_file(path, writable)?, path, writable)
    }

    /// Uses an open file as a raw image; `path` names it in messages.
    pub fn from_file(file: File, path: &Path, writable: bool) -> Result<RawDisk> {
        let size = file_len(&file, path)?;
        Ok(RawDisk {
            path: path.to_path_buf(),
            file,
            size,
            writable,
        })
    }

    /// Makes `file` (empty) a raw image of `size` bytes: a hole that reads as zeros.
    pub fn create_in(file: File, path: &Path, size: u64) -> Result<RawDisk> {
        file.set_len(size)
            .map_err(|e| Error::io(path, "resize", e))?;
        Ok(RawDisk {
            path: path.to_path_buf(),
            file,
            size,
            writable: true,
        })
    }
}

impl Disk for RawDisk {
    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(&self.path, offset, buf.len() as u64, self.size)?;
        read_exact_at(&self.file, &self.path, buf, offset, "data")
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly {
                path: self.path.clone(),
            });
        }
        check_range(&self.path, offset, buf.len() as u64, self.size)?;
        write_all_at(&self.file, &self.path, buf, offset)
    }

    fn prefetch(&self, offset: u64, len: u64) {
        prefetch(&self.file, offset, len);
    }

    fn flush(&mut self) -> Result<()> {
        if self.writable {
            sync_data(&self.file, &self.path)?;
        }
        Ok(())
    }

    fn discard(&mut self, offset: u64, len: u64) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly {
                path: self.path.clone(),
            });
        }
        check_range(&self.path, offset, len, self.size)?;
        use rustix::fs::{fallocate, FallocateFlags};
        match fallocate(
            &self.file,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        ) {
            Ok(()) => Ok(()),
            // Filesystems without hole punching get zeros written instead.
            Err(_) => crate::write_zeroes_by_writing(self, offset, len),
        }
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(&self.path, offset, len, self.size)?;
        let mut out = Vec::new();
        push_file_extents(&mut out, &self.file, offset, len, offset);
        Ok(out)
    }

    fn info(&self) -> Result<ImageInfo> {
        let host = host_allocated(&self.file, &self.path)?;
        Ok(ImageInfo {
            file: self.path.display().to_string(),
            format: "raw",
            virtual_size: self.size,
            file_size: self.size,
            allocated_bytes: host.min(self.size),
            host_allocated_bytes: host,
            chain: vec![crate::ChainLink {
                file: self.path.display().to_string(),
                format: "raw",
                kind: "raw",
                unique_id: None,
            }],
            vhd: None,
            details: None,
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}
