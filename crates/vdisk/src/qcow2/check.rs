//! Checking a qcow2 image: the header, the L1 and L2 tables and the refcount
//! structures must lie inside the file, and the refcounts rebuilt from every
//! reference (header, tables, data, snapshots) must equal the stored ones.

use super::header::{self, Header};
use super::l2::{self, Cluster};
use super::refcount::{self, REFTABLE_OFFSET_MASK};
use super::{new_report, read_header};
use crate::io::{file_len, read_exact_at};
use crate::ops::check::CheckReport;
use crate::{Error, Result};
use std::fs::File;
use std::path::Path;

/// Clusters an image may have for `check` to count their references.
const MAX_CHECK_CLUSTERS: u64 = 1 << 28;
/// Problems listed one by one; more are summed up.
const MAX_LISTED: usize = 50;
/// Snapshots read at most.
const MAX_SNAPSHOTS: u32 = 65536;

struct Walk<'a> {
    file: &'a File,
    path: &'a Path,
    h: &'a Header,
    len: u64,
    /// References found to each cluster of the file.
    refs: Vec<u32>,
    /// Stored refcounts of each cluster of the file (saturated).
    stored: Vec<u32>,
    report: CheckReport,
    listed: usize,
    unlisted: usize,
    data_clusters: u64,
}

