//! VMDK against QEMU both ways: vmhub reads what qemu-img and qemu-io wrote in
//! every subformat, qemu-img reads and checks the stream-optimized images
//! vmhub writes, and malformed images give errors that name the file.

mod common;
#[allow(dead_code)]
#[path = "corpus/exercise.rs"]
mod exercise;

use std::path::Path;
use std::process::Command;
use vdisk::{CreateOptions, ExtentKind, Format, OpenOptions};

fn qemu_img(args: &[&str], files: &[&Path]) {
    let mut c = Command::new("qemu-img");
    c.args(args);
    for f in files {
        c.arg(f);
    }
    common::run(&mut c);
}

fn qemu_io(img: &Path, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "vmdk"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    common::run(c.arg(img));
}

/// vmhub converts `img` to raw; qemu-img must find it equal to `img`.
fn assert_vmhub_reads_as_qemu(img: &Path) {
    let raw = img.with_extension("vmhub.raw");
    let d = vdisk::open(img, OpenOptions::default()).unwrap();
    vdisk::ops::convert::convert(
        d.as_ref(),
        &raw,
        &CreateOptions {
            format: Format::Raw,
            ..CreateOptions::default()
        },
        true,
        &mut |_, _| {},
    )
    .unwrap();
    qemu_img(&["compare", "-q", "-f", "raw", "-F", "vmdk"], &[&raw, img]);
    std::fs::remove_file(&raw).unwrap();
    let r = vdisk::check(img).unwrap();
    assert!(r.clean, "{}: {:?}", img.display(), r.problems);
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29) ^ seed ^ (i >> 10) as u8)
        .collect()
}

fn info_json(img: &Path) -> String {
    let d = vdisk::open(img, OpenOptions::default()).unwrap();
    serde_json::to_string(&d.info().unwrap()).unwrap()
}

const WRITES: [&str; 4] = [
    "write -P 0x5a 1M 64k",
    "write -P 0x33 3071k 2k",
    "write -P 0x11 0 512",
    "write -z 5M 128k",
];

#[test]
fn reads_monolithic_sparse() {
    let dir = tempfile::tempdir().unwrap();
    for sub in [
        None,
        Some("subformat=monolithicSparse"),
        Some("zeroed_grain=on"),
    ] {
        let img = dir.path().join("m.vmdk");
        let mut args = vec!["create", "-q", "-f", "vmdk"];
        if let Some(o) = sub {
            args.extend(["-o", o]);
        }
        let mut c = Command::new("qemu-img");
        c.args(&args).arg(&img).arg("9M");
        common::run(&mut c);
        qemu_io(&img, &WRITES);
        assert_vmhub_reads_as_qemu(&img);
        let d = vdisk::open(&img, OpenOptions::default()).unwrap();
        let map = d.map(0, 9 << 20).unwrap();
        assert_eq!(map.iter().map(|e| e.length).sum::<u64>(), 9 << 20);
        assert!(map.iter().any(|e| e.kind == ExtentKind::Unallocated
            && e.offset <= 7 << 20
            && e.end() >= 8 << 20));
        if sub == Some("zeroed_grain=on") {
            // qemu stores the zeroed range as zero grains (entry 1).
            let zero = d.map(5 << 20, 128 << 10).unwrap();
            assert_eq!(zero.len(), 1, "{zero:?}");
            assert_eq!(zero[0].kind, ExtentKind::Zero);
        }
        let json = info_json(&img);
        assert!(
            json.contains("\"create-type\":\"monolithicSparse\""),
            "{json}"
        );
        assert!(json.contains("\"adapter-type\":\"ide\""), "{json}");
    }
}

#[test]
fn reads_stream_optimized_from_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("e.vmdk");
    let mut c = Command::new("qemu-img");
    c.args([
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
    ])
    .arg(&empty)
    .arg("5M");
    common::run(&mut c);
    assert_vmhub_reads_as_qemu(&empty);
    // A filled raw image converted by qemu: compressed grains with markers.
    let raw = dir.path().join("src.raw");
    let mut content = vec![0u8; 6 << 20];
    content[..3 << 20].copy_from_slice(&pattern(3 << 20, 1));
    content[(5 << 20) + 100..(5 << 20) + 5000].copy_from_slice(&pattern(4900, 2));
    std::fs::write(&raw, &content).unwrap();
    let img = dir.path().join("s.vmdk");
    qemu_img(
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
        ],
        &[&raw, &img],
    );
    assert_vmhub_reads_as_qemu(&img);
    let d = vdisk::open(&img, OpenOptions::default()).unwrap();
    let mut got = vec![0u8; content.len()];
    for (i, c) in got.chunks_mut(5000).enumerate() {
        d.read_at(c, i as u64 * 5000).unwrap();
    }
    assert!(got == content);
    assert!(info_json(&img).contains("\"create-type\":\"streamOptimized\""));
}

