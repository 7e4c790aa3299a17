//! VHDX against QEMU both ways: images qemu-img makes and qemu-io writes read
//! byte for byte as qemu reads them; what vmhub creates and writes passes
//! `qemu-img check` and compares equal; dirty logs replay; differencing
//! chains read through their parents.

mod common;

use common::crash::{splitmix, WriteLoad};
use common::run;
use std::path::{Path, PathBuf};
use std::process::Command;
use vdisk::vhdx::header::{Header, RegionTable, BAT_REGION, HEADER_OFFSETS, REGION_OFFSETS};
use vdisk::vhdx::{bat, log};
use vdisk::{CreateOptions, Disk, ExtentKind, Format, FormatDetails, ImageType, OpenOptions};

fn qemu_io(path: &Path, cmds: &[String]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "vhdx"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    run(c.arg(path));
}

/// What qemu-img reads from the VHDX `img`.
fn qemu_read(img: &Path) -> Vec<u8> {
    let raw = img.with_extension("qemu.raw");
    let _ = std::fs::remove_file(&raw);
    run(Command::new("qemu-img")
        .args(["convert", "-f", "vhdx", "-O", "raw"])
        .arg(img)
        .arg(&raw));
    let v = std::fs::read(&raw).unwrap();
    std::fs::remove_file(&raw).unwrap();
    v
}

/// What vmhub reads from `img`, in uneven pieces.
fn vmhub_read(img: &Path) -> Vec<u8> {
    let d = vdisk::open(img, OpenOptions::default()).unwrap();
    read_all(&*d)
}

fn read_all(d: &dyn Disk) -> Vec<u8> {
    let size = d.virtual_size();
    let mut out = vec![0u8; size as usize];
    let mut pos = 0u64;
    let step = 3 << 20 | 1536;
    while pos < size {
        let n = step.min(size - pos);
        d.read_at(&mut out[pos as usize..(pos + n) as usize], pos)
            .unwrap();
        pos += n;
    }
    out
}

fn qemu_check(img: &Path) {
    let out = Command::new("qemu-img")
        .args(["check", "-f", "vhdx"])
        .arg(img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qemu-img check {}: {}{}",
        img.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn qemu_compare(img: &Path, raw: &Path) {
    run(Command::new("qemu-img")
        .args(["compare", "-f", "vhdx", "-F", "raw"])
        .arg(img)
        .arg(raw));
}

/// Offsets spread over a disk of `size`, with odd alignments, and a pattern byte each.
fn scattered(size: u64) -> Vec<(u64, u64, u8)> {
    let mut v = Vec::new();
    let picks = [
        0u64,
        4096,
        1 << 20,
        (1 << 20) - 512,
        5 << 20,
        33 << 20,
        40 << 20,
    ];
    for (i, &p) in picks.iter().enumerate() {
        if p + 8192 <= size {
            v.push((p, 8192 + (i as u64 % 3) * 512, 0x11 + i as u8));
        }
    }
    v.push((size - 1024, 1024, 0xEE));
    v.push((size / 2 / 512 * 512, 70_000 / 512 * 512, 0x5A));
    v
}

fn apply(content: &mut [u8], writes: &[(u64, u64, u8)]) {
    for &(o, l, p) in writes {
        content[o as usize..(o + l) as usize].fill(p);
    }
}

fn info_of(d: &dyn Disk) -> vdisk::vhdx::VhdxInfo {
    match d.info().unwrap().details {
        Some(FormatDetails::Vhdx(v)) => v,
        other => panic!("no VHDX details: {other:?}"),
    }
}

#[test]
fn qemu_images_read_as_qemu_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str, u64)] = &[
        ("dynamic", "1M", "1M", 10 << 20),
        ("dynamic", "1M", "8M", (50 << 20) + 3 * 512),
        ("dynamic", "32M", "1M", 45 << 20),
        ("dynamic", "256M", "1M", (20 << 20) + 512),
        ("fixed", "1M", "1M", (6 << 20) + 1024),
        ("fixed", "32M", "8M", 40 << 20),
    ];
    for (i, &(sub, bs, log, size)) in cases.iter().enumerate() {
        let img = dir.path().join(format!("q{i}.vhdx"));
        let opts = format!("subformat={sub},block_size={bs},log_size={log}");
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "vhdx", "-o", &opts])
            .arg(&img)
            .arg(size.to_string()));
        let writes = scattered(size);
        let cmds: Vec<String> = writes
            .iter()
            .map(|(o, l, p)| format!("write -P {p} {o} {l}"))
            .collect();
        qemu_io(&img, &cmds);
        let ours = vmhub_read(&img);
        let theirs = qemu_read(&img);
        assert_eq!(ours.len(), theirs.len(), "{opts} size");
        assert!(ours == theirs, "{opts}: contents differ");
        let mut expect = vec![0u8; size as usize];
        apply(&mut expect, &writes);
        assert!(ours == expect, "{opts}: not the written pattern");

        let d = vdisk::open(&img, OpenOptions::default()).unwrap();
        let v = info_of(&*d);
        assert_eq!(
            v.block_size,
            bs.trim_end_matches('M').parse::<u64>().unwrap() << 20
        );
        assert_eq!(v.logical_sector_size, 512);
        assert_eq!(
            u64::from(v.log_length),
            log.trim_end_matches('M').parse::<u64>().unwrap() << 20
        );
        assert_eq!(v.log_state, "clean");
        let r = vdisk::check(&img).unwrap();
        assert!(r.clean, "{opts}: {:?}", r.problems);
        // Every written byte is inside a data extent; for 1 MiB blocks a block
        // qemu never wrote is not data.
        let map = d.map(0, size).unwrap();
        assert_eq!(map.iter().map(|e| e.length).sum::<u64>(), size);
        for &(o, l, _) in &writes {
            assert!(
                map.iter()
                    .any(|e| e.kind == ExtentKind::Data && e.offset <= o && e.end() >= o + l),
                "{opts}: write at {o} not in a data extent: {map:?}"
            );
        }
        if bs == "1M" {
            let hole = 2u64 << 20;
            assert!(
                map.iter().any(|e| e.kind != ExtentKind::Data
                    && e.offset <= hole
                    && e.end() >= hole + (1 << 20)),
                "{opts}: block 2 should be unallocated: {map:?}"
            );
        }
        // vmhub's sparse convert gives qemu's bytes.
        let raw = dir.path().join(format!("q{i}.raw"));
        let raw_opts = CreateOptions {
            format: Format::Raw,
            ..Default::default()
        };
        vdisk::ops::convert::convert(&*d, &raw, &raw_opts, false, &mut |_, _| {}).unwrap();
        assert!(std::fs::read(&raw).unwrap() == theirs, "{opts}: convert");
    }
}

