//! `vmhub fs` against images the real tools made (mkfs.vfat, mcopy, sfdisk,
//! sgdisk), and what vmhub writes checked by them (fsck.vfat, mdir, mtype).

// Only some of the shared helpers are used here.
#[allow(dead_code)]
mod common;

use common::{describe, vmhub, vmhub_ok};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs a shell command line with the sbin folders on PATH (mkfs.vfat,
/// sfdisk and sgdisk live there); fails the test when it fails.
fn sh(line: &str) -> Output {
    let path = format!(
        "{}:/usr/sbin:/sbin",
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", line])
        .env("PATH", path)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "`{line}` failed (the fs tests need dosfstools, mtools, fdisk and gdisk: run scripts/deps.sh)\n{}",
        describe(&out)
    );
    out
}

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// A little xorshift stream, so file contents are known and not compressible.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The tree every test copies: relative path → contents (None for a folder).
fn tree() -> BTreeMap<String, Option<Vec<u8>>> {
    let mut t = BTreeMap::new();
    t.insert("README.TXT".to_string(), Some(b"plain 8.3 name\n".to_vec()));
    t.insert(
        "long file name.text".to_string(),
        Some(b"long name\n".to_vec()),
    );
    t.insert(
        "résumé été.txt".to_string(),
        Some("accents\n".as_bytes().to_vec()),
    );
    t.insert("empty".to_string(), Some(Vec::new()));
    t.insert("docs".to_string(), None);
    t.insert("docs/nested".to_string(), None);
    t.insert("docs/nested/deeper".to_string(), None);
    t.insert(
        "docs/nested/deeper/data.bin".to_string(),
        Some(bytes(7, 300 * 1024 + 17)),
    );
    t.insert(
        "docs/Mixed Case.Md".to_string(),
        Some(b"# title\n".to_vec()),
    );
    t.insert("emptydir".to_string(), None);
    t
}

fn write_tree(dir: &Path, t: &BTreeMap<String, Option<Vec<u8>>>) {
    std::fs::create_dir_all(dir).unwrap();
    for (rel, data) in t {
        let p = dir.join(rel);
        match data {
            None => std::fs::create_dir_all(&p).unwrap(),
            Some(d) => {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, d).unwrap();
            }
        }
    }
}

