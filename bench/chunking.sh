#!/usr/bin/env bash
# Measures the machine library's chunk sizes on two versions of a real Debian 12
# filesystem: how much of the second version is new to a library that holds the
# first, against how many blobs (one HTTP request each on push/pull) and how
# many manifest bytes each chunk size costs. Needs no root; the only network
# use is `apt-get download` of the Debian packages below.
#
# Usage: bench/chunking.sh [WORKDIR]
#
#   WORKDIR   where to put the scratch directory (default: $BENCH_DIR, else
#             $TMPDIR or /tmp); removed at the end. Needs about 6 GiB free.
#
# Environment:
#   DEBS=dir        keep the downloaded packages in dir (and reuse them next
#                   time) instead of the scratch directory
#   SIZE=2G         size of the ext4 images
#   VARIANTS="inplace fresh"   which v2 to measure (see below)
#   SPECS="..."     chunk sizes passed to the example (MIN/AVG/MAX or fixed:SIZE)
#
# The images (raw, ext4 at sector 0, same UUID and hash seed):
#   v1   `mke2fs -t ext4 -d ROOT1`, ROOT1 being $BASE, $PINNED and the older
#        version of $UPGRADED, unpacked with `dpkg-deb -x` (about 1 GiB).
#   v2   ROOT2 = ROOT1 with $UPGRADED replaced by their current versions (the
#        old version's files removed first, as dpkg would), $ADDED unpacked,
#        and a few configuration files edited (hostname, a user, sshd_config).
#        "inplace": a copy of v1.raw changed with `debugfs -w` (rm, mkdir,
#        write, symlink for every path that differs between ROOT1 and ROOT2),
#        as when an installed system is updated: unchanged files keep their
#        blocks. "fresh": `mke2fs -d ROOT2`, a new layout of the same files.
# Both are then measured by crates/store/examples/chunking.rs, which imports
# v1 and v2 into a fresh library per chunk size with the real import code
# (see its header for the columns). About 15 minutes on 2 CPUs.
#
# The package versions are pinned to what bookworm, bookworm-updates and
# bookworm-security offered on 2026-11-24; when apt stops offering one, the
# script says which and the lists below need new versions.
set -euo pipefail

SIZE=${SIZE:-2G}
VARIANTS=${VARIANTS:-inplace fresh}
SPECS=${SPECS:-8K/32K/128K 16K/64K/256K 32K/128K/512K 64K/256K/1M 96K/384K/1536K 128K/512K/2M 192K/768K/3M 256K/1M/4M fixed:64K}
export PATH="$PATH:/usr/sbin:/sbin"

# Unchanged between v1 and v2 (current versions).
BASE="bash coreutils dash diffutils findutils grep gzip sed tar hostname login
passwd dpkg busybox vim-tiny vim-common procps iproute2 less htop e2fsprogs
libsqlite3-0 libstdc++6 libgcc-s1 zlib1g libzstd1 libselinux1 libgnutls30
libkrb5-3 libgssapi-krb5-2 linux-image-6.1.0-54-amd64"
# Unchanged between v1 and v2, pinned.
PINNED="perl=5.36.0-7+deb12u4 perl-base=5.36.0-7+deb12u4
perl-modules-5.36=5.36.0-7+deb12u4 libperl5.36=5.36.0-7+deb12u4
git=1:2.39.5-0+deb12u3 git-man=1:2.39.5-0+deb12u3 curl=7.88.1-10+deb12u15
libcurl4=7.88.1-10+deb12u15 apt=2.6.1 libapt-pkg6.0=2.6.1
sudo=1.9.13p3-1+deb12u4 libxml2=2.9.14+dfsg-1.3~deb12u6
liblzma5=5.4.1-1+deb12u2 libpcre2-8-0=10.42-1+deb12u2
ca-certificates=20250419~deb12u2"
# Upgraded in v2: "package=old=new".
UPGRADED="libc6=2.36-9+deb12u7=2.36-9+deb12u14 libc-bin=2.36-9+deb12u7=2.36-9+deb12u14
locales=2.36-9+deb12u7=2.36-9+deb12u14
libssl3=3.0.17-1~deb12u2=3.0.22-1~deb12u2 openssl=3.0.17-1~deb12u2=3.0.22-1~deb12u2
python3.11=3.11.2-6+deb12u8=3.11.2-6+deb12u9
python3.11-minimal=3.11.2-6+deb12u8=3.11.2-6+deb12u9
libpython3.11-minimal=3.11.2-6+deb12u8=3.11.2-6+deb12u9
libpython3.11-stdlib=3.11.2-6+deb12u8=3.11.2-6+deb12u9
systemd=252.38-1~deb12u1=252.39-1~deb12u2 libsystemd0=252.38-1~deb12u1=252.39-1~deb12u2
libsystemd-shared=252.38-1~deb12u1=252.39-1~deb12u2 libudev1=252.38-1~deb12u1=252.39-1~deb12u2
udev=252.38-1~deb12u1=252.39-1~deb12u2 systemd-timesyncd=252.38-1~deb12u1=252.39-1~deb12u2
tzdata=2025b-0+deb12u1=2026f-0+deb12u1
openssh-client=1:9.2p1-2+deb12u7=1:9.2p1-2+deb12u10
openssh-server=1:9.2p1-2+deb12u7=1:9.2p1-2+deb12u10
openssh-sftp-server=1:9.2p1-2+deb12u7=1:9.2p1-2+deb12u10"
# Installed in v2 only.
ADDED="nginx-light nginx-common rsync jq libjq1 libonig5"

