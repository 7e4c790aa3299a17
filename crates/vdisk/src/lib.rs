//! Virtual disks: one [`Disk`] trait, the formats that implement it, and the
//! operations written once against it (convert, compare, map, check).
//!
//! Formats live in their own modules ([`raw`], [`vhd`], [`vhdx`], [`qcow2`],
//! [`vmdk`], [`vdi`]); [`open`] sniffs the
//! format from the file's content, never from its name.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod block;
pub mod error;
pub mod format;
pub mod io;
pub mod ops;
pub mod qcow2;
pub mod raw;
pub mod stream;
pub mod vdi;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

pub use error::{Error, Result};
pub use format::{
    check, create, create_child, create_child_as, open, relink, repair, sniff, CreateOptions,
    Format, ImageType, OpenOptions,
};

use serde::Serialize;
use std::path::Path;

/// Bytes in a sector: the unit every supported format addresses in.
pub const SECTOR: u64 = 512;

/// How a range of a disk is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExtentKind {
    /// The image stores bytes for this range.
    Data,
    /// The range is known to read as zeros, although the image owns space for it
    /// (a hole in a raw or fixed file).
    Zero,
    /// The image holds nothing for this range: it reads as zeros, or from a parent.
    Unallocated,
}

/// A run of the virtual disk that is stored one way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Extent {
    /// Offset in the virtual disk, in bytes.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// How it is stored.
    pub kind: ExtentKind,
}

impl Extent {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// Pushes `e` onto `out`, merging it into the last extent when they touch and
/// are of the same kind.
pub fn push_extent(out: &mut Vec<Extent>, e: Extent) {
    if e.length == 0 {
        return;
    }
    if let Some(last) = out.last_mut() {
        if last.kind == e.kind && last.end() == e.offset {
            last.length += e.length;
            return;
        }
    }
    out.push(e);
}

/// A virtual disk: a byte-addressed device of fixed size, whatever the file format.
///
/// Every tool (convert, compare, map, the NBD server, the chunker) is written once
/// against this trait.
pub trait Disk: Send + Sync {
    /// The size of the disk as a guest sees it, in bytes.
    fn virtual_size(&self) -> u64;

    /// Fills `buf` with the disk's bytes starting at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;

    /// Writes `buf` at `offset`. Durable only after [`Disk::flush`].
    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()>;

    /// Makes every write so far durable, and the image consistent on disk.
    fn flush(&mut self) -> Result<()>;

    /// Tells the disk that `[offset, offset+len)` may read as zeros from now on.
    /// The default writes zeros.
    fn discard(&mut self, offset: u64, len: u64) -> Result<()> {
        write_zeroes_by_writing(self, offset, len)
    }

    /// Hints that `[offset, offset+len)` will be read soon, so that storage can
    /// start reading it now. The default does nothing.
    fn prefetch(&self, offset: u64, len: u64) {
        let _ = (offset, len);
    }

    /// How `[offset, offset+len)` is stored, as ordered extents that cover it exactly.
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>>;

    /// How this image alone stores `[offset, offset+len)`: as [`Disk::map`],
    /// except that what a differencing image leaves to its parent is
    /// `Unallocated` rather than the parent's extents. `Data` and `Zero` are
    /// the ranges the image holds itself, hiding its parent's. The default is
    /// `map`, right for every image without a parent.
    fn own_map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        self.map(offset, len)
    }

    /// A description of the image for `img info`.
    fn info(&self) -> Result<ImageInfo>;

    /// The image file.
    fn path(&self) -> &Path;
}

/// Pushes the extents of the file range `[file_offset, file_offset+len)` onto
/// `out`, as data or (holes) zero, placed at `guest_offset` in the disk.
pub(crate) fn push_file_extents(
    out: &mut Vec<Extent>,
    file: &std::fs::File,
    file_offset: u64,
    len: u64,
    guest_offset: u64,
) {
    for (s, e, data) in io::data_runs(file, file_offset, file_offset + len) {
        let kind = if data {
            ExtentKind::Data
        } else {
            ExtentKind::Zero
        };
        push_extent(
            out,
            Extent {
                offset: guest_offset + (s - file_offset),
                length: e - s,
                kind,
            },
        );
    }
}

/// Pushes onto `out` how `parent` stores `[offset, offset+len)` of a child:
/// the parent's own extents, then unallocated past its end (a parent may be
/// smaller than its child) or everywhere when there is no parent.
pub(crate) fn map_parent<D: Disk + ?Sized>(
    parent: Option<&D>,
    out: &mut Vec<Extent>,
    offset: u64,
    len: u64,
) -> Result<()> {
    let avail = match parent {
        Some(p) => {
            let avail = p.virtual_size().saturating_sub(offset).min(len);
            if avail > 0 {
                for e in p.map(offset, avail)? {
                    push_extent(out, e);
                }
            }
            avail
        }
        None => 0,
    };
    push_extent(
        out,
        Extent {
            offset: offset + avail,
            length: len - avail,
            kind: ExtentKind::Unallocated,
        },
    );
    Ok(())
}

/// Writes zeros over `[offset, offset+len)` through [`Disk::write_at`], a bounded
/// buffer at a time.
pub fn write_zeroes_by_writing<D: Disk + ?Sized>(
    disk: &mut D,
    offset: u64,
    len: u64,
) -> Result<()> {
    const CHUNK: u64 = 1 << 20;
    let zeros = vec![0u8; CHUNK.min(len) as usize];
    let mut done = 0;
    while done < len {
        let n = CHUNK.min(len - done);
        disk.write_at(&zeros[..n as usize], offset + done)?;
        done += n;
    }
    Ok(())
}

/// Checks that `[offset, offset+len)` lies inside a disk of `size` bytes.
pub(crate) fn check_range(path: &Path, offset: u64, len: u64, size: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::OutOfRange {
            path: path.to_path_buf(),
            offset,
            len,
            size,
        }),
    }
}

/// One image of a chain, as `img info` lists it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ChainLink {
    /// The image file.
    pub file: String,
    /// Its format.
    pub format: &'static str,
    /// Its type ("fixed", "dynamic", "differencing"; "raw" for raw).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Its unique id, when the format has one.
    pub unique_id: Option<String>,
}

/// What `img info` shows about an image.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ImageInfo {
    /// The image file.
    pub file: String,
    /// Format name: "raw", "vhd", "vhdx", "qcow2", "vmdk", "vdi".
    pub format: &'static str,
    /// The size a guest sees, in bytes.
    pub virtual_size: u64,
    /// The length of the file, in bytes.
    pub file_size: u64,
    /// Bytes of the virtual disk that the image stores (allocated blocks).
    pub allocated_bytes: u64,
    /// Bytes the host filesystem has allocated for the file.
    pub host_allocated_bytes: u64,
    /// The chain of images a read goes through, from this one to the base.
    pub chain: Vec<ChainLink>,
    /// VHD-specific details.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub vhd: Option<vhd::VhdInfo>,
    /// Details of the other formats.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub details: Option<FormatDetails>,
}

/// What `img info` shows about an image of a format other than raw and VHD.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum FormatDetails {
    /// VHDX.
    Vhdx(vhdx::VhdxInfo),
    /// qcow2.
    Qcow2(qcow2::Qcow2Info),
    /// VMDK.
    Vmdk(vmdk::VmdkInfo),
    /// VDI.
    Vdi(vdi::VdiInfo),
}
