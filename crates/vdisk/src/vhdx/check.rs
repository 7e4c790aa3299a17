//! `img check` for VHDX: each header, region table and metadata item, the
//! log, and every BAT entry (state, place in the file, overlaps).

use super::bat;
use super::header::{
    Header, RegionTable, HEADER_OFFSETS, HEADER_SECTION, HEADER_SIZE, REGION_OFFSETS,
    REGION_TABLE_SIZE,
};
use super::VhdxDisk;
use crate::io::{file_len, read_exact_at};
use crate::ops::check::CheckReport;
use crate::Result;
use std::fs::File;
use std::path::Path;

/// Problems of one kind reported at most; the rest are counted.
const MAX_REPORTED: usize = 20;

/// Checks the VHDX image in `file`. `Err` only when the file cannot be read.
pub fn check_file(file: &File, path: &Path) -> Result<CheckReport> {
    let mut r = CheckReport::new(path, "vhdx");
    let len = file_len(file, path)?;
    if len < HEADER_SECTION {
        r.problem(
            "file",
            format!("{len} bytes, shorter than the 1 MiB header section"),
        );
        return Ok(r);
    }
    let mut sig = [0u8; 8];
    read_exact_at(file, path, &mut sig, 0, "file type identifier")?;
    if &sig != super::header::FILE_SIGNATURE {
        r.problem(
            "file type identifier",
            "bad signature (expected \"vhdxfile\")",
        );
    }
    let mut headers = Vec::new();
    for (i, off) in HEADER_OFFSETS.iter().enumerate() {
        let mut b = vec![0u8; HEADER_SIZE];
        read_exact_at(file, path, &mut b, *off, format_args!("header {}", i + 1))?;
        match Header::decode(&b).and_then(|h| h.validate(len).map(|()| h)) {
            Ok(h) => headers.push(h),
            Err(e) => r.problem(&format!("header {}", i + 1), e),
        }
    }
    if headers.len() == 2 && headers[0].sequence == headers[1].sequence && headers[0] != headers[1]
    {
        r.problem(
            "headers",
            "both headers have the same sequence number but differ",
        );
    }
    if let Some(h) = headers.iter().max_by_key(|h| h.sequence) {
        if h.log_guid != super::fields::ZERO_GUID {
            r.note("the log is not clean (LogGuid is set): it is replayed when the image is opened for writing");
        }
    }
    let mut tables = Vec::new();
    for (i, off) in REGION_OFFSETS.iter().enumerate() {
        let mut b = vec![0u8; REGION_TABLE_SIZE];
        read_exact_at(
            file,
            path,
            &mut b,
            *off,
            format_args!("region table {}", i + 1),
        )?;
        match RegionTable::decode(&b).and_then(|t| t.validate(len).map(|()| t)) {
            Ok(t) => tables.push(t),
            Err(e) => r.problem(&format!("region table {}", i + 1), e),
        }
    }
    if tables.len() == 2 && tables[0] != tables[1] {
        r.problem("region table 2", "differs from region table 1");
    }
    let handle = match file.try_clone() {
        Ok(f) => f,
        Err(e) => return Err(crate::Error::io(path, "dup", e)),
    };
    let disk = match VhdxDisk::load(handle, path, false, false) {
        Ok(d) => d,
        Err(e) => {
            let text = e.to_string();
            let shown = format!("{}: ", path.display());
            let msg = text.strip_prefix(&shown).unwrap_or(&text).to_string();
            let structure = if msg.starts_with("metadata") {
                "metadata"
            } else if msg.starts_with("BAT") {
                "BAT"
            } else if msg.starts_with("log") {
                "log"
            } else {
                "image"
            };
            r.problem(structure, msg);
            return Ok(r);
        }
    };
    r.virtual_size = Some(disk.meta.virtual_size);
    if let Some(loc) = &disk.meta.parent {
        let names: Vec<String> = loc
            .entries
            .iter()
            .filter(|(k, _)| k.ends_with("path"))
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        r.note(format!(
            "a differencing disk: its parent is not checked here (locator: {})",
            names.join(", ")
        ));
    }
    check_bat(&disk, &mut r);
    Ok(r)
}

