//! qcow2 images, versions 2 and 3 (QEMU's copy-on-write format).
//!
//! The virtual disk is divided into clusters; a two-level table (L1, then L2
//! tables of one cluster each) maps each guest cluster to a host cluster, a
//! compressed cluster, zeros, or nothing (the backing file's data). Every host
//! cluster has a reference count in refcount blocks, found through the
//! refcount table. Reads go through a bounded cache of L2 tables; writes
//! allocate clusters at the end of the file and keep metadata changes in
//! memory until [`Disk::flush`] writes them in an order that survives a crash
//! (see `write.rs`).

mod check;
mod compress;
mod create;
pub mod header;
pub mod l2;
pub mod refcount;
mod write;

use crate::format::CreateOptions;
use crate::io::{file_len, host_allocated, prefetch, read_exact_at};
use crate::ops::check::CheckReport;
use crate::{check_range, push_extent, Disk, Error, Extent, ExtentKind, ImageInfo, Result};
use header::Header;
use l2::{Cluster, Sub};
use serde::Serialize;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use check::check_file;
pub use create::create;

/// Backing files a chain may have at most.
pub const MAX_CHAIN: usize = 16;
/// Bytes of L2 tables the read cache keeps.
const L2_CACHE_BYTES: u64 = 32 << 20;

/// What `img info` shows about a qcow2 image beyond what every format shows.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Qcow2Info {
    /// Header version: 2 or 3.
    pub version: u32,
    /// qemu-img's name for the version: "0.10" or "1.1".
    pub compat: String,
    /// Bytes per cluster.
    pub cluster_size: u64,
    /// Bits per refcount.
    pub refcount_bits: u64,
    /// "zlib" or "zstd".
    pub compression_type: String,
    /// The backing file name as stored, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_file: Option<String>,
    /// The backing file's format as stored, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_format: Option<String>,
    /// Whether L2 entries have subcluster bitmaps.
    pub extended_l2: bool,
    /// Whether refcounts may be updated lazily.
    pub lazy_refcounts: bool,
    /// Whether the dirty bit is set (refcounts may be stale).
    pub dirty: bool,
    /// Whether qemu marked the image corrupt.
    pub corrupt: bool,
    /// Internal snapshots.
    pub snapshots: u32,
    /// Whether the image holds persistent bitmaps.
    pub bitmaps: bool,
    /// Guest clusters stored compressed.
    pub compressed_clusters: u64,
    /// Guest clusters that read as zeros by the zero flag or bitmap.
    pub zero_clusters: u64,
}

/// True when `head`, the first bytes of a file (up to 4 KiB, fewer for a
/// short file), start like a qcow2 image.
pub(crate) fn sniff(head: &[u8]) -> bool {
    head.starts_with(b"QFI\xfb")
}

/// Opens the qcow2 image in `file`, for writing when `writable`.
pub(crate) fn open(file: File, path: &Path, writable: bool) -> Result<Box<dyn Disk>> {
    Ok(Box::new(Qcow2Disk::from_file(file, path, writable)?))
}

thread_local! {
    /// The images whose opening is under way on this thread, outermost first:
    /// a backing file already among them closes a loop.
    static OPENING: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
}

/// Marks an image as being opened until dropped.
struct OpeningGuard;

impl OpeningGuard {
    fn enter(path: &Path) -> Result<OpeningGuard> {
        let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        OPENING.with(|o| {
            let mut o = o.borrow_mut();
            if o.contains(&canon) {
                return Err(Error::corrupt(
                    path,
                    "the backing chain loops: this image is its own backing file (directly or through others)",
                ));
            }
            if o.len() > MAX_CHAIN {
                return Err(Error::unsupported(
                    path,
                    format!("the backing chain is deeper than {MAX_CHAIN} images"),
                ));
            }
            o.push(canon);
            Ok(OpeningGuard)
        })
    }
}

