#include <catch2/catch.hpp>

#include "scrollback/engine/value_codec.h"
#include "test_util.h"

namespace scrollback {
namespace {

using testing::StoreFixture;

// Sends `n` messages, one per simulated second, bodies "m<seq>".
void Fill(StoreFixture& f, uint64_t conv, int n) {
  for (int i = 1; i <= n; ++i) {
    f.clock->Advance(1000);
    f.Send(conv, 1, "c" + std::to_string(i), "m" + std::to_string(i));
  }
}

std::vector<uint64_t> PageAll(ShardStore& store, HistoryQuery query) {
  std::vector<uint64_t> seqs;
  for (int guard = 0; guard < 1000; ++guard) {
    auto page = store.ReadHistory(query);
    REQUIRE(page.ok());
    REQUIRE(page->messages.size() <= query.limit);
    for (auto& m : page->messages) seqs.push_back(m.seq);
    if (!page->has_more) {
      CHECK(page->next_cursor_seq == 0);
      break;
    }
    query.cursor_seq = page->next_cursor_seq;
    query.from_time_ms.reset();
  }
  return seqs;
}

TEST_CASE("paging newest-first visits every message once, in descending order") {
  StoreFixture f;
  f.Create(10, 1);
  Fill(f, 10, 237);
  HistoryQuery query{10, Direction::kNewestFirst, 0, std::nullopt, 50};
  auto seqs = PageAll(*f.store, query);
  REQUIRE(seqs.size() == 237);
  for (size_t i = 0; i < seqs.size(); ++i) CHECK(seqs[i] == 237 - i);
}

TEST_CASE("paging oldest-first from a cursor returns everything after it") {
  StoreFixture f;
  f.Create(10, 1);
  Fill(f, 10, 120);
  HistoryQuery query{10, Direction::kOldestFirst, 100, std::nullopt, 7};
  auto seqs = PageAll(*f.store, query);
  REQUIRE(seqs.size() == 20);
  for (size_t i = 0; i < seqs.size(); ++i) CHECK(seqs[i] == 101 + i);
  // A page exactly at the end reports no more.
  auto last = f.store->ReadHistory({10, Direction::kOldestFirst, 119, std::nullopt, 1});
  REQUIRE(last.ok());
  CHECK(last->messages.size() == 1);
  CHECK_FALSE(last->has_more);
  auto beyond = f.store->ReadHistory({10, Direction::kOldestFirst, 120, std::nullopt, 10});
  CHECK(beyond->messages.empty());
  auto below_one = f.store->ReadHistory({10, Direction::kNewestFirst, 1, std::nullopt, 10});
  CHECK(below_one->messages.empty());
}

TEST_CASE("edits and deletes keep history dense") {
  StoreFixture f;
  f.Create(10, 1);
  Fill(f, 10, 10);
  REQUIRE(f.store->EditMessage(10, 3, 1, "edited").ok());
  REQUIRE(f.store->DeleteMessage(10, 5, 1).ok());
  auto page = f.store->ReadHistory({10, Direction::kOldestFirst, 0, std::nullopt, 10});
  REQUIRE(page.ok());
  REQUIRE(page->messages.size() == 10);
  for (size_t i = 0; i < 10; ++i) CHECK(page->messages[i].seq == i + 1);
  CHECK(page->messages[2].body == "edited");
  CHECK(page->messages[2].edited);
  CHECK(page->messages[4].deleted);
  CHECK(page->messages[4].body.empty());
  CHECK(page->messages[5].body == "m6");
}

TEST_CASE("history from a point in time starts at the right message in both directions") {
  StoreFixture f;
  f.Create(10, 1);
  const int64_t start = f.clock->NowMs();
  Fill(f, 10, 30);  // Message seq s was sent at start + 1000 * s.
  auto forward = f.store->ReadHistory({10, Direction::kOldestFirst, 0, start + 10'500, 5});
  REQUIRE(forward.ok());
  REQUIRE(forward->messages.size() == 5);
  CHECK(forward->messages.front().seq == 11);  // First sent at or after the time.
  auto exact = f.store->ReadHistory({10, Direction::kOldestFirst, 0, start + 10'000, 1});
  CHECK(exact->messages.front().seq == 10);
  auto backward = f.store->ReadHistory({10, Direction::kNewestFirst, 0, start + 10'500, 5});
  REQUIRE(backward->messages.size() == 5);
  CHECK(backward->messages.front().seq == 10);  // Last sent at or before the time.
  CHECK(backward->messages.back().seq == 6);
  CHECK(
      f.store->ReadHistory({10, Direction::kOldestFirst, 0, start + 99'000, 5})->messages.empty());
  CHECK(f.store->ReadHistory({10, Direction::kNewestFirst, 0, start, 5})->messages.empty());
}

TEST_CASE("encoded history pages hold the same messages, order and cursor as decoded ones") {
  StoreFixture f;
  f.Create(10, 1);
  Fill(f, 10, 30);
  REQUIRE(f.store->EditMessage(10, 7, 1, "edited").ok());
  REQUIRE(f.store->DeleteMessage(10, 8, 1).ok());
  std::vector<HistoryQuery> queries = {
      {10, Direction::kNewestFirst, 0, std::nullopt, 10},
      {10, Direction::kNewestFirst, 12, std::nullopt, 50},
      {10, Direction::kOldestFirst, 0, std::nullopt, 7},
      {10, Direction::kOldestFirst, 25, std::nullopt, 50},
      {10, Direction::kOldestFirst, 0, 5'500, 3},
      {10, Direction::kNewestFirst, 0, 9'000, 4},
  };
  for (const HistoryQuery& query : queries) {
    auto decoded = f.store->ReadHistory(query);
    auto encoded = f.store->ReadHistoryEncoded(query);
    REQUIRE(decoded.ok());
    REQUIRE(encoded.ok());
    CHECK(encoded->has_more == decoded->has_more);
    CHECK(encoded->next_cursor_seq == decoded->next_cursor_seq);
    REQUIRE(encoded->spans.size() == decoded->messages.size());
    for (size_t i = 0; i < encoded->spans.size(); ++i) {
      auto [offset, size] = encoded->spans[i];
      std::string_view bytes(reinterpret_cast<const char*>(encoded->words.data() + offset),
                             size * sizeof(uint64_t));
      Message message;
      REQUIRE(codec::DecodeMessage(bytes, &message).ok());
      CHECK(message.seq == decoded->messages[i].seq);
      CHECK(message.body == decoded->messages[i].body);
      CHECK(message.deleted == decoded->messages[i].deleted);
    }
  }
  // Errors are the same too.
  CHECK(f.store->ReadHistoryEncoded({99, Direction::kNewestFirst, 0, std::nullopt, 10})
            .status()
            .code() == ErrorCode::kNotFound);
  CHECK(f.store->ReadHistoryEncoded({10, Direction::kNewestFirst, 0, std::nullopt, 0})
            .status()
            .field() == "limit");
}

TEST_CASE("page limits are enforced") {
  StoreFixture f;
  f.Create(10, 1);
  CHECK(f.store->ReadHistory({10, Direction::kNewestFirst, 0, std::nullopt, 0}).status().field() ==
        "limit");
  CHECK(
      f.store->ReadHistory({10, Direction::kNewestFirst, 0, std::nullopt, 201}).status().field() ==
      "limit");
  auto empty = f.store->ReadHistory({10, Direction::kNewestFirst, 0, std::nullopt, 200});
  REQUIRE(empty.ok());
  CHECK(empty->messages.empty());
  CHECK(
      f.store->ReadHistory({10, static_cast<Direction>(9), 0, std::nullopt, 5}).status().field() ==
      "direction");
}

TEST_CASE("conversations do not see each other's messages") {
  StoreFixture f;
  for (uint64_t conv = 1; conv <= 20; ++conv) {
    f.Create(conv, 1);
    for (int i = 0; i < 3; ++i) f.Send(conv, 1, std::to_string(i), std::to_string(conv));
  }
  for (uint64_t conv = 1; conv <= 20; ++conv) {
    auto page = f.store->ReadHistory({conv, Direction::kNewestFirst, 0, std::nullopt, 50});
    REQUIRE(page->messages.size() == 3);
    for (auto& m : page->messages) CHECK(m.body == std::to_string(conv));
  }
}

TEST_CASE("the sender index lists one sender's messages newest first") {
  StoreFixture f;
  f.Create(10, 1, {2});
  for (int i = 0; i < 10; ++i) f.Send(10, i % 2 == 0 ? 1 : 2, std::to_string(i), "x");
  auto by_two = f.store->ListSenderMessages(10, 2, 0, 100);
  REQUIRE(by_two.ok());
  CHECK(*by_two == std::vector<uint64_t>{10, 8, 6, 4, 2});
  CHECK(*f.store->ListSenderMessages(10, 2, 6, 2) == std::vector<uint64_t>{4, 2});
  CHECK(f.store->ListSenderMessages(10, 3, 0, 100)->empty());
}

}  // namespace
}  // namespace scrollback
