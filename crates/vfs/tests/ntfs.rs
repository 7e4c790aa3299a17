//! NTFS images made by mkntfs and filled by ntfscp (ntfs-3g), read back
//! through vfs: whole-disk, in an MBR partition, and inside a dynamic VHD;
//! damaged copies must give errors, never panics.
//!
//! ntfscp cannot make directories, so the directories read are the ones
//! mkntfs makes ($Extend and its children) and the root, which holds enough
//! files to need index records beside its index root.

// Not every helper is used here.
#[allow(dead_code)]
mod common;

use common::{noise, open_volume, run, run_command, to_dynamic_vhd, tool, xorshift};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use vfs::fs::ntfs::NtfsVolume;
use vfs::{EntryKind, Error, Image, Volume};

const LONG: &str = "a-rather-long-file-name-that-goes-on-and-on-well-past-the-eight-dot-three-limit-of-old-filesystems-and-keeps-going-to-check-that-nothing-truncates-it.txt";

/// The files put in the root: name and contents.
fn files() -> Vec<(String, Vec<u8>)> {
    let mut v = vec![
        ("hello.txt".to_string(), b"hello, world\n".to_vec()),
        ("empty".to_string(), Vec::new()),
        (LONG.to_string(), b"long name\n".to_vec()),
        (
            "ñandú 日本語.txt".to_string(),
            "ünïcödé\n".as_bytes().to_vec(),
        ),
        ("big.bin".to_string(), noise(3 << 20 | 12345, 7)),
    ];
    // Enough names that the root index spills into index records.
    for i in 0..40 {
        v.push((
            format!("file-number-{i:03}-with-a-longish-name.dat"),
            noise(100 + i * 37, i as u64 + 1),
        ));
    }
    v
}

/// Makes a 64 MiB NTFS filesystem in `img` (which must not exist, or be a
/// file of the size wanted) and copies [`files`] into its root.
fn make_fs(dir: &Path, img: &Path, extra: &[&str]) {
    if !img.exists() {
        run("truncate", &["-s", "64M", img.to_str().unwrap()]);
    }
    let mut args = vec!["-F", "-Q", "-L", "LABEL"];
    args.extend_from_slice(extra);
    args.push(img.to_str().unwrap());
    run("mkntfs", &args);
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    for (i, (name, data)) in files().iter().enumerate() {
        let local = src.join(format!("{i}"));
        fs::write(&local, data).unwrap();
        run(
            "ntfscp",
            &[
                img.to_str().unwrap(),
                local.to_str().unwrap(),
                &format!("/{name}"),
            ],
        );
    }
}

fn whole_disk() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ntfs.raw");
    make_fs(dir.path(), &img, &[]);
    (dir, img)
}

/// Checks everything readable about a volume made by [`make_fs`].
fn check_volume(vol: &mut dyn Volume) {
    assert_eq!(vol.kind(), vfs::FsKind::Ntfs);
    assert_eq!(vol.label().as_deref(), Some("LABEL"));
    let root = vol.list("/").unwrap();
    let mut names: Vec<&str> = root.iter().map(|e| e.name.as_str()).collect();
    names.sort();
    let want = files();
    let mut want_names: Vec<&str> = want.iter().map(|(n, _)| n.as_str()).collect();
    want_names.sort();
    assert_eq!(
        names, want_names,
        "the metadata files are hidden from the root listing"
    );
    for (name, data) in &want {
        let path = format!("/{name}");
        let e = root.iter().find(|e| &e.name == name).unwrap();
        assert_eq!(e.kind, EntryKind::File);
        assert_eq!(e.size, data.len() as u64, "{name}");
        assert!(
            e.modified.unwrap() > 1_600_000_000,
            "{name}: {:?}",
            e.modified
        );
        let st = vol.stat(&path).unwrap();
        assert_eq!(st.size, data.len() as u64);
        let mut out = Vec::new();
        let n = vol.read_file(&path, &mut out).unwrap();
        assert_eq!(n, data.len() as u64);
        assert!(out == *data, "{name}: contents differ");
    }
    // Names are found whatever their case, as on Windows.
    assert_eq!(vol.stat("/HELLO.TXT").unwrap().size, 13);
    assert_eq!(vol.stat("/ÑANDÚ 日本語.TXT").unwrap().kind, EntryKind::File);
    // The hidden metadata files are still there by name.
    assert_eq!(vol.stat("/$Extend").unwrap().kind, EntryKind::Dir);
    assert_eq!(vol.stat("/$upcase").unwrap().size, 128 << 10);
    let ext: Vec<String> = vol
        .list("/$extend")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    for want in ["$ObjId", "$Quota", "$Reparse"] {
        assert!(ext.iter().any(|n| n == want), "{want} missing from {ext:?}");
    }
    assert_eq!(vol.stat("/").unwrap().kind, EntryKind::Dir);
    assert!(matches!(vol.stat("/nope"), Err(Error::NotFound(_))));
    assert!(matches!(vol.stat("/hello.txt/x"), Err(Error::NotFound(_))));
    assert!(matches!(vol.list("/hello.txt"), Err(Error::NotDir(_))));
    assert!(matches!(
        vol.read_file("/$Extend", &mut Vec::new()),
        Err(Error::IsDir(_))
    ));
    assert!(vol.write_file("/x", &mut &b""[..], 0).is_err());
}

