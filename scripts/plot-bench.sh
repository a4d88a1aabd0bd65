#!/usr/bin/env bash
# Turns scrollback-bench JSON reports into PNG charts with gnuplot:
#   <out>/throughput.png   throughput over time, one line per (workload, target)
#   <out>/latency.png      p50 and p99 latency per workload and target
#   <out>/ratios.txt       each target's throughput as a share of raw and of echo, per workload
# Usage: scripts/plot-bench.sh REPORT.json [OUT_DIR]
set -euo pipefail
report=${1:?usage: scripts/plot-bench.sh REPORT.json [OUT_DIR]}
out=${2:-$(dirname "$report")}
mkdir -p "$out"
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT

python3 - "$report" "$data" "$out" <<'PY'
import json, os, sys
runs = json.load(open(sys.argv[1]))
data, out = sys.argv[2], sys.argv[3]
with open(os.path.join(data, "series.txt"), "w") as series:
    for r in runs:
        name = f'{r["workload"]}/{r["target"]}'
        series.write(f'"{name}"\n')
        for p in r.get("throughput_over_time", []):
            series.write(f'{p["second"]} {p["ops_per_sec"]}\n')
        series.write("\n\n")
with open(os.path.join(data, "latency.txt"), "w") as lat:
    for r in runs:
        ops = r["ops"]
        # Weighted by operation count: the latency of the mix.
        total = sum(o["count"] for o in ops.values()) or 1
        p50 = sum(o["p50_us"] * o["count"] for o in ops.values()) / total
        p99 = max((o["p99_us"] for o in ops.values()), default=0)
        lat.write(f'"{r["workload"]}/{r["target"]}" {p50:.1f} {p99:.1f}\n')
by = {(r["workload"], r["target"]): r["throughput_ops_per_sec"] for r in runs}
with open(os.path.join(out, "ratios.txt"), "w") as ratios:
    ratios.write(f'{"workload":<9}{"target":<10}{"ops/s":>12}{"vs raw":>9}{"vs echo":>9}\n')
    for (w, t), v in sorted(by.items()):
        raw, echo = by.get((w, "raw")), by.get((w, "echo"))
        fmt = lambda base: f'{v / base:>8.0%}' if base else f'{"-":>8}'
        ratios.write(f'{w:<9}{t:<10}{v:>12,.0f} {fmt(raw)} {fmt(echo)}\n')
with open(os.path.join(data, "count.txt"), "w") as c:
    c.write(str(len(runs)))
PY

runs=$(cat "$data/count.txt")
gnuplot <<GP
set terminal pngcairo size 1200,700 noenhanced
set output "$out/throughput.png"
set title "scrollback-bench: throughput over time"
set xlabel "second"
set ylabel "operations/s (log)"
set logscale y
set key outside right
set grid
plot for [i=0:$((runs - 1))] "$data/series.txt" index i using 1:2 with lines lw 2 title columnheader(1)

set output "$out/latency.png"
set title "scrollback-bench: latency per workload and target (p50 of the mix, worst p99)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by -45
set ylabel "microseconds (log)"
set logscale y
unset xlabel
plot "$data/latency.txt" using 2:xtic(1) title "p50", "" using 3 title "p99"
GP
echo "charts: $out/throughput.png $out/latency.png; ratios: $out/ratios.txt"
cat "$out/ratios.txt"
