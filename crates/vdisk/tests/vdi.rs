//! VDI against QEMU both ways: vmhub reads what qemu-img and qemu-io wrote,
//! qemu-img reads and checks what vmhub wrote, and malformed images give errors
//! that name the file.

mod common;

use common::Rng;
#[allow(dead_code)]
#[path = "corpus/exercise.rs"]
mod exercise;

use std::path::Path;
use std::process::Command;
use vdisk::{CreateOptions, Disk, ExtentKind, Format, ImageType, OpenOptions};

/// What qemu-img reads from the VDI `img`.
fn qemu_raw(img: &Path) -> Vec<u8> {
    let raw = img.with_extension("qemu.raw");
    let _ = std::fs::remove_file(&raw);
    common::run(
        Command::new("qemu-img")
            .args(["convert", "-f", "vdi", "-O", "raw"])
            .arg(img)
            .arg(&raw),
    );
    let b = std::fs::read(&raw).unwrap();
    std::fs::remove_file(&raw).unwrap();
    b
}

fn qemu_check(img: &Path) {
    common::run(
        Command::new("qemu-img")
            .args(["check", "-f", "vdi"])
            .arg(img),
    );
}

fn read_all(d: &dyn Disk) -> Vec<u8> {
    let mut b = vec![0u8; d.virtual_size() as usize];
    // Odd-sized requests, so that reads straddle blocks.
    let mut off = 0;
    while off < b.len() {
        let n = (b.len() - off).min(777_777);
        d.read_at(&mut b[off..off + n], off as u64).unwrap();
        off += n;
    }
    b
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed ^ (i >> 9) as u8)
        .collect()
}

fn opts(kind: ImageType) -> CreateOptions {
    CreateOptions {
        format: Format::Vdi,
        image_type: kind,
        ..CreateOptions::default()
    }
}

fn qemu_io(img: &Path, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "vdi"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    common::run(c.arg(img));
}

#[test]
fn reads_what_qemu_wrote() {
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in [("d.vdi", None), ("s.vdi", Some("static=on"))] {
        let img = dir.path().join(name);
        let mut c = Command::new("qemu-img");
        c.args(["create", "-q", "-f", "vdi"]);
        if let Some(o) = extra {
            c.args(["-o", o]);
        }
        common::run(c.arg(&img).arg("9M"));
        qemu_io(
            &img,
            &[
                "write -P 0x5a 1M 64k",
                "write -P 0x33 3071k 2k",
                "write -P 0x11 0 512",
                "write -P 0x77 8M 1M",
            ],
        );
        let want = qemu_raw(&img);
        let d = vdisk::open(&img, OpenOptions::default()).unwrap();
        assert_eq!(d.virtual_size(), 9 << 20);
        assert!(
            read_all(d.as_ref()) == want,
            "{name}: reads differ from qemu's"
        );
        let map = d.map(0, 9 << 20).unwrap();
        let covered: u64 = map.iter().map(|e| e.length).sum();
        assert_eq!(covered, 9 << 20);
        if extra.is_none() {
            // Blocks 0, 1, 2, 3 and 8 hold data; the others are unallocated.
            let unalloc: u64 = map
                .iter()
                .filter(|e| e.kind == ExtentKind::Unallocated)
                .map(|e| e.length)
                .sum();
            assert_eq!(unalloc, 4 << 20, "{map:?}");
            assert!(map
                .iter()
                .any(|e| e.kind == ExtentKind::Unallocated && e.offset == 4 << 20));
        }
        let r = vdisk::check(&img).unwrap();
        assert!(r.clean, "{name}: {:?}", r.problems);
        let info = d.info().unwrap();
        assert_eq!(info.format, "vdi");
        let json = serde_json::to_string(&info).unwrap();
        let t = if extra.is_some() { "static" } else { "dynamic" };
        assert!(json.contains(&format!("\"type\":\"{t}\"")), "{json}");
    }
}

