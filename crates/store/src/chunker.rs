//! Cutting a disk into chunks and storing them: the import pipeline.
//!
//! Only the ranges the disk maps as data are read (holes are never chunked),
//! eight MiB at a time. FastCDC finds the cut points in each piece; the last
//! chunk of a piece is held back and cut again with the next piece's bytes,
//! so cut points do not depend on how the disk was read. Worker threads (one
//! per core) hash each chunk, skip chunks of zeros and chunks the library
//! already holds, and compress and store the rest; this thread puts the
//! results back in disk order and builds the index. A dry run
//! ([`Sink::Measure`]) does all of that but the storing.

use crate::blobs::Blobs;
use crate::digest::{ContentDigest, Digest};
use crate::index::{ChunkAlgorithm, ChunkRef, Chunking, DiskIndex};
use crate::{Error, Result};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::{mpsc, Arc, Mutex};
use vdisk::{Disk, ExtentKind};

/// The chunk sizes vmhub uses: min/avg/max 128 KiB/512 KiB/2 MiB, chosen by
/// `bench/chunking.sh` on two versions of a Debian 12 ext4 image (BENCHMARKS.md,
/// "Chunk size of the machine library"). Every chunk is one blob, so one
/// request and one manifest descriptor: these sizes make about 1,700 chunks
/// per GiB, so a 4 MiB manifest describes about 13 GiB of data, where
/// 16/64/256 KiB made 13,000 per GiB (under 2 GiB per manifest) for an update
/// 15 MiB smaller.
pub const DEFAULT_CHUNKING: Chunking = Chunking {
    algorithm: ChunkAlgorithm::FastCdc2020,
    min: 128 << 10,
    avg: 512 << 10,
    max: 2 << 20,
};

/// The zstd level chunks are compressed with: level 1 takes about 30 % less
/// CPU than level 3 for about 3 % more bytes (BENCHMARKS.md, "Push and pull").
pub const DEFAULT_LEVEL: i32 = 1;

/// Bytes of the disk read at a time.
const PIECE: u64 = 8 << 20;

/// New blob bytes a worker writes between two nudges of the background sync.
/// The import ends with a sync of everything (the new reference must not name
/// blobs a crash could lose); syncing as the import goes makes most of that
/// final sync happen while the workers still compress, instead of after them.
const SYNC_EVERY: u64 = 32 << 20;

/// Where the chunks an import cuts go.
#[derive(Clone, Copy)]
pub enum Sink<'a> {
    /// Chunks the blobs lack are written into them.
    Store(&'a Blobs),
    /// Nothing is written: every chunk is still cut, hashed and compressed,
    /// and counts as new unless these blobs (when given) hold it already or
    /// it was put before (the set, shared by the disks of one import).
    Measure(Option<&'a Blobs>, &'a Mutex<HashSet<Digest>>),
}

impl Sink<'_> {
    /// Puts the compressed chunk `blob` with digest `d`; whether it was not
    /// there before.
    fn put(&self, blob: &[u8], d: Digest) -> Result<bool> {
        match self {
            Sink::Store(blobs) => blobs.put_as(blob, d),
            Sink::Measure(blobs, put) => {
                if blobs.is_some_and(|b| b.has(&d, Some(blob.len() as u64))) {
                    return Ok(false);
                }
                let mut put = put
                    .lock()
                    .map_err(|_| Error::InvalidArgument("a worker of the import failed".into()))?;
                Ok(put.insert(d))
            }
        }
    }

    /// The blobs written into, for syncing.
    fn written(&self) -> Option<&Blobs> {
        match self {
            Sink::Store(blobs) => Some(blobs),
            Sink::Measure(..) => None,
        }
    }
}

/// What storing a disk did (or, measured, would do).
#[derive(Clone, Debug)]
pub struct Stored {
    /// How to rebuild the disk.
    pub index: DiskIndex,
    /// Chunks that were not in the library before.
    pub new_chunks: u64,
    /// Compressed bytes written for them.
    pub new_bytes: u64,
    /// Bytes of data read from the disk (holes excluded).
    pub data_bytes: u64,
}

/// A chunk on its way to a worker: its bytes are `range` of a shared piece.
struct Job {
    seq: u64,
    offset: u64,
    piece: Arc<Vec<u8>>,
    range: Range<usize>,
}

