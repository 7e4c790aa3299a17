//! Helpers shared by the interop tests: running the real tools, test data,
//! and walking and comparing file trees.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use vfs::{EntryKind, Image, Volume};

/// A command for `tool` with the sbin directories first on PATH (mkfs and
/// friends live there), mtools' drive check off and a UTF-8 locale.
pub fn tool(tool: &str) -> Command {
    let path = format!(
        "/usr/sbin:/sbin:/usr/bin:/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new(tool);
    c.env("PATH", path)
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("LC_ALL", "C.UTF-8");
    c
}

/// Runs `c` and returns its stdout; fails the test when the tool is
/// missing or fails.
pub fn run_command(c: &mut Command) -> String {
    let out = c.output().unwrap_or_else(|e| {
        panic!(
            "{:?} could not be run ({e}): run scripts/deps.sh",
            c.get_program()
        )
    });
    assert!(
        out.status.success(),
        "{c:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `name` with `args` (see [`tool`]) and returns its stdout; fails the
/// test when the tool is missing or fails.
pub fn run(name: &str, args: &[&str]) -> String {
    run_command(tool(name).args(args))
}

/// Converts the raw image `raw` into a dynamic VHD at `vhd` with qemu-img.
pub fn to_dynamic_vhd(raw: &Path, vhd: &Path) {
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "vpc",
            "-o",
            "subformat=dynamic",
            raw.to_str().unwrap(),
            vhd.to_str().unwrap(),
        ],
    );
}

/// The next number of a xorshift sequence: cheap pseudo-random numbers, the
/// same for the same seed.
pub fn xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Pseudo-random bytes (xorshift), the same for the same seed.
pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        out.extend_from_slice(&xorshift(&mut seed).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `data` to `root/rel`, making the folders above it.
pub fn write_file(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

/// The names in the local folder `dir`.
fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// The filesystem found in the image file at `path`.
pub fn open_volume(path: &Path) -> vfs::Result<Box<dyn Volume>> {
    Image::open(path, false)?.volume(None, false)
}

/// Checks every entry of `dir` in `vol` against the local tree at `local`:
/// names, kinds, sizes, contents and link targets, and with `exact` modes
/// and modification times too.
pub fn compare(vol: &mut dyn Volume, dir: &str, local: &Path, exact: bool) {
    let list = vol.list(dir).unwrap();
    let got: BTreeSet<String> = list.iter().map(|e| e.name.clone()).collect();
    assert_eq!(got, names(local), "entries of {dir}");
    for e in list {
        let p = vfs::path::join(dir, &e.name);
        let l = local.join(&e.name);
        let meta = fs::symlink_metadata(&l).unwrap();
        assert_eq!(vol.stat(&p).unwrap(), e, "stat {p}");
        if exact {
            assert_eq!(e.modified, Some(meta.mtime()), "mtime of {p}");
            assert_eq!(e.mode, Some(meta.mode() & 0o7777), "mode of {p}");
        }
        if meta.file_type().is_symlink() {
            assert_eq!(e.kind, EntryKind::Symlink, "{p}");
            let want = fs::read_link(&l).unwrap();
            assert_eq!(vol.read_link(&p).unwrap(), want.to_str().unwrap());
        } else if meta.is_dir() {
            assert_eq!(e.kind, EntryKind::Dir, "{p}");
            compare(vol, &p, &l, exact);
        } else {
            assert_eq!(e.kind, EntryKind::File, "{p}");
            assert_eq!(e.size, meta.len(), "size of {p}");
            let mut data = Vec::new();
            let n = vol.read_file(&p, &mut data).unwrap();
            assert_eq!(n, meta.len());
            assert!(data == fs::read(&l).unwrap(), "contents of {p}");
        }
    }
}

/// Checks that two local trees hold the same names, bytes and links.
pub fn same_tree(a: &Path, b: &Path) {
    assert_eq!(names(a), names(b), "{} vs {}", a.display(), b.display());
    for n in names(a) {
        let (x, y) = (a.join(&n), b.join(&n));
        let mx = fs::symlink_metadata(&x).unwrap();
        let my = fs::symlink_metadata(&y).unwrap();
        assert_eq!(mx.file_type(), my.file_type(), "{}", y.display());
        if mx.file_type().is_symlink() {
            assert_eq!(fs::read_link(&x).unwrap(), fs::read_link(&y).unwrap());
        } else if mx.is_dir() {
            same_tree(&x, &y);
        } else {
            assert!(
                fs::read(&x).unwrap() == fs::read(&y).unwrap(),
                "{}",
                y.display()
            );
        }
    }
}

/// Reads everything in the volume; returns the first error.
pub fn read_all(vol: &mut dyn Volume, dir: &str) -> vfs::Result<()> {
    // A damaged image can hold a directory inside itself.
    if dir.matches('/').count() > 64 {
        return Ok(());
    }
    for e in vol.list(dir)? {
        let p = vfs::path::join(dir, &e.name);
        match e.kind {
            EntryKind::Dir => read_all(vol, &p)?,
            EntryKind::File => {
                vol.read_file(&p, &mut std::io::sink())?;
            }
            EntryKind::Symlink => {
                vol.read_link(&p)?;
            }
            EntryKind::Other => {}
        }
    }
    Ok(())
}
