// scrollback-bench's reports of one run phase. Both formats are read by scripts
// (scripts/bench.sh, scripts/plot-bench.sh) and by tests/bench/scrollback_bench_test.cc: change
// them only together.
//
// YCSB text (YCSB's own output format, so YCSB tooling reads it), one block per run:
//
//   # target=<target> workload=<name> (<description>)
//   [OVERALL], RunTime(ms), <seconds * 1000, no decimals>
//   [OVERALL], Throughput(ops/sec), <operations / seconds, 1 decimal; 0 if nothing measured>
//   then for each operation that succeeded at least once, in Op order (NAME as OpName):
//   [NAME], Operations, <successful operations>
//   [NAME], Throughput(messages/sec), <operations * batch size / seconds>  (SEND-BATCH only)
//   [NAME], AverageLatency(us) / MinLatency(us) / MaxLatency(us), <1 decimal>
//   [NAME], 50thPercentileLatency(us) / 95th... / 99th..., <1 decimal>
//   [NAME], Return=OK, <successful operations>
//   [NAME], Return=ERROR, <failed operations>  (only when some failed)
//
// Operations that only ever failed have no block; their failures are in neither format.
//
// JSON: one object per run:
//   {"target", "workload", "distribution", "threads", "inflight", "records", "run_seconds",
//    "operations", "throughput_ops_per_sec",
//    "ops": {NAME: {"count", "avg_us", "p50_us", "p95_us", "p99_us", "max_us", "errors",
//                   "messages_per_sec" (SEND-BATCH only)}},
//    "throughput_over_time": [{"second", "ops_per_sec"}, ...]}
// Latencies are in microseconds, counted from each operation's intended start.
#pragma once

#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "runner.h"
#include "workload.h"

namespace scrollback::ycsb {

// Writes `result`'s block of the YCSB text report to `out`.
void PrintYcsb(std::FILE* out, const std::string& target, const Workload& workload,
               const PhaseResult& result);

// `result` as a JSON report object. `options` and `records` are the run's configuration, echoed
// in the report.
nlohmann::json ToJson(const std::string& target, const Workload& workload,
                      const RunOptions& options, uint64_t records, const PhaseResult& result);

}  // namespace scrollback::ycsb
