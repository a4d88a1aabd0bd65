// The history tail cache (decision 0014): pages served from it are exactly what a scan of the
// store returns, through sends, batches, edits, deletes, evictions, concurrent writers and a
// replica's applied log; and it is used (its hits are counted), so these tests would fail if it
// served stale or wrong pages.
#include <rocksdb/comparator.h>
#include <rocksdb/db.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "history_tail_cache.h"
#include "scrollback/engine/keys.h"
#include "test_util.h"

namespace scrollback {
namespace {

using testing::StoreFixture;
using testing::TestSeed;

std::shared_ptr<StorageResources> Resources(size_t history_cache_bytes) {
  return StorageResources::Create({8ull << 20, 8ull << 20, history_cache_bytes});
}

// What a conversation holds, as the test's model: seq i is bodies[i - 1].
struct ModelConversation {
  std::vector<std::string> bodies;  // "" once deleted.
};

// Checks `page` (newest first, `query`) against `model`.
void CheckPage(const HistoryQuery& query, const HistoryPage& page, const ModelConversation& model) {
  const uint64_t last = model.bodies.size();
  uint64_t upper =
      query.cursor_seq == 0 || query.cursor_seq > last + 1 ? last + 1 : query.cursor_seq;
  const uint64_t first = upper > query.limit ? upper - query.limit : 1;
  if (last == 0 || query.cursor_seq == 1) upper = first;  // Nothing to read.
  REQUIRE(page.messages.size() == upper - first);
  for (size_t i = 0; i < page.messages.size(); ++i) {
    const Message& message = page.messages[i];
    const uint64_t seq = upper - 1 - i;
    INFO("seq " << seq);
    CHECK(message.seq == seq);
    CHECK(message.body == model.bodies[seq - 1]);
    CHECK(message.deleted == model.bodies[seq - 1].empty());
  }
  const bool has_more = first > 1 && upper > first;
  CHECK(page.has_more == has_more);
  CHECK(page.next_cursor_seq == (has_more ? first : 0));
}

TEST_CASE(
    "history pages from the tail cache equal the store's data through sends, batches, edits, "
    "deletes and evictions") {
  const uint64_t seed = TestSeed();
  INFO("seed " << seed << " (SCROLLBACK_SEED replays it)");
  std::mt19937_64 random(seed);
  // Small enough that tails are evicted (a few KB per stripe), large enough to hold some.
  const size_t cache_bytes = GENERATE(size_t{256} << 10, size_t{16} << 20);
  INFO("cache bytes " << cache_bytes);
  StoreFixture f;
  auto resources = Resources(cache_bytes);
  f.options.resources = resources;
  f.Reopen();

  constexpr uint64_t kConversations = 40;
  std::map<uint64_t, ModelConversation> model;
  for (uint64_t conv = 1; conv <= kConversations; ++conv) {
    f.Create(conv, 1, {2});
    model[conv];
  }
  uint64_t next_id = 0;
  auto body = [&] { return "body " + std::to_string(next_id) + std::string(random() % 200, 'x'); };
  for (int step = 0; step < 6000; ++step) {
    const uint64_t conv = 1 + random() % kConversations;
    ModelConversation& m = model[conv];
    const int op = static_cast<int>(random() % 100);
    if (op < 35) {
      const std::string text = body();
      const uint64_t seq = f.Send(conv, 1, "c" + std::to_string(next_id++), text);
      REQUIRE(seq == m.bodies.size() + 1);
      m.bodies.push_back(text);
    } else if (op < 40) {
      // A batch over two conversations.
      const uint64_t other = 1 + random() % kConversations;
      std::vector<SendMessageRequest> sends;
      std::vector<uint64_t> convs = {conv, other, conv};
      std::vector<std::string> texts;
      for (uint64_t c : convs) {
        texts.push_back(body());
        sends.push_back({c, 1, "c" + std::to_string(next_id++), texts.back()});
      }
      auto results = f.store->SendMessages(sends);
      for (size_t i = 0; i < results.size(); ++i) {
        REQUIRE(results[i].ok());
        ModelConversation& target = model[convs[i]];
        REQUIRE(results[i]->seq == target.bodies.size() + 1);
        target.bodies.push_back(texts[i]);
      }
    } else if (op < 46 && !m.bodies.empty()) {
      // Edit or delete one of the newest messages (inside a tail) or any older one.
      const uint64_t span = std::min<uint64_t>(m.bodies.size(), random() % 2 ? 5 : 1000);
      const uint64_t seq = m.bodies.size() - random() % span;
      if (m.bodies[seq - 1].empty()) continue;
      if (random() % 3 == 0) {
        REQUIRE(f.store->DeleteMessage(conv, seq, 1).ok());
        m.bodies[seq - 1].clear();
      } else {
        const std::string text = "edited " + std::to_string(next_id++);
        REQUIRE(f.store->EditMessage(conv, seq, 1, text).ok());
        m.bodies[seq - 1] = text;
      }
    } else {
      HistoryQuery query;
      query.conv_id = conv;
      query.direction = Direction::kNewestFirst;
      query.limit = 1 + static_cast<uint32_t>(random() % 40);
      // Mostly the newest page (what fills the cache), else a cursor inside or past the end.
      if (random() % 3 == 0) query.cursor_seq = random() % (m.bodies.size() + 4);
      INFO("step " << step << " conv " << conv << " cursor " << query.cursor_seq << " limit "
                   << query.limit << " newest " << m.bodies.size());
      {
        // What the cache answers on its own (an event loop's first try) must be right too.
        CacheOnlyReads memory_only;
        auto cached = f.store->ReadHistory(query);
        if (cached.ok()) {
          CheckPage(query, *cached, m);
        } else {
          REQUIRE(cached.status().code() == ErrorCode::kWouldBlock);
        }
      }
      auto page = f.store->ReadHistory(query);
      REQUIRE(page.ok());
      CheckPage(query, *page, m);
      // The encoded page (what nodes send) holds the same messages.
      auto encoded = f.store->ReadHistoryEncoded(query);
      REQUIRE(encoded.ok());
      CHECK(encoded->spans.size() == page->messages.size());
      CHECK(encoded->has_more == page->has_more);
    }
  }
  const auto stats = resources->HistoryCache();
  CHECK(stats.hits > 500);
  CHECK(stats.inserts > 20);
  if (cache_bytes < (1u << 20)) CHECK(stats.evictions > 0);
  CHECK(stats.bytes <= cache_bytes);
}

TEST_CASE(
    "concurrent writers and readers: a cached page never misses an acknowledged send or edit") {
  StoreFixture f;
  auto resources = Resources(4ull << 20);
  f.options.resources = resources;
  f.Reopen();
  f.Create(7, 1, {2, 3});
  // The newest acknowledged seq, and the editor's message and its newest acknowledged version.
  std::atomic<uint64_t> acked{0};
  std::atomic<uint64_t> edited{0};  // seq << 8 | version
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  auto raise = [](std::atomic<uint64_t>& to, uint64_t value) {
    uint64_t now = to.load();
    while (now < value && !to.compare_exchange_weak(now, value)) {
    }
  };
  std::vector<std::thread> threads;
  // The writers go on past their 1,500 sends until a reader was served from the cache while
  // they write (bounded): on a loaded machine the readers may get no turn at first, and a
  // conversation being written is not served from its tail.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  auto keep_writing = [&](int i) {
    return i < 1500 ||
           (resources->HistoryCache().hits == 0 && std::chrono::steady_clock::now() < deadline);
  };
  for (uint64_t writer = 1; writer <= 2; ++writer) {
    threads.emplace_back([&, writer] {
      for (int i = 0; keep_writing(i); ++i) {
        auto sent =
            f.store->SendMessage({7, writer, std::to_string(writer) + "-" + std::to_string(i),
                                  "w" + std::to_string(writer)});
        if (!sent.ok()) {
          ++failures;
          return;
        }
        raise(acked, sent->seq);
      }
    });
  }
  threads.emplace_back([&] {  // The editor: sends one message, then edits it five times.
    for (int i = 0; i < 200; ++i) {
      auto sent = f.store->SendMessage({7, 3, "e" + std::to_string(i), "v0"});
      if (!sent.ok()) {
        ++failures;
        return;
      }
      raise(acked, sent->seq);
      edited.store(sent->seq << 8);
      for (uint64_t version = 1; version <= 5; ++version) {
        if (!f.store->EditMessage(7, sent->seq, 3, "v" + std::to_string(version)).ok()) {
          ++failures;
          return;
        }
        edited.store(sent->seq << 8 | version);
      }
    }
  });
  std::atomic<uint64_t> pages{0};
  for (int reader = 0; reader < 2; ++reader) {
    threads.emplace_back([&] {
      while (!stop.load()) {
        const uint64_t must_see = acked.load();
        const uint64_t edit = edited.load();
        auto page = f.store->ReadHistory({7, Direction::kNewestFirst, 0, std::nullopt, 20});
        if (!page.ok() || (must_see > 0 && page->messages.empty())) {
          ++failures;
          continue;
        }
        ++pages;
        if (page->messages.empty()) continue;
        bool bad = page->messages.front().seq < must_see;
        for (size_t i = 0; i < page->messages.size(); ++i) {
          const Message& message = page->messages[i];
          bad |= message.seq != page->messages.front().seq - i;  // Dense, newest first.
          if (message.seq == edit >> 8) {
            bad |= message.body < "v" + std::to_string(edit & 0xff);  // "v0".."v5" sort as numbers.
          }
        }
        if (bad) ++failures;
      }
    });
  }
  for (int i = 0; i < 3; ++i) threads[i].join();
  stop = true;
  for (size_t i = 3; i < threads.size(); ++i) threads[i].join();
  CHECK(failures.load() == 0);
  CHECK(pages.load() > 0);
  CHECK(resources->HistoryCache().hits > 0);
  // And at the end the cached newest page is the store's.
  auto cached = f.store->ReadHistory({7, Direction::kNewestFirst, 0, std::nullopt, 20});
  auto scanned =
      f.store->ReadHistory({7, Direction::kOldestFirst, acked.load() - 20, std::nullopt, 20});
  REQUIRE(cached.ok());
  REQUIRE(scanned.ok());
  REQUIRE(cached->messages.size() == 20);
  REQUIRE(scanned->messages.size() == 20);
  for (size_t i = 0; i < 20; ++i) {
    CHECK(cached->messages[i].seq == scanned->messages[19 - i].seq);
    CHECK(cached->messages[i].body == scanned->messages[19 - i].body);
  }
}

TEST_CASE(
    "a replica's cached tails follow the log it applies, and two copies of a shard on one node "
    "never share tails") {
  StoreFixture f;
  auto resources = Resources(4ull << 20);
  f.options.resources = resources;
  f.Reopen();
  f.Create(9, 1, {2});
  for (int i = 0; i < 30; ++i) f.Send(9, 1, "a" + std::to_string(i), "first " + std::to_string(i));
  REQUIRE(f.store->CreateCheckpoint(f.dir.Sub("replica")).ok());
  // The replica is on the same resources: the same shard id and conversation in one cache.
  auto opened = ShardStore::Open(f.options, f.dir.Sub("replica"));
  REQUIRE(opened.ok());
  std::unique_ptr<ShardStore> replica = std::move(opened).value();
  const HistoryQuery newest{9, Direction::kNewestFirst, 0, std::nullopt, 10};
  REQUIRE(replica->ReadHistory(newest).ok());  // Fills the replica's tail.
  REQUIRE(f.store->ReadHistory(newest).ok());  // Fills the primary's.

  // The primary moves on; until the replica applies it, the replica's page is the old one.
  f.Send(9, 1, "b", "second");
  REQUIRE(f.store->EditMessage(9, 29, 1, "edited 29").ok());
  auto primary_page = f.store->ReadHistory(newest);
  REQUIRE(primary_page.ok());
  CHECK(primary_page->messages.front().body == "second");
  auto stale = replica->ReadHistory(newest);
  REQUIRE(stale.ok());
  CHECK(stale->messages.front().seq == 30);

  auto chunk = f.store->ReadLog(replica->LatestSequence() + 1, 1 << 20);
  REQUIRE(chunk.ok());
  REQUIRE(replica->ApplyLogBatches(chunk->batches).ok());
  const uint64_t hits_before = resources->HistoryCache().hits;
  {
    CacheOnlyReads memory_only;  // Served from the replica's tail, updated by the applied log.
    auto page = replica->ReadHistory(newest);
    REQUIRE(page.ok());
    REQUIRE(page->messages.size() == 10);
    CHECK(page->messages[0].seq == 31);
    CHECK(page->messages[0].body == "second");
    CHECK(page->messages[2].seq == 29);
    CHECK(page->messages[2].body == "edited 29");
  }
  CHECK(resources->HistoryCache().hits == hits_before + 1);
}

// A column family handle for building WriteBatches without a database.
class FakeColumnFamily final : public rocksdb::ColumnFamilyHandle {
 public:
  explicit FakeColumnFamily(uint32_t id) : id_(id) {}
  const std::string& GetName() const override { return name_; }
  uint32_t GetID() const override { return id_; }
  rocksdb::Status GetDescriptor(rocksdb::ColumnFamilyDescriptor*) override {
    return rocksdb::Status::NotSupported();
  }
  const rocksdb::Comparator* GetComparator() const override {
    return rocksdb::BytewiseComparator();
  }

