//! qcow2 against qemu-img and qemu-io: images qemu makes read as qemu reads
//! them, byte for byte, with the same allocation map; images vmhub makes and
//! writes pass `qemu-img check` and read back in qemu as written.

mod common;

use common::Rng;
use std::path::Path;
use std::process::Command;
use vdisk::{CreateOptions, Disk, ExtentKind, Format, OpenOptions};

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (qemu-utils must be installed)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn qemu_img(args: &[&str]) -> String {
    run(Command::new("qemu-img").args(args))
}

fn qemu_io(img: &Path, cmds: &[String]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "qcow2"]);
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    c.arg(img);
    run(&mut c);
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// What qemu reads from `img`.
fn qemu_contents(img: &Path) -> Vec<u8> {
    let raw = img.with_extension("qemu.raw");
    let _ = std::fs::remove_file(&raw);
    qemu_img(&["convert", "-O", "raw", s(img), s(&raw)]);
    let b = std::fs::read(&raw).unwrap();
    std::fs::remove_file(&raw).unwrap();
    b
}

/// What vmhub reads from `img`, in reads of an odd size.
fn vmhub_contents(img: &Path) -> Vec<u8> {
    let d = vdisk::open(img, OpenOptions::default()).unwrap();
    read_all(d.as_ref())
}

fn read_all(d: &dyn Disk) -> Vec<u8> {
    let size = d.virtual_size();
    let mut out = vec![0u8; size as usize];
    let step = 300_000usize;
    let mut at = 0;
    while at < out.len() {
        let n = step.min(out.len() - at);
        d.read_at(&mut out[at..at + n], at as u64).unwrap();
        at += n;
    }
    out
}

