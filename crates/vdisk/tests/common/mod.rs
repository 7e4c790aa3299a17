//! Helpers shared by the integration tests that use QEMU as a peer.
// Each test binary uses only some of these.
#![allow(dead_code)]

pub mod crash;

use std::path::Path;
use std::process::Command;

/// Runs `cmd`, failing the test with its stderr unless it succeeds.
pub fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (qemu-utils must be installed)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What qemu-img reads from the VHD `img`, converted through the raw file `raw`.
pub fn qemu_contents(img: &Path, raw: &Path) -> Vec<u8> {
    let _ = std::fs::remove_file(raw);
    run(Command::new("qemu-img")
        .args(["convert", "-f", "vpc", "-O", "raw"])
        .arg(img)
        .arg(raw));
    std::fs::read(raw).unwrap()
}

/// A small deterministic generator (xorshift), so that a failure repeats.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
