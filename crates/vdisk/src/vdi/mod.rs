//! VirtualBox disk images (VDI, header version 1.1): dynamic and static, and
//! differencing images (VirtualBox's snapshots), read-only.
//!
//! The file holds a 512-byte header area, the block map (one little-endian
//! `u32` per block: the block's index in the data area, or
//! [`header::UNALLOCATED`], or [`header::ZERO_BLOCK`]), then the data area of
//! whole blocks. [`header`] decodes the header; [`layout`] holds the pure block
//! arithmetic; [`VdiDisk`] does the file I/O.
//!
//! # Differencing images
//! A snapshot's blocks that are unallocated read from its parent: the image
//! whose UUID the header's link UUID names. No path is recorded (VirtualBox
//! keeps the chain in the machine's settings), so the parent is looked for
//! among the VDI files beside the snapshot and in the folder above it, where
//! VirtualBox keeps a machine's disks (snapshots go to its `Snapshots`
//! folder). A zero block reads as zeros, hiding the parent's data.
//!
//! # Crash safety of dynamic writes
//! A new block takes the next index at the end of the data area; its data is
//! written there at once, while its block-map entry changes only in memory.
//! [`Disk::flush`] makes the data durable first, then writes the header (with
//! the new allocated count) and then the changed block-map sectors, and syncs
//! again. So on disk a block-map entry never points at a block whose data is not
//! durable; a crash can only leave space at the end that no entry references,
//! and the allocated count never falls below the referenced blocks.

pub mod header;
pub mod layout;

use crate::format::CreateOptions;
use crate::io::{
    file_len, host_allocated, is_zero, prefetch, read_exact_at, sync_data, write_all_at,
};
use crate::ops::check::CheckReport;
use crate::{
    check_range, push_extent, push_file_extents, Disk, Error, Extent, ExtentKind, ImageInfo, Result,
};
use header::{Header, ImageType, HEADER_AREA, UNALLOCATED, ZERO_BLOCK};
use layout::{pieces, Place};
use serde::Serialize;
use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

/// The default block size, VirtualBox's and the only one QEMU reads.
pub const DEFAULT_BLOCK_SIZE: u64 = 1 << 20;
/// The largest block size accepted.
pub const MAX_BLOCK_SIZE: u32 = 64 << 20;
/// The most blocks accepted (a 256 MiB block map).
pub const MAX_BLOCKS: u32 = 1 << 26;
/// Where a new image's data area starts is rounded up to this, as VirtualBox does.
pub(crate) const DATA_ALIGN: u64 = 1 << 20;

/// Where the data of a new image of `blocks` blocks starts: after the header
/// and the block map, rounded up to [`DATA_ALIGN`].
pub(crate) fn data_offset(blocks: u64) -> u64 {
    (HEADER_AREA as u64 + blocks * 4).div_ceil(DATA_ALIGN) * DATA_ALIGN
}
/// Problems `check` lists per structure at most.
const MAX_LISTED: usize = 20;

/// What `img info` shows about a VDI image beyond what every format shows.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct VdiInfo {
    /// "dynamic" or "static".
    #[serde(rename = "type")]
    pub image_type: String,
    /// Bytes per block.
    pub block_size: u64,
    /// Blocks in the disk.
    pub blocks: u64,
    /// Blocks the header counts as allocated.
    pub blocks_allocated: u64,
    /// The image's UUID.
    pub uuid: String,
    /// The UUID of the image's last modification.
    pub modification_uuid: String,
    /// The header's comment, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The UUID of the parent a differencing image links to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_uuid: Option<String>,
}

/// True when `head`, the first bytes of a file (up to 4 KiB, fewer for a
/// short file), start like a VDI image.
pub(crate) fn sniff(head: &[u8]) -> bool {
    head.get(0x40..0x44) == Some(&header::SIGNATURE.to_le_bytes()[..])
}