#[test]
fn whole_disk_ntfs_reads_back() {
    let (dir, img) = whole_disk();
    let mut vol = open_volume(&img).unwrap();
    check_volume(&mut *vol);

    let dest = dir.path().join("out");
    fs::create_dir(&dest).unwrap();
    let done = vfs::extract::extract(&mut *vol, "/", &dest).unwrap();
    assert_eq!(done.files, files().len() as u64);
    for (name, data) in files() {
        assert!(fs::read(dest.join(&name)).unwrap() == data, "{name}");
    }
}

#[test]
fn free_ranges_match_the_bitmap() {
    let (_dir, img) = whole_disk();
    let mut vol = open_volume(&img).unwrap();
    let free = vol.free_ranges().unwrap();
    let total: u64 = free.iter().map(|r| r.1).sum();
    // 64 MiB with ~4 MiB of files and the metadata: most of it is free.
    assert!(total > 40 << 20 && total < 62 << 20, "{total}");
    let data = fs::read(&img).unwrap();
    for w in free.windows(2) {
        assert!(w[0].0 + w[0].1 < w[1].0, "ranges sorted and merged");
    }
    // The boot sector and the MFT are never free.
    let cluster = u16::from_le_bytes([data[11], data[12]]) as u64 * data[13] as u64;
    let mft = u64::from_le_bytes(data[0x30..0x38].try_into().unwrap()) * cluster;
    for &(off, len) in &free {
        assert!(off >= cluster && off + len <= data.len() as u64);
        assert!(
            mft + 16 * 1024 <= off || off + len <= mft,
            "the MFT lies in free range {off}+{len}"
        );
    }
    // Nothing of the files lies in a free range: their data is noise, and
    // free clusters of a fresh image are zero.
    let big = files().into_iter().find(|f| f.0 == "big.bin").unwrap().1;
    let probe = &big[1 << 20..(1 << 20) + 64];
    let at = data.windows(64).position(|w| w == probe).unwrap() as u64;
    assert!(free.iter().all(|&(o, l)| at + 64 <= o || o + l <= at));
}

