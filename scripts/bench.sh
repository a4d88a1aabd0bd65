#!/usr/bin/env bash
# The standard benchmark set, bounded to about 10 minutes on 2 cores:
#   1. scrollback-bench: YCSB workloads A-F and `chat` on the raw, engine, embedded and echo
#      targets, one after another in one process, so the ratios come from the same run;
#   2. the engine micro-benchmarks beside raw RocksDB (scripts/bench-engine.sh);
#   3. the cluster RPC micro-benchmarks beside a bare Cap'n Proto echo (rpc_bench).
# Writes bench/results/: ycsb.json, ycsb.txt, engine.json, rpc.txt, and PNG charts
# (scripts/plot-bench.sh).
#
# Environment: RECORDS (default 50000), DURATION seconds per run (default 6),
# THREADS (default 2), INFLIGHT (default 16), WORKLOADS (default a,b,c,d,e,f,chat),
# TARGETS (default raw,engine,embedded,echo).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
mkdir -p bench/results

echo "== scrollback-bench (YCSB)"
build/bench/scrollback-bench \
  --workload "${WORKLOADS:-a,b,c,d,e,f,chat}" --target "${TARGETS:-raw,engine,embedded,echo}" \
  --records "${RECORDS:-50000}" --duration "${DURATION:-6}" --warmup 1 \
  --threads "${THREADS:-2}" --inflight "${INFLIGHT:-16}" \
  --json bench/results/ycsb.json 2>bench/results/ycsb-progress.txt | tee bench/results/ycsb.txt |
  grep -E '^#|OVERALL\], Throughput'

echo "== engine micro-benchmarks"
MIN_TIME=${MIN_TIME:-0.5} scripts/bench-engine.sh

echo "== cluster RPC micro-benchmarks"
build/bench/rpc_bench --benchmark_min_time=0.5 2>/dev/null | grep BM_ | tee bench/results/rpc.txt

scripts/plot-bench.sh bench/results/ycsb.json bench/results
