#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, and runs every test.
#   1. scripts/setup.sh: Debian packages, then a RelWithDebInfo build in build/.
#   2. ctest in build/: every test.
#   3. An AddressSanitizer + UndefinedBehaviorSanitizer build in build-asan/ (no benchmarks),
#      and every test again under it.
# Set SKIP_SANITIZE=1 to stop after step 2 (quicker local runs).
set -euo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
scripts/setup.sh

jobs=$(nproc)
echo "== tests (build/)"
ctest --test-dir build --output-on-failure --timeout 300 -j "$jobs"

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
