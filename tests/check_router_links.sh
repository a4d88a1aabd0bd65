#!/usr/bin/env bash
# Fails if the scrollback-router binary given as $1 links RocksDB (a shared library) or carries
# any engine or storage-node code (static libraries: looked for by symbol).
set -euo pipefail
binary=$1
if ldd "$binary" | grep -i rocksdb; then
  echo "FAIL: $binary links RocksDB" >&2
  exit 1
fi
if nm -C "$binary" | grep -E 'scrollback::(ShardStore|StorageNode|FanOutWorker)'; then
  echo "FAIL: $binary contains engine or storage-node code" >&2
  exit 1
fi
echo "ok: $binary links neither RocksDB nor the engine"
