#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property, interop and crash tests.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The `ci` profile (Cargo.toml): release optimisation without LTO.
cargo build --workspace --profile ci --locked
cargo nextest run --workspace --cargo-profile ci --locked --no-fail-fast
