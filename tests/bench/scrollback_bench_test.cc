// scrollback-bench end to end: runs the tool, then checks its reports against what was asked
// for, against each other (YCSB text on stdout and the JSON report), and, for the `engine`
// target, against the store it left behind. No assertion depends on how fast anything ran.
#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "process_util.h"
#include "scrollback/engine/shard_store.h"
#include "ycsb/generators.h"
#include "ycsb/workload.h"

namespace scrollback {
namespace {

// What a test asks scrollback-bench for; Args() renders it as command-line options.
struct Request {
  std::vector<std::string> workloads;
  std::vector<std::string> targets;
  uint64_t records = 0;
  uint64_t operations = 0;
  int threads = 2;
  int inflight = 16;                         // The tool's default.
  uint32_t batch_size = 100;                 // The tool's default.
  uint32_t body_bytes = 200;                 // The tool's default.
  uint32_t messages_per_conversation = 100;  // The tool's default.

  std::vector<std::string> Args() const {
    std::vector<std::string> args;
    auto add = [&](const char* flag, std::string value) {
      args.push_back(flag);
      args.push_back(std::move(value));
    };
    auto join = [](const std::vector<std::string>& names) {
      std::string joined;
      for (const auto& name : names) joined += (joined.empty() ? "" : ",") + name;
      return joined;
    };
    add("--workload", join(workloads));
    add("--target", join(targets));
    add("--records", std::to_string(records));
    add("--operations", std::to_string(operations));
    add("--threads", std::to_string(threads));
    add("--inflight", std::to_string(inflight));
    add("--batch-size", std::to_string(batch_size));
    add("--body-bytes", std::to_string(body_bytes));
    add("--messages-per-conversation", std::to_string(messages_per_conversation));
    return args;
  }
};

// One run's block of the YCSB text report: the "# target=T workload=W (description)" line and
// its "[NAME], Metric, value" lines as metrics[NAME][Metric] = value.
struct TextRun {
  std::string target;
  std::string workload;
  std::map<std::string, std::map<std::string, double>> metrics;
};

struct BenchOutput {
  nlohmann::json json;        // The --json report: one object per (workload, target).
  std::vector<TextRun> text;  // The text report (stdout), block by block.
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// Parses the text report; every line must be a run header or a metric line.
std::vector<TextRun> ParseYcsbText(const std::string& text) {
  std::vector<TextRun> runs;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    INFO("line: " << line);
    if (line.rfind("# target=", 0) == 0) {
      const size_t workload_at = line.find(" workload=");
      REQUIRE(workload_at != std::string::npos);
      const size_t description_at = line.find(" (", workload_at);
      REQUIRE(description_at != std::string::npos);
      TextRun run;
      run.target = line.substr(9, workload_at - 9);
      run.workload = line.substr(workload_at + 10, description_at - workload_at - 10);
      runs.push_back(std::move(run));
      continue;
    }
    REQUIRE(!runs.empty());
    REQUIRE(line.rfind("[", 0) == 0);
    const size_t name_end = line.find("], ");
    const size_t value_at = line.rfind(", ");
    REQUIRE(name_end != std::string::npos);
    REQUIRE(value_at > name_end);
    const std::string name = line.substr(1, name_end - 1);
    const std::string metric = line.substr(name_end + 3, value_at - name_end - 3);
    auto& metrics = runs.back().metrics[name];
    CHECK(metrics.count(metric) == 0);  // Each metric once per operation.
    metrics[metric] = std::stod(line.substr(value_at + 2));
  }
  return runs;
}

// Runs scrollback-bench for `request` with a JSON report and a data directory in `dir`; returns
// both reports. Fails the test if the run fails.
BenchOutput RunBench(const testing::TempDir& dir, const Request& request) {
  const std::string json_path = dir.Sub("report.json");
  const std::string text_path = dir.Sub("report.txt");
  const std::string log_path = dir.Sub("bench.log");
  // ChildProcess writes stdout and stderr to one file, where a progress line (stderr) could
  // land inside a report line (stdout). The shell sends stdout to its own file:
  // sh -c 'exec "$@" >"$0"' TEXT_PATH BENCH ARGS...
  std::vector<std::string> args = {"/bin/sh", "-c", "exec \"$@\" >\"$0\"", text_path,
                                   SCROLLBACK_BENCH};
  for (auto& arg : request.Args()) args.push_back(arg);
  args.insert(args.end(), {"--json", json_path, "--data-dir", dir.Sub("data")});
  {
    testing::ChildProcess bench(args, log_path);
    int status = bench.Stop(0, std::chrono::seconds(150));  // Signal 0: just wait.
    INFO("log:\n" << ReadFile(log_path));
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
  }
  BenchOutput output;
  output.json = nlohmann::json::parse(ReadFile(json_path), nullptr, /*allow_exceptions=*/false);
  REQUIRE(output.json.is_array());
  output.text = ParseYcsbText(ReadFile(text_path));
  // One object and one text block per (workload, target), workloads outermost.
  REQUIRE(output.json.size() == request.workloads.size() * request.targets.size());
  REQUIRE(output.text.size() == output.json.size());
  return output;
}

// `printed` is `exact` as the text report prints it: rounded to `decimals` decimals.
void CheckPrinted(double printed, double exact, int decimals) {
  CAPTURE(printed, exact, decimals);
  const double half_unit = 0.5 * std::pow(10.0, -decimals);
  CHECK(std::abs(printed - exact) <= half_unit + 1e-9 * std::max(1.0, std::abs(exact)));
}

// Checks one run's JSON object and text block: they are the run that was asked for (`target`,
// `workload_name`, the request's figures), every requested operation was performed and
// succeeded in the workload's proportions, the derived figures follow from the counted ones, and
// the two formats say the same.
void CheckRun(const Request& request, const std::string& target, const std::string& workload_name,
              const nlohmann::json& run, const TextRun& text) {
  INFO("target " << target << ", workload " << workload_name);
  const auto workload = ycsb::Workload::Named(workload_name);
  REQUIRE(workload);

  // The run that was asked for.
  CHECK(run.at("target").get<std::string>() == target);
  CHECK(run.at("workload").get<std::string>() == workload_name);
  CHECK(text.target == target);
  CHECK(text.workload == workload_name);
  CHECK(run.at("distribution").get<std::string>() ==
        std::string(ycsb::DistributionName(workload->distribution)));
  CHECK(run.at("records").get<uint64_t>() == request.records);
  CHECK(run.at("threads").get<int>() == request.threads);
  CHECK(run.at("inflight").get<int>() == request.inflight);

  // Every operation asked for was performed and succeeded, in the workload's mix.
  REQUIRE(run.contains("ops"));
  const nlohmann::json& ops = run.at("ops");
  std::set<std::string> expected_ops;
  for (auto [op, share] : workload->mix) expected_ops.insert(std::string(ycsb::OpName(op)));
  std::set<std::string> reported_ops;
  for (auto& [name, op] : ops.items()) reported_ops.insert(name);
  CHECK(reported_ops == expected_ops);
  uint64_t total = 0;
  for (auto& [name, op] : ops.items()) {
    INFO("operation " << name);
    total += op.at("count").get<uint64_t>();
    CHECK(op.at("errors").get<uint64_t>() == 0);
  }
  CHECK(total == request.operations);
  CHECK(run.at("operations").get<uint64_t>() == request.operations);
  for (auto [op, share] : workload->mix) {
    const std::string name(ycsb::OpName(op));
    if (!ops.contains(name)) continue;  // Reported above.
    INFO("operation " << name);
    const double measured = ops.at(name).at("count").get<double>() / request.operations;
    CHECK(measured == Approx(share).margin(0.05));
  }

  // Derived figures follow from the counted ones.
  const double seconds = run.at("run_seconds").get<double>();
  REQUIRE(seconds > 0);  // No --warmup: the whole run is measured.
  CHECK(run.at("throughput_ops_per_sec").get<double>() ==
        Approx(request.operations / seconds).epsilon(1e-9));
  for (auto& [name, op] : ops.items()) {
    INFO("operation " << name);
    if (name == "SEND-BATCH") {
      REQUIRE(op.contains("messages_per_sec"));
      CHECK(op.at("messages_per_sec").get<double>() ==
            Approx(request.batch_size * op.at("count").get<double>() / seconds).epsilon(1e-9));
    } else {
      CHECK_FALSE(op.contains("messages_per_sec"));
    }
  }

  // The text report says what the JSON says.
  std::set<std::string> text_ops;
  for (auto& [name, metrics] : text.metrics) {
    if (name != "OVERALL") text_ops.insert(name);
  }
  CHECK(text_ops == reported_ops);
  REQUIRE(text.metrics.count("OVERALL") == 1);
  const auto& overall = text.metrics.at("OVERALL");
  REQUIRE(overall.count("RunTime(ms)") == 1);
  REQUIRE(overall.count("Throughput(ops/sec)") == 1);
  CheckPrinted(overall.at("RunTime(ms)"), seconds * 1000, 0);
  CheckPrinted(overall.at("Throughput(ops/sec)"), run.at("throughput_ops_per_sec").get<double>(),
               1);
  for (auto& [name, op] : ops.items()) {
    INFO("operation " << name);
    REQUIRE(text.metrics.count(name) == 1);
    const auto& metrics = text.metrics.at(name);
    for (const char* metric :
         {"Operations", "Return=OK", "AverageLatency(us)", "MaxLatency(us)",
          "50thPercentileLatency(us)", "95thPercentileLatency(us)", "99thPercentileLatency(us)"}) {
      INFO("metric " << metric);
      REQUIRE(metrics.count(metric) == 1);
    }
    const double count = op.at("count").get<double>();
    CHECK(metrics.at("Operations") == count);
    CHECK(metrics.at("Return=OK") == count);
    const double text_errors = metrics.count("Return=ERROR") ? metrics.at("Return=ERROR") : 0;
    CHECK(text_errors == op.at("errors").get<double>());
    CheckPrinted(metrics.at("AverageLatency(us)"), op.at("avg_us").get<double>(), 1);
    CheckPrinted(metrics.at("MaxLatency(us)"), op.at("max_us").get<double>(), 1);
    CheckPrinted(metrics.at("50thPercentileLatency(us)"), op.at("p50_us").get<double>(), 1);
    CheckPrinted(metrics.at("95thPercentileLatency(us)"), op.at("p95_us").get<double>(), 1);
    CheckPrinted(metrics.at("99thPercentileLatency(us)"), op.at("p99_us").get<double>(), 1);
    if (name == "SEND-BATCH") {
      REQUIRE(metrics.count("Throughput(messages/sec)") == 1);
      const double messages_per_sec = metrics.at("Throughput(messages/sec)");
      CheckPrinted(messages_per_sec, op.at("messages_per_sec").get<double>(), 1);
      // From the text alone: operations x batch size / RunTime, within RunTime's rounding to
      // whole milliseconds (the true run time is within 0.5 ms of it) and the rate's to one
      // decimal. A run printed as 0 ms gives no rate to compare.
      const double run_ms = overall.at("RunTime(ms)");
      if (run_ms >= 1) {
        const double from_text = request.batch_size * metrics.at("Operations") / (run_ms / 1000);
        CHECK(std::abs(messages_per_sec - from_text) <=
              from_text * 0.5 / (run_ms - 0.5) + 0.05 + 1e-6);
      }
    } else {
      CHECK(metrics.count("Throughput(messages/sec)") == 0);
    }
  }
}

// Checks every run of `output` (workloads outermost, then targets, as the tool runs them).
void CheckRuns(const Request& request, const BenchOutput& output) {
  size_t i = 0;
  for (const auto& workload : request.workloads) {
    for (const auto& target : request.targets) {
      CheckRun(request, target, workload, output.json[i], output.text[i]);
      ++i;
    }
  }
}

// The messages in the store the `engine` target left for `workload` under the run's
// --data-dir: scrollback-bench keeps an in-process target's data in
// <data-dir>/<target>-<workload>, and the engine target its ShardStore in engine/ there.
struct StoredMessages {
  uint64_t conversations = 0;  // Conversations 1..conversations exist.
  std::vector<Message> messages;
};

StoredMessages ReadEngineStore(const testing::TempDir& dir, const std::string& workload) {
  const std::string path = dir.Sub("data") + "/engine-" + workload + "/engine";
  auto opened = ShardStore::Open(ShardOptions{}, path);
  REQUIRE(opened.ok());
  std::unique_ptr<ShardStore> store = std::move(opened).value();
  StoredMessages stored;
  for (uint64_t conv = 1; store->GetConversation(conv).ok(); ++conv) {
    stored.conversations = conv;
    HistoryQuery query;
    query.conv_id = conv;
    query.direction = Direction::kOldestFirst;
    query.limit = 200;
    for (;;) {
      auto page = store->ReadHistory(query);
      REQUIRE(page.ok());
      stored.messages.insert(stored.messages.end(), page->messages.begin(), page->messages.end());
      if (!page->has_more) break;
      query.cursor_seq = page->next_cursor_seq;
    }
  }
  return stored;
}

// Client ids "<phase>-<n>" by phase: "load" (load phase, n = record), "run" (inserts and sends
// of the run, n = record), "batch" (batched sends, n = a counter). Fails on any other id and on
// an id stored twice.
std::map<std::string, std::set<uint64_t>> IdsByPhase(const StoredMessages& stored) {
  std::map<std::string, std::set<uint64_t>> ids;
  std::vector<std::string> unexpected;  // Ids of another form, or stored twice.
  for (const Message& m : stored.messages) {
    const std::string& id = m.client_msg_id;
    const size_t dash = id.find('-');
    const std::string phase = id.substr(0, dash);
    const bool well_formed = dash != std::string::npos && dash + 1 < id.size() &&
                             id.find_first_not_of("0123456789", dash + 1) == std::string::npos &&
                             (phase == "load" || phase == "run" || phase == "batch");
    if (!well_formed || !ids[phase].insert(std::stoull(id.substr(dash + 1))).second) {
      unexpected.push_back(id);
    }
  }
  CHECK(unexpected.empty());
  return ids;
}

// The load phase left exactly records 0..records-1, each in the conversation its hash picks
// (YCSB's hashed insert order, docs/benchmarks.md).
void CheckLoaded(const Request& request, const StoredMessages& stored,
                 const std::set<uint64_t>& loaded) {
  CHECK(stored.conversations == request.records / request.messages_per_conversation);
  REQUIRE(loaded.size() == request.records);
  CHECK(*loaded.begin() == 0);
  CHECK(*loaded.rbegin() == request.records - 1);
  std::vector<std::string> misplaced;  // Loaded records not in their conversation.
  for (const Message& m : stored.messages) {
    if (m.client_msg_id.rfind("load-", 0) != 0) continue;
    const uint64_t record = std::stoull(m.client_msg_id.substr(5));
    if (m.conv_id != 1 + ycsb::FnvHash64(record) % stored.conversations) {
      misplaced.push_back(m.client_msg_id);
    }
  }
  CHECK(misplaced.empty());
}

TEST_CASE("a short scrollback-bench run performs and reports every operation of every workload") {
  testing::TempDir dir;
  Request request;
  request.workloads = {"a", "d", "e", "chat"};
  request.targets = {"raw", "engine"};
  request.records = 2000;
  request.operations = 5000;
  const BenchOutput output = RunBench(dir, request);
  CheckRuns(request, output);

  // What the engine target stored: the whole load, and one message per insert or send.
  for (size_t w = 0; w < request.workloads.size(); ++w) {
    const std::string& workload = request.workloads[w];
    INFO("workload " << workload);
    const nlohmann::json& ops = output.json[w * request.targets.size() + 1].at("ops");
    REQUIRE(output.json[w * request.targets.size() + 1].at("target").get<std::string>() ==
            "engine");
    uint64_t sends = 0;
    for (const char* op : {"INSERT", "SEND"}) {
      if (ops.contains(op)) sends += ops.at(op).at("count").get<uint64_t>();
    }
    const StoredMessages stored = ReadEngineStore(dir, workload);
    auto ids = IdsByPhase(stored);
    CheckLoaded(request, stored, ids["load"]);
    CHECK(ids["run"].size() == sends);
    if (!ids["run"].empty()) {
      CHECK(*ids["run"].begin() >= request.records);  // Run inserts follow the loaded records.
    }
    CHECK(ids["batch"].empty());
    CHECK(stored.messages.size() == request.records + sends);
  }
}

TEST_CASE("a batch run stores batch-size messages per operation and a read-only run stores none") {
  testing::TempDir dir;
  Request request;
  request.workloads = {"c", "batch"};
  request.targets = {"engine"};
  request.records = 2000;
  request.operations = 500;
  request.batch_size = 10;
  request.body_bytes = 64;
  const BenchOutput output = RunBench(dir, request);
  CheckRuns(request, output);

  // c: every read found its loaded message (no errors, checked above); nothing was added.
  const StoredMessages read_only = ReadEngineStore(dir, "c");
  auto read_only_ids = IdsByPhase(read_only);
  CheckLoaded(request, read_only, read_only_ids["load"]);
  CHECK(read_only.messages.size() == request.records);

  // batch: the load plus batch_size messages per SEND-BATCH operation, every body of
  // --body-bytes bytes.
  const uint64_t batches = output.json[1].at("ops").at("SEND-BATCH").at("count").get<uint64_t>();
  CHECK(batches == request.operations);
  const StoredMessages batched = ReadEngineStore(dir, "batch");
  auto batched_ids = IdsByPhase(batched);
  CheckLoaded(request, batched, batched_ids["load"]);
  CHECK(batched_ids["batch"].size() == batches * request.batch_size);
  CHECK(batched_ids["run"].empty());
  CHECK(batched.messages.size() == request.records + batches * request.batch_size);
  const auto wrong_size =
      std::count_if(batched.messages.begin(), batched.messages.end(),
                    [&](const Message& m) { return m.body.size() != request.body_bytes; });
  CHECK(wrong_size == 0);
}

TEST_CASE(
    "scrollback-bench runs the embedded cluster, directly and through a router, and the echo") {
  testing::TempDir dir;
  Request request;
  request.workloads = {"c", "chat", "batch"};
  request.targets = {"embedded", "embedded-router", "echo"};
  request.records = 1000;
  request.operations = 2000;
  request.inflight = 8;
  request.batch_size = 10;
  // Workload c reads loaded messages only: no errors (CheckRun) means each was found through
  // the cluster, directly and through the router.
  CheckRuns(request, RunBench(dir, request));
}

// The failover scenario: every kill is measured (one figure per shard whose primary died), and a
// semi-sync run loses no acknowledged send. Timings are reported, not asserted.
TEST_CASE("the failover scenario measures every kill and a semi-sync run loses nothing") {
  testing::TempDir dir;
  const std::string json_path = dir.Sub("failover.json");
  const std::string log_path = dir.Sub("bench.log");
  {
    testing::ChildProcess bench({SCROLLBACK_BENCH, "--failover-kills", "2", "--ack", "semi-sync",
                                 "--json", json_path, "--data-dir", dir.Sub("data")},
                                log_path);
    int status = bench.Stop(0, std::chrono::seconds(150));  // Signal 0: just wait.
    INFO("log:\n" << ReadFile(log_path));
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
  }
  auto report = nlohmann::json::parse(ReadFile(json_path), nullptr, /*allow_exceptions=*/false);
  REQUIRE(report.is_object());
  CHECK(report["scenario"] == "failover");
  CHECK(report["kills"] == 2);
  REQUIRE(report["unavailable_ms"].is_array());
  CHECK(report["unavailable_ms"].size() >= 2);  // At least one shard failed over per kill.
  for (const auto& ms : report["unavailable_ms"]) CHECK(ms.get<double>() > 0);
  CHECK(report["acknowledged"].get<uint64_t>() > 0);
  CHECK(report["lost"] == 0);
  CHECK(ReadFile(log_path).find("[FAILOVER] semi-sync acks, 2 kills") != std::string::npos);
}

// The resharding scenario on a small shard: a split and a move are measured and nothing
// acknowledged is lost. Timings are reported, not asserted.
TEST_CASE("the resharding scenario measures a split and a move and loses nothing") {
  testing::TempDir dir;
  const std::string json_path = dir.Sub("reshard.json");
  const std::string log_path = dir.Sub("bench.log");
  {
    testing::ChildProcess bench(
        {SCROLLBACK_BENCH, "--reshard-mb", "4", "--json", json_path, "--data-dir", dir.Sub("data")},
        log_path);
    int status = bench.Stop(0, std::chrono::seconds(150));  // Signal 0: just wait.
    INFO("log:\n" << ReadFile(log_path));
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
  }
  auto report = nlohmann::json::parse(ReadFile(json_path), nullptr, /*allow_exceptions=*/false);
  REQUIRE(report.is_array());
  REQUIRE(report.size() == 1);
  const auto& run = report[0];
  CHECK(run["scenario"] == "reshard");
  CHECK(run["shard_mb"].get<double>() > 0);
  CHECK(run["split_gap_ms"].get<double>() > 0);
  CHECK(run["move_mb"].get<double>() > 0);
  CHECK(run["acknowledged"].get<uint64_t>() > 0);
  CHECK(run["lost"] == 0);
  CHECK(ReadFile(log_path).find("[RESHARD] shard of") != std::string::npos);
}

}  // namespace
}  // namespace scrollback
