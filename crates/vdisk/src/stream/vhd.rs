//! The dynamic VHD layout, as vmhub's own writer lays a disk out: footer
//! copy, dynamic header, BAT, then each allocated block (sector bitmap, all
//! ones, then its data) in disk order, then the footer.

use super::{push_block, AllocMap, Identity, Layout};
use crate::vhd::bat::{self, Bat};
use crate::vhd::create::{new_footer, plan_size};
use crate::vhd::footer::{DiskType, VHD_EPOCH};
use crate::vhd::header::{bitmap_size, block_size_problem, DynamicHeader, HEADER_SIZE};
use crate::{Error, Result};

/// The dynamic VHD of a disk of `size` bytes whose data is `map`, in blocks
/// of `block_size` bytes.
pub fn layout(size: u64, map: &AllocMap, id: &Identity, block_size: u64) -> Result<Layout> {
    if let Some(why) = block_size_problem(block_size) {
        return Err(Error::InvalidArgument(why));
    }
    let plan = plan_size(size, false)?;
    let mut footer = new_footer(&plan, DiskType::Dynamic)?;
    footer.unique_id = id.id(0);
    footer.timestamp = u32::try_from(id.timestamp.saturating_sub(VHD_EPOCH)).unwrap_or(u32::MAX);
    let entries = bat::entries_for(plan.size, block_size).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{} blocks of {block_size} bytes are too many for one VHD BAT",
            plan.size.div_ceil(block_size)
        ))
    })?;
    let table_offset = 512 + HEADER_SIZE as u64;
    let header = DynamicHeader::new(table_offset, entries, block_size as u32);
    let bitmap = bitmap_size(block_size);
    let first = table_offset + bat::table_size(entries);
    let blocks = map.blocks(block_size);
    let mut table = Bat::new(entries);
    for (k, &b) in blocks.iter().enumerate() {
        let at = first + k as u64 * (bitmap + block_size);
        let sector = u32::try_from(at / 512).map_err(|_| {
            Error::InvalidArgument(format!(
                "block {b} would lie at byte {at}, past what a VHD BAT addresses"
            ))
        })?;
        table.set(b as usize, sector);
    }
    let fb = footer.encode().to_vec();
    let mut l = Layout::new();
    l.bytes(fb.clone());
    l.bytes(header.encode().to_vec());
    l.bytes(table.encode());
    // Every sector of a block vmhub writes holds data as far as a reader of a
    // dynamic disk is concerned, as QEMU marks new blocks.
    let ones = std::sync::Arc::new(vec![0xffu8; bitmap as usize]);
    for &b in &blocks {
        l.push(super::Segment::Bytes(ones.clone()));
        push_block(&mut l, size, block_size, b);
    }
    l.bytes(fb);
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::Segment;
    use crate::vhd::footer::Footer;

    #[test]
    fn blocks_follow_the_bat_in_disk_order() {
        let id = Identity {
            seed: [1; 16],
            timestamp: VHD_EPOCH + 100,
        };
        let size = 10 << 20;
        let m = AllocMap::new(size, [(100, 10), (6 << 20, 4 << 20)]).unwrap();
        let l = layout(size, &m, &id, 2 << 20).unwrap();
        let seg = l.segments();
        let Segment::Bytes(f0) = &seg[0].1 else {
            panic!("no footer copy")
        };
        let f = Footer::decode(f0).unwrap();
        assert!(
            f.is_valid() && f.problems().is_empty(),
            "{:?}",
            f.problems()
        );
        assert_eq!(
            (f.current_size, f.timestamp, f.unique_id),
            (size, 100, id.id(0))
        );
        let Segment::Bytes(t) = &seg[2].1 else {
            panic!("no BAT")
        };
        let table = Bat::decode(t, 5).unwrap();
        let first = (512 + 1024 + 512) / 512;
        let step = (512 + (2 << 20)) / 512;
        assert_eq!(
            (0..5).map(|i| table.raw(i).unwrap()).collect::<Vec<_>>(),
            vec![
                first,
                bat::UNUSED,
                bat::UNUSED,
                first + step,
                first + 2 * step
            ]
        );
        // Three blocks of bitmap and data between the tables and the footer.
        assert_eq!(l.len(), 512 + 1024 + 512 + 3 * (512 + (2 << 20)) + 512);
        assert_eq!(seg.last().unwrap().1, seg[0].1);
        // A partial last block is padded with zeros.
        let odd = layout(
            3 << 20,
            &AllocMap::new(3 << 20, [(2 << 20, 1)]).unwrap(),
            &id,
            2 << 20,
        )
        .unwrap();
        assert!(odd
            .segments()
            .iter()
            .any(|(_, s)| *s == Segment::Zeros(1 << 20)));
    }
}
