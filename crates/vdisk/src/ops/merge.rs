//! `img merge` for chains of any format: VHD chains take the VHD merge
//! ([`crate::vhd::merge`]); chains with VHDX or qcow2 disks, or disks of
//! several formats, are merged here through the [`Disk`] trait alone.
//!
//! The argument for safety is the VHD merge's: only sectors that the merged
//! disks hold themselves ([`Disk::own_map`]) are written into the target,
//! each with the data the whole chain reads there. The merged disks hide
//! those sectors of the target, so while the merge runs the chain from the
//! child reads exactly as before, and a crash at any point leaves it readable
//! with the same contents (the target's own writes are crash-safe: the VHDX
//! log, qcow2's order of data, tables and refcounts). The merged disks are
//! removed only after the target is flushed; running the merge again
//! completes one that was cut off.

use crate::format::Format;
use crate::vhd::merge::{files_beside, join, refuse_orphans, send_piece, MergeOptions, Merged};
use crate::{Disk, Error, ExtentKind, OpenOptions, Result};
use std::path::{Path, PathBuf};

/// Bytes copied at a time.
const PIECE: u64 = 4 << 20;

/// Pieces read and not yet written, at most.
const DEPTH: usize = 4;

/// How many pieces ahead of the reader storage is asked for.
const AHEAD: usize = 8;

/// Merges the differencing disk `child` into its parent, or into
/// `options.into` (an ancestor in its chain), then removes `child` and any
/// disk between. Refused when other differencing disks in the chain's folders
/// depend on a disk that changes, unless `options.allow_orphans`.
pub fn merge(
    child: &Path,
    options: MergeOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Merged> {
    let top = crate::open(child, OpenOptions::default())?;
    let chain = chain_of(top.as_ref())?;
    if chain.len() < 2 {
        return Err(Error::InvalidArgument(format!(
            "{}: not a differencing disk: nothing to merge",
            child.display()
        )));
    }
    let target_index = match options.into {
        None => 1,
        Some(want) => {
            let want = canonical(want)?;
            chain
                .iter()
                .skip(1)
                .position(|p| *p == want)
                .map(|i| i + 1)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "{}: not an ancestor of {}",
                        want.display(),
                        child.display()
                    ))
                })?
        }
    };
    let formats = chain[..=target_index]
        .iter()
        .map(|p| crate::sniff(p))
        .collect::<Result<Vec<_>>>()?;
    if formats.iter().all(|f| *f == Format::Vhd) {
        drop(top);
        return crate::vhd::merge::merge_with(child, options, progress);
    }
    if let Some((p, f)) = chain[..=target_index]
        .iter()
        .zip(&formats)
        .find(|(_, f)| !matches!(f, Format::Vhd | Format::Vhdx | Format::Qcow2 | Format::Raw))
    {
        return Err(Error::unsupported(
            p,
            format!("merging {} disks is not supported", f.name()),
        ));
    }

    let orphaned = dependents(&chain, target_index);
    refuse_orphans(child, &orphaned, options.allow_orphans)?;

    // Every range a merged disk holds, in order, overlaps joined. The top
    // disk is open already; the ones between are opened on their own.
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut add = |disk: &dyn Disk| -> Result<()> {
        for e in disk.own_map(0, disk.virtual_size())? {
            if e.kind != ExtentKind::Unallocated {
                ranges.push((e.offset, e.end()));
            }
        }
        Ok(())
    };
    add(top.as_ref())?;
    for p in &chain[1..target_index] {
        add(crate::open(p, OpenOptions::default())?.as_ref())?;
    }
    let joined = join(ranges);

    let target_path = chain[target_index].clone();
    // A VHDX target keeps its DataWriteGuid until the merged disks are gone:
    // they name it as their parent by it.
    let mut target: Box<dyn Disk> = if formats[target_index] == Format::Vhdx {
        Box::new(crate::vhdx::open_for_merge(&target_path)?)
    } else {
        crate::open(&target_path, OpenOptions { writable: true })?
    };
    let size = target.virtual_size();
    if let Some(&(_, end)) = joined.last() {
        if end > size {
            return Err(Error::InvalidArgument(format!(
                "{}: holds data up to byte {end}, past the end of {} ({size} bytes): grow it first (`vmhub img resize`)",
                child.display(),
                target_path.display()
            )));
        }
    }
    let total: u64 = joined.iter().map(|r| r.1 - r.0).sum();
    let mut pieces = Vec::new();
    for (start, end) in joined {
        let mut off = start;
        while off < end {
            let n = PIECE.min(end - off);
            pieces.push((off, n));
            off += n;
        }
    }
    let removed: Vec<PathBuf> = chain[..target_index].to_vec();
    // A second thread reads the pieces (asking storage for the next ones
    // first) while this one writes those read before, and a third syncs the
    // target's data as it goes (any descriptor of the file will do), so that
    // little is left for the final flush.
    let mut done = 0u64;
    let top_ref = top.as_ref();
    let pieces = &pieces;
    let removed_ref = &removed;
    let sync_file =
        std::fs::File::open(&target_path).map_err(|e| Error::io(&target_path, "open", e))?;
    crate::io::with_background_sync(&sync_file, &target_path, |written| {
        std::thread::scope(|scope| -> Result<()> {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(u64, Vec<u8>)>>(DEPTH);
            let (recycle_tx, recycle_rx) = std::sync::mpsc::channel::<Vec<u8>>();
            scope.spawn(move || {
                for (i, &(off, n)) in pieces.iter().enumerate() {
                    if i == 0 {
                        for &(o, l) in pieces.iter().take(AHEAD) {
                            top_ref.prefetch(o, l);
                        }
                    }
                    if let Some(&(o, l)) = pieces.get(i + AHEAD) {
                        top_ref.prefetch(o, l);
                    }
                    if !send_piece(top_ref, off, n, &recycle_rx, &tx) {
                        return;
                    }
                }
                // Everything is read: the cached pages of the disks to be
                // removed go now, while the last writes go on, so that
                // removing them has less to free.
                for p in removed_ref {
                    if let Ok(f) = std::fs::File::open(p) {
                        crate::io::forget(&f, 0, None);
                    }
                }
            });
            for piece in rx {
                let (off, buf) = piece?;
                target.write_at(&buf, off)?;
                let n = buf.len() as u64;
                done += n;
                written(n);
                progress(done, total);
                // The reader may be done; then the buffer is simply freed.
                let _ = recycle_tx.send(buf);
            }
            Ok(())
        })
    })?;
    target.flush()?;
    drop(top);
    for r in &removed {
        std::fs::remove_file(r).map_err(|e| Error::io(r, "remove", e))?;
    }
    drop(target);
    if formats[target_index] == Format::Vhdx {
        // Children made over the target before (only when orphans were
        // allowed) must no longer take it for their parent.
        crate::vhdx::open_for_merge(&target_path)?.renew_data_write_guid()?;
    }
    Ok(Merged {
        target: target_path,
        removed,
        bytes: done,
        orphaned,
    })
}

