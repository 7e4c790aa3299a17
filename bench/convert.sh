#!/usr/bin/env bash
# Times `vmhub img convert` against `qemu-img convert` and `cp --sparse=always`
# on the same 4 GiB sparse raw image holding 1 GiB of random data, and on the
# same disk as a VHDX and a qcow2 that qemu-img made (VHDX → raw, qcow2 → VHD).
#
# Usage: bench/convert.sh [WORKDIR]
#
#   WORKDIR   where to put the scratch directory for the images (default:
#             $TMPDIR or /tmp); it is removed at the end. Needs about 5 GiB free.
#
# Environment:
#   VMHUB=path   vmhub binary to time (default: build it with
#                `cargo build --release -p vmhub`, honouring CARGO_TARGET_DIR)
#   REPS=3       repetitions of each measurement; the median is reported
#   SEED=20250   seed for the layout and content of the input (reproducible)
#   COLD=1       also run the cold-cache variant (needs root; 0 to skip)
#   BUDGET=300   seconds: the cold-cache variant is skipped (and said so) when
#                the warm-cache one suggests it would end past this budget
#   ONLY="..."   run only these cases (default all): r2v v2r qv2r cp x2r q2v
#
# How each command is timed (wall clock, bash $EPOCHREALTIME):
#   vmhub        the command alone: it fsyncs its output (and the directory)
#                before it returns.
#   qemu-img, cp the command followed by `sync OUTFILE` (an fsync of the output
#                file), so that every tool is timed until its output is durable.
#                The time of the command alone is shown too.
# Before every timed run: the previous output is removed and `sync` flushes
# everything. Warm cache: the input's data is then read into the page cache.
# Cold cache: `echo 3 > /proc/sys/vm/drop_caches` instead, for every tool alike.
# Every output is checked after its last repetition with `qemu-img compare`
# against the raw input (and for its virtual size and format), so a fast wrong
# result fails the benchmark.
set -euo pipefail

REPS=${REPS:-3}
SEED=${SEED:-20250}
COLD=${COLD:-1}
BUDGET=${BUDGET:-300}
ONLY=${ONLY:-r2v v2r qv2r cp x2r q2v}
wanted() { [[ " $ONLY " = *" $1 "* ]]; }
GiB=$((1 << 30))
MiB=$((1 << 20))
SIZE=$((4 * GiB))
RUNS=1024

repo=$(cd "$(dirname "$0")/.." && pwd)
for tool in qemu-img openssl python3 cp sync; do
    command -v "$tool" >/dev/null || { echo "convert.sh: $tool is required" >&2; exit 1; }
