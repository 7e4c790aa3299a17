//! The dynamic VDI layout, as vmhub's own writer makes an image: the header,
//! the block map, padding to 1 MiB, then each allocated block in disk order.

use super::{push_block, push_table, AllocMap, Identity, Layout};
use crate::vdi::header::{Header, ImageType, HEADER_AREA, UNALLOCATED};
use crate::vdi::{data_offset, DATA_ALIGN, MAX_BLOCKS};
use crate::{Error, Result};

/// The dynamic VDI of a disk of `size` bytes whose data is `map`, in blocks
/// of `block_size` bytes.
pub fn layout(size: u64, map: &AllocMap, id: &Identity, block_size: u64) -> Result<Layout> {
    if !block_size.is_power_of_two() || !(4096..=DATA_ALIGN).contains(&block_size) {
        return Err(Error::InvalidArgument(format!(
            "VDI block size {block_size} must be a power of two from 4096 to {DATA_ALIGN}"
        )));
    }
    let disk_size = size.div_ceil(512) * 512;
    let blocks = disk_size.div_ceil(block_size);
    if blocks > u64::from(MAX_BLOCKS) {
        return Err(Error::InvalidArgument(format!(
            "{disk_size} bytes need {blocks} blocks of {block_size} bytes; a VDI image holds at most {MAX_BLOCKS}"
        )));
    }
    let offset_data = data_offset(blocks);
    let used = map.blocks(block_size);
    let h = Header::new_image(
        ImageType::Dynamic,
        disk_size,
        block_size as u32,
        blocks as u32,
        used.len() as u32,
        u32::try_from(offset_data).map_err(|_| {
            Error::InvalidArgument(format!(
                "a VDI block map for {disk_size} bytes is too large"
            ))
        })?,
        [id.id(4), id.id(5)],
    );
    let mut l = Layout::new();
    l.bytes(h.encode(&[0u8; HEADER_AREA]).to_vec());
    // Unallocated entries are all ones (UNALLOCATED).
    debug_assert_eq!(UNALLOCATED, u32::MAX);
    push_table(
        &mut l,
        blocks * 4,
        0xff,
        used.iter()
            .enumerate()
            .map(|(k, &b)| (b * 4, (k as u32).to_le_bytes().to_vec())),
    );
    l.zeros_to(offset_data);
    for &b in &used {
        push_block(&mut l, size, block_size, b);
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::tests::bytes_of;

    #[test]
    fn block_map_numbers_blocks_in_order() {
        let id = Identity {
            seed: [3; 16],
            timestamp: 0,
        };
        let size = 4 << 20;
        let m = AllocMap::new(size, [((1 << 20) + 7, 1), (3 << 20, 5)]).unwrap();
        let l = layout(size, &m, &id, 1 << 20).unwrap();
        assert_eq!(l.len(), (1 << 20) + 2 * (1 << 20));
        let head = bytes_of(&l, 0, 512);
        let h = Header::decode(head.as_slice().try_into().unwrap());
        assert_eq!(
            (h.blocks, h.blocks_allocated, h.offset_data),
            (4, 2, 1 << 20)
        );
        assert!(h.problems(l.len()).is_empty(), "{:?}", h.problems(l.len()));
        let map = bytes_of(&l, 512, 512 + 16);
        let e: Vec<u32> = map
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(e, vec![UNALLOCATED, 0, UNALLOCATED, 1]);
    }
}
