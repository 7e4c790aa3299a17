//! ext2/ext4 images made by mke2fs, read back through vfs and compared with
//! the tree they were made from; free space checked against e2fsprogs; damaged
//! copies must give errors, never panics.

// Not every helper is used here.
#[allow(dead_code)]
mod common;

use common::{noise, open_volume as open, read_all, run, same_tree, to_dynamic_vhd, xorshift};
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use vfs::EntryKind;

const LONG: &str = "a-rather-long-file-name-that-goes-on-and-on-well-past-the-eight-dot-three-limit-of-old-filesystems-and-keeps-going-to-check-that-nothing-truncates-it-anywhere-along-the-way.txt";

/// The source tree: nested directories, long and non-ASCII names, an empty
/// file, a few MiB of noise, a sparse file and links.
///
/// ext4-view 1.0 fails on block-mapped (ext2/3) files whose holes cover a
/// whole indirect block, so `big_hole` is false for ext2.
fn make_tree(root: &Path, big_hole: bool) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::create_dir_all(root.join("données/日本語")).unwrap();
    fs::write(root.join("hello.txt"), b"hello, world\n").unwrap();
    fs::write(root.join("a/b/c/deep.txt"), b"deep inside\n").unwrap();
    fs::write(root.join("a/empty"), b"").unwrap();
    fs::write(root.join(LONG), b"long name\n").unwrap();
    fs::write(root.join("données/日本語/ñandú.txt"), "ünïcödé\n").unwrap();
    fs::write(root.join("a/big.bin"), noise(3 << 20 | 12345, 7)).unwrap();
    let mut sparse = fs::File::create(root.join("sparse.img")).unwrap();
    sparse.write_all(b"start").unwrap();
    sparse
        .seek(SeekFrom::Start(if big_hole { 9 << 20 } else { 8 << 10 }))
        .unwrap();
    sparse.write_all(b"end").unwrap();
    drop(sparse);
    fs::set_permissions(root.join("hello.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("a/b/c/deep.txt", root.join("rel-link")).unwrap();
    std::os::unix::fs::symlink("/etc/nowhere", root.join("a/abs-link")).unwrap();
}

fn mkfs(dir: &Path, kind: &str, src: &Path) -> PathBuf {
    let img = dir.join(format!("{kind}.raw"));
    run(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            kind,
            "-d",
            src.to_str().unwrap(),
            "-L",
            "VMHUBTEST",
            img.to_str().unwrap(),
            "64M",
        ],
    );
    img
}

fn check_volume(img: &Path, src: &Path, kind: vfs::FsKind, work: &Path) {
    let mut vol = open(img).unwrap();
    assert_eq!(vol.kind(), kind);
    assert_eq!(vol.label().as_deref(), Some("VMHUBTEST"));
    let root = vol.stat("/").unwrap();
    assert_eq!((root.name.as_str(), root.kind), ("/", EntryKind::Dir));
    common::compare(vol.as_mut(), "/", src, true);
    assert!(matches!(vol.stat("/no/such"), Err(vfs::Error::NotFound(_))));
    assert!(matches!(vol.list("/hello.txt"), Err(vfs::Error::NotDir(_))));
    assert!(matches!(
        vol.read_file("/a", &mut Vec::new()),
        Err(vfs::Error::IsDir(_))
    ));
    assert!(vol.read_link("/hello.txt").is_err());
    assert!(vol.write_file("/x", &mut &b""[..], 0).is_err());
    let out = work.join(format!("out-{kind}"));
    let done = vfs::extract::extract(vol.as_mut(), "/", &out).unwrap();
    assert_eq!(done.links, 2);
    // mke2fs -d adds lost+found.
    fs::remove_dir(out.join("lost+found")).ok();
    fs::create_dir(src.join("lost+found")).ok();
    fs::remove_dir(src.join("lost+found")).unwrap();
    same_tree(src, &out);
}

/// The tree with lost+found, as mke2fs writes it, for comparing listings.
fn tree(dir: &Path, big_hole: bool) -> PathBuf {
    let src = dir.join("src");
    make_tree(&src, big_hole);
    src
}

