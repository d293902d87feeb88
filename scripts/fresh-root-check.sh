#!/usr/bin/env bash
# Proves that README command 1 works on a machine that has never seen the project: builds a
# minimal Debian 12 root with debootstrap (from the package source apt uses here), copies the
# committed tree into it, and inside it runs `scripts/demo.sh` (install-deps, release build,
# `tandem demo up`), checks the cluster answers through the router, then `tandem demo down`.
# Nothing from this machine's packages reaches the root; only the Rust toolchain (~/.rustup,
# ~/.cargo) is bind-mounted. Prints the time each stage took. Needs root.
#
#   scripts/fresh-root-check.sh          (KEEP_ROOT=1 keeps the root for inspection)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
[ "$(id -u)" = 0 ] || { echo "fresh-root-check: needs root (debootstrap, chroot, mounts)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "fresh-root-check: debootstrap is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }

# The mirror apt uses here (deb822 or one-line format).
mirror=$(sed -n 's/^URIs: *\([^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
[ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $2 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
[ -n "$mirror" ] || { echo "fresh-root-check: cannot find the Debian mirror apt uses" >&2; exit 1; }

root=$(mktemp -d /var/tmp/tandem-fresh-root.XXXXXX)
chmod 755 "$root" # "/" of a real machine; mktemp made it 0700
mounts=()
cleanup() {
  rc=$?
  # Stop, by PID, every process whose root directory is the fresh root (what the demo left).
  for p in /proc/[0-9]*; do
    if [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ]; then kill -KILL "${p#/proc/}" 2>/dev/null || true; fi
  done
  for ((i=${#mounts[@]}-1; i>=0; i--)); do
    if mountpoint -q "${mounts[$i]}"; then umount -l "${mounts[$i]}" || echo "cannot unmount ${mounts[$i]}" >&2; fi
  done
  rm -f "$root.debootstrap.log"
  # Never remove while anything is still mounted below the root (the toolchain is bind-mounted).
  if awk -v r="$root/" 'index($5 "/", r) == 1 {found=1} END {exit !found}' /proc/self/mountinfo; then
    echo "fresh-root-check: mounts remain under $root; not removing it" >&2
  elif [ "${KEEP_ROOT:-0}" = 1 ]; then
    echo "fresh root kept at $root"
  else
    rm -rf --one-file-system "$root"
  fi
  exit $rc
}
trap cleanup EXIT INT TERM

stage() { printf '%-44s %6ss\n' "$1" "$2"; }
t0=$SECONDS
debootstrap --variant=minbase bookworm "$root" "$mirror" > "$root.debootstrap.log" 2>&1 \
  || { tail -20 "$root.debootstrap.log"; exit 1; }
rm -f "$root.debootstrap.log"
stage "debootstrap (minbase, $mirror)" $((SECONDS - t0))

# The same package sources as this machine (updates and security included); no policy-rc.d
# of ours: package scripts may try to start services and must not break the install.
rm -f "$root/etc/apt/sources.list"
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/"
else
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$mirror" "$mirror" > "$root/etc/apt/sources.list"
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"; chmod 755 "$root/usr/sbin/policy-rc.d"

mkdir -p "$root/root/.cargo" "$root/root/.rustup" "$root/src"
for m in proc sys dev; do
  mounts+=("$root/$m"); mount --rbind "/$m" "$root/$m"; mount --make-rslave "$root/$m"
done
mounts+=("$root/root/.rustup"); mount --bind "$HOME/.rustup" "$root/root/.rustup"
mounts+=("$root/root/.cargo"); mount --bind "$HOME/.cargo" "$root/root/.cargo"
# The committed tree, as a fresh clone would have it.
git -c safe.directory="$repo" -C "$repo" archive --format=tar HEAD | tar -x -C "$root/src" 

in_root() {
  chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb \
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CARGO_TARGET_DIR=/src/target bash -c "cd /src && $1"
}

t=$SECONDS
in_root "scripts/demo.sh --dir /var/tmp/fresh-demo" > "$root/demo.log" 2>&1 || {
  echo "scripts/demo.sh failed in the fresh root; end of its output:"; tail -40 "$root/demo.log"; exit 1; }
stage "scripts/demo.sh (deps + release build + demo up)" $((SECONDS - t))
grep -q "psql" "$root/demo.log" || { echo "the demo printed no psql line:"; tail -40 "$root/demo.log"; exit 1; }
in_root "scripts/install-deps.sh --check"
# The router's read-write listener reaches the leader: the demo's own printed psql line.
line=$(grep -m1 -o 'PGPASSFILE=[^ ]* [^"]*"host=127.0.0.1 port=[0-9]* user=postgres dbname=postgres[^"]*"' "$root/demo.log" || true)
[ -n "$line" ] || { echo "cannot find the demo's psql line:"; tail -40 "$root/demo.log"; exit 1; }
out=$(in_root "$line -Atc 'select not pg_is_in_recovery()'") || { echo "psql through the demo failed: $out"; exit 1; }
[ "$out" = t ] || { echo "the demo's first psql line did not reach a primary: $out"; exit 1; }
in_root "target/release/tandem demo down --dir /var/tmp/fresh-demo" > /dev/null
stage "fresh root: README command 1 works" $((SECONDS - t0))
