//! QEMU's tools as judges: qemu-img and qemu-io over `nbd+unix://` see the
//! same content and allocation as the image file, their writes land in the
//! image, and in a chain only in the child.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use vdisk::{ExtentKind, OpenOptions};

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (qemu-utils must be installed)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Data ranges qemu-img map reports for `target` (`-f FORMAT` when given).
fn qemu_data(target: &str, format: &str) -> Vec<(u64, u64)> {
    let out = run(Command::new("qemu-img").args(["map", "--output=json", "-f", format, target]));
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for e in v {
        if e["data"].as_bool() == Some(true) {
            let (s, l) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
            match ranges.last_mut() {
                Some(last) if last.0 + last.1 == s => last.1 += l,
                _ => ranges.push((s, l)),
            }
        }
    }
    ranges
}

/// Data ranges vdisk maps for the image at `path`.
fn vdisk_data(path: &Path) -> Vec<(u64, u64)> {
    let d = vdisk::open(path, OpenOptions::default()).unwrap();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for e in d.map(0, d.virtual_size()).unwrap() {
        if e.kind == ExtentKind::Data {
            match ranges.last_mut() {
                Some(last) if last.0 + last.1 == e.offset => last.1 += e.length,
                _ => ranges.push((e.offset, e.length)),
            }
        }
    }
    ranges
}

fn inside(r: (u64, u64), of: &[(u64, u64)]) -> bool {
    of.iter().any(|o| o.0 <= r.0 && r.0 + r.1 <= o.0 + o.1)
}

#[test]
fn qemu_img_reads_maps_and_converts_through_nbd() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "raw"])
        .arg(&raw)
        .arg("64M"));
    run(Command::new("qemu-io")
        .args([
            "-f",
            "raw",
            "-c",
            "write -P 0xab 1M 3M",
            "-c",
            "write -P 0xcd 40M 64k",
            "-c",
            "write -P 0x01 63M 512",
        ])
        .arg(&raw));
    let vhd = dir.path().join("disk.vhd");
    {
        let src = vdisk::open(&raw, OpenOptions::default()).unwrap();
        vdisk::ops::convert::convert(
            src.as_ref(),
            &vhd,
            &vdisk::CreateOptions::default(),
            false,
            &mut |_, _| {},
        )
        .unwrap();
    }
    let srv = serve_in(dir, vhd.clone(), true);
    let uri = srv.uri();
    let out = run(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(&raw)
        .arg(&uri));
    assert!(out.contains("identical"), "{out}");

    // Block status works: holes show as holes, and every range the server
    // calls data is data in the file, exactly as vdisk maps it.
    let over_nbd = qemu_data(&uri, "raw");
    assert_eq!(over_nbd, vdisk_data(&vhd));
    let in_file = qemu_data(vhd.to_str().unwrap(), "vpc");
    assert!(
        over_nbd.iter().all(|&r| inside(r, &in_file)),
        "{over_nbd:?} vs {in_file:?}"
    );
    let mapped: u64 = over_nbd.iter().map(|r| r.1).sum();
    assert!(mapped < 16 << 20, "only {mapped} of 64 MiB should be data");

    // A whole copy through NBD is sparse and equal.
    let copy = srv.dir.as_ref().unwrap().path().join("copy.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw"])
        .arg(&uri)
        .arg(&copy));
    assert!(std::fs::read(&copy).unwrap() == std::fs::read(&raw).unwrap());
    srv.stop();
}

#[test]
fn qemu_io_writes_land_in_the_image() {
    let srv = serve_new(32 << 20, &pattern(1 << 20, 5), false);
    let uri = srv.uri();
    run(Command::new("qemu-io")
        .args([
            "-f",
            "raw",
            "-c",
            "write -P 0x77 2M 1M",
            "-c",
            "write -z -u 0 64k",
            "-c",
            "write -P 0x78 -f 30M 4k",
            "-c",
            "flush",
        ])
        .arg(&uri));
    let out = run(Command::new("qemu-io")
        .args([
            "-f",
            "raw",
            "-c",
            "read -P 0x77 2M 1M",
            "-c",
            "read -P 0 0 64k",
        ])
        .arg(&uri));
    assert!(!out.contains("Pattern verification failed"), "{out}");
    let image = srv.stop();
    let got = contents(&image);
    let mut want = pattern(1 << 20, 5);
    want.resize(32 << 20, 0);
    want[2 << 20..3 << 20].fill(0x77);
    want[..65536].fill(0);
    want[30 << 20..(30 << 20) + 4096].fill(0x78);
    assert!(got == want);
    assert!(vdisk::check(&image).unwrap().clean);
    // And QEMU reads the same from the file itself.
    let out = run(Command::new("qemu-io")
        .args(["-f", "vpc", "-r", "-c", "read -P 0x77 2M 1M"])
        .arg(&*image));
    assert!(!out.contains("Pattern verification failed"), "{out}");
}

#[test]
fn writes_to_a_chain_go_to_the_child_only() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vhd");
    vdisk::create(&base, 16 << 20, &vdisk::CreateOptions::default(), false).unwrap();
    {
        let mut d = vdisk::open(&base, OpenOptions { writable: true }).unwrap();
        d.write_at(&pattern(4 << 20, 9), 0).unwrap();
        d.flush().unwrap();
    }
    let child = dir.path().join("child.vhd");
    vdisk::create_child(&child, &base, 2 << 20, false).unwrap();
    let base_bytes = std::fs::read(&base).unwrap();
    let srv = serve_in(dir, child.clone(), false);
    let uri = srv.uri();
    // Half a sector and a whole megabyte, over the parent's data.
    run(Command::new("qemu-io")
        .args([
            "-f",
            "raw",
            "-c",
            "write -P 0x33 1000 300",
            "-c",
            "write -P 0x44 3M 1M",
        ])
        .arg(&uri));
    // Block status follows the chain: the base's data is data.
    let mapped = qemu_data(&uri, "raw");
    assert_eq!(mapped, vec![(0, 4 << 20)]);
    let image = srv.stop();
    assert!(
        std::fs::read(&base).unwrap() == base_bytes,
        "the parent changed"
    );
    let got = contents(&image);
    let mut want = pattern(4 << 20, 9);
    want.resize(16 << 20, 0);
    want[1000..1300].fill(0x33);
    want[3 << 20..4 << 20].fill(0x44);
    assert!(got == want);
    assert!(vdisk::check(&image).unwrap().clean);
}
