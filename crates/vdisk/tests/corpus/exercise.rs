//! Runs every read-only operation of `vdisk` on one image file and collects what
//! came out, so that a hostile image can be thrown at the whole read path at once.
//!
//! Shared by the malformed-image and chain tests and the fuzz targets (which
//! include this file by path), so that all exercise exactly the same operations.
//! For differencing disks it also makes the parent that inputs are opened over,
//! so that the seeds the tests write find the parent the fuzz target writes.

use std::path::Path;
use vdisk::ops::check::CheckReport;
use vdisk::vhd::footer::{self, Footer, FOOTER_SIZE};
use vdisk::vhd::header::{DynamicHeader, HEADER_SIZE};
use vdisk::{CreateOptions, Disk, Extent, ExtentKind, ImageInfo, ImageType, OpenOptions};

/// Bytes per read: not a multiple of any block or sector size, so that reads
/// straddle block boundaries and start at unaligned offsets.
const CHUNK: u64 = 40_000;

/// What the operations after a successful open returned.
pub struct Opened {
    /// `Disk::info`.
    pub info: Result<ImageInfo, String>,
    /// `Disk::map` of the whole disk.
    pub map: Result<Vec<Extent>, String>,
    /// The errors of the reads, in order.
    pub read_errors: Vec<String>,
    /// The whole disk's bytes, when it was small enough to read whole and every
    /// read succeeded.
    pub content: Option<Vec<u8>>,
}

/// What `open` (and, when it succeeded, every read-only operation) and `check` returned.
pub struct Outcome {
    /// `vdisk::open`, as its error's `Display` when it failed.
    pub open: Result<Opened, String>,
    /// `vdisk::check`, as its error's `Display` when it failed.
    pub check: Result<CheckReport, String>,
}

impl Outcome {
    /// Every error message any operation returned.
    pub fn errors(&self) -> Vec<&str> {
        let mut out = Vec::new();
        match &self.open {
            Err(e) => out.push(e.as_str()),
            Ok(o) => {
                if let Err(e) = &o.info {
                    out.push(e.as_str());
                }
                if let Err(e) = &o.map {
                    out.push(e.as_str());
                }
                out.extend(o.read_errors.iter().map(String::as_str));
            }
        }
        if let Err(e) = &self.check {
            out.push(e.as_str());
        }
        out
    }

    /// Panics unless every error message names `path`, so that a user with many
    /// images can tell which one is broken.
    pub fn assert_errors_name(&self, path: &Path) {
        let shown = path.display().to_string();
        for e in self.errors() {
            assert!(
                e.contains(&shown),
                "error does not name the file {shown}: {e}"
            );
        }
    }
}

/// Opens the image at `path` read-only and runs info, map and reads on it, then
/// checks it. Reads stop after `budget` bytes: a hostile footer can claim a disk
/// of terabytes, and what matters is that every kind of read is tried, not that
/// a mostly empty disk is read to its end. A disk of at most `budget` bytes is
/// read whole; a larger one has its first and last chunk and then its data
/// extents read.
pub fn exercise(path: &Path, budget: u64) -> Outcome {
    let open = vdisk::open(path, OpenOptions::default())
        .map(|disk| run(disk.as_ref(), budget))
        .map_err(|e| e.to_string());
    let check = vdisk::check(path).map_err(|e| e.to_string());
    Outcome { open, check }
}

fn run(disk: &dyn Disk, budget: u64) -> Opened {
    let size = disk.virtual_size();
    let info = disk.info().map_err(|e| e.to_string());
    let map = disk.map(0, size).map_err(|e| e.to_string());
    let whole = size <= budget;
    let ranges: Vec<(u64, u64)> = if whole {
        vec![(0, size)]
    } else {
        let head = CHUNK.min(size);
        let mut r = vec![(0, head), (size - head, head)];
        if let Ok(extents) = &map {
            r.extend(
                extents
                    .iter()
                    .filter(|e| e.kind == ExtentKind::Data)
                    .map(|e| (e.offset, e.length)),
            );
        }
        r
    };
    let mut read_errors = Vec::new();
    let mut content = Vec::new();
    let mut buf = vec![0u8; CHUNK as usize];
    let mut left = budget;
    'ranges: for (start, len) in ranges {
        let end = start + len;
        let mut at = start;
        while at < end {
            if left == 0 {
                break 'ranges;
            }
            let n = CHUNK.min(end - at).min(left);
            let b = &mut buf[..n as usize];
            match disk.read_at(b, at) {
                Ok(()) => {
                    if whole {
                        content.extend_from_slice(b);
                    }
                }
                Err(e) => read_errors.push(e.to_string()),
            }
            left -= n;
            at += n;
        }
    }
    let content = (whole && read_errors.is_empty()).then_some(content);
    Opened {
        info,
        map,
        read_errors,
        content,
    }
}

