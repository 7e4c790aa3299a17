//! Arbitrary bytes behind a valid qcow2 magic and version, through vdisk's whole
//! read path: open, info, map, reads and check. A panic, an abort (a wild
//! allocation) or an error that does not name the file is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

// The same operations the malformed-image tests run. The tests read fields of
// the outcome that this target has no use for.
#[allow(dead_code)]
#[path = "../../crates/vdisk/tests/corpus/exercise.rs"]
mod exercise;

/// Bytes read per input at most: a hostile header can claim a huge disk.
const BUDGET: u64 = 1 << 20;

/// vdisk opens images by path, so each input is written to a file first. One
/// file per process, so that libFuzzer's fork and jobs modes do not share it.
fn image_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("vdisk-fuzz-qcow2-{}.img", std::process::id()))
    })
}

fn run(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("cannot write the input to a temporary file");
    exercise::exercise(path, BUDGET).assert_errors_name(path);
}

fuzz_target!(|data: &[u8]| {
    let path = image_path();
    // Most mutations of the magic would make the input a raw image; keeping
    // it (and a valid version) sends every input into the qcow2 code.
    let mut image = data.to_vec();
    if image.len() >= 8 {
        image[..4].copy_from_slice(b"QFI\xfb");
        image[7] = 2 + (image[7] & 1);
        image[4..7].fill(0);
    }
    run(path, &image);
});