/// What a worker made of a chunk.
enum Outcome {
    Zero,
    Known(ChunkRef),
    /// Compressed and stored (`true` when the blob was not there before).
    New(ChunkRef, bool),
}

struct Done {
    seq: u64,
    offset: u64,
    length: u64,
    outcome: Outcome,
}

/// The ranges of `disk` that hold data, adjacent extents joined.
pub fn data_runs(disk: &dyn Disk) -> Result<Vec<(u64, u64)>> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for e in disk.map(0, disk.virtual_size())? {
        if e.kind != ExtentKind::Data {
            continue;
        }
        match runs.last_mut() {
            Some(last) if last.1 == e.offset => last.1 = e.end(),
            _ => runs.push((e.offset, e.end())),
        }
    }
    Ok(runs)
}

/// Cuts `disk` into chunks, puts those that `known` (content digest to
/// chunk, for chunks already stored) lacks into `sink`, and returns the
/// disk's index.
pub fn store_disk(
    disk: &dyn Disk,
    sink: Sink,
    known: &HashMap<ContentDigest, ChunkRef>,
    chunking: Chunking,
    level: i32,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Stored> {
    let runs = data_runs(disk)?;
    let total: u64 = runs.iter().map(|r| r.1 - r.0).sum();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8));
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(workers * 16);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = mpsc::sync_channel::<Result<Done>>(workers * 16);
    // One sync queued at most: a sync that starts later covers every write
    // made before it, so nudges that find one queued are dropped. Errors are
    // left to the caller's final sync, which reports them.
    let (kick, kicks) = mpsc::sync_channel::<()>(1);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for () in kicks {
                if let Some(blobs) = sink.written() {
                    let _ = blobs.sync();
                }
            }
        });
        let runs = &runs;
        let cut_tx = done_tx.clone();
        scope.spawn(move || {
            if let Err(e) = cut(disk, runs, chunking, &job_tx) {
                let _ = cut_tx.send(Err(e));
            }
        });
        for _ in 0..workers {
            let rx = Arc::clone(&job_rx);
            let tx = done_tx.clone();
            let kick = kick.clone();
            scope.spawn(move || work(&rx, &tx, sink, known, level, &kick));
        }
        drop(kick);
        drop(done_tx);
        collect(done_rx, disk.virtual_size(), chunking, total, progress)
    })
}

/// Reads the data runs piece by piece and sends every chunk to the workers.
fn cut(
    disk: &dyn Disk,
    runs: &[(u64, u64)],
    c: Chunking,
    jobs: &mpsc::SyncSender<Job>,
) -> Result<()> {
    let mut seq = 0u64;
    let mut pool = Pool::default();
    for &(start, end) in runs {
        // The bytes the last piece held back: `held` of piece `prev`, which
        // start at `base` on the disk.
        let mut prev: Option<(Arc<Vec<u8>>, Range<usize>)> = None;
        let mut base = start;
        let mut pos = start;
        while pos < end {
            let n = PIECE.min(end - pos);
            disk.prefetch(pos + n, PIECE.min(end - (pos + n)));
            let carry = match &prev {
                Some((piece, r)) => piece.get(r.clone()).unwrap_or_default(),
                None => &[],
            };
            let mut buf = pool.take(carry.len() + n as usize);
            let (head, fresh) = buf.split_at_mut(carry.len());
            head.copy_from_slice(carry);
            disk.read_at(fresh, pos)?;
            pos += n;
            let last = pos == end;
            let mut cuts: Vec<Range<usize>> =
                fastcdc::v2020::FastCDC::new(&buf, c.min, c.avg, c.max)
                    .map(|ch| ch.offset..ch.offset + ch.length)
                    .collect();
            let held = if last { None } else { cuts.pop() };
            let piece = Arc::new(buf);
            pool.keep(&piece);
            for range in cuts {
                let job = Job {
                    seq,
                    offset: base + range.start as u64,
                    piece: Arc::clone(&piece),
                    range,
                };
                seq += 1;
                if jobs.send(job).is_err() {
                    // The collector stopped (it met an error); nothing to add.
                    return Ok(());
                }
            }
            prev = held.map(|r| {
                base += r.start as u64;
                (piece, r)
            });
        }
    }
    Ok(())
}

/// Piece buffers for reuse: a buffer comes back once the workers have dropped
/// every chunk of it, so that reading a piece neither faults in fresh pages
/// nor clears them first.
#[derive(Default)]
struct Pool(Vec<Arc<Vec<u8>>>);