repo=$(cd "$(dirname "$0")/.." && pwd)
for tool in apt-get apt-cache dpkg-deb tar mke2fs debugfs e2fsck python3 cargo; do
    command -v "$tool" >/dev/null || { echo "chunking.sh: $tool is required (scripts/deps.sh installs it)" >&2; exit 1; }
done
ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 ||
    { echo "chunking.sh: apt has no package lists; run 'apt-get update' once" >&2; exit 1; }

parent=${1:-${BENCH_DIR:-${TMPDIR:-/tmp}}}
mkdir -p "$parent"
work=$(mktemp -d "$(cd "$parent" && pwd)/vmhub-chunking-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
debs=${DEBS:-$work/debs}
mkdir -p "$debs"
debs=$(cd "$debs" && pwd)
cd "$work"

target=${CARGO_TARGET_DIR:-$repo/target}
[[ $target = /* ]] || target=$repo/$target
echo "building the example ..." >&2
(cd "$repo" && cargo build --release -p store --example chunking --quiet)
example=$target/release/examples/chunking

# The .deb of package $1 at version $2 (downloaded once into $debs).
deb() {
    local name=$1 ver=$2 file
    file=$debs/${name}_${ver//:/%3a}_$(apt-cache show "$name=$ver" 2>/dev/null | awk '/^Architecture:/ {print $2; exit}').deb
    if [[ ! -s $file ]]; then
        apt-cache show "$name=$ver" >/dev/null 2>&1 ||
            { echo "chunking.sh: apt offers no $name $ver; update the lists in the script" >&2; return 1; }
        (cd "$debs" && apt-get download -q "$name=$ver" >/dev/null 2>&1) ||
            { echo "chunking.sh: apt-get download $name=$ver failed" >&2; return 1; }
        [[ -s $file ]] || { echo "chunking.sh: downloaded $name $ver but $file is missing" >&2; return 1; }
    fi
    echo "$file"
}
current() { apt-cache policy "$1" | awk '/Candidate:/ {print $2}'; }

echo "downloading and unpacking the packages ..." >&2
mkdir root1
n1=0
for p in $BASE $ADDED; do
    [[ -n $(current "$p") && $(current "$p") != "(none)" ]] ||
        { echo "chunking.sh: apt knows no package $p" >&2; exit 1; }
done
for p in $BASE; do
    dpkg-deb -x "$(deb "$p" "$(current "$p")")" root1; n1=$((n1 + 1))
done
for pv in $PINNED; do
    dpkg-deb -x "$(deb "${pv%%=*}" "${pv#*=}")" root1; n1=$((n1 + 1))
done
for u in $UPGRADED; do
    # Versions hold no '=': the package is before the first, the old version
    # between the two.
    name=${u%%=*}; old=${u#*=}; old=${old%=*}
    dpkg-deb -x "$(deb "$name" "$old")" root1; n1=$((n1 + 1))
done

echo "making ROOT2 ..." >&2
cp -a root1 root2
for u in $UPGRADED; do
    name=${u%%=*}; rest=${u#*=}; new=${rest##*=}; old=${rest%=*}
    olddeb=$(deb "$name" "$old")
    # Remove the old version's files (not folders) before unpacking the new.
    dpkg-deb --fsys-tarfile "$olddeb" | tar -t | grep -v '/$' | sed 's|^\./||' |
        while IFS= read -r f; do rm -f "root2/$f"; done
    dpkg-deb -x "$(deb "$name" "$new")" root2
done
for p in $ADDED; do
    dpkg-deb -x "$(deb "$p" "$(current "$p")")" root2
done
mkdir -p root2/etc/ssh
echo "vmhub-test-v2" >root2/etc/hostname
echo "builder:x:1001:1001:Build user:/home/builder:/bin/bash" >>root2/etc/passwd
printf 'PasswordAuthentication no\nPermitRootLogin prohibit-password\n' >>root2/etc/ssh/sshd_config
mkdir -p root2/home/builder
date -u -d 2026-11-24 >root2/home/builder/.provisioned

uuid=6d0f6a40-6a0e-4d2b-9b43-7c0e1e2c2b11
mkfs() { # ROOT IMAGE
    mke2fs -q -F -t ext4 -U "$uuid" -E hash_seed=$uuid,root_owner=0:0 -d "$1" "$2" "$SIZE" >/dev/null
}
echo "making the images ..." >&2
mkfs root1 v1.raw

# The debugfs commands that turn ROOT1's image into ROOT2's.
python3 - root1 root2 >update.cmds 2>skipped.txt <<'EOF'
import os, stat, sys
a, b = sys.argv[1], sys.argv[2]
def walk(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = os.lstat(p)
    return out
A, B = walk(a), walk(b)
def same(p):
    sa, sb = A[p], B[p]
    if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
        return False
    if stat.S_ISLNK(sa.st_mode):
        return os.readlink(os.path.join(a, p)) == os.readlink(os.path.join(b, p))
    if stat.S_ISDIR(sa.st_mode):
        return True
    if sa.st_size != sb.st_size:
        return False
    with open(os.path.join(a, p), "rb") as fa, open(os.path.join(b, p), "rb") as fb:
        return fa.read() == fb.read()
ok = lambda p: not any(c in p for c in ' "\'\\\t\n')
cmds = []
gone = sorted((p for p in A if p not in B or not same(p)), key=lambda p: -p.count("/"))
for p in gone:
    if not ok(p):
        print("skipped", p, file=sys.stderr); continue
    if stat.S_ISDIR(A[p].st_mode):
        if p not in B or not stat.S_ISDIR(B[p].st_mode):
            cmds.append(f"rmdir /{p}")
    else:
        cmds.append(f"rm /{p}")
for p in sorted(B, key=lambda p: (p.count("/"), p)):
    if p in A and same(p):
        continue
    if not ok(p):
        print("skipped", p, file=sys.stderr); continue
    m = B[p].st_mode
    if stat.S_ISDIR(m):
        if p not in A or not stat.S_ISDIR(A[p].st_mode):
            cmds.append(f"mkdir /{p}")
    elif stat.S_ISLNK(m):
        cmds.append(f"symlink /{p} {os.readlink(os.path.join(b, p))}")
    elif stat.S_ISREG(m):
        cmds.append(f"write {os.path.join(b, p)} /{p}")
print("\n".join(cmds))
EOF
if grep -q . skipped.txt; then
    echo "note: $(wc -l <skipped.txt) paths with blanks or quotes left out of the in-place update" >&2
fi
changed=$(grep -c '^write ' update.cmds || true)
cp --sparse=always v1.raw v2-inplace.raw
debugfs -w -f update.cmds v2-inplace.raw >debugfs.log 2>&1
# debugfs echoes each command as "debugfs: ..."; anything else but
# "Allocated inode" is a complaint.
if grep -v -e '^debugfs ' -e '^debugfs: ' -e '^Allocated inode' debugfs.log | grep -q .; then
    echo "chunking.sh: debugfs failed to update v2-inplace.raw:" >&2
    grep -v -e '^debugfs ' -e '^debugfs: ' -e '^Allocated inode' debugfs.log | head -5 >&2
    exit 1
fi
e2fsck -fn v2-inplace.raw >e2fsck.log 2>&1 ||
    { echo "chunking.sh: e2fsck finds v2-inplace.raw damaged:" >&2; tail -5 e2fsck.log >&2; exit 1; }
mkfs root2 v2-fresh.raw

mib() { echo $(($(du -sb "$1" | cut -f1) >> 20)); }
echo "# vmhub chunk-size benchmark"
echo "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "host:     $(nproc) CPUs, kernel $(uname -r)"
echo "vmhub:    source $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "tools:    $(mke2fs -V 2>&1 | head -1)"
echo "load:     $(uptime | sed 's/.*load average/load average/')"
echo "ROOT1:    $n1 packages, $(mib root1) MiB in $(find root1 | wc -l) paths"
echo "ROOT2:    $(echo $UPGRADED | wc -w) upgraded, $(echo $ADDED | wc -w) added, 4 files edited;" \
     "$(mib root2) MiB; $changed files written in place"
echo "images:   raw ext4 of $SIZE"
echo

for v in $VARIANTS; do
    case $v in
        inplace|fresh) ;;
        *) echo "chunking.sh: unknown variant $v (inplace or fresh)" >&2; exit 1 ;;
    esac
    echo "## v2 $v"
    echo
    # shellcheck disable=SC2086
    TMPDIR=$work "$example" v1.raw "v2-$v.raw" $SPECS
    echo
done
