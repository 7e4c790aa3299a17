//! `img merge`: write a differencing disk's sectors into its parent (or a deeper
//! ancestor) and remove the disks merged.
//!
//! Only sectors that the merged disks hold are written into the target, and each
//! is written with the data the whole chain reads there. Those sectors are the
//! ones the merged disks hide, so while the merge runs, the chain from the child
//! reads exactly as before: a crash at any point leaves it readable with the same
//! contents, and running the merge again completes it.

use super::VhdDisk;
use crate::{Disk, Error, Result};
use std::path::{Path, PathBuf};

/// What a merge did.
#[derive(Clone, Debug)]
pub struct Merged {
    /// The disk that now holds the data.
    pub target: PathBuf,
    /// The disks merged into it and removed, child first.
    pub removed: Vec<PathBuf>,
    /// Bytes written into the target.
    pub bytes: u64,
}

/// Merges the differencing disk `child` into its parent, or into `into` (an
/// ancestor in its chain), then removes `child` and any disk between.
pub fn merge(
    child: &Path,
    into: Option<&Path>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Merged> {
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
    // Every sector any merged disk holds, in order, overlaps joined.
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for l in &layers[..target_index] {
        ranges.extend(l.own_ranges()?);
    }
    ranges.sort_unstable();
    let mut joined: Vec<(u64, u64)> = Vec::new();
    for (s, n) in ranges {
        match joined.last_mut() {
            Some(last) if s <= last.0 + last.1 => last.1 = last.1.max(s + n - last.0),
            _ => joined.push((s, n)),
        }
    }
    let total: u64 = joined.iter().map(|r| r.1).sum();
    let target_path = layers[target_index].path().to_path_buf();
    let removed: Vec<PathBuf> = layers[..target_index]
        .iter()
        .map(|l| l.path().to_path_buf())
        .collect();
    let mut target = VhdDisk::open(&target_path, true)?;
    let size = target.virtual_size();
    const CHUNK: u64 = 4 << 20;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut done = 0;
    for (start, len) in joined {
        let end = (start + len).min(size);
        let mut off = start;
        while off < end {
            let n = CHUNK.min(end - off);
            let b = &mut buf[..n as usize];
            top.read_at(b, off)?;
            target.write_at(b, off)?;
            off += n;
            done += n;
            progress(done, total);
        }
    }
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
    })
}
