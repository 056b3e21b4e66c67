#!/bin/sh
# Installs the Debian packages basrec needs to build and test, if missing.
# Usage: scripts/install-deps.sh [--dev]   (--dev adds valgrind for the CI checks
# and wrk for the service's load test, tests/serve_test.sh --load)
set -e
# libmicrohttpd: basrec serve; curl: the service's tests.
pkgs="gcc make pkg-config libopenblas-openmp-dev libjansson-dev libcmocka-dev libmicrohttpd-dev curl"
[ "${1:-}" = "--dev" ] && pkgs="$pkgs valgrind wrk"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing
