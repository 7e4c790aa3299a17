//! Every format through the command line, against qemu-img: `img convert`
//! between every pair of formats, `img create` of each, and `info`, `check`
//! and `map` of images qemu-img wrote in each. Byte equality is decided by
//! `qemu-img compare`, never by vmhub alone.

#[allow(dead_code)]
mod common;

use common::*;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// The formats, as vmhub names them, the extension that selects each, and
/// qemu-img's name for it.
const FORMATS: [(&str, &str); 6] = [
    ("raw", "raw"),
    ("vhd", "vpc"),
    ("vhdx", "vhdx"),
    ("qcow2", "qcow2"),
    ("vmdk", "vmdk"),
    ("vdi", "vdi"),
];

/// 24 MiB plus a sector: odd, so that no format's block size divides it.
const SIZE: u64 = 24 * MIB + SECTOR;

fn qemu_name(format: &str) -> &'static str {
    FORMATS
        .iter()
        .find(|f| f.0 == format)
        .map(|f| f.1)
        .unwrap_or_else(|| panic!("unknown format {format}"))
}

/// A sparse raw disk of `SIZE` bytes: random runs at scattered places, one
/// run of zeros written as data, and holes between.
fn source(dir: &Path) -> PathBuf {
    let raw = dir.join("source.raw");
    std::fs::File::create(&raw)
        .and_then(|f| f.set_len(SIZE))
        .expect("cannot create the source disk");
    let mut rng = Rng::new(20261124);
    let runs: [(u64, usize); 6] = [
        (0, 4096),
        (MIB - 512, 3 * 512),
        (3 * MIB + 12345 / 512 * 512, 700 * 1024),
        (9 * MIB, 2 * MIB as usize),
        (17 * MIB + 64 * KIB, 128 * KIB as usize),
        (SIZE - 1024, 1024),
    ];
    for (offset, len) in runs {
        let mut buf = vec![0u8; len];
        rng.fill(&mut buf);
        write_at(&raw, offset, &buf);
    }
    write_at(&raw, 20 * MIB, &vec![0u8; 256 * KIB as usize]);
    raw
}

fn tempdir() -> TempDir {
    tempfile::tempdir().expect("cannot create a temporary directory")
}

/// `qemu-img check` where qemu-img has a checker for the format.
fn qemu_check(format: &str, path: &Path) {
    if matches!(format, "qcow2" | "vhdx" | "vdi" | "vmdk") {
        peer_ok("qemu-img", ["check", "-f", qemu_name(format), p(path)]);
    }
}

fn vmhub_check(path: &Path) {
    vmhub_ok(["img", "check", p(path)]);
}

#[test]
fn convert_between_every_pair_of_formats() {
    let dir = tempdir();
    let raw = source(dir.path());
    // First from raw into every format, then from each of those into every
    // format: 6 + 36 conversions, each compared with the source by qemu-img.
    let mut firsts = Vec::new();
    for (format, qemu) in FORMATS {
        let out = dir.path().join(format!("first.{format}"));
        vmhub_ok(["img", "convert", p(&raw), p(&out)]);
        assert_eq!(
            str_field(&vmhub_info(&out), "format"),
            format,
            "{} was written in the wrong format",
            out.display()
        );
        assert_qemu_equal("raw", &raw, qemu, &out);
        qemu_check(format, &out);
        vmhub_check(&out);
        firsts.push((format, out));
    }
    for (from, input) in &firsts {
        for (to, qemu) in FORMATS {
            let out = dir.path().join(format!("{from}-to.{to}"));
            vmhub_ok(["img", "convert", p(input), p(&out)]);
            assert_qemu_equal("raw", &raw, qemu, &out);
            qemu_check(to, &out);
            vmhub_ok(["img", "compare", p(input), p(&out)]);
            std::fs::remove_file(&out).expect("cannot remove a converted image");
        }
    }
}

#[test]
fn images_qemu_writes_read_the_same_in_vmhub() {
    let dir = tempdir();
    let raw = source(dir.path());
    let variants: &[(&str, &str)] = &[
        ("vpc", "subformat=dynamic,force_size=on"),
        ("vpc", "subformat=fixed,force_size=on"),
        ("vhdx", "subformat=dynamic,block_size=1M"),
        ("vhdx", "subformat=dynamic,block_size=32M,log_size=8M"),
        ("vhdx", "subformat=dynamic,block_size=256M"),
        ("vhdx", "subformat=fixed"),
        ("qcow2", "compat=0.10"),
        ("qcow2", "compat=1.1,cluster_size=4096"),
        ("qcow2", "compat=1.1,cluster_size=2M,extended_l2=on"),
        ("vmdk", "subformat=monolithicSparse"),
        ("vmdk", "subformat=streamOptimized"),
        ("vmdk", "subformat=monolithicFlat"),
        ("vmdk", "subformat=twoGbMaxExtentSparse"),
        ("vdi", "static=off"),
        ("vdi", "static=on"),
    ];
    for (i, (qemu, options)) in variants.iter().enumerate() {
        let sub = dir.path().join(format!("v{i}"));
        std::fs::create_dir(&sub).expect("cannot create a folder");
        let img = sub.join(format!("q.{qemu}"));
        peer_ok(
            "qemu-img",
            [
                "convert",
                "-q",
                "-f",
                "raw",
                "-O",
                qemu,
                "-o",
                options,
                p(&raw),
                p(&img),
            ],
        );
        let what = format!("{qemu} ({options})");
        let info = vmhub_info(&img);
        assert_eq!(
            u64_field(&info, "virtual-size"),
            u64_field(&qemu_info_as(qemu, &img), "virtual-size"),
            "{what}: vmhub and qemu-img disagree on the size"
        );
        vmhub_check(&img);
        let back = sub.join("back.raw");
        vmhub_ok(["img", "convert", p(&img), p(&back)]);
        assert_qemu_equal(qemu, &img, "raw", &back);
        // The data vmhub maps must hold everything the source holds: a run
        // the map calls unallocated or zero must read as zeros in the source.
        let map = vmhub_map(&img);
        let file = std::fs::File::open(&raw).expect("cannot open the source");
        for e in map.iter().filter(|e| e.kind != "data") {
            let mut off = e.offset;
            while off < e.offset + e.length {
                let n = (e.offset + e.length - off).min(MIB) as usize;
                assert!(
                    read_at(&file, off, n).iter().all(|&b| b == 0),
                    "{what}: vmhub maps {e:?} as {} but the source holds data there",
                    e.kind
                );
                off += n as u64;
            }
        }
    }
}

/// `qemu-img info` with the format given (its probe would call a fixed VHD raw).
fn qemu_info_as(format: &str, path: &Path) -> serde_json::Value {
    let out = peer_ok(
        "qemu-img",
        ["info", "-f", format, "--output", "json", p(path)],
    );
    serde_json::from_slice(&out.stdout).expect("qemu-img info did not print JSON")
}

#[test]
fn create_makes_what_qemu_reads() {
    let dir = tempdir();
    for (format, kind) in [
        ("vhdx", "dynamic"),
        ("vhdx", "fixed"),
        ("qcow2", "dynamic"),
        ("vdi", "dynamic"),
        ("vdi", "fixed"),
        ("vmdk", "dynamic"),
    ] {
        let img = dir.path().join(format!("{kind}.{format}"));
        vmhub_ok(["img", "create", p(&img), "64M", "--type", kind]);
        let qemu = qemu_info_as(qemu_name(format), &img);
        assert_eq!(
            u64_field(&qemu, "virtual-size"),
            64 * MIB,
            "qemu-img's size of the {kind} {format} vmhub created"
        );
        qemu_check(format, &img);
        vmhub_check(&img);
        // Data written into it by qemu (which writes every format but VMDK's
        // streamOptimized) reads back the same through vmhub.
        if format != "vmdk" {
            let q = qemu_name(format);
            peer_ok(
                "qemu-io",
                [
                    "-f",
                    q,
                    "-c",
                    "write -P 0x5a 5M 64k",
                    "-c",
                    "write -P 0xa5 63M 4k",
                    p(&img),
                ],
            );
            let back = dir.path().join(format!("{kind}-{format}.raw"));
            vmhub_ok(["img", "convert", p(&img), p(&back)]);
            assert_qemu_equal(qemu_name(format), &img, "raw", &back);
        }
    }
}

#[test]
fn a_library_machine_exports_to_every_format() {
    let dir = tempdir();
    let raw = source(dir.path());
    let home = dir.path().join("library");
    let import = |extra: &[&str]| {
        let mut args = vec![
            "import",
            p(&raw),
            "box:1",
            "--os",
            "none",
            "--home",
            p(&home),
        ];
        args.extend(extra);
        let out = vmhub_ok(args);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let counts = ["data-bytes", "chunks", "new-chunks", "new-bytes"].map(|k| v[k].clone());
        (counts, v["manifest"].is_string())
    };
    // A dry run says what the import will store, and makes no library.
    let dry = import(&["--dry-run", "--output", "json"]);
    assert!(!home.exists(), "a dry run made the library");
    let real = import(&["--output", "json"]);
    assert_eq!(dry.0, real.0);
    assert!(real.0[3].as_u64().is_some_and(|n| n > 0), "{real:?}");
    assert_eq!((dry.1, real.1), (false, true));
    for (format, qemu) in FORMATS {
        let out = dir.path().join(format!("box.{format}"));
        vmhub_ok([
            "export",
            "box:1",
            p(&out),
            "--format",
            format,
            "--home",
            p(&home),
        ]);
        assert_qemu_equal("raw", &raw, qemu, &out);
        qemu_check(format, &out);
    }
}

