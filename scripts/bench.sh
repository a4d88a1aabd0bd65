#!/usr/bin/env bash
# The standard benchmark set, on 2 cores (LARGE_RECORDS=0, REPLICATION=0 and FAILOVER_KILLS=0 skip
# the longest steps):
#   1. scrollback-bench: YCSB workloads A-F, `chat`, `send`, `history` and `batch` on the raw,
#      engine, embedded and echo targets, one after another in one process, so the ratios come
#      from the same run;
#   2. latency at half of peak: `c`, `send` and `history` on embedded again, paced (open loop);
#      for `send`, inbox freshness under that load (probe sends, until a member's inbox shows them)
#      at half the throughput step 1 measured, for the p99 target;
#   2b. large data: `history` and `c` over LARGE_RECORDS messages (default 1,000,000; more than
#      the block cache holds) on raw and embedded (rf 1); about 14 minutes on 2 cores (every
#      target and workload loads its own copy);
#   3. the engine micro-benchmarks beside raw RocksDB (scripts/bench-engine.sh);
#   4. the cluster RPC micro-benchmarks beside a Cap'n Proto echo (rpc_bench);
#   5. replication: `send` with replication factor 1 and 3, `send` acknowledged async and
#      semi-sync, `c` and `history` read `strong`,
#      `replica` and `session`, replica lag, `send` to one hot conversation (rf 1 and 3),
#      `history` of one hot conversation `strong` against
#      `replica`; a replica bootstrap of a BOOTSTRAP_MB shard beside a
#      filesystem copy (docs/replication.md);
#   6. failover: the busiest primary crashed FAILOVER_KILLS times under semi-sync, then async,
#      sends: ms until each of its shards took a write again (p50 / max), acknowledged sends lost;
#      then as many planned switchovers, measured by their write pause;
#   7. resharding: a shard of each of RESHARD_MB (default "100 1024") split under semi-sync
#      sends (the write pause), then a child's copy moved to a new node (MB/s, send p99); and a
#      skewed send load before and after one round of rebalance --apply.
# Writes bench/results/: ycsb.json, ycsb.txt, paced.json, paced.txt, engine.json, rpc.txt,
# replication.txt, replication.json, bootstrap.txt, failover.txt, failover-*.json, reshard.txt,
# reshard.json, large.json, large.txt, and PNG charts
# (scripts/plot-bench.sh).
#
# Environment: RECORDS (default 50000), DURATION seconds per run (default 4),
# THREADS (default 2), INFLIGHT (default 16), WORKLOADS (default a,b,c,d,e,f,chat,send,history,
# batch), TARGETS (default raw,engine,embedded,echo), PACED (default c,send,history; empty: skip),
# REPLICATION (default 1; 0 skips step 5), LARGE_RECORDS (default 1000000; 0 skips step 2b), BOOTSTRAP_MB (default 1024), FAILOVER_KILLS (default
# 10; 0 skips step 6).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
mkdir -p bench/results
records=${RECORDS:-50000}
duration=${DURATION:-4}

echo "== scrollback-bench (YCSB)"
build/bench/scrollback-bench \
  --workload "${WORKLOADS:-a,b,c,d,e,f,chat,send,history,batch}" \
  --target "${TARGETS:-raw,engine,embedded,echo}" \
  --records "$records" --duration "$duration" --warmup 1 \
  --threads "${THREADS:-2}" --inflight "${INFLIGHT:-16}" \
  --json bench/results/ycsb.json 2>bench/results/ycsb-progress.txt | tee bench/results/ycsb.txt |
  grep -E '^#|OVERALL\], Throughput|messages/sec'

