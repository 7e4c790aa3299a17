//! A machine to browse: a raw disk with an MBR, a FAT partition and an ext4
//! root filesystem built by the real tools (sfdisk, mkfs.vfat, mcopy,
//! mke2fs -d), imported into a library and pushed to a hub blob by blob.

#![allow(dead_code)]

use crate::common::Client;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the ext4 root's /etc/os-release holds.
pub const OS_RELEASE: &str = "NAME=\"Browse Linux\"\nID=browse\nVERSION_ID=7\n\
PRETTY_NAME=\"Browse Linux 7 <&> \\\"quoted\\\"\"\n";
/// What the FAT partition's HELLO.TXT holds.
pub const HELLO: &str = "hello from FAT\r\n";
/// The size of /big.txt on the root (past the inline cap of 256 KiB).
pub const BIG: usize = 300 << 10;

/// Layout, in 512-byte sectors: 1 MiB gap, 8 MiB FAT, 23 MiB ext4.
const DISK_SECTORS: u64 = 65536;
const FAT_START: u64 = 2048;
const FAT_SECTORS: u64 = 16384;
const ROOT_START: u64 = FAT_START + FAT_SECTORS;
const ROOT_SECTORS: u64 = DISK_SECTORS - ROOT_START;

/// Whether `tool` can be run (sbin included); under CI=true a missing tool
/// fails the test, elsewhere the test is skipped with the reason printed.
pub fn have_tools(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| which(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "missing {} (scripts/deps.sh installs them)",
        missing.join(", ")
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
    false
}

/// The path of `tool` on PATH or in the sbin folders.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file());
    found
}

fn run(tool: &str, args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let exe = which(tool).unwrap_or_else(|| panic!("{tool} is not installed"));
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The tools [`build_disk`] needs.
pub const TOOLS: &[&str] = &["sfdisk", "mkfs.vfat", "mcopy", "mke2fs"];

/// Builds `dir/disk.raw`; returns its path and the bytes of /big.txt and
/// /bin/blob.
pub fn build_disk(dir: &Path) -> (PathBuf, Vec<u8>, Vec<u8>) {
    let img = dir.join("disk.raw");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(DISK_SECTORS * 512).unwrap();
    drop(f);
    let p = img.to_str().unwrap();
    run(
        "sfdisk",
        &["-q", "--no-reread", "--no-tell-kernel", p],
        Some(&format!(
            "label: dos\nunit: sectors\nstart={FAT_START}, size={FAT_SECTORS}, type=e\n\
             start={ROOT_START}, size={ROOT_SECTORS}, type=83\n"
        )),
    );
    run(
        "mkfs.vfat",
        &[
            "-F",
            "16",
            "-n",
            "BOOT",
            "-s",
            "1",
            "--offset",
            &FAT_START.to_string(),
            p,
            &(FAT_SECTORS / 2).to_string(),
        ],
        None,
    );
    let hello = dir.join("HELLO.TXT");
    std::fs::write(&hello, HELLO).unwrap();
    run(
        "mcopy",
        &[
            "-i",
            &format!("{p}@@{}", FAT_START * 512),
            hello.to_str().unwrap(),
            "::/",
        ],
        None,
    );

    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc/odd")).unwrap();
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::write(root.join("etc/os-release"), OS_RELEASE).unwrap();
    std::fs::write(root.join("etc/hostname"), "browse\n").unwrap();
    std::fs::write(root.join("etc/odd/a b&<c>.txt"), "odd\n").unwrap();
    std::os::unix::fs::symlink("../etc/os-release", root.join("bin/release")).unwrap();
    let big: Vec<u8> = (0..BIG)
        .map(|i| {
            if i % 64 == 63 {
                b'\n'
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect();
    std::fs::write(root.join("big.txt"), &big).unwrap();
    let blob: Vec<u8> = (0..70_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(root.join("bin/blob"), &blob).unwrap();
    run(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            "ext4",
            "-E",
            &format!("offset={},root_owner=0:0", ROOT_START * 512),
            "-d",
            root.to_str().unwrap(),
            p,
            &format!("{}k", ROOT_SECTORS / 2),
        ],
        None,
    );
    // mke2fs may leave the file shorter or longer than the disk.
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len(DISK_SECTORS * 512).unwrap();
    (img, big, blob)
}

/// Imports `disk` as `reference` into a library in `home` and pushes it to
/// the hub `client` talks to, blob by blob; returns the manifest digest and
/// the manifest.
pub fn push(
    client: &Client,
    home: &Path,
    disk: &Path,
    reference: &str,
) -> (String, store::manifest::Manifest) {
    let lib = store::Library::open(home).unwrap();
    let r: store::MachineRef = reference.parse().unwrap();
    let d = vdisk::open(disk, vdisk::OpenOptions { writable: false }).unwrap();
    let opts = store::library::ImportOptions {
        description: Some("a machine to look inside".into()),
        version: Some("7".into()),
        ..Default::default()
    };
    let imported = lib
        .import(
            &[store::library::DiskSource {
                name: "disk0".into(),
                disk: d.as_ref(),
            }],
            &r,
            &opts,
            &mut |_, _| {},
        )
        .unwrap();
    let (_, manifest, _) = lib.resolve(&r).unwrap();
    let blobs = lib.blobs();
    let mut all = vec![manifest.config.digest];
    all.extend(manifest.layers.iter().map(|l| l.digest));
    for d in all {
        let data = std::fs::read(blobs.path(&d)).unwrap();
        client.push_blob(&r.name, &data);
    }
    let json = std::fs::read(blobs.path(&imported.manifest)).unwrap();
    let a = client.push_manifest(&r.name, &r.tag, store::manifest::MANIFEST_MEDIA_TYPE, &json);
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    (imported.manifest.to_string(), manifest)
}