/// The current header of the VHDX file `b`, its slot, and the BAT's offset.
fn layout(b: &[u8]) -> (Header, usize, u64) {
    let hs: Vec<Option<Header>> = HEADER_OFFSETS
        .iter()
        .map(|&o| Header::decode(&b[o as usize..o as usize + 4096]).ok())
        .collect();
    let slot = match (&hs[0], &hs[1]) {
        (Some(a), Some(b)) if b.sequence > a.sequence => 1,
        (Some(_), _) => 0,
        _ => 1,
    };
    let t = RegionTable::decode(&b[REGION_OFFSETS[0] as usize..][..64 << 10]).unwrap();
    (
        hs[slot].clone().unwrap(),
        slot,
        t.find(&BAT_REGION).unwrap().offset,
    )
}

fn u64_at(b: &[u8], at: u64) -> u64 {
    u64::from_le_bytes(b[at as usize..at as usize + 8].try_into().unwrap())
}

/// Writes `h` with the next sequence number over the other header of `b`.
fn put_header(b: &mut [u8], slot: usize, mut h: Header) {
    h.sequence += 1;
    let o = HEADER_OFFSETS[1 - slot] as usize;
    b[o..o + 4096].copy_from_slice(&h.encode());
}

fn file_sha(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn a_dirty_log_is_replayed_in_memory_read_only_and_into_the_file_writable() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("dirty.vhdx");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "vhdx", "-o", "block_size=1M"])
        .arg(&img)
        .arg("8M"));
    qemu_io(
        &img,
        &["write -P 0x11 0 1M".into(), "write -P 0x22 1M 4k".into()],
    );
    let mut b = std::fs::read(&img).unwrap();
    let (h, slot, bat_off) = layout(&b);
    let block0 = u64_at(&b, bat_off);
    assert_eq!(bat::state(block0), bat::FULLY_PRESENT);
    // One entry: block 3 goes to a new block past the end of the file (the
    // entry's LastFileOffset grows the file), 4 KiB of it and 4 KiB of block 0
    // get data.
    let len = b.len() as u64;
    assert_eq!(len % (1 << 20), 0);
    let mut bat_sector = b[bat_off as usize..bat_off as usize + 4096].to_vec();
    bat_sector[24..32].copy_from_slice(&bat::entry(bat::FULLY_PRESENT, len).to_le_bytes());
    let mut data = vec![0x77u8; 4096];
    data[..8].copy_from_slice(b"LEADING!");
    data[4092..].copy_from_slice(b"TAIL");
    let mut data2 = vec![0x78u8; 4096];
    data2[..8].copy_from_slice(b"leading!");
    let guid = [0x5Au8; 16];
    let writes = [
        (bat_off, bat_sector),
        (bat::offset(block0) + 8192, data.clone()),
        // The block's last 4 KiB: qemu's replay does not grow the file to
        // LastFileOffset, only as far as it writes.
        (len + (1 << 20) - 4096, data2.clone()),
    ];
    let entry = log::encode_entry(10, 0, &guid, len, len + (1 << 20), &writes);
    let lo = h.log_offset as usize;
    b[lo..lo + entry.len()].copy_from_slice(&entry);
    let mut dirty = h.clone();
    dirty.log_guid = guid;
    put_header(&mut b, slot, dirty);
    std::fs::write(&img, &b).unwrap();
    let copy = dir.path().join("copy.vhdx");
    std::fs::copy(&img, &copy).unwrap();

    let mut expect = vec![0u8; 8 << 20];
    expect[..1 << 20].fill(0x11);
    expect[8192..12288].copy_from_slice(&data);
    expect[1 << 20..(1 << 20) + 4096].fill(0x22);
    expect[(4 << 20) - 4096..4 << 20].copy_from_slice(&data2);

    // Read-only: the replayed content, the file untouched.
    let before = file_sha(&img);
    let d = vdisk::open(&img, OpenOptions::default()).unwrap();
    assert!(read_all(&*d) == expect, "read-only replay");
    let v = info_of(&*d);
    assert_eq!(
        (v.log_state, v.log_entries_replayed),
        ("replayed in memory", 1)
    );
    drop(d);
    assert!(
        file_sha(&img) == before,
        "a read-only open changed the file"
    );
    let r = vdisk::check(&img).unwrap();
    assert!(r.clean, "{:?}", r.problems);
    assert!(r.notes.iter().any(|n| n.contains("log")), "{:?}", r.notes);

    // qemu refuses to read a dirty log read-only, and replays it on a
    // writable open: it then reads what vmhub read.
    let out = Command::new("qemu-img")
        .args(["convert", "-f", "vhdx", "-O", "raw"])
        .arg(&copy)
        .arg(dir.path().join("x.raw"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "qemu-img read a dirty log read-only");
    qemu_io(&copy, &["read 0 512".into()]);
    assert!(qemu_read(&copy) == expect, "qemu's replay differs");

    // Writable: replayed into the file and the header cleared; qemu agrees.
    let d = vdisk::open(&img, OpenOptions { writable: true }).unwrap();
    assert_eq!(info_of(&*d).log_state, "replayed");
    drop(d);
    let (h2, _, _) = layout(&std::fs::read(&img).unwrap());
    assert_eq!(h2.log_guid, [0; 16]);
    assert!(h2.sequence > h.sequence);
    qemu_check(&img);
    assert!(qemu_read(&img) == expect, "after vmhub's replay");
}

/// A raw file holding `content`, for qemu-img compare.
fn raw_file(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

fn vhdx_opts(kind: ImageType, block: Option<u64>) -> CreateOptions {
    CreateOptions {
        format: Format::Vhdx,
        image_type: kind,
        block_size: block,
        compat_vpc: false,
    }
}

/// A new dynamic VHDX of `size` bytes in 1 MiB blocks.
fn new_dynamic(path: &Path, size: u64) {
    vdisk::create(
        path,
        size,
        &vhdx_opts(ImageType::Dynamic, Some(1 << 20)),
        false,
    )
    .unwrap();
}

fn write_pattern(d: &mut dyn Disk, writes: &[(u64, u64, u8)]) {
    for &(o, l, p) in writes {
        d.write_at(&vec![p; l as usize], o).unwrap();
    }
}

#[test]
fn created_images_pass_qemu_check_and_compare_equal() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (ImageType::Dynamic, None, (70 << 20) + 512),
        (ImageType::Dynamic, Some(1 << 20), 12 << 20),
        (ImageType::Fixed, Some(1 << 20), (5 << 20) + 3072),
        (ImageType::Fixed, None, 40 << 20),
    ];
    for (i, (kind, block, size)) in cases.into_iter().enumerate() {
        let img = dir.path().join(format!("c{i}.vhdx"));
        let notes = vdisk::create(&img, size, &vhdx_opts(kind, block), false).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        qemu_check(&img);
        let raw0 = raw_file(dir.path(), "zero.raw", &vec![0u8; size as usize]);
        qemu_compare(&img, &raw0);
        {
            let d = vdisk::open(&img, OpenOptions::default()).unwrap();
            let v = info_of(&*d);
            assert_eq!(v.block_size, block.unwrap_or(32 << 20));
            assert_eq!((v.logical_sector_size, v.physical_sector_size), (512, 4096));
            assert_eq!(v.log_length, 1 << 20);
            assert_eq!(
                v.kind,
                if kind == ImageType::Fixed {
                    "fixed"
                } else {
                    "dynamic"
                }
            );
        }
        let writes = scattered(size);
        let mut d = vdisk::open(&img, OpenOptions { writable: true }).unwrap();
        write_pattern(&mut *d, &writes);
        // A write across blocks, and zeros over a written range.
        d.write_at(&vec![0x99; 3 << 20], 2 << 20).unwrap();
        d.write_at(&vec![0; 4096], (2 << 20) + 4096).unwrap();
        d.flush().unwrap();
        drop(d);
        let mut expect = vec![0u8; size as usize];
        apply(&mut expect, &writes);
        expect[2 << 20..5 << 20].fill(0x99);
        expect[(2 << 20) + 4096..(2 << 20) + 8192].fill(0);
        qemu_check(&img);
        let raw = raw_file(dir.path(), &format!("c{i}.raw"), &expect);
        qemu_compare(&img, &raw);
        assert!(vmhub_read(&img) == expect);
        let r = vdisk::check(&img).unwrap();
        assert!(r.clean, "{:?}", r.problems);
        // The file's structures were updated through the log, and the log
        // left clean.
        let (h, _, _) = layout(&std::fs::read(&img).unwrap());
        assert_eq!(h.log_guid, [0; 16]);
        if kind == ImageType::Dynamic {
            // Blocks start on 1 MiB boundaries in the file.
            let b = std::fs::read(&img).unwrap();
            let (_, _, bat_off) = layout(&b);
            let e = u64_at(&b, bat_off);
            assert_eq!(bat::offset(e) % (1 << 20), 0);
            assert_eq!(bat::state(e), bat::FULLY_PRESENT);
        }
    }
}

