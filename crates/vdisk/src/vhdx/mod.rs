//! VHDX images ([MS-VHDX] v1.0): fixed, dynamic and differencing disks.
//!
//! On-disk structures are plain structs with `decode`/`encode` ([`header`],
//! [`metadata`], [`log`]); block arithmetic is pure ([`bat`]); [`VhdxDisk`]
//! does the file I/O: opening and reading here, the header section and log
//! I/O in `store`, the parent locator in `parent`, writing in `write`.
//!
//! # The log
//! A header whose LogGuid is set names a log that may hold updates not yet
//! applied. Opening for writing replays the active sequence into the file,
//! syncs it and clears LogGuid; opening read-only replays it in memory only,
//! so that readers see the right content and the file stays untouched.
//!
//! # Crash safety of writes
//! A new payload block (or sector bitmap block) is placed at the 1 MiB-aligned
//! end of the file and its data written there; its BAT entry, and the sector
//! bitmap bits of a differencing disk's partial writes, change only in
//! memory. [`Disk::flush`] syncs the data, sets LogGuid, writes the changed
//! bitmap pages and BAT sectors as log entries, each synced before its writes
//! are made in place and synced, then clears LogGuid. A crash before an entry
//! is durable leaves the old BAT and bitmaps (unflushed writes to new blocks
//! or sectors are lost, as they may be); a crash after it is repaired by the
//! replay of the next open.

pub mod bat;
pub mod check;
pub mod compact;
pub mod create;
pub mod fields;
pub mod header;
pub mod log;
pub mod metadata;
mod parent;
pub mod relink;
pub mod resize;
mod store;
mod write;

use crate::io::{
    file_len, host_allocated, is_zero, prefetch, read_exact_at, sync_data, write_all_at,
};
use crate::{
    check_range, push_extent, push_file_extents, Disk, Error, Extent, ExtentKind, ImageInfo, Result,
};
use bat::{pieces, Geometry};
use fields::{guid_text, ZERO_GUID};
use header::{Header, ALIGN, HEADER_SECTION};
use metadata::Metadata;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;

pub use check::check_file;
pub use create::{create, create_child};
use store::{apply_replay, read_headers, read_log, read_regions, write_header, Store};

/// The largest log read into memory.
const MAX_LOG: u64 = 256 << 20;
/// The largest metadata region read into memory.
const MAX_METADATA: u64 = 64 << 20;
/// How far a log entry may say the file extends past its current end.
const MAX_LOG_GROWTH: u64 = 1 << 30;
/// Bytes of a sector bitmap page kept in memory.
const PAGE: u64 = 4096;

/// What `img info` shows about a VHDX image beyond what every format shows.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct VhdxInfo {
    /// "fixed", "dynamic" or "differencing".
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Bytes per payload block.
    pub block_size: u64,
    /// Bytes per logical sector.
    pub logical_sector_size: u32,
    /// Bytes per physical sector.
    pub physical_sector_size: u32,
    /// The sequence number of the current header.
    pub header_sequence: u64,
    /// Where the log is.
    pub log_offset: u64,
    /// How long the log is.
    pub log_length: u32,
    /// What was done with the log at open: "clean", "replayed in memory"
    /// (read-only) or "replayed".
    pub log_state: &'static str,
    /// Log entries replayed at open.
    pub log_entries_replayed: usize,
    /// The header's FileWriteGuid.
    pub file_write_guid: String,
    /// The header's DataWriteGuid (what children record as parent_linkage).
    pub data_write_guid: String,
    /// The disk's page 83 id.
    pub virtual_disk_id: String,
    /// Entries in the BAT.
    pub bat_entries: u64,
    /// The parent of a differencing disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<Box<VhdxParentInfo>>,
}

/// The parent of a differencing VHDX.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct VhdxParentInfo {
    /// The parent file opened.
    pub file: String,
    /// The DataWriteGuid the parent must have.
    pub parent_linkage: String,
    /// The locator's relative path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relative_path: Option<String>,
    /// The locator's absolute path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub absolute_win32_path: Option<String>,
    /// The locator's volume path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_path: Option<String>,
}

