//! vmhub against real peers: qemu-img and qemu-io (QEMU 10) and libvhdi's
//! vhdiinfo. Every size, type and byte vmhub reports or writes must be what the
//! peers read, and every image the peers write must read the same in vmhub.
//!
//! A missing peer fails the test rather than skipping it: a pass must mean the
//! comparison was made.

#[allow(dead_code)]
mod common;

use std::collections::BTreeSet;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use common::*;
use tempfile::TempDir;

fn tempdir() -> TempDir {
    tempfile::tempdir().expect("cannot create a temporary directory")
}

// ---------------------------------------------------------------------------
// Sizes are exact for every reader.
// ---------------------------------------------------------------------------

/// Creates a fixed and a dynamic VHD of `size_arg` and checks that vmhub,
/// qemu-img and vhdiinfo all read `expected` bytes and the same type.
fn assert_created_size_everywhere(size_arg: &str, expected: u64) {
    let dir = tempdir();
    for kind in ["fixed", "dynamic"] {
        let path = dir.path().join(format!("{kind}.vhd"));
        vmhub_ok(["img", "create", p(&path), size_arg, "--type", kind]);

        let ours = vmhub_info(&path);
        assert_eq!(str_field(&ours, "format"), "vhd", "vmhub: {ours}");
        assert_eq!(str_field(&ours, "type"), kind, "vmhub: {ours}");
        assert_eq!(
            u64_field(&ours, "virtual-size"),
            expected,
            "vmhub's virtual size of a {kind} VHD created as {size_arg}"
        );

        let qemu = qemu_info(&path);
        assert_eq!(str_field(&qemu, "format"), "vpc", "qemu-img: {qemu}");
        assert_eq!(
            u64_field(&qemu, "virtual-size"),
            expected,
            "qemu-img's virtual size of a {kind} VHD created as {size_arg}"
        );
        // qemu-img prints no format-specific section for vpc; the type shows in
        // whether it reports a cluster size, which it does only for dynamic disks.
        match kind {
            "dynamic" => assert_eq!(
                qemu["cluster-size"].as_u64(),
                Some(BLOCK),
                "qemu-img sees no 2 MiB blocks in a dynamic VHD: {qemu}"
            ),
            _ => assert!(
                qemu.get("cluster-size").is_none(),
                "qemu-img sees blocks in a fixed VHD: {qemu}"
            ),
        }

        let vhdi = vhdiinfo(&path);
        assert_eq!(
            vhdi.media_size, expected,
            "vhdiinfo's media size of a {kind} VHD created as {size_arg}"
        );
        let expected_type = if kind == "fixed" { "Fixed" } else { "Dynamic" };
        assert_eq!(vhdi.disk_type, expected_type, "vhdiinfo's disk type");

        let file_len = fs::metadata(&path).unwrap().len();
        if kind == "fixed" {
            assert_eq!(
                file_len,
                expected + SECTOR,
                "a fixed VHD is its data followed by a 512-byte footer"
            );
        } else {
            assert!(
                file_len < MIB,
                "an empty dynamic VHD of {expected} bytes should be metadata only, \
                 but the file is {file_len} bytes"
            );
        }
    }
}

#[test]
fn create_50m_is_52428800_bytes_for_vmhub_qemu_and_libvhdi() {
    assert_created_size_everywhere("50M", 50 * MIB);
}

#[test]
fn create_1000000000_is_exact_for_vmhub_qemu_and_libvhdi() {
    assert_created_size_everywhere("1000000000", 1_000_000_000);
}

#[test]
fn create_4g_is_exact_for_vmhub_qemu_and_libvhdi() {
    assert_created_size_everywhere("4G", 4 * GIB);
}