#[test]
fn reads_flat_and_split_images() {
    let dir = tempfile::tempdir().unwrap();
    for (sub, size) in [
        ("monolithicFlat", "9M"),
        ("twoGbMaxExtentSparse", "3G"),
        ("twoGbMaxExtentFlat", "3G"),
    ] {
        let img = dir.path().join(format!("{sub}.vmdk"));
        let mut c = Command::new("qemu-img");
        c.args(["create", "-q", "-f", "vmdk", "-o"])
            .arg(format!("subformat={sub}"))
            .arg(&img)
            .arg(size);
        common::run(&mut c);
        let mut writes = WRITES.to_vec();
        if size == "3G" {
            // Across the boundary of the first two extents.
            writes.push("write -P 0x44 2047M 2M");
        }
        qemu_io(&img, &writes);
        assert_vmhub_reads_as_qemu(&img);
        let json = info_json(&img);
        assert!(
            json.contains(&format!("\"create-type\":\"{sub}\"")),
            "{json}"
        );
    }
}

fn stream_opts() -> CreateOptions {
    CreateOptions {
        format: Format::Vmdk,
        ..CreateOptions::default()
    }
}

#[test]
fn qemu_reads_the_stream_optimized_images_vmhub_writes() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("w.vmdk");
    let size: u64 = (40 << 20) + 1536;
    vdisk::create(&img, size, &stream_opts(), false).unwrap();
    qemu_img(&["check", "-q", "-f", "vmdk"], &[&img]);
    let mut model = vec![0u8; size as usize];
    {
        let d = vdisk::open(&img, OpenOptions::default()).unwrap();
        assert_eq!(d.virtual_size(), size);
        let mut b = vec![1u8; 4096];
        d.read_at(&mut b, 0).unwrap();
        assert!(b.iter().all(|&x| x == 0));
    }
    // Writes in ascending order through a disk made by create_in, flushing
    // midway: every flush leaves a complete image.
    let path = dir.path().join("x.vmdk");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    let (mut d, _) = vdisk::format::create_in(file, &path, size, &stream_opts()).unwrap();
    let writes: [(u64, usize, u8); 6] = [
        (0, 512, 1),
        (4096, 70_000, 2),
        ((1 << 20) - 7, 100, 3),
        ((8 << 20) + 5, 3 << 20, 4),
        ((20 << 20) + 1, 1, 0),
        (size - 1000, 1000, 5),
    ];
    for (i, &(off, len, seed)) in writes.iter().enumerate() {
        let b = if seed == 0 {
            vec![0; len]
        } else {
            pattern(len, seed)
        };
        d.write_at(&b, off).unwrap();
        model[off as usize..off as usize + len].copy_from_slice(&b);
        if i == 2 || i == 3 {
            d.flush().unwrap();
            qemu_img(&["check", "-q", "-f", "vmdk"], &[&path]);
        }
    }
    // Behind the last write: refused, clearly.
    let e = d.write_at(&[1], 0).unwrap_err().to_string();
    assert!(e.contains("ascending order") && e.contains("x.vmdk"), "{e}");
    let mut got = vec![0u8; size as usize];
    d.read_at(&mut got, 0).unwrap();
    assert!(got == model, "reads before the final flush differ");
    d.flush().unwrap();
    drop(d);
    qemu_img(&["check", "-q", "-f", "vmdk"], &[&path]);
    let raw = dir.path().join("model.raw");
    std::fs::write(&raw, &model).unwrap();
    qemu_img(
        &["compare", "-q", "-f", "raw", "-F", "vmdk"],
        &[&raw, &path],
    );
    let out = Command::new("qemu-img")
        .args(["info", "-f", "vmdk"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("create type: streamOptimized"), "{text}");
    assert!(text.contains(&format!("({size} bytes)")), "{text}");
    // vmhub reads its own image back, and zero grains were never stored.
    let d = vdisk::open(&path, OpenOptions::default()).unwrap();
    let mut got = vec![0u8; size as usize];
    d.read_at(&mut got, 0).unwrap();
    assert!(got == model);
    let map = d.map((20 << 20) - 65536, 3 * 65536).unwrap();
    assert!(
        map.iter().all(|e| e.kind == ExtentKind::Unallocated),
        "{map:?}"
    );
    assert!(vdisk::check(&path).unwrap().clean);
}

