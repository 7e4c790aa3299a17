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

/// The first offset in `[offset, offset+len)` of `disk` whose byte is not
/// zero.
pub(crate) fn first_data(disk: &dyn Disk, offset: u64, len: u64) -> Result<Option<u64>> {
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
