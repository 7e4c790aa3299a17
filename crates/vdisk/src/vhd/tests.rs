//! Property tests: random writes through a VHD behave as writes to a byte array,
//! across flushes and reopens, and leave an image that checks clean.

use super::*;
use crate::format::{create, CreateOptions, Format, ImageType};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// Write `len` bytes of `fill` (0 means zeros) at `offset`.
    Write {
        offset: u64,
        len: u64,
        fill: u8,
    },
    Discard {
        offset: u64,
        len: u64,
    },
    Flush,
    Reopen,
}

fn op(size: u64) -> impl Strategy<Value = Op> {
    let range = (0..size).prop_flat_map(move |o| (Just(o), 1..=(size - o).min(40_000)));
    prop_oneof![
        6 => (range.clone(), prop_oneof![Just(0u8), 1..=255u8])
            .prop_map(|((offset, len), fill)| Op::Write { offset, len, fill }),
        1 => range.prop_map(|(offset, len)| Op::Discard { offset, len }),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

fn run(kind: ImageType, block_size: u64, size: u64, ops: &[Op]) {
    run_on(kind, block_size, size, ops, false)
}

/// Runs `ops` on a new disk, or on a differencing child of a parent that holds
/// data when `child`.
fn run_on(kind: ImageType, block_size: u64, size: u64, ops: &[Op], child: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.vhd");
    let opts = CreateOptions {
        format: Format::Vhd,
        image_type: kind,
        block_size: Some(block_size),
        compat_vpc: false,
    };
    let mut model = vec![0u8; size as usize];
    let base = dir.path().join("base.vhd");
    if child {
        create(&base, size, &opts, false).unwrap();
        let mut b = VhdDisk::open(&base, true).unwrap();
        for (i, m) in model.iter_mut().enumerate() {
            // Data in some stretches, zeros in others.
            if (i / 3000) % 3 != 0 {
                *m = (i % 251) as u8 | 1;
            }
        }
        b.write_at(&model, 0).unwrap();
        b.flush().unwrap();
        crate::create_child(&path, &base, block_size, false).unwrap();
    } else {
        create(&path, size, &opts, false).unwrap();
    }
    let base_bytes = child.then(|| std::fs::read(&base).unwrap());
    let mut disk = VhdDisk::open(&path, true).unwrap();
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::Write { offset, len, fill } => {
                // A pattern that differs per byte catches misplaced writes.
                let buf: Vec<u8> = (0..len)
                    .map(|j| if fill == 0 { 0 } else { fill ^ (j as u8) })
                    .collect();
                disk.write_at(&buf, offset).unwrap();
                model[offset as usize..(offset + len) as usize].copy_from_slice(&buf);
            }
            Op::Discard { offset, len } => {
                disk.discard(offset, len).unwrap();
                model[offset as usize..(offset + len) as usize].fill(0);
            }
            Op::Flush => disk.flush().unwrap(),
            Op::Reopen => {
                disk.flush().unwrap();
                drop(disk);
                let report = crate::check(&path).unwrap();
                assert!(report.clean, "after op {i}: {:?}", report.problems);
                disk = VhdDisk::open(&path, true).unwrap();
            }
        }
        // Spot-check the range just touched and a sector beside it.
        if let Op::Write { offset, len, .. } | Op::Discard { offset, len } = *op {
            let lo = offset.saturating_sub(512);
            let hi = (offset + len + 512).min(size);
            let mut got = vec![0u8; (hi - lo) as usize];
            disk.read_at(&mut got, lo).unwrap();
            assert!(
                got == model[lo as usize..hi as usize],
                "after op {i} ({op:?})"
            );
        }
    }
    disk.flush().unwrap();
    drop(disk);
    let report = crate::check(&path).unwrap();
    assert!(report.clean, "{:?}", report.problems);
    let disk = VhdDisk::open(&path, false).unwrap();
    let mut all = vec![0u8; size as usize];
    disk.read_at(&mut all, 0).unwrap();
    assert!(all == model, "final contents differ");
    if let Some(b) = base_bytes {
        assert!(std::fs::read(&base).unwrap() == b, "the parent changed");
    }
    // Every block with data is mapped as data; unmapped ranges read as zeros.
    for e in disk.map(0, size).unwrap() {
        if e.kind != ExtentKind::Data {
            assert!(model[e.offset as usize..e.end() as usize]
                .iter()
                .all(|&b| b == 0));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn dynamic_small_blocks(ops in prop::collection::vec(op(300_000), 1..40)) {
        run(ImageType::Dynamic, 4096, 300_000, &ops);
    }

    #[test]
    fn dynamic_sector_blocks(ops in prop::collection::vec(op(40_960), 1..40)) {
        run(ImageType::Dynamic, 512, 40_960, &ops);
    }

    #[test]
    fn dynamic_default_blocks(ops in prop::collection::vec(op(5 << 20), 1..30)) {
        run(ImageType::Dynamic, 2 << 20, 5 << 20, &ops);
    }

    #[test]
    fn differencing_small_blocks(ops in prop::collection::vec(op(300_000), 1..40)) {
        run_on(ImageType::Dynamic, 4096, 300_000, &ops, true);
    }

    #[test]
    fn differencing_default_blocks(ops in prop::collection::vec(op(5 << 20), 1..30)) {
        run_on(ImageType::Dynamic, 2 << 20, 5 << 20, &ops, true);
    }

    #[test]
    fn fixed(ops in prop::collection::vec(op(300_032), 1..40)) {
        run(ImageType::Fixed, 2 << 20, 300_032, &ops);
    }
}

#[test]
fn zero_writes_allocate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.vhd");
    create(&path, 8 << 20, &CreateOptions::default(), false).unwrap();
    let len_before = std::fs::metadata(&path).unwrap().len();
    let mut d = VhdDisk::open(&path, true).unwrap();
    d.write_at(&vec![0u8; 4 << 20], 1 << 20).unwrap();
    d.flush().unwrap();
    drop(d);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len_before);
    let d = VhdDisk::open(&path, false).unwrap();
    assert_eq!(d.info().unwrap().allocated_bytes, 0);
}

