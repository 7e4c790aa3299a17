#!/usr/bin/env bash
# Installs the peers the test suite checks vmhub against, when they are missing:
# qemu-img/qemu-io (qemu-utils, expected present) and vhdiinfo (libvhdi-utils).
set -euo pipefail

need=()
command -v vhdiinfo >/dev/null 2>&1 || need+=(libvhdi-utils)
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
command -v qemu-io >/dev/null 2>&1 || need+=(qemu-utils)

if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "deps.sh: missing ${need[*]}; run as root or install them" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # --no-upgrade keeps the installed qemu-utils (10.x from backports) untouched.
    apt-get install -y -qq --no-upgrade "${need[@]}" >/dev/null
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install --locked cargo-nextest
fi
