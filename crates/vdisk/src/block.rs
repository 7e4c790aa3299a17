//! Splitting guest ranges at block boundaries: the arithmetic every format
//! with fixed-size blocks (VHD, VHDX, VDI) starts a read or write with.

/// The part of a guest range that falls in one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// The block's number.
    pub block: u64,
    /// Where the piece starts inside the block.
    pub within: u64,
    /// Where the piece starts in the range (so in the caller's buffer).
    pub at: u64,
    /// Its length in bytes.
    pub len: u64,
}

/// Splits `[offset, offset+len)` at multiples of `block_size`, in order. A
/// block size of 0 yields nothing.
pub fn pieces(offset: u64, len: u64, block_size: u64) -> impl Iterator<Item = Piece> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= len || block_size == 0 {
            return None;
        }
        let pos = offset + at;
        let within = pos % block_size;
        let n = (block_size - within).min(len - at);
        let p = Piece {
            block: pos / block_size,
            within,
            at,
            len: n,
        };
        at += n;
        Some(p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_range() {
        let v: Vec<Piece> = pieces(1000, 3 << 20, 1 << 20).collect();
        assert_eq!(v.len(), 4);
        assert_eq!(v.iter().map(|p| p.len).sum::<u64>(), 3 << 20);
        assert_eq!((v[0].block, v[0].within, v[0].at), (0, 1000, 0));
        assert_eq!((v[1].block, v[1].within, v[1].at), (1, 0, (1 << 20) - 1000));
        assert_eq!(v[3].len, 1000);
    }

    #[test]
    fn inside_one_block_and_empty() {
        let v: Vec<Piece> = pieces(1000, 5000, 2048).collect();
        assert_eq!(v.len(), 3);
        assert_eq!(v.iter().map(|p| p.len).sum::<u64>(), 5000);
        assert_eq!(v[2].at + v[2].len, 5000);
        assert_eq!(pieces(5, 0, 512).count(), 0);
        assert_eq!(pieces(5, 100, 0).count(), 0);
    }
}