#[test]
fn ext2_tree_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), false);
    let img = mkfs(dir.path(), "ext2", &src);
    check_with_lost_found(&img, &src, vfs::FsKind::Ext2, dir.path());
}

#[test]
fn ext4_tree_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), true);
    let img = mkfs(dir.path(), "ext4", &src);
    check_with_lost_found(&img, &src, vfs::FsKind::Ext4, dir.path());
}

/// Adds the lost+found mke2fs made to the local tree `src`, then checks the
/// volume in `img` against it (see [`check_volume`]).
fn check_with_lost_found(img: &Path, src: &Path, kind: vfs::FsKind, work: &Path) {
    fs::create_dir(src.join("lost+found")).unwrap();
    fs::set_permissions(src.join("lost+found"), fs::Permissions::from_mode(0o700)).unwrap();
    sync_lost_found(img, src);
    check_volume(img, src, kind, work);
}

/// Gives the local lost+found the time mke2fs gave the image's.
fn sync_lost_found(img: &Path, src: &Path) {
    let mut vol = open(img).unwrap();
    let lf = vol.stat("/lost+found").unwrap();
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(lf.modified.unwrap() as u64);
    fs::File::open(src.join("lost+found"))
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[test]
fn ext4_in_a_dynamic_vhd_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), true);
    let raw = mkfs(dir.path(), "ext4", &src);
    let vhd = dir.path().join("ext4.vhd");
    to_dynamic_vhd(&raw, &vhd);
    check_with_lost_found(&vhd, &src, vfs::FsKind::Ext4, dir.path());
}

/// Block ranges e2fsprogs lists as free ("Free blocks: 10-20, 30").
fn dumpe2fs_free(img: &Path) -> Vec<(u64, u64)> {
    let text = run("dumpe2fs", &[img.to_str().unwrap()]);
    let mut out: Vec<(u64, u64)> = Vec::new();
    for line in text.lines() {
        let Some(list) = line.strip_prefix("  Free blocks: ") else {
            continue;
        };
        for r in list.split(", ").filter(|r| !r.is_empty()) {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
            // Join ranges that continue across a group boundary.
            match out.last_mut() {
                Some(last) if last.1 + 1 == a => last.1 = b,
                _ => out.push((a, b)),
            }
        }
    }
    out
}

fn superblock_field(img: &Path, field: &str) -> u64 {
    let text = run("dumpe2fs", &["-h", img.to_str().unwrap()]);
    let line = text.lines().find(|l| l.starts_with(field)).unwrap();
    line.split(':').nth(1).unwrap().trim().parse().unwrap()
}

fn check_free_ranges(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), kind != "ext2");
    let img = mkfs(dir.path(), kind, &src);
    let bs = superblock_field(&img, "Block size:");
    let free_count = superblock_field(&img, "Free blocks:");
    let mut vol = open(&img).unwrap();
    let ranges = vol.free_ranges().unwrap();
    assert!(!ranges.is_empty());
    let free = dumpe2fs_free(&img);
    let mut total = 0;
    let mut last_end = 0;
    for &(off, len) in &ranges {
        assert!(off >= last_end, "ranges sorted and apart");
        assert_eq!((off % bs, len % bs), (0, 0));
        last_end = off + len;
        let (first, last) = (off / bs, (off + len) / bs - 1);
        total += last - first + 1;
        assert!(
            free.iter().any(|&(a, b)| a <= first && last <= b),
            "blocks {first}-{last} reported free, but e2fsprogs says they are not all free"
        );
    }
    assert!(
        total <= free_count,
        "{total} free blocks reported, superblock says {free_count}"
    );
    // Most of the free space is found (BLOCK_UNINIT groups may be left out).
    assert!(total * 2 > free_count, "{total} of {free_count}");
    // Blocks of files are never among them.
    for file in ["/a/big.bin", "/sparse.img", "/hello.txt"] {
        let blocks = run(
            "debugfs",
            &["-R", &format!("blocks {file}"), img.to_str().unwrap()],
        );
        let blocks: Vec<u64> = blocks
            .split_whitespace()
            .map(|b| b.parse().unwrap())
            .collect();
        assert!(!blocks.is_empty(), "{file}");
        for b in blocks {
            let at = b * bs;
            assert!(
                !ranges.iter().any(|&(o, l)| o <= at && at < o + l),
                "block {b} of {file} reported free"
            );
        }
    }
}