/// Recomputes the checksums of the footer at the end, the footer copy at offset 0
/// and the dynamic header (of a dynamic or a differencing disk: the parent
/// fields and locators are inside its checksum), wherever they still have their
/// cookies, so that random damage gets past the checksums into the fields
/// behind them.
pub fn reseal(b: &mut [u8]) {
    if let Some(ho) = reseal_footers(b) {
        edit_header(b, ho, |_| {});
    }
}

/// Sets the parent unique id of the dynamic header in `b` to `id` and reseals,
/// so that a mutated child still names the parent beside it and opening goes
/// past the id test into the parent. Returns whether there was a header to edit.
pub fn adopt_parent(b: &mut [u8], id: &[u8; 16]) -> bool {
    match reseal_footers(b) {
        Some(ho) => edit_header(b, ho, |h| h.parent_unique_id = *id),
        None => false,
    }
}

/// Reseals the footers that have their cookie; returns where the first of them
/// (the one at the end, else the copy) puts the dynamic header.
fn reseal_footers(b: &mut [u8]) -> Option<usize> {
    let len = b.len();
    if len < FOOTER_SIZE {
        return None;
    }
    let mut data_offset = None;
    for at in [len - FOOTER_SIZE, 0] {
        if let Some(f) = Footer::decode(&b[at..at + FOOTER_SIZE]) {
            if &f.cookie == footer::COOKIE {
                b[at..at + FOOTER_SIZE].copy_from_slice(&f.encode());
                data_offset = data_offset.or(Some(f.data_offset));
            }
        }
    }
    data_offset.and_then(|o| usize::try_from(o).ok())
}

/// Edits the dynamic header at `ho` in `b`, if it lies inside `b`, and re-encodes
/// it with a fresh checksum. Returns whether it did.
fn edit_header(b: &mut [u8], ho: usize, edit: impl FnOnce(&mut DynamicHeader)) -> bool {
    let Some(end) = ho.checked_add(HEADER_SIZE).filter(|&end| end <= b.len()) else {
        return false;
    };
    let Some(mut h) = DynamicHeader::decode(&b[ho..end]) else {
        return false;
    };
    edit(&mut h);
    b[ho..end].copy_from_slice(&h.encode());
    true
}

// The parent of chained inputs.

/// File name of the parent that differencing inputs are opened over.
pub const PARENT_FILE: &str = "base.vhd";
/// File name of a differencing input, beside [`PARENT_FILE`].
pub const CHILD_FILE: &str = "child.vhd";
/// The parent's unique id: fixed, so that a child made over one copy of the
/// parent finds every other copy.
pub const PARENT_ID: [u8; 16] = *b"vmhub-test-base\x01";
/// Virtual size of the parent.
pub const PARENT_SIZE: u64 = 32 << 10;
/// Block size of the parent: small, so that it has several blocks in a few KiB.
pub const PARENT_BLOCK_SIZE: u64 = 4096;

/// Bytes that differ from one offset to the next, so that a misplaced read shows.
pub fn pattern(offset: u64, len: u64, seed: u8) -> Vec<u8> {
    (offset..offset + len)
        .map(|i| (i % 251) as u8 ^ seed)
        .collect()
}

/// Writes the parent of chained inputs to `path` (a new file): a dynamic disk
/// with data in blocks 0, 2, 3 and 5 and unique id [`PARENT_ID`]. Returns what
/// it reads as.
pub fn write_parent(path: &Path) -> vdisk::Result<Vec<u8>> {
    let opts = CreateOptions {
        image_type: ImageType::Dynamic,
        block_size: Some(PARENT_BLOCK_SIZE),
        ..CreateOptions::default()
    };
    vdisk::create(path, PARENT_SIZE, &opts, false)?;
    let mut content = vec![0u8; PARENT_SIZE as usize];
    let mut disk = vdisk::open(path, OpenOptions { writable: true })?;
    for (offset, len) in [
        (0, 3000),
        (2 * PARENT_BLOCK_SIZE + 100, 4000),
        (5 * PARENT_BLOCK_SIZE, 4096),
    ] {
        let data = pattern(offset, len, 0x5a);
        disk.write_at(&data, offset)?;
        content[offset as usize..(offset + len) as usize].copy_from_slice(&data);
    }
    disk.flush()?;
    drop(disk);
    let mut b = std::fs::read(path).map_err(|e| vdisk::Error::io(path, "read", e))?;
    let end = b.len() - FOOTER_SIZE;
    for at in [0, end] {
        let Some(mut f) = Footer::decode(&b[at..at + FOOTER_SIZE]) else {
            continue;
        };
        f.unique_id = PARENT_ID;
        b[at..at + FOOTER_SIZE].copy_from_slice(&f.encode());
    }
    std::fs::write(path, &b).map_err(|e| vdisk::Error::io(path, "write", e))?;
    Ok(content)
}
