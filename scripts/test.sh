#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, and runs every test.
#   1. scripts/setup.sh: Debian packages, then a RelWithDebInfo build in build/.
#   2. ctest in build/: every test.
#   3. The Node.js client (clients/node): built from the schema, its example run against a
#      local cluster (scrollback-local).
#   4. An AddressSanitizer + UndefinedBehaviorSanitizer build in build-asan/ (no benchmarks),
#      and every test again under it.
# Set SKIP_SANITIZE=1 to stop after step 3 (quicker local runs).
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds the Node.js client (schema -> TypeScript -> JavaScript; its npm packages were installed
# by setup.sh) and runs its example against a scrollback-local started on a port the system
# picks, which it prints. The cluster is stopped, and its data removed, however this ends.
node_client_test() (
  set -euo pipefail
  (cd clients/node && npm run --silent build)
  local tmp pid addr example=""
  tmp=$(mktemp -d)
  build/cluster/scrollback-local --listen 127.0.0.1:0 --data-dir "$tmp/data" >"$tmp/local.log" 2>&1 &
  pid=$!
  # shellcheck disable=SC2317  # Called by the trap.
  stop_local() {
    local status=$?
    [ -z "$example" ] || kill -TERM "$example" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ "$status" -ne 0 ]; then echo "-- scrollback-local log:"; tail -n 40 "$tmp/local.log"; fi
    rm -rf "$tmp"
  }
  trap stop_local EXIT
  trap 'exit 1' INT TERM  # Runs the EXIT trap on Ctrl-C or kill too.
  # It prints "ChatStore API (...) on HOST:PORT (router)." once the router listens.
  for _ in $(seq 1 300); do
    addr=$(sed -n 's/^ChatStore API .* on \([0-9.]*:[0-9]*\) (router)\.$/\1/p' "$tmp/local.log")
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || { echo "scrollback-local exited before listening"; exit 1; }
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "scrollback-local printed no router address in 30 s"; exit 1; }
  # The example bounds itself to 30 s; the timeout is a second guard. Waited for in the
  # background so that a signal to this script ends it at once, through the traps.
  timeout 60 node clients/node/dist/example.js "$addr" &
  example=$!
  wait "$example"
)

start=$(date +%s)
scripts/setup.sh

jobs=$(nproc)
echo "== tests (build/)"
ctest --test-dir build --output-on-failure --timeout 300 -j "$jobs"

echo "== node client (clients/node example against scrollback-local)"
set +e
node_client_test
node_status=$?
set -e
if [ "$node_status" -eq 0 ]; then
  echo "node client: 1 passed, 0 failed"
else
  echo "node client: 0 passed, 1 failed"
  exit 1
fi

if [ "${SKIP_SANITIZE:-0}" != "1" ]; then
  echo "== tests under ASan + UBSan (build-asan/)"
  if [ ! -f build-asan/build.ninja ]; then
    cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DSCROLLBACK_SANITIZE=ON \
      -DSCROLLBACK_BUILD_BENCH=OFF
  fi
  cmake --build build-asan
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure --timeout 600 -j "$jobs"
fi
echo "== all tests passed in $(( $(date +%s) - start ))s"
