//! `vmhub img from-dir` end to end: a folder into a dynamic VHD that qemu-img
//! reads, whose filesystem mtools copies back out byte for byte.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vmhub(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmhub"))
        .args(args)
        .output()
        .expect("vmhub runs")
}

fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs a tool with the sbin directories on PATH; a missing or failing tool
/// fails the test.
fn tool(cmd: &str, args: &[&str]) -> String {
    let path = format!(
        "/usr/sbin:/sbin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    let o = match Command::new(cmd)
        .args(args)
        .env("PATH", path)
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("LC_ALL", "C.UTF-8")
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!(
            "{cmd}: {e} (these tests need qemu-utils, mtools and dosfstools: run scripts/deps.sh)"
        ),
    };
    assert!(
        o.status.success(),
        "`{cmd} {}` failed:\n{}",
        args.join(" "),
        describe(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Everything under `root`: path → contents, `None` for a folder.
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

fn make_tree(root: &Path) {
    let file = |rel: &str, data: &[u8]| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    file("boot/config.txt", b"setting=1\n");
    file("docs/résumé été.txt", "accents".as_bytes());
    file("docs/日本語.txt", "日本語".as_bytes());
    file(
        "A long name that is not 8.3 at all.data",
        &noise(2 * 1024 * 1024 + 7, 3),
    );
    file("empty", b"");
    std::fs::create_dir_all(root.join("empty folder")).unwrap();
    for i in 0..40 {
        file(&format!("many/{i}.txt"), format!("{i}").as_bytes());
    }
}

#[test]
fn a_folder_becomes_a_vhd_qemu_and_mtools_read() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src);
    let vhd = work.path().join("disk.vhd");
    let o = vmhub(&[
        "img",
        "from-dir",
        s(&src),
        s(&vhd),
        "--label",
        "Data",
        "--output",
        "json",
    ]);
    assert!(o.status.success(), "{}", describe(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["fs"], "fat12", "{summary}");
    assert_eq!(summary["table"], "mbr", "{summary}");
    assert_eq!(summary["files"], 45, "{summary}");
    assert_eq!(summary["dirs"], 4, "{summary}");
    let size = summary["image_size"].as_u64().unwrap();
    let start = summary["volume_start"].as_u64().unwrap();
    assert_eq!(start, 1 << 20);

    let info: serde_json::Value = serde_json::from_str(&tool(
        "qemu-img",
        &["info", "-f", "vpc", "--output", "json", s(&vhd)],
    ))
    .unwrap();
    assert_eq!(info["format"], "vpc", "{info}");
    assert_eq!(info["virtual-size"].as_u64(), Some(size), "{info}");
    // Only a dynamic VHD has blocks (qemu calls them clusters).
    assert_eq!(info["cluster-size"].as_u64(), Some(2 << 20), "{info}");

    let raw = work.path().join("disk.raw");
    tool(
        "qemu-img",
        &["convert", "-f", "vpc", "-O", "raw", s(&vhd), s(&raw)],
    );
    let at = format!("{}@@{start}", s(&raw));
    assert!(tool("mdir", &["-i", &at, "::/"]).contains("DATA"));
    let out = work.path().join("out");
    tool("mcopy", &["-s", "-i", &at, "::/", s(&out)]);
    let (got, want) = (read_tree(&out), read_tree(&src));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    assert!(got == want, "file contents differ");

    // Human output names what was made.
    let again = work.path().join("again.img");
    let o = vmhub(&[
        "img",
        "from-dir",
        s(&src),
        s(&again),
        "--table",
        "gpt",
        "--fs",
        "fat16",
    ]);
    assert!(o.status.success(), "{}", describe(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("FAT16") && text.contains("GPT") && text.contains("45 files"),
        "{text}"
    );
    // The .img extension means raw: the file is exactly the disk.
    let sgdisk = tool("sgdisk", &["-v", s(&again)]);
    assert!(sgdisk.contains("No problems found"), "{sgdisk}");
}

#[test]
fn too_small_a_size_fails_and_writes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src);
    let vhd = work.path().join("small.vhd");
    let o = vmhub(&["img", "from-dir", s(&src), s(&vhd), "--size", "2M"]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("too small") && err.contains("needs at least"),
        "{err}"
    );
    assert!(!vhd.exists());
    let names: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("src")],
        "left behind: {names:?}"
    );
}

#[test]
fn a_bad_fs_value_fails() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src);
    let vhd = work.path().join("x.vhd");
    let o = vmhub(&["img", "from-dir", s(&src), s(&vhd), "--fs", "ntfs"]);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("fat32"),
        "{}",
        describe(&o)
    );
    assert!(!vhd.exists());
    // A type the size cannot take is refused with the reason.
    let o = vmhub(&[
        "img",
        "from-dir",
        s(&src),
        s(&vhd),
        "--fs",
        "fat32",
        "--size",
        "8M",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("FAT32 cannot be made"),
        "{}",
        describe(&o)
    );
    assert!(!vhd.exists());
}
