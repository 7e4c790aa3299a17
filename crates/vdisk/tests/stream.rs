//! Stream layouts made into files: every format's image of a random sparse
//! disk passes `qemu-img check` and vmhub's own check, compares equal to the
//! raw disk under `qemu-img compare`, leaves blocks without data unallocated,
//! and any byte range produced from the segments equals the same range of
//! the whole file.

mod common;

use common::Rng;

use common::run;
use std::path::Path;
use std::process::Command;
use vdisk::stream::{self, AllocMap, Identity, Layout, StreamFormat};
use vdisk::{Disk, OpenOptions};

/// A raw disk of `size` bytes with random runs of random bytes, written to
/// `path`; returns the map of those runs.
fn sparse_disk(path: &Path, size: u64, rng: &mut Rng) -> AllocMap {
    let mut bytes = vec![0u8; size as usize];
    let mut ranges = Vec::new();
    let mut pos = rng.below(1 << 20);
    while pos < size {
        let len = (1 + rng.below(300 << 10)).min(size - pos);
        for b in &mut bytes[pos as usize..(pos + len) as usize] {
            *b = rng.next() as u8;
        }
        ranges.push((pos, len));
        // Gaps of up to 12 MiB leave whole blocks of every format empty.
        pos += len + rng.below(12 << 20);
    }
    // The last sector holds data, so that a partial last block is exercised.
    let tail = size - 512;
    if ranges.last().is_none_or(|&(o, l)| o + l <= tail) {
        bytes[tail as usize..].fill(0x5a);
        ranges.push((tail, 512));
    }
    std::fs::write(path, &bytes).unwrap();
    AllocMap::new(size, ranges).unwrap()
}

fn qemu_name(f: StreamFormat) -> &'static str {
    match f {
        StreamFormat::Raw => "raw",
        StreamFormat::Vhd => "vpc",
        StreamFormat::Vhdx => "vhdx",
        StreamFormat::Qcow2 => "qcow2",
        StreamFormat::Vdi => "vdi",
    }
}

fn materialize(layout: &Layout, disk: &dyn Disk, path: &Path) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    layout.write_range(disk, 0, layout.len(), &mut f).unwrap();
    drop(f);
    assert_eq!(std::fs::metadata(path).unwrap().len(), layout.len());
}

/// `qemu-img check`, for the formats it checks (not VHD: vmhub's own check
/// covers that one).
fn qemu_check(fmt: &str, img: &Path) {
    if fmt == "vpc" || fmt == "raw" {
        return;
    }
    let out = Command::new("qemu-img")
        .args(["check", "-f", fmt])
        .arg(img)
        .output()
        .expect("qemu-img must be installed (scripts/deps.sh)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && !text.contains("leak") && !text.contains("ERROR"),
        "qemu-img check {}: {text}{}",
        img.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Bytes of the virtual disk `img` stores, by `qemu-img map`.
fn qemu_allocated(fmt: &str, img: &Path) -> u64 {
    let out = Command::new("qemu-img")
        .args(["map", "--output=json", "-f", fmt])
        .arg(img)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"] == true)
        .map(|e| e["length"].as_u64().unwrap())
        .sum()
}

#[test]
fn every_layout_is_a_valid_image_of_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    // 70 MiB and a sector: more than two 32 MiB VHDX blocks, a partial last block.
    let size = (70 << 20) + 512;
    let raw = dir.path().join("disk.raw");
    let map = sparse_disk(&raw, size, &mut rng);
    let disk = vdisk::open(&raw, OpenOptions::default()).unwrap();
    let id = Identity {
        seed: *b"0123456789abcdef",
        timestamp: 1_750_000_000,
    };
    let data: u64 = map.ranges().iter().map(|r| r.1).sum();
    let mut cases: Vec<(StreamFormat, Layout)> = StreamFormat::ALL
        .into_iter()
        .map(|f| (f, stream::layout(f, size, &map, &id).unwrap()))
        .collect();
    // VHDX blocks of 1 MiB, so that some are left unallocated (QEMU reports
    // every VHDX block as data, so vmhub's own map is what says so).
    cases.push((
        StreamFormat::Vhdx,
        stream::vhdx::layout(size, &map, &id, 1 << 20).unwrap(),
    ));
    for (n, (f, layout)) in cases.into_iter().enumerate() {
        let img = dir.path().join(format!("out{n}.{}", f.extension()));
        materialize(&layout, &*disk, &img);
        let q = qemu_name(f);
        if f != StreamFormat::Raw {
            qemu_check(q, &img);
            let report = vdisk::check(&img).unwrap();
            assert!(report.clean, "{}: {:?}", img.display(), report.problems);
            if f != StreamFormat::Vhdx {
                // Only blocks holding data are allocated: less than the disk.
                let alloc = qemu_allocated(q, &img);
                assert!(
                    alloc >= data && alloc < size,
                    "{f:?}: {alloc} of {size} allocated"
                );
            }
        }
        run(Command::new("qemu-img")
            .args(["compare", "-f", q, "-F", "raw"])
            .arg(&img)
            .arg(&raw));
        // vmhub reads it back too.
        let back = vdisk::open(&img, OpenOptions::default()).unwrap();
        assert_eq!(back.virtual_size(), size, "{f:?}");
        if f != StreamFormat::Raw {
            let stored = back.info().unwrap().allocated_bytes;
            let small = n == 5 || f != StreamFormat::Vhdx;
            assert!(
                stored >= data && (!small || stored < size),
                "{f:?}: {stored} of {size} stored"
            );
        }

        // Random ranges from the segments equal the same ranges of the file.
        let whole = std::fs::read(&img).unwrap();
        let len = layout.len();
        for _ in 0..40 {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(3 << 20)).min(len);
            let mut part = Vec::new();
            layout.write_range(&*disk, a, b, &mut part).unwrap();
            assert_eq!(part, whole[a as usize..b as usize], "{f:?} bytes {a}..{b}");
        }
        // Three pieces concatenate to the whole file.
        let (x, y) = (len / 3, 2 * len / 3 + 7);
        let mut joined = Vec::new();
        for (a, b) in [(0, x), (x, y), (y, len)] {
            layout.write_range(&*disk, a, b, &mut joined).unwrap();
        }
        assert!(joined == whole, "{f:?}: pieces differ from the whole");
        // The same inputs give the same file.
        if n < 5 {
            assert_eq!(stream::layout(f, size, &map, &id).unwrap(), layout);
        }
    }
}

