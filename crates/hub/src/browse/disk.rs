//! A machine's disk as the filesystem code reads it: chunks fetched from
//! the hub's blob storage, and reads that stop when the request does.

use crate::digest::Digest;
use crate::storage::BlobStore;
use futures_util::StreamExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use store::index::{ChunkRef, DiskIndex};
use store::{ChunkCache, ChunkDisk, ChunkSource};
use vfs::Image;

/// Reads a disk's chunks from the hub's blob storage.
pub(super) struct StoreSource {
    store: Arc<dyn BlobStore>,
    handle: tokio::runtime::Handle,
}

impl ChunkSource for StoreSource {
    fn blob(&self, c: &ChunkRef) -> store::Result<Vec<u8>> {
        let what = c.blob.to_string();
        let d = Digest::parse(&what)
            .map_err(|e| store::Error::corrupt(what.clone(), format!("not a digest: {e:?}")))?;
        let fail = |p: String| store::Error::corrupt(what.clone(), p);
        // Called from the blocking pool, never from a runtime worker.
        let data = self.handle.block_on(async {
            let mut stream = self
                .store
                .read(&d, 0, c.size)
                .await
                .map_err(|e| fail(format!("chunk cannot be read from storage: {e}")))?;
            // `size` is bounded by the index's checks (a chunk is at most 16 MiB).
            let mut out = Vec::with_capacity(usize::try_from(c.size).unwrap_or(0));
            while let Some(piece) = stream.next().await {
                let piece =
                    piece.map_err(|e| fail(format!("chunk cannot be read from storage: {e}")))?;
                out.extend_from_slice(&piece);
            }
            Ok::<_, store::Error>(out)
        })?;
        if data.len() as u64 != c.size || Digest::of(&data) != d {
            return Err(fail(format!(
                "stored chunk is damaged: {} bytes whose digest is {}, not the {} bytes pushed",
                data.len(),
                Digest::of(&data),
                c.size
            )));
        }
        Ok(data)
    }
}

/// A disk opened for one request: everything the blocking side needs.
pub(super) struct Opened {
    pub(super) name: String,
    pub(super) index: Arc<DiskIndex>,
    pub(super) store: Arc<dyn BlobStore>,
    pub(super) cache: Arc<ChunkCache>,
    pub(super) handle: tokio::runtime::Handle,
    /// Set when the request's time is up or its client went away: reads
    /// fail from then on, which unwinds whatever the filesystem code does.
    pub(super) stop: Arc<AtomicBool>,
}

impl Opened {
    /// The disk's image with its partition table read (blocking).
    pub(super) fn image(&self) -> vfs::Result<Image> {
        let disk = ChunkDisk::with_source(
            &self.name,
            Arc::new(StoreSource {
                store: Arc::clone(&self.store),
                handle: self.handle.clone(),
            }),
            Arc::clone(&self.index),
            Arc::clone(&self.cache),
        );
        let guarded = Guarded {
            disk,
            stop: Arc::clone(&self.stop),
        };
        Image::from_disk(Box::new(guarded), &self.name)
    }
}

/// A disk whose reads fail once its request is stopped.
pub(super) struct Guarded {
    disk: ChunkDisk,
    stop: Arc<AtomicBool>,
}

impl vdisk::Disk for Guarded {
    fn virtual_size(&self) -> u64 {
        self.disk.virtual_size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> vdisk::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(vdisk::Error::corrupt(
                self.disk.path(),
                "reading was stopped: the request ran out of time or its client went away",
            ));
        }
        self.disk.read_at(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> vdisk::Result<()> {
        self.disk.write_at(buf, offset)
    }

    fn flush(&mut self) -> vdisk::Result<()> {
        Ok(())
    }

    fn map(&self, offset: u64, len: u64) -> vdisk::Result<Vec<vdisk::Extent>> {
        self.disk.map(offset, len)
    }

    fn info(&self) -> vdisk::Result<vdisk::ImageInfo> {
        self.disk.info()
    }

    fn path(&self) -> &Path {
        self.disk.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::index::{ChunkAlgorithm, Chunking};
    use vdisk::Disk;

    /// Serves nothing: the disk below has no chunks.
    struct Nothing;

    impl ChunkSource for Nothing {
        fn blob(&self, c: &ChunkRef) -> store::Result<Vec<u8>> {
            Err(store::Error::corrupt(c.blob.to_string(), "not here"))
        }
    }

    #[test]
    fn reads_fail_once_the_request_is_stopped() {
        let index = DiskIndex {
            size: 1 << 20,
            chunking: Chunking {
                algorithm: ChunkAlgorithm::FastCdc2020,
                min: 4096,
                avg: 8192,
                max: 16384,
            },
            chunks: Vec::new(),
            map: Vec::new(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let disk = Guarded {
            disk: ChunkDisk::with_source(
                "d",
                Arc::new(Nothing),
                Arc::new(index),
                Arc::new(ChunkCache::new(1, 1)),
            ),
            stop: Arc::clone(&stop),
        };
        let mut buf = [1u8; 512];
        disk.read_at(&mut buf, 4096).unwrap();
        assert_eq!(buf, [0u8; 512]);
        stop.store(true, Ordering::Relaxed);
        let err = disk.read_at(&mut buf, 4096).unwrap_err().to_string();
        assert!(err.contains("stopped"), "{err}");
    }
}
