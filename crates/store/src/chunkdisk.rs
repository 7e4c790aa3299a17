//! A disk read straight from its chunks, without putting it back together
//! first: `export` converts it to any format, and anything written against
//! [`vdisk::Disk`] (NBD, the filesystems) reads it.

use crate::blobs::Blobs;
use crate::index::DiskIndex;
use crate::Result;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use vdisk::{Disk, Extent, ExtentKind, ImageInfo};

/// Decompressed chunks kept for reads that come back to them.
const CACHED: usize = 64;

/// A read-only disk over a library's chunks.
pub struct ChunkDisk {
    name: PathBuf,
    blobs: Blobs,
    index: DiskIndex,
    cache: Mutex<Vec<(u32, Arc<Vec<u8>>)>>,
}

impl ChunkDisk {
    /// The disk `index` describes, over `blobs`; `name` names it in errors.
    pub fn new(name: &str, blobs: Blobs, index: DiskIndex) -> ChunkDisk {
        ChunkDisk {
            name: PathBuf::from(name),
            blobs,
            index,
            cache: Mutex::new(Vec::new()),
        }
    }

    /// The index the disk reads.
    pub fn index(&self) -> &DiskIndex {
        &self.index
    }

    /// Chunk number `n`, decompressed and checked against its content digest.
    fn chunk(&self, n: u32) -> vdisk::Result<Arc<Vec<u8>>> {
        if let Ok(mut cache) = self.cache.lock() {
            if let Some(i) = cache.iter().position(|(k, _)| *k == n) {
                let hit = cache.remove(i);
                let data = Arc::clone(&hit.1);
                cache.push(hit);
                return Ok(data);
            }
        }
        let data = Arc::new(self.load(n).map_err(|e| self.corrupt(e.to_string()))?);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHED {
                cache.remove(0);
            }
            cache.push((n, Arc::clone(&data)));
        }
        Ok(data)
    }

    fn load(&self, n: u32) -> Result<Vec<u8>> {
        let c = self.index.chunks.get(n as usize).ok_or_else(|| {
            crate::Error::corrupt(self.name.display().to_string(), format!("no chunk {n}"))
        })?;
        decompress_chunk(&self.blobs, c)
    }

    fn corrupt(&self, what: String) -> vdisk::Error {
        vdisk::Error::corrupt(&self.name, what)
    }
}

/// Reads chunk `c` from `blobs`, decompresses it (never past its declared
/// length) and checks its content digest.
pub fn decompress_chunk(blobs: &Blobs, c: &crate::index::ChunkRef) -> Result<Vec<u8>> {
    let blob = blobs.read(&c.blob, c.size)?;
    let data = zstd::bulk::decompress(&blob, c.length as usize).map_err(|e| {
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
