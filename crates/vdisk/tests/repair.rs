//! `repair` fixes damaged footers, trailing garbage and BAT entries past the end
//! of the file, keeps every byte of data, and leaves images that check clean and
//! read the same in qemu-img.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use vdisk::{CreateOptions, OpenOptions};

mod common;

const SIZE: u64 = 12 << 20;

/// A dynamic VHD with data in blocks 0, 2 and 5 (2 MiB blocks), and its contents.
fn image(dir: &Path) -> (PathBuf, Vec<u8>) {
    let path = dir.join("r.vhd");
    vdisk::create(&path, SIZE, &CreateOptions::default(), false).unwrap();
    let mut model = vec![0u8; SIZE as usize];
    let mut d = vdisk::open(&path, OpenOptions { writable: true }).unwrap();
    for (i, off) in [(1u8, 4096u64), (2, 5 << 20), (3, (11 << 20) + 512)] {
        let buf = vec![i; 70_000];
        d.write_at(&buf, off).unwrap();
        model[off as usize..off as usize + buf.len()].copy_from_slice(&buf);
    }
    d.flush().unwrap();
    (path, model)
}

fn contents(path: &Path) -> Vec<u8> {
    let d = vdisk::open(path, OpenOptions::default()).unwrap();
    let mut b = vec![0u8; d.virtual_size() as usize];
    d.read_at(&mut b, 0).unwrap();
    b
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

fn poke(path: &Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn repaired_and_clean(path: &Path, dir: &Path, model: &[u8], expect: &[&str]) {
    assert!(
        !vdisk::check(path).unwrap().clean,
        "the damage was not noticed"
    );
    let done = vdisk::repair(path).unwrap();
    for e in expect {
        assert!(
            done.iter().any(|d| d.contains(e)),
            "no repair saying {e:?} in {done:?}"
        );
    }
    let report = vdisk::check(path).unwrap();
    assert!(report.clean, "after repair: {:?}", report.problems);
    assert!(contents(path) == model, "repair changed the data");
    assert!(
        common::qemu_contents(path, &dir.join("q.raw")) == model,
        "qemu-img reads other data after repair"
    );
    assert!(
        vdisk::repair(path).unwrap().is_empty(),
        "a second repair found more to do"
    );
}

#[test]
fn clean_image_needs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = image(dir.path());
    let before = std::fs::read(&path).unwrap();
    assert!(vdisk::repair(&path).unwrap().is_empty());
    assert!(std::fs::read(&path).unwrap() == before);
}

#[test]
fn damaged_footer_is_restored_from_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (path, model) = image(dir.path());
    poke(&path, len(&path) - 512 + 64, &[0xde, 0xad]);
    repaired_and_clean(
        &path,
        dir.path(),
        &model,
        &["restored the footer", "copy at offset 0"],
    );
}

#[test]
fn missing_footer_is_restored() {
    let dir = tempfile::tempdir().unwrap();
    let (path, model) = image(dir.path());
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len(&path) - 512).unwrap();
    repaired_and_clean(&path, dir.path(), &model, &["restored the footer"]);
}

#[test]
fn trailing_garbage_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (path, model) = image(dir.path());
    let before = len(&path);
    poke(&path, before, &[0x55; 10_000]);
    repaired_and_clean(&path, dir.path(), &model, &["cut off"]);
    assert_eq!(len(&path), before);
}

#[test]
fn damaged_copy_is_restored_from_the_footer() {
    let dir = tempfile::tempdir().unwrap();
    let (path, model) = image(dir.path());
    poke(&path, 40, &[9; 8]);
    repaired_and_clean(&path, dir.path(), &model, &["footer copy"]);
}

#[test]
fn bat_entry_past_the_end_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (path, model) = image(dir.path());
    // Point block 3 (never written) at a sector far past the end of the file.
    let table = 1536u64;
    poke(&path, table + 3 * 4, &0x0010_0000u32.to_be_bytes());
    repaired_and_clean(&path, dir.path(), &model, &["dropped BAT entry 3"]);
}

