#!/usr/bin/env bash
# Runs the engine micro-benchmarks (each beside its raw RocksDB baseline, in the same process)
# and prints throughput and the ratio to the baseline. Writes the full Google Benchmark JSON to
# bench/results/engine.json.
#
# Usage: scripts/bench.sh [extra Google Benchmark flags]
# Environment: MIN_TIME (seconds per benchmark, default 1), REPETITIONS (default 3; the median
# is reported).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null

mkdir -p bench/results
out=bench/results/engine.json
build/bench/engine_bench \
  --benchmark_min_time="${MIN_TIME:-1}" \
  --benchmark_repetitions="${REPETITIONS:-3}" \
  --benchmark_report_aggregates_only=true \
  --benchmark_out="$out" --benchmark_out_format=json "$@" >/dev/null

python3 - "$out" <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))["benchmarks"]
median = {}
for r in runs:
    if r.get("aggregate_name") == "median":
        median[r["run_name"]] = r["items_per_second"]
pairs = [("BM_SendMessage", "BM_RawWriteBatch/1", "send message (200 B, 5 members)", 0.50),
         ("BM_SendBatch/100", "BM_RawWriteBatch/100", "batch of 100 sends (messages/s)", None),
         ("BM_HistoryPage50", "BM_RawSeekNext50", "history page of 50", 0.60),
         ("BM_HistoryTail50", "BM_RawSeekNext50", "history tail page of 50", None),
         ("BM_ListInbox20", "BM_RawInboxScan20", "inbox list of 20", None)]
print(f"{'operation':34} {'threads':>7} {'ops/s':>10} {'raw ops/s':>10} {'ratio':>6}  target")
for ours, raw, label, target in pairs:
    for threads in (1, 2):
        key = lambda name: f"{name}/real_time/threads:{threads}"
        if key(ours) not in median or key(raw) not in median:
            continue
        a, b = median[key(ours)], median[key(raw)]
        ratio = a / b
        verdict = "" if target is None else (f">= {target:.0%} " + ("met" if ratio >= target else "MISSED"))
        print(f"{label:34} {threads:>7} {a:>10,.0f} {b:>10,.0f} {ratio:>6.0%}  {verdict}")
PY
