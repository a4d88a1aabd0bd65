// scrollback-bench: a YCSB-style load generator for Scrollback. See docs/benchmarks.md.
//
// For each workload and target given, in turn: a load phase inserts --records messages
// (hashed insert order, spread over conversations), then a run phase performs --operations
// operations (or runs for --duration seconds) from --threads client threads with --inflight
// calls in flight each, optionally paced at --target-rate operations/s overall (open loop:
// latency counts from each operation's intended start, so queueing is not hidden). Results are
// printed in YCSB's format and, with --json, written as a JSON report.
#include <fmt/format.h>
#include <kj/vector.h>
#include <pthread.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "ycsb/generators.h"
#include "ycsb/histogram.h"
#include "ycsb/rpc_targets.h"
#include "ycsb/target.h"
#include "ycsb/workload.h"

namespace scrollback::ycsb {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchOptions {
  uint64_t records = 100'000;
  uint64_t operations = 100'000;
  double duration_s = 0;  // > 0: run for this long instead of `operations`.
  double warmup_s = 0;    // Operations finishing earlier are not recorded.
  int threads = 2;
  int inflight = 16;       // Per thread, for pipelined targets.
  double target_rate = 0;  // Operations/s over all threads; 0 = as fast as possible.
  uint32_t messages_per_conversation = 100;
  uint32_t members = 5;  // Per conversation.
  uint32_t body_bytes = 200;
  uint64_t seed = 1;
};

// Where each record lives: (conversation, seq) packed as conv << 32 | seq. Sized for the load
// plus every insert the run may make.
class RecordTable {
 public:
  explicit RecordTable(uint64_t capacity) : slots_(capacity) {}
  void Set(uint64_t record, uint64_t conv, uint64_t seq) {
    slots_[record].store(conv << 32 | seq, std::memory_order_release);
  }
  // (conv, seq); conv 0 while the record's insert has not completed.
  std::pair<uint64_t, uint64_t> Get(uint64_t record) const {
    uint64_t v = slots_[record].load(std::memory_order_acquire);
    return {v >> 32, v & 0xffffffff};
  }
  uint64_t capacity() const { return slots_.size(); }

 private:
  std::vector<std::atomic<uint64_t>> slots_;
};

// The chat data set the workloads run against.
struct DataSet {
  uint64_t conversations = 0;
  uint64_t users = 0;
  uint32_t members = 0;

  // Record `k` goes to conversation 1 + hash(k) % conversations (YCSB's hashed insert order).
  uint64_t ConversationOf(uint64_t record) const { return 1 + FnvHash64(record) % conversations; }
  // The i-th member of a conversation (i < members); member 0 sends.
  uint64_t Member(uint64_t conv, uint32_t i) const {
    return 1 + FnvHash64(conv * 1'000'003 + i) % users;
  }
};

// Per-thread measurements.
struct Stats {
  std::map<Op, LatencyHistogram> latency;
  std::map<Op, uint64_t> errors;
};

struct PhaseResult {
  double seconds = 0;
  uint64_t operations = 0;
  Stats stats;
  std::vector<std::pair<double, double>> throughput_over_time;  // (second, ops/s)
};

class Runner {
 public:
  Runner(const BenchOptions& options, const Workload& workload, Target& target)
      : options_(options),
        workload_(workload),
        target_(target),
        records_(options.records + options.operations + 1'000'000),
        inserts_(options.records) {
    data_.conversations =
        std::max<uint64_t>(1, options.records / options.messages_per_conversation);
    data_.users = std::max<uint64_t>(100, data_.conversations * 2);
    data_.members = options.members;
  }

