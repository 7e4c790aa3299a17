//! Arbitrary bytes behind a valid VDI signature, through vdisk's whole read path:
//! open, info, map, reads and check. A panic, an abort (a wild allocation) or an
//! error that does not name the file is a finding.
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

/// Where the signature is; inputs get it so that the VDI code sees them.
const SIGNATURE_AT: usize = 0x40;

/// One file per process, so that libFuzzer's fork and jobs modes do not share it.
fn image_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("vdisk-fuzz-vdi-{}.vdi", std::process::id()))
    })
}

fn run(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("cannot write the input to a temporary file");
    exercise::exercise(path, BUDGET).assert_errors_name(path);
}

fuzz_target!(|data: &[u8]| {
    let mut image = data.to_vec();
    if image.len() < SIGNATURE_AT + 8 {
        image.resize(SIGNATURE_AT + 8, 0);
    }
    image[SIGNATURE_AT..SIGNATURE_AT + 4].copy_from_slice(&0xbeda_107f_u32.to_le_bytes());
    run(image_path(), &image);
});