/// qemu-img check: no errors and no leaks.
fn assert_qemu_clean(img: &Path) {
    let out = Command::new("qemu-img")
        .args(["check", "--output=json", s(img)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "qemu-img check {}: {text}{}",
        img.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for k in ["check-errors", "corruptions", "leaks"] {
        assert_eq!(
            v.get(k).and_then(|x| x.as_u64()).unwrap_or(0),
            0,
            "{k}: {text}"
        );
    }
}

/// qemu's map of `img` as (offset, length, kind), merged.
fn qemu_map(img: &Path) -> Vec<(u64, u64, ExtentKind)> {
    let text = qemu_img(&["map", "--output=json", s(img)]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out: Vec<(u64, u64, ExtentKind)> = Vec::new();
    for e in v.as_array().unwrap() {
        let start = e["start"].as_u64().unwrap();
        let length = e["length"].as_u64().unwrap();
        let kind = if !e["present"].as_bool().unwrap() {
            ExtentKind::Unallocated
        } else if e["data"].as_bool().unwrap() {
            ExtentKind::Data
        } else {
            ExtentKind::Zero
        };
        push(&mut out, (start, length, kind));
    }
    out
}

fn push(out: &mut Vec<(u64, u64, ExtentKind)>, e: (u64, u64, ExtentKind)) {
    if let Some(l) = out.last_mut() {
        if l.2 == e.2 && l.0 + l.1 == e.0 {
            l.1 += e.1;
            return;
        }
    }
    out.push(e);
}

fn vmhub_map(img: &Path) -> Vec<(u64, u64, ExtentKind)> {
    let d = vdisk::open(img, OpenOptions::default()).unwrap();
    let mut out = Vec::new();
    for e in d.map(0, d.virtual_size()).unwrap() {
        push(&mut out, (e.offset, e.length, e.kind));
    }
    out
}

/// Scattered writes, zero writes and a discard-like zeroing, for an image of 24 MiB.
fn scatter(img: &Path) {
    qemu_io(
        img,
        &[
            "write -P 0x11 0 4k".into(),
            "write -P 0x22 100k 70k".into(),
            "write -P 0x33 3m 1m".into(),
            "write -P 0x44 8388096 1k".into(),
            "write -z 3200k 128k".into(),
            "write -P 0x55 12m 2m".into(),
            "write -z 20m 2m".into(),
            "write -P 0x66 25161216 4k".into(),
        ],
    );
}

const SIZE: &str = "24M";

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn reads_and_maps_what_qemu_wrote() {
    let dir = tmp();
    for (compat, cluster, extra) in [
        ("0.10", "64k", ""),
        ("1.1", "4k", ""),
        ("1.1", "64k", ""),
        ("1.1", "2M", ""),
        ("1.1", "64k", ",extended_l2=on"),
        ("1.1", "32k", ",extended_l2=on,refcount_bits=1"),
        ("1.1", "64k", ",lazy_refcounts=on,refcount_bits=64"),
    ] {
        let img = dir
            .path()
            .join(format!("r-{compat}-{cluster}{}.qcow2", extra.len()));
        let o = format!("compat={compat},cluster_size={cluster}{extra}");
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", &o, s(&img), SIZE]);
        scatter(&img);
        assert_eq!(vmhub_contents(&img), qemu_contents(&img), "{o}");
        let map = vmhub_map(&img);
        assert_eq!(map, qemu_map(&img), "{o}");
        for kind in [ExtentKind::Data, ExtentKind::Unallocated] {
            assert!(
                map.iter().any(|e| e.2 == kind),
                "{o}: no {kind:?} in {map:?}"
            );
        }
        if compat == "1.1" {
            assert!(map.iter().any(|e| e.2 == ExtentKind::Zero), "{o}: {map:?}");
        }
        let r = vdisk::check(&img).unwrap();
        assert!(r.clean, "{o}: {:?}", r.problems);
    }
}

/// A raw file of `size` bytes with patterned, partly compressible data.
fn raw_source(path: &Path, size: usize) -> Vec<u8> {
    let mut b = vec![0u8; size];
    let mut x = 0x1234_5678u32;
    for (i, c) in b.chunks_mut(4096).enumerate() {
        match i % 5 {
            0 => {} // zeros
            1 => c.fill(i as u8),
            _ => {
                for v in c.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    *v = (x % 7) as u8;
                }
            }
        }
    }
    std::fs::write(path, &b).unwrap();
    b
}

#[test]
fn reads_compressed_images() {
    let dir = tmp();
    let raw = dir.path().join("src.raw");
    let want = raw_source(&raw, 6 << 20);
    for (ct, cluster) in [
        ("zlib", "64k"),
        ("zstd", "64k"),
        ("zlib", "4k"),
        ("zstd", "2M"),
    ] {
        let img = dir.path().join(format!("c-{ct}-{cluster}.qcow2"));
        let o = format!("compression_type={ct},cluster_size={cluster}");
        qemu_img(&["convert", "-c", "-O", "qcow2", "-o", &o, s(&raw), s(&img)]);
        assert_eq!(vmhub_contents(&img), want, "{o}");
        let d = vdisk::open(&img, OpenOptions::default()).unwrap();
        let info = serde_json::to_value(d.info().unwrap()).unwrap();
        assert_eq!(info["compression-type"], ct);
        assert!(info["compressed-clusters"].as_u64().unwrap() > 0, "{info}");
        let r = vdisk::check(&img).unwrap();
        assert!(r.clean, "{o}: {:?}", r.problems);
    }
    // compat 0.10 compresses with deflate too.
    let img = dir.path().join("c-v2.qcow2");
    qemu_img(&[
        "convert",
        "-c",
        "-O",
        "qcow2",
        "-o",
        "compat=0.10",
        s(&raw),
        s(&img),
    ]);
    assert_eq!(vmhub_contents(&img), want);
}

#[test]
fn reads_through_backing_files() {
    let dir = tmp();
    let base = dir.path().join("base.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&base), SIZE]);
    scatter(&base);
    let mid = dir.path().join("mid.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        s(&mid),
    ]);
    qemu_io(
        &mid,
        &["write -P 0x77 90k 20k".into(), "write -z 3m 64k".into()],
    );
    let top = dir.path().join("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "extended_l2=on",
        "-b",
        "mid.qcow2",
        "-F",
        "qcow2",
        s(&top),
    ]);
    qemu_io(
        &top,
        &["write -P 0x88 12m 5k".into(), "write -z 12300k 8k".into()],
    );
    for img in [&mid, &top] {
        assert_eq!(vmhub_contents(img), qemu_contents(img), "{}", img.display());
    }
    let d = vdisk::open(&top, OpenOptions::default()).unwrap();
    let info = d.info().unwrap();
    assert_eq!(info.chain.len(), 3);
    let j = serde_json::to_value(&info).unwrap();
    assert_eq!(j["backing-file"], "mid.qcow2");
    // Data of the base shows through the map.
    let m = d.map(3 << 20, 64 << 10).unwrap();
    assert!(m.iter().all(|e| e.kind == ExtentKind::Zero), "{m:?}");
    let m = d.map(12 << 20, 4096).unwrap();
    assert_eq!(m[0].kind, ExtentKind::Data);

    // A raw backing file, smaller than the image.
    let raw = dir.path().join("base.raw");
    raw_source(&raw, 3 << 20);
    let over = dir.path().join("over-raw.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        s(&over),
        "8M",
    ]);
    qemu_io(&over, &["write -P 0x99 1m 100k".into()]);
    assert_eq!(vmhub_contents(&over), qemu_contents(&over));
    let m = vdisk::open(&over, OpenOptions::default())
        .unwrap()
        .map(4 << 20, 1 << 20)
        .unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].kind, ExtentKind::Unallocated);

    // A missing backing file, and a loop.
    std::fs::rename(&raw, dir.path().join("gone.raw")).unwrap();
    let e = vdisk::open(&over, OpenOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("over-raw.qcow2") && e.contains("base.raw"),
        "{e}"
    );
    let a = dir.path().join("a.qcow2");
    let b = dir.path().join("b.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&a), "1M"]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "a.qcow2",
        "-F",
        "qcow2",
        s(&b),
        "1M",
    ]);
    qemu_img(&["rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", s(&a)]);
    let e = vdisk::open(&b, OpenOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("loops"), "{e}");
}