#[test]
fn qemu_reads_what_vmhub_wrote() {
    let dir = tempfile::tempdir().unwrap();
    for kind in [ImageType::Dynamic, ImageType::Fixed] {
        let img = dir.path().join(format!("{kind:?}.vdi"));
        let size = (7 << 20) + 512 * 3;
        let notes = vdisk::create(&img, size, &opts(kind), false).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        qemu_check(&img);
        assert!(qemu_raw(&img) == vec![0u8; size as usize]);
        let mut model = vec![0u8; size as usize];
        {
            let mut d = vdisk::open(&img, OpenOptions { writable: true }).unwrap();
            for (off, len, seed) in [
                (0u64, 4096usize, 1u8),
                ((1 << 20) - 100, 300, 2),
                ((5 << 20) + 7, (1 << 20) + 999, 3),
                (size - 512, 512, 4),
            ] {
                let b = pattern(len, seed);
                d.write_at(&b, off).unwrap();
                model[off as usize..off as usize + len].copy_from_slice(&b);
            }
            // Zeros into an unallocated block allocate nothing.
            d.write_at(&[0u8; 8192], 3 << 20).unwrap();
            d.flush().unwrap();
            assert!(read_all(d.as_ref()) == model);
        }
        qemu_check(&img);
        assert!(qemu_raw(&img) == model, "{kind:?}: qemu reads other bytes");
        let d = vdisk::open(&img, OpenOptions::default()).unwrap();
        if kind == ImageType::Dynamic {
            let map = d.map(3 << 20, 1 << 20).unwrap();
            assert_eq!(map.len(), 1);
            assert_eq!(map[0].kind, ExtentKind::Unallocated);
            // Blocks 0, 1, 5, 6 and 7 are allocated.
            assert_eq!(d.info().unwrap().allocated_bytes, 4 * (1 << 20) + 1536);
        }
        assert!(vdisk::check(&img).unwrap().clean);
        let out = Command::new("qemu-img")
            .args(["info", "-f", "vdi"])
            .arg(&img)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("({size} bytes)")), "{text}");
    }
}

#[test]
fn writes_into_qemu_images_read_back_in_qemu() {
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in [("d.vdi", None), ("s.vdi", Some("static=on"))] {
        let img = dir.path().join(name);
        let mut c = Command::new("qemu-img");
        c.args(["create", "-q", "-f", "vdi"]);
        if let Some(o) = extra {
            c.args(["-o", o]);
        }
        common::run(c.arg(&img).arg("6M"));
        qemu_io(&img, &["write -P 0x5a 1M 64k", "write -P 0x33 2047k 2k"]);
        let mut model = qemu_raw(&img);
        {
            let mut d = vdisk::open(&img, OpenOptions { writable: true }).unwrap();
            for (off, len, seed) in [
                (0u64, 512usize, 9u8),
                ((1 << 20) + 4096, 4096, 8),
                ((2 << 20) - 512, 1024, 7),
                (4 << 20, 300 * 1024, 6),
                ((6 << 20) - 512, 512, 5),
            ] {
                let b = pattern(len, seed);
                d.write_at(&b, off).unwrap();
                model[off as usize..off as usize + len].copy_from_slice(&b);
            }
            d.write_at(&[0u8; 512], 1 << 20).unwrap();
            model[1 << 20..(1 << 20) + 512].fill(0);
            d.flush().unwrap();
        }
        qemu_check(&img);
        assert!(qemu_raw(&img) == model, "{name}: qemu reads other bytes");
        // And qemu writes into what vmhub allocated.
        qemu_io(&img, &["write -P 0x44 4M 4k"]);
        model[4 << 20..(4 << 20) + 4096].fill(0x44);
        let d = vdisk::open(&img, OpenOptions::default()).unwrap();
        assert!(read_all(d.as_ref()) == model);
    }
}

