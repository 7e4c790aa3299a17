//! `img check` for VHD: reads the structures leniently and lists every problem,
//! where opening stops at the first.
//!
//! The rules follow the specification and what Xen's `vhd-util check` verifies:
//! footer and copy valid and identical; header cookie, checksum, version, table
//! offset and block size; parent fields empty unless differencing; a BAT large
//! enough for the disk and inside the file; no block outside the file or
//! overlapping the metadata or another block; a file size that fits the type.

use super::bat::{self, Bat};
use super::footer::{DiskType, Footer, FOOTER_SIZE, LEGACY_FOOTER_SIZE};
use super::header::{DynamicHeader, HEADER_SIZE};
use super::{size, MAX_SIZE};
use crate::io::{file_len, read_exact_at};
use crate::ops::check::CheckReport;
use crate::Result;
use std::fs::File;
use std::path::Path;

/// Most problems of one kind listed one by one; the rest are counted.
const LIST_LIMIT: usize = 50;

fn read_at_most(
    file: &File,
    path: &Path,
    len: u64,
    offset: u64,
    n: usize,
) -> Result<Option<Vec<u8>>> {
    if offset.checked_add(n as u64).is_none_or(|end| end > len) {
        return Ok(None);
    }
    let mut b = vec![0u8; n];
    read_exact_at(file, path, &mut b, offset, "structure")?;
    Ok(Some(b))
}

/// Checks the VHD at `path`. An `Err` means the file could not be read at all.
pub fn check_file(file: &File, path: &Path) -> Result<CheckReport> {
    let mut r = CheckReport::new(path, "vhd");
    let len = file_len(file, path)?;
    if len < LEGACY_FOOTER_SIZE as u64 {
        r.problem(
            "file",
            format!("{len} bytes is too small to hold a VHD footer"),
        );
        return Ok(r);
    }
    let end = read_at_most(
        file,
        path,
        len,
        len.saturating_sub(FOOTER_SIZE as u64),
        FOOTER_SIZE,
    )?
    .and_then(|b| Footer::decode(&b));
    let legacy = read_at_most(
        file,
        path,
        len,
        len - LEGACY_FOOTER_SIZE as u64,
        LEGACY_FOOTER_SIZE,
    )?
    .and_then(|b| Footer::decode(&b));
    let copy = read_at_most(file, path, len, 0, FOOTER_SIZE)?.and_then(|b| Footer::decode(&b));
    let good = |f: &Option<Footer>| {
        f.as_ref()
            .filter(|f| f.is_valid() && f.problems().is_empty())
            .cloned()
    };

    let (footer, footer_len) = if let Some(f) = good(&end) {
        (f, FOOTER_SIZE as u64)
    } else if let Some(f) = good(&legacy).filter(|f| f.kind() == Some(DiskType::Fixed)) {
        r.note("footer: a 511-byte legacy footer (very old Virtual PC)");
        (f, LEGACY_FOOTER_SIZE as u64)
    } else {
        let why = match &end {
            Some(f) if &f.cookie == super::footer::COOKIE => f.problems().join("; "),
            _ => "missing (no \"conectix\" cookie in the last 512 bytes)".into(),
        };
        r.problem("footer", format!("footer at the end of the file: {why}"));
        match good(&copy).filter(|f| f.kind() != Some(DiskType::Fixed)) {
            Some(f) => {
                r.note("the footer copy at offset 0 is intact; the checks below use it");
                (f, FOOTER_SIZE as u64)
            }
            None => {
                if let Some(c) = copy.as_ref().filter(|c| &c.cookie == super::footer::COOKIE) {
                    r.problem(
                        "footer copy",
                        format!("footer copy at offset 0: {}", c.problems().join("; ")),
                    );
                }
                return Ok(r);
            }
        }
    };

    let (vsize, source) = size::virtual_size(&footer);
    r.virtual_size = Some(vsize);
    if vsize > MAX_SIZE {
        r.problem(
            "footer",
            format!("disk size {vsize} exceeds the VHD maximum of {MAX_SIZE} bytes"),
        );
    }
    if footer.current_size % 512 != 0 {
        r.problem(
            "footer",
            format!(
                "current size {} is not a whole number of sectors",
                footer.current_size
            ),
        );
    }
    if source.field == "current-size"
        && !footer.geometry.is_max()
        && footer.geometry.size() > footer.current_size
    {
        r.note(format!(
            "footer: the CHS geometry addresses {} bytes, more than the current size {}",
            footer.geometry.size(),
            footer.current_size
        ));
    }
    if footer.features & super::footer::FEATURE_RESERVED == 0 {
        r.note("footer: the reserved feature bit 0x2 is clear (the specification says it is always set)");
    }

    match footer.kind() {
        Some(DiskType::Fixed) => {
            let data_len = len - footer_len;
            if data_len < vsize {
                r.problem(
                    "file size",
                    format!(
                        "a fixed disk of {vsize} bytes needs {} bytes of file, the file has {len}",
                        vsize.saturating_add(footer_len)
                    ),
                );
            } else if data_len > vsize.max(footer.current_size) {
                r.problem(
                    "file size",
                    format!(
                        "{} bytes between the end of the disk data ({vsize}) and the footer belong to nothing",
                        data_len - vsize.max(footer.current_size)
                    ),
                );
            }
        }
        Some(kind) => check_dynamic(
            file,
            path,
            len,
            &footer,
            end.as_ref(),
            copy.as_ref(),
            kind,
            vsize,
            &mut r,
        )?,
        None => {} // already reported by Footer::problems
    }
    Ok(r)
}

