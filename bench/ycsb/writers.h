// Writers for the cluster scenarios of scrollback-bench (failover, resharding): one chain of
// sends per conversation on one event loop; each send is retried with the same client_msg_id
// until acknowledged (idempotent), so a crash, a switchover or a split never leaves a send
// half-known. Every acknowledgement is kept with its timings.
#pragma once

#include <kj/async-io.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "scrollback/router/chat_client.h"

namespace scrollback::ycsb {

using SteadyTime = std::chrono::steady_clock::time_point;

struct Acked {
  uint64_t conv = 0;
  std::string id;
  uint64_t shard_id = 0;
  SteadyTime first_started;  // When the send's first attempt began (retries included after).
  SteadyTime started;        // When the attempt that was acknowledged began.
  SteadyTime answered;
};

// One chain of sends per conversation; each send is retried with the same client_msg_id until
// acknowledged (idempotent), so a crash never leaves a send half-known.
class Writers {
 public:
  Writers(kj::AsyncIoContext& io, ChatClient& client, std::vector<uint64_t> convs,
          std::vector<uint64_t> shards, WriteOptions write)
      : io_(io),
        client_(client),
        convs_(std::move(convs)),
        shards_(std::move(shards)),
        write_(write),
        next_(convs_.size(), 0) {}

  void Start() {
    for (size_t i = 0; i < convs_.size(); ++i) {
      chains_.push_back(Chain(i).eagerlyEvaluate([](kj::Exception&&) {}));
    }
  }
  // Lets every chain finish the send it is on (bounded), then stops them.
  void Stop() {
    stopping_ = true;
    Pump([&] { return running_ == 0; }, std::chrono::seconds(60));
    chains_.clear();
  }
  // Runs the event loop until `done()` or `limit`; false on timeout.
  template <typename Done>
  bool Pump(Done&& done, std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done()) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      io_.provider->getTimer().afterDelay(5 * kj::MILLISECONDS).wait(io_.waitScope);
    }
    return true;
  }

  // Runs the blocking `call` (a node restart, a switchover) on a thread of its own while this
  // loop keeps the writers sending; returns its result.
  template <typename Call>
  auto WhileSending(Call&& call) -> decltype(call()) {
    std::optional<decltype(call())> out;
    std::atomic<bool> done{false};
    std::thread runner([&] {
      out.emplace(call());
      done = true;
    });
    while (!done.load()) {
      io_.provider->getTimer().afterDelay(5 * kj::MILLISECONDS).wait(io_.waitScope);
    }
    runner.join();
    return std::move(*out);
  }

  // How many acknowledged sends are missing from their conversations' histories (read oldest
  // first, after `first_cursor(conv)` if given: the seq the writers' sends come after).
  Result<uint64_t> CountLost(const std::function<uint64_t(uint64_t conv)>& first_cursor = {}) {
    std::set<std::string> present;
    for (uint64_t conv : std::set<uint64_t>(convs_.begin(), convs_.end())) {
      uint64_t cursor = first_cursor ? first_cursor(conv) : 0;
      for (;;) {
        HistoryQuery q{conv, Direction::kOldestFirst, cursor, {}, 200};
        auto page = client_.ReadHistory(q).wait(io_.waitScope);
        if (!page.ok()) return page.status();
        for (const Message& m : page->messages) present.insert(m.client_msg_id);
        if (!page->has_more) break;
        cursor = page->next_cursor_seq;
      }
    }
    uint64_t lost = 0;
    for (const Acked& a : acked) lost += present.count(a.id) == 0;
    return lost;
  }

  std::vector<Acked> acked;
  uint64_t failed_attempts = 0;

 private:
  kj::Promise<void> Chain(size_t i) {
    if (stopping_) return kj::READY_NOW;
    ++running_;
    // Chain i's own ids: several chains may write to one conversation (a skewed load).
    const std::string id =
        "f" + std::to_string(convs_[i]) + "-" + std::to_string(i) + "-" + std::to_string(next_[i]);
    return Attempt(i, id, std::chrono::steady_clock::now()).then([this, i] {
      --running_;
      ++next_[i];
      return Chain(i);
    });
  }
  kj::Promise<void> Attempt(size_t i, std::string id, SteadyTime first_started) {
    const SteadyTime started = std::chrono::steady_clock::now();
    return client_.SendMessage({convs_[i], 1, id, "probe " + id}, write_)
        .then([this, i, id, first_started,
               started](Result<SendMessageResult> sent) -> kj::Promise<void> {
          if (sent.ok()) {
            acked.push_back({convs_[i], id, shards_[i], first_started, started,
                             std::chrono::steady_clock::now()});
            return kj::READY_NOW;
          }
          ++failed_attempts;
          return io_.provider->getTimer()
              .afterDelay(5 * kj::MILLISECONDS)
              .then([this, i, id, first_started] { return Attempt(i, id, first_started); });
        });
  }

  kj::AsyncIoContext& io_;
  ChatClient& client_;
  std::vector<uint64_t> convs_;
  std::vector<uint64_t> shards_;
  WriteOptions write_;
  std::vector<uint64_t> next_;
  std::vector<kj::Promise<void>> chains_;
  bool stopping_ = false;
  int running_ = 0;
};

}  // namespace scrollback::ycsb