impl Drop for OpeningGuard {
    fn drop(&mut self) {
        OPENING.with(|o| {
            o.borrow_mut().pop();
        });
    }
}

/// A bounded cache of L2 tables by host offset, least recently used out.
#[derive(Default)]
struct L2Cache {
    tables: HashMap<u64, (Arc<Vec<u64>>, u64)>,
    clock: u64,
    bytes: u64,
}

impl L2Cache {
    fn get(&mut self, host: u64) -> Option<Arc<Vec<u64>>> {
        self.clock += 1;
        let clock = self.clock;
        self.tables.get_mut(&host).map(|(t, stamp)| {
            *stamp = clock;
            t.clone()
        })
    }

    fn insert(&mut self, host: u64, table: Arc<Vec<u64>>) {
        let size = table.len() as u64 * 8;
        while self.bytes + size > L2_CACHE_BYTES && !self.tables.is_empty() {
            let oldest = self
                .tables
                .iter()
                .min_by_key(|(_, (_, s))| *s)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                if let Some((t, _)) = self.tables.remove(&k) {
                    self.bytes -= t.len() as u64 * 8;
                }
            }
        }
        self.clock += 1;
        if let Some((old, _)) = self.tables.insert(host, (table, self.clock)) {
            self.bytes -= old.len() as u64 * 8;
        }
        self.bytes += size;
    }

    fn remove(&mut self, host: u64) {
        if let Some((t, _)) = self.tables.remove(&host) {
            self.bytes -= t.len() as u64 * 8;
        }
    }
}

/// Where a piece of the guest range reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// The image file, from this host offset on.
    Host(u64),
    /// Zeros.
    Zero,
    /// The backing file (zeros without one).
    Backing,
    /// The compressed cluster that holds guest cluster `cluster`.
    Compressed { host: u64, len: u64, cluster: u64 },
}

/// A run of the guest range that reads from one source.
#[derive(Clone, Copy, Debug)]
struct Piece {
    guest: u64,
    len: u64,
    source: Source,
}

/// Appends `p` to `out`, merging it into the last piece when it continues it.
fn push_piece(out: &mut Vec<Piece>, p: Piece) {
    if p.len == 0 {
        return;
    }
    if let Some(last) = out.last_mut() {
        if last.guest + last.len == p.guest {
            let joins = match (last.source, p.source) {
                (Source::Host(a), Source::Host(b)) => a + last.len == b,
                (Source::Zero, Source::Zero) | (Source::Backing, Source::Backing) => true,
                _ => false,
            };
            if joins {
                last.len += p.len;
                return;
            }
        }
    }
    out.push(p);
}

/// An open qcow2 image.
pub struct Qcow2Disk {
    path: PathBuf,
    file: File,
    writable: bool,
    header: Header,
    /// The backing file name as stored.
    backing_name: Option<String>,
    backing: Option<Box<dyn Disk>>,
    /// The active L1 table, as in memory (ahead of the file until a flush).
    l1: Vec<u64>,
    /// L2 tables changed since the last flush, by L1 index.
    dirty_l2: HashMap<u64, Arc<Vec<u64>>>,
    cache: Mutex<L2Cache>,
    /// The last compressed cluster decompressed: (host offset, bytes).
    last_compressed: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
    /// The length of the file as far as this image knows (grows with allocation).
    file_end: u64,
    /// Allocation state; present when writable.
    meta: Option<write::Meta>,
}

impl Qcow2Disk {
    /// Opens the qcow2 image at `path`.
    pub fn open(path: &Path, writable: bool) -> Result<Qcow2Disk> {
        Qcow2Disk::from_file(crate::format::open_file(path, writable)?, path, writable)
    }

