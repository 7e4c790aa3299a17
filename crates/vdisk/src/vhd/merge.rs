//! `img merge`: write a differencing disk's sectors into its parent (or a deeper
//! ancestor) and remove the disks merged.
//!
//! Only sectors that the merged disks hold are written into the target, and each
//! is written with the data the whole chain reads there. Those sectors are the
//! ones the merged disks hide, so while the merge runs, the chain from the child
//! reads exactly as before: a crash at any point leaves it readable with the same
//! contents, and running the merge again completes it.
//!
//! When the child is merged into its own parent on a filesystem without room
//! for a second copy of its data (or when asked, [`Release`]), the child's
//! blocks are given back as the copy goes: every [`RELEASE_EVERY`] bytes the
//! parent is flushed (data, BAT and footer durable), and then the child's
//! blocks wholly below what was copied are marked unused in its BAT (written
//! and synced) and their space is punched out of the file. Reads of those
//! sectors then fall through to the parent, which holds the same bytes, so
//! the chain still reads the same at every point, and the merge needs little
//! room beyond what the parent grows by. It costs time (the flushes, and the
//! freeing competing with the copy for storage: a 512 MiB merge took 13 %
//! longer, BENCHMARKS.md), so it is not done when there is room.
//!
//! Other differencing disks over the disks that change (siblings of the child,
//! children of a disk between) would read other data afterwards, or lose their
//! parent, and no file links a parent to its children. So the folders of the
//! chain are searched for them, and the merge is refused when one is found
//! unless the caller allows it (Hyper-V asks the same question).

use super::bat::{Bat, UNUSED};
use super::footer::DiskType;
use super::{meta, read_footer, VhdDisk};
use crate::io::{file_len, sync_data};
use crate::{Disk, Error, Result};
use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Bytes copied between two releases of the child's blocks (each costs a
/// flush of the parent), at most.
const RELEASE_EVERY: u64 = 96 << 20;

/// What a merge did.
#[derive(Clone, Debug)]
pub struct Merged {
    /// The disk that now holds the data.
    pub target: PathBuf,
    /// The disks merged into it and removed, child first.
    pub removed: Vec<PathBuf>,
    /// Bytes written into the target.
    pub bytes: u64,
    /// Differencing disks over the changed disks that the merge went ahead
    /// without (only when allowed): they no longer read what they did.
    pub orphaned: Vec<PathBuf>,
}

/// How to merge.
#[derive(Clone, Copy, Debug, Default)]
pub struct MergeOptions<'a> {
    /// Merge into this ancestor instead of the parent.
    pub into: Option<&'a Path>,
    /// Merge even when other differencing disks depend on the disks that change.
    pub allow_orphans: bool,
    /// Whether a child merged into its parent gives its space back as the
    /// copy goes.
    pub release: Release,
}

/// Whether a merge into the parent frees the child's blocks as it copies
/// them (see the module's documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Release {
    /// Only when the filesystem has less room free than the child's data.
    #[default]
    Auto,
    /// Always (merges into the parent only).
    Always,
    /// Never: the child keeps its space until it is removed at the end.
    Never,
}

