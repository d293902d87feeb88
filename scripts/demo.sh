#!/usr/bin/env bash
# Starts a local demonstration cluster: etcd (3 members), three PostgreSQL servers each under a
# tandem agent, and a tandem proxy router (DIR/router.yml), on loopback. Stop it with: target/release/tandem demo down
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release -p tandem
exec target/release/tandem demo up "$@"