done
if [[ -z ${VMHUB:-} ]]; then
    (cd "$repo" && cargo build --release -p vmhub --quiet)
    VMHUB=${CARGO_TARGET_DIR:-$repo/target}/release/vmhub
    [[ $VMHUB = /* ]] || VMHUB=$repo/$VMHUB
fi
[[ -x $VMHUB ]] || { echo "convert.sh: $VMHUB is not executable" >&2; exit 1; }

if [[ $COLD = 1 && ! -w /proc/sys/vm/drop_caches ]]; then
    echo "convert.sh: cannot drop caches (not root); skipping the cold-cache variant" >&2
    COLD=0
fi

parent=${1:-${TMPDIR:-/tmp}}
mkdir -p "$parent"
work=$(mktemp -d "$(cd "$parent" && pwd)/vmhub-convert-bench.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
cd "$work"

bench_start=$EPOCHREALTIME
echo "# vmhub img convert benchmark"
echo "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "host:     $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r)"
echo "work dir: $work ($(df -T . | awk 'NR==2 {print $2 " on " $1}'))"
rev=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')
[[ -z $(git -C "$repo" status --porcelain --untracked-files=no -- crates 2>/dev/null) ]] || rev+=" + uncommitted changes in crates/"
echo "vmhub:    $VMHUB ($("$VMHUB" --version 2>/dev/null || echo '?'), source $rev)"
echo "qemu-img: $(qemu-img --version | head -1)"
echo "cp:       $(cp --version | head -1)"
echo "load:     $(uptime | sed 's/.*load average/load average/')"
[[ -r /proc/pressure/io ]] && echo "io psi:   $(head -1 /proc/pressure/io)"
# Storage throughput right now: 256 MiB written and fdatasync'ed.
echo "storage:  $(dd if=/dev/zero of=dd.tmp bs=1M count=256 conv=fdatasync 2>&1 | tail -1 | sed 's/.*copied, //') (dd 256 MiB, conv=fdatasync)"
rm -f dd.tmp
echo "reps:     $REPS (median reported), seed $SEED"
echo

# ---------------------------------------------------------------------------
# Input: a 4 GiB sparse raw file with 1024 non-overlapping runs of 1 MiB of
# random data at random offsets: about half are 1 MiB-aligned, a quarter
# 4 KiB-aligned, a quarter at any byte. The data is an AES-CTR keystream derived
# from the seed, so the file is the same on every run.
# ---------------------------------------------------------------------------
t0=$EPOCHREALTIME
truncate -s "$SIZE" in.raw
key=$(printf 'vmhub-bench-%s' "$SEED" | sha256sum | cut -c1-32)
read -r -d '' generate <<'EOF' || true
import os, random, sys
path, seed, size, runs, run = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rng = random.Random(seed)
free = size - runs * run                  # bytes not covered by data
points = sorted(rng.randrange(free + 1) for _ in range(runs))
offsets, prev = [], 0
for i, p in enumerate(points):
    g = rng.choice((run, run, 4096, 1))   # alignment of this run
    p = min(-(-p // g) * g, free)         # round up, stay inside the file
    p = max(p, prev)                      # keep the order: runs never overlap
    prev = p
    offsets.append(p + i * run)
assert all(b - a >= run for a, b in zip(offsets, offsets[1:])) and offsets[-1] + run <= size
src = sys.stdin.buffer
fd = os.open(path, os.O_WRONLY)
buf = bytearray(run)
for off in offsets:
    view, got = memoryview(buf), 0
    while got < run:
        n = src.readinto(view[got:])
        if not n:
            sys.exit("short random stream")
        got += n
    os.pwrite(fd, buf, off)
os.close(fd)
print(f"input:    {len(offsets)} runs of {run} bytes, "
      f"{sum(o % run == 0 for o in offsets)} of them 1 MiB-aligned, "
      f"{sum(o % 4096 != 0 for o in offsets)} not 4 KiB-aligned")
EOF
head -c $((RUNS * MiB)) < <(openssl enc -aes-128-ctr -nosalt -K "$key" \
    -iv 00000000000000000000000000000000 -in /dev/zero 2>/dev/null) |
    python3 -c "$generate" in.raw "$SEED" "$SIZE" "$RUNS" "$MiB"
sync
printf 'input:    in.raw, %d bytes, %d MiB allocated, made in %.1f s\n' \
    "$(stat -c %s in.raw)" $(($(stat -c %b in.raw) * 512 / MiB)) \
    "$(echo "$EPOCHREALTIME - $t0" | bc)"
echo

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

# Reads the data extents of a file (SEEK_DATA/SEEK_HOLE) into the page cache.
warm() {
    python3 - "$1" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
end, pos = os.fstat(fd).st_size, 0
while pos < end:
    try:
        d = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError:
        break
    h = os.lseek(fd, d, os.SEEK_HOLE)
    while d < h:
        n = len(os.pread(fd, min(8 << 20, h - d), d))
        if not n:
            break
        d += n
    pos = h
EOF
}

# Tools under test. Each takes INPUT OUTPUT and leaves OUTPUT durable; peers
# record the time their command returned (before the sync) in $mid.
mid=
vmhub_to_vhd()  { "$VMHUB" img convert "$1" "$2"; mid=$EPOCHREALTIME; }
vmhub_to_raw()  { "$VMHUB" img convert "$1" "$2" --format raw; mid=$EPOCHREALTIME; }
qemu_to_vhd()   { qemu-img convert -f raw -O vpc -o force_size=on "$1" "$2"; mid=$EPOCHREALTIME; sync "$2"; }
qemu_to_raw()   { qemu-img convert -f vpc -O raw "$1" "$2"; mid=$EPOCHREALTIME; sync "$2"; }
cp_sparse()     { cp --sparse=always "$1" "$2"; mid=$EPOCHREALTIME; sync "$2"; }
qemu_x2r()      { qemu-img convert -f vhdx -O raw "$1" "$2"; mid=$EPOCHREALTIME; sync "$2"; }
qemu_q2v()      { qemu-img convert -f qcow2 -O vpc -o force_size=on "$1" "$2"; mid=$EPOCHREALTIME; sync "$2"; }

# Checks OUTPUT (format FMT) against in.raw: same contents and virtual size.
verify() {
    local out=$1 fmt=$2 info
    info=$(qemu-img info -f "$fmt" --output=json "$out")
    grep -q "\"virtual-size\": $SIZE," <<<"$info" ||
        { echo "FAIL: $out: virtual size is not $SIZE" >&2; echo "$info" >&2; exit 1; }
    if [[ $fmt = vpc ]] && (($(stat -c %s "$out") >= SIZE)); then
        echo "FAIL: $out is not a dynamic VHD ($(stat -c %s "$out") bytes)" >&2; exit 1
    fi
    qemu-img compare -q -f raw -F "$fmt" in.raw "$out" ||
        { echo "FAIL: $out differs from in.raw" >&2; exit 1; }
}

# results[key] = "median min max" (total); cmdonly[key] = median of the command alone
declare -A results cmdonly alloc
median() {
    tr -s ' ' '\n' | grep . | sort -g |
        awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f %.3f %.3f", m, a[1], a[NR]}'
}

# measure MODE KEY FUNC INPUT OUTPUT FMT: REPS timed runs, then verification.
# Runs of one case are interleaved by the caller so that drift in the machine's
# load hits every tool alike.
declare -A times mids
one_run() {
    local mode=$1 key=$2 func=$3 src=$4 out=$5 t0 t1
    rm -f "$out"
    sync
    if [[ $mode = cold ]]; then
        echo 3 >/proc/sys/vm/drop_caches
    else
        warm "$src"
    fi
    t0=$EPOCHREALTIME
    "$func" "$src" "$out"
    t1=$EPOCHREALTIME
    times[$mode.$key]+="$(echo "$t1 - $t0" | bc) "
    mids[$mode.$key]+="$(echo "$mid - $t0" | bc) "
}

finish() {
    local mode=$1 key=$2 out=$3 fmt=$4
    verify "$out" "$fmt"
    alloc[$key]=$(($(stat -c %b "$out") * 512 / MiB))
    results[$mode.$key]=$(median <<<"${times[$mode.$key]}")
    cmdonly[$mode.$key]=$(median <<<"${mids[$mode.$key]}" | cut -d' ' -f1)
}

# case: MODE followed by groups of KEY FUNC INPUT OUTPUT FMT, run interleaved.
run_case() {
    local mode=$1; shift
    local -a spec=("$@")
    local r i
    for ((r = 0; r < REPS; r++)); do
        for ((i = 0; i < ${#spec[@]}; i += 5)); do
            one_run "$mode" "${spec[i]}" "${spec[i + 1]}" "${spec[i + 2]}" "${spec[i + 3]}"
        done
    done
    for ((i = 0; i < ${#spec[@]}; i += 5)); do
        finish "$mode" "${spec[i]}" "${spec[i + 3]}" "${spec[i + 4]}"
    done
}

phase() {
    local mode=$1
    echo "running $mode-cache measurements ..." >&2
    wanted r2v && run_case "$mode" \
        r2v.vmhub vmhub_to_vhd in.raw out.vhd vpc \
        r2v.qemu qemu_to_vhd in.raw out-q.vhd vpc
    # The VHD inputs of the next cases: the ones each tool made from in.raw.
    if [[ ! -e in.vhd ]] && { wanted v2r || wanted qv2r; }; then
        "$VMHUB" img convert in.raw in.vhd
        qemu-img convert -f raw -O vpc -o force_size=on in.raw in-q.vhd
        sync
    fi
    rm -f out.vhd out-q.vhd
    wanted v2r && run_case "$mode" \
        v2r.vmhub vmhub_to_raw in.vhd out.raw raw \
        v2r.qemu qemu_to_raw in.vhd out-q.raw raw
    wanted qv2r && run_case "$mode" \
        qv2r.vmhub vmhub_to_raw in-q.vhd out.raw raw \
        qv2r.qemu qemu_to_raw in-q.vhd out-q.raw raw
    wanted cp && run_case "$mode" cp cp_sparse in.raw copy.raw raw
    rm -f out.raw out-q.raw copy.raw
    # The other formats, as qemu-img writes them from in.raw: a dynamic VHDX
    # with 1 MiB blocks (so that the disk's holes are whole blocks) and a
    # qcow2 with its defaults (64 KiB clusters).
    if [[ ! -e in.vhdx ]] && { wanted x2r || wanted q2v; }; then
        qemu-img convert -f raw -O vhdx -o subformat=dynamic,block_size=1M in.raw in.vhdx
        qemu-img convert -f raw -O qcow2 in.raw in.qcow2
        sync
    fi
    wanted x2r && run_case "$mode" \
        x2r.vmhub vmhub_to_raw in.vhdx out.raw raw \
        x2r.qemu qemu_x2r in.vhdx out-q.raw raw
    rm -f out.raw out-q.raw
    wanted q2v && run_case "$mode" \
        q2v.vmhub vmhub_to_vhd in.qcow2 out.vhd vpc \
        q2v.qemu qemu_q2v in.qcow2 out-q.vhd vpc
    rm -f out.vhd out-q.vhd
    return 0
}

modes=(warm)
t0=$EPOCHREALTIME
phase warm
if [[ $COLD = 1 ]]; then
    now=$EPOCHREALTIME
    if (($(echo "$now - $bench_start + ($now - $t0) * 1.2 > $BUDGET" | bc))); then
        printf 'cold-cache variant skipped: the warm one took %.0f s, so both would exceed BUDGET=%s s\n\n' \
            "$(echo "$now - $t0" | bc)" "$BUDGET"
        COLD=0
    else
        modes+=(cold)
        phase cold
    fi
fi

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
declare -A label=(
    [r2v.vmhub]='raw → dyn VHD | vmhub | `vmhub img convert in.raw out.vhd`'
    [r2v.qemu]='raw → dyn VHD | qemu-img | `qemu-img convert -f raw -O vpc -o force_size=on in.raw out-q.vhd; sync out-q.vhd`'
    [v2r.vmhub]='VHD (vmhub-made) → raw | vmhub | `vmhub img convert in.vhd out.raw --format raw`'
    [v2r.qemu]='VHD (vmhub-made) → raw | qemu-img | `qemu-img convert -f vpc -O raw in.vhd out-q.raw; sync out-q.raw`'
    [qv2r.vmhub]='VHD (qemu-made) → raw | vmhub | `vmhub img convert in-q.vhd out.raw --format raw`'
    [qv2r.qemu]='VHD (qemu-made) → raw | qemu-img | `qemu-img convert -f vpc -O raw in-q.vhd out-q.raw; sync out-q.raw`'
    [cp]='raw → raw (floor) | cp | `cp --sparse=always in.raw copy.raw; sync copy.raw`'
    [x2r.vmhub]='VHDX (qemu-made, 1 MiB blocks) → raw | vmhub | `vmhub img convert in.vhdx out.raw --format raw`'
    [x2r.qemu]='VHDX (qemu-made, 1 MiB blocks) → raw | qemu-img | `qemu-img convert -f vhdx -O raw in.vhdx out-q.raw; sync out-q.raw`'
    [q2v.vmhub]='qcow2 (qemu-made) → dyn VHD | vmhub | `vmhub img convert in.qcow2 out.vhd`'
    [q2v.qemu]='qcow2 (qemu-made) → dyn VHD | qemu-img | `qemu-img convert -f qcow2 -O vpc -o force_size=on in.qcow2 out-q.vhd; sync out-q.vhd`'
)
order=(r2v.vmhub r2v.qemu v2r.vmhub v2r.qemu qv2r.vmhub qv2r.qemu cp x2r.vmhub x2r.qemu q2v.vmhub q2v.qemu)

cell() { # total median (min–max) [command alone]
    local k=$1 med lo hi
    [[ -n ${results[$k]:-} ]] || { printf '–'; return; }
    read -r med lo hi <<<"${results[$k]}"
    printf '%.2f s (%.2f–%.2f)' "$med" "$lo" "$hi"
    [[ $k = *vmhub ]] || printf ' [cmd %.2f]' "${cmdonly[$k]}"
}

echo "## Results (median of $REPS, wall clock; min–max in parentheses)"
echo
echo "vmhub is timed alone (it fsyncs its output). qemu-img and cp are timed with"
echo "\`sync OUTFILE\` after them; [cmd …] is the median of the command alone, before the sync."
echo "Every output was verified with \`qemu-img compare\` against in.raw."
echo
hdr="| conversion | tool | command | warm cache"
sep="|---|---|---|---"
[[ $COLD = 1 ]] && { hdr+=" | cold cache"; sep+="|---"; }
echo "$hdr | output allocated |"
echo "$sep|---|"
for k in "${order[@]}"; do
    [[ -n ${results[warm.$k]:-} ]] || continue
    row="| ${label[$k]} | $(cell "warm.$k")"
    [[ $COLD = 1 ]] && row+=" | $(cell "cold.$k")"
    echo "$row | ${alloc[$k]} MiB |"
done
echo

ratio() { # a b field -> a/b of the given field (1 median, 2 min)
    local a b
    a=$(cut -d' ' -f"$3" <<<"${results[$1]}")
    b=$(cut -d' ' -f"$3" <<<"${results[$2]}")
    echo "scale=4; $a / $b" | bc
}
verdict() { # value target
    if (($(echo "$1 <= $2" | bc))); then echo "meets"; else echo "MISSES"; fi
}

echo "## Ratios (lower is better for vmhub)"
echo
echo "Ratios of medians are the result; ratios of minimums are shown beside them because"
echo "on a shared machine the minimum is the run least disturbed by other work."
echo
hdr="| ratio | target"
sep="|---|---"
for m in "${modes[@]}"; do hdr+=" | $m (median) | $m (min)"; sep+="|---|---"; done
echo "$hdr |"
echo "$sep|"
ratio_row() { # name a b target
    local row="| $1 | ≤ $4" m r
    [[ -n ${results[warm.$2]:-} && -n ${results[warm.$3]:-} ]] || return 0
    for m in "${modes[@]}"; do
        r=$(ratio "$m.$2" "$m.$3" 1)
        row+=" | $(printf '%.2f' "$r") ($(verdict "$r" "$4"))"
        r=$(ratio "$m.$2" "$m.$3" 2)
        row+=" | $(printf '%.2f' "$r")"
    done
    echo "$row |"
}
ratio_row 'raw → VHD: vmhub / qemu-img' r2v.vmhub r2v.qemu 0.5
ratio_row 'VHD → raw (vmhub-made VHD): vmhub / qemu-img' v2r.vmhub v2r.qemu 0.7
ratio_row 'VHD → raw (qemu-made VHD): vmhub / qemu-img' qv2r.vmhub qv2r.qemu 0.7
ratio_row 'VHDX → raw: vmhub / qemu-img' x2r.vmhub x2r.qemu 0.5
ratio_row 'qcow2 → VHD: vmhub / qemu-img' q2v.vmhub q2v.qemu 0.7
ratio_row 'raw → VHD: vmhub / cp' r2v.vmhub cp 1.3
ratio_row 'VHD → raw (vmhub-made VHD): vmhub / cp' v2r.vmhub cp 1.3
ratio_row 'VHD → raw (qemu-made VHD): vmhub / cp' qv2r.vmhub cp 1.3
echo
echo "load after: $(uptime | sed 's/.*load average/load average/')"
[[ -r /proc/pressure/io ]] && echo "io psi after: $(head -1 /proc/pressure/io)"
printf 'total bench time: %.0f s\n' "$(echo "$EPOCHREALTIME - $bench_start" | bc)"