#[test]
fn random_writes_match_a_byte_array() {
    let dir = tempfile::tempdir().unwrap();
    for (seed, kind) in [(0x1234_5678u64, ImageType::Dynamic), (99, ImageType::Fixed)] {
        let img = dir.path().join(format!("r{seed}.vdi"));
        let size: u64 = 12 << 20;
        vdisk::create(&img, size, &opts(kind), false).unwrap();
        let mut model = vec![0u8; size as usize];
        let mut rng = Rng(seed);
        let mut d = vdisk::open(&img, OpenOptions { writable: true }).unwrap();
        for step in 0..300 {
            let max = if rng.below(4) == 0 { 3 << 20 } else { 9000 };
            let len = 1 + rng.below(max);
            let off = rng.below(size - len + 1);
            let b: Vec<u8> = if rng.below(5) == 0 {
                vec![0; len as usize]
            } else {
                pattern(len as usize, rng.next() as u8)
            };
            d.write_at(&b, off).unwrap();
            model[off as usize..(off + len) as usize].copy_from_slice(&b);
            if rng.below(6) == 0 {
                let len = 1 + rng.below(100_000);
                let off = rng.below(size - len + 1);
                let mut got = vec![0u8; len as usize];
                d.read_at(&mut got, off).unwrap();
                assert!(
                    got == model[off as usize..(off + len) as usize],
                    "step {step}"
                );
            }
            if rng.below(40) == 0 {
                d.flush().unwrap();
                drop(d);
                assert!(vdisk::check(&img).unwrap().clean, "step {step}");
                d = vdisk::open(&img, OpenOptions { writable: true }).unwrap();
            }
        }
        d.flush().unwrap();
        drop(d);
        qemu_check(&img);
        assert!(
            qemu_raw(&img) == model,
            "seed {seed}: qemu reads other bytes"
        );
        let d = vdisk::open(&img, OpenOptions::default()).unwrap();
        assert!(read_all(d.as_ref()) == model);
    }
}

#[test]
fn unflushed_allocations_leave_the_old_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("c.vdi");
    vdisk::create(&img, 4 << 20, &opts(ImageType::Dynamic), false).unwrap();
    let mut model = vec![0u8; 4 << 20];
    let mut d = vdisk::open(&img, OpenOptions { writable: true }).unwrap();
    d.write_at(&pattern(5000, 1), 100).unwrap();
    model[100..5100].copy_from_slice(&pattern(5000, 1));
    d.flush().unwrap();
    // A new block written but never flushed, as if the process died here.
    d.write_at(&pattern(5000, 2), 2 << 20).unwrap();
    d.write_at(&pattern(100, 3), 0).unwrap();
    let before = std::fs::read(&img).unwrap();
    drop(d);
    let copy = dir.path().join("crashed.vdi");
    std::fs::write(&copy, &before).unwrap();
    qemu_check(&copy);
    // The block-map entry of the unflushed block is not on disk: the old data.
    let got = qemu_raw(&copy);
    assert!(got[2 << 20..(2 << 20) + 5000].iter().all(|&b| b == 0));
    assert_eq!(&got[100..5100], &model[100..5100][..]);
    // The leftover block is overwritten whole by the next allocation there.
    let mut d = vdisk::open(&copy, OpenOptions { writable: true }).unwrap();
    d.write_at(&[7u8; 512], 3 << 20).unwrap();
    d.flush().unwrap();
    drop(d);
    qemu_check(&copy);
    let got = qemu_raw(&copy);
    assert!(got[(3 << 20) + 512..4 << 20].iter().all(|&b| b == 0));
    assert!(got[3 << 20..(3 << 20) + 512].iter().all(|&b| b == 7));
}