#[test]
fn ntfs_in_an_mbr_partition_and_a_vhd() {
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("part.raw");
    make_fs(dir.path(), &part, &["--partition-start", "2048"]);
    let disk = dir.path().join("disk.raw");
    run("truncate", &["-s", "72M", disk.to_str().unwrap()]);
    let table = dir.path().join("table.sfdisk");
    fs::write(&table, "label: dos\nstart=2048, size=131072, type=7\n").unwrap();
    run_command(
        tool("sfdisk")
            .arg(&disk)
            .stdin(fs::File::open(&table).unwrap()),
    );
    run(
        "dd",
        &[
            &format!("if={}", part.display()),
            &format!("of={}", disk.display()),
            "bs=512",
            "seek=2048",
            "conv=notrunc,sparse",
            "status=none",
        ],
    );
    {
        let image = Image::open(&disk, false).unwrap();
        let mut vol = image.volume(Some(1), false).unwrap();
        check_volume(&mut *vol);
    }
    let vhd = dir.path().join("disk.vhd");
    to_dynamic_vhd(&disk, &vhd);
    let image = Image::open(&vhd, false).unwrap();
    let mut vol = image.volume(Some(1), false).unwrap();
    check_volume(&mut *vol);
    let dest = dir.path().join("out");
    fs::create_dir(&dest).unwrap();
    vfs::extract::extract(&mut *vol, "/", &dest).unwrap();
    assert_eq!(fs::read(dest.join("hello.txt")).unwrap(), b"hello, world\n");
}

/// Opens `img` as NTFS directly (detection would refuse a broken signature
/// before the NTFS code sees it).
fn open(img: &Path) -> vfs::Result<NtfsVolume> {
    let image = Image::open(img, false).unwrap();
    let region = vfs::Region::whole(image.disk().clone(), img.display().to_string()).unwrap();
    NtfsVolume::open(region)
}

fn poke(img: &Path, off: u64, bytes: &[u8]) -> Vec<u8> {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .unwrap();
    let mut old = vec![0u8; bytes.len()];
    f.read_exact_at(&mut old, off).unwrap();
    f.write_all_at(bytes, off).unwrap();
    old
}

fn corrupt_message(r: vfs::Result<NtfsVolume>) -> String {
    match r {
        Err(e @ Error::Corrupt(_)) => e.to_string(),
        Err(e) => panic!("expected a corruption error, got {e:?}"),
        Ok(_) => panic!("a damaged volume was opened"),
    }
}

/// Byte offset of the MFT and the size of a record, from the boot sector.
fn mft(img: &Path) -> (u64, u64) {
    let f = fs::File::open(img).unwrap();
    let mut b = [0u8; 512];
    f.read_exact_at(&mut b, 0).unwrap();
    let cluster = u16::from_le_bytes([b[11], b[12]]) as u64 * b[13] as u64;
    let at = u64::from_le_bytes(b[0x30..0x38].try_into().unwrap()) * cluster;
    let info = b[0x40] as i8;
    let record = if info > 0 {
        info as u64 * cluster
    } else {
        1 << -info
    };
    (at, record)
}

#[test]
fn damaged_boot_sectors_are_refused() {
    let (_dir, img) = whole_disk();
    open(&img).unwrap();
    let cases: &[(u64, &[u8], &str)] = &[
        (3, b"XXXX", "signature"),
        (11, &[0, 0], "bytes per sector"),
        (13, &[3], "sectors per cluster"),
        (0x28, &[0xFF; 8], "do not fit"),
        (0x30, &[0, 0, 0, 0, 0, 0, 0, 0x40], "MFT"),
        (0x30, &[0; 8], "MFT"),
        (0x40, &[0x7F], "MFT records"),
    ];
    for &(off, bytes, want) in cases {
        let old = poke(&img, off, bytes);
        let msg = corrupt_message(open(&img));
        assert!(msg.contains(want) && msg.contains("ntfs.raw"), "{msg}");
        poke(&img, off, &old);
    }
    open(&img).unwrap();
}

#[test]
fn damaged_mft_records_are_errors() {
    let (_dir, img) = whole_disk();
    let (at, rec) = mft(&img);
    // $MFT itself, then the root directory.
    for n in [0u64, 5] {
        let old = poke(&img, at + n * rec, &noise(rec as usize, n + 99));
        let msg = corrupt_message(open(&img));
        assert!(msg.contains("ntfs.raw"), "{msg}");
        poke(&img, at + n * rec, &old);
    }
    // A user file's record: the volume opens, the file gives an error.
    let data = fs::read(&img).unwrap();
    let big = record_of(&data, at, rec, "big.bin");
    let old = poke(&img, at + big * rec, &noise(rec as usize, 5));
    let mut vol = open(&img).unwrap();
    let e = vol.read_file("/big.bin", &mut Vec::new()).unwrap_err();
    assert!(
        matches!(e, Error::Corrupt(_)) && e.to_string().contains("/big.bin"),
        "{e}"
    );
    assert!(vol.list("/").is_err());
    poke(&img, at + big * rec, &old);
}

