//! Arbitrary bytes under a VHDX file type identifier, through vdisk's whole
//! read path: open (with log replay in memory), info, map, reads and check. A
//! panic, an abort (a wild allocation) or an error that does not name the
//! file is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

// The same operations the malformed-image tests run. The tests read fields of
// the outcome that this target has no use for.
#[allow(dead_code)]
#[path = "../../crates/vdisk/tests/corpus/exercise.rs"]
mod exercise;

/// Bytes read per input at most: a hostile metadata region can claim a
/// 64 TiB disk, and a slow input is a wasted one.
const BUDGET: u64 = 1 << 20;

/// The offsets and lengths of the structures whose checksums are recomputed:
/// the two headers (4 KiB) and the two region tables (64 KiB).
const SEALED: [(usize, usize); 4] = [
    (64 << 10, 4 << 10),
    (128 << 10, 4 << 10),
    (192 << 10, 64 << 10),
    (256 << 10, 64 << 10),
];

/// vdisk opens images by path, so each input is written to a file first. One
/// file per process, so that libFuzzer's fork and jobs modes do not share it.
fn image_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("vdisk-fuzz-vhdx-{}.img", std::process::id()))
    })
}

fn run(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("cannot write the input to a temporary file");
    exercise::exercise(path, BUDGET).assert_errors_name(path);
}

/// Recomputes the CRC-32C of the headers and region tables, so that mutations
/// reach the fields behind the checksums.
fn reseal(b: &mut [u8]) {
    for (at, len) in SEALED {
        if let Some(s) = b.get_mut(at..at + len) {
            s[4..8].fill(0);
            let crc = vdisk::vhdx::fields::crc32c(s);
            s[4..8].copy_from_slice(&crc.to_le_bytes());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Every input is a VHDX as far as the format probe goes; the signature
    // replaces the first bytes, so that offsets in the input are offsets in
    // the file and seeds are plain images.
    let mut bytes = data.to_vec();
    if bytes.len() < 8 {
        bytes.resize(8, 0);
    }
    bytes[..8].copy_from_slice(b"vhdxfile");
    let path = image_path();
    run(path, &bytes);
    let mut sealed = bytes.clone();
    reseal(&mut sealed);
    if sealed != bytes {
        run(path, &sealed);
    }
});
