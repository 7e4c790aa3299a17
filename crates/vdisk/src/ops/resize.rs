//! `img resize` of any format that can be resized: VHD ([`crate::vhd::resize`])
//! and VHDX ([`crate::vhdx::resize`]).

use crate::format::Format;
use crate::io::is_zero;
use crate::{Disk, Error, ExtentKind, Result};
use std::path::Path;

/// Resizes the image at `path` to `size` bytes (rounded up to whole sectors).
/// Shrinking refuses to cut off data unless `force`. Returns notes.
pub fn resize(path: &Path, size: u64, force: bool) -> Result<Vec<String>> {
    match crate::sniff(path)? {
        Format::Vhd => crate::vhd::resize::resize(path, size, force),
        Format::Vhdx => crate::vhdx::resize::resize(path, size, force),
        other => Err(Error::unsupported(
            path,
            format!(
                "resizing {} images is not supported, only VHD and VHDX; `vmhub img convert` to one of them, then resize that",
                other.name()
            ),
        )),
    }
}

/// Before `disk` (the image at `path`) shrinks from `old` to `new` bytes:
/// fails if the part cut off holds data, unless `force`, which adds a note.
pub(crate) fn refuse_cutting_data(
    disk: &dyn Disk,
    path: &Path,
    (old, new): (u64, u64),
    force: bool,
    notes: &mut Vec<String>,
) -> Result<()> {
    if new >= old {
        return Ok(());
    }
    if let Some(at) = first_data(disk, new, old - new)? {
        if !force {
            return Err(Error::InvalidArgument(format!(
                "{}: the part past {new} bytes holds data (first at offset {at}); use --force to cut it off",
                path.display()
            )));
        }
        notes.push(format!("data from offset {at} on was cut off"));
    }
    Ok(())
}

/// The first offset in `[offset, offset+len)` of `disk` whose byte is not
/// zero.
fn first_data(disk: &dyn Disk, offset: u64, len: u64) -> Result<Option<u64>> {
    let mut buf = vec![0u8; 1 << 20];
    for e in disk
        .map(offset, len)?
        .into_iter()
        .filter(|e| e.kind == ExtentKind::Data)
    {
        let mut at = e.offset;
        while at < e.end() {
            let n = (e.end() - at).min(buf.len() as u64) as usize;
            disk.read_at(&mut buf[..n], at)?;
            if !is_zero(&buf[..n]) {
                let i = buf[..n].iter().position(|&b| b != 0).unwrap_or(0);
                return Ok(Some(at + i as u64));
            }
            at += n as u64;
        }
    }
    Ok(None)
}