#[test]
fn vmhub_writes_into_qemu_images_and_qemu_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    for (i, sub) in ["dynamic", "fixed"].iter().enumerate() {
        let img = dir.path().join(format!("w{i}.vhdx"));
        let size: u64 = 20 << 20;
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "vhdx", "-o"])
            .arg(format!("subformat={sub},block_size=1M"))
            .arg(&img)
            .arg(size.to_string()));
        qemu_io(&img, &["write -P 0x31 1M 2M".into()]);
        let mut d = vdisk::open(&img, OpenOptions { writable: true }).unwrap();
        let writes = scattered(size);
        write_pattern(&mut *d, &writes);
        d.flush().unwrap();
        drop(d);
        let mut expect = vec![0u8; size as usize];
        expect[1 << 20..3 << 20].fill(0x31);
        apply(&mut expect, &writes);
        qemu_check(&img);
        qemu_compare(&img, &raw_file(dir.path(), "w.raw", &expect));
        // qemu writes after vmhub, and vmhub reads what qemu reads.
        qemu_io(&img, &["write -P 0x44 7M 1M".into()]);
        assert!(vmhub_read(&img) == qemu_read(&img));
    }
}

#[test]
fn convert_to_vhdx_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&src)
        .arg("30M"));
    run(Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-c",
            "write -P 0x61 0 1M",
            "-c",
            "write -P 0x62 17M 3M",
        ])
        .arg(&src));
    let raw = dir.path().join("src.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(&src)
        .arg(&raw));
    let d = vdisk::open(&raw, OpenOptions::default()).unwrap();
    let out = dir.path().join("out.vhdx");
    vdisk::ops::convert::convert(
        &*d,
        &out,
        &vhdx_opts(ImageType::Dynamic, None),
        false,
        &mut |_, _| {},
    )
    .unwrap();
    qemu_check(&out);
    qemu_compare(&out, &raw);
    // Only what was written is allocated: one 32 MiB block holds it all here,
    // so check with 1 MiB blocks.
    let out1 = dir.path().join("out1.vhdx");
    vdisk::ops::convert::convert(
        &*d,
        &out1,
        &vhdx_opts(ImageType::Dynamic, Some(1 << 20)),
        false,
        &mut |_, _| {},
    )
    .unwrap();
    qemu_compare(&out1, &raw);
    let o = vdisk::open(&out1, OpenOptions::default()).unwrap();
    assert_eq!(o.info().unwrap().allocated_bytes, 4 << 20);
}

/// Simulates a crash after vmhub made its log entry durable but before it
/// wrote the BAT: the next open replays the entry.
#[test]
fn a_crash_between_log_and_bat_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("crash.vhdx");
    vdisk::create(
        &img,
        8 << 20,
        &vhdx_opts(ImageType::Dynamic, Some(1 << 20)),
        false,
    )
    .unwrap();
    let before = std::fs::read(&img).unwrap();
    let mut d = vdisk::open(&img, OpenOptions { writable: true }).unwrap();
    d.write_at(&vec![0xAB; 1 << 20], 2 << 20).unwrap();
    d.flush().unwrap();
    drop(d);
    let after = std::fs::read(&img).unwrap();
    let (h, slot, bat_off) = layout(&after);
    // The entry vmhub left in the log, with its id.
    let entry_at = h.log_offset as usize;
    let guid: [u8; 16] = after[entry_at + 32..entry_at + 48].try_into().unwrap();
    assert_eq!(&after[entry_at..entry_at + 4], b"loge");
    // The old file, grown with the new block and the log entry, and the
    // header saying the log is live: the BAT itself is the old one.
    let mut crashed = after.clone();
    crashed[bat_off as usize..bat_off as usize + 4096]
        .copy_from_slice(&before[bat_off as usize..bat_off as usize + 4096]);
    let mut live = h.clone();
    live.log_guid = guid;
    put_header(&mut crashed, slot, live);
    let c = dir.path().join("crashed.vhdx");
    std::fs::write(&c, &crashed).unwrap();
    assert_eq!(
        u64_at(&crashed, bat_off + 16),
        0,
        "the BAT should be the old one"
    );
    let mut expect = vec![0u8; 8 << 20];
    expect[2 << 20..3 << 20].fill(0xAB);
    assert!(vmhub_read(&c) == expect);
    // qemu replays vmhub's entry the same way.
    let q = dir.path().join("crashed-for-qemu.vhdx");
    std::fs::copy(&c, &q).unwrap();
    qemu_io(&q, &["read -P 0xAB 2M 1M".into()]);
    assert!(qemu_read(&q) == expect);
    drop(vdisk::open(&c, OpenOptions { writable: true }).unwrap());
    qemu_check(&c);
    assert!(qemu_read(&c) == expect);
}

