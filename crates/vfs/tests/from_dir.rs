//! `vfs::build::from_dir` checked against the real tools: every FAT type in
//! every table layout, read back by `fsck.vfat`, mtools, `sfdisk` and `sgdisk`.

// Not every helper is used here.
#[allow(dead_code)]
mod common;

use common::{noise, run, write_file};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use vfs::build::{from_dir, FatType, FromDirOptions, FromDirSummary};
use vfs::TableKind;

/// When `dated.txt` was last modified (an even second, as FAT keeps it).
const DATED: u64 = 981_173_106; // 2001-02-03 04:05:06 UTC

/// The tree every test copies; returns what the image must hold (path →
/// contents, `None` for a folder).
fn make_tree(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut want = BTreeMap::new();
    let mut file = |rel: &str, data: Vec<u8>| {
        write_file(root, rel, &data);
        want.insert(rel.to_string(), Some(data));
    };
    file("readme.txt", b"hello\n".to_vec());
    file(
        "A rather long file name that needs many long-name entries.text",
        b"long".to_vec(),
    );
    file("résumé été.txt", "accents".as_bytes().to_vec());
    file("日本語.txt", "日本語".as_bytes().to_vec());
    file("empty.dat", Vec::new());
    file(".hidden", b"dot".to_vec());
    file("nested/deeper/deepest/leaf.bin", noise(5000, 7));
    file("nested/Mixed Case Name.TXT", b"case".to_vec());
    file("big/random.bin", noise(3 * 1024 * 1024 + 123, 42));
    for i in 0..300 {
        file(
            &format!("many/file number {i:03}.txt"),
            format!("file {i}\n").into_bytes(),
        );
    }
    file("dated.txt", b"old".to_vec());
    let f = std::fs::File::options()
        .write(true)
        .open(root.join("dated.txt"))
        .unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(DATED))
        .unwrap();
    drop(f);
    std::fs::create_dir_all(root.join("emptydir")).unwrap();
    // A link inside the folder is followed; one leading out of it is not.
    std::os::unix::fs::symlink("readme.txt", root.join("link to readme")).unwrap();
    want.insert("link to readme".into(), Some(b"hello\n".to_vec()));
    std::os::unix::fs::symlink("/etc/hostname", root.join("outside")).unwrap();
    // A FIFO is not copied.
    run("mkfifo", &[root.join("pipe").to_str().unwrap()]);
    for d in [
        "nested",
        "nested/deeper",
        "nested/deeper/deepest",
        "big",
        "many",
        "emptydir",
    ] {
        want.insert(d.to_string(), None);
    }
    want
}

