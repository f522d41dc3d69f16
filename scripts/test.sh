#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the end-to-end
# tests that boot real guests. The same command runs in CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "[test] cargo fmt --check"
cargo fmt --all -- --check

echo "[test] cargo clippy"
cargo clippy --release --locked --workspace --all-targets -- -D warnings

echo "[test] building binaries and guest images"
cargo build --release --locked --workspace --bins
target/release/nimbus image build

echo "[test] cargo test (unit + end-to-end with real guests; about 15 minutes on 2 cores)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
NIMBUS_BIN_DIR="$PWD/target/release" cargo test --release --locked --workspace -- --test-threads=4 2>&1 |
  tee "$log"

# One closing line over all test binaries (cargo prints one per binary, the
# last ones being empty doc-test runs).
awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "summary: %d passed, %d failed\n", passed, failed }' "$log"
