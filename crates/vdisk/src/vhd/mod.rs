//! Microsoft's Virtual Hard Disk format (VHD specification v1.0, 2006): fixed and
//! dynamic disks.
//!
//! On-disk structures are plain structs with `decode`/`encode` ([`footer`],
//! [`header`], [`bat`]); block arithmetic is pure ([`bat::pieces`]); [`VhdDisk`]
//! does the file I/O.
//!
//! # Crash safety of dynamic writes
//! A new block is placed where the footer is. A new footer is written at the new
//! end of file first, then the block's bitmap (over the old footer) and data. The
//! BAT entry is written only by [`Disk::flush`], after an fsync has made the data
//! and the new footer durable; so is the bitmap of the first block placed after a
//! flush, because it would overwrite the footer that flush made durable. So at
//! every instant the on-disk BAT references only complete blocks, the file ends
//! with a valid footer, and the footer of the last flush stays intact until the
//! next one; a crash before a flush loses only writes that were never flushed,
//! and leaves at worst unreferenced space.

pub mod bat;
pub mod bitmap;
pub mod chain;
pub mod check;
pub mod compact;
pub mod create;
pub mod footer;
pub mod geometry;
pub mod header;
pub mod locator;
pub mod merge;
mod meta;
pub mod relink;
pub mod repair;
pub mod resize;
pub mod size;

use crate::io::{
    file_len, host_allocated, is_zero, prefetch, read_exact_at, sync_data, write_all_at,
};
use crate::{
    check_range, push_extent, push_file_extents, Disk, Error, Extent, ExtentKind, ImageInfo, Result,
};
use bat::{pieces, Bat};
use footer::{DiskType, Footer, FOOTER_SIZE, LEGACY_FOOTER_SIZE};
use geometry::Geometry;
use header::{DynamicHeader, HEADER_SIZE};
use serde::Serialize;
use size::SizeSource;
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The largest VHD: 2040 GiB (0xff000000 sectors), the limit of Hyper-V and QEMU.
pub const MAX_SIZE: u64 = 0xff00_0000 * 512;

/// Where the trusted footer was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FooterPlace {
    /// The last 512 bytes of the file.
    End,
    /// The last 511 bytes (very old Virtual PC fixed disks).
    LegacyEnd,
    /// The copy at offset 0, because the footer at the end is damaged.
    Copy,
}

/// An open VHD.
pub struct VhdDisk {
    path: PathBuf,
    file: File,
    writable: bool,
    footer: Footer,
    footer_place: FooterPlace,
    virtual_size: u64,
    size_source: SizeSource,
    layout: Layout,
    warnings: Vec<String>,
}

enum Layout {
    Fixed,
    Dynamic(Box<Dynamic>),
}

struct Dynamic {
    header: DynamicHeader,
    bat: Bat,
    block_size: u64,
    bitmap_size: u64,
    /// Where the footer at the end of the file is, and so where the next block goes.
    footer_pos: u64,
    /// Where the footer was at the last flush (or open).
    durable_footer_pos: u64,
    /// A sector bitmap with every sector present.
    ones: Vec<u8>,
    /// BAT sectors changed in memory and not yet written.
    dirty_bat: BTreeSet<usize>,
    /// Bitmaps of new blocks not yet written (file offsets).
    pending_bitmaps: Vec<u64>,
    /// The parent, for a differencing disk.
    parent: Option<Box<VhdDisk>>,
    /// Sector bitmaps of a differencing disk that wait for the next flush to be
    /// written (block → file offset, bits); reads see them here meanwhile.
    deferred_bits: HashMap<u64, (u64, Vec<u8>)>,
    /// Sector bitmaps read so far, kept when the disk is opened read-only (as
    /// every parent in a chain is), so that a read through the chain costs one
    /// bitmap read per block and layer, not one per request.
    bitmaps: Mutex<HashMap<u64, Arc<[u8]>>>,
}

/// Sector bitmaps kept per read-only disk at most (16 MiB of 512-byte bitmaps);
/// past that the cache starts over.
const MAX_CACHED_BITMAPS: usize = 32 << 10;

/// The page size that new blocks' data is aligned to in the file.
const PAGE: u64 = 4096;

