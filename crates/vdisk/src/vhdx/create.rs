//! Making new VHDX images: fixed, dynamic and differencing.

use super::bat::{self, Geometry};
use super::fields::{guid_text, new_guid, put, ZERO_GUID};
use super::header::{
    Header, RegionTable, ALIGN, FILE_SIGNATURE, HEADER_OFFSETS, HEADER_SECTION, REGION_OFFSETS,
};
use super::metadata::{self, Metadata, ParentLocator, MAX_BLOCK, MAX_SIZE, MIN_BLOCK};
use super::VhdxDisk;
use crate::format::{CreateOptions, ImageType};
use crate::io::{sync_data, write_all_at};
use crate::{Disk, Error, Result};
use std::fs::File;
use std::path::Path;

/// The block size of new fixed and dynamic disks.
pub const DEFAULT_BLOCK_SIZE: u64 = 32 << 20;
/// The block size of new differencing disks.
pub const DEFAULT_CHILD_BLOCK_SIZE: u64 = 2 << 20;
/// The log size of new disks.
pub const DEFAULT_LOG_SIZE: u64 = 1 << 20;
/// Bytes of the metadata region of new disks.
const METADATA_SIZE: u64 = 1 << 20;

/// What to make.
#[derive(Clone, Debug)]
pub struct NewVhdx {
    /// The virtual size (a multiple of the logical sector size).
    pub size: u64,
    /// Bytes per payload block.
    pub block_size: u64,
    /// Logical sector size.
    pub logical_sector: u32,
    /// Physical sector size.
    pub physical_sector: u32,
    /// Bytes of the log.
    pub log_size: u64,
    /// Every block allocated up front.
    pub fixed: bool,
    /// The parent locator of a differencing disk.
    pub parent: Option<ParentLocator>,
}

fn check_block_size(bs: u64) -> Result<()> {
    if !bs.is_power_of_two() || !(MIN_BLOCK..=MAX_BLOCK).contains(&bs) {
        return Err(Error::InvalidArgument(format!(
            "VHDX block size {bs} is not a power of two from 1 MiB to 256 MiB"
        )));
    }
    Ok(())
}

/// Writes the structures of a new image into `file` (empty).
pub fn write_new(file: &File, path: &Path, n: &NewVhdx) -> Result<()> {
    check_block_size(n.block_size)?;
    if n.size == 0 || n.size > MAX_SIZE || n.size % u64::from(n.logical_sector) != 0 {
        return Err(Error::InvalidArgument(format!(
            "VHDX size {} is not a non-zero multiple of {} bytes up to 64 TiB",
            n.size, n.logical_sector
        )));
    }
    let geo = Geometry::new(
        n.block_size,
        u64::from(n.logical_sector),
        n.size,
        n.parent.is_some(),
    );
    let log_offset = HEADER_SECTION;
    let bat_offset = log_offset + n.log_size;
    let bat_len = (geo.entries * 8).div_ceil(ALIGN) * ALIGN;
    let meta_offset = bat_offset + bat_len;
    let data_offset = meta_offset + METADATA_SIZE;
    let bat_len32 = u32::try_from(bat_len)
        .map_err(|_| Error::InvalidArgument("the BAT of so large a disk exceeds 4 GiB".into()))?;

    let mut id = vec![0u8; 64 << 10];
    put(&mut id, 0, FILE_SIGNATURE);
    let creator: Vec<u8> = "vmhub".encode_utf16().flat_map(u16::to_le_bytes).collect();
    put(&mut id, 8, &creator);
    write_all_at(file, path, &id, 0)?;

    let data_write_guid = new_guid(path)?;
    let mut h = Header {
        sequence: 0,
        file_write_guid: new_guid(path)?,
        data_write_guid,
        log_guid: ZERO_GUID,
        log_version: 0,
        version: 1,
        log_length: n.log_size as u32,
        log_offset,
    };
    for off in HEADER_OFFSETS {
        h.sequence += 1;
        write_all_at(file, path, &h.encode(), off)?;
    }
    let table = RegionTable::of_new_image(bat_offset, bat_len32, meta_offset, METADATA_SIZE as u32);
    for off in REGION_OFFSETS {
        write_all_at(file, path, &table.encode(), off)?;
    }
    let meta = Metadata {
        block_size: n.block_size as u32,
        leave_blocks_allocated: n.fixed,
        has_parent: n.parent.is_some(),
        virtual_size: n.size,
        page83: new_guid(path)?,
        logical_sector: n.logical_sector,
        physical_sector: n.physical_sector,
        parent: n.parent.clone(),
    };
    write_all_at(
        file,
        path,
        &meta.encode(METADATA_SIZE as usize),
        meta_offset,
    )?;
    let mut end = data_offset;
    if n.fixed {
        // Every payload block in order after the metadata; the file's holes
        // read as the zeros a new disk holds.
        let mut table = vec![0u8; (geo.entries * 8) as usize];
        for b in 0..geo.data_blocks {
            let e = bat::entry(bat::FULLY_PRESENT, data_offset + b * n.block_size);
            put(
                &mut table,
                (geo.payload_index(b) * 8) as usize,
                &e.to_le_bytes(),
            );
        }
        write_all_at(file, path, &table, bat_offset)?;
        end = data_offset + geo.data_blocks * n.block_size;
    }
    file.set_len(end.max(data_offset))
        .map_err(|e| Error::io(path, "resize", e))?;
    sync_data(file, path)
}