/// An open VDI image.
pub struct VdiDisk {
    path: PathBuf,
    file: File,
    writable: bool,
    header: Header,
    /// The header area as read, so that rewriting it keeps unknown bytes.
    raw_header: [u8; HEADER_AREA],
    kind: ImageType,
    size: u64,
    block_size: u64,
    /// The block map as it is now (with allocations not yet flushed).
    map: Vec<u32>,
    /// The index the next new block takes.
    next_block: u32,
    /// The file's length.
    file_end: u64,
    /// Block-map sectors (512-byte units) changed since the last flush.
    dirty: BTreeSet<usize>,
    /// The parent of a differencing image.
    parent: Option<Box<dyn Disk>>,
}

/// The most folder entries looked at per folder while searching for a parent.
const MAX_SCAN: usize = 10_000;

/// Finds and opens the parent of the differencing image at `path` (header
/// `h`): the VDI beside it or in the folder above whose UUID is the link UUID.
fn open_parent(path: &Path, h: &Header) -> Result<Box<dyn Disk>> {
    let want = h.uuid_link;
    if want == [0; 16] {
        return Err(Error::corrupt(
            path,
            "a differencing image whose link UUID is zero: it names no parent",
        ));
    }
    crate::format::parent_depth(path)?;
    let me = std::fs::canonicalize(path).map_err(|e| Error::io(path, "resolve", e))?;
    let here = me.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut folders = vec![here.clone()];
    folders.extend(here.parent().map(Path::to_path_buf));
    let mut found = Vec::new();
    for folder in &folders {
        let Ok(entries) = std::fs::read_dir(folder) else {
            continue;
        };
        for entry in entries.take(MAX_SCAN).flatten() {
            let p = entry.path();
            let is_vdi = p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case("vdi"));
            if is_vdi && p != me && uuid_of(&p) == Some(want) {
                found.push(p);
            }
        }
    }
    found.sort();
    let Some(candidate) = found.first() else {
        let names: Vec<String> = folders.iter().map(|f| f.display().to_string()).collect();
        return Err(Error::corrupt(
            path,
            format!(
                "parent not found: no VDI in {} has the UUID {} this snapshot links to",
                names.join(" or "),
                header::uuid_text(&want)
            ),
        ));
    };
    let parent = crate::format::open_parent(candidate)?;
    if parent.virtual_size() < h.disk_size {
        return Err(Error::corrupt(
            path,
            format!(
                "parent {}: {} bytes, fewer than this snapshot's {}",
                candidate.display(),
                parent.virtual_size(),
                h.disk_size
            ),
        ));
    }
    Ok(parent)
}

/// The image UUID in the header of the VDI at `path`, if it is one.
fn uuid_of(path: &Path) -> Option<[u8; 16]> {
    let file = crate::format::open_file(path, false).ok()?;
    let mut raw = [0u8; HEADER_AREA];
    read_exact_at(&file, path, &mut raw, 0, "VDI header").ok()?;
    let h = Header::decode(&raw);
    (h.signature == header::SIGNATURE).then_some(h.uuid_image)
}

/// Reads and validates the header of a VDI file of `len` bytes.
fn read_header(file: &File, path: &Path, len: u64) -> Result<([u8; HEADER_AREA], Header)> {
    if len < HEADER_AREA as u64 {
        return Err(Error::corrupt(
            path,
            format!("file is {len} bytes, too small to hold a VDI header (512 bytes)"),
        ));
    }
    let mut raw = [0u8; HEADER_AREA];
    read_exact_at(file, path, &mut raw, 0, "VDI header")?;
    let h = Header::decode(&raw);
    if let Some((field, msg, unsupported)) = h.problems(len).into_iter().next() {
        let what = format!("VDI header: {field}: {msg}");
        return Err(if unsupported {
            Error::unsupported(path, what)
        } else {
            Error::corrupt(path, what)
        });
    }
    Ok((raw, h))
}

/// Reads the block map and lists what is wrong with its entries (at most
/// [`MAX_LISTED`] of each kind).
fn read_map(file: &File, path: &Path, h: &Header, len: u64) -> Result<(Vec<u32>, Vec<String>)> {
    let mut bytes = vec![0u8; h.block_map_len() as usize];
    read_exact_at(
        file,
        path,
        &mut bytes,
        u64::from(h.offset_blocks),
        "VDI block map",
    )?;
    let map: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let problems = layout::map_problems(
        &map,
        u64::from(h.offset_data),
        u64::from(h.block_size),
        len,
        MAX_LISTED,
    );
    Ok((map, problems))
}

