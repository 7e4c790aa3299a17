//! Hostile qcow2 images: a valid image broken in one way at a time, and random
//! damage to its metadata. Nothing may panic or allocate wildly; `open` refuses
//! with an error naming the file and the field, or reads fail cleanly, or
//! `check` names the broken structure.

#[allow(dead_code)]
#[path = "corpus/exercise.rs"]
mod exercise;

use std::path::Path;
use std::process::Command;
use vdisk::qcow2::Qcow2Disk;

const BUDGET: u64 = 4 << 20;

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("qemu-utils must be installed");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A qemu-made image with 4 KiB clusters: header at 0, refcount table at
/// 0x1000, refcount block at 0x2000, L1 at 0x3000, then the first L2 table
/// at 0x4000 and data. Returns its bytes.
fn base(dir: &Path, compressed: bool) -> Vec<u8> {
    let p = dir.join("base.qcow2");
    if compressed {
        let raw = dir.join("base.raw");
        let data: Vec<u8> = (0..(256u32 << 10)).map(|i| (i % 13) as u8).collect();
        std::fs::write(&raw, data).unwrap();
        run(Command::new("qemu-img")
            .args(["convert", "-c", "-O", "qcow2", "-o", "cluster_size=4k"])
            .arg(&raw)
            .arg(&p));
    } else {
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-o", "cluster_size=4k"])
            .arg(&p)
            .arg("1M"));
        run(Command::new("qemu-io")
            .args([
                "-f",
                "qcow2",
                "-c",
                "write -P 7 0 12k",
                "-c",
                "write -P 9 600k 4k",
            ])
            .arg(&p));
    }
    let b = std::fs::read(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    b
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// What a broken image must give.
enum Want {
    /// `open` fails with all these words.
    OpenFails(&'static [&'static str]),
    /// `open` succeeds (or fails), and some read, or check, names these words.
    Somewhere(&'static [&'static str]),
}

fn cases(b: &[u8], compressed: &[u8]) -> Vec<(&'static str, Vec<u8>, Want)> {
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = b.to_vec();
        f(&mut v);
        v
    };
    let l2 = 0x4000usize;
    vec![
        (
            "bad-version",
            edit(&|v| put32(v, 4, 4)),
            Want::OpenFails(&["version 4"]),
        ),
        (
            "cluster-bits-big",
            edit(&|v| put32(v, 20, 30)),
            Want::OpenFails(&["cluster_bits 30"]),
        ),
        (
            "cluster-bits-small",
            edit(&|v| put32(v, 20, 8)),
            Want::OpenFails(&["cluster_bits 8"]),
        ),
        (
            "l1-past-eof",
            edit(&|v| put64(v, 40, 1 << 40)),
            Want::OpenFails(&["L1 table", "past the end"]),
        ),
        (
            "l1-size-absurd",
            edit(&|v| put32(v, 36, u32::MAX)),
            Want::OpenFails(&["l1_size"]),
        ),
        (
            "size-absurd",
            edit(&|v| put64(v, 24, u64::MAX)),
            Want::OpenFails(&["l1_size", "too small"]),
        ),
        (
            "reftable-absurd",
            edit(&|v| put32(v, 56, u32::MAX)),
            Want::OpenFails(&["refcount_table_clusters"]),
        ),
        (
            "reftable-past-eof",
            edit(&|v| put64(v, 48, 1 << 40)),
            Want::OpenFails(&["refcount table", "past the end"]),
        ),
        (
            "header-length",
            edit(&|v| put32(v, 100, 7)),
            Want::OpenFails(&["header_length"]),
        ),
        (
            "refcount-order",
            edit(&|v| put32(v, 96, 9)),
            Want::OpenFails(&["refcount_order"]),
        ),
        (
            "extension-too-long",
            edit(&|v| {
                put32(v, 112, 0x1234_5678);
                put32(v, 116, 0x10000);
            }),
            Want::OpenFails(&["header extension", "length"]),
        ),
        (
            "backing-name-too-long",
            edit(&|v| {
                put64(v, 8, 512);
                put32(v, 16, 5000);
            }),
            Want::OpenFails(&["backing file name"]),
        ),
        (
            "backing-self",
            edit(&|v| {
                put64(v, 8, 3072);
                put32(v, 16, 7);
                v[3072..3079].copy_from_slice(b"x.qcow2");
            }),
            Want::OpenFails(&["loops"]),
        ),
        (
            "l2-past-eof",
            edit(&|v| put64(v, 0x3000, (1 << 40) | (1 << 63))),
            Want::Somewhere(&["L2 table", "past the end"]),
        ),
        (
            "data-past-eof",
            edit(&|v| put64(v, l2, (1 << 40) | (1 << 63))),
            Want::Somewhere(&["past the end"]),
        ),
        (
            "data-unaligned",
            edit(&|v| put64(v, l2 + 8, 0x5200 | (1 << 63))),
            Want::Somewhere(&["not aligned"]),
        ),
        (
            "refcount-loop",
            edit(&|v| put64(v, 0x1000, 0x1000)),
            Want::Somewhere(&["refcount table"]),
        ),
        (
            "refcount-zero",
            edit(&|v| put32(v, 0x2000 + 8, 0)),
            Want::Somewhere(&["refcount is 0"]),
        ),
        (
            "l2-is-refblock",
            edit(&|v| put64(v, 0x3000, 0x2000 | (1 << 63))),
            Want::Somewhere(&["referenced 2 times"]),
        ),
        (
            "compressed-garbage",
            {
                let mut v = compressed.to_vec();
                // The first compressed cluster's bytes follow the L2 table.
                for x in &mut v[0x5000..0x5020] {
                    *x = 0xff;
                }
                v
            },
            Want::Somewhere(&["compressed"]),
        ),
    ]
}