#[test]
fn info_describes_the_image() {
    let dir = tmp();
    let img = dir.path().join("i.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10,cluster_size=4k",
        s(&img),
        "5M",
    ]);
    qemu_io(&img, &["write -P 1 0 8k".into()]);
    let d = vdisk::open(&img, OpenOptions::default()).unwrap();
    let i = d.info().unwrap();
    assert_eq!(i.format, "qcow2");
    assert_eq!(i.virtual_size, 5 << 20);
    assert_eq!(i.allocated_bytes, 8192);
    let j = serde_json::to_value(&i).unwrap();
    assert_eq!(j["version"], 2);
    assert_eq!(j["compat"], "0.10");
    assert_eq!(j["cluster-size"], 4096);
    assert_eq!(j["refcount-bits"], 16);
    assert_eq!(j["dirty"], false);
    assert_eq!(vdisk::sniff(&img).unwrap(), Format::Qcow2);
}

#[test]
fn refuses_what_it_cannot_read() {
    let dir = tmp();
    let enc = dir.path().join("enc.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "--object",
        "secret,id=s0,data=123456",
        "-f",
        "qcow2",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10",
        s(&enc),
        "1M",
    ]);
    let ext = dir.path().join("ext.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={}", s(&dir.path().join("ext.data"))),
        s(&ext),
        "1M",
    ]);
    let unknown = dir.path().join("unknown.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&unknown), "1M"]);
    let mut b = std::fs::read(&unknown).unwrap();
    b[72] |= 0x80; // incompatible feature bit 63
    std::fs::write(&unknown, &b).unwrap();
    for (img, word) in [
        (&enc, "encrypted"),
        (&ext, "external data file"),
        (&unknown, "bit 63"),
    ] {
        let e = vdisk::open(img, OpenOptions::default()).err().unwrap();
        assert!(matches!(e, vdisk::Error::Unsupported { .. }), "{e}");
        let t = e.to_string();
        assert!(t.contains(word) && t.contains(s(img)), "{t}");
    }
}

