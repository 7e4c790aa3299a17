//! `img compact` of the formats that can be compacted in place: VHD
//! ([`crate::vhd::compact`]) and VHDX ([`crate::vhdx::compact`]).

use crate::format::Format;
use crate::{Error, Result};
use std::path::Path;

/// Compacts the image at `path`, dropping also the byte ranges `free` of the
/// virtual disk (sorted `(offset, length)`); its file sizes before and after.
pub fn compact(
    path: &Path,
    free: &[(u64, u64)],
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(u64, u64)> {
    match crate::sniff(path)? {
        Format::Vhd => {
            crate::vhd::compact::compact_with(path, free, progress).map(|c| (c.before, c.after))
        }
        Format::Vhdx => {
            crate::vhdx::compact::compact(path, free, progress).map(|c| (c.before, c.after))
        }
        other => Err(Error::unsupported(
            path,
            format!(
                "compacting {} images is not supported, only VHD and VHDX; `vmhub img convert` writes a copy without the unused blocks",
                other.name()
            ),
        )),
    }
}
