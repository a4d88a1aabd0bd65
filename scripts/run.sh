#!/usr/bin/env bash
# The README's main command: builds what is missing, then starts a local Scrollback cluster on
# the embedded default — one process (scrollback-local), 3 storage nodes, 16 shards, a router —
# listening on 127.0.0.1, and serves until interrupted (Ctrl-C).
#
#   scripts/run.sh                 embedded: one process (arguments go to scrollback-local)
#   scripts/run.sh --etcd          etcd, 3 scrollbackd processes and a scrollback-router
#
# Environment: LISTEN (router address, default 127.0.0.1:7600).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null

if [ "${1:-}" = "--etcd" ]; then
  shift
  exec scripts/run-etcd-cluster.sh "$@"
fi
exec build/cluster/scrollback-local --listen "${LISTEN:-127.0.0.1:7600}" "$@"
