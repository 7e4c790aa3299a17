//! Refcount blocks (qcow2 specification, "Cluster refcounts"): entries of
//! `1 << refcount_order` bits, big-endian for whole bytes; narrower entries are
//! packed from the least significant bits of each byte up.

/// Bits 9..=63 of a refcount table entry: the refcount block's offset.
pub const REFTABLE_OFFSET_MASK: u64 = 0xffff_ffff_ffff_fe00;

/// The largest refcount an entry of `order` holds.
pub fn max_refcount(order: u32) -> u64 {
    if order >= 6 {
        u64::MAX
    } else {
        (1u64 << (1u32 << order)) - 1
    }
}

/// Entries of a refcount block of `cluster_bits`.
pub fn entries_per_block(cluster_bits: u32, order: u32) -> u64 {
    (1u64 << (cluster_bits + 3)) >> order
}

/// Entry `i` of `block`. `i` must be below [`entries_per_block`].
pub fn get(block: &[u8], order: u32, i: u64) -> u64 {
    let bits = 1u64 << order;
    if order < 3 {
        let bit = i * bits;
        let byte = block.get((bit / 8) as usize).copied().unwrap_or(0);
        (u64::from(byte) >> (bit % 8)) & ((1 << bits) - 1)
    } else {
        let n = (bits / 8) as usize;
        let at = i as usize * n;
        block
            .get(at..at + n)
            .map(|b| b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
            .unwrap_or(0)
    }
}

/// Sets entry `i` of `block` to `v` (which must fit the width).
pub fn set(block: &mut [u8], order: u32, i: u64, v: u64) {
    let bits = 1u64 << order;
    if order < 3 {
        let bit = i * bits;
        let mask = ((1u64 << bits) - 1) as u8;
        if let Some(byte) = block.get_mut((bit / 8) as usize) {
            let shift = bit % 8;
            *byte = (*byte & !(mask << shift)) | (((v as u8) & mask) << shift);
        }
    } else {
        let n = (bits / 8) as usize;
        let at = i as usize * n;
        if let Some(b) = block.get_mut(at..at + n) {
            for (k, x) in b.iter_mut().enumerate() {
                *x = (v >> (8 * (n - 1 - k))) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_width_round_trips() {
        for order in 0..=6 {
            let mut block = vec![0u8; 512];
            let n = entries_per_block(9, order);
            let max = max_refcount(order);
            for i in 0..n {
                set(&mut block, order, i, (i * 7) & max);
            }
            for i in 0..n {
                assert_eq!(
                    get(&block, order, i),
                    (i * 7) & max,
                    "order {order} entry {i}"
                );
            }
        }
        let mut block = vec![0u8; 512];
        set(&mut block, 4, 1, 0x0102);
        assert_eq!(&block[..4], &[0, 0, 1, 2]);
        set(&mut block, 0, 9, 1);
        assert_eq!(block[1], 0b10);
    }
}
