//! `vfs::inspect` on images made by the real tools (mkfs.vfat, mtools,
//! sfdisk, mke2fs) from small trees that hold the files each rule reads.

// Not every helper is used here.
#[allow(dead_code)]
mod common;

use common::{run_command, tool, write_file};
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use vfs::inspect::{inspect, Family, Filesystem, Os, Report, Role};
use vfs::{FsKind, Image, TableKind};

// ---------------------------------------------------------------- helpers

/// Writes `files` (path, contents) under `root`; a path ending in `/` is a
/// directory.
fn tree(root: &Path, files: &[(&str, Vec<u8>)]) {
    fs::create_dir_all(root).unwrap();
    for (path, data) in files {
        let p = root.join(path.trim_end_matches('/'));
        if path.ends_with('/') {
            fs::create_dir_all(&p).unwrap();
        } else {
            write_file(root, path, data);
        }
    }
}

/// Copies everything in `src` into the FAT filesystem at byte `offset` of
/// `image`.
fn mcopy(image: &Path, offset: u64, src: &Path) {
    let items: Vec<PathBuf> = fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    if items.is_empty() {
        return;
    }
    let mut c = tool("mcopy");
    c.arg("-s")
        .arg("-i")
        .arg(format!("{}@@{offset}", image.display()));
    c.args(&items).arg("::/");
    run_command(&mut c);
}

/// A FAT image without a partition table holding `files`.
fn fat_image(dir: &Path, name: &str, label: &str, files: &[(&str, Vec<u8>)]) -> PathBuf {
    let img = dir.join(format!("{name}.raw"));
    let src = dir.join(format!("{name}.tree"));
    tree(&src, files);
    run_command(
        tool("mkfs.vfat")
            .arg("-n")
            .arg(label)
            .arg("-C")
            .arg(&img)
            .arg("8192"),
    );
    mcopy(&img, 0, &src);
    img
}

/// One partition: its type as sfdisk takes it, and either a FAT label and
/// files, or bytes to write at offsets into it.
enum Part<'a> {
    Fat(&'a str, &'a str, &'a [(&'a str, Vec<u8>)]),
    Raw(&'a str, Vec<(u64, &'a [u8])>),
}

const MIB: u64 = 1 << 20;

/// A disk with a `label` ("dos" or "gpt") partition table and `parts` of
/// `size_mib` each, the first at 1 MiB.
fn disk(dir: &Path, name: &str, label: &str, size_mib: u64, parts: &[Part<'_>]) -> PathBuf {
    let img = dir.join(format!("{name}.raw"));
    // One more MiB at the end for the backup GPT.
    let total = (2 + size_mib * parts.len() as u64) * MIB;
    run_command(tool("truncate").arg("-s").arg(total.to_string()).arg(&img));
    let mut script = format!("label: {label}\n");
    for (i, p) in parts.iter().enumerate() {
        let start = (1 + size_mib * i as u64) * 2048;
        let (Part::Fat(kind, ..) | Part::Raw(kind, _)) = p;
        script += &format!("start={start}, size={}, type={kind}\n", size_mib * 2048);
    }
    let table = dir.join(format!("{name}.sfdisk"));
    fs::write(&table, script).unwrap();
    run_command(
        tool("sfdisk")
            .arg("--no-reread")
            .arg("-q")
            .arg(&img)
            .stdin(fs::File::open(&table).unwrap()),
    );
    for (i, p) in parts.iter().enumerate() {
        let start = (1 + size_mib * i as u64) * MIB;
        match p {
            Part::Fat(_, label, files) => {
                run_command(
                    tool("mkfs.vfat")
                        .arg("-n")
                        .arg(label)
                        .arg(format!("--offset={}", start / 512))
                        .arg(&img)
                        .arg((size_mib * 1024).to_string()),
                );
                let src = dir.join(format!("{name}.{i}.tree"));
                tree(&src, files);
                mcopy(&img, start, &src);
            }
            Part::Raw(_, writes) => {
                let mut f = fs::OpenOptions::new().write(true).open(&img).unwrap();
                for (at, bytes) in writes {
                    f.seek(SeekFrom::Start(start + at)).unwrap();
                    f.write_all(bytes).unwrap();
                }
            }
        }
    }
    img
}

fn report_of(img: &Path) -> Report {
    let image = Image::open(img, false).unwrap();
    inspect(&image).unwrap()
}

/// The host's own shell, a small real ELF program.
fn host_elf() -> Vec<u8> {
    fs::read("/bin/sh").unwrap()
}

/// The architecture name inspection gives the host's programs.
fn host_arch() -> String {
    match std::env::consts::ARCH {
        "x86" => "i386".to_string(),
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le".to_string(),
        other => other.to_string(),
    }
}

fn os(family: Family) -> Os {
    Os::new(family)
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn text(v: &str) -> Vec<u8> {
    v.as_bytes().to_vec()
}

fn one_fs(r: &Report, number: u32, kind: FsKind, label: Option<&str>, size: u64, role: Role) {
    let f: &Filesystem = r
        .filesystems
        .iter()
        .find(|f| f.number == number)
        .unwrap_or_else(|| panic!("no partition {number} in {:?}", r.filesystems));
    assert_eq!(f.filesystem, kind, "{f:?}");
    assert_eq!(f.label.as_deref(), label, "{f:?}");
    assert_eq!(f.size, size, "{f:?}");
    assert_eq!(f.role, role, "{f:?}");
}

const IMG_8M: u64 = 8192 * 1024;

const DEBIAN_OS_RELEASE: &str = r#"PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
"#;

fn debian_tree() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("etc/os-release", text(DEBIAN_OS_RELEASE)),
        ("etc/hostname", text("debhost\n")),
        ("bin/sh", host_elf()),
        ("usr/bin/", Vec::new()),
    ]
}

