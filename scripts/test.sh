#!/usr/bin/env bash
# Runs the whole test suite: unit tests of the pure core and the adapters, then the integration
# tests on real etcd and real PostgreSQL (one at a time: each runs a three-node cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --workspace --all-targets
cargo test --workspace --lib --bins
cargo test --workspace --no-fail-fast --test '*' -- --test-threads=1
