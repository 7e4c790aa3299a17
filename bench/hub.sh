#!/usr/bin/env bash
# The hub (`vmhub serve`) against nginx, and what a new version of a machine
# costs to pull through it, in one run.
#
# Usage: bench/hub.sh [WORKDIR]
#
#   WORKDIR   where to put the scratch folder (default: $BENCH_DIR, else
#             $TMPDIR or /tmp); removed at the end, with the hub and nginx it
#             starts. Needs about 6 GiB free. No network beyond 127.0.0.1
#             (nginx is installed from Debian when missing and run as root).
#
# Environment:
#   VMHUB=path     vmhub binary (default: `cargo build --release -p vmhub`)
#   REPS=5         downloads of the blob from each server; medians are reported
#   SEED=20261124  seed of the disk's data and of the changes of v2
#
# 1. Blob download. One blob of 1 GiB of random data is pushed into the hub
#    (a POST, then one PUT of the whole blob with its digest). nginx (Debian's, one worker, sendfile on,
#    access log off, a private configuration in the scratch folder) serves the
#    very same file, a hard link of the hub's blob, so both read it from the
#    same page cache (read once before). The same client, `curl -o /dev/null`,
#    downloads it REPS times from each, interleaved; the medians of curl's
#    average speed and their ratio hub/nginx are printed (target >= 0.8),
#    and the CPU time (user + system) each server process used per GiB sent.
#
# 2. A new version. v1 is a 1 GiB raw disk holding 384 MiB of data (48 runs of
#    8 MiB: half random, half text-like and compressible) at seeded places;
#    v2 is v1 with 8 MiB changed in 128 scattered pieces of 64 KiB. Both are
#    imported into a library and pushed to the hub as bench/machine:1 and :2.
#    v1 is pulled into an empty library, then v2 into that library: the bytes
#    that pull fetched (vmhub pull --output json, "fetched-bytes") against a
#    full pull of v2 into an empty library give the ratio (target <= 0.4). The
#    pulled v2 is exported and compared with v2.raw.
set -euo pipefail

REPS=${REPS:-5}
SEED=${SEED:-20261124}
MiB=$((1 << 20))
export PATH="$PATH:/usr/sbin:/sbin"
repo=$(cd "$(dirname "$0")/.." && pwd)

if ! command -v nginx >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        echo "hub.sh: installing nginx (Debian)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq --no-upgrade nginx-light >/dev/null 2>&1 || {
            apt-get update -qq && apt-get install -y -qq --no-upgrade nginx-light >/dev/null
        }
    else
        echo "hub.sh: nginx is required (apt-get install nginx as root)" >&2
        exit 1
    fi
fi
for tool in curl python3 sha256sum cmp; do
    command -v "$tool" >/dev/null || { echo "hub.sh: $tool is required" >&2; exit 1; }
done

if [ -z "${VMHUB:-}" ]; then
    (cd "$repo" && cargo build --release --locked -p vmhub >&2)
    VMHUB=${CARGO_TARGET_DIR:-$repo/target}/release/vmhub
fi

base=${1:-${BENCH_DIR:-${TMPDIR:-/tmp}}}
scratch=$(mktemp -d "$base/vmhub-hub-bench.XXXXXX")
hub_pid=
nginx_pid=
cleanup() {
    [ -n "$hub_pid" ] && kill -TERM "$hub_pid" 2>/dev/null && wait "$hub_pid" 2>/dev/null
    [ -n "$nginx_pid" ] && kill -TERM "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
    rm -rf "$scratch"
}
trap cleanup EXIT
export VMHUB_CONFIG=$scratch/config

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# The hub, with a token for the benchmark.
data=$scratch/hub
token=$("$VMHUB" serve --data "$data" --create-token bench --scope push:bench 2>/dev/null)
"$VMHUB" serve --data "$data" --listen 127.0.0.1:0 >"$scratch/serve.log" 2>&1 &
hub_pid=$!
addr=
for _ in $(seq 1 300); do
    addr=$(sed -n 's|.*serving the hub on http://\([^ ]*\).*|\1|p' "$scratch/serve.log" | head -n1)
    [ -n "$addr" ] && break
    sleep 0.1
