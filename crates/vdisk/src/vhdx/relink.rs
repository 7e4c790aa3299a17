//! `img relink` of a differencing VHDX (as `Set-VHD -ParentPath` does):
//! point it at its moved or copied parent.
//!
//! The parent locator item is rewritten with the new relative and absolute
//! paths; the volume path (a Windows volume the parent has left) is dropped.
//! A parent whose DataWriteGuid is not the parent_linkage the child recorded
//! is another disk, or the same one written since, and is refused unless
//! forced; then parent_linkage becomes its DataWriteGuid. The new item goes
//! where the old one was when it fits, else after the last item of the
//! metadata region; the changed pages of the region go through the log in
//! one transaction, so a crash leaves the old locator or the new one. The
//! child's DataWriteGuid stays: its data does not change, and its own
//! children still find it by it.

use super::metadata::{self, ParentLocator};
use super::store::{read_metadata_region, read_regions};
use super::{corrupt, fields, log, VhdxDisk};
use crate::{Error, FormatDetails, OpenOptions, Result};
use std::path::Path;

/// Points the differencing VHDX `child` at `parent`. With `force`, a parent
/// whose DataWriteGuid is not the one the child recorded is accepted (a
/// warning says so). Returns warnings.
pub fn relink(child: &Path, parent: &Path, force: bool) -> Result<Vec<String>> {
    let file = crate::format::open_file(child, true)?;
    let mut disk = VhdxDisk::load(file, child, true, false)?;
    disk.keep_data_write_guid = true;
    let old = match (&disk.meta.parent, disk.meta.has_parent) {
        (Some(p), true) => p.clone(),
        _ => {
            return Err(Error::InvalidArgument(format!(
                "{}: not a differencing disk",
                child.display()
            )))
        }
    };
    let base = crate::format::open(parent, OpenOptions { writable: false })?;
    if base.virtual_size() < disk.meta.virtual_size {
        return Err(Error::InvalidArgument(format!(
            "{}: {} bytes, fewer than the child's {}: it cannot be the child's parent",
            parent.display(),
            base.virtual_size(),
            disk.meta.virtual_size
        )));
    }
    let mut warnings = Vec::new();
    let mut entries: Vec<(String, String)> = old
        .entries
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "relative_path" | "absolute_win32_path" | "volume_path"
            )
        })
        .cloned()
        .collect();
    if let Some(FormatDetails::Vhdx(info)) = base.info()?.details {
        let got = fields::parse_guid(&info.data_write_guid);
        let recorded: Vec<_> = ["parent_linkage", "parent_linkage2"]
            .iter()
            .filter_map(|k| old.get(k).and_then(fields::parse_guid))
            .collect();
        if got.is_none_or(|g| !recorded.contains(&g)) {
            let msg = format!(
                "{} has DataWriteGuid {}, but the child was made over {} (another disk, or this one written since)",
                parent.display(),
                info.data_write_guid,
                old.get("parent_linkage").unwrap_or("no recorded id")
            );
            if !force {
                return Err(Error::InvalidArgument(format!(
                    "{msg}; use --force to link anyway"
                )));
            }
            warnings.push(msg);
            entries.retain(|(k, _)| k != "parent_linkage" && k != "parent_linkage2");
            entries.insert(
                0,
                (
                    "parent_linkage".into(),
                    format!("{{{}}}", info.data_write_guid.to_lowercase()),
                ),
            );
        }
    }
    drop(base);
    let (relative, absolute) = super::create::locator_paths(child, parent)?;
    entries.push(("relative_path".into(), relative));
    entries.push(("absolute_win32_path".into(), absolute));
    let item = ParentLocator {
        kind: old.kind,
        entries,
    }
    .encode();

    let regions = read_regions(&disk.store)?;
    let (meta_offset, mut region) = read_metadata_region(&disk.store, &regions)?;
    let before = region.clone();
    let table = metadata::decode_table(&region)
        .map_err(|e| corrupt(child, format!("metadata region: {e}")))?;
    let index = table
        .iter()
        .position(|e| e.item == metadata::PARENT_LOCATOR && !e.is_user)
        .ok_or_else(|| corrupt(child, "metadata region: no parent locator item"))?;
    let (old_at, old_len) = table
        .get(index)
        .map(|e| (e.offset as usize, e.length as usize))
        .ok_or_else(|| corrupt(child, "metadata region: no parent locator item"))?;
    let at = if item.len() <= old_len {
        old_at
    } else {
        let end = table
            .iter()
            .map(|e| e.offset as usize + e.length as usize)
            .max()
            .unwrap_or(metadata::TABLE_SIZE)
            .div_ceil(8)
            * 8;
        if end + item.len() > region.len() {
            return Err(Error::unsupported(
                child,
                format!(
                    "its metadata region ({} bytes) has no room for a parent locator of {} bytes; `vmhub img convert` the chain instead",
                    region.len(),
                    item.len()
                ),
            ));
        }
        end
    };
    let (Ok(offset), Ok(length)) = (u32::try_from(at), u32::try_from(item.len())) else {
        return Err(corrupt(child, "metadata region: offsets past 4 GiB"));
    };
    let place = |region: &mut [u8], at: usize, bytes: &[u8]| -> Result<()> {
        region
            .get_mut(at..at + bytes.len())
            .ok_or_else(|| corrupt(child, "metadata region: an item lies past its end"))?
            .copy_from_slice(bytes);
        Ok(())
    };
    place(&mut region, old_at, &vec![0u8; old_len])?;
    place(&mut region, at, &item)?;
    let entry = 32 + 32 * index;
    place(&mut region, entry + 16, &offset.to_le_bytes())?;
    place(&mut region, entry + 20, &length.to_le_bytes())?;
    // Only the pages that changed go through the log.
    let pages: Vec<(u64, Vec<u8>)> = region
        .chunks(log::SECTOR)
        .zip(before.chunks(log::SECTOR))
        .enumerate()
        .filter(|(_, (new, old))| new != old)
        .map(|(i, (new, _))| (meta_offset + (i * log::SECTOR) as u64, new.to_vec()))
        .collect();
    if pages.is_empty() {
        return Ok(warnings);
    }
    disk.begin_writing()?;
    disk.commit(pages)?;
    Ok(warnings)
}
