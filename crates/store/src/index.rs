//! The disk index: how a disk is put back together from its chunks.
//!
//! One index per disk, stored as a JSON blob (media type
//! [`DISK_INDEX_MEDIA_TYPE`]). `chunks` lists every distinct chunk once: the
//! digest and size of its compressed blob, its length and the digest of its
//! content once decompressed ([`ContentDigest`]: BLAKE3, or SHA-256 in
//! indexes written by earlier versions). `map` places chunks on the disk as
//! `[offset, chunk number]` pairs in increasing offset order; everything no
//! chunk covers reads as zeros (holes, and runs of zeros, are never stored).

use crate::digest::{ContentDigest, Digest};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Media type of a disk index blob.
pub const DISK_INDEX_MEDIA_TYPE: &str = "application/vnd.vmhub.disk.index.v1+json";
/// Media type of a chunk blob (zstd-compressed bytes of the disk).
pub const CHUNK_MEDIA_TYPE: &str = "application/vnd.vmhub.chunk.v1+zstd";

/// The longest chunk any index may describe. Chunks are decompressed into
/// memory, so this bounds what one hostile chunk can make vmhub allocate.
pub const MAX_CHUNK: u32 = 16 << 20;
/// The largest disk an index may describe (64 TiB, VHDX's limit).
pub const MAX_DISK: u64 = 64 << 40;
/// The largest index blob read (about half a million chunks, 256 GiB of data
/// at the default chunk size; parsed, it takes a few times this in memory).
pub const MAX_INDEX_BYTES: u64 = 128 << 20;

/// How a disk was cut into chunks (FastCDC 2020, sizes in bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunking {
    /// The algorithm: always "fastcdc-2020".
    pub algorithm: ChunkAlgorithm,
    /// Smallest chunk (except a data run's last).
    pub min: u32,
    /// Average chunk.
    pub avg: u32,
    /// Largest chunk.
    pub max: u32,
}

/// Chunking algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkAlgorithm {
    /// FastCDC as published in 2020 (the `fastcdc` crate's `v2020`), normalization level 1.
    #[serde(rename = "fastcdc-2020")]
    FastCdc2020,
}

/// One distinct chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// Digest of the compressed blob.
    pub blob: Digest,
    /// Size of the compressed blob in bytes.
    pub size: u64,
    /// Length of the chunk's content in bytes.
    pub length: u32,
    /// Digest of the content.
    pub content: ContentDigest,
}

/// How to rebuild one disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskIndex {
    /// The disk's virtual size in bytes.
    pub size: u64,
    /// How it was cut.
    pub chunking: Chunking,
    /// Every distinct chunk.
    pub chunks: Vec<ChunkRef>,
    /// `[offset, chunk number]` for each placed chunk, by increasing offset.
    pub map: Vec<(u64, u32)>,
}

impl DiskIndex {
    /// Parses and checks an index blob (`what` names it in errors).
    pub fn from_json(data: &[u8], what: &str) -> Result<DiskIndex> {
        let index: DiskIndex = serde_json::from_slice(data)
            .map_err(|e| Error::corrupt(what, format!("not a disk index: {e}")))?;
        index.validate(what)?;
        Ok(index)
    }

    /// The index as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Checks that every chunk is placed inside the disk, without overlap, and
    /// that every size is within bounds.
    pub fn validate(&self, what: &str) -> Result<()> {
        let bad = |p: String| Err(Error::corrupt(what, p));
        if self.size > MAX_DISK {
            return bad(format!(
                "disk size {} is past the {MAX_DISK}-byte limit",
                self.size
            ));
        }
        let c = &self.chunking;
        if !(64 <= c.min && c.min <= c.avg && c.avg <= c.max && c.max <= MAX_CHUNK) {
            return bad(format!(
                "chunk sizes {}/{}/{} are impossible",
                c.min, c.avg, c.max
            ));
        }
        for (i, ch) in self.chunks.iter().enumerate() {
            if ch.length == 0 || ch.length > c.max {
                return bad(format!(
                    "chunk {i} is {} bytes long, outside 1..={}",
                    ch.length, c.max
                ));
            }
            // zstd never needs much more than the input to store it.
            if ch.size > u64::from(ch.length) + u64::from(ch.length / 64) + 1024 {
                return bad(format!(
                    "chunk {i}: a {}-byte blob for {} bytes is not a zstd frame vmhub wrote",
                    ch.size, ch.length
                ));
            }
        }
        let mut end = 0u64;
        for (k, &(offset, n)) in self.map.iter().enumerate() {
            let Some(ch) = self.chunks.get(n as usize) else {
                return bad(format!(
                    "map entry {k} names chunk {n}, of {}",
                    self.chunks.len()
                ));
            };
            if offset < end {
                return bad(format!("map entry {k} at {offset} overlaps the one before"));
            }
            end = offset.saturating_add(u64::from(ch.length));
            if end > self.size {
                return bad(format!(
                    "map entry {k} ends at {end}, past the disk's {} bytes",
                    self.size
                ));
            }
        }
        Ok(())
    }

