//! Sector bitmaps (VHD specification, "Block Bitmap"): in front of each block,
//! one bit per sector, the first sector in the most significant bit of the first
//! byte. In a differencing disk a set bit means "this disk holds the sector" and a
//! clear one "read it from the parent".

/// Whether the bit of `sector` is set. Sectors past the bitmap read as clear.
pub fn is_set(bits: &[u8], sector: u64) -> bool {
    usize::try_from(sector / 8)
        .ok()
        .and_then(|i| bits.get(i))
        .is_some_and(|b| b & (0x80 >> (sector % 8)) != 0)
}

/// Sets the bits of `count` sectors from `first`. Returns whether any changed.
/// Bits past the bitmap are ignored.
pub fn set_range(bits: &mut [u8], first: u64, count: u64) -> bool {
    let mut changed = false;
    for s in first..first.saturating_add(count) {
        let Some(b) = usize::try_from(s / 8).ok().and_then(|i| bits.get_mut(i)) else {
            break;
        };
        let mask = 0x80 >> (s % 8);
        changed |= *b & mask == 0;
        *b |= mask;
    }
    changed
}

/// The runs of equal bits in `count` sectors from `first`, as
/// `(first sector, sectors, set)`.
pub fn runs(bits: &[u8], first: u64, count: u64) -> Vec<(u64, u64, bool)> {
    let mut out: Vec<(u64, u64, bool)> = Vec::new();
    for s in first..first.saturating_add(count) {
        let set = is_set(bits, s);
        match out.last_mut() {
            Some(last) if last.2 == set => last.1 += 1,
            _ => out.push((s, 1, set)),
        }
    }
    out
}

/// The runs of `[within, within+len)` bytes of a block that are present here or
/// not, as `(start, end, here)` byte offsets in the block, clipped to the range.
pub fn byte_runs(bits: &[u8], within: u64, len: u64) -> Vec<(u64, u64, bool)> {
    if len == 0 {
        return Vec::new();
    }
    let first = within / 512;
    let count = (within + len).div_ceil(512) - first;
    runs(bits, first, count)
        .into_iter()
        .map(|(s, n, here)| {
            (
                (s * 512).max(within),
                ((s + n) * 512).min(within + len),
                here,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_significant_bit_first() {
        let bits = [0b1000_0001u8, 0b0100_0000];
        assert!(is_set(&bits, 0));
        assert!(!is_set(&bits, 1));
        assert!(is_set(&bits, 7));
        assert!(is_set(&bits, 9));
        assert!(!is_set(&bits, 8));
        assert!(!is_set(&bits, 10_000));
    }

    #[test]
    fn byte_runs_are_clipped() {
        let bits = [0b0110_0000u8];
        assert_eq!(
            byte_runs(&bits, 100, 1000),
            vec![(100, 512, false), (512, 1100, true)]
        );
        assert_eq!(
            byte_runs(&bits, 700, 2000),
            vec![(700, 1536, true), (1536, 2700, false)]
        );
        assert!(byte_runs(&bits, 5, 0).is_empty());
    }

    #[test]
    fn set_and_runs() {
        let mut bits = [0u8; 4];
        assert!(set_range(&mut bits, 3, 10));
        assert!(!set_range(&mut bits, 4, 2));
        assert_eq!(bits, [0b0001_1111, 0b1111_1000, 0, 0]);
        assert_eq!(
            runs(&bits, 0, 32),
            vec![(0, 3, false), (3, 10, true), (13, 19, false)]
        );
        assert_eq!(runs(&bits, 5, 3), vec![(5, 3, true)]);
        // Past the end: ignored when setting, clear when reading.
        assert!(set_range(&mut bits, 30, 100));
        assert_eq!(
            runs(&bits, 28, 8),
            vec![(28, 2, false), (30, 2, true), (32, 4, false)]
        );
    }
}