/// Reads the trusted footer of a VHD file: the one at the end, else the 511-byte
/// legacy one, else (dynamic disks) the copy at offset 0.
pub(crate) fn read_footer(
    file: &File,
    path: &Path,
    len: u64,
) -> Result<(Footer, FooterPlace, Vec<String>)> {
    if len < LEGACY_FOOTER_SIZE as u64 {
        return Err(Error::corrupt(
            path,
            format!("file is {len} bytes, too small to hold a VHD footer"),
        ));
    }
    let mut warnings = Vec::new();
    let mut end_problem = None;
    if len >= FOOTER_SIZE as u64 {
        let mut b = [0u8; FOOTER_SIZE];
        read_exact_at(file, path, &mut b, len - FOOTER_SIZE as u64, "footer")?;
        if let Some(f) = Footer::decode(&b) {
            if f.is_valid() && f.problems().is_empty() {
                return Ok((f, FooterPlace::End, warnings));
            }
            if &f.cookie == footer::COOKIE {
                end_problem = Some(f.problems().join("; "));
            }
        }
    }
    if end_problem.is_none() {
        let mut b = [0u8; LEGACY_FOOTER_SIZE];
        read_exact_at(
            file,
            path,
            &mut b,
            len - LEGACY_FOOTER_SIZE as u64,
            "footer",
        )?;
        if let Some(f) = Footer::decode(&b) {
            if &f.cookie == footer::COOKIE {
                if f.is_valid() && f.problems().is_empty() && f.kind() == Some(DiskType::Fixed) {
                    return Ok((f, FooterPlace::LegacyEnd, warnings));
                }
                end_problem = Some(f.problems().join("; "));
            }
        }
    }
    let mut b = [0u8; FOOTER_SIZE];
    if len >= FOOTER_SIZE as u64 {
        read_exact_at(file, path, &mut b, 0, "footer copy")?;
    }
    if let Some(f) = Footer::decode(&b) {
        if f.is_valid() && f.problems().is_empty() && f.kind() != Some(DiskType::Fixed) {
            warnings.push(format!(
                "the footer at the end of the file is {}; using the copy at offset 0 (`vmhub img check --repair` restores it)",
                end_problem.as_deref().unwrap_or("missing")
            ));
            return Ok((f, FooterPlace::Copy, warnings));
        }
        if end_problem.is_none() && &f.cookie == footer::COOKIE {
            return Err(Error::corrupt(
                path,
                format!("footer copy at offset 0: {}", f.problems().join("; ")),
            ));
        }
    }
    Err(Error::corrupt(
        path,
        match end_problem {
            Some(p) => format!("footer at the end of the file: {p}"),
            None => {
                "no VHD footer (cookie \"conectix\") at the end of the file or at offset 0".into()
            }
        },
    ))
}

impl VhdDisk {
    /// Opens the VHD at `path`, and the chain of parents of a differencing disk.
    pub fn open(path: &Path, writable: bool) -> Result<VhdDisk> {
        VhdDisk::open_in_chain(path, writable, &mut chain::Opening::default())
            .map_err(|e| chain::in_chain_of(path, e))
    }

    pub(crate) fn open_in_chain(
        path: &Path,
        writable: bool,
        opening: &mut chain::Opening,
    ) -> Result<VhdDisk> {
        let file = crate::format::open_file(path, writable)?;
        VhdDisk::from_file_in_chain(file, path, writable, opening)
    }

    /// Opens a VHD from an open file; `path` names it in messages.
    pub fn from_file(file: File, path: &Path, writable: bool) -> Result<VhdDisk> {
        VhdDisk::from_file_in_chain(file, path, writable, &mut chain::Opening::default())
            .map_err(|e| chain::in_chain_of(path, e))
    }

