#!/usr/bin/env bash
# Builds a tiny bootable x86 PC disk image for end-to-end tests, from Debian
# packages and without root-only operations (no mounts, no loop devices).
#
# The guest writes a file to its own disk and powers off, so a test can check
# that a boot went through and that writes reached the disk.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage:
  scripts/tiny-machine.sh OUTDIR [MARKER]   build OUTDIR/tiny.raw
  scripts/tiny-machine.sh --boot OUTDIR     boot OUTDIR/tiny.raw once and check it

MARKER defaults to $VMHUB_MARKER, or "hello". It must be one line.
Downloaded .deb files are kept in $VMHUB_CACHE (default OUTDIR/debs) and reused.
Tools: apt-get, dpkg-deb, sfdisk, mkfs.vfat, mcopy, syslinux, mke2fs, debugfs,
cpio, gzip and a static busybox (scripts/deps.sh installs them).

Outputs:
  OUTDIR/tiny.raw  64 MiB raw disk, MBR with syslinux's boot code;
                   partition 1: FAT16, active, syslinux + Linux + initramfs;
                   partition 2: ext4 holding /marker.txt (contains MARKER).
  OUTDIR/tiny.env  shell variables: TINY_IMAGE, TINY_MARKER, TINY_KERNEL,
                   TINY_BOOT_OFFSET/_SIZE, TINY_ROOT_OFFSET/_SIZE (bytes).

What the machine does on boot (kernel console on the first serial port):
  loads the disk drivers, mounts partition 2 of /dev/vda (else /dev/nvme0n1,
  else /dev/sda; the kernel argument vmhub.root=DEV overrides), prints
      VMHUB-MARKER: <contents of /marker.txt>
  writes /written-by-guest.txt containing "<marker> ok", counts the boot in
  /boots.txt and prints
      VMHUB-BOOT: <number of boots of this disk, 1 the first time>
  syncs, unmounts, prints
      VMHUB-DONE
  and powers off, so QEMU exits by itself. On any error it prints a line
  starting with VMHUB-FAIL: and powers off as well.

Boot it (KVM may not work on nested machines; TCG does):
  qemu-system-x86_64 -machine pc -accel tcg -m 256 -display none \
      -serial file:OUTDIR/serial.log -no-reboot \
      -drive file=OUTDIR/tiny.raw,format=raw,if=virtio
  (if=ide or -device nvme,... also boot.)

Read the file the guest wrote, without mounting:
  . OUTDIR/tiny.env
  dd if="$TINY_IMAGE" of=root.img bs=512 skip=$((TINY_ROOT_OFFSET / 512)) \
      count=$((TINY_ROOT_SIZE / 512))
  debugfs -R 'cat /written-by-guest.txt' root.img

--boot does all of that and fails unless both lines appear and the file holds
"<marker> ok". It uses -accel $VMHUB_ACCEL (default tcg) and gives QEMU
$VMHUB_BOOT_TIMEOUT seconds (default 120); VMHUB_ACCEL=kvm VMHUB_BOOT_TIMEOUT=30
tells whether KVM really works (a broken nested KVM stops the guest with
"KVM internal error" and QEMU does not exit).
EOF
}

die() { echo "tiny-machine.sh: $*" >&2; exit 1; }

# mkfs and debugfs live in sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"
export LC_ALL=C

need() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 ||
            die "'$t' not found; run scripts/deps.sh (as root) to install the tools"
    done
}

# Layout, in 512-byte sectors: 1 MiB gap, 32 MiB FAT, the rest (31 MiB) ext4.
DISK_SECTORS=131072
BOOT_START=2048
BOOT_SECTORS=65536
ROOT_START=$((BOOT_START + BOOT_SECTORS))
ROOT_SECTORS=$((DISK_SECTORS - ROOT_START))

# Drivers the guest may need that the Debian cloud kernel builds as modules.
# Each group is loaded with its dependencies; ext4 and NVMe are built in.
VIRTIO_MODULES="virtio_pci virtio_blk"
ATA_MODULES="ata_piix sd_mod"

# ---------------------------------------------------------------------------
# --boot: boot an image built before and check what it did.

