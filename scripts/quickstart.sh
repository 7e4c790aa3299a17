#!/usr/bin/env bash
# Sets up and starts a vmhub hub on its embedded defaults (SQLite and a local
# folder) with a small sample machine published in it:
#   - installs what is missing (as root, through scripts/deps.sh),
#   - builds vmhub (release) and a tiny Linux machine from Debian packages
#     (scripts/tiny-machine.sh; packages cached in target/tiny-machine-cache),
#   - imports the machine into a scratch library with a description,
#   - starts `vmhub serve` on 127.0.0.1:8080 (another free port if that one
#     is taken), mints a publishing token, logs in and pushes the machine,
#   - prints the web address and the pull and search commands, and serves
#     in the foreground until Ctrl-C, which stops the hub cleanly.
#
# Usage: scripts/quickstart.sh [--port PORT] [--work DIR] [--check]
#   --port PORT  the port to listen on (default 8080; 0 for any free port)
#   --work DIR   the scratch folder: library, settings and the hub's data
#                (default target/quickstart; kept between runs)
#   --check      do not serve: check that the machine's page answers and that
#                `vmhub pull` from the hub gives back the same disk, then stop
#                the hub and exit (0 when everything checked)
# VMHUB_BIN names a vmhub binary to use instead of building one.
#
# scripts/tour.sh is the other walk through vmhub: it boots the tiny machine
# with `vmhub run`, looks inside its disks and uses the disk toolkit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

port=8080
work=$root/target/quickstart
check=false
while [ $# -gt 0 ]; do
    case $1 in
        --port) port=${2:?--port needs a number}; shift 2 ;;
        --work) work=${2:?--work needs a folder}; shift 2 ;;
        --check) check=true; shift ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "quickstart: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case $port in
    ''|*[!0-9]*) echo "quickstart: --port wants a number, not $port" >&2; exit 2 ;;
esac

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { echo "quickstart: $*" >&2; exit 1; }

# The tiny machine's build tools (mkfs and debugfs live in sbin).
missing=()
for tool in syslinux mcopy mkfs.vfat mke2fs debugfs cpio sfdisk; do
    PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing ${missing[*]}; run scripts/deps.sh as root first"
    say "installing ${missing[*]} (scripts/deps.sh)"
    bash scripts/deps.sh
fi

if [ -n "${VMHUB_BIN:-}" ]; then
    vmhub=$VMHUB_BIN
else
    say "building vmhub (release)"
    cargo build --release --locked -p vmhub
    vmhub=$root/target/release/vmhub
fi
[ -x "$vmhub" ] || die "$vmhub is not an executable"

mkdir -p "$work"
work=$(cd "$work" && pwd)
# Everything of this walk-through stays in the scratch folder: the library,
# the signing key and login, the hub's data.
export VMHUB_HOME=$work/library
export VMHUB_CONFIG=$work/config
data=$work/hub

say "building the sample machine (scripts/tiny-machine.sh)"
VMHUB_CACHE=$root/target/tiny-machine-cache bash scripts/tiny-machine.sh "$work" \
    "hello from the hub" >/dev/null
"$vmhub" import "$work/tiny.raw" demo/tiny:1 --memory 256M --cpus 1 \
    --machine-version 1 \
    --description "A tiny Linux machine: a Debian kernel and busybox on a 64 MiB disk" >/dev/null
"$vmhub" key show >/dev/null 2>&1 || "$vmhub" key generate >/dev/null

# A fresh token for this run; the ones of earlier runs are revoked.
"$vmhub" serve --data "$data" --revoke-token quickstart >/dev/null 2>&1 || true
token=$("$vmhub" serve --data "$data" --create-token quickstart --scope push:demo 2>/dev/null)