/// Random writes (some whole clusters, some partial, some zeros) checked
/// against a byte array, with flushes and reopens; then qemu checks and reads
/// the image.
fn random_writes(img: &Path, model: &mut [u8], seed: u64, rounds: usize, ops: usize) {
    let mut rng = Rng(seed);
    let size = model.len() as u64;
    for round in 0..rounds {
        let mut d = vdisk::open(img, OpenOptions { writable: true }).unwrap();
        for _ in 0..ops {
            let len = match rng.below(4) {
                0 => 1 + rng.below(600),
                1 => 4096 * (1 + rng.below(8)),
                2 => 1 + rng.below(200_000),
                _ => 65536 * (1 + rng.below(4)),
            }
            .min(size);
            let off = rng.below(size - len + 1);
            let fill = rng.next() as u8;
            let data: Vec<u8> = if fill % 5 == 0 {
                vec![0; len as usize]
            } else {
                (0..len).map(|i| fill ^ (i % 253) as u8).collect()
            };
            d.write_at(&data, off).unwrap();
            model[off as usize..(off + len) as usize].copy_from_slice(&data);
            if rng.below(10) == 0 {
                let mut back = vec![0u8; len as usize];
                d.read_at(&mut back, off).unwrap();
                assert_eq!(back, data);
            }
        }
        assert!(
            read_all(d.as_ref()) == model,
            "round {round}: reads before flush"
        );
        d.flush().unwrap();
        drop(d);
        assert!(
            vmhub_contents(img) == model,
            "round {round}: reads after reopen"
        );
    }
    assert_qemu_clean(img);
    assert!(qemu_contents(img) == model, "qemu reads differ");
    let r = vdisk::check(img).unwrap();
    assert!(r.clean, "{:?} {:?}", r.problems, r.notes);
    assert!(r.notes.iter().all(|n| !n.contains("leak")), "{:?}", r.notes);
}

#[test]
fn creates_and_writes_images_qemu_accepts() {
    let dir = tmp();
    for (cluster, size, seed) in [
        (None, 20u64 << 20, 1u64),
        (Some(4096), 9 << 20, 2),
        (Some(2 << 20), 13 << 20, 3),
    ] {
        let img = dir.path().join(format!("new-{seed}.qcow2"));
        let opts = CreateOptions {
            format: Format::Qcow2,
            block_size: cluster,
            ..CreateOptions::default()
        };
        vdisk::create(&img, size, &opts, false).unwrap();
        assert_qemu_clean(&img);
        let mut model = vec![0u8; size as usize];
        random_writes(&img, &mut model, seed, 3, 60);
    }
}

#[test]
fn grows_the_refcount_table() {
    // 512-byte clusters: a refcount block counts 256 clusters and the first
    // refcount table 64 blocks, so 8 MiB of file outgrows it.
    let dir = tmp();
    let img = dir.path().join("grow.qcow2");
    let opts = CreateOptions {
        format: Format::Qcow2,
        block_size: Some(512),
        ..CreateOptions::default()
    };
    let size = 12u64 << 20;
    vdisk::create(&img, size, &opts, false).unwrap();
    let mut model = vec![0u8; size as usize];
    let mut d = vdisk::open(&img, OpenOptions { writable: true }).unwrap();
    let chunk: Vec<u8> = (0..size).map(|i| (i % 249) as u8 | 1).collect();
    d.write_at(&chunk, 0).unwrap();
    model.copy_from_slice(&chunk);
    d.flush().unwrap();
    drop(d);
    assert_qemu_clean(&img);
    let head = std::fs::read(&img).unwrap();
    let table_clusters = u32::from_be_bytes(head[56..60].try_into().unwrap());
    assert!(table_clusters > 1, "the refcount table did not grow");
    let j = qemu_img(&["info", "--output=json", s(&img)]);
    assert!(j.contains("\"cluster-size\": 512"), "{j}");
    assert!(qemu_contents(&img) == model);
    random_writes(&img, &mut model, 9, 1, 30);
}

#[test]
fn writes_into_images_qemu_made() {
    let dir = tmp();
    let raw = dir.path().join("src.raw");
    raw_source(&raw, 6 << 20);
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("v2", vec!["-o", "compat=0.10"]),
        ("v3", vec![]),
        ("ext", vec!["-o", "extended_l2=on"]),
        ("zstd", vec!["-c", "-o", "compression_type=zstd"]),
        ("zlib4k", vec!["-c", "-o", "cluster_size=4k"]),
    ];
    for (name, args) in cases {
        let img = dir.path().join(format!("w-{name}.qcow2"));
        let mut a = vec!["convert", "-O", "qcow2"];
        a.extend(args);
        a.push(s(&raw));
        a.push(s(&img));
        qemu_img(&a);
        qemu_io(
            &img,
            &["write -z 1m 256k".into(), "write -z 5000k 3k".into()],
        );
        let mut model = qemu_contents(&img);
        random_writes(&img, &mut model, name.len() as u64 * 7 + 1, 2, 40);
    }
    // A child over a backing file: partial writes copy the rest from the base.
    let base = dir.path().join("b.qcow2");
    qemu_img(&["convert", "-O", "qcow2", s(&raw), s(&base)]);
    for opts in ["extended_l2=off", "extended_l2=on"] {
        let child = dir.path().join(format!(
            "child-{}.qcow2",
            opts.len() + opts.ends_with("on") as usize
        ));
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            opts,
            "-b",
            "b.qcow2",
            "-F",
            "qcow2",
            s(&child),
        ]);
        let mut model = qemu_contents(&child);
        random_writes(&child, &mut model, 77, 2, 40);
    }
}

