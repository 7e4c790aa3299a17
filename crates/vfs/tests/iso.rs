//! ISO 9660 images made by xorriso (Rock Ridge + Joliet, Joliet only, plain
//! level 1), read back through vfs and compared with their source trees;
//! damaged copies must give errors, never panics.

// Not every helper is used here.
#[allow(dead_code)]
mod common;

use common::{compare, noise, open_volume as open, read_all, run, same_tree, xorshift};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Nested dirs, long and non-ASCII names, an empty file, noise, and (for
/// Rock Ridge) links.
fn make_tree(root: &Path, links: bool) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::create_dir_all(root.join("données/日本語")).unwrap();
    fs::write(root.join("hello.txt"), b"hello\n").unwrap();
    fs::write(root.join("a/b/c/deep.txt"), b"deep\n").unwrap();
    fs::write(root.join("a/empty"), b"").unwrap();
    fs::write(
        root.join("a-long-name-past-eight-dot-three-with-many-words.text"),
        b"long\n",
    )
    .unwrap();
    fs::write(root.join("données/日本語/ñandú.txt"), "ünï\n").unwrap();
    fs::write(root.join("a/big.bin"), noise(3 << 20 | 777, 11)).unwrap();
    fs::set_permissions(root.join("hello.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    if links {
        std::os::unix::fs::symlink("a/b/c/deep.txt", root.join("rel-link")).unwrap();
        std::os::unix::fs::symlink("/etc/../nowhere", root.join("a/abs-link")).unwrap();
    }
}

fn mkiso(dir: &Path, src: &Path, file: &str, opts: &[&str]) -> PathBuf {
    let out = dir.join(file);
    let mut args = vec!["-as", "mkisofs"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&[
        "-V",
        "VMHUB_ISO",
        "-o",
        out.to_str().unwrap(),
        src.to_str().unwrap(),
    ]);
    run("xorriso", &args);
    out
}

#[test]
fn rock_ridge_tree_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, true);
    let iso = mkiso(dir.path(), &src, "rr.iso", &["-R", "-J"]);
    let mut vol = open(&iso).unwrap();
    assert_eq!(vol.kind(), vfs::FsKind::Iso9660);
    assert_eq!(vol.label().as_deref(), Some("VMHUB_ISO"));
    compare(vol.as_mut(), "/", &src, true);
    assert!(matches!(vol.stat("/nope"), Err(vfs::Error::NotFound(_))));
    assert!(matches!(vol.list("/hello.txt"), Err(vfs::Error::NotDir(_))));
    assert!(matches!(
        vol.read_file("/a", &mut Vec::new()),
        Err(vfs::Error::IsDir(_))
    ));
    let out = dir.path().join("out");
    let done = vfs::extract::extract(vol.as_mut(), "/", &out).unwrap();
    assert_eq!(done.links, 2);
    same_tree(&src, &out);
}

#[test]
fn joliet_names_without_rock_ridge() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, false);
    let iso = mkiso(dir.path(), &src, "j.iso", &["-J"]);
    let mut vol = open(&iso).unwrap();
    assert_eq!(vol.label().as_deref(), Some("VMHUB_ISO"));
    compare(vol.as_mut(), "/", &src, false);
    let out = dir.path().join("out");
    vfs::extract::extract(vol.as_mut(), "/", &out).unwrap();
    same_tree(&src, &out);
}

#[test]
fn plain_level_1_names() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("DIR1/SUB")).unwrap();
    fs::write(src.join("README.TXT"), b"read me\n").unwrap();
    fs::write(src.join("DIR1/SUB/DATA.BIN"), noise(100_000, 3)).unwrap();
    fs::write(src.join("DIR1/EMPTY"), b"").unwrap();
    let iso = mkiso(dir.path(), &src, "plain.iso", &["-iso-level", "1"]);
    let mut vol = open(&iso).unwrap();
    assert_eq!(vol.label().as_deref(), Some("VMHUB_ISO"));
    compare(vol.as_mut(), "/", &src, false);
    assert_eq!(vol.stat("/README.TXT").unwrap().size, 8);
}