  // Creates the conversations and inserts the records.
  Status Load() {
    std::atomic<uint64_t> next_conv{1};
    std::atomic<uint64_t> next_record{0};
    std::atomic<bool> failed{false};
    std::string error;
    std::mutex error_mu;
    auto fail = [&](const Status& s) {
      std::lock_guard lock(error_mu);
      if (!failed.exchange(true)) error = s.ToString();
    };
    // Every conversation exists before the first message is sent.
    RunThreads([&](Session& session, kj::AsyncIoContext& io, int) {
      for (uint64_t conv; !failed && (conv = next_conv++) <= data_.conversations;) {
        std::vector<uint64_t> members;
        for (uint32_t i = 1; i < data_.members; ++i) members.push_back(data_.Member(conv, i));
        Status s =
            session.CreateConversation(conv, data_.Member(conv, 0), members).wait(io.waitScope);
        if (!s.ok() && s.code() != ErrorCode::kAlreadyExists) fail(s);
      }
    });
    RunThreads([&](Session& session, kj::AsyncIoContext& io, int) {
      for (uint64_t record; !failed && (record = next_record++) < options_.records;) {
        uint64_t conv = data_.ConversationOf(record);
        auto seq =
            session
                .Send(conv, data_.Member(conv, 0), "load-" + std::to_string(record), Body(record))
                .wait(io.waitScope);
        if (!seq.ok())
          fail(seq.status());
        else
          records_.Set(record, conv, *seq);
      }
    });
    // inserts_ started at --records: every loaded record counts as inserted.
    if (failed) return Status::Internal("load failed: " + error);
    // Work the load left behind (the inbox fan-out of every loaded message) must not be
    // measured as part of the run.
    return target_.WaitIdle(std::chrono::seconds(120));
  }

  PhaseResult Run() {
    PhaseResult result;
    std::vector<Stats> per_thread(options_.threads);
    std::atomic<uint64_t> issued{0};
    std::atomic<uint64_t> completed{0};
    const auto start = Clock::now();
    const auto warmup_end = start + Seconds(options_.warmup_s);
    const auto deadline =
        options_.duration_s > 0 ? start + Seconds(options_.duration_s) : Clock::time_point::max();
    // One progress line a second, and throughput over time for the report.
    std::atomic<bool> done{false};
    std::thread reporter([&] {
      uint64_t last = 0;
      for (int second = 1; !done; ++second) {
        auto wake = start + std::chrono::seconds(second);
        while (!done && Clock::now() < wake)
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        if (done) break;
        uint64_t now = completed.load();
        result.throughput_over_time.emplace_back(second, static_cast<double>(now - last));
        fmt::print(stderr, "{} sec: {} operations; {} current ops/sec\n", second, now, now - last);
        last = now;
      }
    });
    const double per_thread_interval =
        options_.target_rate > 0 ? options_.threads / options_.target_rate : 0;
    RunThreads([&](Session& session, kj::AsyncIoContext& io, int thread) {
      Rng rng(options_.seed * 7919 + thread);
      OpChooser ops(workload_);
      KeyChooser keys(workload_.distribution, options_.records, inserts_);
      ZipfianGenerator conv_zipf(1, data_.conversations);
      ScrambledZipfianGenerator user_zipf(1, data_.users);
      Stats& stats = per_thread[thread];
      const int chains = target_.pipelined() ? options_.inflight : 1;
      uint64_t local_index = 0;
      const auto thread_start = Clock::now();
      // Each chain runs one operation after another; `chains` of them keep calls in flight.
      std::function<kj::Promise<void>()> next = [&]() -> kj::Promise<void> {
        if (Clock::now() >= deadline) return kj::READY_NOW;
        if (options_.duration_s <= 0 && issued.fetch_add(1) >= options_.operations) {
          return kj::READY_NOW;
        }
        auto intended = Clock::now();
        if (per_thread_interval > 0) {
          intended = thread_start + Seconds(per_thread_interval * local_index++);
          auto now = Clock::now();
          if (intended > now) {
            return io.provider->getTimer()
                .afterDelay(
                    std::chrono::duration_cast<std::chrono::nanoseconds>(intended - now).count() *
                    kj::NANOSECONDS)
                .then([&, intended]() {
                  return Issue(session, rng, ops, keys, conv_zipf, user_zipf, intended, warmup_end,
                               stats, completed, next);
                });
          }
        }
        return Issue(session, rng, ops, keys, conv_zipf, user_zipf, intended, warmup_end, stats,
                     completed, next);
      };
      kj::Vector<kj::Promise<void>> running;
      for (int c = 0; c < chains; ++c) running.add(next());
      kj::joinPromises(running.releaseAsArray()).wait(io.waitScope);
    });
    done = true;
    reporter.join();
    // The measured window: from the end of the warm-up to the end of the run.
    const auto end = Clock::now();
    result.seconds = end > warmup_end
                         ? std::chrono::duration<double>(end - std::max(start, warmup_end)).count()
                         : 0;
    if (result.seconds == 0)
      fmt::print(stderr, "scrollback-bench: the run ended within --warmup; nothing was measured\n");
    for (auto& s : per_thread) {
      for (auto& [op, h] : s.latency) result.stats.latency[op].Merge(h);
      for (auto& [op, n] : s.errors) result.stats.errors[op] += n;
    }
    for (auto& [op, h] : result.stats.latency) result.operations += h.count();
    return result;
  }

