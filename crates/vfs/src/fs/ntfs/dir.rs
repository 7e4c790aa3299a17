//! Walking a directory's $I30 index: the B-tree nodes decoded by
//! [`super::index`], read from the $INDEX_ROOT and $INDEX_ALLOCATION
//! attributes, with a bound on depth, on entries and on revisits.

use super::index::{self, NodeEntry};
use super::{le64, ntfs_err, MAX_ENTRIES, MAX_INDEX_DEPTH, MAX_SMALL_VALUE};
use crate::region::Region;
use crate::{Error, Result};
use ntfs::{Ntfs, NtfsAttributeType, NtfsFile, NtfsFileFlags, NtfsReadSeek};
use std::cmp::Ordering;
use std::collections::HashSet;
use std::io::SeekFrom;

/// One code unit upper-cased by the volume's table, or by Unicode's simple
/// mapping when the table is missing.
pub(super) fn upper(u: u16, table: Option<&[u16]>) -> u16 {
    if let Some(t) = table {
        return t.get(u as usize).copied().unwrap_or(u);
    }
    let Some(c) = char::from_u32(u as u32) else {
        return u;
    };
    let mut up = c.to_uppercase();
    match (up.next(), up.next()) {
        (Some(one), None) if (one as u32) < 0x1_0000 => one as u32 as u16,
        _ => u,
    }
}

/// The $I30 collation: names compared code unit by code unit after
/// upper-casing.
pub(super) fn collate(a: &[u16], b: &[u16], table: Option<&[u16]>) -> Ordering {
    let a = a.iter().map(|&u| upper(u, table));
    let b = b.iter().map(|&u| upper(u, table));
    a.cmp(b)
}

/// A file record, loaded and checked to be in use.
pub(super) fn load<'n>(
    ntfs: &'n Ntfs,
    r: &mut Region,
    record: u64,
    what: &str,
) -> Result<NtfsFile<'n>> {
    let file = ntfs
        .file(r, record)
        .map_err(|e| ntfs_err(&format!("{what}: MFT record {record}"), e))?;
    if !file.flags().contains(NtfsFileFlags::IN_USE) {
        return Err(Error::Corrupt(format!(
            "{what}: MFT record {record} is not in use (a stale directory entry)"
        )));
    }
    Ok(file)
}

/// The whole value of the attribute `ty` named `attr` of `file`, refused when
/// longer than `max`; `None` when the file has no such attribute.
pub(super) fn small_value(
    file: &NtfsFile<'_>,
    r: &mut Region,
    ty: NtfsAttributeType,
    attr: &str,
    max: u64,
    what: &str,
) -> Result<Option<Vec<u8>>> {
    let err = |e| ntfs_err(what, e);
    let mut it = file.attributes();
    while let Some(item) = it.next(r) {
        let item = item.map_err(err)?;
        let a = item.to_attribute().map_err(err)?;
        if a.ty().ok() != Some(ty) || a.name().map_err(err)? != attr {
            continue;
        }
        let len = a.value_length();
        if len > max {
            return Err(Error::Corrupt(format!(
                "{what}: a {ty:?} value of {len} bytes, more than the {max} expected"
            )));
        }
        let mut v = a.value(r).map_err(err)?;
        // Bounded by `max`, checked above.
        let mut buf = vec![0u8; len as usize];
        v.read_exact(r, &mut buf).map_err(err)?;
        return Ok(Some(buf));
    }
    Ok(None)
}

/// A directory's $I30 index, ready to be walked.
pub(super) struct Dir<'a, 'n> {
    r: &'a mut Region,
    file: NtfsFile<'n>,
    /// The $INDEX_ROOT value.
    root: Vec<u8>,
    record_size: usize,
    /// Bytes per VCN of the $INDEX_ALLOCATION: a cluster, or 512 when index
    /// records are smaller than a cluster.
    vcn_bytes: u64,
    large: bool,
    what: String,
}

impl<'a, 'n> Dir<'a, 'n> {
    pub(super) fn open(
        ntfs: &'n Ntfs,
        r: &'a mut Region,
        record: u64,
        what: String,
    ) -> Result<Self> {
        let file = load(ntfs, r, record, &what)?;
        if !file.is_directory() {
            return Err(Error::NotDir(what));
        }
        let root = small_value(
            &file,
            r,
            NtfsAttributeType::IndexRoot,
            "$I30",
            MAX_SMALL_VALUE,
            &what,
        )?
        .ok_or_else(|| Error::Corrupt(format!("{what}: the directory has no $I30 index root")))?;
        let (record_size, large) =
            index::root_info(&root).map_err(|e| Error::Corrupt(format!("{what}: {e}")))?;
        if large && (!(512..=65536).contains(&record_size) || !record_size.is_power_of_two()) {
            return Err(Error::Corrupt(format!(
                "{what}: index records of {record_size} bytes (a power of two from 512 to 65536 expected)"
            )));
        }
        let cluster = ntfs.cluster_size() as u64;
        let vcn_bytes = if record_size as u64 >= cluster {
            cluster
        } else {
            512
        };
        Ok(Dir {
            r,
            file,
            root,
            record_size: record_size as usize,
            vcn_bytes,
            large,
            what,
        })
    }

