#!/usr/bin/env bash
# Throughput of `vmhub nbd serve` against `qemu-nbd` exporting the same dynamic
# VHD, measured by `qemu-img bench` over a Unix socket, in one run:
#   - 4 KiB reads scattered over the disk (a large prime step; qemu-img bench
#     has no random mode), queue depth 16
#   - 64 KiB sequential reads, queue depth 16
#   - 64 KiB sequential writes, queue depth 16, into a fresh copy of the image
# and prints each server's time and the ratio (vmhub throughput / qemu-nbd's;
# the target is >= 1.0 on every line).
#
# Usage: bench/nbd.sh [WORKDIR]
#   WORKDIR  scratch folder parent (default $TMPDIR or /tmp); needs ~3 GiB.
# Environment:
#   VMHUB=path  vmhub binary (default: cargo build --release -p vmhub)
#   REPS=3      repetitions per measurement; the median is reported
#   SIZE_MB=2048  virtual size of the test disk
set -euo pipefail

REPS=${REPS:-3}
SIZE_MB=${SIZE_MB:-2048}
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${VMHUB:-}" ]; then
    cargo build --release --quiet -p vmhub --manifest-path "$root/Cargo.toml"
    VMHUB="${CARGO_TARGET_DIR:-$root/target}/release/vmhub"
fi
for tool in qemu-img qemu-nbd qemu-io; do
    command -v "$tool" >/dev/null || { echo "bench/nbd.sh: $tool is missing" >&2; exit 1; }
done

work=$(mktemp -d "${1:-${TMPDIR:-/tmp}}/vmhub-nbd-bench.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The test disk: a dynamic VHD (2 MiB blocks) whose first half holds random
# data and whose second half is empty, so reads meet both.
echo "building a ${SIZE_MB} MiB dynamic VHD ..." >&2
raw="$work/src.raw"
truncate -s "${SIZE_MB}M" "$raw"
dd if=/dev/urandom of="$raw" bs=1M count=$((SIZE_MB / 2)) conv=notrunc status=none
"$VMHUB" img convert "$raw" "$work/disk.vhd" >/dev/null
rm -f "$raw"

# Starts a server for IMAGE on SOCKET; waits until it accepts connections.
start() { # kind image socket
    local kind=$1 image=$2 sock=$3
    rm -f "$sock"
    if [ "$kind" = vmhub ]; then
        "$VMHUB" nbd serve "$image" --socket "$sock" --export-name disk >/dev/null 2>"$work/$kind.log" &
    else
        qemu-nbd -f vpc -x disk --socket="$sock" --persistent --shared=8 "$image" 2>"$work/$kind.log" &
    fi
    pids+=($!)
    for _ in $(seq 100); do
        qemu-img info "nbd+unix:///disk?socket=$sock" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "bench/nbd.sh: $kind did not start:" >&2
    cat "$work/$kind.log" >&2
    exit 1
}

stop_all() {
    for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}

# Seconds of one qemu-img bench run.
bench() { # uri args...
    local uri=$1
    shift
    qemu-img bench -f raw "$@" "$uri" | sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p'
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# 4 KiB * 997 * 4099 is a step that visits the disk in a scattered order.
STEP=$((4096 * 997))
declare -A args=(
    [read4k]="-c 200000 -d 16 -s 4k -S $STEP"
    [read64k]="-c 40000 -d 16 -s 64k"
    [write64k]="-w -c 16000 -d 16 -s 64k"
)
order=(read4k read64k write64k)

sync
cat "$work/disk.vhd" >/dev/null
declare -A result
for test in "${order[@]}"; do
    for kind in vmhub qemu-nbd; do
        times=()
        for _ in $(seq "$REPS"); do
            image="$work/disk.vhd"
            if [ "$test" = write64k ]; then
                image="$work/w-$kind.vhd"
                cp --sparse=always "$work/disk.vhd" "$image"
            fi
            start "$kind" "$image" "$work/$kind.sock"
            times+=("$(bench "nbd+unix:///disk?socket=$work/$kind.sock" ${args[$test]})")
            stop_all
        done
        result[$test,$kind]=$(printf '%s\n' "${times[@]}" | median)
    done
done

# The writes landed: qemu-img sees the same content in both written copies.
qemu-img compare -q -f vpc -F vpc "$work/w-vmhub.vhd" "$work/w-qemu-nbd.vhd" ||
    { echo "bench/nbd.sh: the two servers wrote different data" >&2; exit 1; }

printf '\n%-10s %12s %12s %10s\n' test "vmhub s" "qemu-nbd s" "ratio"
for test in "${order[@]}"; do
    v=${result[$test,vmhub]} q=${result[$test,qemu-nbd]}
    printf '%-10s %12s %12s %10s\n' "$test" "$v" "$q" "$(awk -v v="$v" -v q="$q" 'BEGIN {printf "%.2f", q / v}')"
done
echo "(ratio: vmhub throughput / qemu-nbd throughput, median of $REPS; >= 1.0 is the target)"