boot_and_check() {
    local out=$1
    [ -r "$out/tiny.env" ] || die "$out/tiny.env not found; build the machine first"
    # shellcheck disable=SC1091
    . "$out/tiny.env"
    need qemu-system-x86_64 debugfs dd timeout
    local log start end got accel=${VMHUB_ACCEL:-tcg} limit=${VMHUB_BOOT_TIMEOUT:-120}
    tmp=$(mktemp -d) # global: the EXIT trap runs after this function returns
    trap 'rm -rf "$tmp"' EXIT
    log=$out/serial.log
    : >"$log"
    start=$(date +%s.%N)
    if ! timeout "$limit" qemu-system-x86_64 -machine pc -accel "$accel" -m 256 -display none \
        -serial "file:$log" -no-reboot \
        -drive "file=$TINY_IMAGE,format=raw,if=virtio"; then
        cat "$log" >&2
        die "QEMU (-accel $accel) failed or did not exit within $limit s"
    fi
    end=$(date +%s.%N)
    grep -qxF "VMHUB-MARKER: $TINY_MARKER" <(tr -d '\r' <"$log") ||
        { cat "$log" >&2; die "no 'VMHUB-MARKER: $TINY_MARKER' line in $log"; }
    grep -qx "VMHUB-DONE" <(tr -d '\r' <"$log") ||
        { cat "$log" >&2; die "no VMHUB-DONE line in $log"; }
    dd if="$TINY_IMAGE" of="$tmp/root.img" bs=512 status=none \
        skip=$((TINY_ROOT_OFFSET / 512)) count=$((TINY_ROOT_SIZE / 512))
    got=$(debugfs -R 'cat /written-by-guest.txt' "$tmp/root.img" 2>/dev/null)
    [ "$got" = "$TINY_MARKER ok" ] ||
        die "written-by-guest.txt holds '$got', expected '$TINY_MARKER ok'"
    echo "booted in $(echo "$start $end" | awk '{printf "%.1f", $2 - $1}') s;" \
        "guest wrote: $got (serial log: $log)"
}

# ---------------------------------------------------------------------------
# Build.

# Fetches package $1 into the cache unless a .deb of it is there already;
# prints the path of the newest cached .deb.
fetch_deb() {
    local pkg=$1 dl f
    f=$(find "$cache" -maxdepth 1 -name "${pkg}_*.deb" | sort -V | tail -n1)
    if [ -z "$f" ]; then
        dl=$(mktemp -d "$work/dl.XXXXXX")
        chmod 0755 "$work" "$dl" # apt downloads as the _apt user when run as root
        echo "tiny-machine.sh: downloading $pkg" >&2
        (cd "$dl" && apt-get download -q "$pkg" 2>&1 | grep -v -e unsandboxed -e '^Get:' -e '^Fetched' >&2) || true
        f=$(find "$dl" -maxdepth 1 -name "${pkg}_*.deb" | head -n1)
        [ -n "$f" ] || die "could not download $pkg (apt-get download; is 'apt-get update' done?)"
        # Copy, then rename within the cache, so that a build running at the
        # same time never sees half a file.
        cp "$f" "$cache/.$(basename "$f").$$.part"
        mv "$cache/.$(basename "$f").$$.part" "$cache/$(basename "$f")"
        f=$cache/$(basename "$f")
    fi
    echo "$f"
}

# Prints the path of the newest cached versioned cloud kernel package,
# downloading it (through the linux-image-cloud-amd64 metapackage) if needed.
kernel_deb() {
    local f meta real
    f=$(find "$cache" -maxdepth 1 -name 'linux-image-*-cloud-amd64_*.deb' \
        ! -name 'linux-image-cloud-amd64_*' | sort -V | tail -n1)
    if [ -n "$f" ]; then
        echo "$f"
        return
    fi
    meta=$(fetch_deb linux-image-cloud-amd64)
    real=$(dpkg-deb -f "$meta" Depends | tr ',|' '\n' |
        grep -o 'linux-image-[^ ]*-cloud-amd64' | head -n1)
    [ -n "$real" ] || die "cannot tell the kernel package from $(basename "$meta")"
    fetch_deb "$real"
}

# True when $1 is a 64-bit ELF file without a program interpreter (PT_INTERP),
# i.e. statically linked.
elf_static() {
    local f=$1 phoff phentsize phnum i
    [ "$(od -An -N5 -c "$f" 2>/dev/null | tr -d ' ')" = '177ELF002' ] || return 1
    phoff=$(od -An -j32 -N8 -t u8 "$f" | tr -d ' ')
    phentsize=$(od -An -j54 -N2 -t u2 "$f" | tr -d ' ')
    phnum=$(od -An -j56 -N2 -t u2 "$f" | tr -d ' ')
    for ((i = 0; i < phnum; i++)); do
        [ "$(od -An -j$((phoff + i * phentsize)) -N4 -t u4 "$f" | tr -d ' ')" = 3 ] && return 1
    done
    return 0
}

