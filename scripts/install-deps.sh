#!/usr/bin/env bash
# Installs what tandem's build, demo and tests need on a fresh Debian 12 machine:
# protoc (etcd-client's build), etcd (server + etcdctl), PostgreSQL server binaries.
# Idempotent; uses sudo when not root.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
# protoc's well-known types (google/protobuf/*.proto), a recommendation of protobuf-compiler that
# --no-install-recommends leaves out; etcd-client's build imports them.
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  need+=(postgresql)
fi
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
# The patronictl compatibility test: HAProxy (the seed's router), a Python venv for Patroni from
# PyPI, openssl for a throw-away CA.
[ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if ! /usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  need+=(python3 python3-venv)
fi
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v keepalived >/dev/null 2>&1 || need+=(keepalived)
# The partition test cuts a host off with nftables inside its network namespace.
command -v nft >/dev/null 2>&1 || need+=(nftables)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
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