#[test]
fn convert_from_raw_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    let mut content = vec![0u8; 5 << 20];
    content[1000..70_000].copy_from_slice(&pattern(69_000, 3));
    content[(4 << 20) + 5..(4 << 20) + 9].copy_from_slice(&[1, 2, 3, 4]);
    std::fs::write(&raw, &content).unwrap();
    let src = vdisk::open(&raw, OpenOptions::default()).unwrap();
    let img = dir.path().join("out.vdi");
    vdisk::ops::convert::convert(
        src.as_ref(),
        &img,
        &opts(ImageType::Dynamic),
        false,
        &mut |_, _| {},
    )
    .unwrap();
    qemu_check(&img);
    assert!(qemu_raw(&img) == content);
    let d = vdisk::open(&img, OpenOptions::default()).unwrap();
    // Only the two blocks with data are allocated.
    assert_eq!(d.info().unwrap().allocated_bytes, 2 << 20);
}

/// A valid small dynamic image (blocks 0 and 2 allocated) to break.
fn base(dir: &Path) -> Vec<u8> {
    let img = dir.join("base.vdi");
    vdisk::create(&img, 4 << 20, &opts(ImageType::Dynamic), false).unwrap();
    let mut d = vdisk::open(&img, OpenOptions { writable: true }).unwrap();
    d.write_at(&[1u8; 4096], 0).unwrap();
    d.write_at(&[2u8; 4096], 2 << 20).unwrap();
    d.flush().unwrap();
    drop(d);
    std::fs::read(&img).unwrap()
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn malformed_images_give_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = base(dir.path());
    let data = u32::from_le_bytes(good[0x158..0x15c].try_into().unwrap()) as usize;
    type Edit = Box<dyn Fn(&mut Vec<u8>)>;
    // (name, edit, words the open error must hold)
    let cases: Vec<(&str, Edit, &[&str])> = vec![
        (
            "version",
            Box::new(|b| put32(b, 0x44, 0x0002_0000)),
            &["version"],
        ),
        (
            "header-size",
            Box::new(|b| put32(b, 0x48, 0xffff_0000)),
            &["header size"],
        ),
        (
            "image-type",
            Box::new(|b| put32(b, 0x4c, 9)),
            &["image type"],
        ),
        (
            "sector-size",
            Box::new(|b| put32(b, 0x168, 4096)),
            &["sector size"],
        ),
        (
            "block-size-zero",
            Box::new(|b| put32(b, 0x178, 0)),
            &["block size"],
        ),
        (
            "block-size-huge",
            Box::new(|b| put32(b, 0x178, 0x8000_0000)),
            &["block size"],
        ),
        (
            "blocks-huge",
            Box::new(|b| put32(b, 0x180, 0xffff_fff0)),
            &["blocks"],
        ),
        (
            "disk-size-absurd",
            Box::new(|b| b[0x170..0x178].copy_from_slice(&u64::MAX.to_le_bytes())),
            &["disk size"],
        ),
        (
            "map-past-eof",
            Box::new(|b| put32(b, 0x154, 0x7fff_0000)),
            &["block map"],
        ),
        (
            "data-over-map",
            Box::new(|b| put32(b, 0x158, 0x200)),
            &["offset of data"],
        ),
        (
            "entry-past-eof",
            Box::new(|b| put32(b, 0x208, 1000)),
            &["entry 2"],
        ),
        (
            "entry-shared",
            Box::new(|b| put32(b, 0x208, 0)),
            &["entry 2", "already"],
        ),
        (
            "truncated",
            Box::new(move |b| b.truncate(data + (1 << 20) + 100)),
            &["entry 2", "past the end"],
        ),
        ("short", Box::new(|b| b.truncate(0x50)), &["too small"]),
        ("diff", Box::new(|b| put32(b, 0x4c, 4)), &["differencing"]),
    ];
    for (name, edit, words) in cases {
        let mut b = good.clone();
        edit(&mut b);
        let path = dir.path().join(format!("{name}.vdi"));
        std::fs::write(&path, &b).unwrap();
        let outcome = exercise::exercise(&path, 4 << 20);
        outcome.assert_errors_name(&path);
        let err = match &outcome.open {
            Ok(_) => panic!("{name}: open succeeded"),
            Err(e) => e.clone(),
        };
        for w in words {
            assert!(err.contains(w), "{name}: open error lacks {w:?}: {err}");
        }
        match &outcome.check {
            Ok(r) => assert!(!r.clean, "{name}: check is clean"),
            Err(e) => assert!(
                name == "diff" || name == "version",
                "{name}: check failed: {e}"
            ),
        }
    }
    // The count of allocated blocks differs from the block map: check says so.
    let mut b = good.clone();
    put32(&mut b, 0x184, 1);
    let path = dir.path().join("count.vdi");
    std::fs::write(&path, &b).unwrap();
    let r = vdisk::check(&path).unwrap();
    assert!(r
        .problems
        .iter()
        .any(|p| p.structure == "header" && p.message.contains("allocated blocks")));
}