impl VdiDisk {
    /// Uses an open file as a VDI image; `path` names it in messages.
    pub fn from_file(file: File, path: &Path, writable: bool) -> Result<VdiDisk> {
        let len = file_len(&file, path)?;
        let (raw_header, header) = read_header(&file, path, len)?;
        let (map, problems) = read_map(&file, path, &header, len)?;
        if let Some(p) = problems.first() {
            return Err(Error::corrupt(path, format!("VDI block map: {p}")));
        }
        let kind = ImageType::from_code(header.image_type).unwrap_or(ImageType::Dynamic);
        let parent = if kind == ImageType::Diff {
            if writable {
                return Err(Error::unsupported(
                    path,
                    "writing into a differencing VDI (a VirtualBox snapshot) is not supported: `vmhub img convert` it to a disk of its own first",
                ));
            }
            Some(open_parent(path, &header)?)
        } else {
            None
        };
        let highest = map.iter().filter(|&&e| e < ZERO_BLOCK).max().copied();
        let next_block = highest.map_or(0, |e| e + 1).max(header.blocks_allocated);
        Ok(VdiDisk {
            path: path.to_path_buf(),
            file,
            writable,
            kind,
            size: header.disk_size,
            block_size: u64::from(header.block_size),
            header,
            raw_header,
            map,
            next_block,
            file_end: len,
            dirty: BTreeSet::new(),
            parent,
        })
    }

    fn data_offset(&self, index: u32) -> u64 {
        u64::from(self.header.offset_data) + u64::from(index) * self.block_size
    }

    fn place(&self, block: u64) -> Place {
        layout::place(&self.map, block)
    }

    /// Gives `block` space at the end of the data area and writes `data` at
    /// `within` in it. The block-map entry changes in memory only; flush writes it.
    fn allocate(&mut self, block: u64, within: u64, data: &[u8]) -> Result<()> {
        let index = self.next_block;
        if index >= self.header.blocks {
            return Err(Error::unsupported(
                &self.path,
                format!(
                    "VDI block map: no free block index for block {block} ({} indexes used \
                     for {} blocks: the image holds space no block uses)",
                    index, self.header.blocks
                ),
            ));
        }
        let start = self.data_offset(index);
        let end = start + self.block_size;
        if start >= self.file_end {
            // Space past the end of the file: extending the file makes the rest
            // of the block a hole that reads as zeros.
            self.file
                .set_len(end)
                .map_err(|e| Error::io(&self.path, "resize", e))?;
            write_all_at(&self.file, &self.path, data, start + within)?;
        } else {
            // Space left over from an allocation a crash cut short: whatever it
            // holds must be overwritten.
            let mut whole = vec![0u8; self.block_size as usize];
            whole[within as usize..within as usize + data.len()].copy_from_slice(data);
            write_all_at(&self.file, &self.path, &whole, start)?;
        }
        self.file_end = self.file_end.max(end);
        if let Some(e) = self.map.get_mut(block as usize) {
            *e = index;
        }
        self.dirty.insert(block as usize * 4 / 512);
        self.next_block = index + 1;
        self.header.blocks_allocated = self.next_block;
        Ok(())
    }

    fn read_only_error(&self) -> Error {
        Error::ReadOnly {
            path: self.path.clone(),
        }
    }
}

