//! Writing: cluster allocation, refcounts, and the flush that makes it all
//! durable in an order that survives a crash.
//!
//! New clusters (data, L2 tables, refcount blocks, a grown refcount table) are
//! always taken at the end of the file, so that a cluster freed in memory is
//! never reused while the file may still point at it. Data is written at once;
//! metadata changes stay in memory until a flush, which writes them in this
//! order, with an fsync after each step that wrote something:
//!
//! 1. refcount blocks (new counts only ever grow here), so that every cluster
//!    is counted before anything refers to it, and the data is durable;
//! 2. the refcount table, then the header fields that locate it;
//! 3. L2 tables, which now point only at durable data;
//! 4. the L1 table, which now points only at durable L2 tables;
//! 5. decrements for clusters no longer referenced (a replaced compressed
//!    cluster, an old refcount table), now that nothing durable refers to them.
//!
//! A crash between steps leaves clusters counted but unreferenced: leaks, which
//! `qemu-img check` reports as leaks, never as corruption.

use super::l2::{self, Cluster};
use super::refcount::{self, REFTABLE_OFFSET_MASK};
use super::{header, Qcow2Disk};
use crate::io::{read_exact_at, sync_data, write_all_at};
use crate::{Error, Result};
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// Bytes of changed metadata held in memory before a write flushes them.
const DIRTY_LIMIT: u64 = 32 << 20;

/// What the allocator needs from the image besides its own state.
struct Ctx<'a> {
    file: &'a File,
    path: &'a Path,
    cluster_bits: u32,
    order: u32,
}

impl Ctx<'_> {
    fn cs(&self) -> u64 {
        1 << self.cluster_bits
    }
}

/// Allocation state of a writable image.
pub(super) struct Meta {
    reftable: Vec<u64>,
    reftable_offset: u64,
    reftable_clusters: u64,
    reftable_dirty: bool,
    header_dirty: bool,
    /// Refcount blocks read or made, by refcount table index.
    blocks: HashMap<u64, Vec<u8>>,
    dirty_blocks: BTreeSet<u64>,
    dirty_l1: bool,
    /// Clusters whose refcount drops by one once the references are durable.
    frees: Vec<u64>,
    /// Where the next cluster goes.
    next_free: u64,
    dirty_bytes: u64,
}

impl Meta {
    /// Reads the refcount table of `disk`, refusing images that cannot be
    /// written safely.
    pub(super) fn load(disk: &Qcow2Disk) -> Result<Meta> {
        let h = &disk.header;
        let path = &disk.path;
        if h.incompatible & header::INCOMPAT_CORRUPT != 0 {
            return Err(Error::unsupported(
                path,
                "qemu marked the image corrupt; it can only be opened read-only (repair it with qemu-img check -r all)",
            ));
        }
        if h.incompatible & header::INCOMPAT_DIRTY != 0 {
            return Err(Error::unsupported(
                path,
                "the dirty bit is set, so refcounts may be stale; repair with qemu-img check -r all before writing",
            ));
        }
        if h.nb_snapshots != 0 {
            return Err(Error::unsupported(
                path,
                "writing to an image with internal snapshots is not supported",
            ));
        }
        let cs = h.cluster_size();
        let n = h.refcount_table_clusters as u64 * cs;
        let mut raw = vec![0u8; n as usize];
        read_exact_at(
            &disk.file,
            path,
            &mut raw,
            h.refcount_table_offset,
            "refcount table",
        )?;
        let reftable = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        if h.autoclear != 0 {
            // Bitmaps and other autoclear features are not kept up to date
            // here: clearing their bits tells readers they are stale.
            write_all_at(&disk.file, path, &0u64.to_be_bytes(), 88)?;
            sync_data(&disk.file, path)?;
        }
        Ok(Meta {
            reftable,
            reftable_offset: h.refcount_table_offset,
            reftable_clusters: h.refcount_table_clusters as u64,
            reftable_dirty: false,
            header_dirty: false,
            blocks: HashMap::new(),
            dirty_blocks: BTreeSet::new(),
            dirty_l1: false,
            frees: Vec::new(),
            next_free: disk.file_end.div_ceil(cs) * cs,
            dirty_bytes: 0,
        })
    }