fn vhdiinfo(p: &Path) -> String {
    let out = Command::new("vhdiinfo").arg(p).output().unwrap();
    assert!(
        out.status.success(),
        "vhdiinfo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn new_child(child: &Path, parent: &Path) -> Box<dyn Disk> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(child)
        .unwrap();
    vdisk::vhdx::create_child(f, child, parent, None).unwrap()
}

#[test]
fn differencing_chains_read_through_their_parents() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vhdx");
    let size: u64 = 12 << 20;
    new_dynamic(&base, size);
    let mut expect = vec![0u8; size as usize];
    {
        let mut d = vdisk::open(&base, OpenOptions { writable: true }).unwrap();
        d.write_at(&vec![0xA1; 3 << 20], 0).unwrap();
        d.write_at(&vec![0xA2; 1 << 20], 9 << 20).unwrap();
        d.flush().unwrap();
    }
    let base_guid = info_of(&*vdisk::open(&base, OpenOptions::default()).unwrap()).data_write_guid;
    expect[..3 << 20].fill(0xA1);
    expect[9 << 20..10 << 20].fill(0xA2);
    let child = dir.path().join("child.vhdx");
    {
        let mut c = new_child(&child, &base);
        c.write_at(&vec![0xB1; 1 << 20], (1 << 20) + 512 * 1000)
            .unwrap();
        c.write_at(&vec![0xB2; 4096], 6 << 20).unwrap();
        c.flush().unwrap();
    }
    expect[(1 << 20) + 512 * 1000..(2 << 20) + 512 * 1000].fill(0xB1);
    expect[6 << 20..(6 << 20) + 4096].fill(0xB2);
    let c = vdisk::open(&child, OpenOptions::default()).unwrap();
    assert!(read_all(&*c) == expect, "child content");
    libvhdi_agrees(&child, Some(&base), &expect);
    let info = c.info().unwrap();
    assert_eq!(info.chain.len(), 2);
    let v = info_of(&*c);
    assert_eq!(v.kind, "differencing");
    assert!(v.parent.as_ref().unwrap().file.ends_with("base.vhdx"));
    // Blocks only the parent holds map as the parent's data; blocks nobody
    // holds are unallocated.
    let map = c.map(0, size).unwrap();
    let kind_at = |o: u64| {
        map.iter()
            .find(|e| e.offset <= o && e.end() > o)
            .unwrap()
            .kind
    };
    assert_eq!(kind_at(0), ExtentKind::Data);
    assert_eq!(kind_at(4 << 20), ExtentKind::Unallocated);
    assert_eq!(kind_at(9 << 20), ExtentKind::Data);
    drop(c);
    let r = vdisk::check(&child).unwrap();
    assert!(r.clean, "{:?}", r.problems);
    // libvhdi sees a differencing disk naming its parent.
    let text = vhdiinfo(&child);
    assert!(
        text.to_lowercase().contains("differential")
            || text.to_lowercase().contains("differencing"),
        "{text}"
    );
    assert!(text.contains("base.vhdx"), "{text}");
    assert!(text.contains(&base_guid.to_lowercase()), "{text}");

    // A grandchild, and the chain moved elsewhere (found by relative path).
    let grand = dir.path().join("grand.vhdx");
    {
        let mut g = new_child(&grand, &child);
        g.write_at(&vec![0xC1; 512], 11 << 20).unwrap();
        g.flush().unwrap();
    }
    expect[11 << 20..(11 << 20) + 512].fill(0xC1);
    let moved = dir.path().join("moved");
    std::fs::create_dir(&moved).unwrap();
    for n in ["base.vhdx", "child.vhdx", "grand.vhdx"] {
        std::fs::rename(dir.path().join(n), moved.join(n)).unwrap();
    }
    let g = vdisk::open(&moved.join("grand.vhdx"), OpenOptions::default()).unwrap();
    assert_eq!(g.info().unwrap().chain.len(), 3);
    assert!(read_all(&*g) == expect, "grandchild content");
    drop(g);

    // Writing to the parent changes its DataWriteGuid: the child refuses it.
    {
        let mut d = vdisk::open(&moved.join("base.vhdx"), OpenOptions { writable: true }).unwrap();
        d.write_at(&[1; 512], 0).unwrap();
        d.flush().unwrap();
    }
    let e = vdisk::open(&moved.join("child.vhdx"), OpenOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("child.vhdx") && e.contains("DataWriteGuid"),
        "{e}"
    );
}

/// An 8 MiB base.vhdx made by qemu-img (1 MiB blocks) reading 0xA5
/// throughout, and an empty child.vhdx over it (2 MiB blocks) in `dir`:
/// their paths, the child's bytes and its BAT's offset in them, for tests
/// that lay the child's blocks out by hand.
fn child_of_an_a5_base(dir: &Path) -> (PathBuf, PathBuf, Vec<u8>, u64) {
    let base = dir.join("base.vhdx");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "vhdx", "-o", "block_size=1M"])
        .arg(&base)
        .arg((8u64 << 20).to_string()));
    qemu_io(&base, &["write -P 0xA5 0 8M".into()]);
    let child = dir.join("child.vhdx");
    drop(new_child(&child, &base));
    let b = std::fs::read(&child).unwrap();
    let (_, _, bat_off) = layout(&b);
    (base, child, b, bat_off)
}

#[test]
fn partially_present_blocks_read_by_their_sector_bitmap() {
    let dir = tempfile::tempdir().unwrap();
    let size: u64 = 8 << 20;
    let (base, child, mut b, bat_off) = child_of_an_a5_base(dir.path());
    // Block 1 (2 MiB blocks) partially present: sectors 0-7 and 100 in the child.
    let end = (b.len() as u64).div_ceil(1 << 20) << 20;
    let (block_at, bitmap_at) = (end, end + (2 << 20));
    b.resize((bitmap_at + (1 << 20)) as usize, 0);
    let bs: u64 = 2 << 20;
    let chunk_ratio = (1u64 << 23) * 512 / bs;
    let put = |b: &mut Vec<u8>, i: u64, e: u64| {
        b[(bat_off + i * 8) as usize..][..8].copy_from_slice(&e.to_le_bytes())
    };
    put(&mut b, 1, bat::entry(bat::PARTIALLY_PRESENT, block_at));
    put(&mut b, chunk_ratio, bat::entry(bat::SB_PRESENT, bitmap_at));
    let first_bit = bs / 512; // block 1's first sector in the chunk
    for s in (0..8).chain([100]) {
        let bit = first_bit + s;
        b[(bitmap_at + bit / 8) as usize] |= 1 << (bit % 8);
        b[(block_at + s * 512) as usize..][..512].fill(0xC3);
    }
    // A sector whose bit is clear holds something else: it must not be read.
    b[(block_at + 50 * 512) as usize..][..512].fill(0xEE);
    std::fs::write(&child, &b).unwrap();
    let mut expect = vec![0xA5u8; size as usize];
    for s in (0..8).chain([100]) {
        let o = (bs + s * 512) as usize;
        expect[o..o + 512].fill(0xC3);
    }
    let c = vdisk::open(&child, OpenOptions::default()).unwrap();
    assert!(read_all(&*c) == expect);
    let map = c.map(bs, bs).unwrap();
    assert!(map.iter().all(|e| e.kind == ExtentKind::Data), "{map:?}");
    assert_eq!(map.iter().map(|e| e.length).sum::<u64>(), bs);
    assert!(vdisk::check(&child).unwrap().clean);
    drop(c);
    // Writing into the block sets the bits of the sectors written; a write
    // of part of a sector keeps the rest of it as it read before.
    let mut c = vdisk::open(&child, OpenOptions { writable: true }).unwrap();
    c.write_at(&[0xD4; 1024], bs + 200 * 512).unwrap();
    c.write_at(&[0xD5; 100], bs + 7 * 512 + 300).unwrap();
    c.write_at(&[0xD6; 700], bs + 300 * 512 + 10).unwrap();
    c.flush().unwrap();
    drop(c);
    let o = (bs + 200 * 512) as usize;
    expect[o..o + 1024].fill(0xD4);
    let o = (bs + 7 * 512 + 300) as usize;
    expect[o..o + 100].fill(0xD5);
    let o = (bs + 300 * 512 + 10) as usize;
    expect[o..o + 700].fill(0xD6);
    assert!(vmhub_read(&child) == expect);
    let b = std::fs::read(&child).unwrap();
    assert_eq!(bat::state(u64_at(&b, bat_off + 8)), bat::PARTIALLY_PRESENT);
    for s in [200u64, 201, 300, 301] {
        let bit = first_bit + s;
        assert_ne!(
            b[(bitmap_at + bit / 8) as usize] & (1 << (bit % 8)),
            0,
            "sector {s}"
        );
    }
    assert!(vdisk::check(&child).unwrap().clean);
    libvhdi_agrees(&child, Some(&base), &expect);
}

#[test]
fn a_block_written_again_ignores_bits_left_from_before() {
    // A block not present in the child reads its parent whatever its sector
    // bitmap holds; bits may be left set there (the block was present once).
    // Writing part of the block again makes the child hold those sectors
    // alone: the rest still read the parent.
    let dir = tempfile::tempdir().unwrap();
    let size: u64 = 8 << 20;
    let (base, child, mut b, bat_off) = child_of_an_a5_base(dir.path());
    let bitmap_at = (b.len() as u64).div_ceil(1 << 20) << 20;
    b.resize((bitmap_at + (1 << 20)) as usize, 0);
    let bs: u64 = 2 << 20;
    let chunk_ratio = (1u64 << 23) * 512 / bs;
    b[(bat_off + chunk_ratio * 8) as usize..][..8]
        .copy_from_slice(&bat::entry(bat::SB_PRESENT, bitmap_at).to_le_bytes());
    // Block 1 is not present, with every bit of it set.
    let first_bit = bs / 512;
    b[(bitmap_at + first_bit / 8) as usize..][..(bs / 512 / 8) as usize].fill(0xFF);
    std::fs::write(&child, &b).unwrap();
    let mut expect = vec![0xA5u8; size as usize];
    assert!(vmhub_read(&child) == expect);
    let mut c = vdisk::open(&child, OpenOptions { writable: true }).unwrap();
    c.write_at(&[0xD4; 4096], bs + 4096).unwrap();
    c.flush().unwrap();
    drop(c);
    expect[(bs + 4096) as usize..][..4096].fill(0xD4);
    assert!(
        vmhub_read(&child) == expect,
        "sectors never written read the parent"
    );
    assert!(vdisk::check(&child).unwrap().clean);
    libvhdi_agrees(&child, Some(&base), &expect);
}

/// Blocks past the first chunk: their BAT entries come after a sector bitmap
/// entry (16 blocks of 256 MiB per chunk with 512-byte sectors).
#[test]
fn blocks_past_the_first_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("big.vhdx");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "vhdx", "-o", "block_size=256M"])
        .arg(&img)
        .arg("5G"));
    let far: u64 = (4 << 30) + (3 << 28) + 12345 * 512;
    qemu_io(
        &img,
        &[
            format!("write -P 0x21 {far} 64k"),
            "write -P 0x22 0 4k".into(),
        ],
    );
    let mut d = vdisk::open(&img, OpenOptions { writable: true }).unwrap();
    let mut buf = vec![0u8; 65536];
    d.read_at(&mut buf, far).unwrap();
    assert!(buf.iter().all(|&b| b == 0x21));
    let map = d.map(0, d.virtual_size()).unwrap();
    let data: Vec<_> = map.iter().filter(|e| e.kind == ExtentKind::Data).collect();
    assert!(
        data.iter()
            .any(|e| e.offset <= far && e.end() >= far + 65536),
        "{map:?}"
    );
    assert!(
        data.iter().map(|e| e.length).sum::<u64>() <= 2 << 28,
        "{map:?}"
    );
    let near_end = (5u64 << 30) - 8192;
    d.write_at(&[0x23; 8192], near_end).unwrap();
    d.write_at(&[0x24; 4096], (17 << 28) + 4096).unwrap();
    d.flush().unwrap();
    drop(d);
    qemu_check(&img);
    qemu_io(
        &img,
        &[
            format!("read -P 0x21 {far} 64k"),
            format!("read -P 0x23 {near_end} 8k"),
            format!("read -P 0x24 {} 4k", (17u64 << 28) + 4096),
            "read -P 0x22 0 4k".into(),
            format!("read -P 0 {} 4k", 17u64 << 28),
        ],
    );
}

/// When Debian's python3-libvhdi is installed, libvhdi reads `img` (over
/// `parent`, for a differencing disk) as `expect`. Without it the
/// cross-check is skipped (the other assertions of the caller still run).
fn libvhdi_agrees(img: &Path, parent: Option<&Path>, expect: &[u8]) {
    let script = "import sys, pyvhdi\n\
c = pyvhdi.file(); c.open(sys.argv[1])\n\
p = pyvhdi.file()\n\
if len(sys.argv) > 3: p.open(sys.argv[3]); c.set_parent(p)\n\
n = c.get_media_size(); out = open(sys.argv[2], 'wb'); pos = 0\n\
while pos < n: b = c.read_buffer_at_offset(min(1 << 20, n - pos), pos); out.write(b); pos += len(b)\n";
    let probe = Command::new("/usr/bin/python3")
        .args(["-c", "import pyvhdi"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("python3-libvhdi is not installed: libvhdi cross-check skipped");
        return;
    }
    let out = img.with_extension("libvhdi.raw");
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args(["-c", script]).arg(img).arg(&out);
    if let Some(p) = parent {
        cmd.arg(p);
    }
    run(&mut cmd);
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), expect.len(), "libvhdi's size");
    assert!(got == expect, "libvhdi reads the image differently");
}

/// 4 KiB logical sectors: the chunk ratio is eight times larger and the
/// sector size is the unit of the size.
#[test]
fn four_kib_logical_sectors() {
    use vdisk::vhdx::create::{write_new, NewVhdx};
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("4k.vhdx");
    let size: u64 = 9 << 20;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&img)
        .unwrap();
    let n = NewVhdx {
        size,
        block_size: 1 << 20,
        logical_sector: 4096,
        physical_sector: 4096,
        log_size: 1 << 20,
        fixed: false,
        parent: None,
    };
    write_new(&f, &img, &n).unwrap();
    drop(f);
    let mut d = vdisk::open(&img, OpenOptions { writable: true }).unwrap();
    assert_eq!(info_of(&*d).logical_sector_size, 4096);
    let writes = scattered(size);
    write_pattern(&mut *d, &writes);
    d.flush().unwrap();
    drop(d);
    let mut expect = vec![0u8; size as usize];
    apply(&mut expect, &writes);
    // qemu refuses VHDX with 4 KiB logical sectors ("Operation not
    // supported"): libvhdi is the other reader here.
    assert!(vmhub_read(&img) == expect);
    assert!(vdisk::check(&img).unwrap().clean);
    libvhdi_agrees(&img, None, &expect);
}