#[test]
fn ext4_free_ranges_are_free() {
    check_free_ranges("ext4");
}

#[test]
fn ext2_free_ranges_are_free() {
    check_free_ranges("ext2");
}

fn damaged(good: &Path, dir: &Path, name: &str, at: u64, bytes: &[u8]) -> PathBuf {
    let copy = dir.join(name);
    fs::copy(good, &copy).unwrap();
    let mut f = fs::OpenOptions::new().write(true).open(&copy).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(bytes).unwrap();
    copy
}

fn first_number_after(text: &str, key: &str) -> u64 {
    let i = text.find(key).unwrap() + key.len();
    let digits: String = text[i..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().unwrap()
}

#[test]
fn damaged_ext4_gives_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), true);
    let good = mkfs(dir.path(), "ext4", &src);
    let bs = superblock_field(&good, "Block size:");
    let groups = run("dumpe2fs", &[good.to_str().unwrap()]);

    // A block size of 2^(10+40).
    let bad = damaged(
        &good,
        dir.path(),
        "log.raw",
        1024 + 24,
        &40u32.to_le_bytes(),
    );
    let e = open(&bad).err().expect("opening must fail").to_string();
    assert!(e.contains("log.raw"), "{e}");

    // More blocks than the volume holds.
    let bad = damaged(
        &good,
        dir.path(),
        "count.raw",
        1024 + 4,
        &u32::MAX.to_le_bytes(),
    );
    assert!(open(&bad).is_err());

    // Garbage group descriptors.
    let bad = damaged(&good, dir.path(), "gdt.raw", bs, &noise(256, 3));
    if let Ok(mut vol) = open(&bad) {
        let r = read_all(vol.as_mut(), "/");
        let f = vol.free_ranges();
        assert!(
            r.is_err() || f.is_err(),
            "garbage group descriptors went unnoticed"
        );
    }

    // A trashed inode table: the root inode is in the first block of it.
    let table = first_number_after(&groups, "Inode table at ");
    let bad = damaged(
        &good,
        dir.path(),
        "inodes.raw",
        table * bs,
        &noise(bs as usize, 5),
    );
    let mut vol = open(&bad).unwrap();
    let e = read_all(vol.as_mut(), "/").unwrap_err();
    assert!(matches!(e, vfs::Error::Corrupt(_)), "{e:?}");
    assert!(e.to_string().contains("inodes.raw"), "{e}");

    // A trashed block bitmap.
    let bitmap = first_number_after(&groups, "Block bitmap at ");
    let bad = damaged(
        &good,
        dir.path(),
        "bitmap.raw",
        bitmap * bs,
        &vec![0u8; bs as usize],
    );
    let mut vol = open(&bad).unwrap();
    assert!(
        vol.free_ranges().is_err(),
        "an all-free bitmap must not be believed"
    );
}

#[test]
fn randomly_damaged_ext4_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("x/y")).unwrap();
    for i in 0..40 {
        fs::write(src.join(format!("x/f{i}")), noise(i * 300, i as u64 + 1)).unwrap();
    }
    let good = dir.path().join("small.raw");
    run(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            "ext4",
            "-d",
            src.to_str().unwrap(),
            good.to_str().unwrap(),
            "4M",
        ],
    );
    let bytes = fs::read(&good).unwrap();
    let mut seed = 99u64;
    for round in 0..60 {
        let mut copy = bytes.clone();
        for _ in 0..64 {
            let r = xorshift(&mut seed);
            // Metadata lives in the first 512 KiB of a small volume.
            let at = (r % (512 << 10)) as usize;
            copy[at] = (r >> 32) as u8;
        }
        let p = dir.path().join(format!("r{round}.raw"));
        fs::write(&p, &copy).unwrap();
        if let Ok(mut vol) = open(&p) {
            let _ = read_all(vol.as_mut(), "/");
            let _ = vol.free_ranges();
        }
        fs::remove_file(&p).unwrap();
    }
}
