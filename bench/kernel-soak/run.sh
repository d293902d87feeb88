#!/usr/bin/env bash
# Soak of the kernel forwarding path (docs/proxy.md, "Kernel forwarding", Status): runs the
# stress test `kernel_forwarding_survives_random_stalls` (release build) over and over, in
# interleaved blocks of two variants, and prints how many runs failed in each:
#
#   bounded     the router's default: both sockets of a kernel-forwarded pair get a 128 KiB
#               receive buffer (KERNEL_RCVBUF in crates/tandem/src/proxy/listener.rs)
#   autotuned   TANDEM_TEST_KERNEL_RCVBUF=0: the kernel's receive-buffer autotuning, as before
#               the bound
#
# A failure is the known kernel-path duplicate when its log says "bytes taken from side"
# (caught in flight) or "bytes unaccounted for" (caught at the end); the logs of failed runs are
# kept in the working directory printed at the start.
#
#   sudo bench/kernel-soak/run.sh [MINUTES [BLOCK_SECONDS]]     # defaults: 20 minutes, 60 s
#
# Needs root (BPF) and cargo. ~4-5 runs per second on 2 vCPUs.
set -euo pipefail

minutes=${1:-20}
block=${2:-60}
here=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/tandem-kernel-soak.XXXXXX)
echo "working directory: $work"

cd "$here"
bin=$(cargo test --release -p tandem --lib --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "tandem" and m["profile"]["test"]:
        print(m["executable"])')
[ -x "$bin" ] || { echo "could not build the test binary" >&2; exit 1; }
cp "$bin" "$work/tests"

declare -A runs=([bounded]=0 [autotuned]=0) fails=([bounded]=0 [autotuned]=0)
end=$(($(date +%s) + minutes * 60))
variant=bounded
while [ "$(date +%s)" -lt "$end" ]; do
    stop=$(($(date +%s) + block))
    while [ "$(date +%s)" -lt "$stop" ] && [ "$(date +%s)" -lt "$end" ]; do
        if [ "$variant" = autotuned ]; then
            export TANDEM_TEST_KERNEL_RCVBUF=0
        else
            unset TANDEM_TEST_KERNEL_RCVBUF
        fi
        runs[$variant]=$((runs[$variant] + 1))
        if ! "$work/tests" kernel_forwarding_survives_random_stalls --nocapture \
            >"$work/last.log" 2>&1; then
            fails[$variant]=$((fails[$variant] + 1))
            cp "$work/last.log" "$work/fail-$variant-${runs[$variant]}.log"
        fi
    done
    printf '%s  bounded %d/%d  autotuned %d/%d (failures/runs)\n' "$(date -u +%H:%M:%S)" \
        "${fails[bounded]}" "${runs[bounded]}" "${fails[autotuned]}" "${runs[autotuned]}"
    [ "$variant" = bounded ] && variant=autotuned || variant=bounded
done

echo
echo "| receive buffer | runs | failures | duplicates (\"bytes taken from side\" / \"unaccounted\") |"
echo "| --- | --- | --- | --- |"
for v in bounded autotuned; do
    dup=0
    for f in "$work"/fail-$v-*.log; do
        [ -e "$f" ] && grep -q 'bytes taken from side\|bytes unaccounted for' "$f" && dup=$((dup + 1))
    done
    echo "| $v | ${runs[$v]} | ${fails[$v]} | $dup |"
done
echo "logs of failed runs: $work"