#[test]
fn unflushed_allocation_leaves_a_valid_image() {
    // A process killed before flush leaves the data and footer written but the
    // BAT unchanged: the image must still check clean and read the old contents.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u.vhd");
    create(&path, 8 << 20, &CreateOptions::default(), false).unwrap();
    let mut d = VhdDisk::open(&path, true).unwrap();
    d.write_at(&[7u8; 4096], 0).unwrap();
    d.flush().unwrap();
    d.write_at(&[9u8; 4096], 3 << 20).unwrap();
    // Simulate the kill: forget the in-memory state without flushing.
    if let Layout::Dynamic(dy) = &mut d.layout {
        dy.dirty_bat.clear();
        dy.pending_bitmaps.clear();
    }
    drop(d);
    let report = crate::check(&path).unwrap();
    assert!(report.clean, "{:?}", report.problems);
    let d = VhdDisk::open(&path, true).unwrap();
    let mut b = [0u8; 4096];
    d.read_at(&mut b, 0).unwrap();
    assert_eq!(b, [7u8; 4096]);
    d.read_at(&mut b, 3 << 20).unwrap();
    assert_eq!(b, [0u8; 4096]);
}

#[test]
fn map_shows_host_holes_inside_blocks_as_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.vhd");
    create(&path, 8 << 20, &CreateOptions::default(), false).unwrap();
    let mut d = VhdDisk::open(&path, true).unwrap();
    d.write_at(&[3u8; 8192], (2 << 20) + (1 << 20)).unwrap();
    d.flush().unwrap();
    let map = d.map(0, 8 << 20).unwrap();
    let kind_at = |o: u64| {
        map.iter()
            .find(|e| e.offset <= o && o < e.end())
            .map(|e| e.kind)
    };
    assert_eq!(kind_at(0), Some(ExtentKind::Unallocated));
    assert_eq!(kind_at((2 << 20) + (1 << 20)), Some(ExtentKind::Data));
    // The host's first block of the VHD block also holds the bitmap: data.
    assert_eq!(kind_at((2 << 20) + 8192), Some(ExtentKind::Zero));
    // The host block holding the end of the VHD block also holds the footer.
    assert_eq!(kind_at((4 << 20) - 8192), Some(ExtentKind::Zero));
    assert_eq!(kind_at(4 << 20), Some(ExtentKind::Unallocated));
    let covered: u64 = map.iter().map(|e| e.length).sum();
    assert_eq!(covered, 8 << 20);
}