#[test]
fn random_damage_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let good = base(dir.path());
    let path = dir.path().join("damaged.vdi");
    let mut rng = Rng(7);
    for _ in 0..300 {
        let mut b = good.clone();
        for _ in 0..1 + rng.below(4) {
            // Damage the header and block map, where the structure is.
            let at = rng.below(0x400) as usize;
            b[at] = rng.next() as u8;
        }
        std::fs::write(&path, &b).unwrap();
        exercise::exercise(&path, 4 << 20).assert_errors_name(&path);
    }
}

/// Turns the dynamic VDI at `img` into a differencing image (a VirtualBox
/// snapshot) over the VDI at `parent`: its type, and the UUIDs that link it.
fn make_snapshot(img: &Path, parent: &Path) {
    use vdisk::vdi::header::Header;
    let p = std::fs::read(parent).unwrap();
    let ph = Header::decode(p[..512].try_into().unwrap());
    let mut b = std::fs::read(img).unwrap();
    let raw: [u8; 512] = b[..512].try_into().unwrap();
    let mut h = Header::decode(&raw);
    h.image_type = 4;
    h.uuid_link = ph.uuid_image;
    h.uuid_parent = ph.uuid_last_snap;
    b[..512].copy_from_slice(&h.encode(&raw));
    std::fs::write(img, b).unwrap();
}

