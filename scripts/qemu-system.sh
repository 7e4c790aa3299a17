#!/usr/bin/env bash
# Installs qemu-system-x86_64 from Debian's <codename>-backports suite, so that
# it matches the qemu-utils 10.x already installed from there.
#
# Why not plain `apt-get install qemu-system-x86`: the stable suite carries an
# older QEMU, and installing its qemu-system-x86 pulls qemu-system-common of
# that older version, which makes apt replace qemu-utils 10.x by the old one.
# The test suite needs qemu-img/qemu-io 10.x.
#
# The backports suite is not in the machine's apt sources, and this script does
# not change them: it writes a private sources list (the machine's own Debian
# mirror URIs, plus the backports suite on the main archive's URI) and private
# package lists in a temporary directory, and points apt-get at those only.
#
# Needs root (apt-get install). Does nothing if qemu-system-x86_64 is present,
# unless --force is given.
set -euo pipefail

die() { echo "qemu-system.sh: $*" >&2; exit 1; }

if [ "${1:-}" != "--force" ] && command -v qemu-system-x86_64 >/dev/null 2>&1; then
    exit 0
fi
[ "$(id -u)" = 0 ] || die "qemu-system-x86_64 is missing; run this as root to install it"
command -v apt-get >/dev/null 2>&1 || die "apt-get not found (a Debian system is expected)"

codename=""
if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
fi
[ -n "$codename" ] || die "cannot tell the Debian codename from /etc/os-release"

# Print "URI SUITE SIGNED-BY" for every binary ("deb") source of this Debian
# release (suites CODENAME, CODENAME-updates, CODENAME-security), read from the
# deb822 *.sources files and the one-line *.list files. SIGNED-BY is "-" when
# the entry names no key.
debian_sources() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk -v cn="$codename" '
            function flush(   i, j, nu, ns, u, s) {
                if (types ~ /(^| )deb( |$)/ && enabled != "no") {
                    nu = split(uris, u, " "); ns = split(suites, s, " ")
                    for (i = 1; i <= nu; i++)
                        for (j = 1; j <= ns; j++)
                            if (s[j] ~ ("^" cn "(-updates|-security)?$"))
                                print u[i], s[j], (key == "" ? "-" : key)
                }
                types = ""; uris = ""; suites = ""; key = ""; enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            {
                field = tolower($1); sub(/:$/, "", field)
                $1 = ""; sub(/^[ \t]+/, "")
                if (field == "types") types = $0
                else if (field == "uris") uris = $0
                else if (field == "suites") suites = $0
                else if (field == "signed-by") key = $0
                else if (field == "enabled") enabled = tolower($0)
            }
            END { flush() }
        ' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        awk -v cn="$codename" '
            $1 != "deb" { next }
            {
                key = "-"; i = 2
                if ($2 ~ /^\[/) {
                    # Options in brackets: keep signed-by, skip the rest.
                    while (i <= NF) {
                        opt = $i; gsub(/[\[\]]/, "", opt)
                        if (opt ~ /^signed-by=/) { key = opt; sub(/^signed-by=/, "", key) }
                        if ($i ~ /\]$/) { i++; break }
                        i++
                    }
                }
                uri = $i; suite = $(i + 1)
                if (suite ~ ("^" cn "(-updates|-security)?$")) print uri, suite, key
            }
        ' "$f"
    done
}

mapfile -t entries < <(debian_sources | awk '!seen[$0]++')
[ ${#entries[@]} -gt 0 ] || die "no Debian '$codename' source found in /etc/apt/sources.list{,.d}"

# The main archive is the one that carries the plain CODENAME suite.
main_uri=""
main_key="-"
for e in "${entries[@]}"; do
    read -r uri suite key <<<"$e"
    if [ "$suite" = "$codename" ]; then
        main_uri=$uri
        main_key=$key
        break
    fi
done
[ -n "$main_uri" ] || die "no source for the '$codename' suite itself; cannot tell the main archive's URI"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# apt downloads as the unprivileged _apt user: let it into the private lists.
chmod 0755 "$work"
mkdir -p "$work/lists/partial"
if id _apt >/dev/null 2>&1; then
    chown -R _apt:root "$work/lists"
fi

line() { # URI SUITE KEY
    if [ "$3" = "-" ]; then
        echo "deb $1 $2 main"
    else
        echo "deb [signed-by=$3] $1 $2 main"
    fi
}
{
    for e in "${entries[@]}"; do
        read -r uri suite key <<<"$e"
        line "$uri" "$suite" "$key"
    done
    line "$main_uri" "$codename-backports" "$main_key"
} >"$work/sources.list"

apt_opts=(
    -o "Dir::Etc::sourcelist=$work/sources.list"
    -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache::pkgcache="
    -o "Dir::Cache::srcpkgcache="
)

before=""
if command -v qemu-img >/dev/null 2>&1; then
    before=$(qemu-img --version | head -n1)
fi

export DEBIAN_FRONTEND=noninteractive
echo "qemu-system.sh: installing qemu-system-x86 from $main_uri $codename-backports" >&2
apt-get "${apt_opts[@]}" update -qq
apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends \
    -t "$codename-backports" qemu-system-x86 qemu-system-data seabios >/dev/null

command -v qemu-system-x86_64 >/dev/null 2>&1 || die "qemu-system-x86_64 still missing after the install"
echo "qemu-system.sh: $(qemu-system-x86_64 --version | head -n1)" >&2

if [ -n "$before" ]; then
    after=$(qemu-img --version 2>/dev/null | head -n1 || true)
    if [ "$after" != "$before" ]; then
        die "qemu-img changed from '$before' to '${after:-nothing}'"
    fi
    echo "qemu-system.sh: qemu-img unchanged: $after" >&2
fi
