#!/bin/sh
# scripts/deps.sh: make sure the Debian packages natwrp needs are installed.
# Idempotent and quick when everything is present. As root it installs what is
# missing with apt-get; otherwise it prints the exact command and exits 1.
set -eu

PKGS="libuv1-dev libwslay-dev libmbedtls-dev node-llhttp pkg-config gcc make curl python3 openssl"

if ! command -v dpkg >/dev/null 2>&1; then
    echo "deps: dpkg not found; this script knows Debian/Ubuntu only." >&2
    echo "deps: install: $PKGS (llhttp C sources: set LLHTTP_DIR=...)" >&2
    exit 1
fi

missing=""
for p in $PKGS; do
    # dpkg -s succeeds for removed-but-configured packages too; check the state.
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    exit 0
fi

echo "deps: missing:$missing"
if [ "$(id -u)" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    # shellcheck disable=SC2086
    apt-get install -y --no-install-recommends $missing
    echo "deps: installed:$missing"
else
    echo "deps: run this, then try again:" >&2
    echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y$missing" >&2
    exit 1
fi
