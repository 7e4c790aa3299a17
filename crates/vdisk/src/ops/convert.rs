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
use std::sync::mpsc;

/// Bytes read from the source at a time.
const CHUNK: u64 = 2 << 20;
/// Granularity of zero detection (the host filesystem's block size).
const GRANULE: usize = 4096;

/// Virtual bytes mapped, and prefetched, at a time.
const WINDOW: u64 = 64 * CHUNK;
/// Buffers in flight between the reader and the writer.
const DEPTH: usize = 4;

/// A piece of the source, read and scanned, on its way to the writer.
struct Chunk {
    offset: u64,
    buf: Vec<u8>,
    /// Runs of `buf[..len]` that hold something other than zeros.
    runs: Vec<(usize, usize)>,
    /// Progress once this chunk is written.
    done: u64,
}

/// Copies every byte of `src` that is not zero into `dst` (which must read as
/// zeros everywhere, as a new image does). `progress` gets (bytes done, total).
pub fn copy_data(
    src: &dyn Disk,
    dst: &mut dyn Disk,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    copy_data_with(src, dst, progress, &mut |_| {})
}

/// [`copy_data`], calling `written` with the length of every write.
///
/// A reader thread reads and scans for zeros while this thread writes, so that
/// reading and writing (both mostly memory copies in the kernel) overlap.
fn copy_data_with(
    src: &dyn Disk,
    dst: &mut dyn Disk,
    progress: &mut dyn FnMut(u64, u64),
    written: &mut dyn FnMut(u64),
) -> Result<()> {
    let size = src.virtual_size();
    let (tx, rx) = mpsc::sync_channel::<Result<Chunk>>(DEPTH);
    let (recycle_tx, recycle_rx) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            if let Err(e) = read_chunks(src, &tx, &recycle_rx) {
                let _ = tx.send(Err(e));
            }
        });
        for chunk in rx {
            let chunk = chunk?;
            for &(s, e) in &chunk.runs {
                dst.write_at(&chunk.buf[s..e], chunk.offset + s as u64)?;
                written((e - s) as u64);
            }
            progress(chunk.done, size);
            if !chunk.buf.is_empty() {
                // The reader may have finished; then the buffer is simply freed.
                let _ = recycle_tx.send(chunk.buf);
            }
        }
        Ok(())
    })
}

/// The reader side of [`copy_data`]. Stops quietly when the writer has gone.
fn read_chunks(
    src: &dyn Disk,
    tx: &mpsc::SyncSender<Result<Chunk>>,
    recycle: &mpsc::Receiver<Vec<u8>>,
) -> Result<()> {
    let size = src.virtual_size();
    // Map a bounded window at a time so that a huge, fragmented disk never needs
    // its whole map in memory. The window after the one being copied is mapped
    // ahead and its data prefetched, so that storage reads it meanwhile.
    let window_at = |pos: u64| -> Result<Vec<crate::Extent>> {
        let extents = src.map(pos, WINDOW.min(size - pos))?;
        for e in extents.iter().filter(|e| e.kind == ExtentKind::Data) {
            src.prefetch(e.offset, e.length);
        }
        Ok(extents)
    };
    let mut pos = 0;
    let mut next = if size > 0 { window_at(0)? } else { Vec::new() };
    while pos < size {
        let extents = std::mem::take(&mut next);
        pos = (pos + WINDOW).min(size);
        if pos < size {
            next = window_at(pos)?;
        }
        for e in extents {
            if e.kind != ExtentKind::Data {
                let empty = Chunk {
                    offset: e.offset,
                    buf: Vec::new(),
                    runs: Vec::new(),
                    done: e.end(),
                };
                if tx.send(Ok(empty)).is_err() {
                    return Ok(());
                }
                continue;
            }
            let mut off = e.offset;
            while off < e.end() {
                // Keep reads aligned to CHUNK so that writes cover whole blocks.
                let n = (CHUNK - off % CHUNK).min(e.end() - off) as usize;
                let mut buf = match recycle.try_recv() {
                    Ok(b) if b.len() == CHUNK as usize => b,
                    _ => vec![0u8; CHUNK as usize],
                };
                src.read_at(&mut buf[..n], off)?;
                let runs = nonzero_runs(&buf[..n]);
                let chunk = Chunk {
                    offset: off,
                    buf,
                    runs,
                    done: off + n as u64,
                };
                if tx.send(Ok(chunk)).is_err() {
                    return Ok(());
                }
                off += n as u64;
            }
        }
    }
    Ok(())
}

/// The runs of `buf` that are not zero, found a granule at a time.
fn nonzero_runs(buf: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut run_start: Option<usize> = None;
    let mut i = 0;
    while i < buf.len() {
        let end = (i + GRANULE).min(buf.len());
        match (is_zero(&buf[i..end]), run_start) {
            (false, None) => run_start = Some(i),
            (true, Some(s)) => {
                runs.push((s, i));
                run_start = None;
            }
            _ => {}
        }
        i = end;
    }
    if let Some(s) = run_start {
        runs.push((s, buf.len()));
    }
    runs
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
    // The output must be durable before it is renamed into place. Syncing it
    // a slice at a time in the background overlaps the writes to storage with
    // the copy, instead of waiting for all of them at the end.
    crate::io::with_background_sync(&file, tmp.temp_path(), |written| {
        copy_data_with(src, dst.as_mut(), progress, written)
    })?;
    dst.flush()?;
    drop(dst);
    tmp.commit(&file)?;
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_skip_zero_granules() {
        let mut b = vec![0u8; GRANULE * 5 + 100];
        b[GRANULE + 7] = 1;
        b[GRANULE * 2] = 1;
        b[GRANULE * 5 + 99] = 1;
        assert_eq!(
            nonzero_runs(&b),
            vec![(GRANULE, GRANULE * 3), (GRANULE * 5, GRANULE * 5 + 100)]
        );
        assert!(nonzero_runs(&[0u8; 100]).is_empty());
    }
}