    /// Whether metadata waits to be written.
    fn is_dirty(&self) -> bool {
        !self.dirty_blocks.is_empty()
            || self.reftable_dirty
            || self.header_dirty
            || self.dirty_l1
            || !self.frees.is_empty()
    }

    /// Loads refcount block `ti`, which the table says exists.
    fn load_block(&mut self, ctx: &Ctx, ti: u64, file_end: u64) -> Result<()> {
        if self.blocks.contains_key(&ti) {
            return Ok(());
        }
        let cs = ctx.cs();
        let off = self.reftable.get(ti as usize).copied().unwrap_or(0) & REFTABLE_OFFSET_MASK;
        if off % cs != 0 || off.saturating_add(cs) > file_end {
            return Err(Error::corrupt(
                ctx.path,
                format!("refcount table entry {ti}: block offset {off} is unaligned or past the end of the file"),
            ));
        }
        let mut b = vec![0u8; cs as usize];
        read_exact_at(
            ctx.file,
            ctx.path,
            &mut b,
            off,
            format_args!("refcount block {ti}"),
        )?;
        self.blocks.insert(ti, b);
        Ok(())
    }

    /// Adds `delta` to the refcount of cluster `c`, making refcount blocks
    /// (and growing the table) as needed.
    fn adjust(&mut self, ctx: &Ctx, c: u64, delta: i64, file_end: u64) -> Result<u64> {
        let rpb = refcount::entries_per_block(ctx.cluster_bits, ctx.order);
        let (ti, bi) = (c / rpb, c % rpb);
        if ti >= self.reftable.len() as u64 {
            self.grow_table(ctx, ti, file_end)?;
        }
        let entry = self.reftable.get(ti as usize).copied().unwrap_or(0) & REFTABLE_OFFSET_MASK;
        if entry == 0 {
            if delta < 0 {
                return Err(Error::corrupt(
                    ctx.path,
                    format!("cluster {c} is being freed but has no refcount block"),
                ));
            }
            let off = self.next_free;
            self.next_free += ctx.cs();
            self.blocks.insert(ti, vec![0u8; ctx.cs() as usize]);
            if let Some(e) = self.reftable.get_mut(ti as usize) {
                *e = off;
            }
            self.reftable_dirty = true;
            self.dirty_blocks.insert(ti);
            self.dirty_bytes += ctx.cs();
            self.adjust(ctx, off >> ctx.cluster_bits, 1, file_end)?;
        } else {
            self.load_block(ctx, ti, file_end)?;
        }
        let block = self
            .blocks
            .get_mut(&ti)
            .ok_or_else(|| Error::corrupt(ctx.path, format!("refcount block {ti} vanished")))?;
        let v = refcount::get(block, ctx.order, bi);
        let new = if delta >= 0 {
            v.checked_add(delta as u64)
                .filter(|&n| n <= refcount::max_refcount(ctx.order))
                .ok_or_else(|| {
                    Error::unsupported(
                        ctx.path,
                        format!(
                            "refcount of cluster {c} would overflow its {} bits",
                            1 << ctx.order
                        ),
                    )
                })?
        } else {
            v.checked_sub(delta.unsigned_abs()).ok_or_else(|| {
                Error::corrupt(
                    ctx.path,
                    format!("refcount of cluster {c} would drop below zero"),
                )
            })?
        };
        refcount::set(block, ctx.order, bi, new);
        if self.dirty_blocks.insert(ti) {
            self.dirty_bytes += ctx.cs();
        }
        Ok(v)
    }

    /// Moves the refcount table to a bigger place at the end of the file, so
    /// that it has entry `min_index`.
    fn grow_table(&mut self, ctx: &Ctx, min_index: u64, file_end: u64) -> Result<()> {
        let cs = ctx.cs();
        let per_cluster = cs / 8;
        let entries = (min_index + 1)
            .max(self.reftable.len() as u64 * 2)
            .div_ceil(per_cluster)
            * per_cluster;
        let clusters = entries / per_cluster;
        if clusters * cs > header::MAX_REFTABLE_BYTES {
            return Err(Error::unsupported(
                ctx.path,
                "the refcount table would grow past the 8 MiB qemu accepts",
            ));
        }
        let start = self.next_free;
        self.next_free += clusters * cs;
        let old = self.reftable_offset >> ctx.cluster_bits;
        self.frees.extend(old..old + self.reftable_clusters);
        self.reftable.resize(entries as usize, 0);
        self.reftable_offset = start;
        self.reftable_clusters = clusters;
        self.reftable_dirty = true;
        self.header_dirty = true;
        for c in 0..clusters {
            self.adjust(ctx, (start >> ctx.cluster_bits) + c, 1, file_end)?;
        }
        Ok(())
    }

