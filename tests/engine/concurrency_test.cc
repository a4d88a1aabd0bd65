#include <algorithm>
#include <catch2/catch.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace scrollback {
namespace {

using testing::StoreFixture;

// Catch2 2.x assertions are not thread-safe, so worker threads never call them: each worker
// records what went wrong in its own slot, and the test thread asserts after join().
using Failures = std::vector<std::string>;

void RequireNoFailures(const std::vector<Failures>& per_worker) {
  for (size_t w = 0; w < per_worker.size(); ++w) {
    INFO("worker " << w);
    REQUIRE(per_worker[w] == Failures{});
  }
}

TEST_CASE("8 concurrent writers to one conversation get dense, unique seqs") {
  StoreFixture f;
  f.Create(10, 1, {2, 3, 4, 5, 6, 7, 8});
  constexpr int kWriters = 8;
  constexpr int kPerWriter = 300;
  std::vector<std::vector<uint64_t>> seqs(kWriters);  // Slot w written only by worker w.
  std::vector<Failures> failures(kWriters);
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; i < kPerWriter; ++i) {
        auto sent = f.store->SendMessage(
            {10, static_cast<uint64_t>(w + 1), "w" + std::to_string(i), "body"});
        if (!sent.ok()) {
          failures[w].push_back("send " + std::to_string(i) + ": " + sent.status().ToString());
          continue;
        }
        seqs[w].push_back(sent->seq);
      }
    });
  }
  for (auto& t : threads) t.join();
  RequireNoFailures(failures);
  std::set<uint64_t> all;
  for (auto& per_writer : seqs) {
    CHECK(std::is_sorted(per_writer.begin(), per_writer.end()));  // Each writer's seqs grow.
    all.insert(per_writer.begin(), per_writer.end());
  }
  REQUIRE(all.size() == kWriters * kPerWriter);
  CHECK(*all.begin() == 1);
  CHECK(*all.rbegin() == kWriters * kPerWriter);
  // History agrees: every seq present exactly once.
  uint64_t expected = kWriters * kPerWriter;
  uint64_t cursor = 0;
  for (;;) {
    auto page = f.store->ReadHistory({10, Direction::kNewestFirst, cursor, std::nullopt, 200});
    REQUIRE(page.ok());
    for (auto& m : page->messages) CHECK(m.seq == expected--);
    if (!page->has_more) break;
    cursor = page->next_cursor_seq;
  }
  CHECK(expected == 0);
}

TEST_CASE("concurrent retries of one send produce exactly one message") {
  StoreFixture f;
  f.Create(10, 1);
  constexpr int kThreads = 8;
  struct Outcome {
    Status status;
    uint64_t seq = 0;
    bool duplicate = false;
  };
  std::vector<Outcome> outcomes(kThreads);  // Slot t written only by thread t.
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto sent = f.store->SendMessage({10, 1, "same-id", "hello"});
      outcomes[t].status = sent.status();
      if (!sent.ok()) return;
      outcomes[t].seq = sent->seq;
      outcomes[t].duplicate = sent->duplicate;
    });
  }
  for (auto& t : threads) t.join();
  int fresh = 0;
  for (int t = 0; t < kThreads; ++t) {
    INFO("thread " << t << ": " << outcomes[t].status.ToString());
    REQUIRE(outcomes[t].status.ok());
    CHECK(outcomes[t].seq == 1);
    if (!outcomes[t].duplicate) ++fresh;
  }
  CHECK(fresh == 1);
  CHECK(f.store->GetConversation(10)->last_seq == 1);
}

TEST_CASE("concurrent writers to many conversations keep each conversation dense") {
  StoreFixture f;
  constexpr int kConvs = 32;
  for (int c = 1; c <= kConvs; ++c) f.Create(c, 1);
  constexpr int kWriters = 8;
  std::vector<Failures> failures(kWriters);  // Slot w written only by worker w.
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; i < 400; ++i) {
        uint64_t conv = 1 + (i * 7 + w) % kConvs;
        auto sent =
            f.store->SendMessage({conv, 1, std::to_string(w) + "-" + std::to_string(i), "x"});
        if (!sent.ok()) {
          failures[w].push_back("send " + std::to_string(i) + " to conv " + std::to_string(conv) +
                                ": " + sent.status().ToString());
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  RequireNoFailures(failures);
  uint64_t total = 0;
  for (int c = 1; c <= kConvs; ++c) {
    auto conv = f.store->GetConversation(c);
    REQUIRE(conv.ok());
    uint64_t last = conv->last_seq;
    total += last;
    auto page = f.store->ReadHistory(
        {static_cast<uint64_t>(c), Direction::kOldestFirst, 0, std::nullopt, 200});
    REQUIRE(page.ok());
    REQUIRE(page->messages.size() == last);
    for (size_t i = 0; i < page->messages.size(); ++i) CHECK(page->messages[i].seq == i + 1);
  }
  CHECK(total == kWriters * 400);
}

}  // namespace
}  // namespace scrollback
