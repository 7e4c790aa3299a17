//! `img relink`: point a differencing disk at a moved or copied parent.
//!
//! The new parent must carry the unique id the child recorded (the same disk,
//! moved or copied), unless forced. New locator data is appended past the last
//! block, with the footer moved after it, and only then does the header point
//! at it: a crash at any moment leaves either the old links or the new ones.
//! The old locator data stays behind, unreferenced.

use super::footer::{self, DiskType, FOOTER_SIZE};
use super::header::{DynamicHeader, ParentLocator, HEADER_SIZE};
use super::locator::{encode_parent_name, encode_utf16le, relative_text, W2KU, W2RU};
use super::{read_footer, VhdDisk};
use crate::io::{file_len, read_exact_at, sync_data, write_all_at};
use crate::{Disk, Error, Result};
use std::path::Path;

/// Points the differencing disk `child` at `parent`. With `force`, a parent
/// whose unique id differs is accepted, and the child adopts its id. Returns
/// warnings for the user.
pub fn relink(child: &Path, parent: &Path, force: bool) -> Result<Vec<String>> {
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
    let mut hb = vec![0u8; HEADER_SIZE];
    read_exact_at(&file, child, &mut hb, ho, "dynamic header")?;
    let mut header = DynamicHeader::decode(&hb)
        .filter(|h| h.problems().is_empty())
        .ok_or_else(|| Error::corrupt(child, "dynamic header is damaged"))?;

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
    let not_text =
        || Error::InvalidArgument(format!("{}: the path is not valid UTF-8", parent.display()));
    let abs_text = parent_abs.to_str().ok_or_else(not_text)?.to_string();
    let rel_text = relative_text(child_dir, &parent_abs).ok_or_else(not_text)?;
    let name = parent_abs
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(not_text)?;
    header.parent_unicode_name = encode_parent_name(name)
        .ok_or_else(|| Error::InvalidArgument(format!("{name}: longer than 256 characters")))?;
    if let Some(t) = std::fs::metadata(&parent_abs)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
    {
        header.parent_timestamp =
            u32::try_from(t.as_secs().saturating_sub(footer::VHD_EPOCH)).unwrap_or(u32::MAX);
    }

    // Where the footer is now; the new locator data goes there.
    let mut at = len.saturating_sub(FOOTER_SIZE as u64).div_ceil(512) * 512;
    let mut data = Vec::new();
    let mut locators = [ParentLocator::default(); 8];
    for (i, (code, text)) in [(W2KU, &abs_text), (W2RU, &rel_text)]
        .into_iter()
        .enumerate()
    {
        let bytes = encode_utf16le(text);
        let space = (bytes.len() as u64).max(1).div_ceil(512) * 512;
        locators[i] = ParentLocator {
            platform_code: code,
            platform_data_space: u32::try_from(space).unwrap_or(u32::MAX),
            platform_data_length: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            reserved: 0,
            platform_data_offset: at,
        };
        let mut padded = bytes;
        padded.resize(space as usize, 0);
        data.extend_from_slice(&padded);
        at += space;
    }
    // The footer first, past the new data, so that the file always ends with one.
    write_all_at(&file, child, &ftr.encode(), at)?;
    write_all_at(&file, child, &data, locators[0].platform_data_offset)?;
    sync_data(&file, child)?;
    header.locators = locators;
    write_all_at(&file, child, &header.encode(), ho)?;
    sync_data(&file, child)?;
    Ok(warnings)
}