done
[ -n "$addr" ] || { cat "$scratch/serve.log" >&2; echo "hub.sh: the hub did not start" >&2; exit 1; }

echo "== 1. one 1 GiB blob: vmhub serve against nginx ($(date -u +%F), $(nproc) cores)"
blob=$scratch/blob
head -c $((1024 * MiB)) /dev/urandom >"$blob"
hex=$(sha256sum "$blob" | cut -d' ' -f1)
# Two requests (OCI distribution, "POST then PUT"): the upload's place, then
# the whole blob streamed into it with its digest.
location=$(curl -sS -o /dev/null -w '%header{location}' -u "bench:$token" -X POST \
    "http://$addr/v2/bench/blob/blobs/uploads/")
code=$(curl -sS -o /dev/null -w '%{http_code}' -u "bench:$token" -T "$blob" \
    -H 'Content-Type: application/octet-stream' "http://$addr$location?digest=sha256:$hex")
[ "$code" = 201 ] || { echo "hub.sh: pushing the blob answered $code" >&2; exit 1; }
rm "$blob"
stored=$data/blobs/sha256/${hex:0:2}/$hex
mkdir -p "$scratch/www"
ln "$stored" "$scratch/www/blob"
cat "$stored" >/dev/null

nginx_port=$(free_port)
user_line=
[ "$(id -u)" = 0 ] && user_line="user root;"
cat >"$scratch/nginx.conf" <<EOF
$user_line
worker_processes 1;
daemon off;
pid $scratch/nginx.pid;
error_log $scratch/nginx-error.log;
events { worker_connections 64; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path $scratch/nginx-tmp;
    proxy_temp_path $scratch/nginx-tmp;
    fastcgi_temp_path $scratch/nginx-tmp;
    uwsgi_temp_path $scratch/nginx-tmp;
    scgi_temp_path $scratch/nginx-tmp;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$nginx_port;
        root $scratch/www;
    }
}
EOF
mkdir -p "$scratch/nginx-tmp"
nginx -c "$scratch/nginx.conf" -p "$scratch" -e "$scratch/nginx-error.log" &
nginx_pid=$!
for _ in $(seq 1 100); do
    curl -sf -o /dev/null -r 0-0 "http://127.0.0.1:$nginx_port/blob" && break
    sleep 0.1
done

nginx_worker=$(pgrep -P "$nginx_pid" | head -n1)
[ -n "$nginx_worker" ] || { echo "hub.sh: no nginx worker" >&2; exit 1; }
# CPU time (user + system, clock ticks) a server process has used so far.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
hub_ticks=0
nginx_ticks=0
hub_url=http://$addr/v2/bench/blob/blobs/sha256:$hex
nginx_url=http://127.0.0.1:$nginx_port/blob
: >"$scratch/hub.speeds"
: >"$scratch/nginx.speeds"
for _ in $(seq 1 "$REPS"); do
    for who in hub nginx; do
        url=$hub_url
        pid=$hub_pid
        if [ $who = nginx ]; then url=$nginx_url; pid=$nginx_worker; fi
        before=$(ticks "$pid")
        out=$(curl -sS -o /dev/null -w '%{http_code} %{size_download} %{speed_download}' "$url")
        used=$(($(ticks "$pid") - before))
        if [ $who = hub ]; then hub_ticks=$((hub_ticks + used)); else nginx_ticks=$((nginx_ticks + used)); fi
        read -r code size speed <<<"$out"
        [ "$code" = 200 ] && [ "$size" = $((1024 * MiB)) ] ||
            { echo "hub.sh: $who answered $code with $size bytes" >&2; exit 1; }
        echo "$speed" >>"$scratch/$who.speeds"
    done
