#include "runner.h"

#include <fmt/format.h>
#include <kj/vector.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace scrollback::ycsb {
namespace {

using Clock = std::chrono::steady_clock;

Clock::duration Seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

// Runs `body(session, io, thread_index)` on `threads` threads, each with its own event loop and
// session of `target`, and waits for all.
template <typename Body>
void RunThreads(int threads, Target& target, Body&& body) {
  std::vector<std::thread> running;
  for (int t = 0; t < threads; ++t) {
    running.emplace_back([&, t] {
      pthread_setname_np(pthread_self(), "bench-client");
      auto io = kj::setupAsyncIo();
      auto session = target.NewSession(*io.provider);
      body(*session, io, t);
    });
  }
  for (auto& t : running) t.join();
}

// Performs the client's next operation and records its latency from `intended` (or its
// failure) in `stats` unless it finished before `warmup_end`; then continues with `next`.
kj::Promise<void> Issue(Operations& operations, Session& session, Operations::Client& client,
                        Clock::time_point intended, Clock::time_point warmup_end, Stats& stats,
                        std::atomic<uint64_t>& completed,
                        std::function<kj::Promise<void>()>& next) {
  const Op op = operations.Next(client);
  kj::Promise<Status> call = operations.Perform(session, client, op);
  return call.then([op, intended, warmup_end, &stats, &completed, &next](Status status) {
    auto now = Clock::now();
    completed.fetch_add(1, std::memory_order_relaxed);
    if (now >= warmup_end) {
      if (status.ok()) {
        // KJ's timer measures from the loop's cached time, so a paced call can start (and a
        // call answered from memory end) a little before `intended`: that latency is 0, not a
        // negative number read as unsigned (which showed as a p99 of 2^62 ns).
        const auto nanos =
            std::chrono::duration_cast<std::chrono::nanoseconds>(now - intended).count();
        stats.latency[op].Record(static_cast<uint64_t>(std::max<int64_t>(nanos, 0)));
      } else {
        ++stats.errors[op];
      }
    }
    return next();
  });
}

}  // namespace

Runner::Runner(const RunOptions& options, Operations& operations, Target& target)
    : options_(options), operations_(operations), target_(target) {}

Status Runner::Load() {
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
  RunThreads(options_.threads, target_, [&](Session& session, kj::AsyncIoContext& io, int) {
    for (uint64_t conv; !failed && (conv = next_conv++) <= operations_.data().conversations;) {
      Status s = operations_.CreateConversation(session, conv).wait(io.waitScope);
      if (!s.ok()) fail(s);
    }
  });
  RunThreads(options_.threads, target_, [&](Session& session, kj::AsyncIoContext& io, int) {
    for (uint64_t record; !failed && (record = next_record++) < operations_.records();) {
      Status s = operations_.LoadRecord(session, record).wait(io.waitScope);
      if (!s.ok()) fail(s);
    }
  });
  if (failed) return Status::Internal("load failed: " + error);
  // Work the load left behind (the inbox fan-out of every loaded message) must not be
  // measured as part of the run.
  return target_.WaitIdle(std::chrono::seconds(120));
}

PhaseResult Runner::Run() {
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
  RunThreads(options_.threads, target_, [&](Session& session, kj::AsyncIoContext& io, int thread) {
    Operations::Client client(operations_, options_.seed * 7919 + thread);
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
                return Issue(operations_, session, client, intended, warmup_end, stats, completed,
                             next);
              });
        }
      }
      return Issue(operations_, session, client, intended, warmup_end, stats, completed, next);
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

}  // namespace scrollback::ycsb
