//! The file under the image's structures: positional reads that see a log
//! replayed in memory, and the I/O of the header section and the log (reading
//! the headers and region tables, finding and applying a replay, writing a
//! header).

use super::header::{
    Header, RegionTable, HEADER_OFFSETS, HEADER_SECTION, HEADER_SIZE, METADATA_REGION,
    REGION_OFFSETS, REGION_TABLE_SIZE,
};
use super::{corrupt, log, MAX_LOG, MAX_LOG_GROWTH};
use crate::io::{read_exact_at, sync_data, write_all_at};
use crate::{Error, Result};
use std::fs::File;
use std::path::{Path, PathBuf};

/// The file as the image's structures see it: with the writes of a log
/// replayed in memory for a read-only open.
pub(super) struct Store {
    pub(super) file: File,
    pub(super) path: PathBuf,
    /// Writes replayed in memory, in order.
    pub(super) patches: Vec<log::Write>,
    /// The file's length, and the length the replayed log gives it.
    pub(super) real_len: u64,
    pub(super) len: u64,
}

impl Store {
    pub(super) fn read(
        &self,
        buf: &mut [u8],
        offset: u64,
        what: impl std::fmt::Display,
    ) -> Result<()> {
        if self.patches.is_empty() && self.len == self.real_len {
            return read_exact_at(&self.file, &self.path, buf, offset, what);
        }
        let len = buf.len() as u64;
        if offset.checked_add(len).is_none_or(|e| e > self.len) {
            return Err(Error::corrupt(
                &self.path,
                format!("{what} at offset {offset} ({len} bytes) extends past the end of the file"),
            ));
        }
        let real = self.real_len.saturating_sub(offset).min(len) as usize;
        let (head, rest) = buf.split_at_mut(real);
        read_exact_at(&self.file, &self.path, head, offset, &what)?;
        rest.fill(0);
        for w in &self.patches {
            let (s, e) = (w.offset.max(offset), (w.offset + w.len).min(offset + len));
            if s >= e {
                continue;
            }
            let dst = &mut buf[(s - offset) as usize..(e - offset) as usize];
            match &w.data {
                Some(d) => {
                    dst.copy_from_slice(&d[(s - w.offset) as usize..(e - w.offset) as usize])
                }
                None => dst.fill(0),
            }
        }
        Ok(())
    }
}

pub(super) fn read_headers(
    file: &File,
    path: &Path,
    len: u64,
) -> Result<[std::result::Result<Header, String>; 2]> {
    let mut out = [Err(String::new()), Err(String::new())];
    for (i, off) in HEADER_OFFSETS.iter().enumerate() {
        let mut b = vec![0u8; HEADER_SIZE];
        read_exact_at(file, path, &mut b, *off, format_args!("header {}", i + 1))?;
        out[i] = Header::decode(&b).and_then(|h| h.validate(len).map(|()| h));
    }
    Ok(out)
}

pub(super) fn read_regions(store: &Store) -> Result<RegionTable> {
    let mut why = Vec::new();
    for (i, off) in REGION_OFFSETS.iter().enumerate() {
        let mut b = vec![0u8; REGION_TABLE_SIZE];
        store.read(&mut b, *off, format_args!("region table {}", i + 1))?;
        match RegionTable::decode(&b).and_then(|t| t.validate(store.len).map(|()| t)) {
            Ok(t) => return Ok(t),
            Err(e) => why.push(format!("region table {}: {e}", i + 1)),
        }
    }
    let text = why.join("; ");
    if text.contains("unknown required region") {
        return Err(Error::unsupported(&store.path, text));
    }
    Err(corrupt(&store.path, text))
}

/// The metadata region that `regions` places: its file offset and its bytes.
pub(super) fn read_metadata_region(store: &Store, regions: &RegionTable) -> Result<(u64, Vec<u8>)> {
    let meta = regions
        .find(&METADATA_REGION)
        .ok_or_else(|| corrupt(&store.path, "region table: no metadata region"))?;
    // Its length was checked against the most the open reads.
    let mut region = vec![0u8; meta.length as usize];
    store.read(&mut region, meta.offset, "metadata region")?;
    Ok((meta.offset, region))
}

/// Reads the log and finds what replaying it does, checked against the file.
pub(super) fn read_log(store: &Store, h: &Header) -> Result<Option<log::Replay>> {
    let path = &store.path;
    let len = u64::from(h.log_length);
    if len > MAX_LOG {
        return Err(Error::unsupported(
            path,
            format!("log of {len} bytes is larger than the {MAX_LOG} supported"),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    read_exact_at(&store.file, path, &mut buf, h.log_offset, "log")?;
    let Some(seq) = log::active_sequence(&buf, &h.log_guid).map_err(|e| corrupt(path, e))? else {
        return Ok(None);
    };
    let r = log::replay(&seq);
    if r.flushed_file_offset > store.real_len {
        return Err(corrupt(
            path,
            format!(
                "log: entry {} says the file was at least {} bytes long, but it has {}: data it needs was lost",
                r.sequence, r.flushed_file_offset, store.real_len
            ),
        ));
    }
    let limit = store.real_len.max(r.last_file_offset);
    if r.last_file_offset > store.real_len.saturating_add(MAX_LOG_GROWTH) {
        return Err(corrupt(
            path,
            format!(
                "log: entry {} extends the file to {} bytes, far past its {}",
                r.sequence, r.last_file_offset, store.real_len
            ),
        ));
    }
    let log_end = h.log_offset + len;
    for w in &r.writes {
        let end = w.offset.checked_add(w.len);
        let bad = if w.offset < HEADER_SECTION {
            Some("the header section")
        } else if end.is_none_or(|e| e > limit) {
            Some("past the end of the file")
        } else if w.offset < log_end && h.log_offset < end.unwrap_or(u64::MAX) {
            Some("the log itself")
        } else {
            None
        };
        if let Some(what) = bad {
            return Err(corrupt(
                path,
                format!(
                    "log: entry {} writes {} bytes at {} into {what}",
                    r.sequence, w.len, w.offset
                ),
            ));
        }
    }
    Ok(Some(r))
}

/// Writes a replay into the file and makes it durable.
pub(super) fn apply_replay(store: &Store, r: &log::Replay) -> Result<()> {
    let path = &store.path;
    if r.last_file_offset > store.real_len {
        store
            .file
            .set_len(r.last_file_offset)
            .map_err(|e| Error::io(path, "resize", e))?;
    }
    let zeros = vec![0u8; 1 << 20];
    for w in &r.writes {
        match &w.data {
            Some(d) => write_all_at(&store.file, path, d, w.offset)?,
            None => {
                let mut pos = 0;
                while pos < w.len {
                    let n = (w.len - pos).min(zeros.len() as u64);
                    write_all_at(&store.file, path, &zeros[..n as usize], w.offset + pos)?;
                    pos += n;
                }
            }
        }
    }
    sync_data(&store.file, path)
}

/// Writes `h`, with the next sequence number, over the header that is not
/// current, and syncs it ([MS-VHDX] 2.2.2.1). Returns the new current slot.
pub(super) fn write_header(store: &Store, current: usize, h: &mut Header) -> Result<usize> {
    h.sequence += 1;
    let other = 1 - current.min(1);
    write_all_at(&store.file, &store.path, &h.encode(), HEADER_OFFSETS[other])?;
    sync_data(&store.file, &store.path)?;
    Ok(other)
}
