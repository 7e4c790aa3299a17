//! Runs every read-only operation of `vdisk` on one image file and collects what
//! came out, so that a hostile image can be thrown at the whole read path at once.
//!
//! Shared by the malformed-image tests and the fuzz target (which includes this
//! file by path), so that both exercise exactly the same operations.

use std::path::Path;
use vdisk::ops::check::CheckReport;
use vdisk::vhd::footer::{self, Footer, FOOTER_SIZE};
use vdisk::vhd::header::{DynamicHeader, HEADER_SIZE};
use vdisk::{Disk, Extent, ExtentKind, ImageInfo, OpenOptions};

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
/// and the dynamic header, wherever they still have their cookies, so that random
/// damage gets past the checksums into the fields behind them.
pub fn reseal(b: &mut [u8]) {
    let len = b.len();
    if len < FOOTER_SIZE {
        return;
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
    let Some(ho) = data_offset.and_then(|o| usize::try_from(o).ok()) else {
        return;
    };
    if ho.checked_add(HEADER_SIZE).is_some_and(|end| end <= len) {
        if let Some(h) = DynamicHeader::decode(&b[ho..ho + HEADER_SIZE]) {
            b[ho..ho + HEADER_SIZE].copy_from_slice(&h.encode());
        }
    }
}