    /// Uses an open file as a qcow2 image; `path` names it in messages.
    pub fn from_file(file: File, path: &Path, writable: bool) -> Result<Qcow2Disk> {
        let _guard = OpeningGuard::enter(path)?;
        let len = file_len(&file, path)?;
        let (header, head) = read_header(&file, path, len)?;
        let cs = header.cluster_size();
        let l1_bytes = header.l1_size as u64 * 8;
        if header.l1_table_offset.saturating_add(l1_bytes) > len {
            return Err(Error::corrupt(
                path,
                format!(
                    "L1 table at offset {} ({} entries) extends past the end of the file ({len} bytes)",
                    header.l1_table_offset, header.l1_size
                ),
            ));
        }
        let rt_bytes = header.refcount_table_clusters as u64 * cs;
        if header.refcount_table_offset.saturating_add(rt_bytes) > len {
            return Err(Error::corrupt(
                path,
                format!(
                    "refcount table at offset {} ({} clusters) extends past the end of the file ({len} bytes)",
                    header.refcount_table_offset, header.refcount_table_clusters
                ),
            ));
        }
        let mut raw = vec![0u8; l1_bytes as usize];
        read_exact_at(&file, path, &mut raw, header.l1_table_offset, "L1 table")?;
        let l1: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let backing_name = if header.backing_file_offset != 0 && header.backing_file_size > 0 {
            let start = header.backing_file_offset as usize;
            let end = start + header.backing_file_size as usize;
            let bytes = head.get(start..end).ok_or_else(|| {
                Error::corrupt(
                    path,
                    format!("header: backing file name at offset {start} extends past the end of the file"),
                )
            })?;
            Some(
                String::from_utf8(bytes.to_vec())
                    .map_err(|_| Error::corrupt(path, "header: backing file name is not UTF-8"))?,
            )
        } else {
            None
        };
        let backing = match &backing_name {
            Some(name) => Some(open_backing(path, name, header.backing_format.as_deref())?),
            None => None,
        };
        let mut disk = Qcow2Disk {
            path: path.to_path_buf(),
            file,
            writable,
            header,
            backing_name,
            backing,
            l1,
            dirty_l2: HashMap::new(),
            cache: Mutex::new(L2Cache::default()),
            last_compressed: Mutex::new(None),
            file_end: len,
            meta: None,
        };
        if writable {
            disk.meta = Some(write::Meta::load(&disk)?);
        }
        Ok(disk)
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    fn cluster_bits(&self) -> u32 {
        self.header.cluster_bits
    }

    fn cluster_size(&self) -> u64 {
        self.header.cluster_size()
    }

    /// u64 words per L2 entry: 1, or 2 with extended entries.
    fn stride(&self) -> usize {
        if self.header.extended_l2() {
            2
        } else {
            1
        }
    }

    /// The L2 table for L1 index `i`, or `None` when the L1 entry is empty.
    fn l2_table(&self, i: u64) -> Result<Option<Arc<Vec<u64>>>> {
        if let Some(t) = self.dirty_l2.get(&i) {
            return Ok(Some(t.clone()));
        }
        let Some(&entry) = self.l1.get(i as usize) else {
            return Ok(None);
        };
        let host = entry & l2::OFFSET_MASK;
        if host == 0 {
            return Ok(None);
        }
        let cs = self.cluster_size();
        if host % cs != 0 {
            return Err(Error::corrupt(
                &self.path,
                format!("L1 entry {i}: L2 table offset {host} is not aligned to a cluster"),
            ));
        }
        if host.saturating_add(cs) > self.file_end {
            return Err(Error::corrupt(
                &self.path,
                format!(
                    "L1 entry {i}: L2 table at offset {host} lies past the end of the file ({} bytes)",
                    self.file_end
                ),
            ));
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = cache.get(host) {
            return Ok(Some(t));
        }
        let mut raw = vec![0u8; cs as usize];
        read_exact_at(
            &self.file,
            &self.path,
            &mut raw,
            host,
            format_args!("L2 table {i}"),
        )?;
        let table: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let table = Arc::new(table);
        cache.insert(host, table.clone());
        Ok(Some(table))
    }

    /// Where each part of `[offset, offset+len)` reads from, as merged pieces.
    fn pieces(&self, offset: u64, len: u64) -> Result<Vec<Piece>> {
        let cb = self.cluster_bits();
        let cs = self.cluster_size();
        let per_table = self.header.l2_entries();
        let stride = self.stride();
        let extended = self.header.extended_l2();
        let zero_flag = self.header.version >= 3 && !extended;
        let end = offset + len;
        let mut out = Vec::new();
        let mut pos = offset;
        let mut current: Option<(u64, Option<Arc<Vec<u64>>>)> = None;
        while pos < end {
            let ci = pos >> cb;
            let within = pos & (cs - 1);
            let l1i = ci / per_table;
            let l2i = (ci % per_table) as usize;
            if current.as_ref().is_none_or(|(i, _)| *i != l1i) {
                current = Some((l1i, self.l2_table(l1i)?));
            }
            let table = current.as_ref().and_then(|(_, t)| t.as_ref());
            let Some(table) = table else {
                // No L2 table: the whole range it would map is unallocated.
                let range_end = ((l1i + 1) * per_table) << cb;
                let n = range_end.min(end) - pos;
                push_piece(
                    &mut out,
                    Piece {
                        guest: pos,
                        len: n,
                        source: Source::Backing,
                    },
                );
                pos += n;
                continue;
            };
            let n = (cs - within).min(end - pos);
            let entry = table.get(l2i * stride).copied().unwrap_or(0);
            let cluster = l2::decode(entry, cb, zero_flag);
            let bad = |what: String| {
                Error::corrupt(&self.path, format!("L2 table {l1i}, entry {l2i}: {what}"))
            };
            if let Cluster::Normal { host, .. } = cluster {
                if host % cs != 0 {
                    return Err(bad(format!(
                        "host offset {host} is not aligned to a cluster"
                    )));
                }
            }
            if let Cluster::Compressed { host, len } = cluster {
                if extended && table.get(l2i * 2 + 1).copied().unwrap_or(0) != 0 {
                    return Err(bad("a compressed cluster has a subcluster bitmap".into()));
                }
                push_piece(
                    &mut out,
                    Piece {
                        guest: pos,
                        len: n,
                        source: Source::Compressed {
                            host,
                            len,
                            cluster: ci,
                        },
                    },
                );
                pos += n;
                continue;
            }
            if !extended {
                let source = match cluster {
                    Cluster::Unallocated => Source::Backing,
                    Cluster::Zero { .. } => Source::Zero,
                    Cluster::Normal { host, .. } => Source::Host(host + within),
                    Cluster::Compressed { .. } => Source::Zero,
                };
                push_piece(
                    &mut out,
                    Piece {
                        guest: pos,
                        len: n,
                        source,
                    },
                );
                pos += n;
                continue;
            }
            if entry & l2::ZERO != 0 {
                return Err(bad("bit 0 is set in an extended L2 entry".into()));
            }
            let bitmap = table.get(l2i * 2 + 1).copied().unwrap_or(0);
            let sub = cs / l2::SUBCLUSTERS;
            let host = match cluster {
                Cluster::Normal { host, .. } => Some(host),
                _ => None,
            };
            let mut w = within;
            while w < within + n {
                let si = w / sub;
                let m = ((si + 1) * sub).min(within + n) - w;
                let state = l2::subcluster(bitmap, si).ok_or_else(|| {
                    bad(format!("subcluster {si} is marked both allocated and zero"))
                })?;
                let source = match (state, host) {
                    (Sub::Data, Some(h)) => Source::Host(h + w),
                    (Sub::Data, None) => {
                        return Err(bad(format!(
                            "subcluster {si} is allocated but the cluster has no host offset"
                        )))
                    }
                    (Sub::Zero, _) => Source::Zero,
                    (Sub::Unallocated, _) => Source::Backing,
                };
                push_piece(
                    &mut out,
                    Piece {
                        guest: pos + (w - within),
                        len: m,
                        source,
                    },
                );
                w += m;
            }
            pos += n;
        }
        Ok(out)
    }

    /// The decompressed bytes of the compressed cluster at `host`.
    fn decompressed(&self, host: u64, len: u64, cluster: u64) -> Result<Arc<Vec<u8>>> {
        {
            let last = self
                .last_compressed
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some((h, data)) = last.as_ref() {
                if *h == host {
                    return Ok(data.clone());
                }
            }
        }
        if host >= self.file_end {
            return Err(Error::corrupt(
                &self.path,
                format!(
                    "compressed cluster of guest cluster {cluster} at offset {host} lies past the end of the file"
                ),
            ));
        }
        // The last sector of a compressed cluster may stop short at the end of
        // the file.
        let n = len.min(self.file_end - host);
        let mut raw = vec![0u8; n as usize];
        read_exact_at(
            &self.file,
            &self.path,
            &mut raw,
            host,
            format_args!("compressed cluster of guest cluster {cluster}"),
        )?;
        let mut out = vec![0u8; self.cluster_size() as usize];
        compress::decompress(self.header.compression, &raw, &mut out).map_err(|e| {
            Error::corrupt(
                &self.path,
                format!("compressed cluster of guest cluster {cluster} at offset {host}: {e}"),
            )
        })?;
        let out = Arc::new(out);
        *self
            .last_compressed
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((host, out.clone()));
        Ok(out)
    }

    /// Reads `buf` from the backing file at `offset`; zeros past its end.
    fn read_backing(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let Some(b) = &self.backing else {
            buf.fill(0);
            return Ok(());
        };
        let avail = b
            .virtual_size()
            .saturating_sub(offset)
            .min(buf.len() as u64) as usize;
        let (head, tail) = buf.split_at_mut(avail);
        if !head.is_empty() {
            b.read_at(head, offset)?;
        }
        tail.fill(0);
        Ok(())
    }

    /// Reads `buf` at `offset` (inside the disk).
    fn read_inner(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let cs = self.cluster_size();
        for p in self.pieces(offset, buf.len() as u64)? {
            let at = (p.guest - offset) as usize;
            let dst = &mut buf[at..at + p.len as usize];
            match p.source {
                Source::Host(h) => read_exact_at(
                    &self.file,
                    &self.path,
                    dst,
                    h,
                    format_args!("data of guest offset {}", p.guest),
                )?,
                Source::Zero => dst.fill(0),
                Source::Backing => self.read_backing(dst, p.guest)?,
                Source::Compressed { host, len, cluster } => {
                    let data = self.decompressed(host, len, cluster)?;
                    let within = (p.guest & (cs - 1)) as usize;
                    let src = data.get(within..within + dst.len()).ok_or_else(|| {
                        Error::corrupt(&self.path, "compressed cluster shorter than a cluster")
                    })?;
                    dst.copy_from_slice(src);
                }
            }
        }
        Ok(())
    }

    /// [`Disk::map`], or [`Disk::own_map`] when `own`.
    fn map_layers(&self, offset: u64, len: u64, own: bool) -> Result<Vec<Extent>> {
        check_range(&self.path, offset, len, self.header.size)?;
        let mut out = Vec::new();
        for p in self.pieces(offset, len)? {
            let kind = match p.source {
                Source::Host(_) | Source::Compressed { .. } => ExtentKind::Data,
                Source::Zero => ExtentKind::Zero,
                Source::Backing => {
                    self.map_backing(&mut out, p.guest, p.len, own)?;
                    continue;
                }
            };
            push_extent(
                &mut out,
                Extent {
                    offset: p.guest,
                    length: p.len,
                    kind,
                },
            );
        }
        Ok(out)
    }

    fn map_backing(&self, out: &mut Vec<Extent>, offset: u64, len: u64, own: bool) -> Result<()> {
        let backing = if own { None } else { self.backing.as_deref() };
        crate::map_parent(backing, out, offset, len)
    }

    /// Counts data, compressed and zero guest clusters by walking every L2 table.
    fn census(&self) -> Result<(u64, u64, u64)> {
        let per_table = self.header.l2_entries();
        let total = self.header.size.div_ceil(self.cluster_size());
        let (mut data, mut compressed, mut zero) = (0, 0, 0);
        for i in 0..self.l1.len() as u64 {
            let Some(t) = self.l2_table(i)? else { continue };
            let n = total.saturating_sub(i * per_table).min(per_table);
            for j in 0..n as usize {
                let entry = t.get(j * self.stride()).copied().unwrap_or(0);
                let zero_flag = self.header.version >= 3 && !self.header.extended_l2();
                match l2::decode(entry, self.cluster_bits(), zero_flag) {
                    Cluster::Normal { .. } => data += 1,
                    Cluster::Compressed { .. } => compressed += 1,
                    Cluster::Zero { .. } => zero += 1,
                    Cluster::Unallocated => {
                        if self.header.extended_l2()
                            && t.get(j * 2 + 1).copied().unwrap_or(0) >> 32 == 0xffff_ffff
                        {
                            zero += 1;
                        }
                    }
                }
            }
        }
        Ok((data, compressed, zero))
    }
}

/// Reads and parses the header; returns it and the first cluster's bytes.
fn read_header(file: &File, path: &Path, len: u64) -> Result<(Header, Vec<u8>)> {
    let mut peek = vec![0u8; len.min(header::V3_HEADER_LEN as u64) as usize];
    read_exact_at(file, path, &mut peek, 0, "header")?;
    // Parsing the short read first checks cluster_bits before it sizes a buffer.
    let first = Header::parse(&peek, path).map(|h| h.cluster_size());
    let cs = match first {
        Ok(cs) => cs,
        Err(e) => {
            // Only a header whose extensions did not fit in the peek may be fine.
            let bits = peek
                .get(20..24)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            match bits {
                Some(b) if (header::MIN_CLUSTER_BITS..=header::MAX_CLUSTER_BITS).contains(&b) => {
                    1u64 << b
                }
                _ => return Err(e),
            }
        }
    };
    let mut head = vec![0u8; len.min(cs) as usize];
    read_exact_at(file, path, &mut head, 0, "header")?;
    let h = Header::parse(&head, path)?;
    Ok((h, head))
}

/// Opens the backing file `name` of the image at `path`, read-only: relative
/// names are relative to the image's folder.
fn open_backing(path: &Path, name: &str, format: Option<&str>) -> Result<Box<dyn Disk>> {
    if name.starts_with("json:") || name.contains("://") {
        return Err(Error::unsupported(
            path,
            format!(
                "backing file {name:?} is a protocol or JSON description, which is not supported"
            ),
        ));
    }
    let p = Path::new(name);
    let full = if p.is_absolute() {
        p.to_path_buf()
    } else {
        path.parent().unwrap_or(Path::new("")).join(p)
    };
    let wrap = |e: Error| -> Error {
        let why = match &e {
            Error::Io { source, .. } => format!("{e}: {source}"),
            _ => e.to_string(),
        };
        match e {
            Error::Unsupported { .. } => {
                Error::unsupported(path, format!("backing file {}: {why}", full.display()))
            }
            _ => Error::corrupt(path, format!("backing file {}: {why}", full.display())),
        }
    };
    let want = match format {
        Some("vpc") => Some("vhd"),
        other => other,
    };
    let disk: Box<dyn Disk> = match want {
        Some("raw") => Box::new(crate::raw::RawDisk::open(&full, false).map_err(wrap)?),
        _ => crate::format::open(&full, crate::OpenOptions::default()).map_err(wrap)?,
    };
    if let Some(f) = want {
        let known = ["raw", "vhd", "vhdx", "qcow2", "vmdk", "vdi"];
        let got = crate::format::sniff(&full).map_err(wrap)?.name();
        if known.contains(&f) && got != f && f != "raw" {
            return Err(Error::corrupt(
                path,
                format!(
                    "backing file {} is {got}, but the header says its format is {f}",
                    full.display()
                ),
            ));
        }
    }
    Ok(disk)
}

impl Disk for Qcow2Disk {
    fn virtual_size(&self) -> u64 {
        self.header.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(&self.path, offset, buf.len() as u64, self.header.size)?;
        self.read_inner(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly {
                path: self.path.clone(),
            });
        }
        check_range(&self.path, offset, buf.len() as u64, self.header.size)?;
        self.write_inner(buf, offset)
    }

    fn flush(&mut self) -> Result<()> {
        if self.writable {
            self.flush_inner()?;
        }
        Ok(())
    }

    fn prefetch(&self, offset: u64, len: u64) {
        if let Ok(pieces) = self.pieces(offset, len) {
            for p in pieces {
                if let Source::Host(h) = p.source {
                    prefetch(&self.file, h, p.len);
                }
            }
        }
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        self.map_layers(offset, len, false)
    }

    fn own_map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        self.map_layers(offset, len, true)
    }