# A statically linked busybox: the installed one if static, else from the
# busybox-static package.
static_busybox() {
    local bb f
    bb=$(command -v busybox || true)
    if [ -n "$bb" ] && elf_static "$bb"; then
        echo "$bb"
        return
    fi
    f=$(fetch_deb busybox-static)
    dpkg-deb -x "$f" "$work/busybox"
    bb=$work/busybox/bin/busybox
    [ -x "$bb" ] || die "no bin/busybox in $(basename "$f")"
    echo "$bb"
}

# Copies module $1 and (first) its dependencies from $moddir into $initrd,
# appending their names, dependencies first, to the list file $2.
add_module() {
    local name=${1//-/_} list=$2 file deps d
    grep -qx "$name" "$list" 2>/dev/null && return 0
    file=$(awk -v n="$name" '$1 == n { print $2; exit }' "$work/modindex")
    if [ -z "$file" ]; then
        modname_index <"$moddir/modules.builtin" 2>/dev/null | grep -q "^$name " && return 0
        die "kernel module $name is neither a module nor built in"
    fi
    deps=$(tr '\0' '\n' <"$(decompressed "$file")" | sed -n 's/^depends=//p' | head -n1)
    for d in ${deps//,/ }; do
        add_module "$d" "$list"
    done
    cp "$(decompressed "$file")" "$initrd/lib/modules/$name.ko"
    echo "$name" >>"$list"
}

# Reads module paths, prints "NAME PATH" lines (NAME with '_' for '-').
modname_index() {
    awk '{ n = $0; sub(/.*\//, "", n); sub(/\.ko.*$/, "", n); gsub(/-/, "_", n); print n, $0 }'
}

# Prints the path of an uncompressed copy of module file $1.
decompressed() {
    local f=$1 out
    case $f in
    *.ko) echo "$f"; return ;;
    *.ko.xz) out=${f%.xz}; [ -e "$out" ] || { need xz; xz -dc "$f" >"$out"; } ;;
    *.ko.zst) out=${f%.zst}; [ -e "$out" ] || { need zstd; zstd -qdc "$f" >"$out"; } ;;
    *.ko.gz) out=${f%.gz}; [ -e "$out" ] || gzip -dc "$f" >"$out" ;;
    *) die "unknown module file $f" ;;
    esac
    echo "$out"
}

