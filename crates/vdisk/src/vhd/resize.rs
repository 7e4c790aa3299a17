//! `img resize`: grow a fixed or dynamic VHD, or shrink it when the part cut off
//! holds no data (or when forced).
//!
//! Writes are ordered so that the footer never promises more than the BAT can
//! map: growing updates (or relocates) the BAT before the footers, shrinking
//! writes the footers first. A BAT that has no room to grow in place is written
//! anew past the last block and the header then points at it.

use super::bat::{self, Bat, UNUSED};
use super::create::plan_size;
use super::footer::{DiskType, Footer, FOOTER_SIZE};
use super::{read_footer, VhdDisk, MAX_SIZE};
use crate::io::{file_len, read_exact_at, sync_data, write_all_at};
use crate::{Disk, Error, Result};
use std::fs::File;
use std::path::Path;

/// Resizes the VHD at `path` to `size` bytes (rounded up to whole sectors).
/// Shrinking refuses to cut off data unless `force`. Returns notes.
pub fn resize(path: &Path, size: u64, force: bool) -> Result<Vec<String>> {
    crate::format::require_vhd(
        path,
        "resizing",
        "`vmhub img convert` to VHD, then resize that",
    )?;
    let plan = plan_size(size, false)?;
    let mut notes = plan.notes.clone();
    let new = plan.size;
    let old = {
        let disk = VhdDisk::open(path, false)?;
        if disk.parent().is_some() {
            return Err(Error::InvalidArgument(format!(
                "{}: a differencing disk has its parent's size; resize the chain's base and flatten instead",
                path.display()
            )));
        }
        let old = disk.virtual_size();
        crate::ops::resize::refuse_cutting_data(&disk, path, (old, new), force, &mut notes)?;
        old
    };
    if new > MAX_SIZE {
        return Err(Error::InvalidArgument(format!(
            "{new} bytes exceeds the VHD maximum of {MAX_SIZE}"
        )));
    }
    let file = crate::format::open_file(path, true)?;
    let len = file_len(&file, path)?;
    let (mut footer, _, _) = read_footer(&file, path, len)?;
    footer.current_size = new;
    footer.geometry = plan.geometry;
    match footer.kind() {
        Some(DiskType::Fixed) => resize_fixed(&file, path, &footer, old, new)?,
        Some(DiskType::Dynamic) => resize_dynamic(&file, path, &footer, len, old, new)?,
        _ => {
            return Err(Error::unsupported(
                path,
                "only fixed and dynamic disks can be resized",
            ))
        }
    }
    Ok(notes)
}

fn resize_fixed(file: &File, path: &Path, footer: &Footer, old: u64, new: u64) -> Result<()> {
    // The new footer first, so the file always ends with one; then what it
    // replaces: the old footer, now inside a grown disk, becomes zeros, or the
    // cut-off tail goes.
    write_all_at(file, path, &footer.encode(), new)?;
    sync_data(file, path)?;
    if new > old {
        write_all_at(file, path, &[0u8; FOOTER_SIZE], old)?;
    } else {
        file.set_len(new + FOOTER_SIZE as u64)
            .map_err(|e| Error::io(path, "truncate", e))?;
    }
    sync_data(file, path)
}

fn resize_dynamic(
    file: &File,
    path: &Path,
    footer: &Footer,
    len: u64,
    old: u64,
    new: u64,
) -> Result<()> {
    let ho = footer.data_offset;
    let mut header = super::meta::read_header(file, path, footer, len)?;
    let mut table = super::meta::read_bat(file, path, &header, len)?;
    let bs = u64::from(header.block_size);
    let entries = header.max_table_entries;
    let table_len = bat::table_size(entries);
    let needed = bat::entries_for(new, bs).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{new} bytes in {bs}-byte blocks: too many for one BAT"
        ))
    })?;
    let write_footers = |f: &Footer, end: u64| -> Result<()> {
        write_all_at(file, path, &f.encode(), end)?;
        sync_data(file, path)?;
        write_all_at(file, path, &f.encode(), 0)?;
        sync_data(file, path)
    };
    let footer_at = len - FOOTER_SIZE as u64;

    if new < old {
        write_footers(footer, footer_at)?;
        // Blocks past the new end are dropped (their space is reclaimed by compact).
        let mut sectors = std::collections::BTreeSet::new();
        for i in needed..entries {
            if table.raw(i as usize).is_some_and(|e| e != UNUSED) {
                sectors.extend(table.set(i as usize, UNUSED));
            }
        }
        super::meta::write_bat_sectors(file, path, &table, header.table_offset, sectors)?;
        return sync_data(file, path);
    }
    if needed > entries {
        let mut grown = Bat::new(needed);
        for (i, off) in table.allocated() {
            grown.set(i as usize, (off / 512) as u32);
        }
        if bat::table_size(needed) <= table_len {
            // Room in the table's last sector.
            write_all_at(file, path, &grown.encode(), header.table_offset)?;
            sync_data(file, path)?;
        } else {
            // No room in place: the table moves past the last block, the footer
            // after it, and only then does the header point there.
            let at = footer_at.div_ceil(512) * 512;
            let bytes = grown.encode();
            // The old footer moves first: until the header points at the new
            // table, the disk keeps its old size.
            let mut current = [0u8; FOOTER_SIZE];
            read_exact_at(file, path, &mut current, footer_at, "footer")?;
            write_all_at(file, path, &current, at + bytes.len() as u64)?;
            write_all_at(file, path, &bytes, at)?;
            sync_data(file, path)?;
            header.table_offset = at;
        }
        header.max_table_entries = needed;
        write_all_at(file, path, &header.encode(), ho)?;
        sync_data(file, path)?;
    }
    let end = file_len(file, path)? - FOOTER_SIZE as u64;
    write_footers(footer, end)
}
