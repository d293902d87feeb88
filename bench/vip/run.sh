#!/usr/bin/env bash
# tandem vip benchmarks in network namespaces. Each prints a Markdown table (median and max over
# VIP_BENCH_RUNS runs, default 10). Needs root and iproute2.
#
#   bench/vip/run.sh            takeover: tandem vip vs keepalived, three routers + a client, the
#                               seed's VRRP settings (v2, auth PASS, VRID 51, priorities 100/90/80,
#                               advert_int 1); needs keepalived. ~5 minutes.
#   bench/vip/run.sh router     track_router: the Master's router /ready turns to 503 (interval 1,
#                               fall 2) → VIP on the Backup, client answered. ~1 minute.
#   bench/vip/run.sh leader     leader mode: leader key changed in etcd → VIP on the new leader's
#                               host, client answered; needs etcd (apt-get install etcd-server).
#   bench/vip/run.sh all        the three.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ]; then echo "bench/vip: run as root (network namespaces)" >&2; exit 1; fi
export VIP_BENCH_RUNS="${VIP_BENCH_RUNS:-10}"
what="${1:-takeover}"
takeover() {
    command -v keepalived >/dev/null || { echo "bench/vip: keepalived is not installed" >&2; exit 1; }
    cargo test -p tandem-vip --test bench -- --ignored --nocapture --test-threads=1 takeover_bench
}
router() {
    cargo test -p tandem-vip --test bench -- --ignored --nocapture --test-threads=1 router_readiness_bench
}
leader() {
    command -v etcd >/dev/null || { echo "bench/vip: etcd is not installed" >&2; exit 1; }
    cargo test -p tandem --test vip_leader -- --ignored --nocapture --test-threads=1 leader_bench
}
case "$what" in
    takeover) takeover ;;
    router) router ;;
    leader) leader ;;
    all) takeover; router; leader ;;
    *) echo "usage: bench/vip/run.sh [takeover|router|leader|all]" >&2; exit 2 ;;
esac
