//! VDI images.

use crate::format::CreateOptions;
use crate::ops::check::CheckReport;
use crate::{Disk, Error, Result};
use serde::Serialize;
use std::fs::File;
use std::path::Path;

/// What `img info` shows about a VDI image beyond what every format shows.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct VdiInfo {}

/// True when `head`, the first bytes of a file (up to 4 KiB, fewer for a
/// short file), start like a VDI image.
pub(crate) fn sniff(head: &[u8]) -> bool {
    head.get(0x40..0x44) == Some(&0xbeda_107f_u32.to_le_bytes()[..])
}

/// Opens the VDI image in `file`, for writing when `writable`.
pub(crate) fn open(file: File, path: &Path, writable: bool) -> Result<Box<dyn Disk>> {
    let _ = (file, writable);
    Err(Error::unsupported(path, "VDI images cannot be opened yet"))
}

/// Makes an empty VDI image of `size` bytes in `file` (new and empty), and
/// returns it open for writing.
pub(crate) fn create(
    file: File,
    path: &Path,
    size: u64,
    opts: &CreateOptions,
) -> Result<(Box<dyn Disk>, Vec<String>)> {
    let _ = (file, size, opts);
    Err(Error::unsupported(path, "VDI images cannot be created yet"))
}

/// Checks the VDI image in `file`.
pub(crate) fn check_file(file: &File, path: &Path) -> Result<CheckReport> {
    let _ = file;
    Err(Error::unsupported(path, "VDI images cannot be checked yet"))
}