/// The Debian 12 system [`debian_tree`] holds, with `hostname`.
fn debian(hostname: &str) -> Os {
    linux(
        "debian",
        "Debian GNU/Linux 12 (bookworm)",
        "12",
        Some(hostname),
    )
}

/// A Linux system whose programs are the host's, on partition 0.
fn linux(distribution: &str, name: &str, version: &str, hostname: Option<&str>) -> Os {
    Os {
        distribution: s(distribution),
        name: s(name),
        version: s(version),
        architecture: Some(host_arch()),
        hostname: hostname.map(str::to_string),
        partition: Some(0),
        ..os(Family::Linux)
    }
}

/// A Windows system on partition 0.
fn windows(name: &str, version: &str, architecture: &str) -> Os {
    Os {
        name: s(name),
        version: s(version),
        architecture: s(architecture),
        partition: Some(0),
        ..os(Family::Windows)
    }
}

/// A DOS system on partition 0.
fn dos(distribution: &str, name: &str, version: &str) -> Os {
    Os {
        distribution: s(distribution),
        name: s(name),
        version: s(version),
        architecture: s("x86"),
        partition: Some(0),
        ..os(Family::Dos)
    }
}

/// Inspects a FAT volume without a partition table, labelled `label` and
/// holding `files`, and checks that it finds `want` on a filesystem of role
/// `role`, with nothing to note.
fn bare_fat(name: &str, label: &str, files: &[(&str, Vec<u8>)], want: Os, role: Role) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let img = fat_image(dir.path(), name, label, files);
    let r = report_of(&img);
    assert_eq!(r.os, want);
    one_fs(&r, 0, FsKind::Fat12, Some(label), IMG_8M, role);
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    r
}

// ---------------------------------------------------- a PE kernel, by hand

/// A UTF-16LE string with its NUL.
fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

fn pad4(b: &mut Vec<u8>) {
    while b.len() % 4 != 0 {
        b.push(0);
    }
}

/// One version-resource node: length, value length, type, key, value,
/// children, each 32-bit aligned.
fn vs_node(key: &str, value: &[u8], value_len: u16, text: bool, children: &[Vec<u8>]) -> Vec<u8> {
    let mut b = vec![0u8; 6];
    b[2..4].copy_from_slice(&value_len.to_le_bytes());
    b[4] = text as u8;
    b.extend(utf16z(key));
    pad4(&mut b);
    b.extend_from_slice(value);
    for c in children {
        pad4(&mut b);
        b.extend_from_slice(c);
    }
    let len = b.len() as u16;
    b[0..2].copy_from_slice(&len.to_le_bytes());
    b
}

