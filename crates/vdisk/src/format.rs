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
    /// Microsoft Virtual Hard Disk v2 (Hyper-V, Windows 8 and later).
    Vhdx,
    /// QEMU copy-on-write v2 and v3.
    Qcow2,
    /// VMware virtual disk.
    Vmdk,
    /// VirtualBox disk image.
    Vdi,
}

impl Format {
    /// The format's name as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vdi => "vdi",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Format> {
        match s {
            "raw" => Ok(Format::Raw),
            "vhd" | "vpc" => Ok(Format::Vhd),
            "vhdx" => Ok(Format::Vhdx),
            "qcow2" => Ok(Format::Qcow2),
            "vmdk" => Ok(Format::Vmdk),
            "vdi" => Ok(Format::Vdi),
            _ => Err(Error::InvalidArgument(format!(
                "unknown format {s:?}: expected one of raw, vhd, vhdx, qcow2, vmdk, vdi"
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
    /// Block size of a dynamic disk (the cluster size of qcow2, the grain of
    /// VMDK); `None` for the format's default.
    pub block_size: Option<u64>,
    /// Round sizes up to an exact CHS geometry, as Virtual PC needs.
    pub compat_vpc: bool,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            format: Format::Vhd,
            image_type: ImageType::Dynamic,
            block_size: None,
            compat_vpc: false,
        }
    }
}

/// Tells the format of an open file from its content.
pub fn sniff_file(file: &File, path: &Path) -> Result<Format> {
    let len = file_len(file, path)?;
    let mut head = vec![0u8; len.min(4096) as usize];
    read_exact_at(file, path, &mut head, 0, "format probe")?;
    // A dynamic VHD starts with a footer copy; the other formats start with a
    // signature of their own.
    if head.starts_with(COOKIE) {
        return Ok(Format::Vhd);
    }
    let signed = [
        (Format::Vhdx, crate::vhdx::sniff as fn(&[u8]) -> bool),
        (Format::Qcow2, crate::qcow2::sniff),
        (Format::Vmdk, crate::vmdk::sniff),
        (Format::Vdi, crate::vdi::sniff),
    ];
    for (format, sniff) in signed {
        if sniff(&head) {
            return Ok(format);
        }
    }
    // A fixed VHD has its footer only at the end (512 bytes, or 511 for very
    // old Virtual PC disks).
    for footer_len in [FOOTER_SIZE as u64, LEGACY_FOOTER_SIZE as u64] {
        if len >= footer_len {
            let mut b = [0u8; 8];
            read_exact_at(file, path, &mut b, len - footer_len, "format probe")?;
            if &b == COOKIE {
                return Ok(Format::Vhd);
            }
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

/// How deep a chain of parents found by searching (VHDX locators, VDI
/// UUIDs) may be; a chain that loops reaches it.
const MAX_PARENT_DEPTH: u32 = 64;

thread_local! {
    /// How many parents deep the open under way on this thread is.
    static PARENT_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// How many parents deep the image `child`, being opened on this thread, is
/// (0 for the image the caller opened); fails when the chain is too deep.
pub(crate) fn parent_depth(child: &Path) -> Result<u32> {
    let depth = PARENT_DEPTH.with(|d| d.get());
    if depth >= MAX_PARENT_DEPTH {
        return Err(Error::unsupported(
            child,
            format!("the chain of parents is deeper than {MAX_PARENT_DEPTH} (a loop?)"),
        ));
    }
    Ok(depth)
}

/// Opens `parent` read-only, one level deeper in the chain being opened on
/// this thread (see [`parent_depth`]).
pub(crate) fn open_parent(parent: &Path) -> Result<Box<dyn Disk>> {
    let depth = PARENT_DEPTH.with(|d| d.get());
    PARENT_DEPTH.with(|d| d.set(depth + 1));
    let opened = open(parent, OpenOptions { writable: false });
    PARENT_DEPTH.with(|d| d.set(depth));
    opened
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
        Format::Vhdx => crate::vhdx::open(file, path, opts.writable)?,
        Format::Qcow2 => crate::qcow2::open(file, path, opts.writable)?,
        Format::Vmdk => crate::vmdk::open(file, path, opts.writable)?,
        Format::Vdi => crate::vdi::open(file, path, opts.writable)?,
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
                    block_size: opts.block_size.unwrap_or(DEFAULT_BLOCK_SIZE),
                    compat_vpc: opts.compat_vpc,
                },
            )?;
            Ok((Box::new(VhdDisk::from_file(file, path, true)?), plan.notes))
        }
        Format::Vhdx => crate::vhdx::create(file, path, size, opts),
        Format::Qcow2 => crate::qcow2::create(file, path, size, opts),
        Format::Vmdk => crate::vmdk::create(file, path, size, opts),
        Format::Vdi => crate::vdi::create(file, path, size, opts),
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

/// Creates a differencing image of `format` at `path` over `parent`: a VHD
/// child (whose parent must be a VHD), or a VHDX child (over any image;
/// VHDX is the norm). Block size `None` takes the format's default for a
/// child. It appears only once complete; an existing file is replaced only
/// when `overwrite` is set.
pub fn create_child_as(
    format: Format,
    path: &Path,
    parent: &Path,
    block_size: Option<u64>,
    overwrite: bool,
) -> Result<()> {
    match format {
        Format::Vhd => create_child(
            path,
            parent,
            block_size.unwrap_or(DEFAULT_BLOCK_SIZE),
            overwrite,
        ),
        Format::Vhdx => {
            refuse_existing(path, overwrite)?;
            let (tmp, file) = AtomicFile::create(path)?;
            let handle = file
                .try_clone()
                .map_err(|e| Error::io(tmp.temp_path(), "dup", e))?;
            let mut disk = crate::vhdx::create_child(handle, path, parent, block_size)?;
            disk.flush()?;
            drop(disk);
            tmp.commit(&file)
        }
        other => Err(Error::InvalidArgument(format!(
            "{}: differencing images are made as VHD or VHDX, not {}",
            path.display(),
            other.name()
        ))),
    }
}

/// Points the differencing disk `child` at `parent` (moved or copied), checking
/// that it is the disk the child was made over unless `force`. Returns warnings.
pub fn relink(child: &Path, parent: &Path, force: bool) -> Result<Vec<String>> {
    let same = |p: &Path| std::fs::canonicalize(p).map_err(|e| Error::io(p, "resolve", e));
    if same(child)? == same(parent)? {
        return Err(Error::InvalidArgument(format!(
            "{}: a disk cannot be its own parent",
            child.display()
        )));
    }
    match sniff(child)? {
        Format::Vhd => crate::vhd::relink::relink(child, parent, force),
        Format::Vhdx => crate::vhdx::relink::relink(child, parent, force),
        other => Err(Error::unsupported(
            child,
            format!(
                "relinking {} images is not supported, only VHD and VHDX",
                other.name()
            ),
        )),
    }
}

/// Fails unless `path` is a VHD: `doing` ("compacting", …) is done to VHDs
/// only; `instead` says what to do with other formats.
pub(crate) fn require_vhd(path: &Path, doing: &str, instead: &str) -> Result<()> {
    match sniff(path)? {
        Format::Vhd => Ok(()),
        other => Err(Error::unsupported(
            path,
            format!(
                "{doing} {} images is not supported, only VHD; {instead}",
                other.name()
            ),
        )),
    }
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
        other => Err(Error::unsupported(
            path,
            format!("repairing {} images is not supported", other.name()),
        )),
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
        Format::Vhdx => crate::vhdx::check_file(&file, path),
        Format::Qcow2 => crate::qcow2::check_file(&file, path),
        Format::Vmdk => crate::vmdk::check_file(&file, path),
        Format::Vdi => crate::vdi::check_file(&file, path),
    }
}
