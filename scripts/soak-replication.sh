#!/usr/bin/env bash
# Soak rounds of the replication and failover tests: the embedded-cluster and follower tests (log
# shipping, bootstrap, re-bootstrap after a log gap, corrupted checkpoints, session and replica
# reads under load, node restarts), the failover tests (leases, crashes and partitions of
# primaries, rejoin; FAILOVER_ROUNDS crash/partition rounds per run, default 50) and the
# multi-process tests that SIGKILL a scrollbackd, repeated until one fails or ROUNDS (default 20)
# pass. CI runs each once, with 20 failover rounds (scripts/test.sh); this is the long run. The
# seeded tests print their seed on failure (SCROLLBACK_SEED=... replays it);
# SCROLLBACK_TEST_LOG=debug shows the nodes' logs.
#
#   scripts/soak-replication.sh            # 20 rounds
#   ROUNDS=200 FAILOVER_ROUNDS=100 scripts/soak-replication.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
rounds=${ROUNDS:-20}
export SCROLLBACK_FAILOVER_ROUNDS=${FAILOVER_ROUNDS:-50}
ctest --test-dir build --output-on-failure --timeout 300 -j "$(nproc)" \
  -R '^(replication:|processes:|node:a (replica|primary))' --repeat "until-fail:$rounds"
echo "== $rounds rounds of the replication tests passed"