impl Disk for VdiDisk {
    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(&self.path, offset, buf.len() as u64, self.size)?;
        // Contiguous pieces of the file are read with one call.
        let mut run: Option<(u64, usize, usize)> = None; // (file offset, buf start, len)
        let flush_run = |run: &mut Option<(u64, usize, usize)>, buf: &mut [u8]| -> Result<()> {
            if let Some((at, s, n)) = run.take() {
                read_exact_at(&self.file, &self.path, &mut buf[s..s + n], at, "VDI block")?;
            }
            Ok(())
        };
        for p in pieces(offset, buf.len() as u64, self.block_size) {
            let s = p.at as usize;
            let n = p.len as usize;
            match self.place(p.block) {
                Place::Data(index) => {
                    let at = self.data_offset(index) + p.within;
                    match &mut run {
                        Some((ra, _, rn)) if *ra + *rn as u64 == at => *rn += n,
                        _ => {
                            flush_run(&mut run, buf)?;
                            run = Some((at, s, n));
                        }
                    }
                }
                place @ (Place::Zero | Place::Unallocated) => {
                    flush_run(&mut run, buf)?;
                    let out = &mut buf[s..s + n];
                    match (&self.parent, place) {
                        // A snapshot reads what it does not hold from its parent.
                        (Some(parent), Place::Unallocated) => parent.read_at(out, offset + p.at)?,
                        _ => out.fill(0),
                    }
                }
            }
        }
        flush_run(&mut run, buf)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        if !self.writable {
            return Err(self.read_only_error());
        }
        check_range(&self.path, offset, buf.len() as u64, self.size)?;
        for p in pieces(offset, buf.len() as u64, self.block_size) {
            let s = p.at as usize;
            let piece = &buf[s..s + p.len as usize];
            match self.place(p.block) {
                Place::Data(index) => {
                    let at = self.data_offset(index) + p.within;
                    write_all_at(&self.file, &self.path, piece, at)?;
                }
                // Zeros need no space where the block reads as zeros already.
                Place::Zero | Place::Unallocated if is_zero(piece) => {}
                Place::Zero | Place::Unallocated => self.allocate(p.block, p.within, piece)?,
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.writable {
            return Ok(());
        }
        sync_data(&self.file, &self.path)?;
        if self.dirty.is_empty() {
            return Ok(());
        }
        // The allocated count first: a crash before the block map is written
        // leaves the count above the referenced blocks (leaked space), never below.
        let raw = self.header.encode(&self.raw_header);
        write_all_at(&self.file, &self.path, &raw, 0)?;
        self.raw_header = raw;
        let start = u64::from(self.header.offset_blocks);
        for &sector in &self.dirty {
            let first = sector * 128;
            let last = (first + 128).min(self.map.len());
            let bytes: Vec<u8> = self
                .map
                .get(first..last)
                .unwrap_or(&[])
                .iter()
                .flat_map(|e| e.to_le_bytes())
                .collect();
            write_all_at(&self.file, &self.path, &bytes, start + first as u64 * 4)?;
        }
        self.dirty.clear();
        sync_data(&self.file, &self.path)
    }

    fn prefetch(&self, offset: u64, len: u64) {
        if check_range(&self.path, offset, len, self.size).is_err() {
            return;
        }
        for p in pieces(offset, len, self.block_size) {
            match (self.place(p.block), &self.parent) {
                (Place::Data(index), _) => {
                    prefetch(&self.file, self.data_offset(index) + p.within, p.len)
                }
                (Place::Unallocated, Some(parent)) => parent.prefetch(offset + p.at, p.len),
                _ => {}
            }
        }
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        self.map_layers(offset, len, false)
    }

    fn own_map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        self.map_layers(offset, len, true)
    }