impl Pool {
    /// The most buffers remembered: more than the pieces the job queue holds.
    const MAX: usize = 8;

    /// A buffer of `len` bytes, of arbitrary content.
    fn take(&mut self, len: usize) -> Vec<u8> {
        let free = self.0.iter().position(|b| Arc::strong_count(b) == 1);
        if let Some(i) = free {
            if let Ok(mut buf) = Arc::try_unwrap(self.0.swap_remove(i)) {
                buf.resize(len, 0);
                return buf;
            }
        }
        vec![0; len]
    }

    /// Remembers `piece`, to take its buffer back when the workers are done.
    fn keep(&mut self, piece: &Arc<Vec<u8>>) {
        if self.0.len() < Self::MAX {
            self.0.push(Arc::clone(piece));
        }
    }
}

/// A worker: hashes, recognizes and compresses chunks until the jobs end.
fn work(
    jobs: &Mutex<mpsc::Receiver<Job>>,
    done: &mpsc::SyncSender<Result<Done>>,
    sink: Sink,
    known: &HashMap<ContentDigest, ChunkRef>,
    level: i32,
    kick: &mpsc::SyncSender<()>,
) {
    let mut unsynced = 0u64;
    let mut compressor = match zstd::bulk::Compressor::new(level) {
        Ok(c) => c,
        Err(e) => {
            let _ = done.send(Err(Error::InvalidArgument(format!(
                "zstd level {level}: {e}"
            ))));
            return;
        }
    };
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let data = job.piece.get(job.range.clone()).unwrap_or_default();
        let length = data.len() as u64;
        let outcome = if vdisk::io::is_zero(data) {
            Ok(Outcome::Zero)
        } else {
            let content = ContentDigest::of(data);
            match known.get(&content) {
                Some(c) => Ok(Outcome::Known(*c)),
                None => compressor
                    .compress(data)
                    .map_err(|e| Error::InvalidArgument(format!("zstd: {e}")))
                    .and_then(|blob| {
                        let r = ChunkRef {
                            blob: Digest::of(&blob),
                            size: blob.len() as u64,
                            length: data.len() as u32,
                            content,
                        };
                        let new = sink.put(&blob, r.blob)?;
                        if new && sink.written().is_some() {
                            unsynced += r.size;
                            if unsynced >= SYNC_EVERY {
                                unsynced = 0;
                                let _ = kick.try_send(());
                            }
                        }
                        Ok(Outcome::New(r, new))
                    }),
            }
        };
        let msg = outcome.map(|outcome| Done {
            seq: job.seq,
            offset: job.offset,
            length,
            outcome,
        });
        if done.send(msg).is_err() {
            return;
        }
    }
}

/// Puts the workers' results back in order and builds the index.
fn collect(
    done: mpsc::Receiver<Result<Done>>,
    size: u64,
    chunking: Chunking,
    total: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Stored> {
    let mut index = DiskIndex {
        size,
        chunking,
        chunks: Vec::new(),
        map: Vec::new(),
    };
    let mut numbers: HashMap<ContentDigest, u32> = HashMap::new();
    let mut waiting: BTreeMap<u64, Done> = BTreeMap::new();
    let mut next = 0u64;
    let (mut new_chunks, mut new_bytes, mut read) = (0u64, 0u64, 0u64);
    for msg in done {
        let d = msg?;
        waiting.insert(d.seq, d);
        while let Some(d) = waiting.remove(&next) {
            next += 1;
            read += d.length;
            let (r, stored) = match d.outcome {
                Outcome::Zero => {
                    progress(read, total);
                    continue;
                }
                Outcome::Known(r) => (r, false),
                Outcome::New(r, new) => (r, new),
            };
            let n = match numbers.get(&r.content) {
                Some(&n) => n,
                None => {
                    if stored {
                        new_chunks += 1;
                        new_bytes += r.size;
                    }
                    let n = u32::try_from(index.chunks.len()).map_err(|_| {
                        Error::InvalidArgument("a disk of more than 4 billion chunks".into())
                    })?;
                    index.chunks.push(r);
                    numbers.insert(r.content, n);
                    n
                }
            };
            index.map.push((d.offset, n));
            progress(read, total);
        }
    }
    Ok(Stored {
        index,
        new_chunks,
        new_bytes,
        data_bytes: read,
    })
}
