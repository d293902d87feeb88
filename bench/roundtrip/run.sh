#!/bin/bash
# The round trip a router adds, without PostgreSQL or pgbench in the way: a 64-byte ping-pong
# with an echo server (20,000 per round), directly and through each forwarder, interleaved
# rounds; added = median over rounds of (through the forwarder - direct) in the same round.
#
#   sudo bench/roundtrip/run.sh [ROUNDS]     (default 9; root for tandem's kernel forwarding)
#
# Forwarders: tandem's copy loop (user space) and kernel forwarding (BPF sockhash), each on a
# single-threaded runtime as `tandem proxy` runs by default; HAProxy 2.6 in TCP mode; and the
# floor for a user-space forwarder, a blocking thread per direction in C (fwd.c), also busy
# polling. Every process started is stopped by PID at the end (the test does it).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-9}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gcc -O2 -pthread -o "$tmp/fwd" bench/roundtrip/fwd.c
cat > "$tmp/haproxy.sh" <<'SH'
#!/bin/sh
# HAProxy in TCP mode, one static server, in the foreground: haproxy.sh LISTEN BACKEND
cfg="$(dirname "$0")/haproxy-$1.cfg"   # in the run's temporary directory, removed with it
printf 'global\n    maxconn 1000\ndefaults\n    mode tcp\n    timeout connect 4s\n    timeout client 30m\n    timeout server 30m\nlisten pg\n    bind 127.0.0.1:%s\n    server a 127.0.0.1:%s\n' "$1" "$2" > "$cfg"
exec haproxy -db -f "$cfg"
SH
chmod +x "$tmp/haproxy.sh"
command -v haproxy >/dev/null || { echo "haproxy is missing: scripts/install-deps.sh installs it" >&2; exit 1; }
echo "round trip of a 64-byte ping-pong, $rounds interleaved rounds ($(nproc) CPUs, $(uname -r))"
ROUNDS=$rounds FORWARDERS="haproxy=$tmp/haproxy.sh {listen} {backend};C blocking=$tmp/fwd {listen} {backend};C busy-poll=$tmp/fwd {listen} {backend} spin" \
  cargo test -q --release -p tandem --lib round_trip_experiment -- --ignored --nocapture 2>&1 |
  grep 'round trip median'
