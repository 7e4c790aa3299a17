#!/usr/bin/env bash
# Reads through differencing chains, and `vmhub img merge` against
# `qemu-img commit` on an equivalent qcow2 chain.
#
# Usage: bench/chain.sh [WORKDIR]
#
#   WORKDIR   where to put the scratch directory for the images (default:
#             $BENCH_DIR, else $TMPDIR or /tmp); it is removed at the end. Needs
#             about 8 GiB free.
#
# Environment:
#   VMHUB=path       vmhub binary to time (default: build it with
#                    `cargo build --release -p vmhub`, honouring CARGO_TARGET_DIR)
#   CHAIN_FILL=path  the `chain_fill` example of vdisk (default: built likewise)
#   COUNT=20000      reads per `vmhub img bench` run (4 KiB, random, seed 1)
#   REPS=3           repetitions of each merge; the median is reported
#   SEED=20261124    seed for the layout and content of every disk (reproducible)
#   ONLY=merge       skip the read chain and its timings: merges only
#   VMHUB_ALT=path   a second vmhub binary whose merges are timed too,
#                    interleaved with the others (to compare two builds)
#   SETTLE=5         seconds to wait after preparing each merge run, before
#                    timing it (0: none)
#
# What is built (all disks 2 GiB, dynamic VHDs with 2 MiB blocks):
#   base       512 MiB of random data in 512 non-overlapping 1 MiB runs at seeded
#              random 4 KiB-aligned offsets: base.raw, and base.vhd made from it
#              with `vmhub img convert`.
#   c1 … c8    a chain of differencing disks, c1 over base.vhd, c2 over c1, …
#              Each holds about 32 MiB of its own: 256 runs of 4–256 KiB of random
#              data at random 4 KiB-aligned offsets, which overlap the base's data
#              and the other children's. No vmhub command writes into a disk, so
#              the data is copied in by vdisk's `chain_fill` example (through
#              `vdisk::open`, the same write path as any vmhub tool), each child
#              filled before the next is made over it.
#              "Depth 1" reads c1.vhd (one child over the base), "depth 8" c8.vhd.
#   merge      a copy of base.vhd and a child over it holding 512 MiB of changes:
#              128 runs of 4 MiB of random data, run i at i·16 MiB + 1 MiB + i·4 KiB
#              (4 KiB-aligned, each spanning three 2 MiB VHD blocks and mostly
#              not aligned to 64 KiB qcow2 clusters). The qcow2 chain holds the
#              same bytes: base.qcow2 made with `qemu-img convert` from base.raw,
#              child.qcow2 over it (-b base.qcow2 -F qcow2) written run by run
#              with `qemu-io -c "write -s …"`.
#
# What is timed:
#   reads      `vmhub img bench --pattern random --size 4K --count $COUNT` on
#              base.vhd, c1.vhd and c8.vhd: first cold (sync, then
#              `echo 3 > /proc/sys/vm/drop_caches`), then warm (the same reads
#              again right after, three times; the median is reported). The time
#              is the one bench prints: the reads alone, not opening the chain.
#   merge      `vmhub img merge child.vhd` (it fsyncs the parent before it
#              returns) against `qemu-img commit child.qcow2` followed by
#              `sync base.qcow2`, so both are timed until the data is durable;
#              [cmd …] is qemu-img alone. `vmhub img merge child.qcow2` is timed
#              too, on the same qcow2 chain as qemu-img (for information: the
#              target is for the VHD merge). Before every run both chains are copied
#              fresh from pristine copies, `sync` runs, and then the cache is made
#              cold (drop_caches, as root) or warm (the chain's files read), alike
#              for both tools, and then nothing runs for $SETTLE seconds: storage
#              just written (about 1 GiB of copies) goes on working after `sync`
#              returns, and a run timed at once pays for it in some rounds and
#              not others (removing the merged child took 0.3 s or 0.8–0.9 s
#              from one run to the next; 0.3–0.5 s after a pause of 5 s). Runs of
#              the tools are interleaved, and each round starts with the next
#              tool in turn, so that none always runs first.
# The ratios compare medians; a line after them gives, for information, the
# median of each round's ratio (vmhub's run over the qemu-img run beside it),
# which a drift of the storage's speed during the benchmark moves less.
# Every result is checked: c8.vhd must read as base.raw with the eight layers
# written over it (`vmhub img compare`, against a raw file built by this script),
# and each merged parent must read as base.raw with the changes written over it
# (`qemu-img compare`), so a fast wrong result fails the benchmark.
set -euo pipefail