#[test]
fn convert_raw_to_stream_optimized() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    let mut content = vec![0u8; 7 << 20];
    content[1000..2_000_000].copy_from_slice(&pattern(1_999_000, 7));
    content[(6 << 20) + 3..(6 << 20) + 9].copy_from_slice(&[9; 6]);
    std::fs::write(&raw, &content).unwrap();
    let src = vdisk::open(&raw, OpenOptions::default()).unwrap();
    let img = dir.path().join("out.vmdk");
    vdisk::ops::convert::convert(src.as_ref(), &img, &stream_opts(), false, &mut |_, _| {})
        .unwrap();
    qemu_img(&["check", "-q", "-f", "vmdk"], &[&img]);
    qemu_img(&["compare", "-q", "-f", "raw", "-F", "vmdk"], &[&raw, &img]);
    // Compressed: far smaller than the data for this repetitive pattern.
    assert!(std::fs::metadata(&img).unwrap().len() < 1 << 20);
}

/// A small qemu-made monolithicSparse image with data, to break.
fn sparse_base(dir: &Path) -> Vec<u8> {
    let img = dir.join("base.vmdk");
    let mut c = Command::new("qemu-img");
    c.args(["create", "-q", "-f", "vmdk"]).arg(&img).arg("2M");
    common::run(&mut c);
    qemu_io(&img, &["write -P 0x5a 0 64k", "write -P 0x33 1M 64k"]);
    std::fs::read(&img).unwrap()
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

#[test]
fn malformed_sparse_images_give_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = sparse_base(dir.path());
    let gd = get64(&good, 56) as usize * 512;
    let gt0 = u32::from_le_bytes(good[gd..gd + 4].try_into().unwrap()) as usize * 512;
    type Edit = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Edit, &[&str])> = vec![
        ("version", Box::new(|b| put32(b, 4, 77)), &["version"]),
        ("grain-zero", Box::new(|b| put64(b, 20, 0)), &["grain size"]),
        (
            "grain-huge",
            Box::new(|b| put64(b, 20, 1 << 40)),
            &["grain size"],
        ),
        (
            "capacity",
            Box::new(|b| put64(b, 12, u64::MAX / 2)),
            &["capacity"],
        ),
        ("gtes", Box::new(|b| put32(b, 44, 0)), &["grain table"]),
        (
            "gd-past-eof",
            Box::new(|b| put64(b, 56, 1 << 40)),
            &["grain directory"],
        ),
        (
            "gt-past-eof",
            Box::new(move |b| put32(b, gd, 0x7fff_ffff)),
            &["entry 0", "past the end"],
        ),
        (
            "grain-past-eof",
            Box::new(move |b| put32(b, gt0, 0x7fff_ffff)),
            &["entry 0", "past the end"],
        ),
        ("newline", Box::new(|b| b[75] = b'\n'), &["newline"]),
        (
            "descriptor-past-eof",
            Box::new(|b| put64(b, 28, 1 << 30)),
            &["descriptor"],
        ),
        ("short", Box::new(|b| b.truncate(100)), &["VMDK"]),
        (
            "delta",
            Box::new(|b| {
                // One more line in the embedded descriptor (sectors 1 to 20).
                let end = 512 + b[512..].iter().position(|&c| c == 0).unwrap();
                let line = b"parentFileNameHint=\"p.vmdk\"\n";
                b[end..end + line.len()].copy_from_slice(line);
            }),
            &["parent"],
        ),
    ];
    for (name, edit, words) in cases {
        let mut b = good.clone();
        edit(&mut b);
        let path = dir.path().join(format!("{name}.vmdk"));
        std::fs::write(&path, &b).unwrap();
        let outcome = exercise::exercise(&path, 4 << 20);
        outcome.assert_errors_name(&path);
        // Grain tables are read on demand: a bad grain-table entry fails the
        // reads and the check, not the open.
        let err = match (&outcome.open, name) {
            (Ok(o), "grain-past-eof") => o.read_errors.join("; "),
            (Ok(_), _) => panic!("{name}: open succeeded"),
            (Err(e), _) => e.clone(),
        };
        for w in words {
            assert!(err.contains(w), "{name}: open error lacks {w:?}: {err}");
        }
        if let Ok(r) = &outcome.check {
            assert!(!r.clean, "{name}: check is clean");
        }
    }
    // Two grain-directory entries naming the same grain table: check says so.
    let mut b = good.clone();
    let gd_entries = 1;
    assert_eq!(get64(&b, 12).div_ceil(128 * 512), gd_entries);
    put64(&mut b, 12, 128 * 512 * 2);
    put32(&mut b, gd + 4, (gt0 / 512) as u32);
    let path = dir.path().join("overlap.vmdk");
    std::fs::write(&path, &b).unwrap();
    let r = vdisk::check(&path).unwrap();
    assert!(
        r.problems.iter().any(|p| p.message.contains("overlap")),
        "{:?}",
        r.problems
    );
}