write_init() {
    cat >"$1" <<'EOF'
#!/bin/sh
# /init of the vmhub tiny machine: marks its disk and powers off.
export PATH=/bin
/bin/busybox --install -s /bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
exec </dev/console >/dev/console 2>&1

fail() {
    echo "VMHUB-FAIL: $*"
    sync
    poweroff -f
    sleep 1000000
}

load() {
    for m in $(cat "/lib/modules/$1.list"); do
        grep -q "^$m " /proc/modules || insmod "/lib/modules/$m.ko" ||
            echo "tiny: insmod $m failed"
    done
}

want=""
for arg in $(cat /proc/cmdline); do
    case $arg in vmhub.root=*) want=${arg#vmhub.root=} ;; esac
done

find_part() {
    for p in ${want:-/dev/vda2 /dev/nvme0n1p2 /dev/sda2}; do
        [ -b "$p" ] && { echo "$p"; return 0; }
    done
    return 1
}

# Waits up to $1 tenths of a second for the partition to show up.
wait_part() {
    i=0
    while [ "$i" -lt "$1" ]; do
        find_part && return 0
        usleep 100000
        i=$((i + 1))
    done
    return 1
}

# True when a PCI function with vendor $1 and one of the device ids $2... exists.
has_pci() {
    v=$1
    shift
    for d in /sys/bus/pci/devices/*; do
        [ "$(cat "$d/vendor")" = "$v" ] || continue
        for id in "$@"; do
            [ "$(cat "$d/device")" = "$id" ] && return 0
        done
    done
    return 1
}

# virtio-blk (legacy and modern ids) needs modules; NVMe is built in; else IDE.
ata=no
if has_pci 0x1af4 0x1001 0x1042; then
    load virtio
elif ! grep -qx 0x010802 /sys/bus/pci/devices/*/class; then
    load ata
    ata=yes
fi
part=$(wait_part 100) || { [ $ata = no ] && load ata && part=$(wait_part 100); } ||
    fail "no disk partition found (looked for ${want:-/dev/vda2 /dev/nvme0n1p2 /dev/sda2})"
echo "tiny: using $part"
# Keep the kernel's informational messages from splitting the lines below.
echo 4 >/proc/sys/kernel/printk

mount -t ext4 "$part" /mnt || fail "cannot mount $part"
[ -r /mnt/marker.txt ] || fail "no /marker.txt on $part"
marker=$(cat /mnt/marker.txt)
printf 'VMHUB-MARKER: %s\n' "$marker"
printf '%s ok\n' "$marker" >/mnt/written-by-guest.txt || fail "cannot write to $part"
# Boots counted on the disk: a boot from a disk that kept an earlier boot's
# writes says so.
boots=$(cat /mnt/boots.txt 2>/dev/null || echo 0)
boots=$((boots + 1))
echo "$boots" >/mnt/boots.txt || fail "cannot write to $part"
printf 'VMHUB-BOOT: %s\n' "$boots"
sync
umount /mnt || fail "cannot unmount $part"
echo "VMHUB-DONE"
poweroff -f
sleep 1000000
EOF
    chmod 0755 "$1"
}

build() {
    local out=$1 marker=$2
    case $marker in *$'\n'*) die "the marker must be a single line" ;; esac

    need apt-get dpkg-deb sfdisk mkfs.vfat mcopy mdir syslinux mke2fs debugfs cpio gzip dd truncate find sort
    local mbr=""
    for f in /usr/lib/syslinux/mbr/mbr.bin /usr/lib/SYSLINUX/mbr.bin /usr/share/syslinux/mbr.bin; do
        [ -r "$f" ] && { mbr=$f; break; }
    done
    [ -n "$mbr" ] || die "syslinux's mbr.bin not found; install syslinux-common (scripts/deps.sh)"

    mkdir -p "$out"
    out=$(cd "$out" && pwd)
    cache=${VMHUB_CACHE:-$out/debs}
    mkdir -p "$cache"
    cache=$(cd "$cache" && pwd)

    work=$(mktemp -d)
    img=""
    trap 'rm -rf "$work"; [ -z "$img" ] || rm -f "$img"' EXIT

    # Kernel: boot/vmlinuz-* and the modules we load.
    local kdeb kver kernel bb
    kdeb=$(kernel_deb)
    dpkg-deb -x "$kdeb" "$work/kernel"
    kernel=$(find "$work/kernel/boot" -name 'vmlinuz-*' | head -n1)
    [ -n "$kernel" ] || die "no boot/vmlinuz-* in $(basename "$kdeb")"
    kver=${kernel##*/vmlinuz-}
    moddir=$work/kernel/lib/modules/$kver
    [ -d "$moddir" ] || die "no lib/modules/$kver in $(basename "$kdeb")"
    find "$moddir" -name '*.ko*' | modname_index >"$work/modindex"
    bb=$(static_busybox)

    # Initramfs: busybox, /init, modules and the order to load them in.
    initrd=$work/initrd
    mkdir -p "$initrd"/{bin,dev,proc,sys,mnt,lib/modules}
    cp "$bb" "$initrd/bin/busybox"
    ln -s busybox "$initrd/bin/sh"
    write_init "$initrd/init"
    local m
    : >"$initrd/lib/modules/virtio.list"
    : >"$initrd/lib/modules/ata.list"
    for m in $VIRTIO_MODULES; do add_module "$m" "$initrd/lib/modules/virtio.list"; done
    for m in $ATA_MODULES; do add_module "$m" "$initrd/lib/modules/ata.list"; done
    (cd "$initrd" && find . -print0 | sort -z |
        cpio --null -o -H newc --owner 0:0 --reproducible --quiet) | gzip -9n >"$work/initrd.gz"

    cat >"$work/syslinux.cfg" <<'EOF'
SERIAL 0 115200
DEFAULT tiny
PROMPT 0
TIMEOUT 0
LABEL tiny
  LINUX /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0 panic=-1
EOF

    # Disk: partition table, boot code, FAT with syslinux, ext4 root.
    # Built next to its final name, then renamed: tiny.raw is never half-made.
    img=$out/.tiny.raw.$$.part
    truncate -s $((DISK_SECTORS * 512)) "$img"
    sfdisk -q --no-reread --no-tell-kernel "$img" >/dev/null <<EOF
label: dos
label-id: 0x564d4842
unit: sectors
start=$BOOT_START, size=$BOOT_SECTORS, type=e, bootable
start=$ROOT_START, size=$ROOT_SECTORS, type=83
EOF
    # syslinux's MBR code: the first 440 bytes, before the disk signature.
    dd if="$mbr" of="$img" bs=440 count=1 conv=notrunc status=none

    # (It warns that the file is larger than the file system: that is meant.)
    local msg
    msg=$(mkfs.vfat -F 16 -n VMHUB-BOOT -i 564d4842 --offset "$BOOT_START" -h "$BOOT_START" \
        "$img" $((BOOT_SECTORS / 2)) 2>&1) || { echo "$msg" >&2; die "mkfs.vfat failed"; }
    cp "$kernel" "$work/vmlinuz"
    mcopy -i "$img@@$((BOOT_START * 512))" \
        "$work/vmlinuz" "$work/initrd.gz" "$work/syslinux.cfg" ::/
    syslinux --offset $((BOOT_START * 512)) --install "$img"

    mkdir -p "$work/root/etc" "$work/root/bin"
    printf '%s\n' "$marker" >"$work/root/marker.txt"
    # What `vmhub inspect` reads to tell which machine this is.
    printf '%s\n' 'NAME="vmhub tiny machine"' 'ID=vmhub-tiny' 'ID_LIKE=debian' 'VERSION_ID=1' \
        'PRETTY_NAME="vmhub tiny machine 1 (busybox)"' >"$work/root/etc/os-release"
    echo tiny >"$work/root/etc/hostname"
    cp "$bb" "$work/root/bin/busybox"
    ln -s busybox "$work/root/bin/sh"
    mke2fs -q -F -t ext4 -L vmhub-root -U 564d4842-0000-4000-8000-000000000002 \
        -E "offset=$((ROOT_START * 512)),nodiscard,root_owner=0:0" -d "$work/root" \
        "$img" $((ROOT_SECTORS / 2))k

    # Check the pieces did not overwrite one another.
    truncate -s $((DISK_SECTORS * 512)) "$img" # mke2fs may not leave it at size
    [ "$(stat -c %s "$img")" = $((DISK_SECTORS * 512)) ] || die "image has the wrong size"
    sfdisk -d "$img" 2>/dev/null | grep -q "start= *$ROOT_START, size= *$ROOT_SECTORS" ||
        die "partition table damaged"
    mdir -i "$img@@$((BOOT_START * 512))" -a -b ::/ | grep -qi 'ldlinux.sys' ||
        die "syslinux is missing from the FAT partition"
    dd if="$img" of="$work/root.img" bs=512 skip="$ROOT_START" count="$ROOT_SECTORS" status=none
    [ "$(debugfs -R 'cat /marker.txt' "$work/root.img" 2>/dev/null)" = "$marker" ] ||
        die "marker.txt not readable back from the ext4 partition"

    mv "$img" "$out/tiny.raw"
    img=""
    cat >"$out/tiny.env" <<EOF
TINY_IMAGE='$out/tiny.raw'
TINY_MARKER='${marker//\'/\'\\\'\'}'
TINY_KERNEL='$kver'
TINY_BOOT_OFFSET=$((BOOT_START * 512))
TINY_BOOT_SIZE=$((BOOT_SECTORS * 512))
TINY_ROOT_OFFSET=$((ROOT_START * 512))
TINY_ROOT_SIZE=$((ROOT_SECTORS * 512))
EOF
    echo "tiny-machine.sh: built $out/tiny.raw (Linux $kver, marker '$marker')" >&2
}

case ${1:-} in
-h | --help) usage; exit 0 ;;
--boot)
    [ $# -eq 2 ] || { usage >&2; exit 2; }
    boot_and_check "$2"
    ;;
"" | -*) usage >&2; exit 2 ;;
*)
    [ $# -le 2 ] || { usage >&2; exit 2; }
    build "$1" "${2:-${VMHUB_MARKER:-hello}}"
    ;;
esac
