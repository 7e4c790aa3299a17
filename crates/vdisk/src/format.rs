//! Which format a file is, and the entry points that dispatch on it: open,
//! create, check. The only place in the crate that lists the formats.

use crate::io::{file_len, read_exact_at, AtomicFile};
use crate::ops::check::CheckReport;
use crate::raw::RawDisk;
use crate::vhd::create::{write_new, NewVhd};
use crate::vhd::footer::{DiskType, COOKIE, FOOTER_SIZE, LEGACY_FOOTER_SIZE};
use crate::vhd::header::DEFAULT_BLOCK_SIZE;
use crate::vhd::VhdDisk;
use crate::{Disk, Error, Result};
use std::fs::File;
use std::path::Path;

/// An image format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The file is the disk.
    Raw,
    /// Microsoft Virtual Hard Disk.
    Vhd,
}

impl Format {
    /// The format's name as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Vhd => "vhd",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Format> {
        match s {
            "raw" => Ok(Format::Raw),
            "vhd" | "vpc" => Ok(Format::Vhd),
            _ => Err(Error::InvalidArgument(format!(
                "unknown format {s:?}: expected vhd or raw"
            ))),
        }
    }
}

/// How the image stores its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageType {
    /// Every byte of the disk has its place in the file.
    Fixed,
    /// Space is allocated as data is written.
    Dynamic,
}

/// How to open an image.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions {
    /// Open for writing.
    pub writable: bool,
}

/// What kind of image to create.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// The format.
    pub format: Format,
    /// Fixed or dynamic (ignored for raw, which is always the plain file).
    pub image_type: ImageType,
    /// Block size of a dynamic disk.
    pub block_size: u64,
    /// Round sizes up to an exact CHS geometry, as Virtual PC needs.
    pub compat_vpc: bool,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            format: Format::Vhd,
            image_type: ImageType::Dynamic,
            block_size: DEFAULT_BLOCK_SIZE,
            compat_vpc: false,
        }
    }
}

/// Tells the format of an open file from its content.
pub fn sniff_file(file: &File, path: &Path) -> Result<Format> {
    let len = file_len(file, path)?;
    let cookie_at = |offset: u64| -> Result<bool> {
        let mut b = [0u8; 8];
        read_exact_at(file, path, &mut b, offset, "format probe")?;
        Ok(&b == COOKIE)
    };
    // A dynamic disk starts with a footer copy; a fixed disk has its footer only
    // at the end (512 bytes, or 511 for very old Virtual PC disks).
    if len >= 8 && cookie_at(0)? {
        return Ok(Format::Vhd);
    }
    for footer_len in [FOOTER_SIZE as u64, LEGACY_FOOTER_SIZE as u64] {
        if len >= footer_len && cookie_at(len - footer_len)? {
            return Ok(Format::Vhd);
        }
    }
    Ok(Format::Raw)
}

/// Opens `path` for reading, and for writing when `writable`.
pub(crate) fn open_file(path: &Path, writable: bool) -> Result<File> {
    // Only files and block devices hold disks. Anything else is refused before
    // it is opened: opening a FIFO would wait for a writer for ever.
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, "open", e))?;
    let kind = meta.file_type();
    use std::os::unix::fs::FileTypeExt;
    if meta.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{}: is a directory, not a disk image",
            path.display()
        )));
    }
    if !(kind.is_file() || kind.is_block_device()) {
        return Err(Error::InvalidArgument(format!(
            "{}: not a regular file or block device, so not a disk image",
            path.display()
        )));
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(writable)
        .open(path)
        .map_err(|e| Error::io(path, "open", e))
}

/// Tells the format of the file at `path` from its content, never its name.
pub fn sniff(path: &Path) -> Result<Format> {
    sniff_file(&open_file(path, false)?, path)
}