    fn info(&self) -> Result<ImageInfo> {
        let allocated: u64 = self
            .map
            .iter()
            .enumerate()
            .filter(|(_, &e)| e < ZERO_BLOCK)
            .map(|(i, _)| {
                self.block_size
                    .min(self.size.saturating_sub(i as u64 * self.block_size))
            })
            .sum();
        let kind = match self.kind {
            ImageType::Static => "fixed",
            ImageType::Diff => "differencing",
            _ => "dynamic",
        };
        let comment_len = self
            .header
            .comment
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.header.comment.len());
        let comment = String::from_utf8_lossy(&self.header.comment[..comment_len]).into_owned();
        let uuid = header::uuid_text(&self.header.uuid_image);
        let mut chain = vec![crate::ChainLink {
            file: self.path.display().to_string(),
            format: "vdi",
            kind,
            unique_id: Some(uuid.clone()),
        }];
        if let Some(p) = &self.parent {
            chain.extend(p.info()?.chain);
        }
        Ok(ImageInfo {
            file: self.path.display().to_string(),
            format: "vdi",
            virtual_size: self.size,
            file_size: self.file_end,
            allocated_bytes: allocated,
            host_allocated_bytes: host_allocated(&self.file, &self.path)?,
            chain,
            vhd: None,
            details: Some(crate::FormatDetails::Vdi(VdiInfo {
                image_type: self.kind.name().to_string(),
                block_size: self.block_size,
                blocks: u64::from(self.header.blocks),
                blocks_allocated: u64::from(self.header.blocks_allocated),
                uuid,
                modification_uuid: header::uuid_text(&self.header.uuid_last_snap),
                comment: (!comment.is_empty()).then_some(comment),
                parent_uuid: self
                    .parent
                    .as_ref()
                    .map(|_| header::uuid_text(&self.header.uuid_link)),
            })),
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl VdiDisk {
    /// [`Disk::map`], or [`Disk::own_map`] when `own`.
    fn map_layers(&self, offset: u64, len: u64, own: bool) -> Result<Vec<Extent>> {
        check_range(&self.path, offset, len, self.size)?;
        let mut out = Vec::new();
        // Runs of blocks that are contiguous in the file are probed for holes at once.
        let mut run: Option<(u64, u64, u64)> = None; // (file offset, guest offset, len)
        let flush_run = |run: &mut Option<(u64, u64, u64)>, out: &mut Vec<Extent>| {
            if let Some((at, g, n)) = run.take() {
                push_file_extents(out, &self.file, at, n, g);
            }
        };
        for p in pieces(offset, len, self.block_size) {
            let kind = match self.place(p.block) {
                Place::Data(index) => {
                    let at = self.data_offset(index) + p.within;
                    match &mut run {
                        Some((ra, _, rn)) if *ra + *rn == at => *rn += p.len,
                        _ => {
                            flush_run(&mut run, &mut out);
                            run = Some((at, offset + p.at, p.len));
                        }
                    }
                    continue;
                }
                Place::Zero => ExtentKind::Zero,
                Place::Unallocated => match self.parent.as_deref().filter(|_| !own) {
                    Some(parent) => {
                        flush_run(&mut run, &mut out);
                        crate::map_parent(Some(parent), &mut out, offset + p.at, p.len)?;
                        continue;
                    }
                    None => ExtentKind::Unallocated,
                },
            };
            flush_run(&mut run, &mut out);
            push_extent(
                &mut out,
                Extent {
                    offset: offset + p.at,
                    length: p.len,
                    kind,
                },
            );
        }
        flush_run(&mut run, &mut out);
        Ok(out)
    }
}

/// Opens the VDI image in `file`, for writing when `writable`.
pub(crate) fn open(file: File, path: &Path, writable: bool) -> Result<Box<dyn Disk>> {
    Ok(Box::new(VdiDisk::from_file(file, path, writable)?))
}

/// A random (version 4) UUID in VirtualBox's byte order.
fn new_uuid(path: &Path) -> Result<[u8; 16]> {
    let mut u = [0u8; 16];
    getrandom::fill(&mut u)
        .map_err(|e| Error::io(path, "getrandom", std::io::Error::other(e.to_string())))?;
    u[7] = (u[7] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    Ok(u)
}

/// Makes an empty VDI image of `size` bytes in `file` (new and empty), and
/// returns it open for writing.
pub(crate) fn create(
    file: File,
    path: &Path,
    size: u64,
    opts: &CreateOptions,
) -> Result<(Box<dyn Disk>, Vec<String>)> {
    let block_size = opts.block_size.unwrap_or(DEFAULT_BLOCK_SIZE);
    if !block_size.is_power_of_two() || !(4096..=u64::from(MAX_BLOCK_SIZE)).contains(&block_size) {
        return Err(Error::InvalidArgument(format!(
            "{}: VDI block size {block_size} must be a power of two from 4096 to {MAX_BLOCK_SIZE}",
            path.display()
        )));
    }
    let mut notes = Vec::new();
    let disk_size = size.div_ceil(512) * 512;
    if disk_size != size {
        notes.push(format!(
            "size rounded up from {size} to {disk_size} bytes (a whole number of sectors)"
        ));
    }
    let blocks = disk_size.div_ceil(block_size);
    if blocks > u64::from(MAX_BLOCKS) {
        return Err(Error::InvalidArgument(format!(
            "{}: {disk_size} bytes need {blocks} blocks of {block_size} bytes; a VDI image \
             holds at most {MAX_BLOCKS}",
            path.display()
        )));
    }
    if block_size != DEFAULT_BLOCK_SIZE {
        notes.push(format!(
            "QEMU reads only VDI images with 1 MiB blocks; this one has {block_size}-byte blocks"
        ));
    }
    let offset_blocks = HEADER_AREA as u64;
    let offset_data = data_offset(blocks);
    let kind = match opts.image_type {
        crate::ImageType::Fixed => ImageType::Static,
        crate::ImageType::Dynamic => ImageType::Dynamic,
    };
    let h = Header::new_image(
        kind,
        disk_size,
        block_size as u32,
        blocks as u32,
        if kind == ImageType::Static {
            blocks as u32
        } else {
            0
        },
        u32::try_from(offset_data).map_err(|_| {
            Error::InvalidArgument(format!("{}: VDI block map too large", path.display()))
        })?,
        [new_uuid(path)?, new_uuid(path)?],
    );
    let map: Vec<u8> = (0..blocks as u32)
        .flat_map(|i| {
            if kind == ImageType::Static {
                i.to_le_bytes()
            } else {
                UNALLOCATED.to_le_bytes()
            }
        })
        .collect();
    let end = if kind == ImageType::Static {
        offset_data + blocks * block_size
    } else {
        offset_data
    };
    // The file is sized first (a static image's blocks are a hole that reads
    // as zeros), then the block map, and the header last.
    file.set_len(end)
        .map_err(|e| Error::io(path, "resize", e))?;
    write_all_at(&file, path, &map, offset_blocks)?;
    write_all_at(&file, path, &h.encode(&[0u8; HEADER_AREA]), 0)?;
    Ok((Box::new(VdiDisk::from_file(file, path, true)?), notes))
}

/// Checks the VDI image in `file`.
pub(crate) fn check_file(file: &File, path: &Path) -> Result<CheckReport> {
    let mut r = CheckReport::new(path, "vdi");
    let len = file_len(file, path)?;
    if len < HEADER_AREA as u64 {
        r.problem(
            "header",
            format!("file is {len} bytes, too small to hold a VDI header (512 bytes)"),
        );
        return Ok(r);
    }
    let mut raw = [0u8; HEADER_AREA];
    read_exact_at(file, path, &mut raw, 0, "VDI header")?;
    let h = Header::decode(&raw);
    let problems = h.problems(len);
    for (field, msg, unsupported) in &problems {
        if !*unsupported {
            r.problem("header", format!("{field}: {msg}"));
        }
    }
    if !problems.is_empty() {
        if r.clean {
            // Well formed, but not something this version can check.
            let what = problems
                .iter()
                .map(|(field, msg, _)| format!("{field}: {msg}"))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(Error::unsupported(path, format!("VDI header: {what}")));
        }
        return Ok(r);
    }
    r.virtual_size = Some(h.disk_size);
    let (map, problems) = read_map(file, path, &h, len)?;
    for p in problems {
        r.problem("block map", p);
    }
    if ImageType::from_code(h.image_type) == Some(ImageType::Diff) {
        match open_parent(path, &h) {
            Ok(parent) => r.note(format!("parent: {}", parent.path().display())),
            Err(e) => r.problem("parent", e.to_string()),
        }
    }
    let referenced = map.iter().filter(|&&e| e < ZERO_BLOCK).count() as u64;
    r.allocated_blocks = Some(referenced);
    if referenced != u64::from(h.blocks_allocated) {
        r.problem(
            "header",
            format!(
                "allocated blocks: the header counts {} but the block map references {referenced}",
                h.blocks_allocated
            ),
        );
    }
    Ok(r)
}
