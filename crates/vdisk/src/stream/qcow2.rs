//! The qcow2 layout: version 3, 16-bit refcounts, as vmhub's own writer
//! makes an image. Header cluster, refcount table, refcount blocks, L1
//! table, the L2 tables in use, then each allocated cluster in disk order;
//! every cluster of the file has refcount one, and every L1 and L2 entry
//! carries the COPIED flag that says so.

use super::{push_block, push_table, AllocMap, Layout, Segment};
use crate::qcow2::header::{Header, MAX_CLUSTER_BITS, MIN_CLUSTER_BITS};
use crate::qcow2::{l2, refcount};
use crate::{Error, Result};
use std::sync::Arc;

/// 64 KiB clusters, as qemu-img and vmhub make.
pub const DEFAULT_CLUSTER_BITS: u32 = 16;
/// 16-bit refcounts, as qemu-img and vmhub make.
const REFCOUNT_ORDER: u32 = crate::qcow2::header::NEW_REFCOUNT_ORDER;

/// The qcow2 image of a disk of `size` bytes whose data is `map`, in
/// clusters of `1 << cluster_bits` bytes.
pub fn layout(size: u64, map: &AllocMap, cluster_bits: u32) -> Result<Layout> {
    if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
        return Err(Error::InvalidArgument(format!(
            "qcow2 cluster bits {cluster_bits} are outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS}"
        )));
    }
    let cs = 1u64 << cluster_bits;
    let mut h = Header::new_v3(cluster_bits, size.div_ceil(512) * 512, 0)
        .map_err(Error::InvalidArgument)?;
    let l1_size = u64::from(h.l1_size);
    let l1_clusters = (l1_size * 8).div_ceil(cs);
    let per_l2 = h.l2_entries();
    let data = map.blocks(cs);
    let mut tables: Vec<u64> = data.iter().map(|c| c / per_l2).collect();
    tables.dedup();
    let fixed = 1 + l1_clusters + tables.len() as u64 + data.len() as u64;
    // The refcount blocks must count every cluster of the file, themselves
    // and the refcount table included.
    let rpb = refcount::entries_per_block(cluster_bits, REFCOUNT_ORDER);
    let (mut rt, mut rb) = (1u64, 1u64);
    loop {
        let total = fixed + rt + rb;
        let nrb = total.div_ceil(rpb);
        let nrt = (nrb * 8).div_ceil(cs);
        if nrb == rb && nrt == rt {
            break;
        }
        (rb, rt) = (nrb.max(rb), nrt.max(rt));
    }
    let total = fixed + rt + rb;
    h.refcount_table_clusters = u32::try_from(rt).map_err(|_| {
        Error::InvalidArgument(format!(
            "{size} bytes need too large a qcow2 refcount table"
        ))
    })?;
    let rb_at = (1 + rt) * cs;
    let l1_at = rb_at + rb * cs;
    h.l1_table_offset = l1_at;
    let l2_at = l1_at + l1_clusters * cs;
    let data_at = l2_at + tables.len() as u64 * cs;

    let mut l = Layout::new();
    let mut head = h.encode();
    head.resize(cs as usize, 0);
    l.bytes(head);
    let mut rtable = vec![0u8; (rt * cs) as usize];
    for (i, e) in rtable.chunks_exact_mut(8).take(rb as usize).enumerate() {
        e.copy_from_slice(&(rb_at + i as u64 * cs).to_be_bytes());
    }
    l.bytes(rtable);
    // Whole refcount blocks are alike: share one.
    let mut full = vec![0u8; cs as usize];
    for i in 0..rpb {
        refcount::set(&mut full, REFCOUNT_ORDER, i, 1);
    }
    let full = Arc::new(full);
    for b in 0..rb {
        let counted = total.saturating_sub(b * rpb).min(rpb);
        if counted == rpb {
            l.push(Segment::Bytes(full.clone()));
        } else {
            let mut block = vec![0u8; cs as usize];
            for i in 0..counted {
                refcount::set(&mut block, REFCOUNT_ORDER, i, 1);
            }
            l.bytes(block);
        }
    }
    push_table(
        &mut l,
        l1_clusters * cs,
        0,
        tables.iter().enumerate().map(|(k, &t)| {
            let e = l2::normal_entry(l2_at + k as u64 * cs);
            (t * 8, e.to_be_bytes().to_vec())
        }),
    );
    // Each L2 table holds only the entries of clusters with data; a table
    // is as large as a cluster however few they are.
    let mut next = 0usize;
    for &t in &tables {
        let mut entries = Vec::new();
        while let Some(&c) = data.get(next) {
            if c / per_l2 != t {
                break;
            }
            let e = l2::normal_entry(data_at + next as u64 * cs);
            entries.push(((c % per_l2) * 8, e.to_be_bytes().to_vec()));
            next += 1;
        }
        push_table(&mut l, cs, 0, entries);
    }
    for &c in &data {
        push_block(&mut l, size, cs, c);
    }
    debug_assert_eq!(l.len(), total * cs);
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::tests::bytes_of;

    fn be64(b: &[u8], at: usize) -> u64 {
        u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn tables_and_refcounts_agree() {
        // 512-byte clusters: 64 entries per L2 table, 256 per refcount block.
        let size = 1 << 20;
        let m = AllocMap::new(size, [(0, 600), (40 << 10, 512)]).unwrap();
        let l = layout(size, &m, 9).unwrap();
        let head = bytes_of(&l, 0, 512);
        let h = Header::parse(&head, std::path::Path::new("x")).unwrap();
        // Clusters 0, 1 and 80 in two L2 tables (0..64 and 64..128).
        let total = 1 + 1 + 1 + 1 + 2 + 3;
        assert_eq!(l.len(), total * 512);
        assert_eq!(h.l1_table_offset, 3 * 512);
        assert_eq!(h.l1_size, 32);
        let bytes_at = |off: u64| bytes_of(&l, off, off + 512);
        let l1 = bytes_at(3 * 512);
        assert_eq!(be64(&l1, 0), l2::normal_entry(4 * 512));
        assert_eq!(be64(&l1, 8), l2::normal_entry(5 * 512));
        let t0 = bytes_at(4 * 512);
        assert_eq!(be64(&t0, 0), l2::normal_entry(6 * 512));
        assert_eq!(be64(&t0, 8), l2::normal_entry(7 * 512));
        assert_eq!(be64(&t0, 16), 0);
        let t1 = bytes_at(5 * 512);
        assert_eq!(be64(&t1, 16 * 8), l2::normal_entry(8 * 512));
        let rc = bytes_at(2 * 512);
        for i in 0..256 {
            let want = u64::from(i < total);
            assert_eq!(refcount::get(&rc, REFCOUNT_ORDER, i), want, "cluster {i}");
        }
    }
}
