#!/usr/bin/env bash
# Times the machine library's import, push and pull of a 1 GiB ext4 disk
# holding 512 MiB of files, against `skopeo copy` of the same disk as one blob,
# and measures what a second version with 8 MiB changed moves, in one run.
#
# Usage: bench/transfer.sh [WORKDIR]
#
#   WORKDIR   where to put the scratch directory (default: $BENCH_DIR, else
#             $TMPDIR or /tmp); removed at the end, with the registry it
#             starts. Needs about 6 GiB free. No root, no mounts, no network
#             beyond 127.0.0.1.
#
# Environment:
#   VMHUB=path       vmhub binary to time (default: build it with
#                    `cargo build --release -p vmhub`, honouring CARGO_TARGET_DIR)
#   REPS=3           repetitions of each full import, push and pull (each into a
#                    fresh library or a fresh registry); the median is reported
#   ONLY=import      time the imports only (and the zstd and sha256 context)
#   VMHUB_ALT=path   a second vmhub binary whose imports are timed too,
#                    interleaved with the others (to compare two builds)
#   SEED=20261124    seed for the choice of files, the random files and the
#                    changes of v2
#   USR_MIB="bin=128 lib=224 share=96"   MiB of files copied from each /usr folder
#   RANDOM_MIB=64    MiB of random (incompressible) files added to them
#
# The disk (raw, ext4 at sector 0, 4 KiB blocks, 1 GiB, sparse):
#   v1.raw   `mke2fs -t ext4 -b 4096 -d TREE`, TREE being regular files picked at
#            random (seeded) from /usr/bin, /usr/lib and /usr/share up to the sizes
#            in USR_MIB (none over 16 MiB; symlinks skipped), plus RANDOM_MIB of
#            random bytes in 1–8 MiB files: 512 MiB of files by default. The /usr
#            files are this machine's, so the compressibility of the disk depends
#            on the installed system; the script prints the ratio zstd -3 gets.
#   v2.raw   a copy of v1.raw with 8 MiB changed, as an update of an installed
#            system would: 8 new files of 512 KiB of random data written with
#            `debugfs -w` (new blocks, plus inode, directory and bitmap updates),
#            and 128 pieces of 32 KiB (8 blocks each) of random data written over
#            random places inside 128 existing files, at the file's physical blocks
#            (found with debugfs `bmap`). `e2fsck -fn` must pass on both disks.
#
# Timed (wall clock, warm cache: the input is read once before):
#   import   `vmhub import --dry-run v1.raw` (chunk + hash + compress: the disk
#            read, cut by FastCDC, every chunk hashed with BLAKE3, compressed
#            with zstd and its blob hashed with SHA-256, nothing written; the
#            ≥ 500 MiB/s target is for this) and `vmhub import v1.raw`
#            into a fresh library (the same, plus the blobs written and synced
#            to storage), interleaved, REPS times each. MiB/s is of the disk's
#            data, the bytes vmhub reads (it skips holes: "data-bytes" of its
#            JSON output); the dry run must report the bytes the import stores.
#            For context: `zstd -3 -T<nproc>` and `openssl dgst -sha256` of the
#            same disk (which read its holes too).
#   push     `vmhub push` of v1 to docker-registry (Debian's, serving from a
#            folder on a free 127.0.0.1 port, as crates/cli/tests/registry.rs
#            starts it), REPS times, each into a new, empty registry (so every
#            blob is uploaded again, and skopeo cannot mount what it pushed
#            before). CPU time (user + system) is recorded for every command;
#            the import table shows it.
#   pull     `vmhub pull` of it into a fresh library, REPS times.
#   skopeo   the same disk as ONE layer of an OCI image, pushed with
#            `skopeo copy --preserve-digests oci:LAYOUT docker://…` and pulled
#            with `skopeo copy --preserve-digests docker://… oci:OTHER`, REPS
#            times each, interleaved with vmhub's. Two layouts: the raw disk
#            (1 GiB, holes included, as a plain `tar` layer) and the disk
#            compressed with `zstd -3` (a `tar+zstd` layer: about the bytes
#            vmhub moves). `--preserve-digests` keeps skopeo from gzipping the
#            layer on the way.
#   delta    `vmhub import v2.raw` into the library holding v1, `vmhub push` of
#            it next to v1 in the registry, `vmhub pull` into the library that
#            pulled v1: times, and the blob bytes the registry received and sent
#            for v2 by its own log (as the tests count them), as ratios of a full
#            pull of v1 (target ≤ 0.4 each).
# For every push and pull the registry's log also gives the requests it
# answered and the sum of its own durations for them.
# Every result is checked: the pulled v1 and v2 are exported and compared with
# v1.raw and v2.raw, and skopeo's pulled blobs with the ones it pushed.
set -euo pipefail