 private:
  static Clock::duration Seconds(double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  }

  std::string Body(uint64_t n) const {
    std::string body(options_.body_bytes, 'a');
    for (size_t i = 0; i < body.size(); i += 16) body[i] = static_cast<char>('a' + (n + i) % 26);
    return body;
  }

  // Performs one operation of the workload and records its latency from `intended`.
  kj::Promise<void> Issue(Session& session, Rng& rng, const OpChooser& ops, KeyChooser& keys,
                          ZipfianGenerator& conv_zipf, ScrambledZipfianGenerator& user_zipf,
                          Clock::time_point intended, Clock::time_point warmup_end, Stats& stats,
                          std::atomic<uint64_t>& completed,
                          std::function<kj::Promise<void>()>& next) {
    const Op op = ops.Next(rng);
    kj::Promise<Status> call = Perform(session, rng, op, keys, conv_zipf, user_zipf);
    return call.then([this, op, intended, warmup_end, &stats, &completed, &next](Status status) {
      auto now = Clock::now();
      completed.fetch_add(1, std::memory_order_relaxed);
      if (now >= warmup_end) {
        if (status.ok()) {
          stats.latency[op].Record(
              std::chrono::duration_cast<std::chrono::nanoseconds>(now - intended).count());
        } else {
          ++stats.errors[op];
        }
      }
      return next();
    });
  }

  kj::Promise<Status> Perform(Session& session, Rng& rng, Op op, KeyChooser& keys,
                              ZipfianGenerator& conv_zipf, ScrambledZipfianGenerator& user_zipf) {
    switch (op) {
      case Op::kRead: {
        auto [conv, seq] = records_.Get(keys.Next(rng));
        return session.GetMessage(conv, seq);
      }
      case Op::kUpdate: {
        auto [conv, seq] = records_.Get(keys.Next(rng));
        return session.Edit(conv, seq, data_.Member(conv, 0), Body(rng()));
      }
      case Op::kReadModifyWrite: {
        auto [conv, seq] = records_.Get(keys.Next(rng));
        std::string body = Body(rng());
        uint64_t editor = data_.Member(conv, 0);
        return session.GetMessage(conv, seq).then(
            [&session, conv, seq, editor,
             body = std::move(body)](Status read) mutable -> kj::Promise<Status> {
              if (!read.ok()) return read;
              return session.Edit(conv, seq, editor, std::move(body));
            });
      }
      case Op::kInsert:
      case Op::kSend: {
        uint64_t record = inserts_.Next();
        uint64_t conv = op == Op::kSend ? conv_zipf.Next(rng) : data_.ConversationOf(record);
        return session
            .Send(conv, data_.Member(conv, 0), "run-" + std::to_string(record), Body(record))
            .then([this, record, conv](Result<uint64_t> seq) -> Status {
              if (!seq.ok()) return seq.status();
              if (record < records_.capacity()) {
                records_.Set(record, conv, *seq);
                inserts_.Acknowledge(record);
              }
              return Status::Ok();
            });
      }
      case Op::kScan: {
        auto [conv, seq] = records_.Get(keys.Next(rng));
        HistoryQuery query;
        query.conv_id = conv;
        query.direction = Direction::kOldestFirst;
        query.cursor_seq = seq - 1;
        query.limit = 1 + static_cast<uint32_t>(rng() % workload_.max_scan_length);
        return session.History(query);
      }
      case Op::kHistoryPage: {
        HistoryQuery query;
        query.conv_id = conv_zipf.Next(rng);
        query.limit = 50;
        return session.History(query);
      }
      case Op::kSendBatch: {
        std::vector<SendMessageRequest> sends;
        sends.reserve(workload_.batch_size);
        for (uint32_t i = 0; i < workload_.batch_size; ++i) {
          uint64_t conv = conv_zipf.Next(rng);
          uint64_t id = batch_sends_.fetch_add(1, std::memory_order_relaxed);
          sends.push_back({conv, data_.Member(conv, 0), "batch-" + std::to_string(id), Body(id)});
        }
        return session.SendBatch(std::move(sends));
      }
      case Op::kInboxList:
        return session.InboxList(user_zipf.Next(rng), 20);
      case Op::kMarkRead: {
        uint64_t conv = conv_zipf.Next(rng);
        return session.MarkRead(data_.Member(conv, 1 % data_.members), conv, 1 + rng() % 50);
      }
    }
    return Status::Internal("unknown op");
  }

