#!/usr/bin/env bash
# Installs every Debian package that the build, the tests and the scripts need, and the Node.js
# client's npm packages (idempotent; a no-op when all are present), then configures and builds
# Scrollback into build/.
#
# Usage: scripts/setup.sh [--no-build]
# Environment: BUILD_DIR (default build), BUILD_TYPE (default RelWithDebInfo),
#              SANITIZE=1 to configure an ASan+UBSan build instead.
set -euo pipefail
cd "$(dirname "$0")/.."

# One line per need; DESIGN.md lists why each is here.
packages=(
  build-essential cmake ninja-build ccache pkg-config git
  librocksdb-dev            # storage
  capnproto libcapnp-dev    # RPC + schema (the capnp compiler is in capnproto)
  libxxhash-dev             # token hashing
  libboost-dev              # Asio / Beast (HTTP, timers)
  catch2                    # unit tests
  libbenchmark-dev          # micro-benchmarks
  libcli11-dev              # command-line parsing
  libfmt-dev                # formatting
  libspdlog-dev             # logging (passed-in loggers, docs/architecture.md)
  nlohmann-json3-dev        # JSON: the etcd gateway client, shard identity files
  etcd-server etcd-client   # coordination in multi-process mode and its tests
  gnuplot-nox               # scripts/plot-bench.sh
  python3                   # scripts (free ports, benchmark tables)
  gdb                       # tests: thread stacks of a test still running near its timeout
  linux-perf                # scripts/profile-replication.sh
)
# Node.js and npm for the TypeScript client (clients/node), from Debian only when either is
# missing from PATH: a Node.js installed another way (NodeSource's bundles npm) is kept.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  packages+=(nodejs npm)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The Node.js client's packages, at the exact versions of clients/node/package-lock.json. The
# only download: building and running the client afterwards needs no network. Skipped while
# node_modules matches the lock file (npm ci would delete and reinstall it every time).
if [ ! -f clients/node/node_modules/.package-lock.json ] ||
   [ clients/node/package-lock.json -nt clients/node/node_modules/.package-lock.json ]; then
  echo "setup: npm ci in clients/node"
  (cd clients/node && npm ci --no-audit --no-fund)
fi

[ "${1:-}" = "--no-build" ] && exit 0

BUILD_DIR=${BUILD_DIR:-build}
BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo}
extra=()
[ "${SANITIZE:-0}" = "1" ] && extra+=(-DSCROLLBACK_SANITIZE=ON)
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="$BUILD_TYPE" "${extra[@]}"
fi
cmake --build "$BUILD_DIR"