REPS=${REPS:-3}
SEED=${SEED:-20261124}
USR_MIB=${USR_MIB:-bin=128 lib=224 share=96}
RANDOM_MIB=${RANDOM_MIB:-64}
MiB=$((1 << 20))
export PATH="$PATH:/usr/sbin:/sbin"

repo=$(cd "$(dirname "$0")/.." && pwd)
for tool in docker-registry skopeo mke2fs debugfs e2fsck zstd openssl python3 sha256sum cmp bc /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "transfer.sh: $tool is required (scripts/deps.sh installs it)" >&2; exit 1; }
done
target=${CARGO_TARGET_DIR:-$repo/target}
[[ $target = /* ]] || target=$repo/$target
if [[ -z ${VMHUB:-} ]]; then
    (cd "$repo" && cargo build --release -p vmhub --quiet)
    VMHUB=$target/release/vmhub
fi
[[ -x $VMHUB ]] || { echo "transfer.sh: $VMHUB is not executable" >&2; exit 1; }

parent=${1:-${BENCH_DIR:-${TMPDIR:-/tmp}}}
mkdir -p "$parent"
work=$(mktemp -d "$(cd "$parent" && pwd)/vmhub-transfer-bench.XXXXXX")
registry_pid=
cleanup() {
    if [[ -n $registry_pid ]]; then
        kill "$registry_pid" 2>/dev/null || true
        wait "$registry_pid" 2>/dev/null || true
    fi
    cd /
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cd "$work"

bench_start=$EPOCHREALTIME
echo "# vmhub push/pull benchmark"
echo "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "host:     $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r)"
echo "work dir: $work ($(df -T . | awk 'NR==2 {print $2 " on " $1}'))"
rev=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')
[[ -z $(git -C "$repo" status --porcelain --untracked-files=no -- crates 2>/dev/null) ]] || rev+=" + uncommitted changes in crates/"
echo "vmhub:    $VMHUB ($("$VMHUB" --version 2>/dev/null || echo '?'), source $rev)"
echo "peers:    $(skopeo --version); docker-registry $(docker-registry --version 2>&1 | awk '{print $NF}'); zstd $(zstd --version | grep -o 'v[0-9.]*' | head -1)"
echo "load:     $(uptime | sed 's/.*load average/load average/')"
[[ -r /proc/pressure/cpu ]] && echo "cpu psi:  $(head -1 /proc/pressure/cpu)"
[[ -r /proc/pressure/io ]] && echo "io psi:   $(head -1 /proc/pressure/io)"
echo "seed:     $SEED"
echo

# Wall-clock and CPU (user + system) seconds of a command, its stdout kept in
# $out_file.
declare -A times cpu
out_file=$work/last.out
run() { # KEY COMMAND... → appends the seconds to times[KEY] and cpu[KEY]
    local key=$1 t0
    shift
    t0=$EPOCHREALTIME
    /usr/bin/time -f '%U %S' -o "$work/cpu.out" "$@" >"$out_file"
    times[$key]+="$(echo "$EPOCHREALTIME - $t0" | bc) "
    cpu[$key]+="$(awk 'END {print $1 + $2}' "$work/cpu.out") "
}
median() { tr -s ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {printf "%.2f", (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }
spread() { tr -s ' ' '\n' | grep . | sort -g | awk 'NR==1 {lo=$1} {hi=$1} END {printf "%.2f–%.2f", lo, hi}'; }
m() { echo "${times[$1]}" | median; }
json() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$out_file" "$1"; }
mib() { echo "scale=1; $1 / $MiB" | bc | sed 's/^\./0./'; }
rate() { echo "scale=0; $1 / $MiB / $2" | bc; } # BYTES SECONDS → MiB/s
ratio() { echo "scale=3; $1 / $2" | bc | sed 's/^\./0./'; }
alloc() { echo $(($(stat -c %b "$1") * 512)); }

# ---------------------------------------------------------------------------
# The disks
# ---------------------------------------------------------------------------
echo "building the disks ..." >&2
t0=$EPOCHREALTIME
python3 - "$SEED" "$RANDOM_MIB" tree $USR_MIB <<'EOF'
import os, random, shutil, sys
seed, random_mib, root = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
MiB = 1 << 20
rng = random.Random(seed)
total = 0
for spec in sys.argv[4:]:
    name, mib = spec.split("=")
    budget = int(mib) * MiB
    files = []
    for d, dirs, names in os.walk(f"/usr/{name}"):
        dirs.sort()
        for n in sorted(names):
            p = os.path.join(d, n)
            try:
                if os.path.islink(p) or not os.path.isfile(p) or not os.access(p, os.R_OK):
                    continue
                size = os.path.getsize(p)
            except OSError:
                continue
            if 0 < size <= 16 * MiB:
                files.append((p, size))
    rng.shuffle(files)
    used = 0
    for p, size in files:
        if used + size > budget:
            continue
        dest = os.path.join(root, os.path.relpath(p, "/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        try:
            shutil.copyfile(p, dest)
        except OSError:
            continue
        used += size
        if budget - used < 4096:
            break
    if used < budget * 0.98:
        sys.exit(f"/usr/{name} holds only {used / MiB:.0f} MiB of readable files, {mib} wanted")
    total += used
left, i = random_mib * MiB, 0
os.makedirs(os.path.join(root, "srv", "random"), exist_ok=True)
while left > 0:
    n = min(left, rng.randrange(1, 9) * MiB)
    with open(os.path.join(root, "srv", "random", f"blob{i:03d}.bin"), "wb") as f:
        f.write(rng.randbytes(n))
    left -= n
    i += 1
    total += n
print(f"tree:     {total / MiB:.0f} MiB of files ({sys.argv[4:]} MiB from /usr, {random_mib} MiB random in {i} files)")
EOF
mke2fs -q -F -t ext4 -b 4096 -E root_owner=0:0 -d tree v1.raw 1G >/dev/null
e2fsck -fn v1.raw >/dev/null 2>&1 || { echo "FAIL: e2fsck finds v1.raw damaged" >&2; exit 1; }

# v2: new files with debugfs, then 32 KiB pieces overwritten inside existing
# files' blocks.
cp --sparse=always v1.raw v2.raw
python3 - "$SEED" tree <<'EOF' >changes.debugfs
import os, random, sys
seed, root = int(sys.argv[1]), sys.argv[2]
rng = random.Random(seed + 2)
os.makedirs("new", exist_ok=True)
print("mkdir /srv/update")
for i in range(8):
    p = f"new/file{i}.bin"
    with open(p, "wb") as f:
        f.write(rng.randbytes(512 << 10))
    print(f"write {p} /srv/update/file{i}.bin")
EOF
debugfs -w -f changes.debugfs v2.raw >/dev/null 2>debugfs.err ||
    { cat debugfs.err >&2; echo "FAIL: debugfs -w on v2.raw" >&2; exit 1; }
# 128 files of at least 64 KiB, 8 blocks at a random place inside each, found
# with debugfs `bmap` (logical to physical block) on v1.raw: 256 candidates,
# the first 128 whose 8 blocks are all mapped (mke2fs -d leaves zeros as holes).
python3 - "$SEED" tree <<'EOF' >pick.list
import os, random, sys
seed, root = int(sys.argv[1]), sys.argv[2]
rng = random.Random(seed + 3)
big = []
for d, dirs, names in os.walk(root):
    dirs.sort()
    for n in sorted(names):
        p = os.path.join(d, n)
        if os.path.getsize(p) >= 64 << 10:
            big.append(("/" + os.path.relpath(p, root), os.path.getsize(p) // 4096))
for p, blocks in rng.sample(big, 256):
    print(rng.randrange(0, blocks - 8 + 1), p)
EOF
while read -r first path; do
    for ((b = first; b < first + 8; b++)); do echo "bmap \"$path\" $b"; done
done <pick.list | debugfs -f - v1.raw 2>/dev/null | grep -v '^debugfs' >blocks.list
python3 - "$SEED" v2.raw blocks.list <<'EOF'
import os, random, sys
seed, image, blocks = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rng = random.Random(seed + 4)
listed = [int(b) for b in open(blocks).read().split()]
if len(listed) != 256 * 8:
    sys.exit(f"debugfs bmap gave {len(listed)} blocks, {256 * 8} wanted")
runs = [listed[i:i + 8] for i in range(0, len(listed), 8)]
runs = [r for r in runs if 0 not in r][:128]
if len(runs) < 128:
    sys.exit(f"only {len(runs)} of 256 candidate runs are fully mapped")
physical = [b for r in runs for b in r]
fd = os.open(image, os.O_WRONLY)
for b in physical:
    os.pwrite(fd, rng.randbytes(4096), b * 4096)
os.close(fd)
print("v2:       8 new files of 512 KiB (debugfs -w) and 128 runs of 32 KiB written over existing files' blocks")
EOF
e2fsck -fn v2.raw >/dev/null 2>&1 || { echo "FAIL: e2fsck finds v2.raw damaged" >&2; exit 1; }
data_alloc=$(alloc v1.raw)
echo "disks:    v1.raw 1 GiB, $(mib "$data_alloc") MiB allocated; v2.raw $(mib "$(alloc v2.raw)") MiB allocated"
zstd -q -3 -T"$(nproc)" v1.raw -o v1.raw.zst
echo "zstd -3:  $(mib "$(stat -c %s v1.raw.zst)") MiB for the whole disk"
echo "built in $(printf '%.0f' "$(echo "$EPOCHREALTIME - $t0" | bc)") s"
echo

# ---------------------------------------------------------------------------
# The registry and vmhub's settings
# ---------------------------------------------------------------------------
export VMHUB_CONFIG=$work/config
"$VMHUB" key generate >/dev/null
# A new registry for every repetition (the previous one stopped and its
# storage removed), so that no tool finds a blob already there: skopeo
# remembers where it pushed blobs (its blob-info cache, outside the scratch
# directory) and would mount them from another repository of the same registry.
stop_registry() {
    if [[ -n $registry_pid ]]; then
        kill "$registry_pid" 2>/dev/null || true
        wait "$registry_pid" 2>/dev/null || true
        registry_pid=
    fi
    rm -rf registry registry.log
}
start_registry() { # sets $reg
    local port i
    stop_registry
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    reg=127.0.0.1:$port
    cat >registry.yml <<EOF
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: $work/registry
  delete:
    enabled: true
http:
  addr: $reg
EOF
    docker-registry serve registry.yml >/dev/null 2>registry.log &
    registry_pid=$!
    for ((i = 0; ; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        kill -0 "$registry_pid" 2>/dev/null || { cat registry.log >&2; echo "FAIL: docker-registry exited" >&2; exit 1; }
        ((i < 400)) || { echo "FAIL: docker-registry did not listen on $reg in 20 s" >&2; exit 1; }
        sleep 0.05
    done
}

# Blob bytes by the registry's log, as crates/cli/tests/registry.rs counts
# them: "received" sums the stored size of every blob whose upload completed
# (PUT …/blobs/uploads/… answered 201), "sent" the bytes written in answer to
# blob GETs. Prints "received sent requests seconds", totals since the
# registry started, the last two being the requests answered and the sum of the
# registry's own durations for them (http.response.duration).
registry_bytes() {
    python3 - registry.log "$work/registry" <<'EOF'
import os, re, sys
log, data = sys.argv[1], sys.argv[2]
def field(line, key):
    m = re.search(r' %s=("([^"]*)"|(\S+))' % re.escape(key), line)
    return (m.group(2) if m.group(2) is not None else m.group(3)) if m else None
received = sent = requests = 0
seconds = 0.0
units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}
for line in open(log, errors="replace"):
    if 'msg="response completed' not in line:
        continue
    requests += 1
    seconds += sum(float(n) * units[u] for n, u in
                   re.findall(r"([\d.]+)(ms|µs|us|ns|h|m|s)", field(line, "http.response.duration") or ""))
    if 'msg="response completed"' not in line:
        continue
    method, uri = field(line, "http.request.method"), field(line, "http.request.uri") or ""
    if method == "GET" and "/blobs/sha256:" in uri:
        sent += int(field(line, "http.response.written"))
    elif method == "PUT" and "/blobs/uploads/" in uri and field(line, "http.response.status") == "201":
        hex = uri.split("digest=sha256%3A")[1][:64]
        received += os.path.getsize(f"{data}/docker/registry/v2/blobs/sha256/{hex[:2]}/{hex}/data")
print(received, sent, requests, f"{seconds:.2f}")
EOF
}

# ---------------------------------------------------------------------------
# skopeo's layouts: the disk as one layer, raw and zstd-compressed
# ---------------------------------------------------------------------------
layout() { # DIR BLOB MEDIA-TYPE
    local dir=$1 blob=$2 media=$3
    python3 - "$dir" "$blob" "$media" "$(sha256sum v1.raw | cut -c1-64)" <<'EOF'
import hashlib, json, os, sys
dir, blob, media, diff_id = sys.argv[1:]
os.makedirs(f"{dir}/blobs/sha256")
def put(b):
    h = hashlib.sha256(b).hexdigest()
    with open(f"{dir}/blobs/sha256/{h}", "wb") as f:
        f.write(b)
    return {"digest": f"sha256:{h}", "size": len(b)}
h = hashlib.sha256()
with open(blob, "rb") as f:
    while b := f.read(8 << 20):
        h.update(b)
layer = {"mediaType": media, "digest": "sha256:" + h.hexdigest(), "size": os.path.getsize(blob)}
os.link(blob, f"{dir}/blobs/sha256/{h.hexdigest()}")
config = put(json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff_id]}}).encode())
config["mediaType"] = "application/vnd.oci.image.config.v1+json"
manifest = put(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": config, "layers": [layer]}).encode())
manifest["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
manifest["annotations"] = {"org.opencontainers.image.ref.name": "1"}
with open(f"{dir}/index.json", "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [manifest]}, f)
with open(f"{dir}/oci-layout", "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
print(layer["digest"][7:])
EOF
}
raw_hex=$(layout oci-raw v1.raw application/vnd.oci.image.layer.v1.tar)
zst_hex=$(layout oci-zst v1.raw.zst application/vnd.oci.image.layer.v1.tar+zstd)
skopeo_tls=(--src-tls-verify=false --dest-tls-verify=false --preserve-digests -q)

# ---------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------
echo "timing imports ..." >&2
cat v1.raw >/dev/null
# Every import goes into a new folder, and the folders are removed only after
# the last one: on ext4 without a journal, files created right after
# thousands were deleted cost the kernel a walk over the recently freed
# inodes (`recently_deleted`, 0.3–0.4 s of system time per import here),
# which is the deletion's cost, not the import's.
for ((r = 1; r <= REPS; r++)); do
    # The dry run's library folder does not exist, and must not after.
    run dry "$VMHUB" import --dry-run v1.raw bench:1 --home "lib-dry-$r" --output json
    dry_bytes=$(json new-bytes)
    [[ ! -e lib-dry-$r ]] || { echo "FAIL: vmhub import --dry-run made lib-dry-$r" >&2; exit 1; }
    run import "$VMHUB" import v1.raw bench:1 --home "lib-import-$r" --output json
    data_bytes=$(json data-bytes)
    if ((r == 1)); then
        chunks=$(json chunks)
        new_bytes=$(json new-bytes)
    fi
    [[ $dry_bytes == "$(json new-bytes)" ]] ||
        { echo "FAIL: the dry run counted $dry_bytes bytes to store, the import stored $(json new-bytes)" >&2; exit 1; }
    if [[ -n ${VMHUB_ALT:-} ]]; then
        run import_alt "$VMHUB_ALT" import v1.raw bench:1 --home "lib-alt-$r" --output json
    fi
done
mv lib-import-1 lib1
rm -rf lib-import-* lib-alt-*
run zstd zstd -q -3 -T"$(nproc)" -c v1.raw
run sha256 openssl dgst -sha256 v1.raw
rm -f "$out_file"

cell() { printf '%s s (%s)' "$(m "$1")" "$(echo "${times[$1]}" | spread)"; }
import_table() {
    echo "## Import of v1 (median of $REPS, min–max; warm cache)"
    echo
    cpu_m() { echo "${cpu[$1]}" | median; }
    # What the CPU time would allow if every core ran the command alone: MiB/s
    # with the CPU seconds spread over all $(nproc) cores.
    bound() { rate "$data_bytes" "$(echo "scale=3; $(cpu_m "$1") / $(nproc)" | bc)"; }
    echo "The last column spreads the command's CPU seconds (user + system) over the $(nproc) cores: what an idle machine with perfect parallelism would give."
    echo
    echo "| command | time | CPU | disk data | MiB/s of data | bound by CPU |"
    echo "|---|---|---|---|---|---|"
    echo "| \`vmhub import --dry-run\`: chunk + hash + compress | $(cell dry) | $(cpu_m dry) s | $(mib "$data_bytes") MiB | **$(rate "$data_bytes" "$(m dry)")** (target ≥ 500: $( (($(echo "$data_bytes / $MiB / $(m dry) >= 500" | bc))) && echo meets || echo MISSES)) | $(bound dry) |"
    echo "| \`vmhub import\`: the same, and $chunks blobs ($(mib "$new_bytes") MiB) written and synced | $(cell import) | $(cpu_m import) s | $(mib "$data_bytes") MiB | $(rate "$data_bytes" "$(m import)") | $(bound import) |"
    [[ -z ${VMHUB_ALT:-} ]] || echo "| \`$VMHUB_ALT import\` | $(cell import_alt) | $(cpu_m import_alt) s | | **$(rate "$data_bytes" "$(m import_alt)")** | $(bound import_alt) |"
    echo "| \`zstd -3 -T$(nproc)\` of v1.raw (1 GiB with holes) | $(m zstd) s | $(cpu_m zstd) s | | $(rate "$data_bytes" "$(m zstd)") | $(bound zstd) |"
    echo "| \`openssl dgst -sha256\` of v1.raw (1 GiB with holes) | $(m sha256) s | $(cpu_m sha256) s | | $(rate "$data_bytes" "$(m sha256)") | $(bound sha256) |"
    echo
}
if [[ ${ONLY:-} == import ]]; then
    import_table
    exit 0
fi

# ---------------------------------------------------------------------------
# Push and pull of v1: vmhub and skopeo, interleaved
# ---------------------------------------------------------------------------
echo "timing pushes and pulls ..." >&2
# What the registry did during one command, from its log: "received sent
# requests seconds" for KEY in stat[KEY] (the first repetition's).
declare -A stat
measured() { # KEY COMMAND...
    local key=$1 rx0 tx0 q0 s0 rx1 tx1 q1 s1
    shift
    read -r rx0 tx0 q0 s0 < <(registry_bytes)
    run "$@"
    read -r rx1 tx1 q1 s1 < <(registry_bytes)
    [[ -n ${stat[$key]:-} ]] ||
        stat[$key]="$((rx1 - rx0)) $((tx1 - tx0)) $((q1 - q0)) $(echo "$s1 - $s0" | bc)"
}
st() { cut -d' ' -f"$2" <<<"${stat[$1]}"; } # KEY FIELD(1 received, 2 sent, 3 requests, 4 seconds)
for ((r = 1; r <= REPS; r++)); do
    start_registry
    measured push push "$VMHUB" push bench:1 "$reg/bench/os:1" --home lib1 --output json
    rm -rf lib2
    measured pull pull "$VMHUB" pull "$reg/bench/os:1" --home lib2 --output json
    for kind in raw zst; do
        rm -rf "oci-$kind-pulled"
        measured "skopeo-push-$kind" "skopeo-push-$kind" \
            skopeo copy "${skopeo_tls[@]}" "oci:oci-$kind:1" "docker://$reg/onebig-$kind:1"
        measured "skopeo-pull-$kind" "skopeo-pull-$kind" \
            skopeo copy "${skopeo_tls[@]}" "docker://$reg/onebig-$kind:1" "oci:oci-$kind-pulled:1"
        hex=${kind}_hex
        cmp "oci-$kind/blobs/sha256/${!hex}" "oci-$kind-pulled/blobs/sha256/${!hex}" ||
            { echo "FAIL: skopeo's pulled $kind blob differs" >&2; exit 1; }
    done
done
rm -rf oci-raw-pulled oci-zst-pulled
"$VMHUB" export bench/os:1 v1.out.raw --home lib2 --force >/dev/null
cmp v1.raw v1.out.raw || { echo "FAIL: the pulled v1 differs from v1.raw" >&2; exit 1; }
rm -f v1.out.raw
full_down=$(st pull 2)

# ---------------------------------------------------------------------------
# The delta: v2 imported next to v1, pushed next to it (in the last
# repetition's registry), pulled into lib2 (which pulled v1 from it)
# ---------------------------------------------------------------------------
echo "timing v2 ..." >&2
cat v2.raw >/dev/null
run import2 "$VMHUB" import v2.raw bench:2 --home lib1 --output json
v2_new_chunks=$(json new-chunks)
v2_new_bytes=$(json new-bytes)
measured push2 push2 "$VMHUB" push bench:2 "$reg/bench/os:2" --home lib1 --output json
v2_uploaded=$(json uploaded)
measured pull2 pull2 "$VMHUB" pull "$reg/bench/os:2" --home lib2 --output json
v2_fetched=$(json fetched)
v2_blobs=$(json blobs)
up=$(st push2 1) down=$(st pull2 2)
"$VMHUB" export bench/os:2 v2.out.raw --home lib2 --force >/dev/null
cmp v2.raw v2.out.raw || { echo "FAIL: the pulled v2 differs from v2.raw" >&2; exit 1; }
rm -f v2.out.raw "$out_file"

# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------
import_table
echo "## Push and pull of v1 (median of $REPS, min–max)"
echo
echo "MiB/s: of the disk's $(mib "$data_bytes") MiB of data, then of the blob bytes on the wire."
echo "Wire bytes, requests and the registry's summed request durations: by its log, first repetition."
echo
echo "| tool | push | pull | push MiB/s (data, wire) | pull MiB/s (data, wire) | wire MiB up / down | requests push / pull (registry s) |"
echo "|---|---|---|---|---|---|---|"
row() { # LABEL PUSH-KEY PULL-KEY
    local up down
    up=$(st "$2" 1) down=$(st "$3" 2)
    echo "| $1 | $(cell "$2") | $(cell "$3") | $(rate "$data_bytes" "$(m "$2")"), $(rate "$up" "$(m "$2")") | $(rate "$data_bytes" "$(m "$3")"), $(rate "$down" "$(m "$3")") | $(mib "$up") / $(mib "$down") | $(st "$2" 3) ($(st "$2" 4)) / $(st "$3" 3) ($(st "$3" 4)) |"
}
row "vmhub ($chunks blobs + manifest)" push pull
row "skopeo, one raw layer" skopeo-push-raw skopeo-pull-raw
row "skopeo, one zstd layer" skopeo-push-zst skopeo-pull-zst
echo
echo "| time, vmhub / skopeo | push | pull |"
echo "|---|---|---|"
echo "| vs one raw layer | $(ratio "$(m push)" "$(m skopeo-push-raw)") | $(ratio "$(m pull)" "$(m skopeo-pull-raw)") |"
echo "| vs one zstd layer | $(ratio "$(m push)" "$(m skopeo-push-zst)") | $(ratio "$(m pull)" "$(m skopeo-pull-zst)") |"
echo
echo "## v2: 8 MiB changed"
echo
echo "import $(m import2) s ($v2_new_chunks new chunks, $(mib "$v2_new_bytes") MiB), push $(m push2) s ($v2_uploaded blobs uploaded; $(st push2 3) requests, registry $(st push2 4) s), pull $(m pull2) s ($v2_fetched of $v2_blobs blobs fetched; $(st pull2 3) requests)."
echo
echo "| | bytes | / full pull of v1 ($(mib "$full_down") MiB) | target |"
echo "|---|---|---|---|"
verdict() { (($(echo "$1 <= 0.4" | bc))) && echo meets || echo MISSES; }
r_up=$(ratio "$up" "$full_down") r_down=$(ratio "$down" "$full_down")
echo "| uploaded by push of v2 | $(mib "$up") MiB | **$r_up** | ≤ 0.4 ($(verdict "$r_up")) |"
echo "| downloaded by pull of v2 | $(mib "$down") MiB | **$r_down** | ≤ 0.4 ($(verdict "$r_down")) |"
echo
echo "load after: $(uptime | sed 's/.*load average/load average/')"
[[ -r /proc/pressure/cpu ]] && echo "cpu psi after: $(head -1 /proc/pressure/cpu)"
printf 'total bench time: %.0f s\n' "$(echo "$EPOCHREALTIME - $bench_start" | bc)"