const CRASH_SIZE: u64 = 8 << 20;
const CRASH_OPS: u64 = 2000;

/// The writes of the VHDX crash harness.
const CRASH_LOAD: WriteLoad = WriteLoad {
    size: CRASH_SIZE,
    max_sectors: 300,
    ops: CRASH_OPS,
};

/// The writer, run in a child process by `crash_harness_vhdx`: writes ops
/// until killed, appending the number of ops done after every flush.
#[test]
#[ignore = "run by crash_harness_vhdx in a child process"]
fn crash_child_writer_vhdx() {
    if let Some((img, ack, seed)) = common::crash::writer_env() {
        CRASH_LOAD.write_until_killed(&img, &ack, seed);
    }
}

/// Writers of a dynamic VHDX, and of a differencing one over a parent with
/// data, killed with SIGKILL at random moments: every flushed write is
/// there, later sectors hold one of their versions, the image checks clean
/// (its log replayed by the next open), and qemu reads a dynamic one alike.
#[test]
fn crash_harness_vhdx() {
    for differencing in [false, true] {
        crash_run(differencing, 16);
    }
}

fn crash_run(differencing: bool, iterations: u64) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("crash.vhdx");
    let base = dir.path().join("base.vhdx");
    let opts = vhdx_opts(ImageType::Dynamic, Some(1 << 20));
    let mut model = vec![0u8; CRASH_SIZE as usize];
    if differencing {
        vdisk::create(&base, CRASH_SIZE, &opts, false).unwrap();
        let mut d = vdisk::open(&base, OpenOptions { writable: true }).unwrap();
        for (i, chunk) in model
            .chunks_mut(3 << 18)
            .enumerate()
            .filter(|(i, _)| i % 3 != 1)
        {
            chunk.fill(0x40 + i as u8);
            d.write_at(chunk, i as u64 * (3 << 18)).unwrap();
        }
        d.flush().unwrap();
        drop(d);
        drop(new_child(&img, &base));
    } else {
        vdisk::create(&img, CRASH_SIZE, &opts, false).unwrap();
    }
    let base_bytes = differencing.then(|| std::fs::read(&base).unwrap());
    let mut rng = 0x5eed_u64 + u64::from(differencing);
    let mut mid_run = 0;
    let mut dirty_logs = 0;
    for iter in 0..iterations {
        rng = splitmix(rng);
        let seed = rng;
        let done = CRASH_LOAD.run_and_kill("crash_child_writer_vhdx", &img, seed, 80);
        if done < CRASH_OPS {
            mid_run += 1;
        }
        let report = vdisk::check(&img).unwrap();
        assert!(
            report.clean,
            "iteration {iter} (seed {seed}): {:?}",
            report.problems
        );
        if report.notes.iter().any(|n| n.contains("log is not clean")) {
            dirty_logs += 1;
        }
        let got = vmhub_read(&img);
        CRASH_LOAD.check_and_advance(seed, done, &mut model, got, &format!("iteration {iter}"));
        if let Some(b) = &base_bytes {
            assert!(
                std::fs::read(&base).unwrap() == *b,
                "iteration {iter}: the parent changed"
            );
        } else if iter % 4 == 0 {
            // A writable open replays what the kill left in the log; qemu
            // then reads what vmhub read.
            drop(vdisk::open(&img, OpenOptions { writable: true }).unwrap());
            qemu_check(&img);
            assert!(
                qemu_read(&img) == model,
                "iteration {iter}: qemu reads other data"
            );
        }
    }
    eprintln!("{mid_run} of {iterations} writers killed mid-run, {dirty_logs} with a live log");
    assert!(
        mid_run >= iterations / 2,
        "only {mid_run} kills landed mid-run"
    );
}

/// A VHDX child over a parent of another format (VHD here, raw too): reads
/// fall through to it, and writes stay in the child.
#[test]
fn a_vhdx_child_over_a_vhd_or_raw_parent() {
    let dir = tempfile::tempdir().unwrap();
    let size: u64 = 6 << 20;
    let vhd = dir.path().join("base.vhd");
    vdisk::create(&vhd, size, &CreateOptions::default(), false).unwrap();
    let raw = dir.path().join("base.img");
    let mut expect = vec![0u8; size as usize];
    expect[1 << 20..3 << 20].fill(0x71);
    std::fs::write(&raw, &expect).unwrap();
    {
        let mut d = vdisk::open(&vhd, OpenOptions { writable: true }).unwrap();
        d.write_at(&expect, 0).unwrap();
        d.flush().unwrap();
    }
    for (i, parent) in [&vhd, &raw].into_iter().enumerate() {
        let before = std::fs::read(parent).unwrap();
        let child = dir.path().join(format!("child{i}.vhdx"));
        let mut c = new_child(&child, parent);
        c.write_at(&[0x72; 1000], (2 << 20) - 500).unwrap();
        c.flush().unwrap();
        drop(c);
        let mut want = expect.clone();
        want[(2 << 20) - 500..(2 << 20) + 500].fill(0x72);
        let c = vdisk::open(&child, OpenOptions::default()).unwrap();
        assert!(read_all(&*c) == want);
        assert_eq!(c.info().unwrap().chain.len(), 2);
        assert!(
            std::fs::read(parent).unwrap() == before,
            "the parent changed"
        );
    }
}

#[test]
fn merging_a_vhdx_chain_leaves_a_disk_qemu_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let size: u64 = 48 << 20;
    let base = dir.path().join("base.vhdx");
    new_dynamic(&base, size);
    let mut expect = vec![0u8; size as usize];
    let base_writes = scattered(size);
    {
        let mut d = vdisk::open(&base, OpenOptions { writable: true }).unwrap();
        write_pattern(&mut *d, &base_writes);
        d.flush().unwrap();
    }
    apply(&mut expect, &base_writes);
    let base_guid = info_of(&*vdisk::open(&base, OpenOptions::default()).unwrap()).data_write_guid;

    // A child with data over and between the base's, a sibling made beside it.
    let child = dir.path().join("child.avhdx");
    let child_writes: Vec<(u64, u64, u8)> = (0..40u64)
        .map(|i| {
            (
                (i * 1_181_000 / 512 * 512) % (size - 70_000),
                3_000 + (i % 7) * 9_728,
                0x80 | i as u8,
            )
        })
        .collect();
    {
        let mut d = new_child(&child, &base);
        write_pattern(&mut *d, &child_writes);
        d.flush().unwrap();
    }
    apply(&mut expect, &child_writes);
    let sibling = dir.path().join("sibling.vhdx");
    drop(new_child(&sibling, &base));
    let expect_raw = raw_file(dir.path(), "expect.raw", &expect);
    assert!(vmhub_read(&child) == expect);

    // The sibling would read the merged data: refused, naming it.
    let no = vdisk::ops::merge::merge(&child, Default::default(), &mut |_, _| {}).unwrap_err();
    assert!(no.to_string().contains("sibling.vhdx"), "{no}");
    assert!(child.exists());
    std::fs::remove_file(&sibling).unwrap();

    let mut last = (0, 0);
    let m =
        vdisk::ops::merge::merge(&child, Default::default(), &mut |d, t| last = (d, t)).unwrap();
    assert_eq!(
        m.removed,
        vec![std::fs::canonicalize(dir.path())
            .unwrap()
            .join("child.avhdx")]
    );
    assert!(!child.exists());
    assert_eq!(last.0, last.1);
    assert!(m.bytes > 0 && m.bytes <= size);
    qemu_check(&base);
    qemu_compare(&base, &expect_raw);
    assert!(vdisk::check(&base).unwrap().clean);
    // Its data changed, so its DataWriteGuid did too: a child made before
    // the merge no longer takes it for its parent.
    let after = info_of(&*vdisk::open(&base, OpenOptions::default()).unwrap()).data_write_guid;
    assert_ne!(after, base_guid);
}

