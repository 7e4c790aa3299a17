#!/usr/bin/env bash
# Builds vmhub and shows it at work in a scratch folder: a tiny Linux machine,
# built from Debian packages, becomes a dynamic VHD and boots with `vmhub run`
# (its own disk untouched; the instance writes to a differencing disk), then
# vmhub looks inside the disks (which OS, which files) and the VHD toolkit
# converts, checks and compares them.
#
# Usage: scripts/tour.sh [WORKDIR]
# Needs QEMU (qemu-system-x86) and the tiny machine's build tools; as root,
# scripts/deps.sh installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

missing=()
for tool in qemu-img qemu-system-x86_64 syslinux mcopy mkfs.vfat mke2fs debugfs cpio sfdisk; do
    PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        bash scripts/deps.sh
    else
        echo "tour: missing ${missing[*]}; run scripts/deps.sh as root first" >&2
        exit 1
    fi
fi

cargo build --release --locked -p vmhub
vmhub=$root/target/release/vmhub
work=${1:-$(mktemp -d)}
mkdir -p "$work"
cd "$work"
rm -rf tiny.raw machine.vhd instance.vhd flat.vhd library

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

# The machine: a kernel and a busybox from Debian, on a 64 MiB disk.
VMHUB_CACHE=$root/target/tiny-machine-cache bash "$root/scripts/tiny-machine.sh" "$work" "hello from the disk" >/dev/null
step "$vmhub" img convert tiny.raw machine.vhd
step "$vmhub" img info machine.vhd
before=$(sha256sum machine.vhd)

# Boot it: the guest prints what it read from its disk, writes a file, powers off.
step "$vmhub" run machine.vhd --memory 256M --instance instance.vhd </dev/null
[ "$(sha256sum machine.vhd)" = "$before" ] && echo "machine.vhd did not change by a byte"
step "$vmhub" img info instance.vhd
step "$vmhub" img check instance.vhd

# Inside the disks, without booting: which machine it is, and its files.
step "$vmhub" inspect instance.vhd
step "$vmhub" fs parts instance.vhd
step "$vmhub" fs ls -l instance.vhd:2:/
step "$vmhub" fs cat instance.vhd:2:/marker.txt

# The library: keep the machine as shared chunks, boot it by name.
export VMHUB_HOME=$work/library
step "$vmhub" import machine.vhd tiny:1 --memory 256M --description "a tiny Linux machine"
step "$vmhub" ls
step "$vmhub" show tiny:1
step "$vmhub" run tiny:1 --rm </dev/null

# The toolkit: flatten the chain, check it, compare it with the instance.
step "$vmhub" img convert instance.vhd flat.vhd --type fixed
step "$vmhub" img compare instance.vhd flat.vhd
echo
echo "the disks are in $work"