/// Everything under `root`, as [`make_tree`] describes it.
fn read_tree(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for e in std::fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            let key = r.to_str().unwrap().to_string();
            if e.file_type().unwrap().is_dir() {
                out.insert(key, None);
                todo.push(r);
            } else {
                out.insert(key, Some(std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out
}

fn assert_same(
    got: &BTreeMap<String, Option<Vec<u8>>>,
    want: &BTreeMap<String, Option<Vec<u8>>>,
    what: &str,
) {
    let g: Vec<&String> = got.keys().collect();
    let w: Vec<&String> = want.keys().collect();
    assert_eq!(g, w, "{what}: names differ");
    for (k, v) in want {
        assert!(got[k] == *v, "{what}: {k} differs");
    }
}

/// `fsck.vfat -n` on the filesystem of `img`, copied out of the disk.
fn fsck(img: &Path, s: &FromDirSummary, work: &Path) {
    let vol = work.join("volume.img");
    run(
        "dd",
        &[
            &format!("if={}", img.display()),
            &format!("of={}", vol.display()),
            "bs=512",
            &format!("skip={}", s.volume_start / 512),
            &format!("count={}", s.volume_size / 512),
            "status=none",
        ],
    );
    let out = run("fsck.vfat", &["-n", vol.to_str().unwrap()]);
    let complaints: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with("fsck.fat ") && !l.contains(" files, "))
        .collect();
    assert!(complaints.is_empty(), "fsck.vfat:\n{out}");
    std::fs::remove_file(&vol).unwrap();
}

/// Checks the image `img` that `s` describes with the real tools.
fn check_image(
    img: &Path,
    s: &FromDirSummary,
    want: &BTreeMap<String, Option<Vec<u8>>>,
    work: &Path,
) {
    let img_s = img.to_str().unwrap();
    fsck(img, s, work);

    let at = format!("{img_s}@@{}", s.volume_start);
    let dir = run("mdir", &["-i", &at, "::/"]);
    assert!(dir.contains("TESTVOL"), "label missing from mdir:\n{dir}");
    let dest = work.join("out");
    let _ = std::fs::remove_dir_all(&dest);
    run("mcopy", &["-s", "-i", &at, "::/", dest.to_str().unwrap()]);
    assert_same(&read_tree(&dest), want, &format!("{} {:?}", s.fs, s.table));
    std::fs::remove_dir_all(&dest).unwrap();

    match s.table {
        TableKind::Mbr | TableKind::Gpt => {
            let j: serde_json::Value =
                serde_json::from_str(&run("sfdisk", &["--json", img_s])).unwrap();
            let t = &j["partitiontable"];
            let parts = t["partitions"].as_array().unwrap();
            assert_eq!(parts.len(), 1, "{j}");
            assert_eq!(parts[0]["start"], 2048, "{j}");
            assert_eq!(
                parts[0]["size"].as_u64().unwrap() * 512,
                s.volume_size,
                "{j}"
            );
            if s.table == TableKind::Mbr {
                assert_eq!(t["label"], "dos");
                let ty = match s.fs {
                    FatType::Fat12 => "1",
                    FatType::Fat16 => "e",
                    FatType::Fat32 => "c",
                };
                assert_eq!(parts[0]["type"], ty, "{j}");
                assert!(parts[0].get("bootable").is_none(), "{j}");
            } else {
                assert_eq!(t["label"], "gpt");
                assert_eq!(
                    parts[0]["type"], "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
                    "{j}"
                );
                let v = run("sgdisk", &["-v", img_s]);
                assert!(v.contains("No problems found"), "{v}");
            }
        }
        TableKind::None => {}
    }

    // vmhub's own reader finds the one filesystem and the modification time.
    let image = vfs::Image::open(img, false).unwrap();
    let mut v = image.volume(None, false).unwrap();
    assert_eq!(v.label().as_deref(), Some("TESTVOL"));
    let e = v.stat("/dated.txt").unwrap();
    assert_eq!(e.modified, Some(DATED as i64));
}

fn build(src: &Path, out: &Path, fat: Option<FatType>, table: TableKind) -> FromDirSummary {
    let opts = FromDirOptions {
        fat,
        table,
        image: vdisk::CreateOptions {
            format: vdisk::Format::Raw,
            ..Default::default()
        },
        label: Some("testvol".into()),
        ..Default::default()
    };
    from_dir(src, out, &opts, &mut |_, _| {}).unwrap()
}

fn every_layout_of(fat: FatType) {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let want = make_tree(&src);
    for table in [TableKind::Mbr, TableKind::Gpt, TableKind::None] {
        let img = work.path().join(format!("{fat}-{table:?}.raw"));
        let s = build(&src, &img, Some(fat), table);
        assert_eq!(s.fs, fat);
        assert_eq!(s.files, 311);
        assert_eq!(s.dirs, 6);
        assert!(
            s.warnings.iter().any(|w| w.contains("outside"))
                && s.warnings
                    .iter()
                    .any(|w| w.contains("pipe: skipped: not a regular file")),
            "{:?}",
            s.warnings
        );
        assert_eq!(std::fs::metadata(&img).unwrap().len(), s.image_size);
        check_image(&img, &s, &want, work.path());
        std::fs::remove_file(&img).unwrap();
    }
}

#[test]
fn fat12_in_every_layout() {
    every_layout_of(FatType::Fat12);
}

#[test]
fn fat16_in_every_layout() {
    every_layout_of(FatType::Fat16);
}

#[test]
fn fat32_in_every_layout() {
    every_layout_of(FatType::Fat32);
}

#[test]
fn the_default_type_follows_the_size() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"a").unwrap();
    let img = work.path().join("small.raw");
    let s = build(&src, &img, None, TableKind::Mbr);
    assert_eq!(s.fs, FatType::Fat12);
    assert!(s.image_size <= 4 << 20, "{}", s.image_size);
    for (size, fat) in [(64u64 << 20, FatType::Fat16), (600 << 20, FatType::Fat32)] {
        let img = work.path().join(format!("{size}.raw"));
        let opts = FromDirOptions {
            size: Some(size),
            image: vdisk::CreateOptions {
                format: vdisk::Format::Raw,
                ..Default::default()
            },
            ..Default::default()
        };
        let s = from_dir(&src, &img, &opts, &mut |_, _| {}).unwrap();
        assert_eq!((s.fs, s.image_size), (fat, size));
        fsck(&img, &s, work.path());
    }
}

#[test]
fn refusals_come_before_any_output() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big.bin"), noise(3 << 20, 1)).unwrap();
    let out = work.path().join("out.raw");
    let raw = vdisk::CreateOptions {
        format: vdisk::Format::Raw,
        ..Default::default()
    };

    let small = FromDirOptions {
        size: Some(2 << 20),
        image: raw.clone(),
        ..Default::default()
    };
    let e = from_dir(&src, &out, &small, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("too small") && e.contains("needs at least"),
        "{e}"
    );
    assert!(!out.exists());

    let fat32_small = FromDirOptions {
        size: Some(16 << 20),
        fat: Some(FatType::Fat32),
        image: raw.clone(),
        ..Default::default()
    };
    let e = from_dir(&src, &out, &fat32_small, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("FAT32 cannot be made"), "{e}");

    std::fs::write(src.join("a:b.txt"), b"x").unwrap();
    let plain = FromDirOptions {
        image: raw.clone(),
        ..Default::default()
    };
    let e = from_dir(&src, &out, &plain, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("a:b.txt") && e.contains("':'"), "{e}");
    std::fs::remove_file(src.join("a:b.txt")).unwrap();

    std::fs::write(src.join("BIG.BIN"), b"x").unwrap();
    let e = from_dir(&src, &out, &plain, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("ignore case"), "{e}");
    std::fs::remove_file(src.join("BIG.BIN")).unwrap();
    assert!(!out.exists());

    std::fs::write(&out, b"keep").unwrap();
    let e = from_dir(&src, &out, &plain, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
    let replace = FromDirOptions {
        overwrite: true,
        ..plain
    };
    from_dir(&src, &out, &replace, &mut |_, _| {}).unwrap();
    assert!(std::fs::metadata(&out).unwrap().len() > 3 << 20);
    let leftovers: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}