#[test]
fn compact_drops_zero_blocks_and_keeps_identity() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut model) = image(dir.path());
    // Zeros over all of block 2 (it stays allocated), and a hole of leaked space.
    {
        let mut d = vdisk::open(&path, OpenOptions { writable: true }).unwrap();
        d.write_at(&vec![0; 2 << 20], 4 << 20).unwrap();
        model[4 << 20..6 << 20].fill(0);
        d.flush().unwrap();
    }
    let before = vdisk::open(&path, OpenOptions::default())
        .unwrap()
        .info()
        .unwrap();
    let c = vdisk::vhd::compact::compact(&path, &mut |_, _| {}).unwrap();
    assert!(c.after < c.before, "{c:?}");
    let after = vdisk::open(&path, OpenOptions::default())
        .unwrap()
        .info()
        .unwrap();
    assert_eq!(after.allocated_bytes, before.allocated_bytes - (2 << 20));
    let (b, a) = (before.vhd.unwrap(), after.vhd.unwrap());
    assert_eq!(b.unique_id, a.unique_id);
    assert_eq!(b.timestamp, a.timestamp);
    assert!(contents(&path) == model);
    assert!(common::qemu_contents(&path, &dir.path().join("q.raw")) == model);
    assert!(vdisk::check(&path).unwrap().clean);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn compact_of_a_child_keeps_only_what_differs_from_the_parent() {
    let dir = tempfile::tempdir().unwrap();
    let (base, mut model) = image(dir.path());
    let child = dir.path().join("child.vhd");
    vdisk::create_child(&child, &base, 512 << 10, false).unwrap();
    let base_bytes = std::fs::read(&base).unwrap();
    {
        let mut d = vdisk::open(&child, OpenOptions { writable: true }).unwrap();
        // A copy of the parent's own data (redundant), zeros over zeros
        // (redundant), zeros over the parent's data (kept: they hide it),
        // and new data (kept), some of it sharing blocks with the rest.
        let copy = model[4096..4096 + 70_000].to_vec();
        d.write_at(&copy, 4096).unwrap();
        d.write_at(&vec![0; 1 << 20], 8 << 20).unwrap();
        d.write_at(&vec![0; 4096], 5 << 20).unwrap();
        model[5 << 20..(5 << 20) + 4096].fill(0);
        d.write_at(&vec![9; 3000], (8 << 20) + 1024).unwrap();
        model[(8 << 20) + 1024..(8 << 20) + 4024].fill(9);
        d.flush().unwrap();
    }
    assert!(contents(&child) == model);
    let before = vdisk::open(&child, OpenOptions::default())
        .unwrap()
        .info()
        .unwrap();
    let c = vdisk::vhd::compact::compact(&child, &mut |_, _| {}).unwrap();
    assert!(c.after < c.before, "{c:?}");
    let d = vdisk::open(&child, OpenOptions::default()).unwrap();
    let after = d.info().unwrap();
    let (b, a) = (before.vhd.unwrap(), after.vhd.unwrap());
    assert_eq!(b.unique_id, a.unique_id);
    assert_eq!(b.timestamp, a.timestamp);
    assert_eq!(b.parent.unwrap().unique_id, a.parent.unwrap().unique_id);
    // Only the hiding zeros and the new data are the child's own, by sector.
    let own = vdisk::vhd::VhdDisk::open(&child, false)
        .unwrap()
        .own_ranges()
        .unwrap();
    assert_eq!(own, vec![(5 << 20, 4096), ((8 << 20) + 1024, 3072)]);
    drop(d);
    assert!(contents(&child) == model);
    assert!(vdisk::check(&child).unwrap().clean);
    assert!(
        std::fs::read(&base).unwrap() == base_bytes,
        "the parent changed"
    );
    // The relative locator still leads to the parent after the chain moves.
    let moved = dir.path().join("moved");
    std::fs::create_dir(&moved).unwrap();
    for f in ["r.vhd", "child.vhd"] {
        std::fs::rename(dir.path().join(f), moved.join(f)).unwrap();
    }
    assert!(contents(&moved.join("child.vhd")) == model);
}

fn qemu_size(path: &Path) -> u64 {
    let out = std::process::Command::new("qemu-img")
        .args(["info", "-f", "vpc", "--output", "json"])
        .arg(path)
        .output()
        .expect("qemu-img must be installed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("qemu-img info JSON");
    v["virtual-size"].as_u64().expect("virtual-size")
}

#[test]
fn resize_grows_and_shrinks_dynamic_and_fixed() {
    for (kind, name) in [
        (vdisk::ImageType::Dynamic, "d.vhd"),
        (vdisk::ImageType::Fixed, "f.vhd"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        let opts = CreateOptions {
            image_type: kind,
            block_size: Some(64 << 10),
            ..CreateOptions::default()
        };
        vdisk::create(&path, 1 << 20, &opts, false).unwrap();
        let mut model = vec![0u8; 1 << 20];
        {
            let mut d = vdisk::open(&path, OpenOptions { writable: true }).unwrap();
            d.write_at(&[7; 5000], 1000).unwrap();
            model[1000..6000].fill(7);
            d.flush().unwrap();
        }
        // Growing far past the BAT's room: 16 entries become 1600.
        // The second step moves the table again; the third fits in its last sector.
        for size in [
            100 << 20,
            (100 << 20) + 512 * 7,
            (100 << 20) + (64 << 10) + 512 * 7,
        ] {
            vdisk::vhd::resize::resize(&path, size, false).unwrap();
            model.resize(size as usize, 0);
            assert_eq!(qemu_size(&path), size, "{name}");
            assert!(
                contents(&path) == model,
                "{name}: grown disk reads differently"
            );
            assert!(
                vdisk::check(&path).unwrap().clean,
                "{name}: {:?}",
                vdisk::check(&path).unwrap().problems
            );
        }
        // Writes at the new end land.
        {
            let mut d = vdisk::open(&path, OpenOptions { writable: true }).unwrap();
            let end = d.virtual_size();
            d.write_at(&[9; 512], end - 512).unwrap();
            d.write_at(&[8; 512], 50 << 20).unwrap();
            d.flush().unwrap();
            let n = model.len();
            model[n - 512..].fill(9);
            model[50 << 20..(50 << 20) + 512].fill(8);
        }
        assert!(
            common::qemu_contents(&path, &dir.path().join("q.raw")) == model,
            "{name}"
        );
        // Shrinking over data is refused, then forced; shrinking over nothing is fine.
        let e = vdisk::vhd::resize::resize(&path, 10 << 20, false)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("holds data") && e.contains(&(50u64 << 20).to_string()),
            "{e}"
        );
        vdisk::vhd::resize::resize(&path, 10 << 20, true).unwrap();
        model.truncate(10 << 20);
        assert!(
            contents(&path) == model,
            "{name}: shrunk disk reads differently"
        );
        vdisk::vhd::resize::resize(&path, 2 << 20, false).unwrap();
        model.truncate(2 << 20);
        assert_eq!(qemu_size(&path), 2 << 20);
        assert!(contents(&path) == model);
        assert!(
            common::qemu_contents(&path, &dir.path().join("q.raw")) == model,
            "{name}"
        );
        assert!(
            vdisk::check(&path).unwrap().clean,
            "{name}: {:?}",
            vdisk::check(&path).unwrap().problems
        );
    }
}
