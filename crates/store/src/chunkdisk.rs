//! A disk read straight from its chunks, without putting it back together
//! first: `export` converts it to any format, and anything written against
//! [`vdisk::Disk`] (NBD, the filesystems) reads it.
//!
//! Chunks come from a [`ChunkSource`]: the library's [`Blobs`], or anything
//! else that can hand out a blob by digest (the hub's blob storage). Each
//! chunk is decompressed and checked against its content digest before it
//! is used, and kept in a [`ChunkCache`] that several disks may share.

use crate::blobs::Blobs;
use crate::digest::ContentDigest;
use crate::index::{ChunkRef, DiskIndex};
use crate::Result;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use vdisk::{Disk, Extent, ExtentKind, ImageInfo};

/// Decompressed chunks a disk made by [`ChunkDisk::new`] keeps for reads
/// that come back to them.
const CACHED: usize = 64;

/// Where a chunk disk gets its compressed chunk blobs from.
pub trait ChunkSource: Send + Sync {
    /// The compressed blob of chunk `c` (`c.size` bytes at most), checked
    /// against its digest `c.blob`.
    fn blob(&self, c: &ChunkRef) -> Result<Vec<u8>>;
}

impl ChunkSource for Blobs {
    fn blob(&self, c: &ChunkRef) -> Result<Vec<u8>> {
        self.read(&c.blob, c.size)
    }
}

/// Decompressed, checked chunks, bounded both in number and in bytes, least
/// recently used dropped first. Chunks are keyed by their content digest, so
/// one cache may serve any number of disks (and a chunk that two disks share
/// is held once); only data that matched its digest is ever put in.
pub struct ChunkCache {
    max_entries: usize,
    max_bytes: u64,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    /// Chunk data and the tick of its last use.
    map: HashMap<ContentDigest, (Arc<Vec<u8>>, u64)>,
    tick: u64,
    bytes: u64,
}

impl ChunkCache {
    /// A cache of at most `max_entries` chunks and `max_bytes` bytes of them.
    pub fn new(max_entries: usize, max_bytes: u64) -> ChunkCache {
        ChunkCache {
            max_entries,
            max_bytes,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    /// How many chunks, and how many bytes of them, the cache holds.
    pub fn usage(&self) -> (usize, u64) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (inner.map.len(), inner.bytes)
    }

    fn get(&self, key: &ContentDigest) -> Option<Arc<Vec<u8>>> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.tick += 1;
        let tick = inner.tick;
        inner.map.get_mut(key).map(|(data, used)| {
            *used = tick;
            Arc::clone(data)
        })
    }

    fn insert(&self, key: ContentDigest, data: &Arc<Vec<u8>>) {
        let len = data.len() as u64;
        if self.max_entries == 0 || len > self.max_bytes {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.map.contains_key(&key) {
            return;
        }
        // Eviction scans for the oldest entry: caches hold hundreds or a few
        // thousand chunks, and a scan costs far less than the decompression
        // that fills a slot.
        while !inner.map.is_empty()
            && (inner.map.len() >= self.max_entries || inner.bytes + len > self.max_bytes)
        {
            let oldest = inner
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k);
            let Some(k) = oldest else { break };
            if let Some((old, _)) = inner.map.remove(&k) {
                inner.bytes -= old.len() as u64;
            }
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.bytes += len;
        inner.map.insert(key, (Arc::clone(data), tick));
    }
}

/// A read-only disk over a library's chunks.
pub struct ChunkDisk {
    name: PathBuf,
    source: Arc<dyn ChunkSource>,
    index: Arc<DiskIndex>,
    cache: Arc<ChunkCache>,
}

impl ChunkDisk {
    /// The disk `index` describes, over `blobs`; `name` names it in errors.
    pub fn new(name: &str, blobs: Blobs, index: DiskIndex) -> ChunkDisk {
        ChunkDisk::with_source(
            name,
            Arc::new(blobs),
            Arc::new(index),
            Arc::new(ChunkCache::new(CACHED, u64::MAX)),
        )
    }

    /// The disk `index` describes, reading chunks from `source` through
    /// `cache` (which other disks may share); `name` names it in errors.
    pub fn with_source(
        name: &str,
        source: Arc<dyn ChunkSource>,
        index: Arc<DiskIndex>,
        cache: Arc<ChunkCache>,
    ) -> ChunkDisk {
        ChunkDisk {
            name: PathBuf::from(name),
            source,
            index,
            cache,
        }
    }

    /// The index the disk reads.
    pub fn index(&self) -> &DiskIndex {
        &self.index
    }

    /// Chunk number `n`, decompressed and checked against its content digest.
    fn chunk(&self, n: u32) -> vdisk::Result<Arc<Vec<u8>>> {
        let c = self
            .index
            .chunks
            .get(n as usize)
            .ok_or_else(|| self.corrupt(format!("no chunk {n}")))?;
        if let Some(hit) = self.cache.get(&c.content) {
            return Ok(hit);
        }
        let data = self
            .source
            .blob(c)
            .and_then(|blob| decompress(&blob, c))
            .map_err(|e| self.corrupt(e.to_string()))?;
        let data = Arc::new(data);
        self.cache.insert(c.content, &data);
        Ok(data)
    }