/// True when `head`, the first bytes of a file (up to 4 KiB, fewer for a
/// short file), start like a VHDX image.
pub(crate) fn sniff(head: &[u8]) -> bool {
    head.starts_with(header::FILE_SIGNATURE)
}

/// Opens the VHDX image in `file`, for writing when `writable`.
pub(crate) fn open(file: File, path: &Path, writable: bool) -> Result<Box<dyn Disk>> {
    Ok(Box::new(VhdxDisk::load(file, path, writable, true)?))
}

/// Opens the VHDX image at `path` for a merge of its children into it: its
/// writes renew FileWriteGuid but leave DataWriteGuid as it is, so that the
/// children still find it their parent while the merge runs (they hide every
/// sector it writes, so they read as before). Once the children are gone,
/// [`VhdxDisk::renew_data_write_guid`] marks the data as changed.
pub(crate) fn open_for_merge(path: &Path) -> Result<VhdxDisk> {
    let file = crate::format::open_file(path, true)?;
    let mut disk = VhdxDisk::load(file, path, true, true)?;
    disk.keep_data_write_guid = true;
    Ok(disk)
}

/// An open VHDX image.
pub struct VhdxDisk {
    store: Store,
    writable: bool,
    header: Header,
    slot: usize,
    meta: Metadata,
    geo: Geometry,
    bat_offset: u64,
    bat: Vec<u64>,
    parent: Option<Box<dyn Disk>>,
    parent_info: Option<Box<VhdxParentInfo>>,
    log_state: &'static str,
    log_entries: usize,
    /// BAT sectors (4 KiB) changed in memory but not yet in the file.
    dirty: BTreeSet<u64>,
    /// Sector bitmap pages (4 KiB, by file offset) changed in memory but not
    /// yet in the file; they reach it through the log with the BAT.
    bitmap_pages: BTreeMap<u64, Vec<u8>>,
    /// Whether this open has written (and so renewed the write GUIDs).
    session: bool,
    /// Whether writes leave DataWriteGuid as it is (a merge into this disk,
    /// see [`VhdxDisk::open_for_merge`]).
    keep_data_write_guid: bool,
    /// Where the next payload block goes.
    next_block: u64,
    log_sequence: u64,
}

fn corrupt(path: &Path, what: impl Into<String>) -> Error {
    Error::corrupt(path, what)
}

