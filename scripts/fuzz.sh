#!/usr/bin/env bash
# Fuzzes vdisk's read path (open, info, map, reads, check) with cargo-fuzz.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]   # default 60 seconds, every target
#
# Targets:
#   open_read   each input is an image file of its own;
#   open_chain  each input is a differencing disk beside a valid parent, so that
#               parent locators, names, ids and the chain are reached.
# The seed corpora are the malformed-image corpus of crates/vdisk/tests/malformed.rs
# and the malformed-chain corpus of crates/vdisk/tests/chains.rs.
# Each run goes on past crashes (libFuzzer's fork mode) so that one known crash
# does not hide the others; crashing inputs land in fuzz/artifacts/TARGET/.
# Reproduce one with: RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(open_read open_chain)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
done
# The tests write the seeds; run whole, they also report the seeds that crash,
# which fork mode below would drop silently while loading them.
if ! VMHUB_WRITE_CORPUS="$PWD/fuzz/corpus/open_read" \
    cargo test -p vdisk --test malformed --locked -- --include-ignored; then
    echo "fuzz.sh: the malformed-image test fails (above); fuzzing anyway" >&2
fi
if ! VMHUB_WRITE_CHAIN_CORPUS="$PWD/fuzz/corpus/open_chain" \
    cargo test -p vdisk --test chains --locked -- --include-ignored broken_chains write_chain_corpus; then
    echo "fuzz.sh: the malformed-chain test fails (above); fuzzing anyway" >&2
fi

# The targets write each input to a file (and open_chain a parent beside it),
# one per process; they go to a folder of this run's own, removed at the end.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# cargo-fuzz passes nightly-only flags (-Zsanitizer=address and others);
# RUSTC_BOOTSTRAP lets the stable toolchain accept them.
status=0
for t in "${targets[@]}"; do
    echo "fuzz.sh: $t for $seconds seconds"
    TMPDIR="$scratch" RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
        -max_len=65536 -timeout=10 -rss_limit_mb=2048 || status=$?
    echo "findings in fuzz/artifacts/$t:"
    ls -l "fuzz/artifacts/$t"
done
exit "$status"