fn le32(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

/// Byte offset of the third record (the first after `.` and `..`) of the root.
fn first_root_record(img: &[u8]) -> usize {
    let pvd = 16 * 2048;
    let root = le32(img, pvd + 156 + 2) * 2048;
    let dot = img[root] as usize;
    let dotdot = img[root + dot] as usize;
    root + dot + dotdot
}

fn write_copy(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, data).unwrap();
    p
}

#[test]
fn damaged_isos_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, true);
    let good = fs::read(mkiso(dir.path(), &src, "good.iso", &["-R", "-J"])).unwrap();
    let pvd = 16 * 2048;

    // The root directory said to be 1 GiB long.
    let mut bad = good.clone();
    bad[pvd + 156 + 10..pvd + 156 + 14].copy_from_slice(&(1u32 << 30).to_le_bytes());
    let p = write_copy(dir.path(), "rootsize.iso", &bad);
    let e = open(&p).and_then(|mut v| v.list("/")).unwrap_err();
    assert!(matches!(e, vfs::Error::Corrupt(_)), "{e:?}");
    assert!(e.to_string().contains("rootsize.iso"), "{e}");

    // The root directory placed past the end.
    let mut bad = good.clone();
    bad[pvd + 156 + 2..pvd + 156 + 6].copy_from_slice(&0x0100_0000u32.to_le_bytes());
    let p = write_copy(dir.path(), "rootext.iso", &bad);
    assert!(matches!(
        open(&p).and_then(|mut v| v.list("/")),
        Err(vfs::Error::Corrupt(_))
    ));

    // A record longer than what is left of its sector.
    let at = first_root_record(&good);
    let mut bad = good.clone();
    bad[at] = 0xFF;
    bad[at + 32] = 0xFF;
    let p = write_copy(dir.path(), "reclen.iso", &bad);
    let e = open(&p)
        .and_then(|mut v| read_all(v.as_mut(), "/"))
        .unwrap_err();
    assert!(matches!(e, vfs::Error::Corrupt(_)), "{e:?}");

    // A name longer than its record.
    let mut bad = good.clone();
    bad[at + 32] = 250;
    let p = write_copy(dir.path(), "namelen.iso", &bad);
    assert!(open(&p)
        .and_then(|mut v| read_all(v.as_mut(), "/"))
        .is_err());

    // A file extent past the end of the volume.
    let mut bad = good.clone();
    bad[at + 2..at + 6].copy_from_slice(&0x00F0_0000u32.to_le_bytes());
    bad[at + 10..at + 14].copy_from_slice(&4096u32.to_le_bytes());
    let p = write_copy(dir.path(), "fileext.iso", &bad);
    let e = open(&p)
        .and_then(|mut v| read_all(v.as_mut(), "/"))
        .unwrap_err();
    assert!(matches!(e, vfs::Error::Corrupt(_)), "{e:?}");
}

#[test]
fn randomly_damaged_isos_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("x/y")).unwrap();
    for i in 0..30 {
        fs::write(
            src.join(format!("x/file-{i}")),
            noise(i * 100, i as u64 + 1),
        )
        .unwrap();
        std::os::unix::fs::symlink(format!("../x/file-{i}"), src.join(format!("x/y/l{i}")))
            .unwrap();
    }
    let good = fs::read(mkiso(dir.path(), &src, "small.iso", &["-R", "-J"])).unwrap();
    let end = good.len().min(64 * 2048);
    let mut seed = 5u64;
    for round in 0..200 {
        let mut bad = good.clone();
        for _ in 0..32 {
            let r = xorshift(&mut seed);
            let at = 16 * 2048 + (r as usize % (end - 16 * 2048));
            bad[at] = (r >> 40) as u8;
        }
        let p = write_copy(dir.path(), &format!("r{round}.iso"), &bad);
        if let Ok(mut vol) = open(&p) {
            let _ = read_all(vol.as_mut(), "/");
        }
        fs::remove_file(&p).unwrap();
    }
}