#[test]
fn create_compat_vpc_rounds_up_as_qemu_does() {
    let dir = tempdir();

    // qemu-img without force_size rounds to a whole CHS geometry the way Virtual
    // PC does; --compat vpc must land on the same size.
    let reference = dir.path().join("qemu.vhd");
    peer_ok(
        "qemu-img",
        ["create", "-q", "-f", "vpc", p(&reference), "50M"],
    );
    let qemu_rounded = u64_field(&qemu_info(&reference), "virtual-size");
    assert_eq!(qemu_rounded, 52_432_896, "qemu-img's rounding of 50M");

    for kind in ["fixed", "dynamic"] {
        let path = dir.path().join(format!("{kind}.vhd"));
        let out = vmhub_ok([
            "img",
            "create",
            p(&path),
            "50M",
            "--type",
            kind,
            "--compat",
            "vpc",
        ]);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            said.contains("52428800") && said.contains("52432896"),
            "--compat vpc should say it rounded 52428800 up to 52432896: {said}"
        );

        let ours = u64_field(&vmhub_info(&path), "virtual-size");
        let qemu = u64_field(&qemu_info(&path), "virtual-size");
        let vhdi = vhdiinfo(&path).media_size;
        assert_eq!(ours, qemu_rounded, "vmhub, {kind} --compat vpc");
        assert_eq!(qemu, qemu_rounded, "qemu-img, {kind} --compat vpc");
        assert_eq!(vhdi, qemu_rounded, "vhdiinfo, {kind} --compat vpc");
    }
}

// ---------------------------------------------------------------------------
// Images vmhub converts read equal in qemu-img.
// ---------------------------------------------------------------------------

/// Not a whole number of blocks, so the last block of a dynamic VHD is partial.
const SRC_SIZE: u64 = 30 * MIB + 3 * SECTOR;
/// Written as real zero bytes, not a hole: a dynamic output must still not
/// allocate it, and a raw output must leave it a hole.
const SRC_ZEROS: Range<u64> = 12 * MIB..18 * MIB;

/// A raw source image and the bytes it holds.
struct Source {
    path: PathBuf,
    bytes: Vec<u8>,
}

fn make_source(dir: &Path) -> Source {
    let runs: &[(u64, u64)] = &[
        // The first sector, where a partition table lives.
        (0, 4 * KIB),
        // Start and length both unaligned.
        (1_000_003, 777),
        // Straddles the boundary between blocks 0 and 1 by a few bytes.
        (2 * MIB - 7, 16),
        // Straddles the boundary between blocks 1 and 2.
        (4 * MIB - 1000, 4000),
        (5 * MIB + 1, 3),
        (9 * MIB + 12_345, 70_000),
        (28 * MIB + 4096, 512),
        // The last sector, in the partial last block.
        (SRC_SIZE - SECTOR, SECTOR),
    ];
    let mut rng = Rng::new(0x766d_6875_6200_0001);
    let mut bytes = vec![0u8; SRC_SIZE as usize];
    for &(offset, len) in runs {
        assert!(
            offset + len <= SRC_ZEROS.start || offset >= SRC_ZEROS.end,
            "data run at {offset} would overwrite the zero region"
        );
        rng.fill(&mut bytes[offset as usize..(offset + len) as usize]);
    }

    let path = dir.join("source.raw");
    let file = fs::File::create(&path).unwrap();
    file.set_len(SRC_SIZE).unwrap();
    drop(file);
    for &(offset, len) in runs {
        write_at(
            &path,
            offset,
            &bytes[offset as usize..(offset + len) as usize],
        );
    }
    let zeros = vec![0u8; (SRC_ZEROS.end - SRC_ZEROS.start) as usize];
    write_at(&path, SRC_ZEROS.start, &zeros);
    assert!(
        host_allocated(&path) >= zeros.len() as u64,
        "the file system did not store the explicit zeros of {}, so the test \
         would not show that zero data stays unallocated",
        path.display()
    );
    Source { path, bytes }
}

/// Blocks holding at least one non-zero byte: exactly those a dynamic VHD
/// converted from `bytes` should allocate.
fn nonzero_blocks(bytes: &[u8], block: u64) -> BTreeSet<u64> {
    bytes
        .chunks(block as usize)
        .enumerate()
        .filter(|(_, chunk)| chunk.iter().any(|&b| b != 0))
        .map(|(i, _)| i as u64)
        .collect()
}

fn assert_dynamic_allocates_only_data(vhd: &Path, src: &Source) {
    let map = vmhub_map(vhd);
    for e in map.iter().filter(|e| e.kind == "data") {
        assert!(
            e.offset + e.length <= SRC_ZEROS.start || e.offset >= SRC_ZEROS.end,
            "{}: the zero region {SRC_ZEROS:?} of the source is allocated as data: {e:?}",
            vhd.display()
        );
    }
    assert_eq!(
        data_blocks(&map, SRC_SIZE, BLOCK),
        nonzero_blocks(&src.bytes, BLOCK),
        "{}: blocks mapped as data are not the source's non-zero blocks; map: {map:?}",
        vhd.display()
    );
    let info = vmhub_info(vhd);
    // Allocated blocks may hold host holes, which map shows as zero.
    let mapped: u64 = map
        .iter()
        .filter(|e| e.kind != "unallocated")
        .map(|e| e.length)
        .sum();
    assert_eq!(
        u64_field(&info, "allocated-bytes"),
        mapped,
        "{}: info's allocated-bytes disagrees with map",
        vhd.display()
    );
}