paced=${PACED-c,send,history}
if [[ -n "$paced" ]]; then
  echo "== latency at half of peak (embedded, open loop)"
  : >bench/results/paced.txt
  reports=()
  for workload in ${paced//,/ }; do
    peak=$(python3 -c '
import json, sys
for r in json.load(open("bench/results/ycsb.json")):
    if r["workload"] == sys.argv[1] and r["target"] == "embedded":
        print(int(r["throughput_ops_per_sec"]))' "$workload")
    [[ -n "$peak" ]] || continue
    rate=$((peak / 2))
    echo "# $workload: peak $peak ops/s, paced at $rate ops/s" | tee -a bench/results/paced.txt
    build/bench/scrollback-bench --workload "$workload" --target embedded \
      --records "$records" --duration "$duration" --warmup 1 \
      --threads "${THREADS:-2}" --inflight "${INFLIGHT:-16}" --target-rate "$rate" \
      --json "bench/results/paced-$workload.json" 2>&1 |
      grep -E 'OVERALL\], Throughput|PercentileLatency|InboxFreshness' |
      tee -a bench/results/paced.txt
    reports+=("bench/results/paced-$workload.json")
  done
  python3 -c '
import json, sys
print(json.dumps([r for f in sys.argv[1:] for r in json.load(open(f))], indent=1))' \
    "${reports[@]}" >bench/results/paced.json
  rm -f "${reports[@]}"
fi

large=${LARGE_RECORDS-1000000}
if [[ -n "$large" && "$large" != 0 ]]; then
  # History larger than the caches: 1M messages over 10,000 conversations (about 640 MB live
  # per copy set), history pages and single-message reads on raw RocksDB and the cluster.
  echo "== large data: $large messages (raw, embedded rf 1)"
  large_dir=$(mktemp -d "${TMPDIR:-/tmp}/scrollback-large.XXXXXX")
  build/bench/scrollback-bench --workload history,c --target raw,embedded \
    --records "$large" --duration "$duration" --warmup 1 --replication-factor 1 \
    --threads "${THREADS:-2}" --inflight "${INFLIGHT:-16}" --data-dir "$large_dir" \
    --json bench/results/large.json 2>&1 | grep -E '^#|OVERALL\], Throughput|99thPercentile' |
    tee bench/results/large.txt
  rm -rf "$large_dir"
fi

echo "== engine micro-benchmarks"
MIN_TIME=${MIN_TIME:-0.5} scripts/bench-engine.sh

echo "== cluster RPC micro-benchmarks"
build/bench/rpc_bench --benchmark_min_time=0.5 2>/dev/null | grep BM_ | tee bench/results/rpc.txt

if [[ "${REPLICATION:-1}" != 0 ]]; then
  echo "== replication (embedded)"
  : >bench/results/replication.txt
  reports=()
  run() {  # workload replication-factor consistency [tag extra-options...]
    local tag=${4:-}
    echo "# $1 rf=$2 consistency=$3 ${tag}" | tee -a bench/results/replication.txt
    build/bench/scrollback-bench --workload "$1" --target embedded --records "$records" \
      --duration "$duration" --warmup 1 --threads "${THREADS:-2}" --inflight "${INFLIGHT:-16}" \
      --replication-factor "$2" --consistency "$3" --json "bench/results/repl-$1-$2-$3$tag.json" \
      "${@:5}" 2>&1 | grep -E 'OVERALL\], Throughput|99thPercentile|Replica' |
      tee -a bench/results/replication.txt
    reports+=("bench/results/repl-$1-$2-$3$tag.json")
  }
  for round in 1 2; do run send 1 strong; run send 3 strong; done
  # Acknowledgement: async against semi-sync sends (rf 3), alternating.
  for round in 1 2; do
    for ack in async semi-sync; do run send 3 strong "-$ack$round" --ack "$ack"; done
  done
  for workload in c history; do
    run "$workload" 1 strong
    for consistency in strong replica session; do run "$workload" 3 "$consistency"; done
  done
  # One hot conversation (every read goes to one shard, so its primary's node is the
  # bottleneck): strong against replica reads, alternating.
  for round in 1 2; do
    for consistency in strong replica; do
      run history 3 "$consistency" "-hot$round" --messages-per-conversation "$records"
    done
  done
  # One hot conversation written: every sender sends to it (the hot-path issue's target,
  # 20,000 sends/s with dense seqs), with 1 and 3 copies.
  for rf in 1 3; do run send "$rf" strong "-hot" --messages-per-conversation "$records"; done
  python3 -c '
import json, sys
print(json.dumps([r for f in sys.argv[1:] for r in json.load(open(f))], indent=1))' \
    "${reports[@]}" >bench/results/replication.json
  rm -f "${reports[@]}"
  build/bench/scrollback-bootstrap-bench --megabytes "${BOOTSTRAP_MB:-1024}" |
    tee bench/results/bootstrap.txt
fi

kills=${FAILOVER_KILLS:-10}
if [[ "$kills" != 0 ]]; then
  echo "== failover (embedded, rf 3)"
  : >bench/results/failover.txt
  for ack in semi-sync async; do
    build/bench/scrollback-bench --failover-kills "$kills" --failover-switchovers "$kills" \
      --ack "$ack" \
      --json "bench/results/failover-$ack.json" | tee -a bench/results/failover.txt
  done
fi

reshard_mb=${RESHARD_MB-100 1024}
if [[ -n "$reshard_mb" ]]; then
  echo "== resharding (embedded, rf 3)"
  args=()
  for mb in $reshard_mb; do args+=(--reshard-mb "$mb"); done
  build/bench/scrollback-bench "${args[@]}" --json bench/results/reshard.json |
    tee bench/results/reshard.txt
  build/bench/scrollback-bench --rebalance-seconds 5 --json bench/results/rebalance.json |
    tee -a bench/results/reshard.txt
fi

scripts/plot-bench.sh bench/results/ycsb.json bench/results