    /// Takes `n` contiguous new clusters; returns the first one's offset.
    fn alloc(&mut self, ctx: &Ctx, n: u64, file_end: u64) -> Result<u64> {
        let start = self.next_free;
        self.next_free += n * ctx.cs();
        for c in 0..n {
            let old = self.adjust(ctx, (start >> ctx.cluster_bits) + c, 1, file_end)?;
            if old != 0 {
                return Err(Error::corrupt(
                    ctx.path,
                    format!(
                        "cluster at offset {} past the end of the file already has refcount {old}",
                        start + c * ctx.cs()
                    ),
                ));
            }
        }
        Ok(start)
    }
}

/// One data write to issue: `len` bytes from `src` at host offset `host`.
enum Src {
    /// From the caller's buffer, at this index.
    Caller(usize),
    /// From a whole merged cluster.
    Own(Vec<u8>),
}

struct DataWrite {
    host: u64,
    len: u64,
    src: Src,
}

impl Qcow2Disk {
    /// Makes L2 table `l1i` one that may be changed (a dirty copy, or a new one).
    fn l2_for_write(&mut self, l1i: u64) -> Result<()> {
        if self.dirty_l2.contains_key(&l1i) {
            return Ok(());
        }
        let entry = self.l1.get(l1i as usize).copied().unwrap_or(0);
        let table = match self.l2_table(l1i)? {
            Some(t) => {
                if entry & l2::COPIED == 0 {
                    return Err(Error::unsupported(
                        &self.path,
                        format!("L2 table {l1i} is shared (its L1 entry lacks the COPIED flag); writing to it is not supported"),
                    ));
                }
                self.cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(entry & l2::OFFSET_MASK);
                t
            }
            None => {
                let ctx = Ctx {
                    file: &self.file,
                    path: &self.path,
                    cluster_bits: self.header.cluster_bits,
                    order: self.header.refcount_order,
                };
                let meta = self.meta.as_mut().ok_or(Error::ReadOnly {
                    path: self.path.clone(),
                })?;
                let host = meta.alloc(&ctx, 1, self.file_end)?;
                meta.dirty_l1 = true;
                if let Some(e) = self.l1.get_mut(l1i as usize) {
                    *e = host | l2::COPIED;
                } else {
                    return Err(Error::corrupt(
                        &self.path,
                        format!("L1 index {l1i} is past the L1 table"),
                    ));
                }
                Arc::new(vec![0u64; (self.cluster_size() / 8) as usize])
            }
        };
        self.dirty_l2.insert(l1i, table);
        let cs = self.cluster_size();
        if let Some(m) = self.meta.as_mut() {
            m.dirty_bytes += cs;
        }
        Ok(())
    }

    /// Grows the file to cover every allocated cluster, so that reads of a
    /// cluster not yet written in full see zeros, not the end of the file.
    fn cover_allocations(&mut self) -> Result<()> {
        let next = self.meta.as_ref().map_or(0, |m| m.next_free);
        if next > self.file_end {
            self.file
                .set_len(next)
                .map_err(|e| Error::io(&self.path, "resize", e))?;
            self.file_end = next;
        }
        Ok(())
    }