    fn corrupt(&self, e: String) -> Error {
        Error::Corrupt(format!("{}: directory index: {e}", self.what))
    }

    fn root_entries(&self) -> Result<Vec<NodeEntry>> {
        index::node_entries(&self.root, index::ROOT_HEADER).map_err(|e| self.corrupt(e))
    }

    /// The entries of the index record at `vcn`.
    fn node(&mut self, vcn: u64) -> Result<Vec<NodeEntry>> {
        if !self.large {
            return Err(self.corrupt(format!(
                "an entry points at index record {vcn}, but the index has none"
            )));
        }
        let what = self.what.clone();
        let err = |e| ntfs_err(&what, e);
        let mut it = self.file.attributes();
        while let Some(item) = it.next(self.r) {
            let item = item.map_err(err)?;
            let a = item.to_attribute().map_err(err)?;
            if a.ty().ok() != Some(NtfsAttributeType::IndexAllocation)
                || a.name().map_err(err)? != "$I30"
            {
                continue;
            }
            let off = vcn
                .checked_mul(self.vcn_bytes)
                .filter(|o| {
                    o.checked_add(self.record_size as u64)
                        .is_some_and(|e| e <= a.value_length())
                })
                .ok_or_else(|| {
                    self.corrupt(format!("index record {vcn} lies past the index allocation"))
                })?;
            let mut v = a.value(self.r).map_err(err)?;
            v.seek(self.r, SeekFrom::Start(off)).map_err(err)?;
            // At most 64 KiB, checked in `open`.
            let mut rec = vec![0u8; self.record_size];
            v.read_exact(self.r, &mut rec).map_err(err)?;
            index::fixup(&mut rec, b"INDX")
                .map_err(|e| self.corrupt(format!("index record {vcn}: {e}")))?;
            if le64(&rec, 16) != vcn {
                return Err(self.corrupt(format!(
                    "the index record at VCN {vcn} says it is VCN {}",
                    le64(&rec, 16)
                )));
            }
            return index::node_entries(&rec, index::RECORD_NODE_HEADER)
                .map_err(|e| self.corrupt(format!("index record {vcn}: {e}")));
        }
        Err(self.corrupt("the directory has no $I30 index allocation".into()))
    }

    /// Every entry with a name, in index order.
    pub(super) fn all(&mut self) -> Result<Vec<NodeEntry>> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let root = self.root_entries()?;
        self.walk(root, 0, &mut seen, &mut out)?;
        Ok(out)
    }

    fn walk(
        &mut self,
        node: Vec<NodeEntry>,
        depth: usize,
        seen: &mut HashSet<u64>,
        out: &mut Vec<NodeEntry>,
    ) -> Result<()> {
        for e in node {
            if let Some(vcn) = e.subnode {
                if depth >= MAX_INDEX_DEPTH {
                    return Err(self.corrupt(format!(
                        "the B-tree is more than {MAX_INDEX_DEPTH} levels deep"
                    )));
                }
                if !seen.insert(vcn) {
                    return Err(
                        self.corrupt(format!("index record {vcn} is linked twice (a loop)"))
                    );
                }
                let child = self.node(vcn)?;
                self.walk(child, depth + 1, seen, out)?;
            }
            if e.name.is_some() {
                if out.len() >= MAX_ENTRIES {
                    return Err(self.corrupt(format!("more than {MAX_ENTRIES} entries")));
                }
                out.push(e);
            }
        }
        Ok(())
    }

    /// The entry named `name`: the one spelt exactly so if there is one,
    /// else one equal ignoring case (as Windows compares). Found by
    /// descending the B-tree; when that fails (an index sorted by another
    /// upcase table) or finds the name in another case, by a scan of every
    /// entry.
    pub(super) fn find(
        &mut self,
        name: &[u16],
        table: Option<&[u16]>,
    ) -> Result<Option<NodeEntry>> {
        let mut node = self.root_entries()?;
        let mut seen = HashSet::new();
        let found = loop {
            let mut next = None;
            let mut hit = None;
            for e in node {
                let Some(n) = &e.name else {
                    next = e.subnode;
                    break;
                };
                match collate(name, n, table) {
                    Ordering::Equal => {
                        hit = Some(e);
                        break;
                    }
                    Ordering::Less => {
                        next = e.subnode;
                        break;
                    }
                    Ordering::Greater => {}
                }
            }
            if hit.is_some() {
                break hit;
            }
            match next {
                Some(vcn) if seen.len() < MAX_INDEX_DEPTH && seen.insert(vcn) => {
                    node = self.node(vcn)?
                }
                _ => break None,
            }
        };
        if found
            .as_ref()
            .is_some_and(|e| e.name.as_deref() == Some(name))
        {
            return Ok(found);
        }
        // Found under another case, or not at all. POSIX names (ntfs-3g,
        // WSL's case-sensitive folders) may differ only in case, and the one
        // spelt exactly as asked wins; they need not share a node, so scan.
        let all = self.all()?;
        if let Some(e) = all.iter().find(|e| e.name.as_deref() == Some(name)) {
            return Ok(Some(e.clone()));
        }
        if found.is_some() {
            return Ok(found);
        }
        Ok(all.into_iter().find(|e| {
            e.name
                .as_deref()
                .is_some_and(|n| collate(name, n, table) == Ordering::Equal)
        }))
    }
}
