//! `img resize` of a fixed or dynamic VHDX: grow it, or shrink it when the
//! part cut off holds no data (or when forced). A fixed disk grows by whole
//! blocks placed at the end of the file; blocks cut off by a shrink are
//! dropped from the BAT, and their space stays in the file.
//!
//! The virtual disk size item and the BAT entries that appear or go change
//! together in one transaction of the log, so a crash leaves either the old
//! size or the new one, each with a BAT that maps it (an open replays a log
//! cut off after its entry was made durable). The BAT region is not moved:
//! it must have room for the new size's entries, which is what a VHDX made
//! by vmhub, qemu-img or Hyper-V has for sizes up to many times the old one.
//! Before that, the bytes of the block that straddles the smaller of the two
//! sizes are zeroed past it, so that data cut off by a shrink never comes back
//! with a later grow.

use super::bat::{self, Geometry};
use super::store::{read_metadata_region, read_regions};
use super::{corrupt, header, log, metadata, VhdxDisk};
use crate::io::write_all_at;
use crate::{Disk, Error, Result};
use std::path::Path;

/// The largest VHDX ([MS-VHDX] 2.6.2.2: 64 TiB).
pub const MAX_SIZE: u64 = 64 << 40;

/// Resizes the VHDX at `path` to `size` bytes (rounded up to whole logical
/// sectors). Shrinking refuses to cut off data unless `force`. Returns notes.
pub fn resize(path: &Path, size: u64, force: bool) -> Result<Vec<String>> {
    let file = crate::format::open_file(path, true)?;
    let mut disk = VhdxDisk::load(file, path, true, false)?;
    if disk.meta.has_parent {
        return Err(Error::InvalidArgument(format!(
            "{}: a differencing disk has its parent's size; resize the chain's base and flatten instead",
            path.display()
        )));
    }
    let mut notes = Vec::new();
    let sector = disk.geo.sector;
    let new = size.div_ceil(sector).saturating_mul(sector);
    if new == 0 || new > MAX_SIZE {
        return Err(Error::InvalidArgument(format!(
            "{size} bytes: a VHDX holds 1 byte to {MAX_SIZE} bytes"
        )));
    }
    if new != size {
        notes.push(format!(
            "{size} bytes rounded up to {new}, a whole number of {sector}-byte sectors"
        ));
    }
    let old = disk.virtual_size();
    if new == old {
        return Ok(notes);
    }
    crate::ops::resize::refuse_cutting_data(&disk, path, (old, new), force, &mut notes)?;
    let geo = Geometry::new(disk.geo.block_size, sector, new, false);
    // Where the BAT may grow to, and where the size is: from the region
    // table and the metadata table, read again here rather than kept by
    // every open.
    let regions = read_regions(&disk.store)?;
    let bat_room = regions
        .find(&header::BAT_REGION)
        .map_or(0, |r| u64::from(r.length));
    let room = bat_room / 8;
    if geo.entries > room {
        return Err(Error::unsupported(
            path,
            format!(
                "its BAT region ({bat_room} bytes) has room for {room} entries, and {new} bytes in {}-byte blocks need {}; `vmhub img convert` it to a new VHDX of that size instead",
                disk.geo.block_size, geo.entries
            ),
        ));
    }
    let (meta_offset, region) = read_metadata_region(&disk.store, &regions)?;
    let size_item = metadata::decode_table(&region)
        .map_err(|e| corrupt(path, format!("metadata region: {e}")))?
        .iter()
        .find(|e| e.item == metadata::VIRTUAL_DISK_SIZE && !e.is_user)
        .map(|e| meta_offset + u64::from(e.offset))
        .ok_or_else(|| corrupt(path, "metadata region: no virtual disk size item"))?;
    disk.begin_writing()?;
    disk.zero_past(old.min(new))?;
    let (old_entries, new_entries) = (disk.geo.entries, geo.entries);
    if new_entries > old_entries {
        disk.bat.resize(new_entries as usize, 0);
    }
    for i in old_entries.min(new_entries)..old_entries.max(new_entries) {
        disk.set_entry(i, 0);
    }
    // A fixed disk keeps every block in the file: the new ones are placed
    // at its end (zeros), as creating it placed the others.
    if disk.meta.leave_blocks_allocated {
        for block in disk.geo.data_blocks..geo.data_blocks {
            disk.allocate(block, bat::FULLY_PRESENT)?;
        }
    }
    let page_at = size_item / log::SECTOR as u64 * log::SECTOR as u64;
    let mut page = vec![0u8; log::SECTOR];
    disk.store
        .read(&mut page, page_at, "metadata region (virtual disk size)")?;
    let within = (size_item - page_at) as usize;
    page.get_mut(within..within + 8)
        .ok_or_else(|| {
            corrupt(
                path,
                "metadata region: the virtual disk size item crosses a page",
            )
        })?
        .copy_from_slice(&new.to_le_bytes());
    disk.commit(vec![(page_at, page)])?;
    Ok(notes)
}

impl VhdxDisk {
    /// Writes zeros over the part past guest offset `at` of the payload block
    /// that holds it, if that block is in the file.
    fn zero_past(&mut self, at: u64) -> Result<()> {
        let bs = self.geo.block_size;
        let within = at % bs;
        if within == 0 {
            return Ok(());
        }
        let block = at / bs;
        let e = self.entry(block);
        if bat::state(e) != bat::FULLY_PRESENT {
            return Ok(());
        }
        let off = self.block_offset(block, e)?;
        let zeros = vec![0u8; (bs - within) as usize];
        write_all_at(&self.store.file, &self.store.path, &zeros, off + within)
    }
}