/// Merges the differencing disk `child` into its parent, or into `into` (an
/// ancestor in its chain), then removes `child` and any disk between. Refused
/// when other differencing disks in the chain's folders depend on a disk that
/// changes.
pub fn merge(
    child: &Path,
    into: Option<&Path>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Merged> {
    merge_with(
        child,
        MergeOptions {
            into,
            ..MergeOptions::default()
        },
        progress,
    )
}

/// [`merge`], with options.
pub fn merge_with(
    child: &Path,
    options: MergeOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Merged> {
    let into = options.into;
    let top = VhdDisk::open(child, false)?;
    let mut layers: Vec<&VhdDisk> = vec![&top];
    while let Some(p) = layers.last().and_then(|l| l.parent()) {
        layers.push(p);
    }
    if layers.len() < 2 {
        return Err(Error::InvalidArgument(format!(
            "{}: not a differencing disk: nothing to merge",
            child.display()
        )));
    }
    let canon = |p: &Path| std::fs::canonicalize(p).map_err(|e| Error::io(p, "resolve", e));
    let target_index = match into {
        None => 1,
        Some(want) => {
            let want = canon(want)?;
            let mut found = None;
            for (i, l) in layers.iter().enumerate().skip(1) {
                if canon(l.path())? == want {
                    found = Some(i);
                }
            }
            found.ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{}: not an ancestor of {}",
                    want.display(),
                    child.display()
                ))
            })?
        }
    };
    let chain: Vec<PathBuf> = layers
        .iter()
        .map(|l| canon(l.path()))
        .collect::<Result<_>>()?;
    let changed: Vec<[u8; 16]> = layers[..=target_index]
        .iter()
        .map(|l| l.footer().unique_id)
        .collect();
    let orphaned = dependents(&chain, &changed);
    refuse_orphans(child, &orphaned, options.allow_orphans)?;
    // Every sector any merged disk holds, in order, overlaps joined.
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for l in &layers[..target_index] {
        ranges.extend(l.own_ranges()?.into_iter().map(|(s, n)| (s, s + n)));
    }
    let joined = join(ranges);
    let total: u64 = joined.iter().map(|r| r.1 - r.0).sum();
    let target_path = layers[target_index].path().to_path_buf();
    let removed: Vec<PathBuf> = layers[..target_index]
        .iter()
        .map(|l| l.path().to_path_buf())
        .collect();
    let mut target = VhdDisk::open(&target_path, true)?;
    // The target as it was, to find the pages its writes will cover in part.
    let target_view = VhdDisk::open(&target_path, false)?;
    let size = target.virtual_size();
    // Pieces of at most CHUNK bytes, read by a second thread while this one
    // writes the previous ones, so that reading and writing overlap.
    const CHUNK: u64 = 4 << 20;
    const DEPTH: usize = 4;
    let mut pieces = Vec::new();
    for (start, end) in joined {
        let end = end.min(size);
        let mut off = start;
        while off < end {
            let n = CHUNK.min(end - off);
            pieces.push((off, n));
            off += n;
        }
    }
    let top_ref = &top;
    // The disks to be removed: once everything is read, their cached pages
    // are dropped by the reader while the last writes and syncs go on, so
    // that removing the files has less to free. (Dropping them piece by piece
    // as the copy went cost the reader more than it saved.)
    let doomed: Vec<&VhdDisk> = layers[..target_index].to_vec();
    // Only a child merged into its own parent gives blocks back early: with
    // disks between, a released sector would read the middle disk's older
    // data instead of the target's.
    let release = match options.release {
        Release::Never => false,
        Release::Always => true,
        Release::Auto => short_of_room(&target_path, total),
    };
    let releaser = if target_index == 1 && release {
        Releaser::new(&top)?
    } else {
        None
    };
    let mut done = 0;
    let sync_file = target
        .file()
        .try_clone()
        .map_err(|e| Error::io(&target_path, "dup", e))?;
    crate::io::with_background_sync(&sync_file, &target_path, |written| {
        std::thread::scope(|scope| -> Result<()> {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(u64, Vec<u8>)>>(DEPTH);
            let (recycle_tx, recycle_rx) = std::sync::mpsc::channel::<Vec<u8>>();
            // Storage is asked for the pieces ahead of the copy, by a thread of
            // its own (asking can block while requests queue), at most AHEAD
            // pieces before the reader: each piece asked for is a token.
            const AHEAD: usize = 16;
            let (ahead_tx, ahead_rx) = std::sync::mpsc::sync_channel::<()>(AHEAD);
            let pieces_ref = &pieces;
            let target_view = &target_view;
            scope.spawn(move || {
                for &(off, n) in pieces_ref {
                    top_ref.prefetch(off, n);
                    target_view.prefetch_edges(off, n);
                    if ahead_tx.send(()).is_err() {
                        return;
                    }
                }
            });
            scope.spawn(move || {
                for &(off, n) in pieces_ref {
                    // Never ahead of the prefetcher; if it is gone, read anyway.
                    let _ = ahead_rx.recv();
                    if !send_piece(top_ref, off, n, &recycle_rx, &tx) {
                        return;
                    }
                }
                for d in &doomed {
                    crate::io::forget(d.file(), 0, None);
                }
            });
            // The releaser works on its own thread, a batch at a time; a
            // batch asked for while one runs is dropped, as the next covers it.
            let (release_tx, release_rx) = std::sync::mpsc::sync_channel::<u64>(1);
            let releasing = releaser.is_some();
            if let Some(mut r) = releaser {
                scope.spawn(move || {
                    for below in release_rx {
                        // A failed release leaves the child whole, which is
                        // as safe; removing it at the end frees the rest.
                        if r.release_below(below).is_err() {
                            return;
                        }
                    }
                });
            }
            // Small merges release in four steps or so rather than in one.
            let release_every = RELEASE_EVERY.min((total / 4).max(1 << 20));
            let mut since_release = 0;
            for piece in rx {
                let (off, buf) = piece?;
                target.write_at(&buf, off)?;
                let n = buf.len() as u64;
                done += n;
                since_release += n;
                written(n);
                if releasing && since_release >= release_every {
                    // Pieces go in ascending order: everything below the
                    // end of this one is in the parent, durably after this.
                    target.flush()?;
                    let _ = release_tx.try_send(off + n);
                    since_release = 0;
                }
                progress(done, total);
                // The reader may be done; then the buffer is simply freed.
                let _ = recycle_tx.send(buf);
            }
            Ok(())
        })
    })?;
    target.flush()?;
    drop(target);
    drop(layers);
    drop(top);
    for r in &removed {
        std::fs::remove_file(r).map_err(|e| Error::io(r, "remove", e))?;
    }
    Ok(Merged {
        target: target_path,
        removed,
        bytes: done,
        orphaned,
    })
}

