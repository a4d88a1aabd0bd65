// scrollback-bench: a YCSB-style load generator for Scrollback. See docs/benchmarks.md.
//
// For each workload and target given, in turn: a load phase inserts --records messages
// (hashed insert order, spread over conversations), then a run phase performs --operations
// operations (or runs for --duration seconds) from --threads client threads with --inflight
// calls in flight each, optionally paced at --target-rate operations/s overall (open loop:
// latency counts from each operation's intended start, so queueing is not hidden). Results are
// printed in YCSB's format and, with --json, written as a JSON report.
//
// This file parses the command line and wires the parts: ycsb/operations.h (what each operation
// does), ycsb/runner.h (the load and run phases), ycsb/report.h (the output formats) and the
// targets (ycsb/target.h, ycsb/rpc_targets.h).
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ycsb/failover.h"
#include "ycsb/operations.h"
#include "ycsb/report.h"
#include "ycsb/resharding.h"
#include "ycsb/rpc_targets.h"
#include "ycsb/runner.h"
#include "ycsb/target.h"
#include "ycsb/workload.h"

namespace scrollback::ycsb {
namespace {

Result<std::unique_ptr<Target>> MakeTarget(const std::string& name, const TargetOptions& options) {
  if (name == "raw") return NewRawTarget(options);
  if (name == "engine") return NewEngineTarget(options);
  if (name == "embedded") return NewEmbeddedTarget(options);
  if (name == "echo") return NewEchoTarget(options);
  if (name == "embedded-router") return NewEmbeddedRouterTarget(options);
  if (name.rfind("cluster=", 0) == 0) return NewClusterTarget(name.substr(8), options);
  if (name.rfind("router=", 0) == 0) return NewRouterTarget(name.substr(7));
  return Status::InvalidArgument("target", "unknown target " + name +
                                               " (raw, engine, embedded, embedded-router, echo, "
                                               "cluster=HOST:PORT, router=HOST:PORT)");
}

int Main(int argc, char** argv) {
  CLI::App app{"scrollback-bench: YCSB-style benchmark for Scrollback."};
  RunOptions run;
  OperationsOptions data_set;
  std::vector<std::string> workloads = {"a"};
  std::vector<std::string> targets = {"engine"};
  std::string json_path;
  std::string data_dir;
  app.add_option("--workload,-w", workloads, "a b c d e f chat send history batch")->delimiter(',');
  app.add_option("--target,-t", targets,
                 "raw engine embedded embedded-router echo cluster=HOST:PORT router=HOST:PORT")
      ->delimiter(',');
  app.add_option("--records", data_set.records)
      ->check(CLI::Range(uint64_t{1}, uint64_t{100'000'000}));
  app.add_option("--operations", run.operations)
      ->check(CLI::Range(uint64_t{1}, uint64_t{1'000'000'000}));
  app.add_option("--duration", run.duration_s, "Seconds to run (instead of --operations)");
  app.add_option("--warmup", run.warmup_s, "Seconds not recorded at the start");
  app.add_option("--threads", run.threads)->check(CLI::Range(1, 256));
  app.add_option("--inflight", run.inflight, "Calls in flight per thread (RPC targets)")
      ->check(CLI::Range(1, 4096));
  app.add_option("--target-rate", run.target_rate, "Operations/s overall (open loop); 0: max");
  app.add_option("--body-bytes", data_set.body_bytes)->check(CLI::Range(1u, 65536u));
  uint32_t batch_size = 100;
  app.add_option("--batch-size", batch_size, "Sends per SEND-BATCH operation (workload batch)")
      ->check(CLI::Range(1u, 1000u));
  app.add_option("--members", data_set.members)->check(CLI::Range(2u, 1000u));
  app.add_option("--messages-per-conversation", data_set.messages_per_conversation)
      ->check(CLI::Range(1u, 1'000'000u));
  app.add_option("--seed", run.seed);
  app.add_option("--json", json_path, "Write a JSON report here");
  app.add_option("--data-dir", data_dir, "Where in-process targets keep data (default: temp)");
  uint32_t replication_factor = 3;
  app.add_option("--replication-factor", replication_factor,
                 "Copies per shard of in-process clusters (embedded, embedded-router; default 3)")
      ->check(CLI::Range(1u, 3u));
  std::string consistency = "strong";
  app.add_option("--consistency", consistency,
                 "Where cluster targets read: strong (primary), replica, session")
      ->check(CLI::IsMember({"strong", "replica", "session"}));
  std::string ack = "default";
  app.add_option("--ack", ack,
                 "How cluster targets' writes are acknowledged: default (the node's: async), "
                 "async, semi-sync")
      ->check(CLI::IsMember({"default", "async", "semi-sync"}));
  int failover_kills = 0;
  app.add_option("--failover-kills", failover_kills,
                 "Run the failover scenario instead of workloads: crash the busiest primary "
                 "this many times under a send load (embedded cluster, --ack mode)")
      ->check(CLI::Range(1, 1000));
  int failover_switchovers = 0;
  app.add_option("--failover-switchovers", failover_switchovers,
                 "Planned switchovers after the kills of the failover scenario (pause measured)")
      ->check(CLI::Range(0, 1000));
  uint32_t failover_lease_ms = 1000;
  app.add_option("--failover-lease-ms", failover_lease_ms, "Primary lease of the failover scenario")
      ->check(CLI::Range(300u, 60'000u));
  std::vector<uint64_t> reshard_mb;
  app.add_option("--reshard-mb", reshard_mb,
                 "Run the resharding scenario instead of workloads, once per size: load one "
                 "shard to this many MB, split it and move a copy under a send load")
      ->check(CLI::Range(uint64_t{1}, uint64_t{100'000}));
  double rebalance_seconds = 0;
  app.add_option("--rebalance-seconds", rebalance_seconds,
                 "Run the rebalancing scenario instead of workloads: a skewed send load for this "
                 "long, one round of rebalance --apply, the same load again")
      ->check(CLI::Range(0.5, 3600.0));
  CLI11_PARSE(app, argc, argv);
  data_set.max_run_inserts = run.operations + 1'000'000;
  if (rebalance_seconds > 0) {
    RebalanceBenchOptions rebalance;
    rebalance.seconds = rebalance_seconds;
    rebalance.data_dir = data_dir;
    rebalance.seed = run.seed;
    auto r = RunRebalanceBench(rebalance);
    if (!r.ok()) {
      fmt::print(stderr, "scrollback-bench: rebalance: {}\n", r.status().ToString());
      return 1;
    }
    fmt::print(
        "[REBALANCE] skewed sends (zipf 0.99 over 200 conversations, 64 chains): {:.0f}/s (p99 "
        "{:.1f} ms) before; plan: node load max/mean {:.2f} -> {:.2f}, {} splits, {} "
        "switchovers, {} copies moved; {:.0f}/s (p99 {:.1f} ms) after; {} acknowledged sends "
        "lost\n",
        r->sends_per_s_before, r->p99_ms_before, r->max_over_mean_before, r->max_over_mean_after,
        r->splits, r->switchovers, r->copies, r->sends_per_s_after, r->p99_ms_after, r->lost);
    if (!json_path.empty()) {
      std::ofstream(json_path) << nlohmann::json{{"scenario", "rebalance"},
                                                 {"sends_per_s_before", r->sends_per_s_before},
                                                 {"sends_per_s_after", r->sends_per_s_after},
                                                 {"p99_ms_before", r->p99_ms_before},
                                                 {"p99_ms_after", r->p99_ms_after},
                                                 {"max_over_mean_before", r->max_over_mean_before},
                                                 {"max_over_mean_after", r->max_over_mean_after},
                                                 {"splits", r->splits},
                                                 {"switchovers", r->switchovers},
                                                 {"copies", r->copies},
                                                 {"lost", r->lost}}
                                      .dump(2)
                               << "\n";
    }
    return r->lost > 0 ? 3 : 0;
  }
  if (!reshard_mb.empty()) {
    nlohmann::json out = nlohmann::json::array();
    for (uint64_t mb : reshard_mb) {
      ReshardOptions reshard;
      reshard.shard_mb = mb;
      reshard.data_dir = data_dir.empty() ? "" : data_dir + "/reshard-" + std::to_string(mb);
      reshard.seed = run.seed;
      auto r = RunResharding(reshard);
      if (!r.ok()) {
        fmt::print(stderr, "scrollback-bench: resharding: {}\n", r.status().ToString());
        return 1;
      }
      fmt::print(
          "[RESHARD] shard of {:.0f} MB ({} messages, loaded and settled in {:.1f} s): split in "
          "{:.0f} ms, writes paused {:.0f} ms (the longest gap a writer saw), send p99 {:.1f} ms "
          "around it ({:.1f} ms before); moving a child's copy: {:.0f} MB in {:.1f} s = {:.0f} "
          "MB/s, send p99 {:.1f} ms meanwhile; {} sends acknowledged, {} lost\n",
          r->shard_bytes / 1048576.0, r->messages, r->load_s, r->split_ms, r->split_gap_ms,
          r->split_p99_ms, r->baseline_p99_ms, r->move_bytes / 1048576.0, r->move_s,
          r->move_mb_per_s, r->move_p99_ms, r->acknowledged, r->lost);
      out.push_back({{"scenario", "reshard"},
                     {"shard_mb", r->shard_bytes / 1048576.0},
                     {"messages", r->messages},
                     {"split_ms", r->split_ms},
                     {"split_gap_ms", r->split_gap_ms},
                     {"split_p99_ms", r->split_p99_ms},
                     {"baseline_p99_ms", r->baseline_p99_ms},
                     {"move_mb", r->move_bytes / 1048576.0},
                     {"move_s", r->move_s},
                     {"move_mb_per_s", r->move_mb_per_s},
                     {"move_p99_ms", r->move_p99_ms},
                     {"acknowledged", r->acknowledged},
                     {"lost", r->lost}});
      if (r->lost > 0) return 3;
    }
    if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
    return 0;
  }
  if (failover_kills > 0) {
    FailoverOptions failover;
    failover.kills = failover_kills;
    failover.switchovers = failover_switchovers;
    failover.ack = ack == "async" ? AckMode::kAsync : AckMode::kSemiSync;
    failover.lease = std::chrono::milliseconds(failover_lease_ms);
    failover.data_dir = data_dir;
    failover.seed = run.seed;
    auto result = RunFailover(failover);
    if (!result.ok()) {
      fmt::print(stderr, "scrollback-bench: failover: {}\n", result.status().ToString());
      return 1;
    }
    std::vector<double> ms = result->unavailable_ms;
    std::sort(ms.begin(), ms.end());
    const double p50 = ms.empty() ? 0 : ms[ms.size() / 2];
    const double max = ms.empty() ? 0 : ms.back();
    const char* mode = failover.ack == AckMode::kAsync ? "async" : "semi-sync";
    fmt::print(
        "[FAILOVER] {} acks, {} kills, lease {} ms: writes resumed after p50 {:.0f} ms, max {:.0f} "
        "ms ({} shard failovers); {} sends acknowledged ({:.0f}/s over {:.1f} s, {} attempts "
        "retried), {} acknowledged sends lost\n",
        mode, result->kills, failover_lease_ms, p50, max, ms.size(), result->acknowledged,
        result->sends_per_s, result->run_s, result->failed_attempts, result->lost);
    auto summary = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return std::make_pair(v.empty() ? 0.0 : v[v.size() / 2], v.empty() ? 0.0 : v.back());
    };
    const auto [pause_p50, pause_max] = summary(result->switchover_pause_ms);
    const auto [resume_p50, resume_max] = summary(result->switchover_resume_ms);
    if (!result->switchover_pause_ms.empty()) {
      fmt::print(
          "[SWITCHOVER] {} planned switchovers: writes paused p50 {:.0f} ms, max {:.0f} ms; "
          "longest gap between acknowledged sends on the shard p50 {:.0f} ms, max {:.0f} ms\n",
          result->switchover_pause_ms.size(), pause_p50, pause_max, resume_p50, resume_max);
    }
    if (!json_path.empty()) {
      nlohmann::json out = {{"scenario", "failover"},
                            {"ack", mode},
                            {"switchover_pause_ms", result->switchover_pause_ms},
                            {"switchover_resume_ms", result->switchover_resume_ms},
                            {"kills", result->kills},
                            {"lease_ms", failover_lease_ms},
                            {"unavailable_ms", ms},
                            {"unavailable_p50_ms", p50},
                            {"unavailable_max_ms", max},
                            {"acknowledged", result->acknowledged},
                            {"lost", result->lost},
                            {"sends_per_s", result->sends_per_s},
                            {"failed_attempts", result->failed_attempts}};
      std::ofstream(json_path) << out.dump(2) << "\n";
    }
    return failover.ack == AckMode::kSemiSync && result->lost > 0 ? 3 : 0;
  }

  const bool temporary = data_dir.empty();
  if (temporary) {
    data_dir = (std::filesystem::temp_directory_path() /
                ("scrollback-bench-" + std::to_string(::getpid())))
                   .string();
  }
  nlohmann::json report = nlohmann::json::array();
  int status = 0;
  for (const std::string& workload_name : workloads) {
    auto workload = Workload::Named(workload_name);
    if (!workload) {
      fmt::print(stderr, "scrollback-bench: unknown workload {}\n", workload_name);
      return 2;
    }
    workload->batch_size = batch_size;
    for (const std::string& target_name : targets) {
      TargetOptions target_options;
      target_options.data_dir =
          (std::filesystem::path(data_dir) /
           (target_name.substr(0, target_name.find('=')) + "-" + workload_name))
              .string();
      std::filesystem::create_directories(target_options.data_dir);
      target_options.body_bytes = data_set.body_bytes;
      target_options.replication_factor = replication_factor;
      target_options.consistency = consistency == "replica"   ? Consistency::kReplica
                                   : consistency == "session" ? Consistency::kSession
                                                              : Consistency::kStrong;
      target_options.write.ack = ack == "semi-sync" ? AckMode::kSemiSync
                                 : ack == "async"   ? AckMode::kAsync
                                                    : AckMode::kDefault;
      for (const auto& [op, share] : workload->mix) {
        target_options.measure_freshness |=
            share > 0 && (op == Op::kSend || op == Op::kInsert || op == Op::kSendBatch);
      }
      auto target = MakeTarget(target_name, target_options);
      if (!target.ok()) {
        fmt::print(stderr, "scrollback-bench: {}\n", target.status().ToString());
        return 2;
      }
      // Fresh per target: it remembers where this target stored each record.
      Operations operations(*workload, data_set);
      Runner runner(run, operations, **target);
      Status loaded = runner.Load();
      if (!loaded.ok()) {
        fmt::print(stderr, "scrollback-bench: {}\n", loaded.ToString());
        status = 1;
        continue;
      }
      (*target)->RunStarted();
      PhaseResult result = runner.Run();
      auto figures = (*target)->RunEnded();
      PrintYcsb(stdout, target_name, *workload, result);
      // Target figures (replica lag) go to stderr and the JSON report: the YCSB text on stdout
      // keeps YCSB's sections only.
      for (const auto& [name, value] : figures) {
        fmt::print(stderr, "{} {}: {} {}\n", target_name, workload_name, name, value);
      }
      report.push_back(ToJson(target_name, *workload, run, data_set.records, result));
      report.back()["replication_factor"] = replication_factor;
      report.back()["consistency"] = consistency;
      report.back()["ack"] = ack;
      for (const auto& [name, value] : figures) report.back()["target_figures"][name] = value;
    }
  }
  if (!json_path.empty()) std::ofstream(json_path) << report.dump(2) << "\n";
  if (temporary) std::filesystem::remove_all(data_dir);
  return status;
}

}  // namespace
}  // namespace scrollback::ycsb

int main(int argc, char** argv) { return scrollback::ycsb::Main(argc, argv); }
