#!/usr/bin/env bash
# Installs the peers the test suite checks vmhub against, when they are missing:
# qemu-img/qemu-io (qemu-utils, expected present) and vhdiinfo (libvhdi-utils);
# the tools scripts/tiny-machine.sh builds a bootable test disk with; the
# filesystem and partitioning tools `vmhub fs` is compared with; and
# qemu-system-x86_64 (through scripts/qemu-system.sh, from backports).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# Finds a command also in the sbin directories, which a non-root PATH may lack.
have() { PATH="$PATH:/usr/sbin:/sbin" command -v "$1" >/dev/null 2>&1; }
# True when the Debian package is installed.
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }

need=()
command -v vhdiinfo >/dev/null 2>&1 || need+=(libvhdi-utils)
# libvhdi's Python binding reads differencing VHDX chains for the VHDX tests.
installed python3-libvhdi || need+=(python3-libvhdi)
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
command -v qemu-io >/dev/null 2>&1 || need+=(qemu-utils)
# For scripts/tiny-machine.sh.
have syslinux || need+=(syslinux)
[ -e /usr/lib/syslinux/mbr/mbr.bin ] || need+=(syslinux-common)
have mcopy || need+=(mtools)
have mkfs.vfat || need+=(dosfstools)
{ have mke2fs && have debugfs; } || need+=(e2fsprogs)
installed busybox-static || need+=(busybox-static)
have cpio || need+=(cpio)
have sfdisk || need+=(fdisk)
# Filesystems and partition tables `vmhub fs` is checked against.
{ have mkntfs && have ntfscp; } || need+=(ntfs-3g)
have xorriso || need+=(xorriso)
have sgdisk || need+=(gdisk)
# Registries and OCI clients `vmhub push` and `pull` are checked against.
have docker-registry || need+=(docker-registry)
have skopeo || need+=(skopeo)
have htpasswd || need+=(apache2-utils)
# PostgreSQL, which the hub's tests start a private cluster of (`serve --database`).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# UEFI firmware for `vmhub run --firmware uefi`.
[ -e /usr/share/ovmf/OVMF.fd ] || need+=(ovmf)

# scripts/tiny-machine.sh fetches the kernel with `apt-get download`, which
# needs the package lists.
lists_ok() { apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1; }

if [ ${#need[@]} -gt 0 ] || { ! lists_ok && [ "$(id -u)" = 0 ]; }; then
    if [ "$(id -u)" != 0 ]; then
        echo "deps.sh: missing ${need[*]}; run as root or install them" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    updated=1
fi
if [ ${#need[@]} -gt 0 ]; then
    # --no-upgrade keeps the installed qemu-utils (10.x from backports) untouched.
    apt-get install -y -qq --no-upgrade "${need[@]}" >/dev/null
fi

# Debian's Chromium, run headless by the browser test of the hub's pages
# (crates/hub/tests/browser.rs); without its recommends, desktop services it
# does not need.
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "deps.sh: missing chromium; run as root or install it" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    [ -n "${updated:-}" ] || apt-get update -qq
    apt-get install -y -qq --no-upgrade --no-install-recommends chromium >/dev/null
fi

# qemu-system-x86_64 must come from the same backports suite as qemu-utils 10.x;
# the stable one would replace qemu-utils. qemu-system.sh explains and does it.
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "deps.sh: missing qemu-system-x86_64; run as root or see scripts/qemu-system.sh" >&2
        exit 1
    fi
    bash "$here/qemu-system.sh"
fi

# PyPI's oras (the OCI client library) in a private virtual environment, so
# the system's Python stays untouched; the tests find it there.
venv=${VMHUB_VENV:-$HOME/.cache/vmhub-ci/venv}
if ! "$venv/bin/python" -c 'import oras.provider' >/dev/null 2>&1; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'oras==0.2.43'
fi
# moto's S3 server, which the hub's tests store blobs in (`serve --storage`).
if [ ! -x "$venv/bin/moto_server" ]; then
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'moto[server]==5.2.5'
fi

# npm's playwright-core, pinned, drives that Chromium; it goes into a private
# prefix (no browser download: it uses Debian's), where the test finds it.
node_prefix=${VMHUB_NODE:-$HOME/.cache/vmhub-ci/node}
playwright_version=1.65.1
if ! grep -qs "\"version\": \"$playwright_version\"" \
    "$node_prefix/node_modules/playwright-core/package.json"; then
    command -v npm >/dev/null 2>&1 || { echo "deps.sh: npm not found (install nodejs and npm)" >&2; exit 1; }
    mkdir -p "$node_prefix"
    npm install --prefix "$node_prefix" --no-audit --no-fund --silent "playwright-core@$playwright_version"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install --locked cargo-nextest
fi