    fn corrupt(&self, what: String) -> vdisk::Error {
        vdisk::Error::corrupt(&self.name, what)
    }
}

/// Reads chunk `c` from `blobs`, decompresses it (never past its declared
/// length) and checks its content digest.
pub fn decompress_chunk(blobs: &Blobs, c: &ChunkRef) -> Result<Vec<u8>> {
    decompress(&blobs.read(&c.blob, c.size)?, c)
}

/// Decompresses the blob of chunk `c` (never past its declared length) and
/// checks its content digest.
pub fn decompress(blob: &[u8], c: &ChunkRef) -> Result<Vec<u8>> {
    let data = zstd::bulk::decompress(blob, c.length as usize).map_err(|e| {
        crate::Error::corrupt(
            c.blob.to_string(),
            format!(
                "chunk does not decompress to at most {} bytes: {e}",
                c.length
            ),
        )
    })?;
    if data.len() != c.length as usize || !c.content.matches(&data) {
        return Err(crate::Error::corrupt(
            c.blob.to_string(),
            format!(
                "chunk content is not the {} bytes with digest {}",
                c.length, c.content
            ),
        ));
    }
    Ok(data)
}

impl Disk for ChunkDisk {
    fn virtual_size(&self) -> u64 {
        self.index.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> vdisk::Result<()> {
        let len = buf.len() as u64;
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.index.size)
            .ok_or_else(|| vdisk::Error::OutOfRange {
                path: self.name.clone(),
                offset,
                len,
                size: self.index.size,
            })?;
        buf.fill(0);
        let mut k = self.index.first_after(offset);
        while let Some(&(at, n)) = self.index.map.get(k) {
            if at >= end {
                break;
            }
            let data = self.chunk(n)?;
            let from = offset.max(at);
            let to = end.min(at + data.len() as u64);
            let src = data
                .get((from - at) as usize..(to - at) as usize)
                .ok_or_else(|| self.corrupt(format!("chunk {n} is shorter than its place")))?;
            if let Some(dst) = buf.get_mut((from - offset) as usize..(to - offset) as usize) {
                dst.copy_from_slice(src);
            }
            k += 1;
        }
        Ok(())
    }

    fn write_at(&mut self, _buf: &[u8], _offset: u64) -> vdisk::Result<()> {
        Err(vdisk::Error::ReadOnly {
            path: self.name.clone(),
        })
    }

    fn flush(&mut self) -> vdisk::Result<()> {
        Ok(())
    }

    fn map(&self, offset: u64, len: u64) -> vdisk::Result<Vec<Extent>> {
        let end = offset.saturating_add(len).min(self.index.size);
        let mut out = Vec::new();
        let mut pos = offset;
        let mut k = self.index.first_after(offset);
        while let Some(&(at, _)) = self.index.map.get(k) {
            if at >= end {
                break;
            }
            let chunk_end = (at + self.index.placed_len(k)).min(end);
            let start = at.max(pos);
            vdisk::push_extent(
                &mut out,
                Extent {
                    offset: pos,
                    length: start - pos,
                    kind: ExtentKind::Zero,
                },
            );
            vdisk::push_extent(
                &mut out,
                Extent {
                    offset: start,
                    length: chunk_end - start,
                    kind: ExtentKind::Data,
                },
            );
            pos = chunk_end;
            k += 1;
        }
        vdisk::push_extent(
            &mut out,
            Extent {
                offset: pos,
                length: end.saturating_sub(pos),
                kind: ExtentKind::Zero,
            },
        );
        Ok(out)
    }

    fn info(&self) -> vdisk::Result<ImageInfo> {
        let stored = self.index.stored_bytes();
        Ok(ImageInfo {
            file: self.name.display().to_string(),
            format: "vmhub-chunks",
            virtual_size: self.index.size,
            file_size: stored,
            allocated_bytes: self.index.data_bytes(),
            host_allocated_bytes: stored,
            chain: Vec::new(),
            vhd: None,
            details: None,
        })
    }

    fn path(&self) -> &Path {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_stays_within_its_bounds_and_drops_the_oldest() {
        let cache = ChunkCache::new(3, 250);
        let key = |i: u8| ContentDigest::of(&[i]);
        let chunk = |len: usize| Arc::new(vec![7u8; len]);
        cache.insert(key(1), &chunk(100));
        cache.insert(key(2), &chunk(100));
        assert_eq!(cache.usage(), (2, 200));
        // Used again, 1 is newer than 2: 2 goes to make room by bytes.
        assert!(cache.get(&key(1)).is_some());
        cache.insert(key(3), &chunk(100));
        assert_eq!(cache.usage(), (2, 200));
        assert!(cache.get(&key(2)).is_none());
        assert!(cache.get(&key(1)).is_some() && cache.get(&key(3)).is_some());
        // By count.
        cache.insert(key(4), &chunk(10));
        cache.insert(key(5), &chunk(10));
        let (n, bytes) = cache.usage();
        assert!(n <= 3 && bytes <= 250, "{n} {bytes}");
        // A chunk larger than the whole cache is not kept.
        cache.insert(key(6), &chunk(300));
        assert!(cache.get(&key(6)).is_none());
        assert!(cache.usage().1 <= 250);
    }
}