 private:
  uint32_t id_;
  std::string name_ = "messages";
};

TEST_CASE("a conversation's tail is neither served nor filled while a batch writes it") {
  using engine_internal::HistoryTailCache;
  HistoryTailCache cache(1 << 20);
  const uint64_t owner = HistoryTailCache::NewOwner();
  FakeColumnFamily messages(2);
  const std::string word(8, 'a');  // A stored message is a whole number of words.
  auto tail = std::make_shared<HistoryTailCache::Tail>();
  tail->first_seq = 1;
  tail->last_seq = 2;
  tail->Add(word);
  tail->Add(word);
  cache.Insert(owner, 7, tail, cache.Epoch(owner, 7));
  REQUIRE(cache.Find(owner, 7) != nullptr);

  auto message_put = [&](uint64_t seq, const std::string& value) {
    rocksdb::WriteBatch batch;
    const keys::Key key = keys::MessageKey(7, seq);
    REQUIRE(batch.Put(&messages, rocksdb::Slice(key.data(), key.size()), value).ok());
    return batch;
  };
  const std::string third(16, 'c');
  rocksdb::WriteBatch batch = message_put(3, third);
  const auto batch_rows = cache.BeginBatch(owner, 2, batch);
  // Between the write's start and its end: not served, and a fill (a reader that scanned
  // meanwhile) is not kept.
  CHECK(cache.Find(owner, 7) == nullptr);
  CHECK(cache.Find(owner, 8) == nullptr);  // Never cached.
  cache.Insert(owner, 7, tail, cache.Epoch(owner, 7));
  CHECK(cache.Find(owner, 7) == nullptr);
  REQUIRE(cache.EndBatch(batch_rows, 200, /*committed=*/true));
  auto after = cache.Find(owner, 7);
  REQUIRE(after != nullptr);
  CHECK(after->first_seq == 1);
  CHECK(after->last_seq == 3);
  CHECK(after->Value(3) == third);

  // A fill whose scan began before a batch began is refused, even once the batch is over.
  const uint64_t before = cache.Epoch(owner, 7);
  rocksdb::WriteBatch fourth = message_put(4, word);
  const auto fourth_rows = cache.BeginBatch(owner, 2, fourth);
  REQUIRE(cache.EndBatch(fourth_rows, 200, /*committed=*/true));
  cache.Insert(owner, 7, tail, before);
  REQUIRE(cache.Find(owner, 7) != nullptr);
  CHECK(cache.Find(owner, 7)->last_seq == 4);  // The appended tail, not the stale fill.

  // A write that failed drops the tails it touched.
  rocksdb::WriteBatch failed = message_put(5, word);
  const auto failed_rows = cache.BeginBatch(owner, 2, failed);
  REQUIRE(cache.EndBatch(failed_rows, 200, /*committed=*/false));
  CHECK(cache.Find(owner, 7) == nullptr);

  // Rows of other column families change nothing; a range delete of messages cannot be
  // followed: the store must take a new owner id.
  FakeColumnFamily indexes(3);
  rocksdb::WriteBatch other;
  REQUIRE(other.Put(&indexes, "k", "v").ok());
  const auto other_rows = cache.BeginBatch(owner, 2, other);
  CHECK(cache.EndBatch(other_rows, 200, true));
  rocksdb::WriteBatch range;
  REQUIRE(range.DeleteRange(&messages, "a", "z").ok());
  const auto range_rows = cache.BeginBatch(owner, 2, range);
  CHECK_FALSE(cache.EndBatch(range_rows, 200, true));
}

}  // namespace
}  // namespace scrollback