    /// Writes `buf` at `offset` (inside the disk).
    pub(super) fn write_inner(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        let cb = self.header.cluster_bits;
        let cs = self.cluster_size();
        let per_table = self.header.l2_entries();
        let stride = self.stride();
        let extended = self.header.extended_l2();
        let zero_flag = self.header.version >= 3 && !extended;
        let end = offset + buf.len() as u64;
        let mut writes: Vec<DataWrite> = Vec::new();
        let mut pos = offset;
        while pos < end {
            let ci = pos >> cb;
            let within = pos & (cs - 1);
            let n = (cs - within).min(end - pos);
            let at = (pos - offset) as usize;
            let l1i = ci / per_table;
            let l2i = (ci % per_table) as usize;
            let table = self.l2_table(l1i)?;
            let entry = table
                .as_ref()
                .and_then(|t| t.get(l2i * stride).copied())
                .unwrap_or(0);
            let bitmap = if extended {
                table
                    .as_ref()
                    .and_then(|t| t.get(l2i * 2 + 1).copied())
                    .unwrap_or(0)
            } else {
                0
            };
            // The table is changed below through its map entry, which must then
            // be its only reference, or the change would copy it.
            drop(table);
            let cluster = l2::decode(entry, cb, zero_flag);
            // Rewriting a cluster the image owns alone: in place.
            if let Cluster::Normal { host, copied: true } = cluster {
                if host % cs != 0 {
                    return Err(Error::corrupt(
                        &self.path,
                        format!("L2 table {l1i}, entry {l2i}: host offset {host} is not aligned to a cluster"),
                    ));
                }
                if !extended || bitmap & l2::ALL_ALLOCATED == l2::ALL_ALLOCATED {
                    push_write(&mut writes, host + within, n, Src::Caller(at));
                    pos += n;
                    continue;
                }
            }
            // Otherwise the cluster gets a new entry, and perhaps a new host cluster.
            let whole = within == 0 && n == cs;
            let holds_nothing = match cluster {
                Cluster::Zero { .. } => true,
                Cluster::Unallocated => self.backing.is_none(),
                _ => false,
            };
            let reuse = match cluster {
                Cluster::Normal { host, copied: true } => Some(host),
                Cluster::Zero { host, .. } if host != 0 && entry & l2::COPIED != 0 => Some(host),
                _ => None,
            };
            let merged = if whole || (holds_nothing && reuse.is_none()) {
                None
            } else {
                let mut c = vec![0u8; cs as usize];
                let guest = ci << cb;
                let avail = (self.header.size - guest).min(cs) as usize;
                self.read_inner(&mut c[..avail], guest)?;
                c[within as usize..(within + n) as usize]
                    .copy_from_slice(&buf[at..at + n as usize]);
                Some(c)
            };
            self.l2_for_write(l1i)?;
            let ctx = Ctx {
                file: &self.file,
                path: &self.path,
                cluster_bits: self.header.cluster_bits,
                order: self.header.refcount_order,
            };
            let meta = self.meta.as_mut().ok_or(Error::ReadOnly {
                path: self.path.clone(),
            })?;
            let host = match reuse {
                Some(h) => h,
                None => {
                    let h = meta.alloc(&ctx, 1, self.file_end)?;
                    match cluster {
                        Cluster::Compressed { host, len } => {
                            meta.frees.extend(l2::compressed_span(host, len, cb));
                        }
                        Cluster::Normal { host, .. } | Cluster::Zero { host } if host != 0 => {
                            meta.frees.push(host >> cb);
                        }
                        _ => {}
                    }
                    h
                }
            };
            match merged {
                Some(c) => push_write(&mut writes, host, cs, Src::Own(c)),
                None if whole => push_write(&mut writes, host, cs, Src::Caller(at)),
                None => {
                    // A fresh cluster past the old end of the file reads as
                    // zeros already; a reused one must be written whole.
                    push_write(&mut writes, host + within, n, Src::Caller(at));
                }
            }
            let t = self
                .dirty_l2
                .get_mut(&l1i)
                .ok_or_else(|| Error::corrupt(&self.path, format!("L2 table {l1i} vanished")))?;
            let t = Arc::make_mut(t);
            if let Some(e) = t.get_mut(l2i * stride) {
                *e = l2::normal_entry(host);
            }
            if extended {
                if let Some(b) = t.get_mut(l2i * 2 + 1) {
                    *b = l2::ALL_ALLOCATED;
                }
            }
            pos += n;
        }
        self.cover_allocations()?;
        for w in writes {
            let data = match &w.src {
                Src::Caller(at) => &buf[*at..*at + w.len as usize],
                Src::Own(c) => &c[..],
            };
            write_all_at(&self.file, &self.path, data, w.host)?;
        }
        *self
            .last_compressed
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        if self
            .meta
            .as_ref()
            .is_some_and(|m| m.dirty_bytes > DIRTY_LIMIT)
        {
            self.flush_inner()?;
        }
        Ok(())
    }