    fn from_file_in_chain(
        file: File,
        path: &Path,
        writable: bool,
        opening: &mut chain::Opening,
    ) -> Result<VhdDisk> {
        if let Ok(canon) = std::fs::canonicalize(path) {
            opening.files.push(canon);
        }
        let len = file_len(&file, path)?;
        let (footer, footer_place, warnings) = read_footer(&file, path, len)?;
        let (virtual_size, size_source) = size::virtual_size(&footer);
        if virtual_size > MAX_SIZE {
            return Err(Error::unsupported(
                path,
                format!("footer: disk size {virtual_size} exceeds the VHD maximum of {MAX_SIZE} bytes (2040 GiB)"),
            ));
        }
        let footer_len = if footer_place == FooterPlace::LegacyEnd {
            LEGACY_FOOTER_SIZE
        } else {
            FOOTER_SIZE
        } as u64;
        let layout = match footer.kind() {
            Some(DiskType::Fixed) => {
                let data_len = len - footer_len;
                if data_len < virtual_size {
                    return Err(Error::corrupt(
                        path,
                        format!(
                            "fixed VHD is truncated: the footer says {virtual_size} bytes of data but the file holds {data_len}"
                        ),
                    ));
                }
                Layout::Fixed
            }
            Some(DiskType::Dynamic) => Layout::Dynamic(Box::new(open_dynamic(
                &file,
                path,
                &footer,
                len,
                virtual_size,
            )?)),
            Some(DiskType::Differencing) => {
                let mut d = open_dynamic(&file, path, &footer, len, virtual_size)?;
                d.parent = Some(Box::new(chain::open_parent(
                    &file, path, &d.header, opening,
                )?));
                Layout::Dynamic(Box::new(d))
            }
            None => {
                return Err(Error::corrupt(
                    path,
                    format!("footer: disk type {} is unknown", footer.disk_type),
                ))
            }
        };
        if writable && footer.saved_state != 0 {
            return Err(Error::unsupported(
                path,
                "footer: the disk holds a saved state of a suspended machine; writing would corrupt it",
            ));
        }
        Ok(VhdDisk {
            path: path.to_path_buf(),
            file,
            writable,
            footer,
            footer_place,
            virtual_size,
            size_source,
            layout,
            warnings,
        })
    }

    /// The footer in use.
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// The block size of a dynamic or differencing disk.
    pub fn block_size(&self) -> Option<u64> {
        match &self.layout {
            Layout::Dynamic(d) => Some(d.block_size),
            Layout::Fixed => None,
        }
    }

    /// The dynamic header of a dynamic or differencing disk.
    pub fn dynamic_header(&self) -> Option<&DynamicHeader> {
        match &self.layout {
            Layout::Dynamic(d) => Some(&d.header),
            Layout::Fixed => None,
        }
    }

    /// A copy of a dynamic or differencing disk's BAT, with the sizes that
    /// place its blocks in the file: (BAT, block size, sector bitmap size).
    pub(crate) fn bat_copy(&self) -> Option<(bat::Bat, u64, u64)> {
        match &self.layout {
            Layout::Dynamic(d) => Some((d.bat.clone(), d.block_size, d.bitmap_size)),
            Layout::Fixed => None,
        }
    }

    /// The open image file.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Hints that `[offset, offset+len)` is about to be overwritten: the pages
    /// the write covers only in part must be read first, so storage is asked
    /// for those alone (where a block's data starts 512 bytes into a page,
    /// after its sector bitmap, as other tools lay blocks out, nearly every
    /// write has such edges).
    pub fn prefetch_edges(&self, offset: u64, len: u64) {
        let edge = |at: u64| {
            if at % PAGE != 0 {
                prefetch(&self.file, at - at % PAGE, PAGE);
            }
        };
        match &self.layout {
            Layout::Fixed => {
                edge(offset);
                edge(offset.saturating_add(len));
            }
            Layout::Dynamic(d) => {
                for p in pieces(offset, len, d.block_size) {
                    if let Some(b) = d.bat.block_offset(p.block) {
                        let start = b + d.bitmap_size + p.within;
                        edge(start);
                        edge(start + p.len);
                    }
                }
            }
        }
    }

    /// The parent of a differencing disk.
    pub fn parent(&self) -> Option<&VhdDisk> {
        match &self.layout {
            Layout::Dynamic(d) => d.parent.as_deref(),
            Layout::Fixed => None,
        }
    }

