//! Block arithmetic of a VDI image, without I/O: which block a range of the
//! disk falls in, where a block lives, and what is wrong with a block map.

use super::header::{UNALLOCATED, ZERO_BLOCK};

pub use crate::block::{pieces, Piece};

/// Where a block's data is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// At this index of the data area.
    Data(u32),
    /// Nowhere: the block reads as zeros.
    Zero,
    /// Nowhere: the image holds nothing for the block.
    Unallocated,
}

/// Where block `block` is, by the block map `map`. A block past the map is
/// unallocated.
pub fn place(map: &[u32], block: u64) -> Place {
    match usize::try_from(block).ok().and_then(|b| map.get(b)) {
        Some(&ZERO_BLOCK) => Place::Zero,
        Some(&UNALLOCATED) | None => Place::Unallocated,
        Some(&e) if e > ZERO_BLOCK => Place::Unallocated,
        Some(&e) => Place::Data(e),
    }
}

/// What is wrong with the block map `map` of a file of `file_len` bytes whose
/// data area starts at `offset_data`: entries that point past the disk's block
/// count or the end of the file, and blocks that share space. At most `limit`
/// messages of each kind.
pub fn map_problems(
    map: &[u32],
    offset_data: u64,
    block_size: u64,
    file_len: u64,
    limit: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    let (mut past_count, mut past_end, mut shared) = (0usize, 0usize, 0usize);
    // Indexes that fit in the file: the only ones that can be in use, so the
    // table of used ones is bounded by the file's size.
    let fits = file_len.saturating_sub(offset_data) / block_size.max(1);
    let mut used = vec![false; fits.min(map.len() as u64) as usize];
    for (i, &e) in map.iter().enumerate() {
        if e >= ZERO_BLOCK {
            continue;
        }
        if e as usize >= map.len() {
            past_count += 1;
            if past_count <= limit {
                out.push(format!(
                    "entry {i} is {e}, not below the disk's {} blocks",
                    map.len()
                ));
            }
            continue;
        }
        let end = offset_data + (u64::from(e) + 1) * block_size;
        if end > file_len {
            past_end += 1;
            if past_end <= limit {
                out.push(format!(
                    "entry {i} is {e}: that block (bytes {}..{end}) extends past the end of the file ({file_len} bytes)",
                    end - block_size
                ));
            }
            continue;
        }
        match used.get_mut(e as usize) {
            Some(u) if *u => {
                shared += 1;
                if shared <= limit {
                    out.push(format!(
                        "entry {i} is {e}, a block another entry already uses"
                    ));
                }
            }
            Some(u) => *u = true,
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_split_at_blocks() {
        let p: Vec<_> = pieces(1000, 5000, 2048).collect();
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].block, p[0].within, p[0].len), (0, 1000, 1048));
        assert_eq!((p[1].block, p[1].within, p[1].len), (1, 0, 2048));
        assert_eq!((p[2].block, p[2].within, p[2].len), (2, 0, 1904));
        assert_eq!(pieces(5, 0, 512).count(), 0);
    }

    #[test]
    fn map_problems_are_found() {
        let map = [0, 1, 1, 7, UNALLOCATED, ZERO_BLOCK, 3];
        let p = map_problems(&map, 1024, 512, 1024 + 3 * 512, 10);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("entry 2") && p[0].contains("already"));
        assert!(p[1].contains("entry 3") && p[1].contains("not below"));
        assert!(p[2].contains("entry 6") && p[2].contains("past the end"));
        assert_eq!(place(&map, 4), Place::Unallocated);
        assert_eq!(place(&map, 5), Place::Zero);
        assert_eq!(place(&map, 99), Place::Unallocated);
        assert_eq!(place(&map, 1), Place::Data(1));
    }
}
