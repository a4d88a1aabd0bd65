#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "process_util.h"

namespace scrollback {
namespace {

// Runs scrollback-bench with `args` plus a JSON report and a data directory in `dir`; returns
// the parsed report (one object per workload and target). Fails the test if the run fails.
nlohmann::json RunBench(const testing::TempDir& dir, std::vector<std::string> args) {
  const std::string report = dir.Sub("report.json");
  args.insert(args.begin(), SCROLLBACK_BENCH);
  args.insert(args.end(), {"--json", report, "--data-dir", dir.Sub("data")});
  {
    testing::ChildProcess bench(args, dir.Sub("bench.log"));
    int status = bench.Stop(0, std::chrono::seconds(150));  // Signal 0: just wait.
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
  }
  std::ifstream in(report);
  auto json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  REQUIRE(json.is_array());
  return json;
}

// Checks that `run` counted `operations` operations, none failed.
void CheckCounts(const nlohmann::json& run, uint64_t operations) {
  INFO(run["target"] << " " << run["workload"]);
  uint64_t ops = 0;
  for (auto& [name, op] : run["ops"].items()) {
    ops += op["count"].get<uint64_t>();
    CHECK(op["errors"].get<uint64_t>() == 0);
    CHECK(op["p99_us"].get<double>() >= op["p50_us"].get<double>());
  }
  CHECK(ops == operations);
  CHECK(run["operations"].get<uint64_t>() == operations);
  CHECK(run["throughput_ops_per_sec"].get<double>() > 0);
}

TEST_CASE("a short scrollback-bench run reports every operation of every workload") {
  testing::TempDir dir;
  auto json = RunBench(dir, {"--workload", "a,d,e,chat", "--target", "raw,engine", "--records",
                             "2000", "--operations", "5000", "--threads", "2"});
  REQUIRE(json.size() == 8);  // 4 workloads x 2 targets.
  for (const auto& run : json) CheckCounts(run, 5000);
}

TEST_CASE(
    "scrollback-bench runs the embedded cluster, directly and through a router, and the echo") {
  testing::TempDir dir;
  auto json = RunBench(dir, {"--workload", "c,chat,batch", "--target",
                             "embedded,embedded-router,echo", "--records", "1000", "--operations",
                             "2000", "--threads", "2", "--inflight", "8", "--batch-size", "10"});
  REQUIRE(json.size() == 9);  // 3 workloads x 3 targets.
  for (const auto& run : json) {
    CheckCounts(run, 2000);
    if (run["workload"] == "batch") {
      const auto& batch = run["ops"]["SEND-BATCH"];
      CHECK(batch["messages_per_sec"].get<double>() ==
            Approx(10 * batch["count"].get<double>() / run["run_seconds"].get<double>()));
    }
  }
}

}  // namespace
}  // namespace scrollback
