#!/usr/bin/env bash
# Fuzzes vdisk's read path (open, info, map, reads, check) with cargo-fuzz.
#
#   bash scripts/fuzz.sh [SECONDS]      # default 60
#
# The seed corpus is the malformed-image corpus of crates/vdisk/tests/malformed.rs.
# The run goes on past crashes (libFuzzer's fork mode) so that one known crash
# does not hide the others; crashing inputs land in fuzz/artifacts/open_read/.
# Reproduce one with: RUSTC_BOOTSTRAP=1 cargo fuzz run open_read fuzz/artifacts/open_read/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

corpus=fuzz/corpus/open_read
mkdir -p "$corpus" fuzz/artifacts/open_read
# The malformed-image test writes the seeds; run whole, it also reports the seeds
# that crash, which fork mode below would drop silently while loading them.
if ! VMHUB_WRITE_CORPUS="$PWD/$corpus" cargo test -p vdisk --test malformed --locked -- --include-ignored; then
    echo "fuzz.sh: the malformed-image test fails (above); fuzzing anyway" >&2
fi

# cargo-fuzz passes nightly-only flags (-Zsanitizer=address and others);
# RUSTC_BOOTSTRAP lets the stable toolchain accept them.
status=0
RUSTC_BOOTSTRAP=1 cargo fuzz run open_read "$corpus" -- \
    -max_total_time="$seconds" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
    -max_len=65536 -timeout=10 -rss_limit_mb=2048 || status=$?
echo "findings in fuzz/artifacts/open_read:"
ls -l fuzz/artifacts/open_read
exit "$status"