COUNT=${COUNT:-20000}
REPS=${REPS:-3}
SETTLE=${SETTLE:-5}
SEED=${SEED:-20261124}
MiB=$((1 << 20))
GiB=$((1 << 30))
SIZE=$((2 * GiB))
DEPTH=8

repo=$(cd "$(dirname "$0")/.." && pwd)
for tool in qemu-img qemu-io openssl python3 cp sync bc; do
    command -v "$tool" >/dev/null || { echo "chain.sh: $tool is required" >&2; exit 1; }
done
target=${CARGO_TARGET_DIR:-$repo/target}
[[ $target = /* ]] || target=$repo/$target
if [[ -z ${VMHUB:-} ]]; then
    (cd "$repo" && cargo build --release -p vmhub --quiet)
    VMHUB=$target/release/vmhub
fi
if [[ -z ${CHAIN_FILL:-} ]]; then
    (cd "$repo" && cargo build --release -p vdisk --example chain_fill --quiet)
    CHAIN_FILL=$target/release/examples/chain_fill
fi
for bin in "$VMHUB" "$CHAIN_FILL"; do
    [[ -x $bin ]] || { echo "chain.sh: $bin is not executable" >&2; exit 1; }
done

cold_ok=1
if [[ ! -w /proc/sys/vm/drop_caches ]]; then
    echo "chain.sh: cannot drop caches (not root): \"cold\" runs below are only synced, not cold" >&2
    cold_ok=0
fi
# Empties the page cache (as far as this user can), alike before every tool.
make_cold() {
    sync
    if ((cold_ok)); then echo 3 >/proc/sys/vm/drop_caches; fi
}

parent=${1:-${BENCH_DIR:-${TMPDIR:-/tmp}}}
mkdir -p "$parent"
work=$(mktemp -d "$(cd "$parent" && pwd)/vmhub-chain-bench.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
cd "$work"

bench_start=$EPOCHREALTIME
elapsed() { printf '%.1f' "$(echo "$EPOCHREALTIME - $1" | bc)"; }
echo "# vmhub chain benchmark"
echo "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "host:     $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r)"
echo "work dir: $work ($(df -T . | awk 'NR==2 {print $2 " on " $1}'))"
rev=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')
[[ -z $(git -C "$repo" status --porcelain --untracked-files=no -- crates 2>/dev/null) ]] || rev+=" + uncommitted changes in crates/"
echo "vmhub:    $VMHUB ($("$VMHUB" --version 2>/dev/null || echo '?'), source $rev)"
echo "qemu-img: $(qemu-img --version | head -1)"
echo "load:     $(uptime | sed 's/.*load average/load average/')"
[[ -r /proc/pressure/io ]] && echo "io psi:   $(head -1 /proc/pressure/io)"
echo "storage:  $(dd if=/dev/zero of=dd.tmp bs=1M count=256 conv=fdatasync 2>&1 | tail -1 | sed 's/.*copied, //') (dd 256 MiB, conv=fdatasync)"
rm -f dd.tmp
echo "caches:   $( ((cold_ok)) && echo 'cold = sync + drop_caches' || echo 'cannot drop caches (not root): cold = sync only'); then ${SETTLE} s idle before each merge"
echo "seed:     $SEED"
echo

# ---------------------------------------------------------------------------
# Contents. One AES-CTR keystream derived from the seed feeds every disk's data,
# so every file is the same on every run. Written:
#   base.raw, layer1.raw … layer8.raw, changes.raw  (sparse, 2 GiB each)
#   expect-chain.raw   base.raw with layer1 … layer8 written over it, in order
#   expect-merge.raw   base.raw with changes.raw written over it
#   changes.runs       "offset length" of every run of changes.raw
# ---------------------------------------------------------------------------
echo "building the disks ..." >&2
t0=$EPOCHREALTIME
key=$(printf 'vmhub-chain-bench-%s' "$SEED" | sha256sum | cut -c1-32)
read -r -d '' generate <<'EOF' || true
import os, random, sys
seed, size, depth = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
MiB, KiB = 1 << 20, 1 << 10
rng = random.Random(seed)
src = sys.stdin.buffer

def data(n):
    b = src.read(n)
    if len(b) != n:
        sys.exit("short random stream")
    return b

def new(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.ftruncate(fd, size)
    return fd

# Base: 512 runs of 1 MiB, non-overlapping, 4 KiB-aligned.
runs, page = 512, 4 * KiB
free_pages = (size - runs * MiB) // page
starts = sorted(rng.randrange(free_pages + 1) for _ in range(runs))
base = [(p * page + i * MiB, MiB) for i, p in enumerate(starts)]
# Layers: 256 runs of 4–256 KiB each, anywhere (4 KiB-aligned), overlaps allowed.
layers = []
for _ in range(depth):
    runs = []
    for _ in range(256):
        n = rng.randrange(1, 65) * page
        runs.append((rng.randrange((size - n) // page + 1) * page, n))
    layers.append(runs)
# Changes for the merge: run i of 4 MiB at i·16 MiB + 1 MiB + i·4 KiB.
changes = [(i * 16 * MiB + MiB + i * page, 4 * MiB) for i in range(128)]

files = {"base": new("base.raw"), "changes": new("changes.raw"),
         "chain": new("expect-chain.raw"), "merge": new("expect-merge.raw")}
for k in range(depth):
    files[k] = new(f"layer{k + 1}.raw")
for off, n in base:
    b = data(n)
    for f in ("base", "chain", "merge"):
        os.pwrite(files[f], b, off)
for k, runs in enumerate(layers):
    for off, n in runs:
        b = data(n)
        os.pwrite(files[k], b, off)
        os.pwrite(files["chain"], b, off)
for off, n in changes:
    b = data(n)
    os.pwrite(files["changes"], b, off)
    os.pwrite(files["merge"], b, off)
for fd in files.values():
    os.close(fd)
with open("changes.runs", "w") as f:
    f.writelines(f"{off} {n}\n" for off, n in changes)
own = [sum(n for _, n in runs) for runs in layers]
print(f"base:     {len(base)} runs of 1 MiB ({sum(n for _, n in base) // MiB} MiB)")
print(f"layers:   {depth} × 256 runs of 4–256 KiB, {min(own) / MiB:.1f}–{max(own) / MiB:.1f} MiB written into each")
print(f"changes:  {len(changes)} runs of 4 MiB ({sum(n for _, n in changes) // MiB} MiB)")
EOF
# (Fed by process substitution: openssl is killed by SIGPIPE when python is done.)
python3 -c "$generate" "$SEED" "$SIZE" "$DEPTH" < <(openssl enc -aes-128-ctr -nosalt \
    -K "$key" -iv 00000000000000000000000000000000 -in /dev/zero 2>/dev/null)

# The read chain: base.vhd, then c1 … c8, each filled before the next is made.
"$VMHUB" img convert base.raw base.vhd
prev=base.vhd
[[ ${ONLY:-} != merge ]] || DEPTH=0
for ((k = 1; k <= DEPTH; k++)); do
    "$VMHUB" img create "c$k.vhd" --parent "$prev" >/dev/null
    "$CHAIN_FILL" "c$k.vhd" "layer$k.raw" >/dev/null
    prev=c$k.vhd
done
if [[ ${ONLY:-} != merge ]]; then
    "$VMHUB" img compare c8.vhd expect-chain.raw >/dev/null ||
        { echo "FAIL: c8.vhd does not read as expect-chain.raw" >&2; exit 1; }
fi

# The merge chains, kept pristine in vhd/ and qcow2/ and copied for every run.
mkdir vhd qcow2
cp --sparse=always base.vhd vhd/base.vhd
"$VMHUB" img create vhd/child.vhd --parent vhd/base.vhd >/dev/null
"$CHAIN_FILL" vhd/child.vhd changes.raw >/dev/null
qemu-img convert -f raw -O qcow2 base.raw qcow2/base.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 qcow2/child.qcow2
while read -r off len; do
    dd if=changes.raw iflag=skip_bytes,count_bytes skip="$off" count="$len" status=none |
        qemu-io -f qcow2 -c "write -q -s /dev/stdin $off $len" qcow2/child.qcow2
done <changes.runs
rm -f layer*.raw changes.raw
sync
alloc() { echo "$(($(stat -c %b "$1") * 512 / MiB)) MiB"; }
echo "files:    base.vhd $(alloc base.vhd);" \
    "vhd/child.vhd $(alloc vhd/child.vhd), qcow2/base.qcow2 $(alloc qcow2/base.qcow2)," \
    "qcow2/child.qcow2 $(alloc qcow2/child.qcow2) (allocated)"
echo "built in $(elapsed "$t0") s"
echo

# ---------------------------------------------------------------------------
# Reads through the chain
# ---------------------------------------------------------------------------
if [[ ${ONLY:-} != merge ]]; then
echo "timing reads ..." >&2
declare -A iops secs
bench() { # IMAGE → "iops seconds"
    "$VMHUB" img bench "$1" --pattern random --size 4K --count "$COUNT" --seed 1 --output json |
        python3 -c 'import json, sys; r = json.load(sys.stdin); print(r["iops"], r["seconds"])'
}
images=(base.vhd c1.vhd c8.vhd)
for img in "${images[@]}"; do
    make_cold
    read -r "iops[cold.$img]" "secs[cold.$img]" < <(bench "$img")
    # Warm runs are short (a few hundredths of a second): the median of three.
    read -r "iops[warm.$img]" "secs[warm.$img]" < <(
        for _ in 1 2 3; do bench "$img"; done | sort -g | sed -n 2p
    )
done

echo "## Random 4 KiB reads ($COUNT, seed 1; IOPS, seconds in parentheses)"
echo
echo "Cold: one run after drop_caches. Warm: the same reads again, median of 3 runs."
echo
echo "| image | chain | cold cache | warm cache | warm vs base |"
echo "|---|---|---|---|---|"
declare -A what=([base.vhd]='base (dynamic VHD)' [c1.vhd]='depth 1' [c8.vhd]='depth 8')
for img in "${images[@]}"; do
    printf '| %s | %s | %.0f (%.2f s) | %.0f (%.2f s) | %.2f |\n' "$img" "${what[$img]}" \
        "${iops[cold.$img]}" "${secs[cold.$img]}" "${iops[warm.$img]}" "${secs[warm.$img]}" \
        "$(echo "scale=4; ${iops[warm.$img]} / ${iops[warm.base.vhd]}" | bc)"
done
echo
fi

# ---------------------------------------------------------------------------
# Merge
# ---------------------------------------------------------------------------
echo "timing merges ..." >&2
declare -A times mids
mid=
vmhub_merge() { "$VMHUB" img merge run-vhd/child.vhd >/dev/null; mid=$EPOCHREALTIME; }
vmhub_qcow2_merge() { "$VMHUB" img merge run-vmhub-qcow2/child.qcow2 >/dev/null; mid=$EPOCHREALTIME; }
alt_merge() { "$VMHUB_ALT" img merge run-vhd/child.vhd >/dev/null; mid=$EPOCHREALTIME; }
qemu_commit() {
    qemu-img commit -q run-qcow2/child.qcow2
    mid=$EPOCHREALTIME
    sync run-qcow2/base.qcow2
}
prepare() { # DIR MODE [RUN]: fresh copies of the chain in RUN (default run-DIR), then the cache made cold or warm
    local dir=$1 mode=$2 run=${3:-run-$1}
    rm -rf "$run"
    cp -r --sparse=always "$dir" "$run"
    make_cold
    if [[ $mode = warm ]]; then cat "$run"/* >/dev/null; fi
    sleep "$SETTLE"
}
one_merge() { # KEY DIR FUNC MODE [RUN]
    local key=$1 dir=$2 func=$3 mode=$4 run=${5:-} t0 t1
    prepare "$dir" "$mode" $run
    t0=$EPOCHREALTIME
    "$func"
    t1=$EPOCHREALTIME
    times[$mode.$key]+="$(echo "$t1 - $t0" | bc) "
    mids[$mode.$key]+="$(echo "$mid - $t0" | bc) "
}
median() {
    tr -s ' ' '\n' | grep . | sort -g |
        awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f %.3f %.3f", m, a[1], a[NR]}'
}
modes=(cold warm)
runs=("vmhub vhd vmhub_merge" "qemu qcow2 qemu_commit" "vmhubq qcow2 vmhub_qcow2_merge")
[[ -z ${VMHUB_ALT:-} ]] || runs+=("alt vhd alt_merge")
for mode in "${modes[@]}"; do
    for ((r = 0; r < REPS; r++)); do
        # Each round starts with the next tool, so none is always first.
        for ((i = 0; i < ${#runs[@]}; i++)); do
            read -r key dir func <<<"${runs[(r + i) % ${#runs[@]}]}"
            run=
            [[ $key != vmhubq ]] || run=run-vmhub-qcow2
            one_merge "$key" "$dir" "$func" "$mode" $run
        done
    done
done
# The last run of each tool is checked.
[[ ! -e run-vhd/child.vhd ]] || { echo "FAIL: vmhub left run-vhd/child.vhd" >&2; exit 1; }
qemu-img compare -q -f raw -F vpc expect-merge.raw run-vhd/base.vhd ||
    { echo "FAIL: the merged base.vhd differs from expect-merge.raw" >&2; exit 1; }
qemu-img compare -q -f raw -F qcow2 expect-merge.raw run-qcow2/base.qcow2 ||
    { echo "FAIL: the committed base.qcow2 differs from expect-merge.raw" >&2; exit 1; }
[[ ! -e run-vmhub-qcow2/child.qcow2 ]] || { echo "FAIL: vmhub left run-vmhub-qcow2/child.qcow2" >&2; exit 1; }
qemu-img compare -q -f raw -F qcow2 expect-merge.raw run-vmhub-qcow2/base.qcow2 ||
    { echo "FAIL: the base.qcow2 vmhub merged into differs from expect-merge.raw" >&2; exit 1; }
qemu-img check -q -f qcow2 run-vmhub-qcow2/base.qcow2 ||
    { echo "FAIL: qemu-img check finds errors in the base.qcow2 vmhub merged into" >&2; exit 1; }

declare -A res cmd
for mode in "${modes[@]}"; do
    for key in vmhub qemu vmhubq ${VMHUB_ALT:+alt}; do
        res[$mode.$key]=$(median <<<"${times[$mode.$key]}")
        cmd[$mode.$key]=$(median <<<"${mids[$mode.$key]}" | cut -d' ' -f1)
    done
done
cell() { # MODE KEY → median (min–max) [cmd]
    local med lo hi
    read -r med lo hi <<<"${res[$1.$2]}"
    printf '%.2f s (%.2f–%.2f)' "$med" "$lo" "$hi"
    [[ $2 != qemu ]] || printf ' [cmd %.2f]' "${cmd[$1.$2]}"
}
ratio() { # MODE FIELD(1 median, 2 min) [KEY, default vmhub]
    echo "scale=4; $(cut -d' ' -f"$2" <<<"${res[$1.${3:-vmhub}]}") / $(cut -d' ' -f"$2" <<<"${res[$1.qemu]}")" | bc
}
paired() { # MODE [KEY, default vmhub] → median of each round's ratio to the qemu-img run beside it
    paste -d' ' <(tr -s ' ' '\n' <<<"${times[$1.${2:-vmhub}]}" | grep .) \
        <(tr -s ' ' '\n' <<<"${times[$1.qemu]}" | grep .) |
        awk '{print $1 / $2}' | median | cut -d' ' -f1
}
echo "## Merge of a child holding 512 MiB into a 2 GiB base (median of $REPS; min–max)"
echo
echo "| tool | command | cold cache | warm cache |"
echo "|---|---|---|---|"
echo "| vmhub | \`vmhub img merge child.vhd\` | $(cell cold vmhub) | $(cell warm vmhub) |"
echo "| qemu-img | \`qemu-img commit child.qcow2; sync base.qcow2\` | $(cell cold qemu) | $(cell warm qemu) |"
echo "| vmhub | \`vmhub img merge child.qcow2\` (the same qcow2 chain) | $(cell cold vmhubq) | $(cell warm vmhubq) |"
[[ -z ${VMHUB_ALT:-} ]] || echo "| vmhub (alt) | \`$VMHUB_ALT img merge child.vhd\` | $(cell cold alt) | $(cell warm alt) |"
echo
echo "| ratio vmhub / qemu-img | target | cold (median) | cold (min) | warm (median) | warm (min) |"
echo "|---|---|---|---|---|---|"
row="| merge | ≤ 1.0"
for mode in "${modes[@]}"; do
    r=$(ratio "$mode" 1)
    row+=" | $(printf '%.2f' "$r") ($( (($(echo "$r <= 1.0" | bc))) && echo meets || echo MISSES))"
    row+=" | $(printf '%.2f' "$(ratio "$mode" 2)")"
done
echo "$row |"
row="| merge of the qcow2 chain | for information"
for mode in "${modes[@]}"; do
    row+=" | $(printf '%.2f' "$(ratio "$mode" 1 vmhubq)") | $(printf '%.2f' "$(ratio "$mode" 2 vmhubq)")"
done
echo "$row |"
echo
echo "Paired, for information: the median of each round's ratio to the qemu-img run beside it"
echo "(runs next to each other share the storage's mood): merge cold $(printf '%.2f' "$(paired cold)")," \
    "warm $(printf '%.2f' "$(paired warm)"); merge of the qcow2 chain cold $(printf '%.2f' "$(paired cold vmhubq)")," \
    "warm $(printf '%.2f' "$(paired warm vmhubq)")."
echo
echo "merged files: run-vhd/base.vhd $(alloc run-vhd/base.vhd), run-qcow2/base.qcow2 $(alloc run-qcow2/base.qcow2) (allocated)"
echo "load after: $(uptime | sed 's/.*load average/load average/')"
[[ -r /proc/pressure/io ]] && echo "io psi after: $(head -1 /proc/pressure/io)"
printf 'total bench time: %.0f s\n' "$(echo "$EPOCHREALTIME - $bench_start" | bc)"