/// Reads `n` bytes of `disk` at `off` into a buffer the writer gave back (or
/// a new one) and sends them to the writer; `false` when reading must stop
/// (the read failed, and the error was sent, or the writer is gone).
pub(crate) fn send_piece(
    disk: &dyn Disk,
    off: u64,
    n: u64,
    recycled: &std::sync::mpsc::Receiver<Vec<u8>>,
    tx: &std::sync::mpsc::SyncSender<Result<(u64, Vec<u8>)>>,
) -> bool {
    let mut buf = recycled.try_recv().unwrap_or_default();
    buf.resize(n as usize, 0);
    let read = disk.read_at(&mut buf, off).map(|()| (off, buf));
    let failed = read.is_err();
    tx.send(read).is_ok() && !failed
}

/// Fails, naming them, when other disks depend on the disks a merge of
/// `child` changes, unless `allowed`.
pub(crate) fn refuse_orphans(child: &Path, orphaned: &[PathBuf], allowed: bool) -> Result<()> {
    if orphaned.is_empty() || allowed {
        return Ok(());
    }
    let names: Vec<String> = orphaned.iter().map(|p| p.display().to_string()).collect();
    Err(Error::InvalidArgument(format!(
        "{}: other differencing disks depend on the disks this merge changes, and would no longer read what they do: {} (merge or remove them first, or force the merge)",
        child.display(),
        names.join(", ")
    )))
}

/// `(start, end)` ranges sorted, with those that overlap or touch joined.
pub(crate) fn join(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut joined: Vec<(u64, u64)> = Vec::new();
    for (s, e) in ranges {
        match joined.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => joined.push((s, e)),
        }
    }
    joined
}

/// Whether the filesystem holding `target` has less room free than `bytes`
/// (with a tenth more for the target's metadata). Unknown counts as room.
fn short_of_room(target: &Path, bytes: u64) -> bool {
    let Ok(st) = rustix::fs::statvfs(target) else {
        return false;
    };
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    free < bytes.saturating_add(bytes / 10)
}

/// Gives a child's blocks back while it is merged into its parent (see the
/// module's documentation).
struct Releaser {
    file: File,
    path: PathBuf,
    bat: Bat,
    table_offset: u64,
    block_size: u64,
    bitmap_size: u64,
    /// The first block not released yet.
    next: u64,
}

impl Releaser {
    /// A releaser for `child`, or `None` if it has no BAT.
    fn new(child: &VhdDisk) -> Result<Option<Releaser>> {
        let (Some((bat, block_size, bitmap_size)), Some(header)) =
            (child.bat_copy(), child.dynamic_header())
        else {
            return Ok(None);
        };
        let path = child.path().to_path_buf();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, "open", e))?;
        Ok(Some(Releaser {
            file,
            path,
            bat,
            table_offset: header.table_offset,
            block_size,
            bitmap_size,
            next: 0,
        }))
    }

    /// Releases the blocks wholly below guest offset `below`, whose sectors
    /// the parent now holds durably: BAT entries unused (written, synced),
    /// then the blocks' space punched out.
    fn release_below(&mut self, below: u64) -> Result<()> {
        let end = below / self.block_size;
        let mut dirty = BTreeSet::new();
        let mut freed = Vec::new();
        for b in self.next..end {
            let Some(at) = self.bat.block_offset(b) else {
                continue;
            };
            let Some(sector) = usize::try_from(b)
                .ok()
                .and_then(|i| self.bat.set(i, UNUSED))
            else {
                continue;
            };
            dirty.insert(sector);
            freed.push(at);
        }
        self.next = self.next.max(end);
        if dirty.is_empty() {
            return Ok(());
        }
        meta::write_bat_sectors(&self.file, &self.path, &self.bat, self.table_offset, dirty)?;
        sync_data(&self.file, &self.path)?;
        for at in freed {
            crate::io::punch_hole(&self.file, at, self.bitmap_size + self.block_size);
        }
        Ok(())
    }
}

