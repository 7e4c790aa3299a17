//! Converting a disk into a new image of any format: sparse and streaming.
//!
//! Only the ranges the source maps as data are read; in them, zero runs are
//! skipped (the new image reads them as zeros already), so a dynamic output
//! allocates only blocks that hold data. The output is written under a temporary
//! name and renamed into place once complete and durable.

use crate::format::{create_in, refuse_existing, CreateOptions};
use crate::io::{is_zero, AtomicFile};
use crate::{Disk, Error, ExtentKind, Result};
use std::path::Path;

/// Bytes read from the source at a time.
const CHUNK: u64 = 4 << 20;
/// Granularity of zero detection (the host filesystem's block size).
const GRANULE: usize = 4096;

/// Copies every byte of `src` that is not zero into `dst` (which must read as
/// zeros everywhere, as a new image does). `progress` gets (bytes done, total).
pub fn copy_data(
    src: &dyn Disk,
    dst: &mut dyn Disk,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let size = src.virtual_size();
    let mut buf = vec![0u8; CHUNK as usize];
    let mut pos = 0;
    while pos < size {
        // Map a bounded window at a time so that a huge, fragmented disk never
        // needs its whole map in memory.
        let window = (64 * CHUNK).min(size - pos);
        for e in src.map(pos, window)? {
            if e.kind != ExtentKind::Data {
                progress(e.end(), size);
                continue;
            }
            let mut off = e.offset;
            while off < e.end() {
                // Keep reads aligned to CHUNK so that writes cover whole blocks.
                let n = (CHUNK - off % CHUNK).min(e.end() - off);
                let b = &mut buf[..n as usize];
                src.read_at(b, off)?;
                write_nonzero(dst, b, off)?;
                off += n;
                progress(off, size);
            }
        }
        pos += window;
    }
    Ok(())
}

/// Writes the runs of `buf` that are not zero, at `offset`.
fn write_nonzero(dst: &mut dyn Disk, buf: &[u8], offset: u64) -> Result<()> {
    let mut run_start: Option<usize> = None;
    let mut i = 0;
    while i < buf.len() {
        let end = (i + GRANULE).min(buf.len());
        let zero = is_zero(&buf[i..end]);
        match (zero, run_start) {
            (false, None) => run_start = Some(i),
            (true, Some(s)) => {
                dst.write_at(&buf[s..i], offset + s as u64)?;
                run_start = None;
            }
            _ => {}
        }
        i = end;
    }
    if let Some(s) = run_start {
        dst.write_at(&buf[s..], offset + s as u64)?;
    }
    Ok(())
}

/// Converts `src` into a new image at `dest`. Existing files are replaced only
/// with `overwrite`. Returns notes on any size adjustment.
pub fn convert(
    src: &dyn Disk,
    dest: &Path,
    opts: &CreateOptions,
    overwrite: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<String>> {
    refuse_existing(dest, overwrite)?;
    if let (Ok(a), Ok(b)) = (
        std::fs::canonicalize(src.path()),
        std::fs::canonicalize(dest),
    ) {
        if a == b {
            return Err(Error::InvalidArgument(format!(
                "{}: the output is the input; convert to another file",
                dest.display()
            )));
        }
    }
    let (tmp, file) = AtomicFile::create(dest)?;
    let handle = file
        .try_clone()
        .map_err(|e| Error::io(tmp.temp_path(), "dup", e))?;
    let (mut dst, notes) = create_in(handle, dest, src.virtual_size(), opts)?;
    copy_data(src, dst.as_mut(), progress)?;
    dst.flush()?;
    drop(dst);
    tmp.commit(&file)?;
    Ok(notes)
}