/// A `VS_VERSIONINFO` for `version` with a ProductName string.
fn version_info(version: [u16; 4], product: &str) -> Vec<u8> {
    let string = |k: &str, v: &str| {
        vs_node(
            k,
            &utf16z(v),
            v.encode_utf16().count() as u16 + 1,
            true,
            &[],
        )
    };
    let dotted = version.map(|n| n.to_string()).join(".");
    let table = vs_node(
        "040904B0",
        &[],
        0,
        true,
        &[
            string("CompanyName", "Microsoft Corporation"),
            string("FileVersion", &format!("{dotted} (WinBuild.160101.0800)")),
            string("ProductName", product),
            string("ProductVersion", &dotted),
        ],
    );
    let sfi = vs_node("StringFileInfo", &[], 0, true, &[table]);
    let ms = ((version[0] as u32) << 16) | version[1] as u32;
    let ls = ((version[2] as u32) << 16) | version[3] as u32;
    let mut fixed = Vec::new();
    for v in [0xFEEF_04BDu32, 0x1_0000, ms, ls, ms, ls] {
        fixed.extend(v.to_le_bytes());
    }
    fixed.resize(52, 0);
    vs_node("VS_VERSION_INFO", &fixed, 52, false, &[sfi])
}

/// The ProductName of Windows' own files.
const WINDOWS_PRODUCT: &str = "Microsoft® Windows® Operating System";

