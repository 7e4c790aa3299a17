//! The dynamic VHDX layout, as vmhub's own writer lays a disk out: file
//! identifier, the two headers, the two region tables, an empty (clean) log,
//! the BAT, the metadata region, then each allocated block in disk order.

use super::{push_block, push_table, AllocMap, Identity, Layout};
use crate::vhdx::bat::{self, Geometry};
use crate::vhdx::create::DEFAULT_LOG_SIZE;
use crate::vhdx::fields::{put, ZERO_GUID};
use crate::vhdx::header::{
    Header, RegionTable, ALIGN, FILE_SIGNATURE, HEADER_OFFSETS, HEADER_SECTION, REGION_OFFSETS,
};
use crate::vhdx::metadata::{Metadata, MAX_BLOCK, MAX_SIZE, MIN_BLOCK};
use crate::{Error, Result};

/// Bytes of the metadata region, as vmhub's writer makes it.
const METADATA_SIZE: u64 = 1 << 20;

/// The dynamic VHDX of a disk of `size` bytes whose data is `map`, in blocks
/// of `block_size` bytes (512-byte logical, 4096-byte physical sectors).
pub fn layout(size: u64, map: &AllocMap, id: &Identity, block_size: u64) -> Result<Layout> {
    if !block_size.is_power_of_two() || !(MIN_BLOCK..=MAX_BLOCK).contains(&block_size) {
        return Err(Error::InvalidArgument(format!(
            "VHDX block size {block_size} is not a power of two from 1 MiB to 256 MiB"
        )));
    }
    let vsize = size.div_ceil(512) * 512;
    if vsize == 0 || vsize > MAX_SIZE {
        return Err(Error::InvalidArgument(format!(
            "VHDX size {size} is not between one sector and 64 TiB"
        )));
    }
    let geo = Geometry::new(block_size, 512, vsize, false);
    let log_offset = HEADER_SECTION;
    let bat_offset = log_offset + DEFAULT_LOG_SIZE;
    let bat_len = (geo.entries * 8).div_ceil(ALIGN) * ALIGN;
    let bat_len32 = u32::try_from(bat_len)
        .map_err(|_| Error::InvalidArgument("the BAT of so large a disk exceeds 4 GiB".into()))?;
    let meta_offset = bat_offset + bat_len;
    let data_offset = meta_offset + METADATA_SIZE;

    let mut l = Layout::new();
    let mut file_id = vec![0u8; 64 << 10];
    put(&mut file_id, 0, FILE_SIGNATURE);
    let creator: Vec<u8> = "vmhub".encode_utf16().flat_map(u16::to_le_bytes).collect();
    put(&mut file_id, 8, &creator);
    l.bytes(file_id);
    let mut h = Header {
        sequence: 0,
        file_write_guid: id.id(1),
        data_write_guid: id.id(2),
        log_guid: ZERO_GUID,
        log_version: 0,
        version: 1,
        log_length: DEFAULT_LOG_SIZE as u32,
        log_offset,
    };
    for off in HEADER_OFFSETS {
        h.sequence += 1;
        l.zeros_to(off);
        l.bytes(h.encode());
    }
    let table = RegionTable::of_new_image(bat_offset, bat_len32, meta_offset, METADATA_SIZE as u32);
    for off in REGION_OFFSETS {
        l.zeros_to(off);
        l.bytes(table.encode());
    }
    // The log: zeros, and a zero log GUID in the headers, so nothing replays.
    l.zeros_to(bat_offset);
    let blocks = map.blocks(block_size);
    // Blocks without data are NOT_PRESENT entries: zeros.
    push_table(
        &mut l,
        geo.entries * 8,
        0,
        blocks.iter().enumerate().map(|(k, &b)| {
            let e = bat::entry(bat::FULLY_PRESENT, data_offset + k as u64 * block_size);
            (geo.payload_index(b) * 8, e.to_le_bytes().to_vec())
        }),
    );
    l.zeros_to(meta_offset);
    let meta = Metadata {
        block_size: block_size as u32,
        leave_blocks_allocated: false,
        has_parent: false,
        virtual_size: vsize,
        page83: id.id(3),
        logical_sector: 512,
        physical_sector: 4096,
        parent: None,
    };
    l.bytes(meta.encode(METADATA_SIZE as usize));
    l.zeros_to(data_offset);
    for &b in &blocks {
        push_block(&mut l, size, block_size, b);
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::tests::bytes_of;
    use crate::vhdx::fields::u64_at;

    #[test]
    fn bat_points_at_blocks_in_order() {
        let id = Identity {
            seed: [2; 16],
            timestamp: 0,
        };
        let size = 5 << 20;
        let m = AllocMap::new(size, [(0, 1), (3 << 20, 100)]).unwrap();
        let l = layout(size, &m, &id, 1 << 20).unwrap();
        let data = 4 << 20;
        assert_eq!(l.len(), data + 2 * (1 << 20));
        let b = bytes_of(&l, 2 << 20, (2 << 20) + 40);
        let e: Vec<u64> = (0..5).map(|i| u64_at(&b, i * 8)).collect();
        assert_eq!(e[0], bat::entry(bat::FULLY_PRESENT, data));
        assert_eq!(e[3], bat::entry(bat::FULLY_PRESENT, data + (1 << 20)));
        assert_eq!((e[1], e[2], e[4]), (0, 0, 0));
        for (off, want) in [(64 << 10, 1u64), (128 << 10, 2)] {
            let h = bytes_of(&l, off, off + 4096);
            assert_eq!(Header::decode(&h).unwrap().sequence, want);
        }
        assert!(layout(size, &m, &id, 3 << 20).is_err());
    }
}
