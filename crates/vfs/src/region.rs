//! A byte range of a disk (a partition, or the whole disk) as the filesystem
//! crates want to see it: `Read + Write + Seek`, or reads at an offset.
//!
//! Filesystem code reads in small pieces (a 32-byte directory entry, a 4-byte
//! FAT entry), so reads go through a cache of aligned pages. Writes go straight
//! to the disk and update the cached pages they touch, so the cache never holds
//! anything the disk does not.

use crate::{Error, Result};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex};
use vdisk::Disk;

/// A disk shared by the regions (partitions) opened on it.
pub type SharedDisk = Arc<Mutex<Box<dyn Disk>>>;

/// Wraps an open disk for sharing between regions.
pub fn share(disk: Box<dyn Disk>) -> SharedDisk {
    Arc::new(Mutex::new(disk))
}

/// Bytes per cached page.
const PAGE: u64 = 64 << 10;
/// Pages kept (4 MiB).
const PAGES: usize = 64;
/// Reads of at least this many bytes that miss the cache go to the disk directly.
const DIRECT: usize = 2 * PAGE as usize;

/// `[start, start+len)` of a shared disk, with a position for `Read`/`Seek`.
pub struct Region {
    disk: SharedDisk,
    start: u64,
    len: u64,
    pos: u64,
    name: String,
    /// A direct-mapped cache: page `p` can only sit in slot `p % PAGES`, so a
    /// lookup is one comparison (filesystem crates read a directory entry a
    /// field at a time, so lookups must be cheap).
    pages: Vec<Option<(u64, Vec<u8>)>>,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("name", &self.name)
            .field("start", &self.start)
            .field("len", &self.len)
            .finish()
    }
}

impl Region {
    /// The range `[start, start+len)` of `disk`; `name` names it in messages
    /// ("disk.vhd partition 1"). Fails when the range is not inside the disk.
    pub fn new(disk: SharedDisk, start: u64, len: u64, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let size = lock(&disk)?.virtual_size();
        match start.checked_add(len) {
            Some(end) if end <= size => {}
            _ => {
                return Err(Error::Corrupt(format!(
                    "{name}: bytes {start}+{len} lie outside the disk's {size} bytes"
                )))
            }
        }
        Ok(Region {
            disk,
            start,
            len,
            pos: 0,
            name,
            pages: vec![None; PAGES],
        })
    }

    /// The whole of `disk`.
    pub fn whole(disk: SharedDisk, name: impl Into<String>) -> Result<Self> {
        let size = lock(&disk)?.virtual_size();
        Region::new(disk, 0, size, name)
    }

    /// The length of the region in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty region.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the region starts on the disk, in bytes.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// What the region is called in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The disk below.
    pub fn disk(&self) -> &SharedDisk {
        &self.disk
    }

    /// A second region over the same bytes, with its own position and cache.
    pub fn reopen(&self) -> Result<Region> {
        Region::new(self.disk.clone(), self.start, self.len, self.name.clone())
    }

    fn check(&self, off: u64, n: usize) -> io::Result<()> {
        match off.checked_add(n as u64) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: bytes {off}+{n} lie past its end ({} bytes)",
                    self.name, self.len
                ),
            )),
        }
    }

    /// Fills `buf` from offset `off` of the region; an error when any of it
    /// lies past the end.
    pub fn read_at(&mut self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.check(off, buf.len())?;
        if buf.len() >= DIRECT {
            // Large reads skip the cache, but must still see what it holds:
            // it never differs from the disk, so reading the disk is enough.
            return self.disk_read(buf, off);
        }
        let mut done = 0;
        while done < buf.len() {
            let at = off + done as u64;
            let page = at / PAGE;
            let within = (at % PAGE) as usize;
            let data = self.page(page)?;
            let n = (data.len() - within).min(buf.len() - done);
            if n == 0 {
                break;
            }
            buf[done..done + n].copy_from_slice(&data[within..within + n]);
            done += n;
        }
        Ok(())
    }

    /// Writes `buf` at offset `off` of the region (through to the disk).
    pub fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        self.check(off, buf.len())?;
        {
            let mut disk = lock(&self.disk).map_err(to_io)?;
            disk.write_at(buf, self.start + off)
                .map_err(|e| to_io(e.into()))?;
        }
        // Keep cached pages equal to the disk.
        let end = off + buf.len() as u64;
        let mut page = off / PAGE;
        while page * PAGE < end {
            if let Some((_, data)) = self.pages[page as usize % PAGES]
                .as_mut()
                .filter(|(p, _)| *p == page)
            {
                let p0 = page * PAGE;
                let s = off.max(p0);
                let e = end.min(p0 + data.len() as u64);
                if s < e {
                    data[(s - p0) as usize..(e - p0) as usize]
                        .copy_from_slice(&buf[(s - off) as usize..(e - off) as usize]);
                }
            }
            page += 1;
        }
        Ok(())
    }

    /// [`Region::read_at`] for `vfs` code: a failure becomes the error it
    /// stands for, naming the region.
    pub fn read_at_checked(&mut self, buf: &mut [u8], off: u64) -> Result<()> {
        self.read_at(buf, off).map_err(|e| from_io(e, &self.name))
    }

    /// [`Region::write_at`] for `vfs` code, as [`Region::read_at_checked`].
    pub fn write_at_checked(&mut self, buf: &[u8], off: u64) -> Result<()> {
        self.write_at(buf, off).map_err(|e| from_io(e, &self.name))
    }

    /// Makes every write so far durable.
    pub fn flush_disk(&mut self) -> Result<()> {
        lock(&self.disk)?.flush()?;
        Ok(())
    }

    fn disk_read(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let disk = lock(&self.disk).map_err(to_io)?;
        disk.read_at(buf, self.start + off)
            .map_err(|e| to_io(e.into()))
    }

    fn page(&mut self, page: u64) -> io::Result<&Vec<u8>> {
        let slot = page as usize % PAGES;
        let cached = matches!(&self.pages[slot], Some((p, _)) if *p == page);
        if !cached {
            let p0 = page * PAGE;
            let n = PAGE.min(self.len - p0) as usize;
            // Reuse the evicted page's buffer.
            let mut data = match self.pages[slot].take() {
                Some((_, mut d)) => {
                    d.resize(n, 0);
                    d
                }
                None => vec![0u8; n],
            };
            self.disk_read(&mut data, p0)?;
            self.pages[slot] = Some((page, data));
        }
        match &self.pages[slot] {
            Some((_, d)) => Ok(d),
            None => Err(io::Error::other("page cache lost a page")),
        }
    }
}