/// Every BAT entry: a valid state, a place inside the file that overlaps
/// neither the header section, the log, the BAT, the metadata region nor
/// another block.
fn check_bat(d: &VhdxDisk, r: &mut CheckReport) {
    let g = d.geo;
    let file_len = d.store.len;
    let mut fixed: Vec<(u64, u64, String)> = vec![(0, HEADER_SECTION, "header section".into())];
    fixed.push((
        d.header.log_offset,
        d.header.log_offset + u64::from(d.header.log_length),
        "log".into(),
    ));
    let mut used: Vec<(u64, u64, u64)> = Vec::new();
    let mut problems = 0usize;
    let mut report = |r: &mut CheckReport, msg: String| {
        problems += 1;
        if problems <= MAX_REPORTED {
            r.problem("BAT", msg);
        }
    };
    let mut allocated = 0u64;
    let regions: Vec<(u64, u64, &str)> = {
        let mut v = vec![(d.bat_offset, d.bat_offset + g.entries * 8, "BAT region")];
        if let Ok(t) = read_table(d) {
            if let Some(m) = t.find(&super::header::METADATA_REGION) {
                v.push((m.offset, m.offset + u64::from(m.length), "metadata region"));
            }
        }
        v
    };
    for (s, e, n) in regions {
        fixed.push((s, e, n.to_string()));
    }
    for (i, &e) in d.bat.iter().enumerate() {
        let i = i as u64;
        let st = bat::state(e);
        let is_bitmap = g.is_bitmap_index(i);
        let (valid, size, what) = if is_bitmap {
            (
                st == 0 || st == bat::SB_PRESENT,
                bat::BITMAP_BLOCK,
                "sector bitmap block",
            )
        } else {
            let ok =
                matches!(st, 0..=3 | 5 | 6) || (st == bat::PARTIALLY_PRESENT && d.meta.has_parent);
            (ok, g.block_size, "payload block")
        };
        if !valid {
            report(r, format!("entry {i} ({what}): invalid state {st}"));
            continue;
        }
        if !is_bitmap && st == bat::UNMAPPED_V095 {
            r.note(format!(
                "BAT entry {i}: state 5, the unmapped state of version 0.95 of the format"
            ));
        }
        let present = if is_bitmap {
            st == bat::SB_PRESENT
        } else {
            st >= bat::FULLY_PRESENT
        };
        if !present {
            if bat::offset(e) != 0 && !d.meta.has_parent && st == bat::NOT_PRESENT {
                r.note(format!(
                    "BAT entry {i}: a block that is not present keeps a file offset"
                ));
            }
            continue;
        }
        if !is_bitmap {
            allocated += 1;
        }
        let off = bat::offset(e);
        let end = off + size;
        if end > file_len {
            report(r, format!("entry {i} ({what}): {size} bytes at offset {off} extend past the end of the file ({file_len} bytes)"));
            continue;
        }
        if let Some((_, _, n)) = fixed.iter().find(|(s, e, _)| off < *e && *s < end) {
            report(
                r,
                format!("entry {i} ({what}) at offset {off} overlaps the {n}"),
            );
            continue;
        }
        used.push((off, end, i));
    }
    used.sort_unstable();
    for w in used.windows(2) {
        if w[1].0 < w[0].1 {
            report(
                r,
                format!(
                    "entries {} and {} point at overlapping blocks (offsets {} and {})",
                    w[0].2, w[1].2, w[0].0, w[1].0
                ),
            );
        }
    }
    if problems > MAX_REPORTED {
        r.problem(
            "BAT",
            format!("{} more problems not listed", problems - MAX_REPORTED),
        );
    }
    r.allocated_blocks = Some(allocated);
}

fn read_table(d: &VhdxDisk) -> Result<RegionTable> {
    let mut b = vec![0u8; REGION_TABLE_SIZE];
    d.store.read(&mut b, REGION_OFFSETS[0], "region table 1")?;
    RegionTable::decode(&b).map_err(|e| crate::Error::corrupt(&d.store.path, e))
}
