#include "report.h"

#include <fmt/format.h>

namespace scrollback::ycsb {

void PrintYcsb(std::FILE* out, const std::string& target, const Workload& workload,
               const PhaseResult& r) {
  fmt::print(out, "# target={} workload={} ({})\n", target, workload.name, workload.description);
  fmt::print(out, "[OVERALL], RunTime(ms), {:.0f}\n", r.seconds * 1000);
  fmt::print(out, "[OVERALL], Throughput(ops/sec), {:.1f}\n",
             r.seconds > 0 ? r.operations / r.seconds : 0);
  for (auto& [op, h] : r.stats.latency) {
    auto name = OpName(op);
    fmt::print(out, "[{}], Operations, {}\n", name, h.count());
    if (op == Op::kSendBatch && r.seconds > 0) {
      fmt::print(out, "[{}], Throughput(messages/sec), {:.1f}\n", name,
                 h.count() * workload.batch_size / r.seconds);
    }
    fmt::print(out, "[{}], AverageLatency(us), {:.1f}\n", name, h.mean() / 1000);
    fmt::print(out, "[{}], MinLatency(us), {:.1f}\n", name, h.min() / 1000.0);
    fmt::print(out, "[{}], MaxLatency(us), {:.1f}\n", name, h.max() / 1000.0);
    fmt::print(out, "[{}], 50thPercentileLatency(us), {:.1f}\n", name, h.Percentile(0.50) / 1000.0);
    fmt::print(out, "[{}], 95thPercentileLatency(us), {:.1f}\n", name, h.Percentile(0.95) / 1000.0);
    fmt::print(out, "[{}], 99thPercentileLatency(us), {:.1f}\n", name, h.Percentile(0.99) / 1000.0);
    fmt::print(out, "[{}], Return=OK, {}\n", name, h.count());
    auto errors = r.stats.errors.find(op);
    if (errors != r.stats.errors.end())
      fmt::print(out, "[{}], Return=ERROR, {}\n", name, errors->second);
  }
}

nlohmann::json ToJson(const std::string& target, const Workload& workload, const RunOptions& o,
                      uint64_t records, const PhaseResult& r) {
  nlohmann::json j;
  j["target"] = target;
  j["workload"] = workload.name;
  j["distribution"] = DistributionName(workload.distribution);
  j["threads"] = o.threads;
  j["inflight"] = o.inflight;
  j["records"] = records;
  j["run_seconds"] = r.seconds;
  j["operations"] = r.operations;
  j["throughput_ops_per_sec"] = r.seconds > 0 ? r.operations / r.seconds : 0;
  for (auto& [op, h] : r.stats.latency) {
    auto& entry = j["ops"][std::string(OpName(op))];
    entry["count"] = h.count();
    if (op == Op::kSendBatch && r.seconds > 0) {
      entry["messages_per_sec"] = h.count() * workload.batch_size / r.seconds;
    }
    entry["avg_us"] = h.mean() / 1000;
    entry["p50_us"] = h.Percentile(0.50) / 1000.0;
    entry["p95_us"] = h.Percentile(0.95) / 1000.0;
    entry["p99_us"] = h.Percentile(0.99) / 1000.0;
    entry["max_us"] = h.max() / 1000.0;
    auto errors = r.stats.errors.find(op);
    entry["errors"] = errors == r.stats.errors.end() ? 0 : errors->second;
  }
  for (auto& [second, ops] : r.throughput_over_time) {
    j["throughput_over_time"].push_back({{"second", second}, {"ops_per_sec", ops}});
  }
  return j;
}

}  // namespace scrollback::ycsb