/// The most files looked at per folder while searching for dependents.
const MAX_SCAN: usize = 10_000;

/// Differencing disks in the folders of `chain` (canonical paths, child first)
/// that are not in it and whose parent is one of the disks with unique ids
/// `changed`. Files that cannot be read as VHDs are passed over.
fn dependents(chain: &[PathBuf], changed: &[[u8; 16]]) -> Vec<PathBuf> {
    files_beside(chain, |path| {
        let is_vhd = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("vhd") || e.eq_ignore_ascii_case("avhd"));
        is_vhd && parent_id(path).is_some_and(|id| changed.contains(&id))
    })
}

/// The files in the folders of `chain` (canonical paths), not in it, for
/// which `depends` holds (given their canonical path), sorted; at most
/// [`MAX_SCAN`] entries of each folder are looked at.
pub(crate) fn files_beside(
    chain: &[PathBuf],
    mut depends: impl FnMut(&Path) -> bool,
) -> Vec<PathBuf> {
    let folders: BTreeSet<&Path> = chain.iter().filter_map(|p| p.parent()).collect();
    let mut out = Vec::new();
    for folder in folders {
        let Ok(entries) = std::fs::read_dir(folder) else {
            continue;
        };
        for entry in entries.take(MAX_SCAN).flatten() {
            let path = std::fs::canonicalize(entry.path()).unwrap_or_else(|_| entry.path());
            if !chain.contains(&path) && depends(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The parent unique id a differencing VHD records, read from its footer and
/// dynamic header only; `None` for anything else.
fn parent_id(path: &Path) -> Option<[u8; 16]> {
    let file = std::fs::File::open(path).ok()?;
    let len = file_len(&file, path).ok()?;
    let (footer, _, _) = read_footer(&file, path, len).ok()?;
    if footer.kind() != Some(DiskType::Differencing) {
        return None;
    }
    let header = super::meta::read_header(&file, path, &footer, len).ok()?;
    Some(header.parent_unique_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CreateOptions, Disk, OpenOptions};
    use std::os::unix::fs::MetadataExt;

    const MIB: u64 = 1 << 20;

    fn fill(path: &Path, byte: u8, offset: u64, len: u64) {
        let mut d = crate::open(path, OpenOptions { writable: true }).unwrap();
        d.write_at(&vec![byte; len as usize], offset).unwrap();
        d.flush().unwrap();
    }

    #[test]
    fn released_blocks_read_from_the_parent_and_give_their_space_back() {
        let dir = tempfile::tempdir().unwrap();
        let (parent, child) = (dir.path().join("p.vhd"), dir.path().join("c.vhd"));
        let opts = CreateOptions {
            block_size: Some(2 * MIB),
            ..CreateOptions::default()
        };
        crate::create(&parent, 16 * MIB, &opts, false).unwrap();
        fill(&parent, 0xa0, 0, 16 * MIB);
        crate::create_child(&child, &parent, 2 * MIB, false).unwrap();
        fill(&child, 0xb0, 0, 12 * MIB);
        // As after the copy of the first 6 MiB: the parent holds them too.
        fill(&parent, 0xb0, 0, 6 * MIB);
        let allocated = |p: &Path| std::fs::metadata(p).unwrap().blocks() * 512;
        let before = allocated(&child);

        let top = VhdDisk::open(&child, false).unwrap();
        let mut r = Releaser::new(&top).unwrap().unwrap();
        // Blocks 0–2 lie wholly below; block 3 only in part, so it stays.
        // (A block starts 512 bytes into a page, after its bitmap: only its
        // whole pages are freed.)
        r.release_below(6 * MIB + 4096).unwrap();
        r.release_below(MIB).unwrap();
        drop(top);

        let top = VhdDisk::open(&child, false).unwrap();
        let (bat, _, _) = top.bat_copy().unwrap();
        for b in 0..3 {
            assert_eq!(bat.block_offset(b), None, "block {b}");
        }
        for b in 3..6 {
            assert!(bat.block_offset(b).is_some(), "block {b}");
        }
        let mut got = vec![0u8; (16 * MIB) as usize];
        top.read_at(&mut got, 0).unwrap();
        assert!(got[..(12 * MIB) as usize].iter().all(|&b| b == 0xb0));
        assert!(got[(12 * MIB) as usize..].iter().all(|&b| b == 0xa0));
        assert!(
            allocated(&child) + 3 * (2 * MIB - 4096) <= before,
            "{} bytes allocated, {before} before",
            allocated(&child)
        );
        let report = crate::check(&child).unwrap();
        assert!(report.clean, "{:?}", report.problems);
    }
}