/// The files of the chain `disk` reads through, child first, made canonical.
fn chain_of(disk: &dyn Disk) -> Result<Vec<PathBuf>> {
    disk.info()?
        .chain
        .iter()
        .map(|l| canonical(Path::new(&l.file)))
        .collect()
}

fn canonical(p: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(p).map_err(|e| Error::io(p, "resolve", e))
}

/// Disk images in the folders of `chain` (canonical paths, child first) that
/// are not in it and read through one of its first `target_index + 1` disks
/// (the ones that are removed or change). Files that cannot be opened as
/// differencing disks are passed over.
fn dependents(chain: &[PathBuf], target_index: usize) -> Vec<PathBuf> {
    let changed = &chain[..=target_index];
    files_beside(chain, |path| {
        may_have_parent(path)
            && crate::open(path, OpenOptions::default())
                .and_then(|disk| chain_of(disk.as_ref()))
                .is_ok_and(|theirs| theirs.iter().skip(1).any(|p| changed.contains(p)))
    })
}

/// Whether `path` is named and made like an image that can have a parent.
fn may_have_parent(path: &Path) -> bool {
    let named = path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["vhd", "avhd", "vhdx", "avhdx", "qcow2", "qcow"]
            .iter()
            .any(|x| e.eq_ignore_ascii_case(x))
    });
    named
        && matches!(
            crate::sniff(path),
            Ok(Format::Vhd | Format::Vhdx | Format::Qcow2)
        )
}