/// A PE file (PE32+ when `wide`, else PE32) for `machine` whose only
/// section is a resource table holding one version resource.
fn pe_with_version(machine: u16, wide: bool, version: [u16; 4], product: &str) -> Vec<u8> {
    const RSRC_RVA: u32 = 0x1000;
    const RSRC_FILE: usize = 0x200;
    let vs = version_info(version, product);
    // Resource tree: type 16 (RT_VERSION) -> name 1 -> language 0x409 ->
    // data entry -> the VS_VERSIONINFO bytes.
    let mut rsrc = Vec::new();
    let dir = |rsrc: &mut Vec<u8>, id: u32, target: u32| {
        rsrc.extend([0u8; 12]);
        rsrc.extend(0u16.to_le_bytes());
        rsrc.extend(1u16.to_le_bytes());
        rsrc.extend(id.to_le_bytes());
        rsrc.extend(target.to_le_bytes());
    };
    dir(&mut rsrc, 16, 0x8000_0000 | 0x18);
    dir(&mut rsrc, 1, 0x8000_0000 | 0x30);
    dir(&mut rsrc, 0x409, 0x48);
    rsrc.extend((RSRC_RVA + 0x58).to_le_bytes());
    rsrc.extend((vs.len() as u32).to_le_bytes());
    rsrc.extend([0u8; 8]);
    rsrc.resize(0x58, 0);
    rsrc.extend(&vs);

    let mut f = vec![0u8; RSRC_FILE];
    f[0..2].copy_from_slice(b"MZ");
    f[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
    f[0x40..0x44].copy_from_slice(b"PE\0\0");
    let coff = 0x44;
    let opt_size: u16 = if wide { 240 } else { 224 };
    f[coff..coff + 2].copy_from_slice(&machine.to_le_bytes());
    f[coff + 2..coff + 4].copy_from_slice(&1u16.to_le_bytes());
    f[coff + 16..coff + 18].copy_from_slice(&opt_size.to_le_bytes());
    f[coff + 18..coff + 20].copy_from_slice(&0x22u16.to_le_bytes());
    let opt = coff + 20;
    let (magic, count_at, dirs_at) = if wide {
        (0x20bu16, opt + 108, opt + 112)
    } else {
        (0x10bu16, opt + 92, opt + 96)
    };
    f[opt..opt + 2].copy_from_slice(&magic.to_le_bytes());
    f[count_at..count_at + 4].copy_from_slice(&16u32.to_le_bytes());
    f[dirs_at + 16..dirs_at + 20].copy_from_slice(&RSRC_RVA.to_le_bytes());
    f[dirs_at + 20..dirs_at + 24].copy_from_slice(&(rsrc.len() as u32).to_le_bytes());
    let sec = opt + opt_size as usize;
    let raw_size = rsrc.len().div_ceil(0x200) * 0x200;
    f[sec..sec + 8].copy_from_slice(b".rsrc\0\0\0");
    f[sec + 8..sec + 12].copy_from_slice(&(rsrc.len() as u32).to_le_bytes());
    f[sec + 12..sec + 16].copy_from_slice(&RSRC_RVA.to_le_bytes());
    f[sec + 16..sec + 20].copy_from_slice(&(raw_size as u32).to_le_bytes());
    f[sec + 20..sec + 24].copy_from_slice(&(RSRC_FILE as u32).to_le_bytes());
    f.extend(&rsrc);
    f.resize(RSRC_FILE + raw_size, 0);
    f
}

// ------------------------------------------------------------------ tests

#[test]
fn debian_on_a_bare_fat_volume() {
    let r = bare_fat(
        "debian",
        "DEBROOT",
        &debian_tree(),
        debian("debhost"),
        Role::LinuxRoot,
    );
    assert_eq!(r.partition_table, TableKind::None);
    assert_eq!(r.filesystems.len(), 1);
}

#[test]
fn ubuntu_os_release_and_usr_bin_env() {
    let files = vec![
        (
            "etc/os-release",
            text(
                "NAME=\"Ubuntu\"\nVERSION=\"22.04.3 LTS (Jammy Jellyfish)\"\nID=ubuntu\nID_LIKE=debian\n\
                 PRETTY_NAME=\"Ubuntu 22.04.3 LTS\"\nVERSION_ID=\"22.04\"\n",
            ),
        ),
        ("etc/hostname", text("# set by the installer\n\nubuntu-vm\n")),
        ("usr/bin/env", host_elf()),
    ];
    let want = Os {
        distribution_like: vec!["debian".to_string()],
        ..linux("ubuntu", "Ubuntu 22.04.3 LTS", "22.04", Some("ubuntu-vm"))
    };
    bare_fat("ubuntu", "UBUNTU", &files, want, Role::LinuxRoot);
}

#[test]
fn fedora_usr_lib_os_release_and_sbin_init() {
    let files = vec![
        ("etc/fstab", text("# empty\n")),
        (
            "usr/lib/os-release",
            text(
                "NAME=\"Fedora Linux\"\nVERSION=\"39 (Server Edition)\"\nID=fedora\nVERSION_ID=39\n\
                 PRETTY_NAME=\"Fedora Linux 39 (Server Edition)\"\nVARIANT_ID=server\n",
            ),
        ),
        ("sbin/init", host_elf()),
    ];
    let want = linux("fedora", "Fedora Linux 39 (Server Edition)", "39", None);
    bare_fat("fedora", "FEDORA", &files, want, Role::LinuxRoot);
}

#[test]
fn old_redhat_release_without_os_release() {
    let files = vec![
        ("etc/redhat-release", text("CentOS release 6.10 (Final)\n")),
        (
            "etc/sysconfig/network",
            text("NETWORKING=yes\nHOSTNAME=oldbox\n"),
        ),
        ("bin/busybox", host_elf()),
    ];
    let want = linux(
        "centos",
        "CentOS release 6.10 (Final)",
        "6.10",
        Some("oldbox"),
    );
    bare_fat("centos", "CENTOS", &files, want, Role::LinuxRoot);
}

#[test]
fn windows_11_x64_kernel_version_resource() {
    let kernel = pe_with_version(0x8664, true, [10, 0, 22631, 2428], WINDOWS_PRODUCT);
    let files = vec![
        ("Windows/System32/ntoskrnl.exe", kernel),
        ("Windows/System32/config/", Vec::new()),
        ("Users/", Vec::new()),
    ];
    let want = windows("Windows 11", "10.0.22631.2428", "x86_64");
    bare_fat("win11", "WINSYS", &files, want, Role::WindowsSystem);
}

#[test]
fn windows_7_x86_kernel32_in_upper_case_folders() {
    let kernel32 = pe_with_version(0x014c, false, [6, 1, 7601, 17514], WINDOWS_PRODUCT);
    let files = vec![("WINDOWS/SYSTEM32/KERNEL32.DLL", kernel32)];
    let want = windows("Windows 7", "6.1.7601.17514", "i386");
    bare_fat("win7", "WIN7", &files, want, Role::WindowsSystem);
}

#[test]
fn freedos_kernel_sys() {
    let files = vec![
        ("KERNEL.SYS", vec![0xeb, 0x3c, 0x90, 0, 0, 0]),
        ("COMMAND.COM", text("\u{1}FreeDOS command shell")),
        ("FDCONFIG.SYS", text("!COUNTRY=001,858\r\n!LASTDRIVE=Z\r\n")),
        (
            "FDAUTO.BAT",
            text("@ECHO OFF\r\nSET OS_NAME=FreeDOS\r\nSET OS_VERSION=1.3\r\n"),
        ),
        ("FREEDOS/BIN/", Vec::new()),
    ];
    let want = dos("freedos", "FreeDOS 1.3", "1.3");
    bare_fat("freedos", "FREEDOS", &files, want, Role::DosSystem);
}

#[test]
fn msdos_io_sys_and_msdos_sys() {
    let mut command = vec![0xe9, 0x10, 0x00];
    command.extend(b"\0\0Specified COMMAND search directory bad\r\n$MS-DOS Version 6.22\r\n$");
    let files = vec![
        ("IO.SYS", vec![0x4d, 0x5a, 0, 1, 2, 3]),
        ("MSDOS.SYS", vec![0xe9, 0, 0, 0, 0]),
        ("COMMAND.COM", command),
    ];
    let want = dos("msdos", "MS-DOS 6.22", "6.22");
    bare_fat("msdos", "MSDOS622", &files, want, Role::DosSystem);
}

#[test]
fn mbr_disk_with_boot_and_root_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let boot = vec![
        ("vmlinuz-6.1.0-13-amd64", vec![0x4d, 0x5a, 1, 2]),
        ("initrd.img-6.1.0-13-amd64", vec![0x1f, 0x8b, 8, 0]),
        ("grub/grub.cfg", text("set default=0\n")),
    ];
    let root = debian_tree();
    let img = disk(
        dir.path(),
        "two",
        "dos",
        16,
        &[
            Part::Fat("6", "BOOT", &boot),
            Part::Fat("83", "ROOT", &root),
        ],
    );
    let r = report_of(&img);
    let want = Os {
        partition: Some(2),
        ..debian("debhost")
    };
    assert_eq!(r.os, want);
    assert_eq!(r.partition_table, TableKind::Mbr);
    assert_eq!(r.filesystems.len(), 2);
    one_fs(&r, 1, FsKind::Fat16, Some("BOOT"), 16 * MIB, Role::Boot);
    one_fs(
        &r,
        2,
        FsKind::Fat16,
        Some("ROOT"),
        16 * MIB,
        Role::LinuxRoot,
    );
    assert!(r.notes.is_empty(), "{:?}", r.notes);

    // The JSON the CLI prints.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["os"]["family"], "linux");
    assert_eq!(json["os"]["distribution"], "debian");
    assert_eq!(json["os"]["partition"], 2);
    assert!(json["os"].get("distribution_like").is_none());
    assert_eq!(json["partition_table"], "mbr");
    assert_eq!(json["filesystems"][0]["role"], "boot");
    assert_eq!(json["filesystems"][0]["filesystem"], "fat16");
    assert_eq!(json["filesystems"][1]["role"], "linux root");
    assert_eq!(json["filesystems"][1]["label"], "ROOT");
    assert_eq!(json["filesystems"][1]["size"], 16 * MIB);
    assert_eq!(json["notes"], serde_json::json!([]));
}