#[test]
fn a_vmdk_written_front_to_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x0bad_cafe_f00d_1234);
    let size = (9 << 20) + 512;
    let raw = dir.path().join("disk.raw");
    let map = sparse_disk(&raw, size, &mut rng);
    let disk = vdisk::open(&raw, OpenOptions::default()).unwrap();
    let img = dir.path().join("out.vmdk");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&img).unwrap());
    stream::vmdk::write_vmdk(&*disk, &map, "out.vmdk", 42, &mut f).unwrap();
    drop(f);
    qemu_check("vmdk", &img);
    run(Command::new("qemu-img")
        .args(["compare", "-f", "vmdk", "-F", "raw"])
        .arg(&img)
        .arg(&raw));
    let report = vdisk::check(&img).unwrap();
    assert!(report.clean, "{:?}", report.problems);
    let back = vdisk::open(&img, OpenOptions::default()).unwrap();
    assert_eq!(back.virtual_size(), size);
    // Grains without data are not stored.
    let data: u64 = map.ranges().iter().map(|r| r.1).sum();
    let stored = back.info().unwrap().allocated_bytes;
    assert!(stored >= data && stored < size, "{stored} of {size} stored");
}

#[test]
fn empty_full_and_odd_sized_disks() {
    let dir = tempfile::tempdir().unwrap();
    let id = Identity {
        seed: [9; 16],
        timestamp: 0,
    };
    // A whole number of blocks, and a size that is not even whole sectors
    // (every format but raw rounds it up; the tail reads as zeros).
    for size in [3u64 << 20, (3 << 20) + 100] {
        let raw = dir.path().join("full.raw");
        let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8 | 1).collect();
        std::fs::write(&raw, &bytes).unwrap();
        let full = AllocMap::new(size, [(0, size)]).unwrap();
        let empty = AllocMap::new(size, []).unwrap();
        let disk = vdisk::open(&raw, OpenOptions::default()).unwrap();
        let zero_raw = dir.path().join("zero.raw");
        std::fs::write(&zero_raw, vec![0u8; size as usize]).unwrap();
        for f in StreamFormat::ALL {
            let q = qemu_name(f);
            for (map, against) in [(&full, &raw), (&empty, &zero_raw)] {
                let layout = stream::layout(f, size, map, &id).unwrap();
                let img = dir.path().join(format!("x.{}", f.extension()));
                materialize(&layout, &*disk, &img);
                qemu_check(q, &img);
                assert!(vdisk::check(&img).unwrap().clean, "{f:?} {size}");
                run(Command::new("qemu-img")
                    .args(["compare", "-f", q, "-F", "raw"])
                    .arg(&img)
                    .arg(against));
            }
        }
        let img = dir.path().join("x.vmdk");
        let mut out = std::fs::File::create(&img).unwrap();
        stream::vmdk::write_vmdk(&*disk, &full, "x.vmdk", 1, &mut out).unwrap();
        drop(out);
        qemu_check("vmdk", &img);
        run(Command::new("qemu-img")
            .args(["compare", "-f", "vmdk", "-F", "raw"])
            .arg(&img)
            .arg(&raw));
    }
}
