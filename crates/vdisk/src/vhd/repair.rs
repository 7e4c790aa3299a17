//! `img check --repair` for VHD: fixes what can be fixed without guessing at data.
//!
//! - a damaged footer at the end of a dynamic disk is restored from its copy at
//!   offset 0, and a damaged or disagreeing copy from the footer;
//! - bytes after the last block that belong to nothing are cut off;
//! - BAT entries whose block lies past the end of the file are dropped (the block
//!   reads as zeros afterwards: its data was never there).
//!
//! Each change is made durable before the next, in an order where a crash in
//! between leaves an image at least as readable as before.

use super::bat;
use super::footer::{DiskType, Footer, FOOTER_SIZE};
use super::header::HEADER_SIZE;
use crate::io::{file_len, read_exact_at, sync_data, write_all_at};
use crate::{Error, Result};
use std::fs::File;
use std::path::Path;

fn read_footer_at(file: &File, path: &Path, offset: u64) -> Result<Option<Footer>> {
    let mut b = [0u8; FOOTER_SIZE];
    read_exact_at(file, path, &mut b, offset, "footer")?;
    Ok(Footer::decode(&b).filter(|f| f.is_valid() && f.problems().is_empty()))
}

/// Repairs the VHD at `path` (opened read-write as `file`). Returns what was
/// done, one sentence each; empty when there was nothing this can repair.
pub fn repair_file(file: &File, path: &Path) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let len = file_len(file, path)?;
    if len < 2 * FOOTER_SIZE as u64 {
        return Ok(done);
    }
    let end = read_footer_at(file, path, len - FOOTER_SIZE as u64)?;
    let copy = read_footer_at(file, path, 0)?;
    // Only dynamic and differencing disks have a copy to repair from or to.
    let footer = match (&end, &copy) {
        (Some(e), _) if e.kind() != Some(DiskType::Fixed) => e.clone(),
        (None, Some(c)) if c.kind() != Some(DiskType::Fixed) => c.clone(),
        _ => return Ok(done),
    };
    let ho = footer.data_offset;
    let header = super::meta::read_header(file, path, &footer, len)?;
    let mut table = super::meta::read_bat(file, path, &header, len)?;
    let table_len = bat::table_size(header.max_table_entries);
    let span = header.bitmap_size() + u64::from(header.block_size);

    // 1. Blocks past the end of the file. Where the footer at the end is damaged,
    //    the file may have been cut short, so any block reaching the last 512
    //    bytes counts as past the end.
    let data_end = len - FOOTER_SIZE as u64;
    let mut dropped = Vec::new();
    let lost: Vec<(u64, u64)> = table
        .allocated()
        .filter(|&(_, off)| off + span > data_end)
        .collect();
    for (index, off) in lost {
        if end.is_some() || off + span > len {
            if let Some(s) = usize::try_from(index)
                .ok()
                .and_then(|i| table.set(i, bat::UNUSED))
            {
                dropped.push((index, off, s));
            }
        }
    }
    if !dropped.is_empty() {
        let sectors: std::collections::BTreeSet<usize> = dropped.iter().map(|d| d.2).collect();
        super::meta::write_bat_sectors(file, path, &table, header.table_offset, sectors)?;
        sync_data(file, path)?;
        for (index, off, _) in &dropped {
            done.push(format!(
                "dropped BAT entry {index}: its block at offset {off} lies past the end of the file; that range now reads as zeros"
            ));
        }
    }

    // 2. The footer at the end: right after the last block (or the metadata).
    let mut footer_pos = (header.table_offset + table_len)
        .max(ho + HEADER_SIZE as u64)
        .max(FOOTER_SIZE as u64);
    for (_, off) in table.allocated() {
        footer_pos = footer_pos.max(off + span);
    }
    footer_pos = footer_pos.div_ceil(512) * 512;
    let bytes = footer.encode();
    let at_pos = if footer_pos + FOOTER_SIZE as u64 <= len {
        read_footer_at(file, path, footer_pos)?
    } else {
        None
    };
    if end.is_none() || footer_pos + (FOOTER_SIZE as u64) < len {
        if at_pos.as_ref().map(Footer::encode) != Some(bytes) {
            write_all_at(file, path, &bytes, footer_pos)?;
            sync_data(file, path)?;
            done.push(format!(
                "restored the footer at offset {footer_pos} from {}",
                if end.is_some() {
                    "the footer"
                } else {
                    "the copy at offset 0"
                }
            ));
        }
        let new_len = footer_pos + FOOTER_SIZE as u64;
        if new_len < len {
            file.set_len(new_len)
                .map_err(|e| Error::io(path, "truncate", e))?;
            sync_data(file, path)?;
            done.push(format!(
                "cut off {} bytes after the footer that belonged to nothing",
                len - new_len
            ));
        }
    }

    // 3. The copy at offset 0, from the footer now at the end.
    if copy.as_ref().map(Footer::encode) != Some(bytes) {
        write_all_at(file, path, &bytes, 0)?;
        sync_data(file, path)?;
        done.push("restored the footer copy at offset 0 from the footer".into());
    }
    Ok(done)
}
