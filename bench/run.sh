#!/usr/bin/env bash
# Time to the guest's banner: `vmhub run` against QEMU booting the same dynamic
# VHD directly, in one run, interleaved.
#
# The machine is scripts/tiny-machine.sh's; its banner is the line
# "VMHUB-MARKER: ..." it prints once it has read its own disk. Both boot under
# TCG (the same accelerator, whatever this host's KVM does) with 256 MiB and a
# virtio disk:
#   qemu     qemu-system-x86_64 -drive file=machine.vhd,format=vpc,snapshot=on
#            (snapshot=on keeps the image unchanged, as vmhub does)
#   vmhub    vmhub run machine.vhd --accel tcg --rm (instance disk, NBD server)
# The time runs from the command's start to the banner on its serial console.
# Prints the median of each and the overhead of vmhub (target: <= 5 %).
#
# Usage: bench/run.sh [WORKDIR]
# Environment: VMHUB=path (default: cargo build --release -p vmhub), REPS=5
set -euo pipefail

REPS=${REPS:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${VMHUB:-}" ]; then
    cargo build --release --quiet -p vmhub --manifest-path "$root/Cargo.toml"
    VMHUB="${CARGO_TARGET_DIR:-$root/target}/release/vmhub"
fi
VMHUB=$(realpath "$VMHUB")
work=$(mktemp -d "${1:-${TMPDIR:-/tmp}}/vmhub-run-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

VMHUB_CACHE=$root/target/tiny-machine-cache bash "$root/scripts/tiny-machine.sh" "$work" bench >/dev/null
"$VMHUB" img convert "$work/tiny.raw" "$work/machine.vhd" >/dev/null
sum=$(sha256sum <"$work/machine.vhd")

# Seconds from the start of the command to the banner line.
to_banner() {
    local stamp="$work/stamp" t0
    rm -f "$stamp"
    t0=$EPOCHREALTIME
    "$@" </dev/null 2>>"$work/stderr.log" | while IFS= read -r line; do
        case "$line" in
        *VMHUB-MARKER:*) [ -e "$stamp" ] || echo "$EPOCHREALTIME" >"$stamp" ;;
        esac
    done
    [ -e "$stamp" ] || { echo "bench/run.sh: no banner from: $*" >&2; cat "$work/stderr.log" >&2; exit 1; }
    awk -v a="$t0" -v b="$(cat "$stamp")" 'BEGIN {printf "%.3f\n", b - a}'
}

qemu_times=()
vmhub_times=()
for i in $(seq "$REPS"); do
    qemu_times+=("$(to_banner qemu-system-x86_64 -machine pc,accel=tcg -m 256 -display none \
        -serial stdio -monitor none -no-reboot \
        -drive "file=$work/machine.vhd,format=vpc,if=virtio,snapshot=on")")
    vmhub_times+=("$(to_banner "$VMHUB" run "$work/machine.vhd" --accel tcg --rm --memory 256M)")
    echo "run $i: qemu ${qemu_times[-1]} s, vmhub ${vmhub_times[-1]} s" >&2
done
[ "$(sha256sum <"$work/machine.vhd")" = "$sum" ] || { echo "bench/run.sh: the image changed" >&2; exit 1; }

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
q=$(median "${qemu_times[@]}")
v=$(median "${vmhub_times[@]}")
printf '\n%-28s %8s s\n' "qemu, image directly" "$q"
printf '%-28s %8s s\n' "vmhub run (NBD, instance)" "$v"
awk -v q="$q" -v v="$v" 'BEGIN {printf "overhead: %+.1f %% (median of '"$REPS"'; target <= 5 %%)\n", (v / q - 1) * 100}'