/// Every file and folder under `dir`, as `tree()` describes them.
fn read_tree(dir: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_str().unwrap().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                out.insert(rel, None);
                walk(base, &p, out);
            } else {
                out.insert(rel, Some(std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A FAT image of `kib` KiB made by mkfs.vfat with the tree copied in by mcopy.
fn fat_image(dir: &Path, name: &str, fat: u32, kib: u64) -> PathBuf {
    let src = dir.join(format!("{name}-src"));
    write_tree(&src, &tree());
    let img = dir.join(name);
    sh(&format!(
        "mkfs.vfat -C -F {fat} -n VMHUBTEST {} {kib} >/dev/null && mcopy -s -i {} {}/* ::/",
        s(&img),
        s(&img),
        s(&src)
    ));
    img
}

fn ls_json(target: &str) -> Vec<Value> {
    let out = vmhub_ok(["fs", "ls", "-R", "--output", "json", target]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().clone()
}

fn sha(path: &Path) -> String {
    let out = sh(&format!("sha256sum {}", s(path)));
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

#[test]
fn fat_made_by_mkfs_and_mcopy_reads_right_in_raw_and_vhd() {
    let dir = tempfile::tempdir().unwrap();
    for (fat, kib) in [(12, 1440), (16, 16 * 1024), (32, 64 * 1024)] {
        let raw = fat_image(dir.path(), &format!("fat{fat}.img"), fat, kib);
        let vhd = dir.path().join(format!("fat{fat}.vhd"));
        vmhub_ok(["img", "convert", s(&raw), s(&vhd)]);
        for img in [&raw, &vhd] {
            // parts: one filesystem, no table.
            let out = vmhub_ok(["fs", "parts", "--output", "json", s(img)]);
            let t: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(t["kind"], "none", "{img:?}");
            assert_eq!(t["partitions"][0]["filesystem"], format!("fat{fat}"));
            // ls -R lists exactly the tree.
            let listed = ls_json(s(img));
            let mut names: Vec<String> = listed
                .iter()
                .map(|e| {
                    e["path"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches('/')
                        .to_string()
                })
                .collect();
            names.sort();
            let want: Vec<String> = tree().keys().cloned().collect();
            assert_eq!(names, want, "fat{fat} {img:?}");
            for e in &listed {
                let rel = e["path"].as_str().unwrap().trim_start_matches('/');
                if let Some(Some(data)) = tree().get(rel) {
                    assert_eq!(e["size"], data.len() as u64, "{rel}");
                    assert_eq!(e["kind"], "file");
                }
            }
            // cat gives the bytes.
            let out = vmhub_ok([
                "fs",
                "cat",
                &format!("{}:/docs/nested/deeper/data.bin", s(img)),
            ]);
            assert_eq!(out.stdout, bytes(7, 300 * 1024 + 17));
            // Case does not matter on FAT.
            let out = vmhub_ok(["fs", "cat", &format!("{}:/readme.txt", s(img))]);
            assert_eq!(out.stdout, b"plain 8.3 name\n");
            // get of the root gives the whole tree, byte for byte.
            let dest = dir.path().join(format!(
                "out-{fat}-{}",
                img.extension().unwrap().to_str().unwrap()
            ));
            vmhub_ok(["fs", "get", &format!("{}:/", s(img)), s(&dest)]);
            assert_eq!(read_tree(&dest), tree(), "fat{fat} {img:?}");
            // get of a folder into an existing folder lands under its name.
            let into = dir.path().join(format!(
                "into-{fat}-{}",
                img.extension().unwrap().to_str().unwrap()
            ));
            std::fs::create_dir(&into).unwrap();
            vmhub_ok(["fs", "get", &format!("{}:/docs", s(img)), s(&into)]);
            assert_eq!(
                std::fs::read(into.join("docs/nested/deeper/data.bin")).unwrap(),
                bytes(7, 300 * 1024 + 17)
            );
        }
        // A missing path is an error that names it.
        let out = vmhub(["fs", "cat", &format!("{}:/no/such/file", s(&raw))]);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("/no/such/file"),
            "{}",
            describe(&out)
        );
    }
}

#[test]
fn what_vmhub_writes_into_fat_passes_fsck_and_mtools_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    for (fat, kib) in [(12, 1440), (16, 16 * 1024), (32, 64 * 1024)] {
        let img = dir.path().join(format!("w{fat}.img"));
        sh(&format!(
            "mkfs.vfat -C -F {fat} {} {kib} >/dev/null",
            s(&img)
        ));
        let src = dir.path().join(format!("w{fat}-src"));
        write_tree(&src, &tree());
        // put a tree into the root: it lands as /w{fat}-src.
        vmhub_ok(["fs", "put", s(&src), &format!("{}:/", s(&img))]);
        vmhub_ok(["fs", "mkdir", "-p", &format!("{}:/a/b/c", s(&img))]);
        let note = dir.path().join("note.txt");
        std::fs::write(&note, b"a note\n").unwrap();
        vmhub_ok(["fs", "put", s(&note), &format!("{}:/a/b/c", s(&img))]);
        vmhub_ok([
            "fs",
            "put",
            s(&note),
            &format!("{}:/a/renamed note.txt", s(&img)),
        ]);
        // Replacing a file keeps one entry with the new bytes.
        std::fs::write(&note, b"a longer note, second version\n").unwrap();
        vmhub_ok([
            "fs",
            "put",
            s(&note),
            &format!("{}:/a/renamed note.txt", s(&img)),
        ]);
        vmhub_ok(["fs", "rm", &format!("{}:/w{fat}-src/empty", s(&img))]);
        let out = vmhub(["fs", "rm", &format!("{}:/w{fat}-src/docs", s(&img))]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "rm of a full folder must fail: {}",
            describe(&out)
        );
        vmhub_ok(["fs", "rm", "-r", &format!("{}:/w{fat}-src/docs", s(&img))]);
        // The peers agree.
        sh(&format!("fsck.vfat -n {}", s(&img)));
        let out = sh(&format!("mtype -i {} '::/a/renamed note.txt'", s(&img)));
        assert_eq!(out.stdout, b"a longer note, second version\n");
        let out = sh(&format!("mtype -i {} ::/a/b/c/note.txt", s(&img)));
        assert_eq!(out.stdout, b"a note\n");
        let dest = dir.path().join(format!("m{fat}"));
        sh(&format!(
            "mkdir {d} && mcopy -s -i {} ::/w{fat}-src {d}/",
            s(&img),
            d = s(&dest)
        ));
        let mut want = tree();
        want.retain(|k, _| k != "empty" && !k.starts_with("docs"));
        let got = read_tree(&dest.join(format!("w{fat}-src")));
        assert_eq!(got, want, "fat{fat}");
        let listing =
            String::from_utf8_lossy(&sh(&format!("mdir -/ -i {} ::/", s(&img))).stdout).to_string();
        assert!(listing.contains("résumé été.txt"), "{listing}");
    }
}

#[test]
fn writes_go_to_the_differencing_child_and_the_base_never_changes() {
    let dir = tempfile::tempdir().unwrap();
    let raw = fat_image(dir.path(), "base.img", 16, 16 * 1024);
    let base = dir.path().join("base.vhd");
    vmhub_ok(["img", "convert", s(&raw), s(&base)]);
    let child = dir.path().join("child.vhd");
    vmhub_ok(["img", "create", s(&child), "--parent", s(&base)]);
    let before = sha(&base);
    let f = dir.path().join("added.txt");
    std::fs::write(&f, b"only in the child\n").unwrap();
    vmhub_ok(["fs", "put", s(&f), &format!("{}:/docs/", s(&child))]);
    vmhub_ok(["fs", "rm", &format!("{}:/README.TXT", s(&child))]);
    assert_eq!(sha(&base), before, "the base changed");
    let out = vmhub_ok(["fs", "cat", &format!("{}:/docs/added.txt", s(&child))]);
    assert_eq!(out.stdout, b"only in the child\n");
    let out = vmhub(["fs", "cat", &format!("{}:/docs/added.txt", s(&base))]);
    assert_eq!(out.status.code(), Some(1));
    vmhub_ok(["fs", "cat", &format!("{}:/README.TXT", s(&base))]);
    // The flattened child is a clean FAT.
    let flat = dir.path().join("flat.img");
    vmhub_ok(["img", "convert", s(&child), s(&flat)]);
    sh(&format!("fsck.vfat -n {}", s(&flat)));
    // A read-only kind cannot be written, and says so.
    let out = vmhub([
        "fs",
        "put",
        s(&f),
        &format!("{}:/x", s(&dir.path().join("nothing.vhd"))),
    ]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn mbr_with_logical_partitions_and_gpt_with_both_headers() {
    let dir = tempfile::tempdir().unwrap();
    // MBR: 1 primary FAT16, an extended partition holding two logical FAT ones.
    let mbr = dir.path().join("mbr.img");
    sh(&format!(
        "truncate -s 64M {i} && printf 'label: dos\\nstart=2048, size=16M, type=e\\nstart=34816, type=5\\nsize=12M, type=c\\nsize=12M, type=6\\n' | sfdisk -q {i}",
        i = s(&mbr)
    ));
    let out = sh(&format!("sfdisk --json {}", s(&mbr)));
    let layout: Value = serde_json::from_slice(&out.stdout).unwrap();
    let parts = layout["partitiontable"]["partitions"].as_array().unwrap();
    let mut starts = Vec::new();
    for p in parts {
        starts.push((
            p["start"].as_u64().unwrap(),
            p["size"].as_u64().unwrap(),
            p["type"].as_str().unwrap().to_string(),
        ));
    }
    for (i, (start, size, ty)) in starts.iter().enumerate() {
        if ty == "5" {
            continue;
        }
        sh(&format!(
            "mkfs.vfat --offset {start} -n PART{i} {} {} >/dev/null && echo part{i} > {d}/p{i}.txt && mcopy -i {}@@{} {d}/p{i}.txt ::/",
            s(&mbr),
            size / 2,
            s(&mbr),
            start * 512,
            d = s(dir.path())
        ));
    }
    let out = vmhub_ok(["fs", "parts", "--output", "json", s(&mbr)]);
    let t: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["kind"], "mbr");
    let got: Vec<(u64, u64, bool, String)> = t["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["number"].as_u64().unwrap(),
                p["start"].as_u64().unwrap(),
                p["extended"].as_bool().unwrap(),
                p["filesystem"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[0], (1, starts[0].0 * 512, false, "fat16".into()));
    assert_eq!((got[1].0, got[1].2), (2, true));
    assert_eq!(got[2].0, 5);
    assert_eq!(got[2].1, starts[2].0 * 512);
    assert_eq!(got[3].0, 6);
    assert_eq!(got[3].1, starts[3].0 * 512);
    for (n, i) in [(1, 0), (5, 2), (6, 3)] {
        let out = vmhub_ok(["fs", "cat", &format!("{}:{n}:/p{i}.txt", s(&mbr))]);
        assert_eq!(out.stdout, format!("part{i}\n").as_bytes());
    }
    // Several filesystems and no partition named: the error lists them.
    let out = vmhub(["fs", "ls", s(&mbr)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1 (fat16)") && err.contains("5 (") && err.contains("6 ("),
        "{err}"
    );
    let out = vmhub(["fs", "ls", &format!("{}:9:/", s(&mbr))]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("partition 9"),
        "{}",
        describe(&out)
    );
    // Writing into a logical partition leaves the others alone.
    let f = dir.path().join("new.txt");
    std::fs::write(&f, b"new\n").unwrap();
    vmhub_ok(["fs", "put", s(&f), &format!("{}:6:/", s(&mbr))]);
    sh(&format!(
        "mtype -i {}@@{} ::/new.txt",
        s(&mbr),
        starts[3].0 * 512
    ));
    sh(&format!("sfdisk --verify {}", s(&mbr)));

    // GPT: two named partitions.
    let gpt = dir.path().join("gpt.img");
    sh(&format!(
        "truncate -s 40M {i} && sgdisk -o -n 1:2048:+8M -t 1:ef00 -c 1:'EFI system' -n 2:0:+16M -t 2:0700 -c 2:data {i} >/dev/null",
        i = s(&gpt)
    ));
    sh(&format!(
        "mkfs.vfat --offset 2048 {i} 8192 >/dev/null && mkfs.vfat --offset 18432 -F 16 {i} 16384 >/dev/null && echo data > {d}/d.txt && mcopy -i {i}@@{o} {d}/d.txt ::/",
        i = s(&gpt),
        o = 18432 * 512,
        d = s(dir.path())
    ));
    let out = vmhub_ok(["fs", "parts", "--output", "json", s(&gpt)]);
    let t: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["kind"], "gpt");
    assert_eq!(t["warnings"].as_array().unwrap().len(), 0, "{t}");
    let p = t["partitions"].as_array().unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(p[0]["label"], "EFI system");
    assert_eq!(p[0]["type-name"], "EFI System");
    assert_eq!(p[1]["label"], "data");
    assert_eq!(p[1]["start"], 18432 * 512);
    assert_eq!(p[1]["filesystem"], "fat16");
    let out = vmhub_ok(["fs", "cat", &format!("{}:2:/d.txt", s(&gpt))]);
    assert_eq!(out.stdout, b"data\n");
    // A damaged backup header is reported, and the table still reads.
    let len = std::fs::metadata(&gpt).unwrap().len();
    common::write_at(&gpt, len - 512 + 60, b"garbage");
    let out = vmhub_ok(["fs", "parts", "--output", "json", s(&gpt)]);
    let t: Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = t["warnings"].to_string();
    assert!(warnings.contains("backup"), "{warnings}");
    assert_eq!(t["partitions"].as_array().unwrap().len(), 2);
}

/// Offsets in a FAT16 image made by mkfs.vfat: (first FAT, root directory,
/// data area, cluster size).
fn fat16_layout(img: &Path) -> (u64, u64, u64, u64) {
    let b = std::fs::read(img).unwrap();
    let le16 = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]) as u64;
    let bps = le16(11);
    let spc = b[13] as u64;
    let reserved = le16(14);
    let fats = b[16] as u64;
    let root_entries = le16(17);
    let fat_size = le16(22);
    let fat = reserved * bps;
    let root = (reserved + fats * fat_size) * bps;
    let data = root + root_entries * 32;
    (fat, root, data, spc * bps)
}

/// The 32-byte short entry named `name83` (11 bytes, space padded) in the
/// root directory.
fn root_entry(img: &Path, name83: &[u8; 11]) -> u64 {
    let (_, root, data, _) = fat16_layout(img);
    let b = std::fs::read(img).unwrap();
    (root..data)
        .step_by(32)
        .find(|&o| &b[o as usize..o as usize + 11] == name83)
        .unwrap_or_else(|| panic!("no root entry {:?}", String::from_utf8_lossy(name83)))
}

#[test]
fn hostile_fat_images_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.img");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("SUB")).unwrap();
    std::fs::write(src.join("SUB/FILE.TXT"), bytes(3, 5000)).unwrap();
    std::fs::write(src.join("PLAIN.TXT"), b"plain\n").unwrap();
    sh(&format!(
        "mkfs.vfat -C -F 16 {g} 16384 >/dev/null && mcopy -s -i {g} {s}/SUB {s}/PLAIN.TXT ::/",
        g = s(&good),
        s = s(&src)
    ));
    let (fat, _, _, _) = fat16_layout(&good);
    let sub = root_entry(&good, b"SUB        ");
    let b = std::fs::read(&good).unwrap();
    let sub_cluster = u16::from_le_bytes([b[sub as usize + 26], b[sub as usize + 27]]) as u64;
    let case = |name: &str, patches: &[(u64, Vec<u8>)]| -> PathBuf {
        let p = dir.path().join(name);
        std::fs::copy(&good, &p).unwrap();
        for (off, bytes) in patches {
            common::write_at(&p, *off, bytes);
        }
        p
    };
    let expect_error = |img: &Path, args: &[&str], needle: &str| {
        let mut full: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        for a in &mut full {
            *a = a.replace("IMG", s(img));
        }
        let out = vmhub(&full);
        assert_eq!(out.status.code(), Some(1), "{full:?}: {}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(needle),
            "{full:?}: wanted {needle:?} in: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    };
    // A directory whose cluster chain comes back to itself.
    let looped = case(
        "loop.img",
        &[(
            fat + 2 * sub_cluster,
            (sub_cluster as u16).to_le_bytes().to_vec(),
        )],
    );
    expect_error(&looped, &["fs", "ls", "-R", "IMG"], "loops back");
    // A directory that holds itself: the tree never ends.
    let (_, _, data, cluster) = fat16_layout(&good);
    let sub_at = data + (sub_cluster - 2) * cluster;
    let b = std::fs::read(&good).unwrap();
    assert_eq!(
        &b[sub_at as usize + 64..sub_at as usize + 75],
        b"FILE    TXT"
    );
    let cyclic = case(
        "cyclic.img",
        &[
            (sub_at + 64 + 11, vec![0x10]),
            (
                sub_at + 64 + 26,
                (sub_cluster as u16).to_le_bytes().to_vec(),
            ),
            (sub_at + 64 + 28, vec![0; 4]),
        ],
    );
    expect_error(&cyclic, &["fs", "ls", "-R", "IMG"], "nested more than");
    expect_error(
        &cyclic,
        &["fs", "get", "IMG:/", s(&dir.path().join("cyc"))],
        "nested more than",
    );
    // A chain that leaves the volume.
    let past = case(
        "past.img",
        &[(fat + 2 * sub_cluster, 0xFFF0u16.to_le_bytes().to_vec())],
    );
    expect_error(&past, &["fs", "ls", "IMG:/SUB"], "not on the volume");
    // A name holding a slash: listed, but never made into a local path.
    let plain = root_entry(&good, b"PLAIN   TXT");
    let slash = case("slash.img", &[(plain, b"A/B     TXT".to_vec())]);
    let dest = dir.path().join("dest");
    expect_error(
        &slash,
        &["fs", "get", "IMG:/", s(&dest)],
        "cannot be a file name",
    );
    assert!(!dir.path().join("A").exists() && !dest.join("A").exists());
    // `..` as a name.
    let dotdot = case(
        "dotdot.img",
        &[(plain, b"..         ".to_vec()), (plain + 11, vec![0x20])],
    );
    let dest2 = dir.path().join("dest2");
    // A `..` entry is the parent link to every FAT reader: it is passed over,
    // and nothing lands beside the destination.
    let before: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    vmhub_ok(["fs", "get", &format!("{}:/", s(&dotdot)), s(&dest2)]);
    let after: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    assert_eq!(
        read_tree(&dest2).keys().cloned().collect::<Vec<_>>(),
        ["SUB", "SUB/FILE.TXT"]
    );
    // A boot sector that describes more clusters than the volume holds.
    let big = case(
        "big.img",
        &[
            (19, 0u16.to_le_bytes().to_vec()),
            (32, 0x7FFF_FFFFu32.to_le_bytes().to_vec()),
        ],
    );
    expect_error(&big, &["fs", "ls", "IMG"], "big.img");
    // A file whose recorded size is far past its clusters.
    let file = root_entry(&good, b"PLAIN   TXT");
    let huge = case(
        "huge.img",
        &[(file + 28, 0x7FFF_0000u32.to_le_bytes().to_vec())],
    );
    let out = vmhub(["fs", "cat", &format!("{}:/PLAIN.TXT", s(&huge))]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(out.stdout.len() < 1 << 20);
}

#[test]
fn get_never_writes_through_links_or_outside_the_destination() {
    let dir = tempfile::tempdir().unwrap();
    let img = fat_image(dir.path(), "g.img", 16, 16 * 1024);
    // The destination already holds a link where the tree's folder would go.
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let dest = dir.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    std::os::unix::fs::symlink(&outside, dest.join("docs")).unwrap();
    let out = vmhub(["fs", "get", &format!("{}:/docs", s(&img)), s(&dest)]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote through the link"
    );
    // A file over a link replaces the link, not its target.
    let target = dir.path().join("target.txt");
    std::fs::write(&target, b"keep me").unwrap();
    std::os::unix::fs::symlink(&target, dest.join("README.TXT")).unwrap();
    vmhub_ok(["fs", "get", &format!("{}:/README.TXT", s(&img)), s(&dest)]);
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    assert_eq!(
        std::fs::read(dest.join("README.TXT")).unwrap(),
        b"plain 8.3 name\n"
    );
    assert!(!std::fs::symlink_metadata(dest.join("README.TXT"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn compact_fs_drops_free_space_and_keeps_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let raw = fat_image(dir.path(), "c.img", 32, 64 * 1024);
    let big = dir.path().join("big.bin");
    std::fs::write(&big, bytes(11, 24 << 20)).unwrap();
    sh(&format!("mcopy -i {} {} ::/", s(&raw), s(&big)));
    let vhd = dir.path().join("c.vhd");
    vmhub_ok(["img", "convert", s(&raw), s(&vhd)]);
    vmhub_ok(["fs", "rm", &format!("{}:/big.bin", s(&vhd))]);
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    vmhub_ok(["img", "compact", s(&vhd)]);
    let plain = size(&vhd);
    assert!(
        plain > 24 << 20,
        "the deleted file's blocks hold data: {plain}"
    );
    let out = vmhub_ok(["img", "compact", "--fs", s(&vhd)]);
    let after = size(&vhd);
    assert!(
        after < 8 << 20,
        "compact --fs left {after} bytes\n{}",
        describe(&out)
    );
    // Every file reads as before; the filesystem checks clean.
    let dest = dir.path().join("after");
    vmhub_ok(["fs", "get", &format!("{}:/", s(&vhd)), s(&dest)]);
    assert_eq!(read_tree(&dest), tree());
    let flat = dir.path().join("flat.img");
    vmhub_ok(["img", "convert", s(&vhd), s(&flat)]);
    sh(&format!("fsck.vfat -n {}", s(&flat)));
    vmhub_ok(["img", "check", s(&vhd)]);

    // A differencing child: what was written and deleted in it goes.
    let child = dir.path().join("child.vhd");
    vmhub_ok(["img", "create", s(&child), "--parent", s(&vhd)]);
    let before_base = sha(&vhd);
    vmhub_ok(["fs", "put", s(&big), &format!("{}:/", s(&child))]);
    vmhub_ok(["fs", "rm", &format!("{}:/big.bin", s(&child))]);
    assert!(size(&child) > 24 << 20);
    vmhub_ok(["img", "compact", "--fs", s(&child)]);
    assert!(size(&child) < 4 << 20, "child left at {}", size(&child));
    assert_eq!(sha(&vhd), before_base);
    let dest = dir.path().join("child-after");
    vmhub_ok(["fs", "get", &format!("{}:/", s(&child)), s(&dest)]);
    assert_eq!(read_tree(&dest), tree());
    let flat = dir.path().join("child-flat.img");
    vmhub_ok(["img", "convert", s(&child), s(&flat)]);
    sh(&format!("fsck.vfat -n {}", s(&flat)));
}

#[test]
fn inspect_tells_the_machine_and_fs_reads_ext4_but_will_not_write_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(
        root.join("etc/os-release"),
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/hostname"), "build-box\n").unwrap();
    // A real x86-64 ELF program, reached through a link as on merged-/usr systems.
    std::fs::copy(
        std::fs::canonicalize("/bin/sh").unwrap(),
        root.join("usr/bin/sh"),
    )
    .unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    let raw = dir.path().join("root.img");
    sh(&format!(
        "mke2fs -q -F -t ext4 -L rootfs -d {} {} 16M",
        s(&root),
        s(&raw)
    ));
    let vhd = dir.path().join("root.vhd");
    vmhub_ok(["img", "convert", s(&raw), s(&vhd)]);
    let out = vmhub_ok(["inspect", "--output", "json", s(&vhd)]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["os"]["family"], "linux", "{r}");
    assert_eq!(r["os"]["distribution"], "debian");
    assert_eq!(r["os"]["version"], "12");
    assert_eq!(r["os"]["name"], "Debian GNU/Linux 12 (bookworm)");
    assert_eq!(r["os"]["hostname"], "build-box");
    let arch = if cfg!(target_arch = "x86_64") {
        "x86_64"
    } else {
        std::env::consts::ARCH
    };
    assert_eq!(r["os"]["architecture"], arch);
    assert_eq!(r["filesystems"][0]["filesystem"], "ext4");
    assert_eq!(r["filesystems"][0]["label"], "rootfs");
    let human = String::from_utf8(vmhub_ok(["inspect", s(&vhd)]).stdout).unwrap();
    assert!(
        human.contains("Debian GNU/Linux 12 (bookworm)") && human.contains("build-box"),
        "{human}"
    );
    // fs reads ext4 through the VHD, links included.
    let out = vmhub_ok(["fs", "cat", &format!("{}:/etc/hostname", s(&vhd))]);
    assert_eq!(out.stdout, b"build-box\n");
    let listed = ls_json(s(&vhd));
    let bin = listed.iter().find(|e| e["path"] == "/bin").unwrap();
    assert_eq!(bin["kind"], "symlink");
    // Writing is FAT only: the refusal says so and changes nothing.
    let before = sha(&vhd);
    let f = dir.path().join("x.txt");
    std::fs::write(&f, b"x").unwrap();
    let out = vmhub(["fs", "put", s(&f), &format!("{}:/etc/", s(&vhd))]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("read-only"),
        "{}",
        describe(&out)
    );
    assert_eq!(sha(&vhd), before);
    // A disk with nothing vmhub can read says so.
    let blank = dir.path().join("blank.vhd");
    vmhub_ok(["img", "create", s(&blank), "8M"]);
    let out = vmhub_ok(["inspect", "--output", "json", s(&blank)]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["os"]["family"], "unknown");
    let out = vmhub(["fs", "ls", s(&blank)]);
    assert_eq!(out.status.code(), Some(1));
}
