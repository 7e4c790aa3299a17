#!/usr/bin/env bash
# Fuzzes vdisk's read path (open, info, map, reads, check) with cargo-fuzz.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]   # default 60 seconds, every target
#
# Targets:
#   open_read   each input is an image file of its own;
#   open_chain  each input is a differencing disk beside a valid parent, so that
#               parent locators, names, ids and the chain are reached;
#   open_vhdx, open_qcow2, open_vmdk, open_vdi
#               each input is an image of that format (checksums recomputed
#               where the format has them), through the same read path.
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
    targets=(open_read open_chain open_vhdx open_qcow2 open_vmdk open_vdi)
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

# Seeds for the other formats: small images qemu-img makes, with some data.
seed() { # TARGET QEMU-FORMAT OPTIONS...
    local dir="fuzz/corpus/$1" fmt="$2" i=0 opts
    shift 2
    [ -n "$(ls -A "$dir" 2>/dev/null)" ] && return
    for opts in "$@"; do
        qemu-img create -q -f "$fmt" -o "$opts" "$dir/seed$i" 4M &&
            qemu-io -f "$fmt" -c "write -P 0x5a 1M 64k" -c "write -z 2M 64k" "$dir/seed$i" >/dev/null ||
            echo "fuzz.sh: cannot make a $fmt seed with $opts" >&2
        i=$((i + 1))
    done
}
for t in "${targets[@]}"; do
    case "$t" in
        open_vhdx) seed "$t" vhdx subformat=dynamic,block_size=1M subformat=fixed ;;
        open_qcow2) seed "$t" qcow2 compat=0.10 compat=1.1,cluster_size=4096 extended_l2=on ;;
        open_vmdk) seed "$t" vmdk subformat=monolithicSparse subformat=streamOptimized ;;
        open_vdi) seed "$t" vdi static=off static=on ;;
    esac
done

# The targets write each input to a file (and open_chain a parent beside it),
# one per process; they go to a folder of this run's own, removed at the end.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# cargo-fuzz passes nightly-only flags (-Zsanitizer=address and others);
# RUSTC_BOOTSTRAP lets the stable toolchain accept them.
status=0
for t in "${targets[@]}"; do
    echo "fuzz.sh: $t for $seconds seconds"
    # Inputs as large as the seeds: a VHDX's structures span its first MiBs.
    case "$t" in
        open_vhdx) max_len=$((8 << 20)) ;;
        open_qcow2 | open_vmdk | open_vdi) max_len=$((1 << 20)) ;;
        *) max_len=65536 ;;
    esac
    TMPDIR="$scratch" RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
        -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 || status=$?
    echo "findings in fuzz/artifacts/$t:"
    ls -l "fuzz/artifacts/$t"
done
exit "$status"