#[test]
fn compacting_a_differencing_vhdx_drops_the_blocks_that_hide_nothing() {
    let dir = tempfile::tempdir().unwrap();
    const M: u64 = 1 << 20;
    let size = 16 * M;
    let base = dir.path().join("base.vhdx");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "vhdx", "-o", "block_size=1M"])
        .arg(&base)
        .arg(size.to_string()));
    // The parent holds data in blocks 0-7 and 12; 8-11 and 13-15 are empty.
    qemu_io(
        &base,
        &["write -P 0x5a 0 8M".into(), "write -P 0x6b 12M 1M".into()],
    );
    let mut expect = vec![0u8; size as usize];
    expect[..8 * M as usize].fill(0x5a);
    expect[12 * M as usize..13 * M as usize].fill(0x6b);
    let child = dir.path().join("child.vhdx");
    let mut d = vdisk::vhdx::create_child(
        std::fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&child)
            .unwrap(),
        &child,
        &base,
        Some(M),
    )
    .unwrap();
    // (offset, bytes, whether the block hides something afterwards)
    let writes: [(u64, Vec<u8>, bool); 8] = [
        (2 * M, vec![0x5a; M as usize], false), // the parent's data, whole block
        (4 * M + 8192, vec![0x5a; 4096], false), // the parent's data, a part
        (12 * M + 512, vec![0x6b; 1024], false), // the same, another block
        (9 * M, vec![0; M as usize], false),    // zeros over zeros
        (5 * M, vec![0x77; M as usize], true),  // new data, whole block
        (6 * M + 4096, vec![0x78; 512], true),  // new data, a part
        (10 * M + 65536, vec![0x79; 700], true), // new data over nothing
        (7 * M + 3 * 512, vec![0; 512], true),  // zeros over data
    ];
    for (o, b, _) in &writes {
        d.write_at(b, *o).unwrap();
        expect[*o as usize..*o as usize + b.len()].copy_from_slice(b);
    }
    d.flush().unwrap();
    drop(d);
    assert!(vmhub_read(&child) == expect);
    let base_bytes = file_sha(&base);
    let before = std::fs::metadata(&child).unwrap().len();
    let (b, a) = vdisk::ops::compact::compact(&child, &[], &mut |_, _| {}).unwrap();
    assert_eq!(b, before);
    let after = std::fs::metadata(&child).unwrap().len();
    assert_eq!(a, after);
    // Four of the eight blocks written go: 4 MiB less.
    assert!(after + 4 * M <= before, "{before} -> {after}");
    assert!(vmhub_read(&child) == expect, "the chain reads as before");
    assert!(vdisk::check(&child).unwrap().clean);
    libvhdi_agrees(&child, Some(&base), &expect);
    let c = vdisk::open(&child, OpenOptions::default()).unwrap();
    for (o, _, kept) in &writes {
        let block = o / M * M;
        let own = c.own_map(block, M).unwrap();
        let held = own.iter().any(|e| e.kind != ExtentKind::Unallocated);
        assert_eq!(held, *kept, "block at {block}: {own:?}");
    }
    drop(c);
    // A block dropped and written again in part holds only what is written.
    let mut c = vdisk::open(&child, OpenOptions { writable: true }).unwrap();
    c.write_at(&[0xE1; 512], 4 * M + 512).unwrap();
    c.flush().unwrap();
    drop(c);
    expect[(4 * M + 512) as usize..][..512].fill(0xE1);
    assert!(vmhub_read(&child) == expect);
    // A second compaction changes nothing it reads; the parent never changed.
    let again = vdisk::ops::compact::compact(&child, &[], &mut |_, _| {}).unwrap();
    assert!(again.1 <= again.0);
    assert!(vmhub_read(&child) == expect);
    assert_eq!(file_sha(&base), base_bytes);
    // Ranges said to be free count as the parent's: block 5 goes, and part
    // of block 6 is not enough for it to go.
    let free = [(5 * M, M), (6 * M, 4096)];
    let (b, a) = vdisk::ops::compact::compact(&child, &free, &mut |_, _| {}).unwrap();
    assert!(a + M <= b, "{b} -> {a}");
    expect[5 * M as usize..6 * M as usize].fill(0x5a);
    assert!(vmhub_read(&child) == expect);
    assert!(vdisk::check(&child).unwrap().clean);

    // A child of whole blocks only has no sector bitmap, and compacting it
    // makes none: the file loses the block dropped.
    let whole = dir.path().join("whole.vhdx");
    let f = std::fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&whole)
        .unwrap();
    let mut d = vdisk::vhdx::create_child(f, &whole, &base, Some(M)).unwrap();
    d.write_at(&vec![0x5a; M as usize], M).unwrap();
    d.write_at(&vec![0x3c; M as usize], 3 * M).unwrap();
    d.flush().unwrap();
    drop(d);
    let mut expect = vec![0u8; size as usize];
    expect[..8 * M as usize].fill(0x5a);
    expect[12 * M as usize..13 * M as usize].fill(0x6b);
    expect[3 * M as usize..4 * M as usize].fill(0x3c);
    let (before, after) = vdisk::ops::compact::compact(&whole, &[], &mut |_, _| {}).unwrap();
    assert!(after + M <= before, "{before} -> {after}");
    assert!(vmhub_read(&whole) == expect);
    assert!(vdisk::check(&whole).unwrap().clean);
}