    /// The byte ranges of the disk that this image itself stores, whatever its
    /// parents hold: every byte of a fixed disk, the allocated blocks of a
    /// dynamic one, the sectors whose bitmap bits are set in a differencing one.
    pub fn own_ranges(&self) -> Result<Vec<(u64, u64)>> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut push = |start: u64, len: u64| match out.last_mut() {
            Some(last) if last.0 + last.1 == start => last.1 += len,
            _ => out.push((start, len)),
        };
        match &self.layout {
            Layout::Fixed => push(0, self.virtual_size),
            Layout::Dynamic(d) => {
                if d.parent.is_some() {
                    // Every bitmap is read below, one at a time: ask storage
                    // for all of them at once first.
                    for (_, at) in d.bat.allocated() {
                        prefetch(&self.file, at, d.bitmap_size);
                    }
                }
                for (block, at) in d.bat.allocated() {
                    let start = block * d.block_size;
                    if start >= self.virtual_size {
                        continue;
                    }
                    let len = d.block_size.min(self.virtual_size - start);
                    if d.parent.is_none() {
                        push(start, len);
                        continue;
                    }
                    let bits = self.block_bits(d, block, at)?;
                    for (s, n, here) in bitmap::runs(&bits, 0, len.div_ceil(512)) {
                        if here {
                            push(start + s * 512, (n * 512).min(len - s * 512));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Problems noticed while opening that did not stop it.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn dynamic_read(&self, d: &Dynamic, buf: &mut [u8], offset: u64) -> Result<()> {
        for p in pieces(offset, buf.len() as u64, d.block_size) {
            let out = &mut buf[p.at as usize..(p.at + p.len) as usize];
            let guest = offset + p.at;
            match d.bat.block_offset(p.block) {
                None => d.read_parent(out, guest)?,
                Some(b) if d.parent.is_some() => {
                    // Sector by sector: present here, or from the parent.
                    let bits = self.block_bits(d, p.block, b)?;
                    for (lo, hi, here) in bitmap::byte_runs(&bits, p.within, p.len) {
                        let o = &mut out[(lo - p.within) as usize..(hi - p.within) as usize];
                        if here {
                            read_exact_at(
                                &self.file,
                                &self.path,
                                o,
                                b + d.bitmap_size + lo,
                                format_args!("data of block {}", p.block),
                            )?;
                        } else {
                            d.read_parent(o, guest + (lo - p.within))?;
                        }
                    }
                }
                Some(b) => read_exact_at(
                    &self.file,
                    &self.path,
                    out,
                    b + d.bitmap_size + p.within,
                    format_args!("data of block {}", p.block),
                )?,
            }
        }
        Ok(())
    }

    /// The sector bitmap of `block` (whose bitmap is at file offset `at`).
    fn block_bits(&self, d: &Dynamic, block: u64, at: u64) -> Result<Arc<[u8]>> {
        if let Some((_, bits)) = d.deferred_bits.get(&block) {
            return Ok(Arc::from(bits.as_slice()));
        }
        // A writable disk changes its bitmaps: only read-only ones keep them.
        let cache = (!self.writable).then(|| d.bitmaps.lock().ok()).flatten();
        if let Some(bits) = cache.as_ref().and_then(|c| c.get(&block)) {
            return Ok(bits.clone());
        }
        drop(cache);
        let mut bits = vec![0u8; d.bitmap_size as usize];
        read_exact_at(
            &self.file,
            &self.path,
            &mut bits,
            at,
            format_args!("sector bitmap of block {block}"),
        )?;
        let bits: Arc<[u8]> = Arc::from(bits);
        if !self.writable {
            if let Ok(mut c) = d.bitmaps.lock() {
                if c.len() >= MAX_CACHED_BITMAPS {
                    c.clear();
                }
                c.insert(block, bits.clone());
            }
        }
        Ok(bits)
    }

    /// Writes to a differencing disk: whole sectors only (the edges of a partial
    /// sector come from the chain), data first, then the bitmap bits that make
    /// the sectors this disk's own.
    fn write_differencing(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        let Layout::Dynamic(d) = &self.layout else {
            return Ok(());
        };
        let block_size = d.block_size;
        for p in pieces(offset, buf.len() as u64, block_size) {
            let lo = p.within / 512 * 512;
            let hi = (p.within + p.len).div_ceil(512) * 512;
            let guest_lo = offset + p.at - (p.within - lo);
            let mut sectors = vec![0u8; (hi - lo) as usize];
            if lo != p.within || hi != p.within + p.len {
                self.read_at(&mut sectors, guest_lo)?;
            }
            let at = (p.within - lo) as usize;
            sectors[at..at + p.len as usize]
                .copy_from_slice(&buf[p.at as usize..(p.at + p.len) as usize]);
            let Layout::Dynamic(d) = &mut self.layout else {
                return Ok(());
            };
            let block_at = match d.bat.block_offset(p.block) {
                Some(b) => b,
                None => d.allocate(&self.file, &self.path, &self.footer, p.block)? - d.bitmap_size,
            };
            write_all_at(
                &self.file,
                &self.path,
                &sectors,
                block_at + d.bitmap_size + lo,
            )?;
            let mut bits = match d.deferred_bits.get(&p.block) {
                Some((_, bits)) => bits.clone(),
                None => {
                    let mut bits = vec![0u8; d.bitmap_size as usize];
                    read_exact_at(&self.file, &self.path, &mut bits, block_at, "sector bitmap")?;
                    bits
                }
            };
            if bitmap::set_range(&mut bits, lo / 512, (hi - lo) / 512) {
                match d.deferred_bits.get_mut(&p.block) {
                    Some(entry) => entry.1 = bits,
                    None => write_all_at(&self.file, &self.path, &bits, block_at)?,
                }
            }
        }
        Ok(())
    }
}

fn open_dynamic(
    file: &File,
    path: &Path,
    footer: &Footer,
    len: u64,
    virtual_size: u64,
) -> Result<Dynamic> {
    let header = meta::read_header(file, path, footer, len)?;
    let block_size = u64::from(header.block_size);
    let needed = virtual_size.div_ceil(block_size);
    let entries = header.max_table_entries;
    if u64::from(entries) < needed {
        return Err(Error::corrupt(
            path,
            format!(
                "dynamic header: max table entries is {entries}, too few for {virtual_size} bytes in {block_size}-byte blocks (needs {needed})"
            ),
        ));
    }
    let bat = meta::read_bat(file, path, &header, len)?;
    let (ho, to, table_len) = (
        footer.data_offset,
        header.table_offset,
        bat::table_size(entries),
    );
    let bitmap_size = header.bitmap_size();
    let block_span = bitmap_size + block_size;
    let mut footer_pos = len.saturating_sub(FOOTER_SIZE as u64).div_ceil(512) * 512;
    footer_pos = footer_pos.max(to + table_len).max(ho + HEADER_SIZE as u64);
    for (_, off) in bat.allocated() {
        footer_pos = footer_pos.max(off + block_span);
    }
    Ok(Dynamic {
        header,
        bat,
        block_size,
        bitmap_size,
        footer_pos,
        durable_footer_pos: footer_pos,
        // Bounded: the header's block size was checked against MAX_BLOCK_SIZE.
        ones: vec![0xff; bitmap_size as usize],
        dirty_bat: BTreeSet::new(),
        pending_bitmaps: Vec::new(),
        parent: None,
        deferred_bits: HashMap::new(),
        bitmaps: Mutex::new(HashMap::new()),
    })
}

impl Dynamic {
    /// Reads `out` at `offset` from the parent, or zeros without one; past the
    /// parent's end (a smaller parent) it reads zeros.
    fn read_parent(&self, out: &mut [u8], offset: u64) -> Result<()> {
        match &self.parent {
            None => out.fill(0),
            Some(p) => {
                let avail = p
                    .virtual_size()
                    .saturating_sub(offset)
                    .min(out.len() as u64) as usize;
                if avail > 0 {
                    p.read_at(&mut out[..avail], offset)?;
                }
                out[avail..].fill(0);
            }
        }
        Ok(())
    }

    /// How the parent stores `[offset, offset+len)`: unallocated without one,
    /// past its end, or when only this disk's own extents are asked for.
    fn map_parent(&self, out: &mut Vec<Extent>, offset: u64, len: u64, own: bool) -> Result<()> {
        let parent = if own { None } else { self.parent.as_deref() };
        crate::map_parent(parent, out, offset, len)
    }

    /// Places block `block` at the end of the file and writes the footer after
    /// it. The BAT entry and bitmap reach the disk at the next flush.
    fn allocate(&mut self, file: &File, path: &Path, footer: &Footer, block: u64) -> Result<u64> {
        // The block's data starts on a page (its bitmap just before it), so
        // that whole-page writes never read a page back first and each page
        // of the file caches one block's sectors; up to 3.5 KiB before it
        // is left unused (a hole, or the footer that ended the file).
        let pos = (self.footer_pos + self.bitmap_size).next_multiple_of(PAGE) - self.bitmap_size;
        let sector = u32::try_from(pos / 512)
            .ok()
            .filter(|&s| s != bat::UNUSED)
            .ok_or_else(|| {
                Error::unsupported(
                    path,
                    "the file has grown past the 2 TiB a BAT entry can address",
                )
            })?;
        let end = pos + self.bitmap_size + self.block_size;
        write_all_at(file, path, &footer.encode(), end)?;
        let index =
            usize::try_from(block).map_err(|_| Error::corrupt(path, "block index overflow"))?;
        let dirty = self
            .bat
            .set(index, sector)
            .ok_or_else(|| Error::corrupt(path, format!("block {block} is past the BAT")))?;
        self.dirty_bat.insert(dirty);
        // A differencing disk's new block holds no sector yet: its bitmap starts
        // clear and gains bits as sectors are written.
        let differencing = self.parent.is_some();
        if pos == self.durable_footer_pos {
            // This bitmap would overwrite the footer that the last flush made
            // durable: it waits until the flush makes the new one durable.
            if differencing {
                self.deferred_bits
                    .insert(block, (pos, vec![0; self.bitmap_size as usize]));
            } else {
                self.pending_bitmaps.push(pos);
            }
        } else {
            // It overwrites a footer written since, which nothing relies on
            // now that a newer one ends the file.
            let bits = if differencing {
                vec![0; self.bitmap_size as usize]
            } else {
                self.ones.clone()
            };
            write_all_at(file, path, &bits, pos)?;
        }
        self.footer_pos = end;
        Ok(pos + self.bitmap_size)
    }
}

impl VhdDisk {
    /// [`Disk::map`], or [`Disk::own_map`] when `own`.
    fn map_layers(&self, offset: u64, len: u64, own: bool) -> Result<Vec<Extent>> {
        check_range(&self.path, offset, len, self.virtual_size)?;
        let mut out = Vec::new();
        match &self.layout {
            Layout::Fixed => push_file_extents(&mut out, &self.file, offset, len, offset),
            Layout::Dynamic(d) => {
                let file_size = file_len(&self.file, &self.path)?;
                for p in pieces(offset, len, d.block_size) {
                    let guest = offset + p.at;
                    let Some(b) = d.bat.block_offset(p.block) else {
                        // Nothing here: the parent's, or unallocated.
                        d.map_parent(&mut out, guest, p.len, own)?;
                        continue;
                    };
                    let start = b + d.bitmap_size + p.within;
                    if start + p.len > file_size {
                        // Past the end of the file: reading it reports the damage.
                        push_extent(
                            &mut out,
                            Extent {
                                offset: guest,
                                length: p.len,
                                kind: ExtentKind::Data,
                            },
                        );
                        continue;
                    }
                    if d.parent.is_none() {
                        // Holes inside a block's data in the host file read as
                        // zeros: saying so spares readers of sparse VHDs from
                        // reading them.
                        push_file_extents(&mut out, &self.file, start, p.len, guest);
                        continue;
                    }
                    let bits = self.block_bits(d, p.block, b)?;
                    for (lo, hi, here) in bitmap::byte_runs(&bits, p.within, p.len) {
                        let at = guest + (lo - p.within);
                        if here {
                            push_file_extents(
                                &mut out,
                                &self.file,
                                b + d.bitmap_size + lo,
                                hi - lo,
                                at,
                            );
                        } else {
                            d.map_parent(&mut out, at, hi - lo, own)?;
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Disk for VhdDisk {
    fn virtual_size(&self) -> u64 {
        self.virtual_size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(&self.path, offset, buf.len() as u64, self.virtual_size)?;
        match &self.layout {
            Layout::Fixed => read_exact_at(&self.file, &self.path, buf, offset, "data"),
            Layout::Dynamic(d) => self.dynamic_read(d, buf, offset),
        }
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly {
                path: self.path.clone(),
            });
        }
        check_range(&self.path, offset, buf.len() as u64, self.virtual_size)?;
        match &mut self.layout {
            Layout::Fixed => write_all_at(&self.file, &self.path, buf, offset),
            Layout::Dynamic(d) if d.parent.is_some() => self.write_differencing(buf, offset),
            Layout::Dynamic(d) => {
                for p in pieces(offset, buf.len() as u64, d.block_size) {
                    let data = &buf[p.at as usize..(p.at + p.len) as usize];
                    let base = match d.bat.block_offset(p.block) {
                        Some(b) => b + d.bitmap_size,
                        // Zeros in a block with no storage read as zeros already.
                        None if is_zero(data) => continue,
                        None => d.allocate(&self.file, &self.path, &self.footer, p.block)?,
                    };
                    write_all_at(&self.file, &self.path, data, base + p.within)?;
                }
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> Result<()> {
        if !self.writable {
            return Ok(());
        }
        sync_data(&self.file, &self.path)?;
        if let Layout::Dynamic(d) = &mut self.layout {
            if d.pending_bitmaps.is_empty() && d.dirty_bat.is_empty() && d.deferred_bits.is_empty()
            {
                return Ok(());
            }
            // Dynamic disks read every sector of an allocated block, so the
            // bitmap is all ones, as QEMU and Hyper-V write it.
            for &pos in &d.pending_bitmaps {
                write_all_at(&self.file, &self.path, &d.ones, pos)?;
            }
            for (pos, bits) in d.deferred_bits.values() {
                write_all_at(&self.file, &self.path, bits, *pos)?;
            }
            meta::write_bat_sectors(
                &self.file,
                &self.path,
                &d.bat,
                d.header.table_offset,
                d.dirty_bat.iter().copied(),
            )?;
            sync_data(&self.file, &self.path)?;
            d.pending_bitmaps.clear();
            d.deferred_bits.clear();
            d.dirty_bat.clear();
            d.durable_footer_pos = d.footer_pos;
        }
        Ok(())
    }

    fn prefetch(&self, offset: u64, len: u64) {
        if check_range(&self.path, offset, len, self.virtual_size).is_err() {
            return;
        }
        match &self.layout {
            Layout::Fixed => prefetch(&self.file, offset, len),
            Layout::Dynamic(d) => {
                for p in pieces(offset, len, d.block_size) {
                    match (d.bat.block_offset(p.block), &d.parent) {
                        (Some(b), _) => prefetch(&self.file, b + d.bitmap_size + p.within, p.len),
                        // Reads of this piece go to the parent.
                        (None, Some(parent)) => parent.prefetch(offset + p.at, p.len),
                        (None, None) => {}
                    }
                }
            }
        }
    }

    fn discard(&mut self, offset: u64, len: u64) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly {
                path: self.path.clone(),
            });
        }
        check_range(&self.path, offset, len, self.virtual_size)?;
        match &self.layout {
            Layout::Fixed => crate::write_zeroes_by_writing(self, offset, len),
            Layout::Dynamic(d) if d.parent.is_some() => {
                // Zeros must hide the parent's data: write them.
                crate::write_zeroes_by_writing(self, offset, len)
            }
            Layout::Dynamic(d) => {
                // Unallocated parts already read as zeros; zero the allocated ones.
                let allocated: Vec<(u64, u64)> = pieces(offset, len, d.block_size)
                    .filter(|p| d.bat.block_offset(p.block).is_some())
                    .map(|p| (offset + p.at, p.len))
                    .collect();
                for (o, l) in allocated {
                    crate::write_zeroes_by_writing(self, o, l)?;
                }
                Ok(())
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
        let f = &self.footer;
        let (block_size, allocated, bat_entries) = match &self.layout {
            Layout::Fixed => (None, self.virtual_size, None),
            Layout::Dynamic(d) => (
                Some(d.block_size),
                d.bat
                    .allocated()
                    .map(|(i, _)| {
                        d.block_size.min(
                            self.virtual_size
                                .saturating_sub(i.saturating_mul(d.block_size)),
                        )
                    })
                    .sum(),
                Some(d.bat.len()),
            ),
        };
        let secs = u64::from(f.timestamp) + footer::VHD_EPOCH;
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let mut chain = vec![crate::ChainLink {
            file: self.path.display().to_string(),
            format: "vhd",
            kind: f.kind().map(DiskType::name).unwrap_or("unknown"),
            unique_id: Some(f.unique_id_text()),
        }];
        let mut parent = None;
        if let Layout::Dynamic(d) = &self.layout {
            if let Some(p) = &d.parent {
                chain.extend(p.info()?.chain);
                parent = Some(ParentInfo {
                    name: locator::decode_parent_name(&d.header.parent_unicode_name)
                        .unwrap_or_default(),
                    unique_id: footer::uuid_text(&d.header.parent_unique_id),
                    file: p.path().display().to_string(),
                });
            }
        }
        Ok(ImageInfo {
            file: self.path.display().to_string(),
            format: "vhd",
            virtual_size: self.virtual_size,
            file_size: file_len(&self.file, &self.path)?,
            allocated_bytes: allocated,
            chain,
            host_allocated_bytes: host_allocated(&self.file, &self.path)?,
            vhd: Some(VhdInfo {
                kind: f.kind().map(DiskType::name).unwrap_or("unknown"),
                block_size,
                bat_entries,
                creator: Creator {
                    app: f.creator_app_text(),
                    version: format!("{}.{}", f.creator_version >> 16, f.creator_version & 0xffff),
                    host_os: f.host_os_text(),
                },
                geometry: f.geometry,
                chs_size: f.geometry.size(),
                current_size: f.current_size,
                original_size: f.original_size,
                size_source: self.size_source.clone(),
                unique_id: f.unique_id_text(),
                timestamp: humantime::format_rfc3339_seconds(time).to_string(),
                saved_state: f.saved_state != 0,
                footer: match self.footer_place {
                    FooterPlace::End => "end",
                    FooterPlace::LegacyEnd => "end (511-byte legacy footer)",
                    FooterPlace::Copy => "copy at offset 0 (footer at end damaged)",
                },
                warnings: self.warnings.clone(),
                parent,
            }),
            details: None,
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for VhdDisk {
    fn drop(&mut self) {
        if let Layout::Dynamic(d) = &self.layout {
            if !d.dirty_bat.is_empty()
                || !d.pending_bitmaps.is_empty()
                || !d.deferred_bits.is_empty()
            {
                // Best effort: a caller who cares about errors flushes first.
                let _ = self.flush();
            }
        }
    }
}

/// The creator fields of a footer.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Creator {
    /// Creator application, four characters.
    pub app: String,
    /// Its version, "major.minor".
    pub version: String,
    /// Host OS, four characters.
    pub host_os: String,
}

/// What `img info` shows of a VHD beyond the common fields.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct VhdInfo {
    /// "fixed", "dynamic" or "differencing".
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Block size of a dynamic disk; `null` for a fixed one.
    pub block_size: Option<u64>,
    /// Entries in the BAT of a dynamic disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bat_entries: Option<u32>,
    /// Who made the image.
    pub creator: Creator,
    /// CHS geometry.
    pub geometry: Geometry,
    /// Bytes the geometry addresses.
    pub chs_size: u64,
    /// The footer's current_size.
    pub current_size: u64,
    /// The footer's original_size.
    pub original_size: u64,
    /// Which size is the virtual size, and why.
    pub size_source: SizeSource,
    /// Unique id.
    pub unique_id: String,
    /// Creation time, RFC 3339.
    pub timestamp: String,
    /// Whether the disk holds a saved state.
    pub saved_state: bool,
    /// Which footer was used.
    pub footer: &'static str,
    /// Problems noticed while opening.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The parent of a differencing disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentInfo>,
}

/// The parent of a differencing disk, as its header records it and as found.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ParentInfo {
    /// The parent's name in the header.
    pub name: String,
    /// The parent's unique id, as the child recorded it.
    pub unique_id: String,
    /// The file opened as the parent.
    pub file: String,
}

#[cfg(test)]
mod tests;