/// VirtualBox's snapshots: a base in the machine's folder, two differencing
/// images over it in `Snapshots/`. Blocks a snapshot does not hold read from
/// its parent, a zero block hides it; the chain is listed; the parent is
/// found by UUID alone; a missing parent, a write and a merge are refused
/// with errors that say why.
#[test]
fn snapshots_read_through_their_parents() {
    let dir = tempfile::tempdir().unwrap();
    let size = 6u64 << 20;
    let base = dir.path().join("disk.vdi");
    vdisk::create(&base, size, &opts(ImageType::Dynamic), false).unwrap();
    let mut expect = vec![0u8; size as usize];
    {
        let mut d = vdisk::open(&base, OpenOptions { writable: true }).unwrap();
        let b = pattern(4 << 20, 1);
        d.write_at(&b, 1 << 20).unwrap();
        d.flush().unwrap();
        expect[1 << 20..5 << 20].copy_from_slice(&b);
    }
    let snaps = dir.path().join("Snapshots");
    std::fs::create_dir(&snaps).unwrap();
    // The first snapshot holds block 2 (part of it written: the rest of a
    // snapshot's block is its own zeros, as VirtualBox copies whole blocks)
    // and zeroes block 3; the second holds part of block 4.
    let s1 = snaps.join("{5e1a0001-0000-4000-8000-000000000001}.vdi");
    vdisk::create(&s1, size, &opts(ImageType::Dynamic), false).unwrap();
    {
        let mut d = vdisk::open(&s1, OpenOptions { writable: true }).unwrap();
        let b = pattern(1 << 20, 2);
        d.write_at(&b, 2 << 20).unwrap();
        d.write_at(&[9u8; 512], 3 << 20).unwrap();
        d.flush().unwrap();
        expect[2 << 20..3 << 20].copy_from_slice(&b);
    }
    {
        // Block 3 becomes a zero block (what a discard leaves).
        let mut b = std::fs::read(&s1).unwrap();
        let map = u32::from_le_bytes(b[0x154..0x158].try_into().unwrap()) as usize;
        put32(&mut b, map + 3 * 4, 0xffff_fffe);
        put32(&mut b, 0x184, 1);
        std::fs::write(&s1, b).unwrap();
        expect[3 << 20..4 << 20].fill(0);
    }
    make_snapshot(&s1, &base);
    let s2 = snaps.join("{5e1a0002-0000-4000-8000-000000000002}.vdi");
    vdisk::create(&s2, size, &opts(ImageType::Dynamic), false).unwrap();
    {
        let mut d = vdisk::open(&s2, OpenOptions { writable: true }).unwrap();
        let mut block = expect[4 << 20..5 << 20].to_vec();
        block[4096..8192].copy_from_slice(&pattern(4096, 3));
        d.write_at(&block, 4 << 20).unwrap();
        d.flush().unwrap();
        expect[4 << 20..5 << 20].copy_from_slice(&block);
    }
    make_snapshot(&s2, &s1);
    // A decoy beside them with another UUID is passed over.
    vdisk::create(
        &snaps.join("unrelated.vdi"),
        size,
        &opts(ImageType::Dynamic),
        false,
    )
    .unwrap();

    let d = vdisk::open(&s2, OpenOptions::default()).unwrap();
    assert!(
        read_all(d.as_ref()) == expect,
        "the snapshot chain reads differently"
    );
    let info = d.info().unwrap();
    let files: Vec<&str> = info.chain.iter().map(|l| l.file.as_str()).collect();
    assert_eq!(info.chain.len(), 3, "{files:?}");
    assert!(files[1].ends_with("00000001}.vdi") && files[2].ends_with("disk.vdi"));
    assert_eq!(info.chain[0].kind, "differencing");
    // Its own map holds blocks 4 only; the whole map shows the chain's data.
    let own = d.own_map(0, size).unwrap();
    let own_data: u64 = own
        .iter()
        .filter(|e| e.kind == ExtentKind::Data)
        .map(|e| e.length)
        .sum();
    assert_eq!(own_data, 1 << 20, "{own:?}");
    assert!(d
        .map(0, size)
        .unwrap()
        .iter()
        .any(|e| e.kind == ExtentKind::Data && e.offset <= 1 << 20));
    drop(d);
    for s in [&s1, &s2] {
        let r = vdisk::check(s).unwrap();
        assert!(r.clean, "{}: {:?}", s.display(), r.problems);
    }
    // Flattened, the chain is a plain VDI that qemu-img reads alike.
    let flat = dir.path().join("flat.vdi");
    let src = vdisk::open(&s2, OpenOptions::default()).unwrap();
    vdisk::ops::convert::convert(
        src.as_ref(),
        &flat,
        &opts(ImageType::Dynamic),
        false,
        &mut |_, _| {},
    )
    .unwrap();
    drop(src);
    assert!(
        qemu_raw(&flat) == expect,
        "qemu-img reads the flattened chain differently"
    );

    // Writing into a snapshot is refused, and so is a merge.
    let e = vdisk::open(&s2, OpenOptions { writable: true })
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("differencing VDI") && e.contains("convert"),
        "{e}"
    );
    let e = vdisk::ops::merge::merge(&s2, Default::default(), &mut |_, _| {})
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("merging vdi disks is not supported"), "{e}");

    // Without its parent, a snapshot names the UUID it looks for.
    std::fs::rename(&base, dir.path().join("moved.bin")).unwrap();
    let e = vdisk::open(&s2, OpenOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("parent not found") && e.contains("00000001}.vdi"),
        "{e}"
    );
    let r = vdisk::check(&s1).unwrap();
    assert!(!r.clean && r.problems.iter().any(|p| p.structure == "parent"));
    // Two snapshots that link to each other: a loop, refused.
    make_snapshot(&s1, &s2);
    let e = vdisk::open(&s2, OpenOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("a loop"), "{e}");
}
