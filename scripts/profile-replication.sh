#!/usr/bin/env bash
# Where replication factor 3's cost goes on this machine (docs/decisions/0015): alternating
# `send` runs at rf 1 and rf 3 on the embedded cluster, then one rf 3 run under `perf`, split
# by thread: the replicas' follower threads (`sb-follower`: pulls and replica writes) against
# everything else (the primaries' sends, the fan-out, RPC, the benchmark's clients).
#
# If every thread but the followers does at rf 3 what it does at rf 1 (the same sends, written
# once by their primaries), rf 3 / rf 1 throughput is about others / all samples, and with
# shipping that cost nothing it would be others / (others + replica writes). The issue's target
# (rf 3 costs at most 25 %) needs the followers at no more than a third of the others.
#
# Usage: scripts/profile-replication.sh        (after scripts/setup.sh; about 2 minutes)
# Environment: ROUNDS (default 2), RECORDS (default 50000), DURATION (seconds, default 4),
#              OUT (default bench/results/profile-replication).
set -euo pipefail
cd "$(dirname "$0")/.."

bench=build/bench/scrollback-bench
[ -x "$bench" ] || { echo "profile-replication: build first (scripts/setup.sh)" >&2; exit 1; }
command -v perf >/dev/null || { echo "profile-replication: perf is missing (scripts/setup.sh installs linux-perf)" >&2; exit 1; }
rounds=${ROUNDS:-2}
records=${RECORDS:-50000}
duration=${DURATION:-4}
out=${OUT:-bench/results/profile-replication}
mkdir -p "$out"

send() {  # replication-factor duration (exec: run in the background, $! is the benchmark)
  exec "$bench" --workload send --target embedded --records "$records" --duration "$2" --warmup 1 \
    --threads 2 --inflight 16 --replication-factor "$1" --consistency strong
}
throughput() { grep -E '^\[OVERALL\], Throughput' | awk -F', ' '{printf "%.0f", $3}'; }

echo "== send, rf 1 against rf 3, alternating"
for round in $(seq "$rounds"); do
  one=$( (send 1 "$duration") 2>&1 | throughput)
  three=$( (send 3 "$duration") 2>&1 | throughput)
  echo "round $round: rf 1 $one ops/s, rf 3 $three ops/s, rf 3 / rf 1 $((100 * three / one)) %"
done

echo "== rf 3 under perf (5 s of the run phase, every thread, both cores)"
(send 3 10) >"$out/run.txt" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
until grep -q "1 sec:" "$out/run.txt" 2>/dev/null; do
  kill -0 "$pid" 2>/dev/null || { cat "$out/run.txt" >&2; exit 1; }
  sleep 0.2
done
rm -f "$out/perf.data" "$out/perf.data.old"
perf record -F 999 -g -p "$pid" -o "$out/perf.data" -- sleep 5 >/dev/null 2>&1
wait "$pid"
trap - EXIT
echo "rf 3 under perf: $(throughput <"$out/run.txt") ops/s"
perf script -i "$out/perf.data" -F comm,ip,sym 2>/dev/null >"$out/perf.script"
python3 - "$out/perf.script" "$(nproc)" <<'EOF'
import collections, sys

path, cpus = sys.argv[1], int(sys.argv[2])
samples = []  # (thread name, [frames])
for line in open(path, errors="replace"):
    if not line.strip():
        continue
    if line[0] != "\t":  # A sample's thread name; its stack follows, a frame per line.
        samples.append((line.split()[0], []))
    elif samples:
        samples[-1][1].append(line.strip())
total = len(samples)
if total == 0:
    sys.exit("profile-replication: perf recorded no samples")
def share(n):
    return 100.0 * n / total
def inside(frames, name):
    return any(name in f for f in frames)

print(f"samples: {total} ({100.0 * total / (999 * 5 * cpus):.0f} % of {cpus} cores busy)")
for comm, n in collections.Counter(c for c, _ in samples).most_common(8):
    print(f"  {comm:<16} {share(n):5.1f} %")
follower = [f for c, f in samples if c == "sb-follower"]
others = [f for c, f in samples if c != "sb-follower"]
replica_writes = sum(1 for f in follower if inside(f, "DBImpl::WriteImpl"))
replica_memtable = sum(1 for f in follower if inside(f, "MemTable::Add"))
primary_writes = sum(1 for f in others if inside(f, "DBImpl::WriteImpl"))
shipping = len(follower) - replica_writes
o, w, s = share(len(others)), share(replica_writes), share(shipping)
print(f"replica writes (follower, DBImpl::WriteImpl): {w:.1f} % (memtable inserts {share(replica_memtable):.1f} %)")
print(f"shipping (the rest of the followers): {s:.1f} %")
print(f"primaries' writes (DBImpl::WriteImpl outside the followers): {share(primary_writes):.1f} %")
print(f"everything but the followers: {o:.1f} %")
print(f"rf 3 / rf 1 implied by the profile: {o:.0f} %")
print(f"... with shipping that cost nothing: {100.0 * o / (o + w):.0f} %")
print(f"target (rf 3 / rf 1 >= 75 %): the followers at most {o / 3:.1f} %, now {w + s:.1f} %")
EOF
