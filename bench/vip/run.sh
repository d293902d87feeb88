#!/usr/bin/env bash
# Takeover benchmark: tandem vip vs keepalived, three routers + a client in network namespaces,
# the seed's VRRP settings (v2, auth PASS, VRID 51, priorities 100/90/80, advert_int 1).
# Prints a Markdown table (median and max over VIP_BENCH_RUNS runs, default 10).
# Needs root, iproute2 and keepalived (apt-get install -y keepalived). Takes ~5 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ]; then echo "bench/vip: run as root (network namespaces)" >&2; exit 1; fi
command -v keepalived >/dev/null || { echo "bench/vip: keepalived is not installed" >&2; exit 1; }
export VIP_BENCH_RUNS="${VIP_BENCH_RUNS:-10}"
cargo test -p tandem-vip --test bench -- --ignored --nocapture --test-threads=1 takeover_bench