fn assert_vmhub_check_clean(path: &Path) {
    let out = vmhub(["img", "check", p(path)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "vmhub img check {} is not clean: {}",
        path.display(),
        describe(&out)
    );
}

fn assert_sizes(path: &Path, expected: u64) {
    assert_eq!(
        u64_field(&vmhub_info(path), "virtual-size"),
        expected,
        "vmhub's virtual size of {}",
        path.display()
    );
    assert_eq!(
        u64_field(&qemu_info(path), "virtual-size"),
        expected,
        "qemu-img's virtual size of {}",
        path.display()
    );
}

#[test]
fn convert_raw_to_dynamic_vhd_reads_equal_in_qemu() {
    let dir = tempdir();
    let src = make_source(dir.path());
    let vhd = dir.path().join("dynamic.vhd");
    vmhub_ok(["img", "convert", p(&src.path), p(&vhd)]);

    assert_eq!(str_field(&vmhub_info(&vhd), "type"), "dynamic");
    assert_sizes(&vhd, SRC_SIZE);
    assert_qemu_equal("raw", &src.path, "vpc", &vhd);
    assert_dynamic_allocates_only_data(&vhd, &src);
    assert_vmhub_check_clean(&vhd);
}

#[test]
fn convert_raw_to_fixed_vhd_reads_equal_in_qemu() {
    let dir = tempdir();
    let src = make_source(dir.path());
    let vhd = dir.path().join("fixed.vhd");
    vmhub_ok(["img", "convert", p(&src.path), p(&vhd), "--type", "fixed"]);

    assert_eq!(str_field(&vmhub_info(&vhd), "type"), "fixed");
    assert_eq!(fs::metadata(&vhd).unwrap().len(), SRC_SIZE + SECTOR);
    assert_sizes(&vhd, SRC_SIZE);
    assert_qemu_equal("raw", &src.path, "vpc", &vhd);
    assert_vmhub_check_clean(&vhd);
}

#[test]
fn convert_vhd_to_raw_gives_back_the_source_bytes() {
    let dir = tempdir();
    let src = make_source(dir.path());

    let vmhub_dynamic = dir.path().join("vmhub-dynamic.vhd");
    vmhub_ok(["img", "convert", p(&src.path), p(&vmhub_dynamic)]);
    let vmhub_fixed = dir.path().join("vmhub-fixed.vhd");
    vmhub_ok([
        "img",
        "convert",
        p(&src.path),
        p(&vmhub_fixed),
        "--type",
        "fixed",
    ]);
    // A VHD qemu wrote, so a reader bug cannot hide behind the same writer bug.
    let qemu_dynamic = dir.path().join("qemu-dynamic.vhd");
    peer_ok(
        "qemu-img",
        [
            "convert",
            "-f",
            "raw",
            "-O",
            "vpc",
            "-o",
            "subformat=dynamic,force_size=on",
            p(&src.path),
            p(&qemu_dynamic),
        ],
    );

    for vhd in [&vmhub_dynamic, &vmhub_fixed, &qemu_dynamic] {
        let raw = vhd.with_extension("raw");
        vmhub_ok(["img", "convert", p(vhd), p(&raw), "--format", "raw"]);
        assert_file_equals(&raw, &src.bytes);
        assert_qemu_equal("vpc", vhd, "raw", &raw);
        let held = host_allocated(&raw);
        assert!(
            held < (SRC_ZEROS.end - SRC_ZEROS.start) / 2,
            "{} holds {held} bytes on disk: its zero runs were written, not left as holes",
            raw.display()
        );
    }
}

#[test]
fn convert_between_dynamic_and_fixed_reads_equal_in_qemu() {
    let dir = tempdir();
    let src = make_source(dir.path());
    let dynamic = dir.path().join("dynamic.vhd");
    vmhub_ok(["img", "convert", p(&src.path), p(&dynamic)]);

    let fixed = dir.path().join("fixed.vhd");
    vmhub_ok(["img", "convert", p(&dynamic), p(&fixed), "--type", "fixed"]);
    assert_eq!(str_field(&vmhub_info(&fixed), "type"), "fixed");
    assert_sizes(&fixed, SRC_SIZE);
    assert_qemu_equal("vpc", &dynamic, "vpc", &fixed);
    assert_qemu_equal("raw", &src.path, "vpc", &fixed);
    assert_vmhub_check_clean(&fixed);

    let dynamic_again = dir.path().join("dynamic-again.vhd");
    vmhub_ok(["img", "convert", p(&fixed), p(&dynamic_again)]);
    assert_qemu_equal("raw", &src.path, "vpc", &dynamic_again);
    assert_dynamic_allocates_only_data(&dynamic_again, &src);
    assert_vmhub_check_clean(&dynamic_again);
}

// ---------------------------------------------------------------------------
// Images qemu writes read the same in vmhub.
// ---------------------------------------------------------------------------

/// Writes at a 64 KiB-aligned offset, across a 2 MiB block boundary, at
/// sector- but not 4 KiB-aligned offsets, far into the disk, and in the last
/// sector. Gaps between them stay zero, which `assert_raw_holds_writes` checks.
fn writes_for(virtual_size: u64) -> Vec<Write> {
    let mut writes = vec![
        Write {
            pattern: 0xab,
            offset: MIB,
            len: 64 * KIB,
        },
        Write {
            pattern: 0x5c,
            offset: 2 * MIB - SECTOR,
            len: 2 * SECTOR,
        },
        Write {
            pattern: 0x3d,
            offset: 7 * MIB + 3 * SECTOR,
            len: 9 * SECTOR,
        },
        Write {
            pattern: 0xe7,
            offset: 33 * MIB + SECTOR,
            len: SECTOR,
        },
    ];
    if virtual_size > 900 * MIB {
        writes.push(Write {
            pattern: 0x42,
            offset: 900_000_256,
            len: 5 * SECTOR,
        });
    }
    writes.push(Write {
        pattern: 0x11,
        offset: virtual_size - SECTOR,
        len: SECTOR,
    });
    writes
}

/// After qemu-io wrote `writes` into `vhd`: vmhub sees qemu's size, checks the
/// image clean, compares it equal to qemu's raw reading, and converts it to the
/// same raw bytes.
fn assert_vmhub_reads_as_qemu(vhd: &Path, writes: &[Write]) {
    let qemu_size = u64_field(&qemu_info(vhd), "virtual-size");
    assert_eq!(
        u64_field(&vmhub_info(vhd), "virtual-size"),
        qemu_size,
        "vmhub and qemu-img disagree on the virtual size of {}",
        vhd.display()
    );
    assert_vmhub_check_clean(vhd);

    let qemu_raw = vhd.with_extension("qemu.raw");
    peer_ok(
        "qemu-img",
        ["convert", "-f", "vpc", "-O", "raw", p(vhd), p(&qemu_raw)],
    );
    assert_raw_holds_writes(&qemu_raw, writes);
    let out = vmhub(["img", "compare", p(vhd), p(&qemu_raw)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "vmhub img compare finds {} different from qemu's reading of it: {}",
        vhd.display(),
        describe(&out)
    );

    let vmhub_raw = vhd.with_extension("vmhub.raw");
    vmhub_ok(["img", "convert", p(vhd), p(&vmhub_raw), "--format", "raw"]);
    assert_eq!(
        fs::metadata(&vmhub_raw).unwrap().len(),
        qemu_size,
        "vmhub's raw conversion of {} has the wrong length",
        vhd.display()
    );
    assert_raw_holds_writes(&vmhub_raw, writes);
    assert_qemu_equal("raw", &qemu_raw, "raw", &vmhub_raw);
}

fn assert_qemu_made_images_read_equal(subformat: &str) {
    let dir = tempdir();
    for force_size in ["on", "off"] {
        for (size_arg, requested) in [("50M", 50 * MIB), ("1000000000", 1_000_000_000)] {
            let vhd = dir
                .path()
                .join(format!("{subformat}-force-{force_size}-{size_arg}.vhd"));
            let options = format!("subformat={subformat},force_size={force_size}");
            peer_ok(
                "qemu-img",
                [
                    "create",
                    "-q",
                    "-f",
                    "vpc",
                    "-o",
                    &options,
                    p(&vhd),
                    size_arg,
                ],
            );
            let size = u64_field(&qemu_info(&vhd), "virtual-size");
            if force_size == "on" {
                assert_eq!(size, requested, "qemu-img with force_size=on");
            } else {
                assert!(size >= requested, "qemu-img rounds up, never down");
            }
            let expected_type = if subformat == "fixed" {
                "fixed"
            } else {
                "dynamic"
            };
            assert_eq!(
                str_field(&vmhub_info(&vhd), "type"),
                expected_type,
                "vmhub's type for {}",
                vhd.display()
            );
            let writes = writes_for(size);
            qemu_io_write(&vhd, &writes);
            assert_vmhub_reads_as_qemu(&vhd, &writes);
        }
    }
}

#[test]
fn qemu_made_fixed_vhds_read_equal_in_vmhub() {
    assert_qemu_made_images_read_equal("fixed");
}

#[test]
fn qemu_made_dynamic_vhds_read_equal_in_vmhub() {
    assert_qemu_made_images_read_equal("dynamic");
}

#[test]
fn vmhub_made_vhds_written_by_qemu_stay_clean_and_read_equal() {
    let dir = tempdir();
    let variants: &[(&str, &[&str])] = &[
        ("dynamic", &[]),
        ("dynamic-64k-blocks", &["--block-size", "64K"]),
        ("fixed", &["--type", "fixed"]),
    ];
    for (name, extra) in variants {
        let vhd = dir.path().join(format!("{name}.vhd"));
        let mut args = vec!["img", "create", p(&vhd), "50M"];
        args.extend_from_slice(extra);
        vmhub_ok(&args);

        let writes = writes_for(50 * MIB);
        qemu_io_write(&vhd, &writes);
        assert_vmhub_reads_as_qemu(&vhd, &writes);
        // qemu rewrites the footer when it appends blocks; the size must survive.
        assert_eq!(vhdiinfo(&vhd).media_size, 50 * MIB, "{name} after qemu-io");
    }
}

// ---------------------------------------------------------------------------
// Exit codes and refusals.
// ---------------------------------------------------------------------------

/// A dynamic VHD with some data, made by vmhub, and the raw file it came from.
fn small_dynamic(dir: &Path) -> (PathBuf, PathBuf) {
    let raw = dir.join("small.raw");
    let mut bytes = vec![0u8; (8 * MIB) as usize];
    Rng::new(7).fill(&mut bytes[3 * MIB as usize..4 * MIB as usize]);
    fs::write(&raw, &bytes).unwrap();
    let vhd = dir.join("small.vhd");
    vmhub_ok(["img", "convert", p(&raw), p(&vhd)]);
    (vhd, raw)
}

fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn check_exits_0_clean_2_corrupt_1_missing() {
    let dir = tempdir();
    let (vhd, _) = small_dynamic(dir.path());
    assert_vmhub_check_clean(&vhd);

    // Byte 64 of the footer is the first byte of its checksum (VHD spec, Hard
    // Disk Footer Format); the end footer is the last sector of the file.
    let len = fs::metadata(&vhd).unwrap().len();
    let at = len - SECTOR + 64;
    let file = fs::File::open(&vhd).unwrap();
    let old = read_at(&file, at, 1)[0];
    drop(file);
    write_at(&vhd, at, &[!old]);

    let out = vmhub(["img", "check", p(&vhd)]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a footer with a bad checksum must make check report corruption, even \
         though the footer copy at offset 0 is intact: {}",
        describe(&out)
    );
    assert!(
        output_text(&out).to_lowercase().contains("checksum"),
        "check should say the checksum is wrong: {}",
        describe(&out)
    );
    let json_out = vmhub(["img", "check", p(&vhd), "--output", "json"]);
    assert_eq!(json_out.status.code(), Some(2), "{}", describe(&json_out));
    let json: serde_json::Value = serde_json::from_slice(&json_out.stdout)
        .unwrap_or_else(|e| panic!("check --output json: {e}: {}", describe(&json_out)));
    assert_eq!(json["clean"], false, "{json}");
    assert!(
        json["problems"].as_array().is_some_and(|p| !p.is_empty()),
        "check --output json lists no problem: {json}"
    );

    let missing = dir.path().join("missing.vhd");
    let out = vmhub(["img", "check", p(&missing)]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "check of a missing file: {}",
        describe(&out)
    );
}

/// Decimal numbers in a text, to find an offset whatever the wording around it.
fn numbers_in(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect()
}

#[test]
fn compare_exits_0_identical_1_different_at_first_offset_2_missing() {
    let dir = tempdir();
    let (vhd, raw) = small_dynamic(dir.path());

    let out = vmhub(["img", "compare", p(&vhd), p(&raw)]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    // Two differences, the first one unaligned and inside the data block, the
    // second later: only the first may be reported.
    let first = 3 * MIB + 12_345;
    let second = 6 * MIB + 777;
    let changed = dir.path().join("changed.raw");
    fs::copy(&raw, &changed).unwrap();
    let file = fs::File::open(&changed).unwrap();
    let (a, b) = (read_at(&file, first, 1)[0], read_at(&file, second, 1)[0]);
    drop(file);
    write_at(&changed, first, &[!a]);
    write_at(&changed, second, &[!b]);

    let out = vmhub(["img", "compare", p(&vhd), p(&changed)]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let numbers = numbers_in(&output_text(&out));
    assert!(
        numbers.contains(&first),
        "compare should print the first differing offset {first}: {}",
        describe(&out)
    );
    assert!(
        !numbers.contains(&second),
        "compare printed the later difference {second}, not only the first: {}",
        describe(&out)
    );

    // A larger image whose extra part is zeros is equal, unless --strict.
    let longer = dir.path().join("longer.raw");
    fs::copy(&raw, &longer).unwrap();
    let file = fs::OpenOptions::new().write(true).open(&longer).unwrap();
    file.set_len(9 * MIB).unwrap();
    drop(file);
    let out = vmhub(["img", "compare", p(&vhd), p(&longer)]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let out = vmhub(["img", "compare", "--strict", p(&vhd), p(&longer)]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));

    let missing = dir.path().join("missing.raw");
    let out = vmhub(["img", "compare", p(&vhd), p(&missing)]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        output_text(&out).contains(p(&missing)),
        "the error should name {}: {}",
        missing.display(),
        describe(&out)
    );
}

const PRECIOUS: &[u8] = b"not a disk image, and not to be overwritten\n";

#[test]
fn create_refuses_to_overwrite_without_force() {
    let dir = tempdir();
    let path = dir.path().join("existing.vhd");
    fs::write(&path, PRECIOUS).unwrap();

    let out = vmhub(["img", "create", p(&path), "50M"]);
    assert!(
        !out.status.success(),
        "create replaced an existing file without --force: {}",
        describe(&out)
    );
    assert_eq!(fs::read(&path).unwrap(), PRECIOUS, "the file was changed");

    vmhub_ok(["img", "create", p(&path), "50M", "--force"]);
    assert_eq!(u64_field(&vmhub_info(&path), "virtual-size"), 50 * MIB);
}

#[test]
fn convert_refuses_to_overwrite_without_force() {
    let dir = tempdir();
    let (vhd, _) = small_dynamic(dir.path());
    let target = dir.path().join("existing.raw");
    fs::write(&target, PRECIOUS).unwrap();

    let out = vmhub(["img", "convert", p(&vhd), p(&target), "--format", "raw"]);
    assert!(
        !out.status.success(),
        "convert replaced an existing file without --force: {}",
        describe(&out)
    );
    assert_eq!(fs::read(&target).unwrap(), PRECIOUS, "the file was changed");
}

#[test]
fn info_on_a_missing_file_or_directory_fails_naming_it() {
    let dir = tempdir();
    let missing = dir.path().join("missing.vhd");
    let directory = dir.path().join("a-directory");
    fs::create_dir(&directory).unwrap();

    for path in [&missing, &directory] {
        let out = vmhub(["img", "info", p(path)]);
        assert!(
            !out.status.success(),
            "info on {} succeeded: {}",
            path.display(),
            describe(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(p(path)),
            "the error should name {}: {}",
            path.display(),
            describe(&out)
        );
    }
}

#[test]
fn create_rejects_bad_sizes() {
    let dir = tempdir();
    // An unknown suffix, nothing, and more than the VHD maximum of 2040 GiB.
    for size in ["12Q", "0", "2041G"] {
        let path = dir.path().join("bad.vhd");
        let out = vmhub(["img", "create", p(&path), size]);
        assert!(
            !out.status.success(),
            "create accepted the size {size}: {}",
            describe(&out)
        );
        assert!(
            !path.exists(),
            "create left a file behind after rejecting {size}"
        );
    }
}
