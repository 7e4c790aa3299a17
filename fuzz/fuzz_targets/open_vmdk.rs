//! Arbitrary bytes as a VMDK sparse extent (behind its "KDMV" signature) or
//! text descriptor, through vdisk's whole read path: open, info, map, reads and
//! check. A panic, an abort (a wild allocation) or an
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

/// The signature inputs get, so that the VMDK code sees them.
const SIGNATURE: &[u8; 4] = b"KDMV";

/// One file per process, so that libFuzzer's fork and jobs modes do not share it.
fn image_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("vdisk-fuzz-vmdk-{}.vmdk", std::process::id()))
    })
}

fn run(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("cannot write the input to a temporary file");
    exercise::exercise(path, BUDGET).assert_errors_name(path);
}

fuzz_target!(|data: &[u8]| {
    // A text descriptor is tried as it is; anything else as a sparse extent.
    if data.starts_with(b"# Disk DescriptorFile") {
        run(image_path(), data);
        return;
    }
    let mut image = SIGNATURE.to_vec();
    image.extend_from_slice(data.get(4..).unwrap_or(&[]));
    run(image_path(), &image);
});
