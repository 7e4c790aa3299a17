//! NTFS images made by mkntfs and filled by ntfscp (ntfs-3g), read back
//! through vfs: whole-disk, in an MBR partition, and inside a dynamic VHD;
//! damaged copies must give errors, never panics.
//!
//! ntfscp cannot make directories, so the directories read are the ones
//! mkntfs makes ($Extend and its children) and the root, which holds enough
//! files to need index records beside its index root. The tests at the end
//! mount an image with ntfs-3g through FUSE instead and fill it like any
//! folder: nested trees, big directories, links, sparse, fragmented and
//! compressed files.

// Not every helper is used here.
#[allow(dead_code)]
mod common;

use common::{
    compare, noise, open_volume, run, run_command, same_tree, to_dynamic_vhd, tool, write_file,
    xorshift,
};
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
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

// ------------------------------------------- images filled through ntfs-3g

/// How long ntfs-3g may take to mount, and to write back and exit after
/// the unmount.
const MOUNT_WAIT: Duration = Duration::from_secs(15);
/// How long an unmount may be retried while the mount is busy.
const UNMOUNT_WAIT: Duration = Duration::from_secs(10);

/// An NTFS image mounted by ntfs-3g, running in the foreground as our child
/// so that the unmount can wait for it to write everything back. Dropping
/// it unmounts (also when a test panics with the image mounted).
struct Mount {
    point: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

/// Whether `point` (canonical) is a mount point now.
fn is_mounted(point: &Path) -> bool {
    let Some(p) = point.to_str() else {
        return false;
    };
    fs::read_to_string("/proc/self/mountinfo")
        .map(|s| s.lines().any(|l| l.split(' ').nth(4) == Some(p)))
        .unwrap_or(false)
}

/// `fusermount` with `args`, or `fusermount3` where only that one exists.
fn fusermount(args: &[&str], point: &Path) -> Result<(), String> {
    let mut last = String::new();
    for name in ["fusermount", "fusermount3"] {
        match tool(name).args(args).arg(point).output() {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) => {
                return Err(format!(
                    "{name}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
            Err(e) => last = format!("{name} could not be run: {e}"),
        }
    }
    Err(last)
}

impl Mount {
    /// Mounts the NTFS image `img` on the folder `point` (made if needed)
    /// with the ntfs-3g `options` (comma-separated, may be empty).
    fn new(img: &Path, point: &Path, options: &str) -> Result<Mount, String> {
        if !Path::new("/dev/fuse").exists() {
            return Err("there is no /dev/fuse".into());
        }
        fs::create_dir_all(point).map_err(|e| format!("{}: {e}", point.display()))?;
        let point = point
            .canonicalize()
            .map_err(|e| format!("{}: {e}", point.display()))?;
        let log = img.with_extension("ntfs-3g.log");
        let out = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut opts = "no_detach".to_string();
        if !options.is_empty() {
            opts = format!("{opts},{options}");
        }
        let child = tool("ntfs-3g")
            .arg("-o")
            .arg(opts)
            .arg(img)
            .arg(&point)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("ntfs-3g could not be run: {e}"))?;
        let mut m = Mount {
            point,
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + MOUNT_WAIT;
        loop {
            if is_mounted(&m.point) {
                return Ok(m);
            }
            let exited = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                m.child = None;
                return Err(format!(
                    "ntfs-3g exited ({status}) without mounting: {}",
                    fs::read_to_string(&m.log).unwrap_or_default().trim()
                ));
            }
            if Instant::now() > deadline {
                // Dropping `m` stops ntfs-3g.
                return Err(format!("ntfs-3g did not mount within {MOUNT_WAIT:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Unmounts and waits for ntfs-3g to write back and exit; fails the test
    /// when that does not happen cleanly.
    fn unmount(mut self) {
        if let Err(e) = self.release() {
            panic!("{}: {e}", self.point.display());
        }
    }

    /// Unmounts (retrying while busy, for a bounded time), waits a bounded
    /// time for ntfs-3g to exit, and stops it if it does not.
    fn release(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + UNMOUNT_WAIT;
        let mut error = None;
        while is_mounted(&self.point) {
            match fusermount(&["-u"], &self.point) {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => {
                    error = Some(e);
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        let deadline = Instant::now() + MOUNT_WAIT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() && error.is_none() => return Ok(()),
                Ok(Some(status)) => {
                    let _ = fusermount(&["-u", "-z"], &self.point);
                    return Err(format!(
                        "unmount failed ({}), ntfs-3g exited with {status}: {}",
                        error.unwrap_or_default(),
                        fs::read_to_string(&self.log).unwrap_or_default().trim()
                    ));
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let _ = fusermount(&["-u", "-z"], &self.point);
                    return Err(format!(
                        "ntfs-3g did not exit within {MOUNT_WAIT:?} of the unmount ({}); stopped it",
                        error.unwrap_or_default()
                    ));
                }
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            eprintln!("{}: {e}", self.point.display());
        }
    }
}

/// Makes a 64 MiB NTFS filesystem in `dir/name.raw` and mounts it on
/// `dir/name.mnt`; `Err` says why that cannot be done here.
fn mounted_image(dir: &Path, name: &str, options: &str) -> Result<(PathBuf, Mount), String> {
    let img = dir.join(format!("{name}.raw"));
    run("truncate", &["-s", "64M", img.to_str().unwrap()]);
    run(
        "mkntfs",
        &["-F", "-Q", "-q", "-L", "FUSE", img.to_str().unwrap()],
    );
    let m = Mount::new(&img, &dir.join(format!("{name}.mnt")), options)?;
    eprintln!(
        "{name}: NTFS image mounted by ntfs-3g on {}",
        m.point.display()
    );
    Ok((img, m))
}

/// Reports a test that cannot run here; with VMHUB_REQUIRE_FUSE set (on
/// machines known to have FUSE) that is a failure instead.
fn skip(test: &str, why: &str) {
    if std::env::var_os("VMHUB_REQUIRE_FUSE").is_some() {
        panic!("{test}: {why}");
    }
    eprintln!("SKIPPED {test}: ntfs-3g cannot mount through FUSE here: {why}");
}

const LONG_DIR: &str = "a-folder-whose-name-is-well-over-one-hundred-characters-long-so-that-its-index-entry-is-big-0123456789-abcdef";

/// Files of the tree: path and contents.
fn tree_files() -> Vec<(String, Vec<u8>)> {
    let deep = "Users/alice/Documents/Projects/2024/Reports/Q1";
    let long_file = format!("{}.txt", "very-long-file-name-".repeat(8));
    let cjk = "長い日本語のファイル名".repeat(7);
    assert!(long_file.len() > 150 && cjk.chars().count() > 70);
    vec![
        (format!("{deep}/summary.txt"), b"Q1 went well\n".to_vec()),
        (format!("{deep}/{long_file}"), noise(3000, 1)),
        (format!("{deep}/{cjk}.txt"), "日本語\n".as_bytes().to_vec()),
        (
            format!("Users/alice/Documents/Projects/2024/{LONG_DIR}/inner.txt"),
            b"inside a long folder\n".to_vec(),
        ),
        (
            "Users/alice/Documents/Projects/notes.md".into(),
            b"# notes\n".to_vec(),
        ),
        (
            "Users/alice/Pictures/été à Paris — café.txt".into(),
            "crème brûlée\n".as_bytes().to_vec(),
        ),
        (
            "Users/alice/Pictures/日本語のファイル名.txt".into(),
            "こんにちは\n".as_bytes().to_vec(),
        ),
        (
            "Users/alice/Pictures/😀 emoji 🎉.txt".into(),
            "🎉\n".as_bytes().to_vec(),
        ),
        (
            "Users/alice/Pictures/Ελληνικά/Ωμέγα.txt".into(),
            "ωμέγα\n".as_bytes().to_vec(),
        ),
        // Names that differ only in case, each with its own size.
        ("Users/alice/Case/Readme.txt".into(), b"1".to_vec()),
        ("Users/alice/Case/README.txt".into(), b"22".to_vec()),
        ("Users/alice/Case/readme.TXT".into(), b"333".to_vec()),
        ("Users/alice/Case/readme.txt".into(), b"4444".to_vec()),
        ("Sizes/zero".into(), Vec::new()),
        ("Sizes/one".into(), b"x".to_vec()),
        ("Sizes/resident-700".into(), noise(700, 2)),
        ("Sizes/page-4096".into(), noise(4096, 3)),
        ("Links/original.txt".into(), b"the original\n".to_vec()),
    ]
}

/// The names in the big folder: mixed case, so that the index order (names
/// compared upper-cased) differs from a byte-wise sort.
fn many_names() -> Vec<String> {
    (0..2000)
        .map(|i| format!("{}{i:04}.dat", ["doc-", "Doc-", "DOC_", "note "][i % 4]))
        .collect()
}

const BIG: usize = (1 << 20) + 1;
const SPARSE_LEN: u64 = 8 << 20;
const SPARSE_AT: u64 = 3 << 20;

/// Builds the test tree under `root` (a local folder or the mount), the
/// same way in both.
fn populate(root: &Path) {
    for (path, data) in tree_files() {
        write_file(root, &path, &data);
    }
    fs::create_dir_all(root.join("Users/bob/Desktop")).unwrap();
    let many = root.join("Many");
    fs::create_dir(&many).unwrap();
    for name in many_names() {
        fs::write(many.join(&name), format!("{name}\n")).unwrap();
    }
    // A file of 1 MiB + 1 written back to front in 64 KiB pieces, between
    // appends to another file: ntfs-3g gives each piece its own run.
    let big = noise(BIG, 4);
    let other_data = noise(16 * 65536, 5);
    let f = fs::File::create(root.join("Sizes/big.bin")).unwrap();
    f.set_len(BIG as u64).unwrap();
    let other = fs::File::create(root.join("Sizes/other.bin")).unwrap();
    for (i, off) in (0..BIG).step_by(65536).rev().enumerate() {
        let end = (off + 65536).min(BIG);
        f.write_all_at(&big[off..end], off as u64).unwrap();
        let o = (i % 16) * 65536;
        other
            .write_all_at(&other_data[o..o + 65536], o as u64)
            .unwrap();
    }
    drop((f, other));
    // Sparse: 8 MiB long, 100 KiB of data in the middle.
    let f = fs::File::create(root.join("Sizes/sparse.bin")).unwrap();
    f.set_len(SPARSE_LEN).unwrap();
    f.write_all_at(&noise(100 << 10, 6), SPARSE_AT).unwrap();
    drop(f);
    let links = root.join("Links");
    fs::create_dir(links.join("Sub")).unwrap();
    fs::hard_link(links.join("original.txt"), links.join("hard.txt")).unwrap();
    fs::hard_link(links.join("original.txt"), links.join("Sub/also.txt")).unwrap();
    std::os::unix::fs::symlink("original.txt", links.join("to-original")).unwrap();
    std::os::unix::fs::symlink("../Users/alice", links.join("to-alice")).unwrap();
    std::os::unix::fs::symlink("/Users/bob/Desktop", links.join("absolute")).unwrap();
    std::os::unix::fs::symlink("nowhere/at all", links.join("dangling")).unwrap();
}

/// The number of data runs of `path` in `img` by ntfsinfo, if it can say.
fn data_runs(img: &Path, path: &str) -> Option<usize> {
    let out = tool("ntfsinfo")
        .args(["-v", "-F", path])
        .arg(img)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("Total runs:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[test]
fn ntfs3g_tree_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    populate(&src);
    let (img, mnt) = match mounted_image(dir.path(), "tree", "") {
        Ok(m) => m,
        Err(why) => return skip("ntfs3g_tree_reads_back", &why),
    };
    let started = Instant::now();
    populate(&mnt.point);
    // ntfs-3g keeps the hole of the sparse file unallocated.
    let sparse = fs::metadata(mnt.point.join("Sizes/sparse.bin")).unwrap();
    assert!(sparse.blocks() * 512 < 1 << 20, "{}", sparse.blocks());
    mnt.unmount();
    eprintln!("tree: filled and unmounted in {:?}", started.elapsed());

    let runs = data_runs(&img, "/Sizes/big.bin");
    eprintln!("tree: /Sizes/big.bin has {runs:?} data runs");
    if let Some(n) = runs {
        assert!(n > 1, "big.bin is fragmented");
    }
    // The big folder's index needs many index records (a B+ tree with
    // index blocks below index blocks below the root).
    let data = fs::read(&img).unwrap();
    let indx: Vec<&[u8]> = data
        .chunks(4096)
        .filter(|c| c.starts_with(b"INDX"))
        .collect();
    // Flag 1 of an index node header: the node has subnodes.
    let inner = indx.iter().filter(|c| c[24 + 12] & 1 != 0).count();
    assert!(
        indx.len() > 40 && inner > 0,
        "{} index records, {inner} inner",
        indx.len()
    );
    eprintln!(
        "tree: {} index records, {inner} of them above others",
        indx.len()
    );

    let mut vol = open_volume(&img).unwrap();
    assert_eq!(vol.label().as_deref(), Some("FUSE"));
    // Every folder lists exactly what was put there, every file reads back
    // byte for byte, and links show as links with their targets.
    compare(&mut *vol, "/", &src, false);

    // The big folder completely, in index order: names compared upper-cased.
    let listed: Vec<String> = vol
        .list("/Many")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    let mut want = many_names();
    want.sort_by_key(|n| n.to_ascii_uppercase());
    assert_eq!(listed.len(), 2000);
    assert!(listed == want, "/Many is listed in collation order");

    // Names differing only in case are each found by their own name.
    for (name, len) in [
        ("Readme.txt", 1),
        ("README.txt", 2),
        ("readme.TXT", 3),
        ("readme.txt", 4),
    ] {
        let p = format!("/Users/alice/Case/{name}");
        assert_eq!(vol.stat(&p).unwrap().size, len, "{p}");
    }
    // Other names are still found whatever their case, as on Windows.
    let st = vol.stat("/users/ALICE/documents/PROJECTS/2024/reports/q1/SUMMARY.TXT");
    assert_eq!(st.unwrap().size, 13);
    assert_eq!(vol.stat("/USERS/BOB/desktop").unwrap().kind, EntryKind::Dir);
    assert_eq!(
        vol.stat("/Users/alice/Pictures/ελληνικά/ΩΜΈΓΑ.TXT")
            .unwrap()
            .kind,
        EntryKind::File
    );

    // Hard links: one file under three names.
    let mut a = Vec::new();
    vol.read_file("/Links/hard.txt", &mut a).unwrap();
    let mut b = Vec::new();
    vol.read_file("/Links/Sub/also.txt", &mut b).unwrap();
    assert_eq!(
        (&a[..], &b[..]),
        (&b"the original\n"[..], &b"the original\n"[..])
    );

    // ntfs-3g's symbolic links (Interix files by default).
    assert_eq!(
        vol.stat("/Links/to-original").unwrap().kind,
        EntryKind::Symlink
    );
    assert_eq!(vol.read_link("/Links/to-alice").unwrap(), "../Users/alice");
    assert_eq!(
        vol.read_link("/Links/absolute").unwrap(),
        "/Users/bob/Desktop"
    );
    assert!(vol
        .read_file("/Links/to-original", &mut Vec::new())
        .is_err());

    // Sparse and fragmented data.
    let mut s = Vec::new();
    assert_eq!(
        vol.read_file("/Sizes/sparse.bin", &mut s).unwrap(),
        SPARSE_LEN
    );
    assert!(s[..SPARSE_AT as usize].iter().all(|&b| b == 0));
    assert!(s[SPARSE_AT as usize..][..100 << 10] == noise(100 << 10, 6)[..]);
    let mut big = Vec::new();
    vol.read_file("/Sizes/big.bin", &mut big).unwrap();
    assert!(big == noise(BIG, 4), "big.bin reads back");

    // The same tree extracted.
    let dest = dir.path().join("out");
    fs::create_dir(&dest).unwrap();
    let done = vfs::extract::extract(&mut *vol, "/", &dest).unwrap();
    same_tree(&src, &dest);
    assert_eq!(done.links, 4);
    assert!(done.skipped.is_empty(), "{:?}", done.skipped);
    eprintln!(
        "tree: {} files, {} folders, {} links extracted",
        done.files, done.dirs, done.links
    );
}

/// Sets FILE_ATTRIBUTE_COMPRESSED on `path` in an ntfs-3g mount, through
/// its `system.ntfs_attrib_be` extended attribute (std has no setxattr, so
/// setfattr or python3 does it).
fn set_compressed(path: &Path) -> Result<(), String> {
    const SCRIPT: &str = "import os,sys\np=sys.argv[1]\nk='system.ntfs_attrib_be'\nv=int.from_bytes(os.getxattr(p,k),'big')|0x800\nos.setxattr(p,k,v.to_bytes(4,'big'))";
    let tries: [(&str, Vec<String>); 2] = [
        ("python3", vec!["-c".into(), SCRIPT.into()]),
        (
            "setfattr",
            // A directory (0x10) that is compressed (0x800).
            vec![
                "-n".into(),
                "system.ntfs_attrib_be".into(),
                "-v".into(),
                "0x00000810".into(),
            ],
        ),
    ];
    let mut why = Vec::new();
    for (name, args) in tries {
        match tool(name).args(&args).arg(path).output() {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) => why.push(format!(
                "{name}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => why.push(format!("{name} could not be run: {e}")),
        }
    }
    Err(why.join("; "))
}

/// The files of the compressed test: name and contents.
fn packed_files() -> Vec<(&'static str, Vec<u8>)> {
    let text: Vec<u8> = b"All work and no play makes Jack a dull boy.\n"
        .iter()
        .copied()
        .cycle()
        .take(300_000)
        .collect();
    vec![
        (
            "small.txt",
            b"small enough to stay in the MFT record\n".to_vec(),
        ),
        ("text.txt", text),
        ("random.bin", noise(200_000, 8)),
    ]
}

/// ntfs-3g compresses the files of a folder marked compressed; vmhub must
/// read them right or refuse them clearly, never return the stored bytes.
#[test]
fn ntfs3g_compressed_files_are_read_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (img, mnt) = match mounted_image(dir.path(), "packed", "") {
        Ok(m) => m,
        Err(why) => return skip("ntfs3g_compressed_files_are_read_or_refused", &why),
    };
    let packed = mnt.point.join("Packed");
    fs::create_dir(&packed).unwrap();
    if let Err(why) = set_compressed(&packed) {
        drop(mnt);
        return skip("ntfs3g_compressed_files_are_read_or_refused", &why);
    }
    for (name, data) in packed_files() {
        fs::write(packed.join(name), &data).unwrap();
    }
    write_file(&mnt.point, "Plain/plain.txt", b"not compressed\n");
    mnt.unmount();

    let mut vol = open_volume(&img).unwrap();
    let mut names: Vec<String> = vol
        .list("/Packed")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    assert_eq!(names, ["random.bin", "small.txt", "text.txt"]);
    let mut refused = 0;
    for (name, data) in packed_files() {
        let p = format!("/Packed/{name}");
        assert_eq!(vol.stat(&p).unwrap().size, data.len() as u64, "{p}");
        let mut out = Vec::new();
        match vol.read_file(&p, &mut out) {
            Ok(n) => {
                assert_eq!(n, data.len() as u64, "{p}");
                assert!(out == data, "{p}: wrong bytes");
                eprintln!("packed: {p} read back");
            }
            Err(e @ Error::Unsupported(_)) => {
                let msg = e.to_string();
                assert!(msg.contains(&p) && msg.contains("compressed"), "{msg}");
                eprintln!("packed: {p} refused: {msg}");
                refused += 1;
            }
            Err(e) => panic!("{p}: {e:?}"),
        }
    }
    // ntfs-3g compresses what compresses well.
    assert!(
        refused > 0,
        "vmhub now reads compressed files: test text.txt's bytes"
    );
    let mut out = Vec::new();
    vol.read_file("/Plain/plain.txt", &mut out).unwrap();
    assert_eq!(out, b"not compressed\n");
    let dest = dir.path().join("out");
    fs::create_dir(&dest).unwrap();
    let e = vfs::extract::extract(&mut *vol, "/Packed", &dest).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
}

/// ntfs-3g mounted with special_files=wsl makes its symbolic links as WSL
/// reparse points rather than Interix files.
#[test]
fn ntfs3g_wsl_symlinks_are_links() {
    let dir = tempfile::tempdir().unwrap();
    let (img, mnt) = match mounted_image(dir.path(), "wsl", "special_files=wsl") {
        Ok(m) => m,
        Err(why) => return skip("ntfs3g_wsl_symlinks_are_links", &why),
    };
    let src = dir.path().join("src");
    for root in [src.as_path(), mnt.point.as_path()] {
        write_file(root, "dir/file.txt", b"target\n");
        std::os::unix::fs::symlink("dir/file.txt", root.join("relative")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("absolute")).unwrap();
        std::os::unix::fs::symlink("ünïcödé/日本", root.join("unicode")).unwrap();
    }
    mnt.unmount();
    let mut vol = open_volume(&img).unwrap();
    compare(&mut *vol, "/", &src, false);
    assert_eq!(vol.read_link("/unicode").unwrap(), "ünïcödé/日本");
}

/// A test that panics with the image mounted still leaves nothing mounted.
#[test]
fn ntfs3g_mount_is_released_on_panic() {
    let dir = tempfile::tempdir().unwrap();
    let point = match mounted_image(dir.path(), "panic", "") {
        Ok((_, m)) => {
            let point = m.point.clone();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                // The whole guard moves in, and is dropped while unwinding.
                let m = m;
                fs::write(m.point.join("x"), b"x").unwrap();
                panic!("on purpose, with the image mounted");
            }));
            assert!(r.is_err());
            point
        }
        Err(why) => return skip("ntfs3g_mount_is_released_on_panic", &why),
    };
    assert!(!is_mounted(&point), "{} is still mounted", point.display());
}
