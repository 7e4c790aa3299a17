#!/usr/bin/env bash
# Times `vmhub fs` listing and extracting a tree of 10,000 files from a FAT32
# and an ext4 image, against mtools (`mdir -/`, `mcopy -s`) and debugfs
# (`rdump`) on the same images, in one run.
#
# Usage: bench/fs.sh [WORKDIR]
#
#   WORKDIR   where to put the scratch directory (default: $BENCH_DIR, else
#             $TMPDIR or /tmp); removed at the end. Needs about 2 GiB free.
#
# Environment:
#   VMHUB=path   vmhub binary to time (default: build it with
#                `cargo build --release -p vmhub`, honouring CARGO_TARGET_DIR)
#   FILES=10000  files in the tree (in folders of 100)
#   REPS=3       repetitions of each measurement; the median is reported
#   SEED=20261124
#
# The tree: FILES files of 0–16 KiB of seeded pseudo-random bytes, 100 to a
# folder, folders two levels deep, names long and mixed case (FAT keeps them
# as long names). fat32.img: mkfs.vfat -F 32 then `mcopy -s`; ext4.img:
# `mke2fs -t ext4 -d`. Both raw, with the filesystem at sector 0.
#
# Timed (wall clock), warm cache (the image read once before), each tool's
# output removed before every run, runs interleaved:
#   list     vmhub `fs ls -R IMG` > /dev/null  vs  `mdir -/ -i IMG ::/` > /dev/null
#            (ext4: vmhub only; debugfs has no recursive listing)
#   extract  vmhub `fs get IMG:/ DEST`  vs  `mcopy -s -i IMG ::/* DEST`  and
#            `debugfs -R "rdump / DEST" IMG`
# Every extraction is compared with the source tree (`diff -r`), so a fast
# wrong result fails the benchmark.
set -euo pipefail

FILES=${FILES:-10000}
REPS=${REPS:-3}
SEED=${SEED:-20261124}
export PATH="$PATH:/usr/sbin:/sbin" MTOOLS_SKIP_CHECK=1

repo=$(cd "$(dirname "$0")/.." && pwd)
for tool in mkfs.vfat mcopy mdir mke2fs debugfs python3 bc diff; do
    command -v "$tool" >/dev/null || { echo "fs.sh: $tool is required (scripts/deps.sh installs it)" >&2; exit 1; }
done
target=${CARGO_TARGET_DIR:-$repo/target}
[[ $target = /* ]] || target=$repo/$target
if [[ -z ${VMHUB:-} ]]; then
    (cd "$repo" && cargo build --release -p vmhub --quiet)
    VMHUB=$target/release/vmhub
fi

parent=${1:-${BENCH_DIR:-${TMPDIR:-/tmp}}}
mkdir -p "$parent"
work=$(mktemp -d "$(cd "$parent" && pwd)/vmhub-fs-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

echo "# vmhub fs benchmark"
echo "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "host:     $(nproc) CPUs, kernel $(uname -r)"
rev=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')
echo "vmhub:    $VMHUB (source $rev)"
echo "peers:    $(mcopy --version | head -1); $(debugfs -V 2>&1 | head -1)"
echo "load:     $(uptime | sed 's/.*load average/load average/')"
echo

echo "building the tree and the images ..." >&2
python3 - "$SEED" "$FILES" src <<'EOF'
import os, random, sys
seed, files, root = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = random.Random(seed)
for i in range(files):
    d = os.path.join(root, f"Group {i // 1000:02d}", f"Folder {i // 100:03d}")
    os.makedirs(d, exist_ok=True)
    n = rng.randrange(0, 16 * 1024)
    with open(os.path.join(d, f"Data file {i:05d}.bin"), "wb") as f:
        f.write(rng.randbytes(n))
EOF
bytes=$(du -sb src | cut -f1)
mkfs.vfat -C -F 32 fat32.img $((512 * 1024)) >/dev/null
mcopy -s -i fat32.img src/* ::/
mke2fs -q -F -t ext4 -d src ext4.img 512M
echo "tree:     $FILES files in $(find src -type d | wc -l) folders, $((bytes >> 20)) MiB"
echo

declare -A times
run() { # KEY COMMAND...
    local key=$1 t0
    shift
    t0=$EPOCHREALTIME
    "$@"
    times[$key]+="$(echo "$EPOCHREALTIME - $t0" | bc) "
}
median() {
    tr -s ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {printf "%.3f", (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'
}
fresh() { rm -rf out; mkdir out; }
cat fat32.img ext4.img >/dev/null
for ((r = 0; r < REPS; r++)); do
    run list.fat.vmhub bash -c "'$VMHUB' fs ls -R fat32.img >/dev/null"
    run list.fat.mtools bash -c "mdir -/ -i fat32.img ::/ >/dev/null"
    run list.ext.vmhub bash -c "'$VMHUB' fs ls -R ext4.img >/dev/null"
    fresh; run get.fat.vmhub bash -c "'$VMHUB' fs get fat32.img:/ out 2>/dev/null"
    diff -r src out >/dev/null || { echo "FAIL: vmhub fs get (FAT) differs from the source" >&2; exit 1; }
    fresh; run get.fat.mtools mcopy -s -n -i fat32.img '::/*' out/
    diff -r src out >/dev/null || { echo "FAIL: mcopy differs from the source" >&2; exit 1; }
    fresh; run get.ext.vmhub bash -c "'$VMHUB' fs get ext4.img:/ out 2>/dev/null"
    rm -rf out/lost+found
    diff -r src out >/dev/null || { echo "FAIL: vmhub fs get (ext4) differs from the source" >&2; exit 1; }
    fresh; run get.ext.debugfs bash -c "debugfs -R 'rdump / out' ext4.img 2>/dev/null"
    rm -rf out/lost+found
    diff -r src out >/dev/null || { echo "FAIL: debugfs rdump differs from the source" >&2; exit 1; }
done
rm -rf out

m() { echo "${times[$1]}" | median; }
ratio() { echo "scale=2; $(m "$1") / $(m "$2")" | bc | sed 's/^\./0./'; }
verdict() { [[ $(echo "$(m "$1") <= $(m "$2")" | bc) = 1 ]] && echo meets || echo MISSES; }
echo "## $FILES files, warm cache (median of $REPS, seconds)"
echo
echo "| image | task | vmhub | peer | peer time | vmhub / peer (target ≤ 1.0) |"
echo "|---|---|---|---|---|---|"
echo "| FAT32 | list -R | $(m list.fat.vmhub) | mdir -/ | $(m list.fat.mtools) | $(ratio list.fat.vmhub list.fat.mtools) ($(verdict list.fat.vmhub list.fat.mtools)) |"
echo "| FAT32 | extract all | $(m get.fat.vmhub) | mcopy -s | $(m get.fat.mtools) | $(ratio get.fat.vmhub get.fat.mtools) ($(verdict get.fat.vmhub get.fat.mtools)) |"
echo "| ext4 | list -R | $(m list.ext.vmhub) | – | – | – |"
echo "| ext4 | extract all | $(m get.ext.vmhub) | debugfs rdump | $(m get.ext.debugfs) | $(ratio get.ext.vmhub get.ext.debugfs) ($(verdict get.ext.vmhub get.ext.debugfs)) |"