#[test]
fn broken_images_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let b = base(dir.path(), false);
    let c = base(dir.path(), true);
    let mut failures = Vec::new();
    for (name, bytes, want) in cases(&b, &c) {
        let path = dir.path().join("x.qcow2");
        std::fs::write(&path, &bytes).unwrap();
        let outcome = exercise::exercise(&path, BUDGET);
        outcome.assert_errors_name(&path);
        let direct = Qcow2Disk::open(&path, false).err().map(|e| e.to_string());
        let mut texts: Vec<String> = outcome.errors().iter().map(|s| s.to_string()).collect();
        texts.extend(direct.clone());
        if let Ok(r) = &outcome.check {
            texts.extend(
                r.problems
                    .iter()
                    .map(|p| format!("{}: {}", p.structure, p.message)),
            );
        }
        let ok = match want {
            Want::OpenFails(words) => direct
                .as_ref()
                .is_some_and(|e| words.iter().all(|w| e.contains(w))),
            Want::Somewhere(words) => texts.iter().any(|t| words.iter().all(|w| t.contains(w))),
        };
        if !ok {
            failures.push(format!("{name}: {texts:?}"));
        }
    }
    // Bad magic: not a qcow2 image at all.
    let path = dir.path().join("magic.qcow2");
    let mut m = b.clone();
    m[0] = b'X';
    std::fs::write(&path, &m).unwrap();
    let e = Qcow2Disk::open(&path, false).err().unwrap().to_string();
    assert!(e.contains("magic") && e.contains("magic.qcow2"), "{e}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn random_damage_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let b = base(dir.path(), false);
    let c = base(dir.path(), true);
    let path = dir.path().join("r.qcow2");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..300 {
        let mut v = if round % 3 == 0 { c.clone() } else { b.clone() };
        for _ in 0..1 + round % 4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Metadata lives in the first six clusters.
            let at = (x % (6 * 4096).min(v.len() as u64)) as usize;
            v[at] ^= (x >> 32) as u8 | 1;
        }
        std::fs::write(&path, &v).unwrap();
        let outcome = std::panic::catch_unwind(|| exercise::exercise(&path, BUDGET))
            .unwrap_or_else(|_| panic!("round {round} panicked"));
        outcome.assert_errors_name(&path);
    }
}
