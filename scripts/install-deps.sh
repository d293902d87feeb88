#!/usr/bin/env bash
# Installs every Debian package that tandem's build, demo and tests rely on, on a fresh Debian 12
# machine. Each package is checked by name with dpkg-query (not by the presence of a command: a
# command can be there while a package the build needs is not, as libprotobuf-dev's .proto files
# were). Idempotent and quiet when everything is there; uses sudo when not root.
#
#   scripts/install-deps.sh            install what is missing
#   scripts/install-deps.sh --list     print the package list, one per line
#   scripts/install-deps.sh --check    exit 1 (naming them) if any package is missing
set -euo pipefail

PACKAGES=(
  # build: etcd-client's build script runs protoc, which imports google/protobuf/*.proto
  protobuf-compiler libprotobuf-dev build-essential pkg-config
  # etcd server and etcdctl
  etcd-server etcd-client
  # PostgreSQL server binaries (/usr/lib/postgresql/15/bin) and psql
  postgresql-15 postgresql-client-15
  # the patronictl compatibility test: HAProxy (the seed's router), Patroni from PyPI in a venv
  # (its certificates come from tandem certs)
  haproxy python3 python3-venv ca-certificates
  # multi-host tests: network namespaces, packet drops, VRRP peers
  iproute2 nftables keepalived
  # bench/chaos: NFQUEUE rule for the slow-link fault (iptables), the leader's clock steps
  # (libfaketime), running the lab as an unprivileged user (setpriv, util-linux)
  iptables faketime util-linux
  # the demo creates an unprivileged user to run PostgreSQL (useradd)
  passwd
  # CI's fresh-machine check (scripts/fresh-root-check.sh: debootstrap, git archive)
  debootstrap git
)

installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = "installed" ]
}

case "${1:-}" in
  --list) printf '%s\n' "${PACKAGES[@]}"; exit 0 ;;
  --check|"") ;;
  *) echo "usage: $0 [--list|--check]" >&2; exit 2 ;;
esac

missing=()
for p in "${PACKAGES[@]}"; do
  installed "$p" || missing+=("$p")
done

if [ "${1:-}" = "--check" ]; then
  if [ ${#missing[@]} -gt 0 ]; then
    echo "missing packages: ${missing[*]}" >&2
    exit 1
  fi
  exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  still=()
  for p in "${missing[@]}"; do installed "$p" || still+=("$p"); done
  if [ ${#still[@]} -gt 0 ]; then
    echo "apt-get did not install: ${still[*]}" >&2
    exit 1
  fi
fi
# A system etcd started by the package would hold port 2379; tandem starts its own etcd.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  $SUDO systemctl disable --now etcd || true
fi
# Nor should a packaged HAProxy run: the tests start their own, in the foreground.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet haproxy 2>/dev/null; then
  $SUDO systemctl disable --now haproxy || true
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust from https://rustup.rs (or Debian's cargo package)" >&2
  exit 1
fi