/// The parent fields of a differencing disk: an id and a name, locators inside
/// the file, one of each platform code, and locator texts naming the parent the
/// header names. (Whether the parent exists and matches is for opening to say.)
fn check_parent_links(
    file: &File,
    path: &Path,
    len: u64,
    h: &DynamicHeader,
    r: &mut CheckReport,
) -> Result<()> {
    use super::locator::{decode_parent_name, decode_utf16le, W2KU, W2RU};
    if h.parent_unique_id == [0; 16] {
        r.problem(
            "dynamic header",
            "differencing disk without a parent unique id",
        );
    }
    let name = decode_parent_name(&h.parent_unicode_name).unwrap_or_default();
    if name.is_empty() {
        r.problem(
            "dynamic header",
            "differencing disk without a parent name (or not UTF-16)",
        );
    }
    let mut seen = Vec::new();
    for (i, l) in h.locators.iter().enumerate().filter(|(_, l)| l.is_used()) {
        let code = String::from_utf8_lossy(&l.platform_code.to_be_bytes()).into_owned();
        if seen.contains(&l.platform_code) {
            r.problem(
                "parent locator",
                format!("locator {i}: a second {code:?} locator"),
            );
        }
        seen.push(l.platform_code);
        let n = u64::from(l.platform_data_length);
        let off = l.platform_data_offset;
        if n > 64 << 10 || off.checked_add(n).is_none_or(|e| e > len) {
            r.problem(
                "parent locator",
                format!("locator {i} ({code}): {n} bytes at offset {off} lie outside the file ({len} bytes)"),
            );
            continue;
        }
        if l.platform_code != W2KU && l.platform_code != W2RU {
            continue;
        }
        let Some(data) = read_at_most(file, path, len, off, n as usize)? else {
            continue;
        };
        let Some(text) = decode_utf16le(&data) else {
            r.problem(
                "parent locator",
                format!("locator {i} ({code}): not UTF-16 text"),
            );
            continue;
        };
        let leaf = text.rsplit(['\\', '/']).next().unwrap_or("");
        if !name.is_empty() && leaf != name {
            r.problem(
                "parent locator",
                format!(
                    "locator {i} ({code}) names {leaf:?}, the header names the parent {name:?}"
                ),
            );
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn check_dynamic(
    file: &File,
    path: &Path,
    len: u64,
    footer: &Footer,
    end: Option<&Footer>,
    copy: Option<&Footer>,
    kind: DiskType,
    vsize: u64,
    r: &mut CheckReport,
) -> Result<()> {
    match (end, copy) {
        (Some(e), Some(c)) if e.is_valid() && c.is_valid() => {
            if e.encode() != c.encode() {
                r.problem(
                    "footer copy",
                    "the footer copy at offset 0 differs from the footer at the end of the file",
                );
            }
        }
        (_, Some(c)) if c.is_valid() => {}
        (_, c) => {
            let why = match c {
                Some(c) if &c.cookie == super::footer::COOKIE => c.problems().join("; "),
                Some(c) => format!(
                    "{} (a dynamic disk starts with a copy of its footer)",
                    c.problems().join("; ")
                ),
                None => "missing (a dynamic disk starts with a copy of its footer)".into(),
            };
            r.problem("footer copy", format!("footer copy at offset 0: {why}"));
        }
    }
    if len % 512 != 0 {
        r.problem(
            "file size",
            format!("{len} bytes is not a whole number of sectors"),
        );
    }

    let ho = footer.data_offset;
    let Some(hb) = read_at_most(file, path, len, ho, HEADER_SIZE)? else {
        r.problem(
            "footer",
            format!(
                "data offset {ho} puts the dynamic header past the end of the file ({len} bytes)"
            ),
        );
        return Ok(());
    };
    let Some(h) = DynamicHeader::decode(&hb) else {
        return Ok(());
    };
    let hp = h.problems();
    if &h.cookie != super::header::COOKIE {
        r.problem(
            "dynamic header",
            format!("at offset {ho}: {}", hp.join("; ")),
        );
        return Ok(());
    }
    for p in hp {
        r.problem("dynamic header", p);
    }
    if ho < FOOTER_SIZE as u64 {
        r.problem(
            "dynamic header",
            format!("offset {ho} overlaps the footer copy"),
        );
    }
    if h.data_offset != u64::MAX {
        r.note(format!(
            "dynamic header: data offset is 0x{:x}; Microsoft's tools expect all ones",
            h.data_offset
        ));
    }
    if kind == DiskType::Dynamic && h.has_parent_fields() {
        r.problem(
            "dynamic header",
            "parent fields (id, name or locators) are set on a disk that is not differencing",
        );
    }
    if kind == DiskType::Differencing {
        check_parent_links(file, path, len, &h, r)?;
        if r.clean {
            // The links are well formed: they must also lead to the parent,
            // and its chain must open, or the disk cannot be read.
            let mut opening = super::chain::Opening::default();
            if let Ok(canon) = std::fs::canonicalize(path) {
                opening.files.push(canon);
            }
            match super::chain::open_parent(file, path, &h, &mut opening) {
                Ok(parent) => {
                    let below = opening.files.len().saturating_sub(1);
                    r.note(format!(
                        "parent: {} (unique id {}); {below} disk{} below this one, all found",
                        parent.path.display(),
                        parent.footer().unique_id_text(),
                        if below == 1 { "" } else { "s" }
                    ))
                }
                Err(e) => r.problem("parent", super::chain::describe(&e)),
            }
        }
    }
    let block_size = u64::from(h.block_size);
    if super::header::block_size_problem(block_size).is_some() {
        return Ok(()); // reported above; nothing below can be computed
    }
    let entries = h.max_table_entries;
    let needed = vsize.div_ceil(block_size);
    if u64::from(entries) < needed {
        r.problem(
            "dynamic header",
            format!("max table entries is {entries}, too few for {vsize} bytes in {block_size}-byte blocks (needs {needed})"),
        );
    }
    if entries > bat::MAX_ENTRIES {
        r.problem(
            "dynamic header",
            format!(
                "max table entries is {entries}, more than the {} supported",
                bat::MAX_ENTRIES
            ),
        );
        return Ok(());
    }
    let to = h.table_offset;
    let table_len = bat::table_size(entries);
    let Some(tb) = read_at_most(file, path, len, to, table_len as usize)? else {
        r.problem(
            "BAT",
            format!(
                "{table_len} bytes at offset {to} extend past the end of the file ({len} bytes)"
            ),
        );
        return Ok(());
    };
    let Some(table) = Bat::decode(&tb, entries) else {
        return Ok(());
    };

    // Metadata regions that no block may overlap.
    let mut meta: Vec<(u64, u64, String)> = vec![
        (0, FOOTER_SIZE as u64, "the footer copy".into()),
        (ho, ho + HEADER_SIZE as u64, "the dynamic header".into()),
        (to, to + table_len, "the BAT".into()),
    ];
    if to < ho + HEADER_SIZE as u64 && ho < to + table_len {
        r.problem(
            "BAT",
            format!("offset {to} overlaps the dynamic header at {ho}"),
        );
    }
    if to < FOOTER_SIZE as u64 {
        r.problem("BAT", format!("offset {to} overlaps the footer copy"));
    }
    for (i, l) in h.locators.iter().enumerate().filter(|(_, l)| l.is_used()) {
        let start = l.platform_data_offset;
        let size = u64::from(l.platform_data_space).max(u64::from(l.platform_data_length));
        meta.push((
            start,
            start.saturating_add(size),
            format!("parent locator {i}"),
        ));
    }

    let span = h.bitmap_size() + block_size;
    let data_end = len.saturating_sub(FOOTER_SIZE as u64);
    let mut blocks: Vec<(u64, u64)> = Vec::new();
    let (mut outside, mut on_meta, mut past_disk) = (0usize, 0usize, 0usize);
    for (index, off) in table.allocated() {
        if index >= needed {
            past_disk += 1;
            if past_disk <= LIST_LIMIT {
                r.problem("BAT", format!("entry {index} is allocated but lies past the disk's last block ({needed} blocks)"));
            }
        }
        let block_end = off + span;
        if block_end > data_end {
            outside += 1;
            if outside <= LIST_LIMIT {
                r.problem(
                    "BAT",
                    format!(
                        "entry {index}: block at offset {off} ({span} bytes) runs past the end of the data area ({data_end} bytes, before the footer)"
                    ),
                );
            }
            continue;
        }
        if let Some((_, _, what)) = meta.iter().find(|(s, e, _)| off < *e && *s < block_end) {
            on_meta += 1;
            if on_meta <= LIST_LIMIT {
                r.problem(
                    "BAT",
                    format!("entry {index}: block at offset {off} overlaps {what}"),
                );
            }
            continue;
        }
        blocks.push((off, index));
    }
    for (count, what) in [
        (outside, "past the end of the data area"),
        (on_meta, "on metadata"),
        (past_disk, "past the disk's end"),
    ] {
        if count > LIST_LIMIT {
            r.problem(
                "BAT",
                format!("{} more entries with blocks {what}", count - LIST_LIMIT),
            );
        }
    }
    blocks.sort_unstable();
    let mut overlaps = 0usize;
    for w in blocks.windows(2) {
        let ((a, ai), (b, bi)) = (w[0], w[1]);
        if b < a + span {
            overlaps += 1;
            if overlaps <= LIST_LIMIT {
                r.problem(
                    "BAT",
                    format!("entries {ai} and {bi}: blocks at offsets {a} and {b} overlap"),
                );
            }
        }
    }
    if overlaps > LIST_LIMIT {
        r.problem(
            "BAT",
            format!("{} more overlapping blocks", overlaps - LIST_LIMIT),
        );
    }
    r.allocated_blocks = Some(table.allocated_count());
    Ok(())
}