impl VhdxDisk {
    /// Opens the image in `file`; the parent of a differencing disk is opened
    /// only when `with_parent`.
    fn load(file: File, path: &Path, writable: bool, with_parent: bool) -> Result<VhdxDisk> {
        let real_len = file_len(&file, path)?;
        if real_len < HEADER_SECTION {
            return Err(corrupt(
                path,
                format!("the file ({real_len} bytes) is shorter than the 1 MiB header section"),
            ));
        }
        let mut sig = [0u8; 8];
        read_exact_at(&file, path, &mut sig, 0, "file type identifier")?;
        if &sig != header::FILE_SIGNATURE {
            return Err(corrupt(
                path,
                "file type identifier: bad signature (expected \"vhdxfile\")",
            ));
        }
        let slots = read_headers(&file, path, real_len)?;
        let Some(slot) = header::current(&slots) else {
            let why: Vec<String> = slots
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    format!(
                        "header {}: {}",
                        i + 1,
                        s.as_ref().err().cloned().unwrap_or_default()
                    )
                })
                .collect();
            return Err(corrupt(
                path,
                format!("no valid header ({})", why.join("; ")),
            ));
        };
        let mut header = match &slots[slot] {
            Ok(h) => h.clone(),
            Err(_) => return Err(corrupt(path, "no valid header")),
        };
        let mut store = Store {
            file,
            path: path.to_path_buf(),
            patches: Vec::new(),
            real_len,
            len: real_len,
        };
        // The region tables lie in the header section, which the log never
        // writes: they are read (and the log placed against them) first.
        let regions = read_regions(&store)?;
        let log_end = header.log_offset + u64::from(header.log_length);
        if let Some(r) = regions
            .regions
            .iter()
            .find(|r| r.offset < log_end && header.log_offset < r.offset + u64::from(r.length))
        {
            return Err(corrupt(
                path,
                format!(
                    "header: the log ({} bytes at {}) overlaps the {}",
                    header.log_length,
                    header.log_offset,
                    header::region_name(&r.guid)
                ),
            ));
        }
        let mut slot = slot;
        let mut log_state = "clean";
        let mut log_entries = 0;
        if header.log_guid != ZERO_GUID {
            if let Some(r) = read_log(&store, &header)? {
                log_entries = r.entries;
                if writable {
                    apply_replay(&store, &r)?;
                    store.real_len = file_len(&store.file, path)?;
                    store.len = store.real_len;
                    log_state = "replayed";
                } else {
                    store.len = real_len.max(r.last_file_offset);
                    store.patches = r.writes;
                    log_state = "replayed in memory";
                }
            }
            if writable {
                let mut h = header.clone();
                h.log_guid = ZERO_GUID;
                slot = write_header(&store, slot, &mut h)?;
                header = h;
            }
        }
        let meta_region = regions
            .find(&header::METADATA_REGION)
            .ok_or_else(|| corrupt(path, "region table: no metadata region"))?;
        if u64::from(meta_region.length) > MAX_METADATA {
            return Err(Error::unsupported(
                path,
                format!(
                    "metadata region of {} bytes is larger than the {MAX_METADATA} supported",
                    meta_region.length
                ),
            ));
        }
        let mut mbuf = vec![0u8; meta_region.length as usize];
        store.read(&mut mbuf, meta_region.offset, "metadata region")?;
        let meta = metadata::decode(&mbuf).map_err(|e| {
            if e.starts_with("unknown required") {
                Error::unsupported(path, format!("metadata region: {e}"))
            } else {
                corrupt(path, format!("metadata region: {e}"))
            }
        })?;
        let geo = Geometry::new(
            u64::from(meta.block_size),
            u64::from(meta.logical_sector),
            meta.virtual_size,
            meta.has_parent,
        );
        let bat_region = regions
            .find(&header::BAT_REGION)
            .ok_or_else(|| corrupt(path, "region table: no BAT region"))?;
        let need = geo.entries * 8;
        if u64::from(bat_region.length) < need {
            return Err(corrupt(
                path,
                format!(
                    "BAT region: {} bytes, too small for the {} entries of a {}-byte disk with {}-byte blocks",
                    bat_region.length, geo.entries, meta.virtual_size, meta.block_size
                ),
            ));
        }
        if need > store.real_len {
            return Err(corrupt(
                path,
                format!(
                    "BAT region: its {} entries ({need} bytes) are more than the file's {} bytes",
                    geo.entries, store.real_len
                ),
            ));
        }
        let mut raw = vec![0u8; need as usize];
        store.read(&mut raw, bat_region.offset, "BAT")?;
        let bat: Vec<u64> = raw.chunks_exact(8).map(|c| fields::u64_at(c, 0)).collect();
        let next_block = store.len.div_ceil(ALIGN) * ALIGN;
        let mut disk = VhdxDisk {
            store,
            writable,
            header,
            slot,
            meta,
            geo,
            bat_offset: bat_region.offset,
            bat,
            parent: None,
            parent_info: None,
            log_state,
            log_entries,
            dirty: BTreeSet::new(),
            bitmap_pages: BTreeMap::new(),
            session: false,
            keep_data_write_guid: false,
            next_block,
            log_sequence: 0,
        };
        if disk.meta.has_parent && with_parent {
            disk.open_parent()?;
        }
        Ok(disk)
    }

    fn path_buf(&self) -> &Path {
        &self.store.path
    }

    /// The payload entry of `block`.
    fn entry(&self, block: u64) -> u64 {
        let i = self.geo.payload_index(block);
        self.bat.get(i as usize).copied().unwrap_or(0)
    }

    /// The file offset of payload block `block` when its state says it is in
    /// the file; an error when the entry is invalid.
    fn block_offset(&self, block: u64, e: u64) -> Result<u64> {
        let off = bat::offset(e);
        if off < HEADER_SECTION {
            return Err(corrupt(
                self.path_buf(),
                format!(
                    "BAT entry {} (block {block}): a {} block at file offset {off}, inside the header section",
                    self.geo.payload_index(block),
                    bat::state_name(bat::state(e))
                ),
            ));
        }
        Ok(off)
    }

    fn bad_state(&self, block: u64, e: u64) -> Error {
        corrupt(
            self.path_buf(),
            format!(
                "BAT entry {} (block {block}): state {} is not valid for a payload block of a {} disk",
                self.geo.payload_index(block),
                bat::state(e),
                if self.meta.has_parent { "differencing" } else { "non-differencing" }
            ),
        )
    }

    /// Reads `buf` from the parent at `offset` (zeros past its end or without one).
    fn read_parent(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        match &self.parent {
            Some(p) => {
                let avail = p
                    .virtual_size()
                    .saturating_sub(offset)
                    .min(buf.len() as u64) as usize;
                let (head, rest) = buf.split_at_mut(avail);
                if !head.is_empty() {
                    p.read_at(head, offset)?;
                }
                rest.fill(0);
                Ok(())
            }
            None => {
                buf.fill(0);
                Ok(())
            }
        }
    }

    /// The sector bitmap bits of `[within, within+len)` of `block`, as runs
    /// `(start, end, present)` in bytes of the block.
    fn bitmap_runs(&self, block: u64, within: u64, len: u64) -> Result<Vec<(u64, u64, bool)>> {
        let chunk = block / self.geo.chunk_ratio;
        let bi = self.geo.bitmap_index(chunk);
        let e = self.bat.get(bi as usize).copied().unwrap_or(0);
        if bat::state(e) != bat::SB_PRESENT || bat::offset(e) < HEADER_SECTION {
            return Err(corrupt(
                self.path_buf(),
                format!(
                    "BAT entry {bi} (sector bitmap of chunk {chunk}): block {block} is partially present but its sector bitmap is not (state {}, offset {})",
                    bat::state(e),
                    bat::offset(e)
                ),
            ));
        }
        let sector = self.geo.sector;
        let first = within / sector;
        let last = (within + len - 1) / sector;
        let bit0 = self.geo.bitmap_bit(block) + first;
        let bit1 = self.geo.bitmap_bit(block) + last;
        let mut bits = vec![0u8; (bit1 / 8 - bit0 / 8 + 1) as usize];
        self.read_bitmap(&mut bits, bat::offset(e) + bit0 / 8, chunk)?;
        let mut runs: Vec<(u64, u64, bool)> = Vec::new();
        for s in first..=last {
            let bit = self.geo.bitmap_bit(block) + s - (bit0 / 8) * 8;
            let set = bits
                .get((bit / 8) as usize)
                .is_some_and(|b| b & (1 << (bit % 8)) != 0);
            let (lo, hi) = (
                (s * sector).max(within),
                ((s + 1) * sector).min(within + len),
            );
            match runs.last_mut() {
                Some(r) if r.2 == set && r.1 == lo => r.1 = hi,
                _ => runs.push((lo, hi, set)),
            }
        }
        Ok(runs)
    }

    /// Blocks allocated in the file, and the bytes of the disk they hold.
    fn allocated(&self) -> (u64, u64) {
        let mut n = 0;
        let mut bytes = 0;
        for b in 0..self.geo.data_blocks {
            let s = bat::state(self.entry(b));
            if s == bat::FULLY_PRESENT || s == bat::PARTIALLY_PRESENT {
                n += 1;
                bytes += self
                    .geo
                    .block_size
                    .min(self.meta.virtual_size - b * self.geo.block_size);
            }
        }
        (n, bytes)
    }
}