  // Runs `body(session, io, thread_index)` on --threads threads, each with its own event loop
  // and session, and waits for all.
  template <typename Body>
  void RunThreads(Body&& body) {
    std::vector<std::thread> threads;
    for (int t = 0; t < options_.threads; ++t) {
      threads.emplace_back([&, t] {
        pthread_setname_np(pthread_self(), "bench-client");
        auto io = kj::setupAsyncIo();
        auto session = target_.NewSession(*io.provider);
        body(*session, io, t);
      });
    }
    for (auto& t : threads) t.join();
  }

  const BenchOptions options_;
  const Workload workload_;
  Target& target_;
  RecordTable records_;
  InsertCounter inserts_;
  DataSet data_;
  std::atomic<uint64_t> batch_sends_{0};  // Client ids of batched sends.
};

// YCSB's output format for one phase.
void PrintYcsb(const std::string& target, const Workload& workload, const PhaseResult& r) {
  fmt::print("# target={} workload={} ({})\n", target, workload.name, workload.description);
  fmt::print("[OVERALL], RunTime(ms), {:.0f}\n", r.seconds * 1000);
  fmt::print("[OVERALL], Throughput(ops/sec), {:.1f}\n",
             r.seconds > 0 ? r.operations / r.seconds : 0);
  for (auto& [op, h] : r.stats.latency) {
    auto name = OpName(op);
    fmt::print("[{}], Operations, {}\n", name, h.count());
    if (op == Op::kSendBatch && r.seconds > 0) {
      fmt::print("[{}], Throughput(messages/sec), {:.1f}\n", name,
                 h.count() * workload.batch_size / r.seconds);
    }
    fmt::print("[{}], AverageLatency(us), {:.1f}\n", name, h.mean() / 1000);
    fmt::print("[{}], MinLatency(us), {:.1f}\n", name, h.min() / 1000.0);
    fmt::print("[{}], MaxLatency(us), {:.1f}\n", name, h.max() / 1000.0);
    fmt::print("[{}], 50thPercentileLatency(us), {:.1f}\n", name, h.Percentile(0.50) / 1000.0);
    fmt::print("[{}], 95thPercentileLatency(us), {:.1f}\n", name, h.Percentile(0.95) / 1000.0);
    fmt::print("[{}], 99thPercentileLatency(us), {:.1f}\n", name, h.Percentile(0.99) / 1000.0);
    fmt::print("[{}], Return=OK, {}\n", name, h.count());
    auto errors = r.stats.errors.find(op);
    if (errors != r.stats.errors.end())
      fmt::print("[{}], Return=ERROR, {}\n", name, errors->second);
  }
}

nlohmann::json ToJson(const std::string& target, const Workload& workload, const BenchOptions& o,
                      const PhaseResult& r) {
  nlohmann::json j;
  j["target"] = target;
  j["workload"] = workload.name;
  j["distribution"] = DistributionName(workload.distribution);
  j["threads"] = o.threads;
  j["inflight"] = o.inflight;
  j["records"] = o.records;
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

Result<std::unique_ptr<Target>> MakeTarget(const std::string& name, const TargetOptions& options) {
  if (name == "raw") return NewRawTarget(options);
  if (name == "engine") return NewEngineTarget(options);
  if (name == "embedded") return NewEmbeddedTarget(options);
  if (name == "echo") return NewEchoTarget(options);
  if (name == "embedded-router") return NewEmbeddedRouterTarget(options);
  if (name.rfind("cluster=", 0) == 0) return NewClusterTarget(name.substr(8));
  if (name.rfind("router=", 0) == 0) return NewRouterTarget(name.substr(7));
  return Status::InvalidArgument("target", "unknown target " + name +
                                               " (raw, engine, embedded, embedded-router, echo, "
                                               "cluster=HOST:PORT, router=HOST:PORT)");
}

int Main(int argc, char** argv) {
  CLI::App app{"scrollback-bench: YCSB-style benchmark for Scrollback."};
  BenchOptions o;
  std::vector<std::string> workloads = {"a"};
  std::vector<std::string> targets = {"engine"};
  std::string json_path;
  std::string data_dir;
  app.add_option("--workload,-w", workloads, "a b c d e f chat send history batch")->delimiter(',');
  app.add_option("--target,-t", targets,
                 "raw engine embedded embedded-router echo cluster=HOST:PORT router=HOST:PORT")
      ->delimiter(',');
  app.add_option("--records", o.records)->check(CLI::Range(uint64_t{1}, uint64_t{100'000'000}));
  app.add_option("--operations", o.operations)
      ->check(CLI::Range(uint64_t{1}, uint64_t{1'000'000'000}));
  app.add_option("--duration", o.duration_s, "Seconds to run (instead of --operations)");
  app.add_option("--warmup", o.warmup_s, "Seconds not recorded at the start");
  app.add_option("--threads", o.threads)->check(CLI::Range(1, 256));
  app.add_option("--inflight", o.inflight, "Calls in flight per thread (RPC targets)")
      ->check(CLI::Range(1, 4096));
  app.add_option("--target-rate", o.target_rate, "Operations/s overall (open loop); 0: max");
  app.add_option("--body-bytes", o.body_bytes)->check(CLI::Range(1u, 65536u));
  uint32_t batch_size = 100;
  app.add_option("--batch-size", batch_size, "Sends per SEND-BATCH operation (workload batch)")
      ->check(CLI::Range(1u, 1000u));
  app.add_option("--members", o.members)->check(CLI::Range(2u, 1000u));
  app.add_option("--messages-per-conversation", o.messages_per_conversation)
      ->check(CLI::Range(1u, 1'000'000u));
  app.add_option("--seed", o.seed);
  app.add_option("--json", json_path, "Write a JSON report here");
  app.add_option("--data-dir", data_dir, "Where in-process targets keep data (default: temp)");
  CLI11_PARSE(app, argc, argv);

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
      target_options.body_bytes = o.body_bytes;
      auto target = MakeTarget(target_name, target_options);
      if (!target.ok()) {
        fmt::print(stderr, "scrollback-bench: {}\n", target.status().ToString());
        return 2;
      }
      Runner runner(o, *workload, **target);
      Status loaded = runner.Load();
      if (!loaded.ok()) {
        fmt::print(stderr, "scrollback-bench: {}\n", loaded.ToString());
        status = 1;
        continue;
      }
      PhaseResult result = runner.Run();
      PrintYcsb(target_name, *workload, result);
      report.push_back(ToJson(target_name, *workload, o, result));
    }
  }
  if (!json_path.empty()) std::ofstream(json_path) << report.dump(2) << "\n";
  if (temporary) std::filesystem::remove_all(data_dir);
  return status;
}

}  // namespace
}  // namespace scrollback::ycsb

int main(int argc, char** argv) { return scrollback::ycsb::Main(argc, argv); }