#[test]
fn a_differencing_vhdx_reads_through_its_parent() {
    let dir = tempdir();
    let raw = source(dir.path());
    let base = dir.path().join("base.vhdx");
    peer_ok(
        "qemu-img",
        [
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "vhdx",
            p(&raw),
            p(&base),
        ],
    );
    let child = dir.path().join("child.vhdx");
    vmhub_ok(["img", "create", p(&child), "--parent", p(&base)]);
    let info = vmhub_info(&child);
    assert_eq!(str_field(&info, "type"), "differencing", "{info}");
    let chain = info["chain"].as_array().expect("img info lists the chain");
    assert_eq!(chain.len(), 2, "{info}");
    let vhdi = peer_ok("vhdiinfo", [p(&child)]);
    let text = String::from_utf8_lossy(&vhdi.stdout);
    assert!(
        text.contains("Differential") && text.contains("base.vhdx"),
        "vhdiinfo does not see a child of base.vhdx: {text}"
    );
    // Nothing written yet: the child reads as its parent, and flattening it
    // gives the source.
    let flat = dir.path().join("flat.qcow2");
    vmhub_ok(["img", "convert", p(&child), p(&flat)]);
    assert_qemu_equal("raw", &raw, "qcow2", &flat);
    // A VHD child of a VHDX is refused with a clear error.
    let out = vmhub([
        "img",
        "create",
        p(&dir.path().join("c.vhd")),
        "--parent",
        p(&base),
    ]);
    assert!(!out.status.success(), "a VHD child of a VHDX was made");

    // The parent moves to another folder: the child no longer opens, and
    // `img relink` points it there (Set-VHD -ParentPath), which libvhdi sees.
    let library = dir.path().join("library");
    std::fs::create_dir(&library).unwrap();
    let moved = library.join("base.vhdx");
    std::fs::rename(&base, &moved).unwrap();
    let out = vmhub(["img", "info", p(&child)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("base.vhdx"),
        "{}",
        describe(&out)
    );
    // Another VHDX of the same size is not the parent: refused, unless forced.
    let stranger = dir.path().join("stranger.vhdx");
    vmhub_ok(["img", "create", p(&stranger), "50M"]);
    let out = vmhub(["img", "relink", p(&child), p(&stranger)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("DataWriteGuid") && err.contains("--force"),
        "{}",
        describe(&out)
    );
    let out = vmhub_ok(["img", "relink", p(&child), p(&moved)]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("now reads through"),
        "{}",
        describe(&out)
    );
    let vhdi = peer_ok("vhdiinfo", [p(&child)]);
    let text = String::from_utf8_lossy(&vhdi.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("Parent filename") && l.contains("library/base.vhdx")),
        "vhdiinfo does not see the new place of the parent: {text}"
    );
    let flat = dir.path().join("flat2.qcow2");
    vmhub_ok(["img", "convert", p(&child), p(&flat)]);
    assert_qemu_equal("raw", &raw, "qcow2", &flat);
    vmhub_check(&child);
}

/// Makes `child`, a qcow2 image over the qcow2 image `parent` in the same
/// folder (named by its file name, as qemu-img records it), with qemu-img.
fn qemu_qcow2_child(child: &Path, parent: &Path) {
    let parent_name = parent.file_name().unwrap().to_str().unwrap();
    peer_ok(
        "qemu-img",
        [
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            parent_name,
            "-F",
            "qcow2",
            p(child),
        ],
    );
}

/// A qcow2 chain of depth 2 made and written by qemu (data, a zeroed range,
/// writes across cluster edges): `vmhub img merge` of the top into the base
/// leaves what `qemu-img commit -b` leaves, checked by qemu-img.
#[test]
fn merging_a_qcow2_chain_matches_qemu_img_commit() {
    let dir = tempdir();
    let d = dir.path();
    let size = 24u64 << 20;
    let chain = |name: &str| {
        let base = d.join(format!("{name}-base.qcow2"));
        let mid = d.join(format!("{name}-mid.qcow2"));
        let top = d.join(format!("{name}-top.qcow2"));
        peer_ok(
            "qemu-img",
            ["create", "-q", "-f", "qcow2", p(&base), &size.to_string()],
        );
        for (child, parent) in [(&mid, &base), (&top, &mid)] {
            qemu_qcow2_child(child, parent);
        }
        let io = |img: &Path, cmds: &[&str]| {
            let mut args = vec!["-f", "qcow2"];
            for c in cmds {
                args.extend(["-c", c]);
            }
            args.push(p(img));
            peer_ok("qemu-io", args);
        };
        io(&base, &["write -P 0x11 0 8M", "write -P 0x12 16M 4M"]);
        io(&mid, &["write -P 0x21 1000448 3M", "write -z 17M 1M"]);
        io(
            &top,
            &[
                "write -P 0x31 4096 12288",
                "write -P 0x32 7M 2M",
                "write -z 18M 512K",
                "write -P 0x33 23M 1M",
            ],
        );
        (base, top)
    };
    let (base, top) = chain("vmhub");
    let (qbase, qtop) = chain("qemu");
    let before = d.join("before.raw");
    peer_ok(
        "qemu-img",
        ["convert", "-f", "qcow2", "-O", "raw", p(&top), p(&before)],
    );

    let out = vmhub_ok(["img", "merge", p(&top), "--into", p(&base)]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Merged"),
        "{}",
        describe(&out)
    );
    peer_ok("qemu-img", ["commit", "-q", "-b", p(&qbase), p(&qtop)]);
    assert!(!top.exists() && !d.join("vmhub-mid.qcow2").exists());
    peer_ok("qemu-img", ["check", "-f", "qcow2", p(&base)]);
    assert_qemu_equal("qcow2", &base, "raw", &before);
    assert_qemu_equal("qcow2", &base, "qcow2", &qbase);
    let report = vmhub_ok(["img", "check", p(&base)]);
    assert!(report.status.success(), "{}", describe(&report));
}

/// Relink, compact and resize work on VHDs and VHDX: other formats get an
/// error that names the file and its format, and the file is left as it was.
#[test]
fn commands_name_the_format_they_refuse() {
    let dir = tempdir();
    let qcow2 = dir.path().join("disk.qcow2");
    peer_ok(
        "qemu-img",
        ["create", "-q", "-f", "qcow2", p(&qcow2), "16M"],
    );
    let child = dir.path().join("child.qcow2");
    qemu_qcow2_child(&child, &qcow2);
    let bytes = std::fs::read(&child).unwrap();
    for (args, name) in [
        (vec!["img", "relink", p(&child), p(&qcow2)], "child.qcow2"),
        (vec!["img", "resize", p(&qcow2), "32M"], "disk.qcow2"),
        (vec!["img", "compact", p(&qcow2)], "disk.qcow2"),
    ] {
        let out = vmhub(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0));
        assert!(
            err.contains("qcow2 images is not supported, only VHD and VHDX") && err.contains(name),
            "{args:?}: {err}"
        );
    }
    assert!(std::fs::read(&child).unwrap() == bytes);
}