/// The MFT record number of the root file named `name`.
fn record_of(data: &[u8], mft: u64, rec: u64, name: &str) -> u64 {
    let units: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
    (24..4096)
        .find(|&n| {
            let r = &data[(mft + n * rec) as usize..(mft + (n + 1) * rec) as usize];
            r.starts_with(b"FILE") && r.windows(units.len()).any(|w| w == units)
        })
        .unwrap()
}

#[test]
fn data_runs_past_the_end_are_errors() {
    let (_dir, img) = whole_disk();
    let (at, rec) = mft(&img);
    let data = fs::read(&img).unwrap();
    let n = record_of(&data, at, rec, "big.bin");
    let base = (at + n * rec) as usize;
    let r = &data[base..base + rec as usize];
    // Walk the attributes to the non-resident $DATA and its first run.
    let mut a = u16::from_le_bytes([r[0x14], r[0x15]]) as usize;
    while u32::from_le_bytes(r[a..a + 4].try_into().unwrap()) != 0x80 {
        a += u32::from_le_bytes(r[a + 4..a + 8].try_into().unwrap()) as usize;
    }
    assert_eq!(r[a + 8], 1, "big.bin is non-resident");
    let runs = a + u16::from_le_bytes([r[a + 0x20], r[a + 0x21]]) as usize;
    let header = r[runs];
    let (len_bytes, off_bytes) = ((header & 0xF) as usize, (header >> 4) as usize);
    assert!(off_bytes >= 2 && runs + 1 + len_bytes + off_bytes < 510);
    // Make the run start far past the end (keeping the value positive).
    let mut lcn = vec![0xFFu8; off_bytes];
    lcn[off_bytes - 1] = 0x3F;
    poke(&img, (base + runs + 1 + len_bytes) as u64, &lcn);
    let mut vol = open(&img).unwrap();
    let e = vol.read_file("/big.bin", &mut Vec::new()).unwrap_err();
    assert!(matches!(e, Error::Corrupt(_)), "{e:?}");
    assert!(e.to_string().contains("big.bin"), "{e}");
}

/// Random damage to the MFT and the root's index records: every call returns
/// (an error or not), none panics or hangs.
#[test]
fn random_damage_never_panics() {
    let (_dir, img) = whole_disk();
    let (at, rec) = mft(&img);
    let pristine = fs::read(&img).unwrap();
    // The root's index records hold "INDX"; damage those too.
    let indx: Vec<u64> = (0..pristine.len() / 4096)
        .map(|i| i as u64 * 4096)
        .filter(|&o| pristine[o as usize..].starts_with(b"INDX"))
        .collect();
    assert!(
        !indx.is_empty(),
        "the root index spilled into index records"
    );
    let mut seed = 0x1234_5678u64;
    let mut next = || xorshift(&mut seed);
    for round in 0..150 {
        let mut touched = Vec::new();
        for _ in 0..1 + next() % 8 {
            let base = if round % 3 == 0 {
                indx[(next() % indx.len() as u64) as usize]
            } else {
                at + (next() % 80) * rec
            };
            let off = base + next() % rec.min(4096);
            let bytes = next().to_le_bytes();
            let n = 1 + (next() % 8) as usize;
            touched.push((off, poke(&img, off, &bytes[..n])));
        }
        if let Ok(mut vol) = open(&img) {
            let _ = vol.label();
            if let Ok(list) = vol.list("/") {
                for e in list {
                    let _ = vol.read_file(&format!("/{}", e.name), &mut std::io::sink());
                }
            }
            let _ = vol.list("/$Extend");
            let _ = vol.stat("/hello.txt");
            let _ = vol.free_ranges();
        }
        for (off, old) in touched.into_iter().rev() {
            poke(&img, off, &old);
        }
    }
}
