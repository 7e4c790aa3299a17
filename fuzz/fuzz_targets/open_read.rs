//! Arbitrary bytes as an image file, through vdisk's whole read path: open, info,
//! map, reads and check. A panic, an abort (a wild allocation) or an error that
//! does not name the file is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

// The same operations the malformed-image tests run. The tests read fields of
// the outcome that this target has no use for.
#[allow(dead_code)]
#[path = "../../crates/vdisk/tests/corpus/exercise.rs"]
mod exercise;

/// Bytes read per input at most: a hostile footer can claim a 2 TiB disk, and a
/// slow input is a wasted one.
const BUDGET: u64 = 1 << 20;

/// vdisk opens images by path, so each input is written to a file first. One
/// file per process, so that libFuzzer's fork and jobs modes do not share it.
fn image_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("vdisk-fuzz-{}.img", std::process::id())))
}

fn run(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("cannot write the input to a temporary file");
    exercise::exercise(path, BUDGET).assert_errors_name(path);
}

fuzz_target!(|data: &[u8]| {
    let path = image_path();
    run(path, data);
    // A mutation almost never leaves a checksum right, so most inputs would stop
    // at the first checksum test; the same input with its checksums recomputed
    // reaches the fields behind them.
    let mut sealed = data.to_vec();
    exercise::reseal(&mut sealed);
    if sealed != data {
        run(path, &sealed);
    }
});
