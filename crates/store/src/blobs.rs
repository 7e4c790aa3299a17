//! The blob store: content-addressed files under `blobs/sha256/`, as the OCI
//! image layout places them, so that OCI tools read the library directly.
//!
//! A blob is written under a temporary name and renamed into place, so a blob
//! file under its digest is never half written by a live writer. Nothing is
//! synced per blob: whoever publishes a reference to new blobs calls
//! [`Blobs::sync`] first, so that after a crash every blob a reference names
//! is complete; a blob that no reference names may be damaged, and is
//! rewritten by the next writer that needs it (its length is checked) or
//! removed by `prune`.

use crate::digest::{Digest, Hasher};
use crate::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The blob folder of a library.
#[derive(Clone, Debug)]
pub struct Blobs {
    dir: PathBuf,
    tmp: PathBuf,
}

impl Blobs {
    /// The blobs of the library at `home` (folders created when missing).
    pub fn open(home: &Path) -> Result<Blobs> {
        let dir = home.join("blobs").join("sha256");
        let tmp = home.join("tmp");
        for d in [&dir, &tmp] {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, "create folder", e))?;
        }
        Ok(Blobs { dir, tmp })
    }

    /// Where the blob `d` lives.
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.dir.join(d.hex())
    }

    /// The stored length of blob `d`, if it is there.
    pub fn len(&self, d: &Digest) -> Option<u64> {
        std::fs::metadata(self.path(d)).ok().map(|m| m.len())
    }

    /// Whether blob `d` is stored (with `len` bytes, when given).
    pub fn has(&self, d: &Digest, len: Option<u64>) -> bool {
        match (self.len(d), len) {
            (Some(have), Some(want)) => have == want,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Stores `data`, returning its digest and whether it was new.
    pub fn put(&self, data: &[u8]) -> Result<(Digest, bool)> {
        let d = Digest::of(data);
        self.put_as(data, d).map(|new| (d, new))
    }

    /// Stores `data`, whose digest the caller has just computed as `d`
    /// (so that it is not computed twice); returns whether it was new.
    pub fn put_as(&self, data: &[u8], d: Digest) -> Result<bool> {
        if self.has(&d, Some(data.len() as u64)) {
            return Ok(false);
        }
        let (tmp, mut file) = self.temp()?;
        let written = file
            .write_all(data)
            .map_err(|e| Error::io(&tmp, "write", e))
            .and_then(|()| self.publish(&tmp, &d));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map(|()| true)
    }

    /// Stores what `src` yields, which must have digest `want` and at most
    /// `max` bytes; nothing is stored otherwise.
    pub fn put_stream(&self, src: &mut dyn Read, want: &Digest, max: u64) -> Result<u64> {
        let (tmp, mut file) = self.temp()?;
        let result = (|| {
            let mut h = Hasher::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                let n = src.read(&mut buf).map_err(|e| Error::io(&tmp, "read", e))?;
                if n == 0 {
                    break;
                }
                let piece = buf.get(..n).unwrap_or_default();
                total = total.saturating_add(n as u64);
                if total > max {
                    return Err(Error::corrupt(
                        want.to_string(),
                        format!("blob is longer than the {max} bytes expected"),
                    ));
                }
                h.update(piece);
                file.write_all(piece)
                    .map_err(|e| Error::io(&tmp, "write", e))?;
            }
            let got = h.finish();
            if got != *want {
                return Err(Error::corrupt(
                    want.to_string(),
                    format!("content has digest {got}"),
                ));
            }
            self.publish(&tmp, want)?;
            Ok(total)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Reads blob `d`, which must hold at most `max` bytes, and checks its digest.
    pub fn read(&self, d: &Digest, max: u64) -> Result<Vec<u8>> {
        let path = self.path(d);
        let mut file = File::open(&path).map_err(|e| missing_or_io(&path, d, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(&path, "stat", e))?
            .len();
        if len > max {
            return Err(Error::corrupt(
                d.to_string(),
                format!("blob holds {len} bytes, more than the {max} allowed for it"),
            ));
        }
        let mut data = Vec::with_capacity(len as usize);
        file.read_to_end(&mut data)
            .map_err(|e| Error::io(&path, "read", e))?;
        let got = Digest::of(&data);
        if got != *d {
            return Err(Error::corrupt(
                path.display().to_string(),
                format!("stored blob is damaged: its content has digest {got}"),
            ));
        }
        Ok(data)
    }

    /// Every stored blob.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, "list", e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.dir, "list", e))?;
            if let Some(d) = entry.file_name().to_str().and_then(Digest::from_hex) {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes blob `d`.
    pub fn remove(&self, d: &Digest) -> Result<()> {
        let path = self.path(d);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&path, "remove", e)),
        }
    }

    /// Removes temporary files that writers left behind (only safe while no
    /// writer runs: the caller holds the library's exclusive lock).
    pub fn clear_temp(&self) -> Result<u64> {
        let mut n = 0;
        let entries = std::fs::read_dir(&self.tmp).map_err(|e| Error::io(&self.tmp, "list", e))?;
        for entry in entries.flatten() {
            let p = entry.path();
            if std::fs::remove_file(&p).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Makes every blob written so far durable.
    pub fn sync(&self) -> Result<()> {
        let dir = File::open(&self.dir).map_err(|e| Error::io(&self.dir, "open", e))?;
        rustix::fs::syncfs(&dir).map_err(|e| Error::io(&self.dir, "sync", e.into()))
    }

    /// Where a download of blob `d` keeps what it has so far, so that an
    /// interrupted download can resume.
    pub fn partial_path(&self, d: &Digest) -> PathBuf {
        self.tmp.join(format!("{}.part", d.hex()))
    }

    /// Moves the file `path`, whose content the caller has checked has digest
    /// `d`, into the store.
    pub fn adopt(&self, path: &Path, d: &Digest) -> Result<()> {
        self.publish(path, d)
    }

    fn temp(&self) -> Result<(PathBuf, File)> {
        let mut rnd = [0u8; 8];
        getrandom::fill(&mut rnd)
            .map_err(|e| Error::io(&self.tmp, "getrandom", std::io::Error::other(e.to_string())))?;
        let name: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
        let path = self.tmp.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, "create", e))?;
        Ok((path, file))
    }

    fn publish(&self, tmp: &Path, d: &Digest) -> Result<()> {
        let dest = self.path(d);
        std::fs::rename(tmp, &dest).map_err(|e| Error::io(&dest, "rename", e))
    }
}

fn missing_or_io(path: &Path, d: &Digest, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::corrupt(d.to_string(), "blob is missing from the library")
    } else {
        Error::io(path, "open", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_stored_once_and_checked_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let b = Blobs::open(dir.path()).unwrap();
        let (d, new) = b.put(b"hello").unwrap();
        assert!(new);
        assert_eq!(b.put(b"hello").unwrap(), (d, false));
        assert_eq!(b.read(&d, 5).unwrap(), b"hello");
        assert!(b.read(&d, 4).is_err(), "size cap");
        std::fs::write(b.path(&d), b"jello").unwrap();
        let err = b.read(&d, 5).unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");
        // A damaged blob of another length is rewritten by the next put.
        std::fs::write(b.path(&d), b"hell").unwrap();
        assert!(b.put(b"hello").unwrap().1);
        assert_eq!(b.read(&d, 5).unwrap(), b"hello");
        assert_eq!(b.list().unwrap(), vec![d]);
    }

    #[test]
    fn streams_with_wrong_digests_or_sizes_store_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let b = Blobs::open(dir.path()).unwrap();
        let want = Digest::of(b"right");
        assert!(b.put_stream(&mut &b"wrong"[..], &want, 100).is_err());
        assert!(b.put_stream(&mut &b"right"[..], &want, 4).is_err());
        assert!(b.list().unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        assert_eq!(b.put_stream(&mut &b"right"[..], &want, 5).unwrap(), 5);
        assert!(b.has(&want, Some(5)));
    }
}