#[test]
fn unflushed_writes_leave_a_consistent_image() {
    // A copy of the file taken while writes wait for a flush is what a crash
    // would leave: qemu must find no corruption in it (leaks are allowed).
    let dir = tmp();
    let img = dir.path().join("crash.qcow2");
    let opts = CreateOptions {
        format: Format::Qcow2,
        block_size: Some(4096),
        ..CreateOptions::default()
    };
    vdisk::create(&img, 8 << 20, &opts, false).unwrap();
    let mut d = vdisk::open(&img, OpenOptions { writable: true }).unwrap();
    d.write_at(&[7u8; 100_000], 50_000).unwrap();
    d.flush().unwrap();
    d.write_at(&[9u8; 300_000], 3 << 20).unwrap();
    d.write_at(&[5u8; 1000], 60_000).unwrap();
    let copy = dir.path().join("copy.qcow2");
    std::fs::copy(&img, &copy).unwrap();
    let out = Command::new("qemu-img")
        .args(["check", "--output=json", s(&copy)])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v.get("corruptions").and_then(|x| x.as_u64()).unwrap_or(0),
        0,
        "{v}"
    );
    let back = qemu_contents(&copy);
    assert_eq!(&back[50_000..150_000][..10_000], &[7u8; 10_000][..]);
    d.flush().unwrap();
    drop(d);
    assert_qemu_clean(&img);
}

#[test]
fn convert_round_trips_through_qemu() {
    let dir = tmp();
    let raw = dir.path().join("src.raw");
    let want = raw_source(&raw, 5 << 20);
    let src = vdisk::open(&raw, OpenOptions::default()).unwrap();
    let out = dir.path().join("out.qcow2");
    let opts = CreateOptions {
        format: Format::Qcow2,
        ..CreateOptions::default()
    };
    vdisk::ops::convert::convert(src.as_ref(), &out, &opts, false, &mut |_, _| {}).unwrap();
    assert_qemu_clean(&out);
    assert_eq!(qemu_contents(&out), want);
    // And qemu's convert of it reads back the same in vmhub.
    let q = dir.path().join("q.qcow2");
    qemu_img(&["convert", "-O", "qcow2", s(&out), s(&q)]);
    assert_eq!(vmhub_contents(&q), want);
}

#[test]
fn check_finds_refcount_damage() {
    let dir = tmp();
    let img = dir.path().join("d.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&img), "4M"]);
    qemu_io(&img, &["write -P 1 0 128k".into()]);
    assert!(vdisk::check(&img).unwrap().clean);
    let mut b = std::fs::read(&img).unwrap();
    // The refcount block is at 0x20000; the data clusters follow the L2 table
    // (0x40000), at 0x50000 and 0x60000: clusters 5 and 6.
    let rb = 0x20000usize;
    let mut damaged = b.clone();
    damaged[rb + 5 * 2..rb + 5 * 2 + 2].copy_from_slice(&[0, 0]);
    let p1 = dir.path().join("zero-ref.qcow2");
    std::fs::write(&p1, &damaged).unwrap();
    let r = vdisk::check(&p1).unwrap();
    assert!(!r.clean);
    assert!(
        r.problems
            .iter()
            .any(|p| p.message.contains("refcount is 0")),
        "{:?}",
        r.problems
    );
    // A leak: a cluster counted that nothing references.
    let n = b.len();
    b.resize(n + 0x10000, 0);
    b[rb + (n / 0x10000) * 2 + 1] = 1;
    let p2 = dir.path().join("leak.qcow2");
    std::fs::write(&p2, &b).unwrap();
    let r = vdisk::check(&p2).unwrap();
    assert!(r.clean, "{:?}", r.problems);
    assert!(
        r.notes.iter().any(|n| n.contains("1 clusters leaked")),
        "{:?}",
        r.notes
    );
}
