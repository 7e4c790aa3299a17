#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property, interop and crash tests.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --release --locked
cargo nextest run --workspace --release --locked --no-fail-fast
