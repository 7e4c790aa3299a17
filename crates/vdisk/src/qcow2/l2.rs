//! L1 and L2 entries (qcow2 specification, "Cluster mapping"): what a guest
//! cluster, or each of its subclusters, maps to. Pure functions of the entries.

/// Bits 9..=55 of an L1 entry or a standard L2 entry: the host offset.
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bit 63: the cluster's refcount is exactly one.
pub const COPIED: u64 = 1 << 63;
/// Bit 62 of an L2 entry: the cluster is compressed.
pub const COMPRESSED: u64 = 1 << 62;
/// Bit 0 of a standard L2 entry (version 3, without extended L2): reads as zeros.
pub const ZERO: u64 = 1;
/// Subclusters of a cluster with extended L2 entries.
pub const SUBCLUSTERS: u64 = 32;
/// A subcluster bitmap with every subcluster allocated.
pub const ALL_ALLOCATED: u64 = 0xffff_ffff;

/// What one guest cluster maps to, from its L2 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cluster {
    /// Nothing: reads from the backing file, or as zeros.
    Unallocated,
    /// Reads as zeros; `host` is a preallocated cluster (0 for none).
    Zero {
        /// The preallocated host cluster, 0 for none.
        host: u64,
    },
    /// Stored uncompressed at `host`.
    Normal {
        /// Host offset of the cluster.
        host: u64,
        /// The COPIED flag: the refcount is one, so it may be written in place.
        copied: bool,
    },
    /// Compressed: `len` bytes at `host` (not aligned).
    Compressed {
        /// Host offset of the compressed bytes.
        host: u64,
        /// Bytes the compressed data may take (whole sectors from `host`'s).
        len: u64,
    },
}

/// How one subcluster of a cluster with extended L2 entries reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sub {
    /// From the host cluster.
    Data,
    /// As zeros.
    Zero,
    /// From the backing file, or as zeros.
    Unallocated,
}

/// Decodes a standard L2 entry (the first 64 bits of an extended one).
/// `version3` enables the zero flag; with extended L2 entries zeros are in the
/// bitmap instead.
pub fn decode(entry: u64, cluster_bits: u32, zero_flag: bool) -> Cluster {
    if entry & COMPRESSED != 0 {
        let x = 62 - (cluster_bits - 8);
        let host = entry & ((1u64 << x) - 1);
        let sectors = ((entry >> x) & ((1u64 << (cluster_bits - 8)) - 1)) + 1;
        let len = sectors * 512 - (host & 511);
        return Cluster::Compressed { host, len };
    }
    let host = entry & OFFSET_MASK;
    if zero_flag && entry & ZERO != 0 {
        return Cluster::Zero { host };
    }
    if host == 0 {
        Cluster::Unallocated
    } else {
        Cluster::Normal {
            host,
            copied: entry & COPIED != 0,
        }
    }
}

/// The subcluster `i`'s state from an extended entry's bitmap, or `None` when
/// both its allocated and its zero bit are set (which the specification forbids).
pub fn subcluster(bitmap: u64, i: u64) -> Option<Sub> {
    let alloc = bitmap >> i & 1 != 0;
    let zero = bitmap >> (32 + i) & 1 != 0;
    match (alloc, zero) {
        (true, true) => None,
        (true, false) => Some(Sub::Data),
        (false, true) => Some(Sub::Zero),
        (false, false) => Some(Sub::Unallocated),
    }
}

/// The host clusters that a compressed cluster's bytes touch, as a range of
/// cluster indexes.
pub fn compressed_span(host: u64, len: u64, cluster_bits: u32) -> std::ops::Range<u64> {
    let first = host >> cluster_bits;
    let last = (host + len.max(1) - 1) >> cluster_bits;
    first..last + 1
}

/// A standard L2 entry for an uncompressed cluster at `host` with refcount one.
pub fn normal_entry(host: u64) -> u64 {
    (host & OFFSET_MASK) | COPIED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_entries() {
        assert_eq!(decode(0, 16, true), Cluster::Unallocated);
        assert_eq!(decode(1, 16, true), Cluster::Zero { host: 0 });
        assert_eq!(decode(1, 16, false), Cluster::Unallocated);
        assert_eq!(
            decode(0x50000 | COPIED, 16, true),
            Cluster::Normal {
                host: 0x50000,
                copied: true
            }
        );
        // 64 KiB clusters: x = 54; two extra sectors from offset 0x50100.
        let e = COMPRESSED | (2u64 << 54) | 0x50100;
        assert_eq!(
            decode(e, 16, true),
            Cluster::Compressed {
                host: 0x50100,
                len: 3 * 512 - 256
            }
        );
        assert_eq!(compressed_span(0x5ff00, 0x200, 16), 5..7);
    }

    #[test]
    fn subclusters() {
        let b = 0b01 | (0b10 << 32) | (1 << 2) | (1 << 34);
        assert_eq!(subcluster(b, 0), Some(Sub::Data));
        assert_eq!(subcluster(b, 1), Some(Sub::Zero));
        assert_eq!(subcluster(b, 2), None);
        assert_eq!(subcluster(b, 3), Some(Sub::Unallocated));
    }
}