impl Disk for VhdxDisk {
    fn virtual_size(&self) -> u64 {
        self.meta.virtual_size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(
            self.path_buf(),
            offset,
            buf.len() as u64,
            self.meta.virtual_size,
        )?;
        // Runs of blocks that follow each other in the file are read at once.
        let mut run: Option<(u64, usize, usize)> = None;
        let flush_run = |buf: &mut [u8], run: &mut Option<(u64, usize, usize)>| -> Result<()> {
            if let Some((fo, s, e)) = run.take() {
                self.store.read(&mut buf[s..e], fo, "payload block")?;
            }
            Ok(())
        };
        for p in pieces(offset, buf.len() as u64, self.geo.block_size) {
            let (s, e) = (p.at as usize, (p.at + p.len) as usize);
            let ent = self.entry(p.block);
            match bat::state(ent) {
                bat::FULLY_PRESENT => {
                    let fo = self.block_offset(p.block, ent)? + p.within;
                    match &mut run {
                        Some((rfo, rs, re)) if *re == s && *rfo + (*re - *rs) as u64 == fo => {
                            *re = e
                        }
                        _ => {
                            flush_run(buf, &mut run)?;
                            run = Some((fo, s, e));
                        }
                    }
                }
                st => {
                    flush_run(buf, &mut run)?;
                    let dst = &mut buf[s..e];
                    let guest = offset + p.at;
                    match st {
                        bat::ZERO => dst.fill(0),
                        bat::NOT_PRESENT | bat::UNDEFINED | bat::UNMAPPED | bat::UNMAPPED_V095 => {
                            self.read_parent(dst, guest)?
                        }
                        bat::PARTIALLY_PRESENT if self.meta.has_parent => {
                            let fo = self.block_offset(p.block, ent)?;
                            for (lo, hi, here) in self.bitmap_runs(p.block, p.within, p.len)? {
                                let d =
                                    &mut dst[(lo - p.within) as usize..(hi - p.within) as usize];
                                if here {
                                    self.store.read(d, fo + lo, "payload block")?;
                                } else {
                                    self.read_parent(d, guest + (lo - p.within))?;
                                }
                            }
                        }
                        _ => return Err(self.bad_state(p.block, ent)),
                    }
                }
            }
        }
        flush_run(buf, &mut run)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        check_range(
            self.path_buf(),
            offset,
            buf.len() as u64,
            self.meta.virtual_size,
        )?;
        self.begin_writing()?;
        let path = self.store.path.clone();
        for p in pieces(offset, buf.len() as u64, self.geo.block_size) {
            let data = &buf[p.at as usize..(p.at + p.len) as usize];
            let ent = self.entry(p.block);
            let whole = p.len == self.geo.block_size;
            let at = match bat::state(ent) {
                bat::FULLY_PRESENT => self.block_offset(p.block, ent)?,
                bat::PARTIALLY_PRESENT if self.meta.has_parent => {
                    self.write_partial(p.block, p.within, data, ent)?;
                    continue;
                }
                bat::NOT_PRESENT | bat::UNDEFINED | bat::UNMAPPED | bat::UNMAPPED_V095
                    if self.meta.has_parent && !whole =>
                {
                    self.write_partial(p.block, p.within, data, ent)?;
                    continue;
                }
                bat::NOT_PRESENT
                | bat::UNDEFINED
                | bat::UNMAPPED
                | bat::UNMAPPED_V095
                | bat::ZERO => {
                    if !self.meta.has_parent && is_zero(data) {
                        // The block reads as zeros already.
                        continue;
                    }
                    // A whole block, or a block that reads as zeros: the
                    // new block's untouched bytes are the zeros of new space.
                    self.allocate(p.block, bat::FULLY_PRESENT)?
                }
                _ => return Err(self.bad_state(p.block, ent)),
            };
            write_all_at(&self.store.file, &path, data, at + p.within)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.writable {
            return Ok(());
        }
        if self.pending() {
            self.commit_bat()
        } else if self.session {
            sync_data(&self.store.file, &self.store.path)
        } else {
            Ok(())
        }
    }

    fn prefetch(&self, offset: u64, len: u64) {
        if offset
            .checked_add(len)
            .is_none_or(|e| e > self.meta.virtual_size)
        {
            return;
        }
        for p in pieces(offset, len, self.geo.block_size) {
            let e = self.entry(p.block);
            if bat::state(e) == bat::FULLY_PRESENT {
                prefetch(&self.store.file, bat::offset(e) + p.within, p.len);
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
        let (_, allocated) = self.allocated();
        let kind = if self.meta.has_parent {
            "differencing"
        } else if self.meta.leave_blocks_allocated {
            "fixed"
        } else {
            "dynamic"
        };
        let mut chain = vec![crate::ChainLink {
            file: self.store.path.display().to_string(),
            format: "vhdx",
            kind,
            unique_id: Some(guid_text(&self.meta.page83)),
        }];
        if let Some(p) = &self.parent {
            chain.extend(p.info()?.chain);
        }
        Ok(ImageInfo {
            file: self.store.path.display().to_string(),
            format: "vhdx",
            virtual_size: self.meta.virtual_size,
            file_size: self.store.real_len,
            allocated_bytes: allocated,
            host_allocated_bytes: host_allocated(&self.store.file, &self.store.path)?,
            chain,
            vhd: None,
            details: Some(crate::FormatDetails::Vhdx(VhdxInfo {
                kind,
                block_size: self.geo.block_size,
                logical_sector_size: self.meta.logical_sector,
                physical_sector_size: self.meta.physical_sector,
                header_sequence: self.header.sequence,
                log_offset: self.header.log_offset,
                log_length: self.header.log_length,
                log_state: self.log_state,
                log_entries_replayed: self.log_entries,
                file_write_guid: guid_text(&self.header.file_write_guid),
                data_write_guid: guid_text(&self.header.data_write_guid),
                virtual_disk_id: guid_text(&self.meta.page83),
                bat_entries: self.geo.entries,
                parent: self.parent_info.clone(),
            })),
        })
    }

    fn path(&self) -> &Path {
        &self.store.path
    }
}

impl VhdxDisk {
    /// [`Disk::map`], or [`Disk::own_map`] when `own`.
    fn map_layers(&self, offset: u64, len: u64, own: bool) -> Result<Vec<Extent>> {
        check_range(self.path_buf(), offset, len, self.meta.virtual_size)?;
        let mut out = Vec::new();
        let file_len = self.store.len;
        for p in pieces(offset, len, self.geo.block_size) {
            let guest = offset + p.at;
            let ent = self.entry(p.block);
            let push = |out: &mut Vec<Extent>, offset, length, kind| {
                push_extent(
                    out,
                    Extent {
                        offset,
                        length,
                        kind,
                    },
                )
            };
            match bat::state(ent) {
                bat::FULLY_PRESENT => {
                    let fo = self.block_offset(p.block, ent)? + p.within;
                    if fo + p.len > self.store.real_len
                        || !self.store.patches.is_empty()
                        || file_len != self.store.real_len
                    {
                        push(&mut out, guest, p.len, ExtentKind::Data);
                    } else {
                        push_file_extents(&mut out, &self.store.file, fo, p.len, guest);
                    }
                }
                bat::ZERO if self.meta.has_parent => push(&mut out, guest, p.len, ExtentKind::Zero),
                bat::ZERO
                | bat::NOT_PRESENT
                | bat::UNDEFINED
                | bat::UNMAPPED
                | bat::UNMAPPED_V095 => self.map_parent(&mut out, guest, p.len, own)?,
                bat::PARTIALLY_PRESENT if self.meta.has_parent => {
                    self.block_offset(p.block, ent)?;
                    for (lo, hi, here) in self.bitmap_runs(p.block, p.within, p.len)? {
                        let g = guest + (lo - p.within);
                        if here {
                            push(&mut out, g, hi - lo, ExtentKind::Data);
                        } else {
                            self.map_parent(&mut out, g, hi - lo, own)?;
                        }
                    }
                }
                _ => return Err(self.bad_state(p.block, ent)),
            }
        }
        Ok(out)
    }

    fn map_parent(&self, out: &mut Vec<Extent>, offset: u64, len: u64, own: bool) -> Result<()> {
        let parent = if own { None } else { self.parent.as_deref() };
        crate::map_parent(parent, out, offset, len)
    }
}

impl Drop for VhdxDisk {
    fn drop(&mut self) {
        // Whatever was written reaches the BAT; errors here have no one to
        // go to, and the log keeps the image consistent whatever happens.
        if self.writable && self.pending() {
            let _ = self.commit_bat();
        }
    }
}
