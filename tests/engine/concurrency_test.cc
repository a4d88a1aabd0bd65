#include <atomic>
#include <catch2/catch.hpp>
#include <set>
#include <thread>

#include "test_util.h"

namespace scrollback {
namespace {

using testing::StoreFixture;

TEST_CASE("8 concurrent writers to one conversation get dense, unique seqs") {
  StoreFixture f;
  f.Create(10, 1, {2, 3, 4, 5, 6, 7, 8});
  constexpr int kWriters = 8;
  constexpr int kPerWriter = 300;
  std::vector<std::vector<uint64_t>> seqs(kWriters);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; i < kPerWriter; ++i) {
        auto sent = f.store->SendMessage(
            {10, static_cast<uint64_t>(w + 1), "w" + std::to_string(i), "body"});
        if (!sent.ok()) {
          ++failures;
          continue;
        }
        seqs[w].push_back(sent->seq);
      }
    });
  }
  for (auto& t : threads) t.join();
  REQUIRE(failures == 0);
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
  std::vector<uint64_t> seqs(kThreads);
  std::atomic<int> fresh{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto sent = f.store->SendMessage({10, 1, "same-id", "hello"});
      REQUIRE(sent.ok());
      seqs[t] = sent->seq;
      if (!sent->duplicate) ++fresh;
    });
  }
  for (auto& t : threads) t.join();
  CHECK(fresh == 1);
  for (uint64_t seq : seqs) CHECK(seq == 1);
  CHECK(f.store->GetConversation(10)->last_seq == 1);
}

TEST_CASE("concurrent writers to many conversations keep each conversation dense") {
  StoreFixture f;
  constexpr int kConvs = 32;
  for (int c = 1; c <= kConvs; ++c) f.Create(c, 1);
  std::vector<std::thread> threads;
  for (int w = 0; w < 8; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; i < 400; ++i) {
        uint64_t conv = 1 + (i * 7 + w) % kConvs;
        REQUIRE(
            f.store->SendMessage({conv, 1, std::to_string(w) + "-" + std::to_string(i), "x"}).ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  uint64_t total = 0;
  for (int c = 1; c <= kConvs; ++c) {
    uint64_t last = f.store->GetConversation(c)->last_seq;
    total += last;
    auto page = f.store->ReadHistory(
        {static_cast<uint64_t>(c), Direction::kOldestFirst, 0, std::nullopt, 200});
    REQUIRE(page->messages.size() == last);
    for (size_t i = 0; i < page->messages.size(); ++i) CHECK(page->messages[i].seq == i + 1);
  }
  CHECK(total == 8 * 400);
}

}  // namespace
}  // namespace scrollback
