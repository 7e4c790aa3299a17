//! Locks that keep `prune` from removing blobs a running import is about to
//! reference, and keep two writers of `index.json` from losing each other's
//! change. Both are advisory `flock`s on files in the library folder, so they
//! hold between processes and vanish with a crashed holder.

use crate::{Error, Result};
use rustix::fs::FlockOperation;
use std::fs::{File, OpenOptions};
use std::path::Path;

/// A held lock; dropping it releases the lock.
pub struct Lock {
    _file: File,
}

/// Takes the lock on `path` (created when missing), shared or exclusive,
/// waiting for it.
pub fn lock(path: &Path, exclusive: bool) -> Result<Lock> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(path, "open lock", e))?;
    let op = if exclusive {
        FlockOperation::LockExclusive
    } else {
        FlockOperation::LockShared
    };
    rustix::fs::flock(&file, op).map_err(|e| Error::io(path, "lock", e.into()))?;
    Ok(Lock { _file: file })
}