    /// Length of the chunk placed by map entry `k` (0 past the end).
    pub fn placed_len(&self, k: usize) -> u64 {
        self.map
            .get(k)
            .and_then(|&(_, n)| self.chunks.get(n as usize))
            .map_or(0, |c| u64::from(c.length))
    }

    /// Bytes of the disk that chunks cover.
    pub fn data_bytes(&self) -> u64 {
        (0..self.map.len()).map(|k| self.placed_len(k)).sum()
    }

    /// Bytes of all distinct compressed chunks.
    pub fn stored_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.size).sum()
    }

    /// The first map entry that ends after `offset`.
    pub fn first_after(&self, offset: u64) -> usize {
        self.map.partition_point(|&(o, n)| {
            let len = self
                .chunks
                .get(n as usize)
                .map_or(0, |c| u64::from(c.length));
            o.saturating_add(len) <= offset
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(len: u32) -> ChunkRef {
        ChunkRef {
            blob: Digest::of(&len.to_le_bytes()),
            size: u64::from(len) / 2,
            length: len,
            content: ContentDigest::of(b"x"),
        }
    }

    fn index() -> DiskIndex {
        DiskIndex {
            size: 1 << 20,
            chunking: Chunking {
                algorithm: ChunkAlgorithm::FastCdc2020,
                min: 4096,
                avg: 8192,
                max: 16384,
            },
            chunks: vec![chunk(4096), chunk(8192)],
            map: vec![(0, 0), (4096, 1), (65536, 0)],
        }
    }

    #[test]
    fn index_round_trips_and_is_searched() {
        let i = index();
        let back = DiskIndex::from_json(&i.to_json(), "x").unwrap();
        assert_eq!(back, i);
        assert_eq!(i.data_bytes(), 4096 + 8192 + 4096);
        assert_eq!(i.first_after(0), 0);
        assert_eq!(i.first_after(4096), 1);
        assert_eq!(i.first_after(12287), 1);
        assert_eq!(i.first_after(12288), 2);
        assert_eq!(i.first_after(1 << 20), 3);
    }

    #[test]
    fn hostile_indexes_are_refused() {
        let mut cases: Vec<(DiskIndex, &str)> = Vec::new();
        let mut i = index();
        i.map.push((66000, 0));
        cases.push((i, "overlaps"));
        let mut i = index();
        i.map.push(((1 << 20) - 100, 0));
        cases.push((i, "past the disk"));
        let mut i = index();
        i.map.push((200000, 7));
        cases.push((i, "names chunk 7"));
        let mut i = index();
        i.chunks[0].length = 1 << 30;
        cases.push((i, "outside"));
        let mut i = index();
        i.chunking.max = u32::MAX;
        cases.push((i, "impossible"));
        let mut i = index();
        i.size = u64::MAX;
        cases.push((i, "limit"));
        let mut i = index();
        i.chunks[1].size = 1 << 40;
        cases.push((i, "zstd"));
        for (i, want) in cases {
            let err = DiskIndex::from_json(&i.to_json(), "idx")
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("idx: ") && err.contains(want), "{err}");
        }
        assert!(DiskIndex::from_json(b"{\"size\":-1}", "idx").is_err());
    }
}
