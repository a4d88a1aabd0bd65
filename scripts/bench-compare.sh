#!/usr/bin/env bash
# Compares two scrollback-bench binaries (e.g. main before and after a change) in one run:
# every (workload, target) pair runs with each binary in turn, ROUNDS times, alternating, so both
# see the same machine state; prints the median throughput of each and the ratio, and draws
# OUT/chat.png (the chat mix on every target) and OUT/embedded.png (every workload on embedded).
#
# Usage: scripts/bench-compare.sh BEFORE_BINARY AFTER_BINARY
#   To build the binary of an earlier commit beside this checkout:
#     git worktree add /tmp/before <commit> && cmake -S /tmp/before -B /tmp/before/build -G Ninja \
#       && cmake --build /tmp/before/build --target scrollback-bench
# Environment: WORKLOADS (default c,send,history,chat,batch), TARGETS (default raw,embedded,echo),
# RECORDS (default 50000), DURATION seconds (default 4), THREADS (2), INFLIGHT (16), ROUNDS (2),
# OUT (default bench/results/compare).
set -euo pipefail
cd "$(dirname "$0")/.."
before=$1
after=$2
out=${OUT:-bench/results/compare}
mkdir -p "$out"
rounds=${ROUNDS:-2}
args=(--workload "${WORKLOADS:-c,send,history,chat,batch}" --target "${TARGETS:-raw,embedded,echo}"
      --records "${RECORDS:-50000}" --duration "${DURATION:-4}" --warmup 1
      --threads "${THREADS:-2}" --inflight "${INFLIGHT:-16}")
for round in $(seq 1 "$rounds"); do
  for side in before after; do
    binary=$before
    [[ $side == after ]] && binary=$after
    echo "== round $round: $side ($binary)"
    "$binary" "${args[@]}" --json "$out/$side-$round.json" >/dev/null 2>"$out/$side-$round.log"
  done
done
python3 - "$out" "$rounds" <<'EOF'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(side):
    runs = {}
    for r in range(1, rounds + 1):
        for run in json.load(open(f"{out}/{side}-{r}.json")):
            key = (run["workload"], run["target"])
            value = run["throughput_ops_per_sec"]
            for op in run.get("ops", {}).values():  # A batch run counts messages.
                value = op.get("messages_per_sec", value)
            runs.setdefault(key, []).append(value)
    return runs
before, after = load("before"), load("after")
print(f"| workload | target | before | after | after / before |")
print(f"| --- | --- | ---: | ---: | ---: |")
for key in sorted(before):
    b = statistics.median(before[key])
    a = statistics.median(after.get(key, [0]))
    print(f"| {key[0]} | {key[1]} | {b:,.0f} | {a:,.0f} | {a / b * 100:.0f} % |")
# The charts' data: the chat mix on every target, every workload on embedded.
for name, keep in (("chat", lambda w, t: w == "chat"), ("embedded", lambda w, t: t == "embedded")):
    with open(f"{out}/{name}.dat", "w") as f:
        for (workload, target) in sorted(before):
            if keep(workload, target):
                label = target if name == "chat" else workload
                b = statistics.median(before[(workload, target)])
                a = statistics.median(after.get((workload, target), [0]))
                f.write(f'"{label}" {b:.0f} {a:.0f}\n')
EOF

# Charts (gnuplot, installed by scripts/setup.sh) of the medians written above.
gnuplot <<GP
set terminal pngcairo size 1000,600 noenhanced
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set grid ytics
set key top left
set logscale y
set output "$out/chat.png"
set title "chat mix (70 % history pages, 15 % sends, 10 % inbox lists, 5 % mark read): ops/s, log scale"
plot "$out/chat.dat" using 2:xtic(1) title "before", "" using 3 title "after"
set output "$out/embedded.png"
set title "embedded cluster, every workload: ops/s (batch: messages/s), log scale"
plot "$out/embedded.dat" using 2:xtic(1) title "before", "" using 3 title "after"
GP
echo "charts: $out/chat.png $out/embedded.png"
