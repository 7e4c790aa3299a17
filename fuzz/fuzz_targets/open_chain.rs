//! Arbitrary bytes as a differencing disk beside a valid parent, through vdisk's
//! whole read path: the parent locators, the parent's name and id, and opening
//! the chain. A panic, an abort (a wild allocation), a hang or an error that
//! does not name the file is a finding.
//!
//! The seeds are the children of the malformed-chain corpus of
//! crates/vdisk/tests/chains.rs, made over a parent with the same bytes and
//! unique id as the one written here, so that they find it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

// The same operations and the same parent as the chain tests. The tests read
// fields of the outcome that this target has no use for.
#[allow(dead_code)]
#[path = "../../crates/vdisk/tests/corpus/exercise.rs"]
mod exercise;

/// Bytes read per input at most, as in open_read.
const BUDGET: u64 = 1 << 20;

/// Where each input is written: beside the parent, in a folder of this
/// process's own, so that libFuzzer's fork and jobs modes do not share it.
fn child_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vdisk-fuzz-chain-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cannot create the folder of the chain");
        exercise::write_parent(&dir.join(exercise::PARENT_FILE)).expect("cannot write the parent");
        dir.join(exercise::CHILD_FILE)
    })
}

fn run(bytes: &[u8]) {
    let path = child_path();
    std::fs::write(path, bytes).expect("cannot write the input to a temporary file");
    exercise::exercise(path, BUDGET).assert_errors_name(path);
}

fuzz_target!(|data: &[u8]| {
    run(data);
    // As in open_read: the input with its checksums recomputed gets past them.
    let mut sealed = data.to_vec();
    exercise::reseal(&mut sealed);
    if sealed != data {
        run(&sealed);
    }
    // A mutation of the parent id stops opening at "wrong parent"; with the
    // parent's id put back, it goes on into the parent.
    let mut adopted = data.to_vec();
    if exercise::adopt_parent(&mut adopted, &exercise::PARENT_ID) && adopted != sealed {
        run(&adopted);
    }
});
