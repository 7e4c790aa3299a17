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
/// file, a few MiB of noise, a sparse file and links. The sparse file's hole
/// covers whole indirect blocks of an ext2/3 block map.
fn make_tree(root: &Path) {
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
    sparse.seek(SeekFrom::Start(9 << 20)).unwrap();
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
fn tree(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    make_tree(&src);
    src
}

#[test]
fn ext2_tree_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let img = mkfs(dir.path(), "ext2", &src);
    check_with_lost_found(&img, &src, vfs::FsKind::Ext2, dir.path());
}

#[test]
fn ext3_tree_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let img = mkfs(dir.path(), "ext3", &src);
    check_with_lost_found(&img, &src, vfs::FsKind::Ext3, dir.path());
}

#[test]
fn ext4_tree_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
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
    let src = tree(dir.path());
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
    let src = tree(dir.path());
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
    let src = tree(dir.path());
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
    random_damage("ext4");
}

/// ext2 block maps, with holes over whole indirect blocks, damaged.
#[test]
fn randomly_damaged_ext2_never_panics() {
    random_damage("ext2");
}

fn random_damage(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("x/y")).unwrap();
    for i in 0..40 {
        fs::write(src.join(format!("x/f{i}")), noise(i * 300, i as u64 + 1)).unwrap();
    }
    if kind == "ext2" {
        make_holey(&src.join("x/y"), 1024, false);
    }
    let good = dir.path().join("small.raw");
    run(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            kind,
            "-b",
            "1024",
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

/// A writer that checks what it is given against a local file, a piece at a
/// time, so large sparse files are compared without holding them.
struct SameAs {
    file: fs::File,
    done: u64,
    what: String,
}

impl Write for SameAs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut want = vec![0u8; buf.len()];
        std::io::Read::read_exact(&mut self.file, &mut want)
            .unwrap_or_else(|e| panic!("{}: more bytes than the source: {e}", self.what));
        assert!(
            want == buf,
            "{}: bytes {}+{} differ",
            self.what,
            self.done,
            buf.len()
        );
        self.done += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Checks that the files `a` and `b` hold the same bytes, a MiB at a time.
fn same_file(a: &Path, b: &Path) {
    let (la, lb) = (
        fs::metadata(a).unwrap().len(),
        fs::metadata(b).unwrap().len(),
    );
    assert_eq!(la, lb, "{} vs {}", a.display(), b.display());
    let mut sink = SameAs {
        file: fs::File::open(a).unwrap(),
        done: 0,
        what: b.display().to_string(),
    };
    std::io::copy(&mut fs::File::open(b).unwrap(), &mut sink).unwrap();
    assert_eq!(sink.done, la);
}

/// Sparse files whose holes cover whole ranges of a block map (ext2/3
/// without extents): i_block[12], [13] or [14] zero, or zero entries inside
/// the double-indirect block. `bs` is the block size; returns the names.
fn make_holey(root: &Path, bs: u64, triple: bool) -> Vec<String> {
    fs::create_dir_all(root).unwrap();
    let per = bs / 4;
    let single = 12;
    let double = single + per;
    let triple_at = double + per * per;
    // (name, data, size): bytes of data written 3 bytes into each block
    // listed, then the size set when it is not 0.
    type Data = Vec<(u64, usize)>;
    let mut files: Vec<(&str, Data, u64)> = vec![
        // Block 0, then nothing until the double-indirect range.
        ("skip-single", vec![(0, 100), (double + 5, 3000)], 0),
        // Single range used, then the double block's entries 1 and 2 empty.
        (
            "hole-in-double",
            vec![
                (0, 10),
                (single, 10),
                (double, 7),
                (double + 3 * per + 7, 20),
            ],
            0,
        ),
        // Data only in the single range, then a hole to the end of the file
        // past the double range's start.
        (
            "tail-hole",
            vec![(single + 1, 50)],
            (double + 2 * per) * bs + 17,
        ),
        // No data at all: every pointer of the inode is zero.
        ("all-holes", vec![], (double + 3) * bs + 1),
        // A few bytes in the middle of the last direct block.
        ("direct", vec![(11, 1)], 0),
    ];
    if triple {
        // Data only in the triple-indirect range.
        files.push(("triple-only", vec![(triple_at + 3, 500)], 0));
        files.push((
            "triple-and-double",
            vec![(double, 1), (triple_at + per * per + 2, 9)],
            0,
        ));
    }
    let mut seed = 1;
    for (name, data, size) in &files {
        let mut f = fs::File::create(root.join(name)).unwrap();
        for &(block, len) in data {
            f.seek(SeekFrom::Start(block * bs + 3)).unwrap();
            seed += 1;
            f.write_all(&noise(len, seed)).unwrap();
        }
        if *size > 0 {
            f.set_len(*size).unwrap();
        }
    }
    files.iter().map(|f| f.0.to_string()).collect()
}

/// Makes an image of `kind` with blocks of `bs` bytes from `src`.
fn mkfs_bs(dir: &Path, kind: &str, bs: u64, src: &Path, extra: &[&str]) -> PathBuf {
    let img = dir.join(format!("{kind}-{bs}.raw"));
    let bs = bs.to_string();
    let mut args = vec![
        "-q",
        "-F",
        "-t",
        kind,
        "-b",
        &bs,
        "-d",
        src.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[img.to_str().unwrap(), "64M"]);
    run("mke2fs", &args);
    img
}

/// Reads every file of `names` through vmhub and debugfs and checks both
/// against the source.
fn check_holey(img: &Path, src: &Path, names: &[String], work: &Path) {
    let mut vol = open(img).unwrap();
    for n in names {
        let local = src.join(n);
        let len = fs::metadata(&local).unwrap().len();
        let mut sink = SameAs {
            file: fs::File::open(&local).unwrap(),
            done: 0,
            what: format!("{} /{n}", img.display()),
        };
        let got = vol
            .read_file(&format!("/{n}"), &mut sink)
            .unwrap_or_else(|e| panic!("{} /{n}: {e}", img.display()));
        assert_eq!((got, sink.done), (len, len), "{n}");
        let dumped = work.join("dumped");
        run(
            "debugfs",
            &[
                "-R",
                &format!("dump /{n} {}", dumped.display()),
                img.to_str().unwrap(),
            ],
        );
        same_file(&local, &dumped);
        fs::remove_file(&dumped).unwrap();
    }
}

#[test]
fn block_map_holes_read_as_zeros() {
    let dir = tempfile::tempdir().unwrap();
    for bs in [1024, 4096] {
        let src = dir.path().join(format!("holey-{bs}"));
        let names = make_holey(&src, bs, bs == 1024);
        // ext4 without extents keeps block maps, with flex_bg placing
        // the inode tables.
        let variants: [(&str, &[&str]); 3] = [
            ("ext2", &[]),
            ("ext3", &[]),
            ("ext4", &["-O", "^extent,^64bit"]),
        ];
        for (kind, extra) in variants {
            let img = mkfs_bs(dir.path(), kind, bs, &src, extra);
            check_holey(&img, &src, &names, dir.path());
            fs::remove_file(&img).unwrap();
        }
    }
}

/// Byte offset of the inode of `file` in `img`, from debugfs's `imap`
/// ("located at block 38, offset 0x0b00").
fn inode_offset(img: &Path, file: &str, bs: u64) -> u64 {
    let text = run(
        "debugfs",
        &["-R", &format!("imap {file}"), img.to_str().unwrap()],
    );
    let block = first_number_after(&text, "located at block");
    let hex = text.split("offset 0x").nth(1).unwrap();
    let hex: String = hex.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    block * bs + u64::from_str_radix(&hex, 16).unwrap()
}

fn le32_at(img: &Path, at: u64) -> u32 {
    let bytes = fs::read(img).unwrap();
    let at = at as usize;
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// Counts what it is given and checks it is all zeros.
struct Zeros(u64);

impl Write for Zeros {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        assert!(buf.iter().all(|&b| b == 0), "a hole gave data");
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn hostile_block_maps_give_errors_or_bounded_work() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    // 40 blocks of 1 KiB: the single indirect block is used.
    let data = noise(40 << 10, 3);
    fs::write(src.join("f"), &data).unwrap();
    // A few hundred MiB with no data at all.
    let holes = 300 << 20;
    fs::File::create(src.join("holes"))
        .unwrap()
        .set_len(holes)
        .unwrap();
    let good = mkfs_bs(dir.path(), "ext2", 1024, &src, &[]);
    let mut vol = open(&good).unwrap();
    let mut zeros = Zeros(0);
    assert_eq!(vol.read_file("/holes", &mut zeros).unwrap(), holes);
    assert_eq!(zeros.0, holes);
    drop(vol);

    let inode = inode_offset(&good, "/f", 1024);
    let single = le32_at(&good, inode + 0x28 + 4 * 12);
    assert!(single > 0);

    // The single indirect block outside the volume.
    let bad = damaged(
        &good,
        dir.path(),
        "past.raw",
        inode + 0x28 + 4 * 12,
        &0x7000_0000u32.to_le_bytes(),
    );
    let e = open(&bad)
        .unwrap()
        .read_file("/f", &mut Vec::new())
        .unwrap_err();
    assert!(matches!(e, vfs::Error::Corrupt(_)), "{e:?}");
    assert!(e.to_string().contains("/f"), "{e}");
    assert!(e.to_string().contains("1879048192"), "{e}");

    // An entry of the indirect block outside the volume.
    let bad = damaged(
        &good,
        dir.path(),
        "entry.raw",
        u64::from(single) * 1024 + 8,
        &u32::MAX.to_le_bytes(),
    );
    let e = open(&bad)
        .unwrap()
        .read_file("/f", &mut Vec::new())
        .unwrap_err();
    assert!(e.to_string().contains("/f"), "{e}");

    // The indirect block pointing to itself everywhere, and the file
    // reaching into the double and triple ranges through it: the work is
    // bounded by the size.
    let mut loops = vec![0u8; 1024];
    for e in loops.chunks_exact_mut(4) {
        e.copy_from_slice(&single.to_le_bytes());
    }
    let bad = damaged(
        &good,
        dir.path(),
        "loop.raw",
        u64::from(single) * 1024,
        &loops,
    );
    let mut f = fs::OpenOptions::new().write(true).open(&bad).unwrap();
    let size: u64 = (12 + 256 + 65536 + 10) * 1024;
    f.seek(SeekFrom::Start(inode + 4)).unwrap();
    f.write_all(&(size as u32).to_le_bytes()).unwrap();
    f.seek(SeekFrom::Start(inode + 0x28 + 4 * 13)).unwrap();
    f.write_all(&single.to_le_bytes()).unwrap();
    f.write_all(&single.to_le_bytes()).unwrap();
    drop(f);
    let mut counted = CountOnly(0);
    let n = open(&bad).unwrap().read_file("/f", &mut counted).unwrap();
    assert_eq!((n, counted.0), (size, size));

    // A size past what a block map of 1 KiB blocks can hold (16 GiB).
    let bad = damaged(
        &good,
        dir.path(),
        "huge.raw",
        inode + 0x6C,
        &0x100u32.to_le_bytes(),
    );
    if let Ok(mut vol) = open(&bad) {
        let mut counted = CountOnly(0);
        let e = vol.read_file("/f", &mut counted).unwrap_err();
        assert!(matches!(e, vfs::Error::Corrupt(_)), "{e:?}");
        assert_eq!(counted.0, 0);
    }
}

/// Counts what it is given.
struct CountOnly(u64);

impl Write for CountOnly {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