fn lock(disk: &SharedDisk) -> Result<std::sync::MutexGuard<'_, Box<dyn Disk>>> {
    disk.lock().map_err(|_| {
        Error::Invalid("the disk was left in an unknown state by a failed thread".into())
    })
}

fn to_io(e: Error) -> io::Error {
    io::Error::other(e)
}

/// The `vfs` error an I/O error from a filesystem crate stands for: the disk
/// error it carries, if any, else `what` with the I/O error.
pub(crate) fn from_io(e: io::Error, what: &str) -> Error {
    match e.downcast::<Error>() {
        Ok(err) => err,
        Err(e) => Error::Corrupt(format!("{what}: {e}")),
    }
}

impl Read for Region {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.len.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        self.read_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Region {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pos >= self.len && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("{}: no space past its end ({} bytes)", self.name, self.len),
            ));
        }
        let n = (self.len - self.pos).min(buf.len() as u64) as usize;
        self.write_at(&buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Durability is asked for explicitly (Volume::flush); a filesystem
        // crate's flush of its buffers needs nothing more here.
        Ok(())
    }
}

impl Seek for Region {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(n) => {
                self.pos = n;
                Ok(n)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: seek before its start", self.name),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdisk::raw::RawDisk;

    fn region(len: u64) -> (tempfile::TempDir, Region) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.raw");
        let file = std::fs::File::create_new(&path).unwrap();
        let disk = RawDisk::create_in(file, &path, len).unwrap();
        let r = Region::new(share(Box::new(disk)), 4096, len - 8192, "test").unwrap();
        (dir, r)
    }

    #[test]
    fn cached_reads_see_writes_and_bounds_hold() {
        let (_d, mut r) = region(1 << 20);
        let mut b = [0u8; 16];
        r.read_at(&mut b, 100).unwrap();
        assert_eq!(b, [0; 16]);
        r.write_at(&[7; 10], 103).unwrap();
        r.read_at(&mut b, 100).unwrap();
        assert_eq!(&b[..3], &[0; 3]);
        assert_eq!(&b[3..13], &[7; 10]);
        let big = vec![9u8; 300 << 10];
        r.write_at(&big, PAGE - 5).unwrap();
        let mut back = vec![0u8; 300 << 10];
        r.read_at(&mut back, PAGE - 5).unwrap();
        assert_eq!(back, big);
        let mut small = [0u8; 8];
        r.read_at(&mut small, PAGE - 5).unwrap();
        assert_eq!(small, [9; 8]);
        let len = r.len();
        assert!(r.read_at(&mut small, len - 4).is_err());
        assert!(r.write_at(&small, len - 4).is_err());
        r.seek(SeekFrom::End(-4)).unwrap();
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest.len(), 4);
    }

    #[test]
    fn outside_the_disk_is_refused() {
        let (_d, r) = region(1 << 20);
        assert!(Region::new(r.disk().clone(), 1 << 20, 1, "x").is_err());
        assert!(Region::new(r.disk().clone(), u64::MAX, 2, "x").is_err());
    }
}