# The port asked for, or any free one when something already listens there.
listen=127.0.0.1:$port
if [ "$port" != 0 ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    say "port $port is taken; using a free one"
    listen=127.0.0.1:0
fi
log=$work/serve.log
start_hub() {
    : >"$log"
    "$vmhub" serve --data "$data" --listen "$listen" >"$log" 2>&1 &
    hub=$!
}
stop_hub() {
    if kill -0 "$hub" 2>/dev/null; then
        kill -TERM "$hub" 2>/dev/null || true
        wait "$hub" 2>/dev/null || true
    fi
}
start_hub
trap stop_hub EXIT

# The hub prints its address once it listens.
addr=
for _ in $(seq 1 300); do
    addr=$(sed -n 's|.*serving the hub on http://\([^ ]*\).*|\1|p' "$log" | head -n1)
    [ -n "$addr" ] && break
    if ! kill -0 "$hub" 2>/dev/null; then
        # Taken between the check above and the hub's start: any free port.
        if [ "$listen" != 127.0.0.1:0 ] && grep -q "cannot listen" "$log"; then
            say "port $port is taken; using a free one"
            listen=127.0.0.1:0
            start_hub
            continue
        fi
        cat "$log" >&2
        die "vmhub serve stopped"
    fi
    sleep 0.1
done
[ -n "$addr" ] || { cat "$log" >&2; die "vmhub serve did not start within 30 s"; }

say "publishing demo/tiny:1 to http://$addr"
printf '%s' "$token" | "$vmhub" login "$addr" --username quickstart --password-stdin >/dev/null
"$vmhub" push demo/tiny:1 "$addr/demo/tiny:1" >/dev/null
key=$("$vmhub" key show)

if $check; then
    say "checking the machine page and a pull"
    # A plain HTTP/1.0 GET through bash's /dev/tcp: nothing more to install.
    page=$(timeout 30 bash -c 'exec 3<>"/dev/tcp/${1%:*}/${1##*:}"
        printf "GET /m/demo/tiny HTTP/1.0\r\nHost: %s\r\n\r\n" "$1" >&3
        cat <&3' _ "$addr") || die "http://$addr/m/demo/tiny did not answer"
    head -n1 <<<"$page" | grep -q " 200 " ||
        die "http://$addr/m/demo/tiny answered $(head -n1 <<<"$page")"
    grep -q "A tiny Linux machine" <<<"$page" ||
        die "http://$addr/m/demo/tiny does not show the machine's description"
    rm -rf "$work/pulled" "$work/pulled.raw"
    "$vmhub" key trust "$key" --name quickstart >/dev/null
    VMHUB_HOME=$work/pulled "$vmhub" pull "$addr/demo/tiny:1" >/dev/null
    VMHUB_HOME=$work/pulled "$vmhub" export demo/tiny:1 "$work/pulled.raw" --format raw >/dev/null
    cmp "$work/tiny.raw" "$work/pulled.raw" || die "the pulled disk differs from the pushed one"
    "$vmhub" search tiny --hub "http://$addr" | grep -q demo/tiny ||
        die "vmhub search does not find demo/tiny"
    trap - EXIT
    kill -TERM "$hub"
    wait "$hub" || die "vmhub serve did not stop cleanly"
    echo "quickstart: ok (hub at http://$addr, pulled disk identical)"
    exit 0
fi

cat <<EOF

The hub is serving on http://$addr/ (data in $data)

  Web:     http://$addr/m/demo/tiny
  Pull:    vmhub key trust $key --name quickstart
           vmhub pull $addr/demo/tiny:1
  Run:     vmhub run demo/tiny:1
  Search:  vmhub search tiny --hub http://$addr
  Publish: vmhub login $addr -u quickstart --password-stdin
           (the token is in $VMHUB_CONFIG/auth.json; mint others with
            vmhub serve --data $data --create-token USER --scope push:NAMESPACE)

Press Ctrl-C to stop the hub.
EOF
trap 'stop_hub; echo; echo "quickstart: the hub stopped"; exit 0' INT TERM
wait "$hub"