impl Walk<'_> {
    fn problem(&mut self, structure: &str, message: String) {
        if self.listed < MAX_LISTED {
            self.listed += 1;
            self.report.problem(structure, message);
        } else {
            self.unlisted += 1;
            self.report.clean = false;
        }
    }

    fn cs(&self) -> u64 {
        self.h.cluster_size()
    }

    /// Counts a reference to the `n` bytes at `off` (whole clusters), made by `what`.
    /// Returns false when they lie outside the file.
    fn reference(&mut self, structure: &str, what: &str, off: u64, n: u64) -> bool {
        let cs = self.cs();
        if off
            .checked_add(n)
            .is_none_or(|e| e > self.len.div_ceil(cs) * cs)
        {
            self.problem(
                structure,
                format!(
                    "{what} at offset {off} ({n} bytes) lies past the end of the file ({} bytes)",
                    self.len
                ),
            );
            return false;
        }
        let first = off / cs;
        let last = (off + n.max(1) - 1) / cs;
        for c in first..=last {
            if let Some(r) = self.refs.get_mut(c as usize) {
                *r = r.saturating_add(1);
            }
        }
        true
    }

    fn stored(&self, off: u64) -> u32 {
        self.stored
            .get((off / self.cs()) as usize)
            .copied()
            .unwrap_or(0)
    }

    fn read_table(&mut self, off: u64, what: &str) -> Option<Vec<u64>> {
        let mut raw = vec![0u8; self.cs() as usize];
        match read_exact_at(self.file, self.path, &mut raw, off, what) {
            Ok(()) => Some(
                raw.chunks_exact(8)
                    .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect(),
            ),
            Err(e) => {
                self.problem("L2 table", e.to_string());
                None
            }
        }
    }

    /// Counts the references of an L1 table of `entries` entries at `off`; the
    /// active one also has its COPIED flags checked.
    fn walk_l1(&mut self, name: &str, off: u64, entries: u64, active: bool) {
        let cs = self.cs();
        if off % cs != 0 {
            self.problem(
                "L1 table",
                format!("{name} at offset {off} is not aligned to a cluster"),
            );
            return;
        }
        if !self.reference("L1 table", name, off, (entries * 8).max(1)) {
            return;
        }
        let mut raw = vec![0u8; (entries * 8) as usize];
        if let Err(e) = read_exact_at(self.file, self.path, &mut raw, off, name) {
            self.problem("L1 table", e.to_string());
            return;
        }
        let extended = self.h.extended_l2();
        let zero_flag = self.h.version >= 3 && !extended;
        let stride = if extended { 2 } else { 1 };
        let cb = self.h.cluster_bits;
        for (i, c) in raw.chunks_exact(8).enumerate() {
            let e = u64::from_be_bytes(c.try_into().unwrap_or([0; 8]));
            let host = e & l2::OFFSET_MASK;
            if host == 0 {
                continue;
            }
            let what = format!("{name} entry {i}: L2 table");
            if host % cs != 0 {
                self.problem(
                    "L1 table",
                    format!("{what} offset {host} is not aligned to a cluster"),
                );
                continue;
            }
            if !self.reference("L1 table", &what, host, cs) {
                continue;
            }
            if active && (e & l2::COPIED != 0) != (self.stored(host) == 1) {
                self.problem(
                    "L1 table",
                    format!(
                        "{what} at {host}: COPIED flag does not match its refcount {}",
                        self.stored(host)
                    ),
                );
            }
            let Some(t) = self.read_table(host, &what) else {
                continue;
            };
            for j in 0..t.len() / stride {
                let entry = t.get(j * stride).copied().unwrap_or(0);
                let where_ = format!("L2 table {i} ({name}) entry {j}");
                let cluster = l2::decode(entry, cb, zero_flag);
                let owned = match cluster {
                    Cluster::Normal { host, .. } | Cluster::Zero { host } => host,
                    _ => 0,
                };
                match cluster {
                    Cluster::Unallocated
                        if extended
                            && t.get(j * 2 + 1).copied().unwrap_or(0) & l2::ALL_ALLOCATED != 0 =>
                    {
                        self.problem(
                            "L2 table",
                            format!("{where_}: subclusters allocated without a host cluster"),
                        );
                    }
                    Cluster::Normal { .. } | Cluster::Zero { .. } if owned != 0 => {
                        let host = owned;
                        let copied = entry & l2::COPIED != 0;
                        if host % cs != 0 {
                            self.problem(
                                "L2 table",
                                format!("{where_}: host offset {host} is not aligned to a cluster"),
                            );
                            continue;
                        }
                        if !self.reference("L2 table", &where_, host, cs) {
                            continue;
                        }
                        self.data_clusters += 1;
                        if active && copied != (self.stored(host) == 1) {
                            self.problem(
                                "L2 table",
                                format!("{where_}: COPIED flag does not match refcount {} of cluster at {host}", self.stored(host)),
                            );
                        }
                    }
                    Cluster::Compressed { host, len } => {
                        let span = l2::compressed_span(host, len, cb);
                        let (a, b) = (span.start << cb, span.end << cb);
                        if self.reference(
                            "L2 table",
                            &format!("{where_}: compressed data"),
                            a,
                            b - a,
                        ) {
                            self.data_clusters += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Checks the qcow2 image in `file`.
pub fn check_file(file: &File, path: &Path) -> Result<CheckReport> {
    let mut report = new_report(path);
    let len = file_len(file, path)?;
    let (h, _) = match read_header(file, path, len) {
        Ok(x) => x,
        Err(Error::Corrupt { what, .. }) => {
            report.problem("header", what);
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    report.virtual_size = Some(h.size);
    let cs = h.cluster_size();
    let nclusters = len.div_ceil(cs);
    if nclusters > MAX_CHECK_CLUSTERS {
        return Err(Error::unsupported(
            path,
            format!(
                "the file has {nclusters} clusters, more than check counts ({MAX_CHECK_CLUSTERS})"
            ),
        ));
    }
    let mut w = Walk {
        file,
        path,
        h: &h,
        len,
        refs: vec![0; nclusters as usize],
        stored: vec![0; nclusters as usize],
        report,
        listed: 0,
        unlisted: 0,
        data_clusters: 0,
    };
    // The stored refcounts first: the COPIED flags are checked against them.
    let rt_off = h.refcount_table_offset;
    let rt_bytes = h.refcount_table_clusters as u64 * cs;
    let mut beyond = 0u64;
    if w.reference("refcount table", "refcount table", rt_off, rt_bytes) {
        let mut raw = vec![0u8; rt_bytes as usize];
        read_exact_at(file, path, &mut raw, rt_off, "refcount table")?;
        let rpb = refcount::entries_per_block(h.cluster_bits, h.refcount_order);
        let mut block = vec![0u8; cs as usize];
        for (ti, c) in raw.chunks_exact(8).enumerate() {
            let e = u64::from_be_bytes(c.try_into().unwrap_or([0; 8]));
            let off = e & REFTABLE_OFFSET_MASK;
            if off == 0 {
                continue;
            }
            let what = format!("refcount table entry {ti}: refcount block");
            if e & !REFTABLE_OFFSET_MASK != 0 || off % cs != 0 {
                w.problem(
                    "refcount table",
                    format!("{what} offset {e:#x} is not aligned to a cluster"),
                );
                continue;
            }
            if off >= rt_off && off < rt_off + rt_bytes {
                w.problem(
                    "refcount table",
                    format!("{what} at {off} lies inside the refcount table itself"),
                );
            }
            if !w.reference("refcount table", &what, off, cs) {
                continue;
            }
            if let Err(e) = read_exact_at(file, path, &mut block, off, &what) {
                w.problem("refcount table", e.to_string());
                continue;
            }
            let first = ti as u64 * rpb;
            for i in 0..rpb {
                let v = refcount::get(&block, h.refcount_order, i);
                match w.stored.get_mut((first + i) as usize) {
                    Some(s) => *s = v.min(u32::MAX as u64) as u32,
                    None => beyond += u64::from(v != 0),
                }
            }
        }
    }
    // Every reference.
    w.reference("header", "header", 0, cs);
    w.walk_l1("active L1 table", h.l1_table_offset, h.l1_size as u64, true);
    if h.nb_snapshots > 0 {
        walk_snapshots(&mut w);
    }
    // Compare.
    let dirty = h.incompatible & header::INCOMPAT_DIRTY != 0;
    let mut leaks = 0u64;
    for c in 0..nclusters as usize {
        let (found, stored) = (w.refs[c], w.stored[c]);
        if found == stored {
            continue;
        }
        let off = c as u64 * cs;
        if dirty {
            continue;
        }
        if found > stored {
            let msg = if stored == 0 {
                format!("cluster at offset {off} is referenced {found} times but its refcount is 0")
            } else {
                format!("cluster at offset {off} is referenced {found} times but its refcount is {stored}")
            };
            w.problem("refcount", msg);
        } else {
            leaks += 1;
        }
    }
    let mut report = std::mem::replace(&mut w.report, new_report(path));
    if w.unlisted > 0 {
        report.problem(
            "refcount",
            format!("{} more problems not listed", w.unlisted),
        );
    }
    if dirty {
        report.note("the dirty bit is set: refcounts may be stale until qemu repairs them");
    }
    if h.has_bitmaps {
        report.note("the image has persistent bitmaps, whose clusters are not counted; leaks are not reported");
    } else if leaks > 0 {
        report.note(format!(
            "{leaks} clusters leaked (counted but not referenced)"
        ));
    }
    if beyond > 0 {
        report.note(format!(
            "{beyond} clusters past the end of the file have a refcount"
        ));
    }
    report.allocated_blocks = Some(w.data_clusters);
    Ok(report)
}

/// Counts the snapshot table and each snapshot's L1 and L2 tables and data.
fn walk_snapshots(w: &mut Walk) {
    let h = w.h;
    if h.nb_snapshots > MAX_SNAPSHOTS {
        w.problem(
            "snapshot table",
            format!("{} snapshots is more than {MAX_SNAPSHOTS}", h.nb_snapshots),
        );
        return;
    }
    let mut at = h.snapshots_offset;
    let mut tables = Vec::new();
    for i in 0..h.nb_snapshots {
        let mut fixed = [0u8; 40];
        if let Err(e) = read_exact_at(w.file, w.path, &mut fixed, at, format_args!("snapshot {i}"))
        {
            w.problem("snapshot table", e.to_string());
            return;
        }
        let be32 =
            |o: usize| u32::from_be_bytes([fixed[o], fixed[o + 1], fixed[o + 2], fixed[o + 3]]);
        let l1_off = u64::from_be_bytes(fixed[0..8].try_into().unwrap_or([0; 8]));
        let l1_size = be32(8);
        let id_len = u16::from_be_bytes([fixed[12], fixed[13]]) as u64;
        let name_len = u16::from_be_bytes([fixed[14], fixed[15]]) as u64;
        let extra = be32(36) as u64;
        let size = (40 + extra + id_len + name_len).div_ceil(8) * 8;
        if l1_size as u64 * 8 > header::MAX_L1_BYTES {
            w.problem(
                "snapshot table",
                format!("snapshot {i}: l1_size {l1_size} is too large"),
            );
        } else {
            tables.push((i, l1_off, l1_size as u64));
        }
        at += size;
    }
    let n = at - h.snapshots_offset;
    w.reference("snapshot table", "snapshot table", h.snapshots_offset, n);
    for (i, off, size) in tables {
        w.walk_l1(&format!("snapshot {i} L1 table"), off, size, false);
    }
}