#[test]
fn compacting_drops_empty_blocks_moves_the_rest_and_qemu_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    const M: u64 = 1 << 20;
    let size = 64 * M;
    // qemu-io writes blocks in this order, so they lie in the file so too:
    // 0, 10, 20, 40, 41, 63 (1 MiB blocks).
    let img = dir.path().join("disk.vhdx");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "vhdx", "-o", "block_size=1M"])
        .arg(&img)
        .arg(size.to_string()));
    let writes = [
        (0, M, 0x11u8),
        (10 * M, M, 0x22),
        (20 * M, 4096, 0x55),
        (40 * M, 2 * M, 0x33),
        (63 * M, M, 0x44),
        // Block 10 reads as zeros again, and so does half of block 40.
        (10 * M, M, 0),
        (40 * M, M / 2, 0),
    ];
    let cmds: Vec<String> = writes
        .iter()
        .map(|&(o, l, p)| format!("write -P {p:#x} {o} {l}"))
        .collect();
    qemu_io(&img, &cmds);
    let mut content = vec![0u8; size as usize];
    for &(o, l, p) in &writes {
        content[o as usize..(o + l) as usize].fill(p);
    }
    // A child made before still reads through the compacted parent.
    let child = dir.path().join("child.vhdx");
    drop(new_child(&child, &img));
    let before = std::fs::metadata(&img).unwrap().len();

    // Block 20's 4 KiB lie in space the caller calls free.
    let free = [(20 * M, 8192)];
    let c = vdisk::vhdx::compact::compact(&img, &free, &mut |_, _| {}).unwrap();
    content[(20 * M) as usize..(20 * M + 4096) as usize].fill(0);
    assert_eq!((c.before, c.dropped), (before, 2), "{c:?}");
    assert!(c.moved >= 1, "{c:?}");
    assert_eq!(c.after, std::fs::metadata(&img).unwrap().len());
    assert!(c.after <= before - 2 * M, "{c:?}");
    qemu_check(&img);
    let raw = raw_file(dir.path(), "expect.raw", &content);
    qemu_compare(&img, &raw);
    assert!(vdisk::check(&img).unwrap().clean);
    assert!(vmhub_read(&child) == content);
    // Nothing left to do the second time.
    let again = vdisk::vhdx::compact::compact(&img, &[], &mut |_, _| {}).unwrap();
    assert_eq!((again.dropped, again.moved, again.after), (0, 0, c.after));

    // A fixed disk is refused, unchanged.
    let fixed = dir.path().join("fixed.vhdx");
    vdisk::create(&fixed, 8 * M, &vhdx_opts(ImageType::Fixed, None), false).unwrap();
    let bytes = std::fs::read(&fixed).unwrap();
    let e = vdisk::vhdx::compact::compact(&fixed, &[], &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains(&fixed.display().to_string()), "{e}");
    assert!(std::fs::read(&fixed).unwrap() == bytes);
    // The child, which holds nothing of its own, has nothing to drop.
    let mine = vdisk::vhdx::compact::compact(&child, &[], &mut |_, _| {}).unwrap();
    assert_eq!((mine.dropped, mine.moved), (0, 0));
    assert!(vmhub_read(&child) == content);
}

/// `relink` of a differencing VHDX: the child follows its parent to a folder
/// whose long name makes the new locator too big for the old one's place
/// (so it moves to the end of the metadata region), then back to a short
/// name (in place); strangers and smaller disks are refused; the child's
/// DataWriteGuid stays; `--force` adopts a stranger.
#[test]
fn relink_points_a_differencing_vhdx_at_its_moved_parent() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vhdx");
    let size: u64 = 8 << 20;
    new_dynamic(&base, size);
    {
        let mut d = vdisk::open(&base, OpenOptions { writable: true }).unwrap();
        d.write_at(&vec![0xA1; 2 << 20], 0).unwrap();
        d.flush().unwrap();
    }
    let child = dir.path().join("child.vhdx");
    {
        let mut c = new_child(&child, &base);
        c.write_at(&vec![0xB1; 1 << 20], 4 << 20).unwrap();
        c.flush().unwrap();
    }
    let mut expect = vec![0u8; size as usize];
    expect[..2 << 20].fill(0xA1);
    expect[4 << 20..5 << 20].fill(0xB1);
    let guid = info_of(&*vdisk::open(&child, OpenOptions::default()).unwrap()).data_write_guid;
    let locator_len = |p: &Path| {
        let b = std::fs::read(p).unwrap();
        let t = RegionTable::decode(&b[REGION_OFFSETS[0] as usize..][..64 << 10]).unwrap();
        let m = t.find(&vdisk::vhdx::header::METADATA_REGION).unwrap();
        let region = &b[m.offset as usize..][..m.length as usize];
        vdisk::vhdx::metadata::decode_table(region)
            .unwrap()
            .iter()
            .find(|e| e.item == vdisk::vhdx::metadata::PARENT_LOCATOR)
            .map(|e| (e.offset, e.length))
            .unwrap()
    };
    let (at_before, len_before) = locator_len(&child);

    let far = dir.path().join("x".repeat(200)).join("y".repeat(200));
    std::fs::create_dir_all(&far).unwrap();
    let moved = far.join("renamed-base.vhdx");
    std::fs::rename(&base, &moved).unwrap();
    let e = vdisk::open(&child, OpenOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("base.vhdx"), "{e}");

    let stranger = dir.path().join("stranger.vhdx");
    new_dynamic(&stranger, size);
    let small = dir.path().join("small.vhdx");
    new_dynamic(&small, size / 2);
    let bytes = std::fs::read(&child).unwrap();
    let e = vdisk::relink(&child, &stranger, false)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("DataWriteGuid") && e.contains("stranger.vhdx") && e.contains("--force"),
        "{e}"
    );
    let e = vdisk::relink(&child, &child, true)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("its own parent"), "{e}");
    let e = vdisk::relink(&child, &small, true)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("small.vhdx") && e.contains("fewer"), "{e}");
    assert!(
        std::fs::read(&child).unwrap() == bytes,
        "a refused relink changed the child"
    );

    assert!(vdisk::relink(&child, &moved, false).unwrap().is_empty());
    let (at, len) = locator_len(&child);
    assert!(
        len > len_before && at != at_before,
        "the longer locator ({len} bytes at {at}) should have moved from {at_before}"
    );
    let c = vdisk::open(&child, OpenOptions::default()).unwrap();
    assert!(
        read_all(&*c) == expect,
        "the relinked child reads differently"
    );
    assert!(c.info().unwrap().chain[1]
        .file
        .ends_with("renamed-base.vhdx"));
    assert_eq!(info_of(&*c).data_write_guid, guid, "DataWriteGuid changed");
    drop(c);
    let report = vdisk::check(&child).unwrap();
    assert!(report.clean, "{:?}", report.problems);
    assert!(vhdiinfo(&child).contains("renamed-base.vhdx"));
    libvhdi_agrees(&child, Some(&moved), &expect);

    // Back beside the child under a short name: the locator shrinks in place.
    let back = dir.path().join("b.vhdx");
    std::fs::rename(&moved, &back).unwrap();
    assert!(vdisk::relink(&child, &back, false).unwrap().is_empty());
    let (at2, len2) = locator_len(&child);
    assert!(at2 == at && len2 < len, "{len2} bytes at {at2}");
    assert!(read_all(&*vdisk::open(&child, OpenOptions::default()).unwrap()) == expect);
    assert!(vdisk::check(&child).unwrap().clean);

    // --force adopts the stranger, says so, and the child opens over it.
    let w = vdisk::relink(&child, &stranger, true).unwrap();
    assert!(w.iter().any(|w| w.contains("DataWriteGuid")), "{w:?}");
    let got = read_all(&*vdisk::open(&child, OpenOptions::default()).unwrap());
    assert!(
        got[..2 << 20].iter().all(|&b| b == 0),
        "the stranger's zeros"
    );
    assert!(got[4 << 20..5 << 20].iter().all(|&b| b == 0xB1));
    assert!(vdisk::check(&child).unwrap().clean);
}