/// Makes an empty VHDX image of `size` bytes in `file` (new and empty), and
/// returns it open for writing with notes on any size adjustment.
pub fn create(
    file: File,
    path: &Path,
    size: u64,
    opts: &CreateOptions,
) -> Result<(Box<dyn Disk>, Vec<String>)> {
    let mut notes = Vec::new();
    let rounded = size.div_ceil(512) * 512;
    if rounded != size {
        notes.push(format!(
            "size rounded up from {size} to {rounded} bytes, a whole number of 512-byte sectors"
        ));
    }
    write_new(
        &file,
        path,
        &NewVhdx {
            size: rounded,
            block_size: opts.block_size.unwrap_or(DEFAULT_BLOCK_SIZE),
            logical_sector: 512,
            physical_sector: 4096,
            log_size: DEFAULT_LOG_SIZE,
            fixed: opts.image_type == ImageType::Fixed,
            parent: None,
        },
    )?;
    Ok((Box::new(VhdxDisk::load(file, path, true, true)?), notes))
}

/// Makes in `file` (new and empty) a differencing VHDX at `path` over the
/// image at `parent_path` (any format; VHDX is the norm), with blocks of
/// `block_size` bytes (2 MiB when `None`). The locator records the parent's
/// path relative to the child and its absolute path, and, for a VHDX parent,
/// its DataWriteGuid as parent_linkage. Returns the child open for writing.
pub fn create_child(
    file: File,
    path: &Path,
    parent_path: &Path,
    block_size: Option<u64>,
) -> Result<Box<dyn Disk>> {
    let parent = crate::format::open(parent_path, crate::OpenOptions { writable: false })?;
    let info = parent.info()?;
    let (linkage, sector) = match &info.details {
        Some(crate::FormatDetails::Vhdx(v)) => (v.data_write_guid.clone(), v.logical_sector_size),
        _ => (guid_text(&ZERO_GUID), 512),
    };
    let size = parent.virtual_size();
    drop(parent);
    let (rel, absolute) = locator_paths(path, parent_path)?;
    let locator = ParentLocator {
        kind: metadata::VHDX_PARENT_TYPE,
        entries: vec![
            (
                "parent_linkage".into(),
                format!("{{{}}}", linkage.to_lowercase()),
            ),
            ("relative_path".into(), rel),
            ("absolute_win32_path".into(), absolute),
        ],
    };
    write_new(
        &file,
        path,
        &NewVhdx {
            size,
            block_size: block_size.unwrap_or(DEFAULT_CHILD_BLOCK_SIZE),
            logical_sector: sector,
            physical_sector: 4096,
            log_size: DEFAULT_LOG_SIZE,
            fixed: false,
            parent: Some(locator),
        },
    )?;
    Ok(Box::new(VhdxDisk::load(file, path, true, true)?))
}

/// The parent locator's paths of `parent` for a child at `child`: relative to
/// the child's folder, with backslashes as Windows writes them (`.\` before a
/// name in the same folder), and absolute.
pub(crate) fn locator_paths(child: &Path, parent: &Path) -> Result<(String, String)> {
    let absolute = std::fs::canonicalize(parent).map_err(|e| Error::io(parent, "resolve", e))?;
    let child_dir = match child.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let child_dir =
        std::fs::canonicalize(&child_dir).map_err(|e| Error::io(&child_dir, "resolve", e))?;
    let relative = pathdiff::diff_paths(&absolute, &child_dir).unwrap_or_else(|| absolute.clone());
    let mut rel = relative.to_string_lossy().replace('/', "\\");
    if !rel.starts_with("..") {
        rel = format!(".\\{rel}");
    }
    Ok((rel, absolute.to_string_lossy().into_owned()))
}