    fn info(&self) -> Result<ImageInfo> {
        let h = &self.header;
        let (data, compressed, zero) = self.census()?;
        let mut chain = vec![crate::ChainLink {
            file: self.path.display().to_string(),
            format: "qcow2",
            kind: if self.backing.is_some() {
                "differencing"
            } else {
                "dynamic"
            },
            unique_id: None,
        }];
        if let Some(b) = &self.backing {
            chain.extend(b.info()?.chain);
        }
        let details = Qcow2Info {
            version: h.version,
            compat: if h.version >= 3 { "1.1" } else { "0.10" }.to_string(),
            cluster_size: h.cluster_size(),
            refcount_bits: 1 << h.refcount_order,
            compression_type: h.compression.name().to_string(),
            backing_file: self.backing_name.clone(),
            backing_format: h.backing_format.clone(),
            extended_l2: h.extended_l2(),
            lazy_refcounts: h.compatible & header::COMPAT_LAZY_REFCOUNTS != 0,
            dirty: h.incompatible & header::INCOMPAT_DIRTY != 0,
            corrupt: h.incompatible & header::INCOMPAT_CORRUPT != 0,
            snapshots: h.nb_snapshots,
            bitmaps: h.has_bitmaps,
            compressed_clusters: compressed,
            zero_clusters: zero,
        };
        Ok(ImageInfo {
            file: self.path.display().to_string(),
            format: "qcow2",
            virtual_size: h.size,
            file_size: file_len(&self.file, &self.path)?,
            allocated_bytes: (data + compressed) * h.cluster_size(),
            host_allocated_bytes: host_allocated(&self.file, &self.path)?,
            chain,
            vhd: None,
            details: Some(crate::FormatDetails::Qcow2(details)),
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// Checks a CreateOptions' block size for qcow2: a power of two from 512 bytes
/// to 2 MiB.
pub(crate) fn cluster_bits_for(path: &Path, opts: &CreateOptions) -> Result<u32> {
    let cs = opts.block_size.unwrap_or(64 << 10);
    if !cs.is_power_of_two()
        || !(header::MIN_CLUSTER_BITS..=header::MAX_CLUSTER_BITS).contains(&cs.trailing_zeros())
    {
        return Err(Error::InvalidArgument(format!(
            "{}: qcow2 cluster size {cs} must be a power of two from 512 bytes to 2 MiB",
            path.display()
        )));
    }
    Ok(cs.trailing_zeros())
}

/// For [`check_file`]: a report started for `path`.
fn new_report(path: &Path) -> CheckReport {
    CheckReport::new(path, "qcow2")
}
