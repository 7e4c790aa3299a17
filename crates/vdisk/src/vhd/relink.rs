//! `img relink`: point a differencing disk at a moved or copied parent.
//!
//! The new parent must carry the unique id the child recorded (the same disk,
//! moved or copied), unless forced. New locator data is appended past the last
//! block, with the footer moved after it, and only then does the header point
//! at it: a crash at any moment leaves either the old links or the new ones.
//! The old locator data stays behind, unreferenced.

use super::footer::{self, DiskType, FOOTER_SIZE};
use super::{read_footer, VhdDisk};
use crate::io::{file_len, sync_data, write_all_at};
use crate::{Disk, Error, Result};
use std::path::Path;

/// Points the differencing disk `child` at `parent`. With `force`, a parent
/// whose unique id differs is accepted, and the child adopts its id. Returns
/// warnings for the user.
pub fn relink(child: &Path, parent: &Path, force: bool) -> Result<Vec<String>> {
    crate::format::require_vhd(
        child,
        "relinking",
        "`vdisk::relink` relinks VHDX children too",
    )?;
    let mut warnings = Vec::new();
    let file = crate::format::open_file(child, true)?;
    let len = file_len(&file, child)?;
    let (ftr, _, _) = read_footer(&file, child, len)?;
    if ftr.kind() != Some(DiskType::Differencing) {
        return Err(Error::InvalidArgument(format!(
            "{}: not a differencing disk",
            child.display()
        )));
    }
    let ho = ftr.data_offset;
    let mut header = super::meta::read_header(&file, child, &ftr, len)?;

    let base = VhdDisk::open(parent, false)?;
    let (child_size, _) = super::size::virtual_size(&ftr);
    if base.virtual_size() != child_size {
        let msg = format!(
            "{} is {} bytes, the child {} bytes",
            parent.display(),
            base.virtual_size(),
            child_size
        );
        if !force {
            return Err(Error::InvalidArgument(format!(
                "{msg}; use --force to link anyway"
            )));
        }
        warnings.push(msg);
    }
    if base.footer().unique_id != header.parent_unique_id {
        let msg = format!(
            "{} has unique id {}, but the child was made over {}",
            parent.display(),
            base.footer().unique_id_text(),
            footer::uuid_text(&header.parent_unique_id)
        );
        if !force {
            return Err(Error::InvalidArgument(format!(
                "{msg}: it is another disk (use --force if it holds the same data)"
            )));
        }
        warnings.push(format!(
            "{msg}; linked anyway: the child's data now lies over this disk"
        ));
        header.parent_unique_id = base.footer().unique_id;
    }

    let parent_abs = std::fs::canonicalize(parent).map_err(|e| Error::io(parent, "resolve", e))?;
    let child_abs = std::fs::canonicalize(child).map_err(|e| Error::io(child, "resolve", e))?;
    let child_dir = child_abs.parent().unwrap_or(Path::new("/"));
    // The new locator data goes where the footer is now; the footer moves after it.
    let data_at = len.saturating_sub(FOOTER_SIZE as u64).div_ceil(512) * 512;
    let links =
        super::locator::links(child_dir, &parent_abs, data_at).map_err(Error::InvalidArgument)?;
    header.parent_unicode_name = links.name;
    header.parent_timestamp = links.timestamp;
    let at = data_at + links.data.len() as u64;
    // The footer first, past the new data, so that the file always ends with one.
    write_all_at(&file, child, &ftr.encode(), at)?;
    write_all_at(&file, child, &links.data, data_at)?;
    sync_data(&file, child)?;
    header.locators = links.locators;
    write_all_at(&file, child, &header.encode(), ho)?;
    sync_data(&file, child)?;
    Ok(warnings)
}