#[test]
fn compressed_grains_may_not_inflate_past_the_grain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.vmdk");
    let opts = CreateOptions {
        block_size: Some(8192),
        ..stream_opts()
    };
    let mut content = vec![0u8; 1 << 20];
    content[..8192].copy_from_slice(&pattern(8192, 3));
    let raw = dir.path().join("z.raw");
    std::fs::write(&raw, &content).unwrap();
    let src = vdisk::open(&raw, OpenOptions::default()).unwrap();
    vdisk::ops::convert::convert(src.as_ref(), &path, &opts, false, &mut |_, _| {}).unwrap();
    let mut b = std::fs::read(&path).unwrap();
    // Header and footer now say 4 KiB grains; the stored grain inflates to 8 KiB.
    let footer = b.len() - 1024;
    put64(&mut b, 20, 8);
    put64(&mut b, footer + 20, 8);
    std::fs::write(&path, &b).unwrap();
    let outcome = exercise::exercise(&path, 4 << 20);
    outcome.assert_errors_name(&path);
    let opened = outcome.open.as_ref().expect("the metadata is valid");
    assert!(
        opened
            .read_errors
            .iter()
            .any(|e| e.contains("past the grain size")),
        "{:?}",
        opened.read_errors
    );
}

#[test]
fn descriptors_name_only_files_beside_them() {
    let dir = tempfile::tempdir().unwrap();
    let flat = dir.path().join("d-flat.vmdk");
    std::fs::write(&flat, vec![7u8; 1 << 20]).unwrap();
    let fifo = dir.path().join("fifo");
    common::run(Command::new("mkfifo").arg(&fifo));
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let cases: [(&str, &str, &[&str]); 7] = [
        (
            "abs",
            "RW 2048 FLAT \"/etc/passwd\" 0",
            &["/etc/passwd", "relative"],
        ),
        ("up", "RW 2048 FLAT \"../d-flat.vmdk\" 0", &["relative"]),
        ("fifo", "RW 2048 FLAT \"fifo\" 0", &["not a regular file"]),
        ("dir", "RW 2048 FLAT \"sub\" 0", &["not a regular file"]),
        (
            "missing",
            "RW 2048 FLAT \"nothing.vmdk\" 0",
            &["cannot be opened"],
        ),
        ("short", "RW 4096 FLAT \"d-flat.vmdk\" 0", &["past the end"]),
        (
            "sparse-not-kdmv",
            "RW 2048 SPARSE \"d-flat.vmdk\"",
            &["KDMV"],
        ),
    ];
    for (name, extent, words) in cases {
        let path = dir.path().join(format!("{name}.vmdk"));
        std::fs::write(
            &path,
            format!("# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n{extent}\n"),
        )
        .unwrap();
        let e = match vdisk::open(&path, OpenOptions::default()) {
            Ok(_) => panic!("{name}: open succeeded"),
            Err(e) => e.to_string(),
        };
        for w in words {
            assert!(e.contains(w), "{name}: error lacks {w:?}: {e}");
        }
        if name != "sparse-not-kdmv" {
            assert!(e.contains(&path.display().to_string()), "{name}: {e}");
        }
        let _ = vdisk::check(&path);
    }
    // The good one reads the flat file.
    let path = dir.path().join("good.vmdk");
    std::fs::write(
        &path,
        "# Disk DescriptorFile\ncreateType=\"monolithicFlat\"\nRW 1024 FLAT \"d-flat.vmdk\" 1024\nRW 1024 ZERO\n",
    )
    .unwrap();
    let d = vdisk::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(d.virtual_size(), 1 << 20);
    let mut b = vec![0u8; 1 << 20];
    d.read_at(&mut b, 0).unwrap();
    assert!(b[..512 << 10].iter().all(|&x| x == 7) && b[512 << 10..].iter().all(|&x| x == 0));
}

#[test]
fn random_damage_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let good = sparse_base(dir.path());
    let path = dir.path().join("damaged.vmdk");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let meta = get64(&good, 64) as usize * 512; // header, descriptor, GD and GTs
    for _ in 0..300 {
        let mut b = good.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % meta as u64) as usize;
            b[at] = next() as u8;
        }
        std::fs::write(&path, &b).unwrap();
        exercise::exercise(&path, 4 << 20).assert_errors_name(&path);
    }
}
