#!/usr/bin/env bash
# Builds vmhub and shows its VHD toolkit at work on a scratch folder.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p vmhub
vmhub=$PWD/target/release/vmhub
work=${1:-$(mktemp -d)}
mkdir -p "$work"
cd "$work"
rm -f disk.vhd disk.raw disk-fixed.vhd
"$vmhub" img create disk.vhd 4G
"$vmhub" img info disk.vhd
"$vmhub" img convert disk.vhd disk-fixed.vhd --type fixed
"$vmhub" img check disk-fixed.vhd
"$vmhub" img compare disk.vhd disk-fixed.vhd
echo "images are in $work"