/// Opens the image at `path`, whatever its format.
pub fn open(path: &Path, opts: OpenOptions) -> Result<Box<dyn Disk>> {
    let file = open_file(path, opts.writable)?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(Error::InvalidArgument(format!(
            "{}: is a directory, not a disk image",
            path.display()
        )));
    }
    Ok(match sniff_file(&file, path)? {
        Format::Raw => Box::new(RawDisk::from_file(file, path, opts.writable)?),
        Format::Vhd => Box::new(VhdDisk::from_file(file, path, opts.writable)?),
    })
}

/// Makes an empty image of `size` bytes in `file` (a new, empty file); `path`
/// names it in messages. Returns the disk, open for writing, and notes on any
/// size adjustment.
pub fn create_in(
    file: File,
    path: &Path,
    size: u64,
    opts: &CreateOptions,
) -> Result<(Box<dyn Disk>, Vec<String>)> {
    match opts.format {
        Format::Raw => Ok((Box::new(RawDisk::create_in(file, path, size)?), Vec::new())),
        Format::Vhd => {
            let kind = match opts.image_type {
                ImageType::Fixed => DiskType::Fixed,
                ImageType::Dynamic => DiskType::Dynamic,
            };
            let plan = write_new(
                &file,
                path,
                &NewVhd {
                    size,
                    kind,
                    block_size: opts.block_size,
                    compat_vpc: opts.compat_vpc,
                },
            )?;
            Ok((Box::new(VhdDisk::from_file(file, path, true)?), plan.notes))
        }
    }
}

/// Creates an empty image at `path`. It appears only once complete; an existing
/// file is replaced only when `overwrite` is set. Returns notes on any size
/// adjustment.
pub fn create(
    path: &Path,
    size: u64,
    opts: &CreateOptions,
    overwrite: bool,
) -> Result<Vec<String>> {
    refuse_existing(path, overwrite)?;
    let (tmp, file) = AtomicFile::create(path)?;
    let handle = file
        .try_clone()
        .map_err(|e| Error::io(tmp.temp_path(), "dup", e))?;
    let (mut disk, notes) = create_in(handle, path, size, opts)?;
    disk.flush()?;
    drop(disk);
    tmp.commit(&file)?;
    Ok(notes)
}

/// Creates a differencing VHD at `path` over the VHD `parent`, with blocks of
/// `block_size` bytes. It appears only once complete; an existing file is
/// replaced only when `overwrite` is set.
pub fn create_child(path: &Path, parent: &Path, block_size: u64, overwrite: bool) -> Result<()> {
    refuse_existing(path, overwrite)?;
    let (tmp, file) = AtomicFile::create(path)?;
    crate::vhd::create::write_child(&file, path, parent, block_size)?;
    tmp.commit(&file)
}

/// Points the differencing disk `child` at `parent` (moved or copied), checking
/// that it is the disk the child was made over unless `force`. Returns warnings.
pub fn relink(child: &Path, parent: &Path, force: bool) -> Result<Vec<String>> {
    crate::vhd::relink::relink(child, parent, force)
}

/// Fails when `path` exists and may not be replaced.
pub fn refuse_existing(path: &Path, overwrite: bool) -> Result<()> {
    if !overwrite && std::fs::symlink_metadata(path).is_ok() {
        return Err(Error::InvalidArgument(format!(
            "{}: already exists (use --force to replace it)",
            path.display()
        )));
    }
    Ok(())
}

/// Repairs what can be repaired in the image at `path` without guessing at
/// data. Returns what was done, one sentence each.
pub fn repair(path: &Path) -> Result<Vec<String>> {
    let file = open_file(path, true)?;
    match sniff_file(&file, path)? {
        Format::Raw => Ok(Vec::new()),
        Format::Vhd => crate::vhd::repair::repair_file(&file, path),
    }
}

/// Checks the image at `path`. `Err` means it could not be checked at all.
pub fn check(path: &Path) -> Result<CheckReport> {
    let file = open_file(path, false)?;
    match sniff_file(&file, path)? {
        Format::Raw => {
            let mut r = CheckReport::new(path, "raw");
            r.virtual_size = Some(file_len(&file, path)?);
            r.note("a raw image has no metadata to check");
            Ok(r)
        }
        Format::Vhd => crate::vhd::check::check_file(&file, path),
    }
}