#[test]
fn gpt_disk_with_efi_and_windows_server() {
    let dir = tempfile::tempdir().unwrap();
    let esp = vec![
        ("EFI/BOOT/BOOTX64.EFI", vec![0x4d, 0x5a, 0, 0]),
        ("EFI/Microsoft/Boot/BCD", vec![0u8; 16]),
    ];
    let kernel = pe_with_version(0x8664, true, [10, 0, 20348, 2031], WINDOWS_PRODUCT);
    let system = vec![
        ("Windows/System32/ntoskrnl.exe", kernel),
        ("Windows/System32/ServerManager.exe", vec![0x4d, 0x5a]),
    ];
    let img = disk(
        dir.path(),
        "gpt",
        "gpt",
        8,
        &[
            Part::Fat("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "ESP", &esp),
            Part::Fat("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "SERVER", &system),
        ],
    );
    let r = report_of(&img);
    let want = Os {
        partition: Some(2),
        ..windows("Windows Server 2022", "10.0.20348.2031", "x86_64")
    };
    assert_eq!(r.os, want);
    assert_eq!(r.partition_table, TableKind::Gpt);
    assert_eq!(r.filesystems.len(), 2);
    one_fs(&r, 1, FsKind::Fat12, Some("ESP"), 8 * MIB, Role::EfiSystem);
    one_fs(
        &r,
        2,
        FsKind::Fat12,
        Some("SERVER"),
        8 * MIB,
        Role::WindowsSystem,
    );
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["os"]["family"], "windows");
    assert_eq!(json["os"]["distribution"], serde_json::Value::Null);
    assert_eq!(json["filesystems"][0]["role"], "EFI system");
    assert_eq!(json["filesystems"][1]["role"], "windows system");
}

#[test]
fn nothing_readable_is_unknown_with_notes() {
    let dir = tempfile::tempdir().unwrap();
    let etc_only = vec![("etc/motd", text("hello\n"))];
    let data = vec![("photos/a.txt", text("not a system\n"))];
    let xfs: &[u8] = b"XFSB";
    let swap: &[u8] = b"SWAPSPACE2";
    let img = disk(
        dir.path(),
        "unknown",
        "dos",
        4,
        &[
            Part::Fat("83", "ETC", &etc_only),
            Part::Raw("83", vec![(0, xfs)]),
            Part::Raw("83", vec![]),
            Part::Raw("82", vec![(4086, swap)]),
        ],
    );
    let r = report_of(&img);
    assert_eq!(r.os, os(Family::Unknown));
    assert_eq!(r.partition_table, TableKind::Mbr);
    assert_eq!(r.filesystems.len(), 4);
    one_fs(&r, 1, FsKind::Fat12, Some("ETC"), 4 * MIB, Role::Data);
    one_fs(&r, 2, FsKind::Xfs, None, 4 * MIB, Role::Unreadable);
    one_fs(&r, 3, FsKind::Unknown, None, 4 * MIB, Role::Unreadable);
    one_fs(&r, 4, FsKind::Swap, None, 4 * MIB, Role::Swap);
    assert_eq!(
        r.notes,
        [
            "partition 1: fat12 with /etc but no os-release, release file or shell vmhub recognizes",
            "partition 2: xfs, which vmhub cannot read",
            "partition 3: no filesystem recognized (Linux)",
            "partition 4: swap space",
        ]
    );

    // A volume of plain files, without a partition table.
    let lone = fat_image(dir.path(), "data", "DATA", &data);
    let r = report_of(&lone);
    assert_eq!(r.os, os(Family::Unknown));
    one_fs(&r, 0, FsKind::Fat12, Some("DATA"), IMG_8M, Role::Data);
    assert_eq!(
        r.notes,
        ["the disk: fat12 with no /etc, \\Windows or DOS system files"]
    );

    let blank = dir.path().join("blank.raw");
    fs::write(&blank, vec![0u8; 1 << 20]).unwrap();
    let r = report_of(&blank);
    assert_eq!(r.os, os(Family::Unknown));
    assert_eq!(r.partition_table, TableKind::None);
    assert!(r.filesystems.is_empty());
    assert_eq!(
        r.notes,
        ["the disk has no partition table and no filesystem vmhub recognizes"]
    );
}

#[test]
fn debian_on_ext4_with_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("ext.tree");
    tree(
        &src,
        &[
            ("usr/lib/os-release", text(DEBIAN_OS_RELEASE)),
            ("usr/bin/sh", host_elf()),
            ("etc/hostname", text("extbox\n")),
        ],
    );
    std::os::unix::fs::symlink("usr/bin", src.join("bin")).unwrap();
    std::os::unix::fs::symlink("../usr/lib/os-release", src.join("etc/os-release")).unwrap();
    let img = dir.path().join("ext4.raw");
    run_command(
        tool("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-L", "extroot", "-d"])
            .arg(&src)
            .arg(&img)
            .arg("32M"),
    );
    let r = report_of(&img);
    assert_eq!(r.os, debian("extbox"));
    one_fs(
        &r,
        0,
        FsKind::Ext4,
        Some("extroot"),
        32 * MIB,
        Role::LinuxRoot,
    );
    assert!(r.notes.is_empty(), "{:?}", r.notes);
}