/// Runs qemu-io commands on a VHDX and fails on a pattern that did not match.
fn qemu_io_vhdx(img: &Path, commands: &[&str]) {
    let mut args = vec!["-f", "vhdx"];
    for c in commands {
        args.extend(["-c", c]);
    }
    args.push(p(img));
    let out = peer_ok("qemu-io", &args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("failed") && text.matches(" bytes at offset ").count() == commands.len(),
        "qemu-io {commands:?}: {}",
        describe(&out)
    );
}

#[test]
fn resizing_a_vhdx_keeps_its_data_and_qemu_reads_it() {
    let dir = tempdir();
    const M: u64 = 1 << 20;
    // One made by qemu-img, one by vmhub, and a fixed one.
    for maker in ["qemu", "vmhub", "fixed"] {
        let img = dir.path().join(format!("{maker}.vhdx"));
        match maker {
            "qemu" => peer_ok("qemu-img", ["create", "-q", "-f", "vhdx", p(&img), "64M"]),
            "vmhub" => vmhub_ok(["img", "create", p(&img), "64M"]),
            _ => vmhub_ok(["img", "create", p(&img), "64M", "--type", "fixed"]),
        };
        // Data at both ends, the last MiB in the block the old end cuts.
        qemu_io_vhdx(&img, &["write -P 0x5a 0 1M", "write -P 0x6b 63M 1M"]);
        let size = |img: &Path| u64_field(&qemu_info_as("vhdx", img), "virtual-size");

        vmhub_ok(["img", "resize", p(&img), "200M"]);
        assert_eq!(size(&img), 200 * M);
        assert_eq!(vhdiinfo(&img).media_size, 200 * M);
        if maker == "fixed" {
            // Every block of a fixed disk is in the file, the new ones too.
            let len = std::fs::metadata(&img).unwrap().len();
            assert!(len >= 200 * M, "{len}");
        }
        qemu_check("vhdx", &img);
        vmhub_check(&img);
        qemu_io_vhdx(
            &img,
            &[
                "read -P 0x5a 0 1M",
                "read -P 0x6b 63M 1M",
                "read -P 0 64M 136M",
                "write -P 0x77 150M 1M",
            ],
        );
        qemu_io_vhdx(&img, &["read -P 0x77 150M 1M"]);

        // Shrinking over data is refused, naming where it is, and changes nothing.
        let before = std::fs::read(&img).unwrap();
        let out = vmhub(["img", "resize", p(&img), "100M"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0));
        assert!(
            err.contains(&format!("first at offset {}", 150 * M)),
            "{err}"
        );
        assert!(std::fs::read(&img).unwrap() == before);

        // Forced, the data goes, and does not come back with a later grow;
        // nor does the part of a block cut in the middle.
        vmhub_ok(["img", "resize", p(&img), "100M", "--force"]);
        assert_eq!(size(&img), 100 * M);
        qemu_check("vhdx", &img);
        vmhub_ok(["img", "resize", p(&img), "65024K", "--force"]);
        vmhub_ok(["img", "resize", p(&img), "200M"]);
        qemu_check("vhdx", &img);
        vmhub_check(&img);
        qemu_io_vhdx(
            &img,
            &[
                "read -P 0x5a 0 1M",
                "read -P 0x6b 63M 512K",
                "read -P 0 65024K 139776K",
            ],
        );
        // Compacting a dynamic one afterwards keeps what it reads.
        if maker != "fixed" {
            let out = vmhub_ok(["img", "compact", p(&img)]);
            assert!(String::from_utf8_lossy(&out.stdout).starts_with("Compacted"));
            qemu_check("vhdx", &img);
            qemu_io_vhdx(
                &img,
                &[
                    "read -P 0x5a 0 1M",
                    "read -P 0x6b 63M 512K",
                    "read -P 0 65024K 139776K",
                ],
            );
        }
    }

    // What cannot be done is refused with the reason.
    let img = dir.path().join("qemu.vhdx");
    let child = dir.path().join("child.vhdx");
    vmhub_ok(["img", "create", p(&child), "--parent", p(&img)]);
    let before = std::fs::read(&img).unwrap();
    for (args, why) in [
        (vec!["img", "resize", p(&child), "300M"], "differencing"),
        (vec!["img", "resize", p(&img), "64T"], "BAT region"),
        (vec!["img", "resize", p(&img), "65T"], "a VHDX holds"),
    ] {
        let out = vmhub(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    assert!(std::fs::read(&img).unwrap() == before);
}