    /// Writes every metadata change, in crash-safe order (see the module notes).
    pub(super) fn flush_inner(&mut self) -> Result<()> {
        let cs = self.cluster_size();
        let Some(mut meta) = self.meta.take() else {
            return Ok(());
        };
        let r = self.flush_with(&mut meta, cs);
        self.meta = Some(meta);
        r
    }

    fn flush_with(&mut self, meta: &mut Meta, cs: u64) -> Result<()> {
        let (file, path) = (&self.file, &self.path);
        let dirty_l2 = !self.dirty_l2.is_empty();
        if !meta.is_dirty() && !dirty_l2 {
            return sync_data(file, path);
        }
        // 1. Refcount blocks; the fsync makes the data durable too.
        write_blocks(file, path, meta)?;
        sync_data(file, path)?;
        // 2. The refcount table, then the header that locates it.
        if meta.reftable_dirty {
            let mut raw = Vec::with_capacity(meta.reftable.len() * 8);
            for e in &meta.reftable {
                raw.extend_from_slice(&e.to_be_bytes());
            }
            write_all_at(file, path, &raw, meta.reftable_offset)?;
            sync_data(file, path)?;
            meta.reftable_dirty = false;
        }
        if meta.header_dirty {
            let mut f = Vec::with_capacity(12);
            f.extend_from_slice(&meta.reftable_offset.to_be_bytes());
            f.extend_from_slice(&(meta.reftable_clusters as u32).to_be_bytes());
            write_all_at(file, path, &f, 48)?;
            sync_data(file, path)?;
            self.header.refcount_table_offset = meta.reftable_offset;
            self.header.refcount_table_clusters = meta.reftable_clusters as u32;
            meta.header_dirty = false;
        }
        // 3. L2 tables.
        if dirty_l2 {
            let mut done = Vec::new();
            for (&i, t) in &self.dirty_l2 {
                let host = self.l1.get(i as usize).copied().unwrap_or(0) & l2::OFFSET_MASK;
                let mut raw = Vec::with_capacity(cs as usize);
                for e in t.iter() {
                    raw.extend_from_slice(&e.to_be_bytes());
                }
                write_all_at(file, path, &raw, host)?;
                done.push((host, t.clone()));
            }
            sync_data(file, path)?;
            self.dirty_l2.clear();
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            for (host, t) in done {
                cache.insert(host, t);
            }
        }
        // 4. The L1 table.
        if meta.dirty_l1 {
            let mut raw = Vec::with_capacity(self.l1.len() * 8);
            for e in &self.l1 {
                raw.extend_from_slice(&e.to_be_bytes());
            }
            write_all_at(file, path, &raw, self.header.l1_table_offset)?;
            sync_data(file, path)?;
            meta.dirty_l1 = false;
        }
        // 5. Clusters nothing refers to any more.
        if !meta.frees.is_empty() {
            let ctx = Ctx {
                file,
                path,
                cluster_bits: self.header.cluster_bits,
                order: self.header.refcount_order,
            };
            for c in std::mem::take(&mut meta.frees) {
                meta.adjust(&ctx, c, -1, self.file_end)?;
            }
            write_blocks(file, path, meta)?;
            sync_data(file, path)?;
        }
        meta.dirty_bytes = 0;
        // Clean blocks are read again when needed; keep memory bounded.
        if meta.blocks.len() > 256 {
            meta.blocks.clear();
        }
        Ok(())
    }
}

/// Writes the dirty refcount blocks of `meta`.
fn write_blocks(file: &File, path: &Path, meta: &mut Meta) -> Result<()> {
    for ti in std::mem::take(&mut meta.dirty_blocks) {
        let off = meta.reftable.get(ti as usize).copied().unwrap_or(0) & REFTABLE_OFFSET_MASK;
        if let (Some(b), true) = (meta.blocks.get(&ti), off != 0) {
            write_all_at(file, path, b, off)?;
        }
    }
    Ok(())
}

/// Adds a data write, merging it into the last when both continue each other
/// in the file and in the caller's buffer.
fn push_write(writes: &mut Vec<DataWrite>, host: u64, len: u64, src: Src) {
    if let (Some(last), Src::Caller(at)) = (writes.last_mut(), &src) {
        if let Src::Caller(last_at) = last.src {
            if last.host + last.len == host && last_at + last.len as usize == *at {
                last.len += len;
                return;
            }
        }
    }
    writes.push(DataWrite { host, len, src });
}