done
hub_speed=$(median <"$scratch/hub.speeds")
nginx_speed=$(median <"$scratch/nginx.speeds")
mib() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }
echo "hub    MiB/s, each run: $(while read -r s; do printf '%s ' "$(mib "$s")"; done <"$scratch/hub.speeds")  median $(mib "$hub_speed")"
echo "nginx  MiB/s, each run: $(while read -r s; do printf '%s ' "$(mib "$s")"; done <"$scratch/nginx.speeds")  median $(mib "$nginx_speed")"
awk -v h="$hub_speed" -v n="$nginx_speed" 'BEGIN { printf "hub/nginx throughput: %.2f (target >= 0.8)\n", h / n }'
awk -v h="$hub_ticks" -v n="$nginx_ticks" -v hz="$hz" -v r="$REPS" \
    'BEGIN { printf "server CPU per GiB sent: hub %.2f s, nginx %.2f s\n", h / hz / r, n / hz / r }'
kill -TERM "$nginx_pid" && wait "$nginx_pid" 2>/dev/null || true
nginx_pid=

echo
echo "== 2. a new version: v2 (8 MiB changed) pulled into a library holding v1"
python3 - "$scratch" "$SEED" <<'EOF'
import os, random, sys
scratch, seed = sys.argv[1], int(sys.argv[2])
MiB = 1 << 20
rng = random.Random(seed)
words = [b"vmhub", b"machine", b"disk", b"chunk", b"manifest", b"blob", b"kernel", b"busybox",
         b"config", b"etc", b"usr", b"lib", b"\n", b" ", b"0123", b"data"]
def text(n):
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words)
    return bytes(out[:n])
runs = sorted(rng.sample(range(128), 48))  # 48 runs of 8 MiB among 128 slots
with open(f"{scratch}/v1.raw", "wb") as f:
    f.truncate(1024 * MiB)
    for i, slot in enumerate(runs):
        f.seek(slot * 8 * MiB)
        f.write(os.urandom(8 * MiB) if i % 2 == 0 else text(8 * MiB))
os.system(f"cp --sparse=always {scratch}/v1.raw {scratch}/v2.raw")
with open(f"{scratch}/v2.raw", "r+b") as f:
    for _ in range(128):
        slot = rng.choice(runs)
        at = slot * 8 * MiB + rng.randrange(0, 8 * MiB - 64 * 1024, 4096)
        f.seek(at)
        f.write(rng.randbytes(64 * 1024))
EOF
export VMHUB_HOME=$scratch/library
"$VMHUB" key generate >/dev/null
"$VMHUB" key trust "$("$VMHUB" key show)" --name bench >/dev/null
printf '%s' "$token" | "$VMHUB" login "$addr" --username bench --password-stdin >/dev/null
"$VMHUB" import "$scratch/v1.raw" bench/machine:1 >/dev/null
"$VMHUB" import "$scratch/v2.raw" bench/machine:2 >/dev/null
"$VMHUB" push bench/machine:1 "$addr/bench/machine:1" >/dev/null
"$VMHUB" push bench/machine:2 "$addr/bench/machine:2" >/dev/null
fetched() { python3 -c 'import json, sys; print(json.load(sys.stdin)["fetched-bytes"])'; }
full=$(VMHUB_HOME=$scratch/full "$VMHUB" pull "$addr/bench/machine:2" --output json | fetched)
v1=$(VMHUB_HOME=$scratch/puller "$VMHUB" pull "$addr/bench/machine:1" --output json | fetched)
delta=$(VMHUB_HOME=$scratch/puller "$VMHUB" pull "$addr/bench/machine:2" --output json | fetched)
VMHUB_HOME=$scratch/puller "$VMHUB" export bench/machine:2 "$scratch/pulled.raw" --format raw >/dev/null
cmp "$scratch/v2.raw" "$scratch/pulled.raw" || { echo "hub.sh: the pulled v2 differs" >&2; exit 1; }
echo "full pull of v2: $(mib "$full") MiB ($full bytes); v1: $(mib "$v1") MiB"
echo "v2 into a library holding v1: $(mib "$delta") MiB ($delta bytes)"
awk -v d="$delta" -v f="$full" 'BEGIN { printf "delta/full: %.3f (target <= 0.4)\n", d / f }'
