// Engine micro-benchmarks, each beside its raw RocksDB baseline on the same bytes:
//
//   BM_SendMessage       ShardStore::SendMessage, 200-byte body, 5-member conversation
//   BM_SendBatch/100     ShardStore::SendMessages, 100 sends in one call (one WriteBatch)
//   BM_RawWriteBatch/n   one WriteBatch with the same keys and values n sends write
//                        (message, 3 index rows, 1 outbox record) into a plain RocksDB
//   BM_HistoryPage50     ShardStore::ReadHistory, 50 newest-first from a random cursor
//   BM_HistoryTail50     the same from the newest message (two seeks: find it, then read)
//   BM_RawSeekNext50     Seek + 50 Next over the same message rows in a plain RocksDB
//   BM_ListInbox20       ShardStore::ListInbox, 20 entries of a 200-conversation inbox
//   BM_RawInboxScan20    Seek + 20 Next over the same inbox rows in a plain RocksDB
//   BM_ListInboxAfterUpdates/n/c
//                        ListInbox of 20 entries of a 200-conversation inbox after n updates
//                        to 5 of its conversations (each moved its conversation's listing row
//                        and left a tombstone where it was); c 0: a store that never cleans up,
//                        c 1: the default store, after the cleanup a first page started
//
// Both sides use the WAL without fsync and the same block cache size. scripts/bench.sh runs
// this binary and reports the ratios.
#include <benchmark/benchmark.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "scrollback/engine/keys.h"
#include "scrollback/engine/shard_store.h"
#include "scrollback/engine/value_codec.h"

namespace scrollback {
namespace {

constexpr size_t kBodyBytes = 200;
constexpr uint64_t kMembers = 5;          // Per conversation.
constexpr uint64_t kHistoryConvs = 64;    // Conversations pre-filled for history reads.
constexpr uint64_t kHistoryDepth = 2000;  // Messages per pre-filled conversation.
constexpr uint64_t kInboxUser = 1;        // Member of kInboxConvs conversations.
constexpr uint64_t kInboxConvs = 200;

std::string Body(uint64_t n) {
  std::string body(kBodyBytes, 'a');
  for (size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>('a' + (n + i) % 26);
  return body;
}

// Everything the benchmarks share, built once on first use and removed at exit.
struct Env {
  std::filesystem::path dir;
  std::unique_ptr<ShardStore> store;
  std::unique_ptr<ShardStore> uncleaned;  // Inbox tombstones never cleaned up (a baseline).
  std::unique_ptr<rocksdb::DB> raw;
  std::atomic<uint64_t> next_id{1};

  Env() {
    dir = std::filesystem::temp_directory_path() /
          ("scrollback-engine-bench-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);

    ShardOptions options;
    options.resources = StorageResources::Create({512ull << 20, 256ull << 20});
    auto opened = ShardStore::Open(options, (dir / "shard").string());
    if (!opened.ok()) Die(opened.status().ToString());
    store = std::move(opened).value();
    ShardOptions never_cleaned = options;
    never_cleaned.inbox_cleanup_tombstones = 0;
    auto second = ShardStore::Open(never_cleaned, (dir / "uncleaned").string());
    if (!second.ok()) Die(second.status().ToString());
    uncleaned = std::move(second).value();

    rocksdb::Options raw_options;
    raw_options.create_if_missing = true;
    rocksdb::BlockBasedTableOptions table;
    table.block_cache = rocksdb::NewLRUCache(512ull << 20);
    table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
    raw_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
    rocksdb::DB* db = nullptr;
    Check(rocksdb::DB::Open(raw_options, (dir / "raw").string(), &db));
    raw.reset(db);

    Fill();
  }
  ~Env() {
    uncleaned.reset();
    store.reset();
    raw.reset();
    std::filesystem::remove_all(dir);
  }

  static void Die(const std::string& what) {
    std::fprintf(stderr, "engine_bench: %s\n", what.c_str());
    std::exit(1);
  }
  static void Check(const rocksdb::Status& s) {
    if (!s.ok()) Die(s.ToString());
  }

  std::vector<uint64_t> MembersOf(uint64_t conv) {
    std::vector<uint64_t> members;
    for (uint64_t m = 1; m < kMembers; ++m) members.push_back(conv * 100 + m);
    return members;
  }

  // Conversations 1..kHistoryConvs with kHistoryDepth messages each, in the store and, with the
  // same keys and values, in the raw DB; plus the inbox of kInboxUser.
  void Fill() {
    for (uint64_t conv = 1; conv <= kHistoryConvs; ++conv) {
      if (!store->CreateConversation({conv, 1, MembersOf(conv), "history"}).ok()) Die("create");
      for (uint64_t i = 1; i <= kHistoryDepth; ++i) {
        auto sent = store->SendMessage({conv, 1, "fill-" + std::to_string(i), Body(i)});
        if (!sent.ok()) Die(sent.status().ToString());
      }
    }
    // The inbox: kInboxConvs updates for one user (outbox delivery, done directly).
    for (uint64_t conv = 1; conv <= kInboxConvs; ++conv) {
      InboxUpdate update;
      update.user_id = kInboxUser;
      update.conv_id = conv;
      update.seq = 10;
      update.activity_ms = 1'700'000'000'000 + static_cast<int64_t>(conv);
      update.sender_id = 2;
      update.preview = Body(conv).substr(0, 120);
      update.title = "conversation";
      if (!store->ApplyInboxUpdate(update).ok()) Die("inbox");
    }
    // Copy the message and inbox rows into the raw DB, byte for byte.
    rocksdb::WriteBatch batch;
    for (uint64_t conv = 1; conv <= kHistoryConvs; ++conv) {
      HistoryQuery query{conv, Direction::kOldestFirst, 0, std::nullopt, 200};
      for (;;) {
        auto page = store->ReadHistory(query);
        if (!page.ok()) Die(page.status().ToString());
        for (auto& m : page->messages) {
          Check(batch.Put(keys::MessageKey(conv, m.seq).str(), codec::EncodeMessage(m)));
        }
        if (!page->has_more) break;
        query.cursor_seq = page->next_cursor_seq;
      }
      Check(raw->Write(rocksdb::WriteOptions(), &batch));
      batch.Clear();
    }
    auto inbox = store->ListInbox({kInboxUser, "", 200});
    if (!inbox.ok()) Die(inbox.status().ToString());
    for (auto& e : inbox->entries) {
      Check(batch.Put(keys::InboxByActivityKey(kInboxUser, e.last_activity_ms, e.conv_id).str(),
                      codec::EncodeInboxEntry(e)));
    }
    Check(raw->Write(rocksdb::WriteOptions(), &batch));
    // Reads come from SST files and the block cache, as in a long-running node, and no
    // background compaction competes with the measurements.
    if (!store->CompactAll().ok()) Die("compact");
    Check(raw->Flush(rocksdb::FlushOptions()));
    rocksdb::CompactRangeOptions compact;
    compact.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    Check(raw->CompactRange(compact, nullptr, nullptr));
  }
};

Env& GetEnv() {
  static Env env;
  return env;
}

// Reads run first, on the settled store: the write benchmarks leave flushes and
// compactions behind that would compete with them for the two cores.
void BM_HistoryPage50(benchmark::State& state) {
  Env& env = GetEnv();
  std::mt19937_64 rng(state.thread_index());
  size_t messages = 0;
  for (auto _ : state) {
    HistoryQuery query{1 + rng() % kHistoryConvs, Direction::kNewestFirst,
                       51 + rng() % (kHistoryDepth - 50), std::nullopt, 50};
    auto page = env.store->ReadHistory(query);
    if (!page.ok() || page->messages.size() != 50) state.SkipWithError("short page");
    messages += page->messages.size();
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["messages"] = static_cast<double>(messages);
}
BENCHMARK(BM_HistoryPage50)->Threads(1)->Threads(2)->UseRealTime();

// The tail page: what a client shows when it opens a conversation.
void BM_HistoryTail50(benchmark::State& state) {
  Env& env = GetEnv();
  std::mt19937_64 rng(state.thread_index());
  for (auto _ : state) {
    HistoryQuery query{1 + rng() % kHistoryConvs, Direction::kNewestFirst, 0, std::nullopt, 50};
    auto page = env.store->ReadHistory(query);
    if (!page.ok() || page->messages.size() != 50) state.SkipWithError("short page");
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_HistoryTail50)->Threads(1)->Threads(2)->UseRealTime();

void BM_RawSeekNext50(benchmark::State& state) {
  Env& env = GetEnv();
  std::mt19937_64 rng(state.thread_index());
  size_t bytes = 0;
  for (auto _ : state) {
    uint64_t conv = 1 + rng() % kHistoryConvs;
    uint64_t start = 51 + rng() % (kHistoryDepth - 50);
    std::string upper = keys::MessageKey(conv, start).str();
    rocksdb::Slice upper_slice(upper);
    rocksdb::ReadOptions options;
    options.iterate_upper_bound = &upper_slice;
    std::unique_ptr<rocksdb::Iterator> it(env.raw->NewIterator(options));
    // Same key range, walked oldest to newest: Seek + 50 Next.
    it->Seek(keys::MessageKey(conv, start - 50).str());
    int n = 0;
    for (; it->Valid() && n < 50; it->Next(), ++n) bytes += it->value().size();
    if (n != 50) state.SkipWithError("short scan");
  }
  benchmark::DoNotOptimize(bytes);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RawSeekNext50)->Threads(1)->Threads(2)->UseRealTime();

void BM_ListInbox20(benchmark::State& state) {
  Env& env = GetEnv();
  for (auto _ : state) {
    auto page = env.store->ListInbox({kInboxUser, "", 20});
    if (!page.ok() || page->entries.size() != 20) state.SkipWithError("short inbox");
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ListInbox20)->Threads(1)->Threads(2)->UseRealTime();

// An inbox of kInboxConvs conversations in `store`, then `updates` fan-out updates spread over
// 5 of them (a member of a few busy conversations): every update moves a listing row to the
// front and leaves a tombstone behind. One user per (store, updates), built once however often
// the benchmark function runs.
uint64_t InboxAfterUpdates(ShardStore& store, uint64_t updates) {
  static std::mutex mu;
  static std::map<std::pair<ShardStore*, uint64_t>, uint64_t> users;
  std::lock_guard lock(mu);
  if (auto it = users.find({&store, updates}); it != users.end()) return it->second;
  const uint64_t user = 1'000'000'000 + users.size();
  int64_t now_ms = 1'700'000'000'000;
  auto apply = [&](uint64_t conv, uint64_t seq) {
    InboxUpdate update;
    update.user_id = user;
    update.conv_id = conv;
    update.seq = seq;
    update.activity_ms = ++now_ms;
    update.sender_id = 2;
    update.preview = Body(seq).substr(0, 120);
    update.title = "conversation";
    if (!store.ApplyInboxUpdate(update).ok()) Env::Die("inbox update");
  };
  for (uint64_t conv = 1; conv <= kInboxConvs; ++conv) apply(conv, 10);
  for (uint64_t i = 0; i < updates; ++i) apply(1 + i % 5, 11 + i);
  users[{&store, updates}] = user;
  return user;
}

// Arg 0: updates. Arg 1: 0 reads a store that never cleans its inbox up
// (ShardOptions::inbox_cleanup_tombstones 0); 1 reads the default store, 2 s after a first page
// started its cleanup (a flush, then RocksDB's deletion-triggered compactions). The setup runs
// once per case (a fixed iteration count: Google Benchmark calls the function once).
void BM_ListInboxAfterUpdates(benchmark::State& state) {
  Env& env = GetEnv();
  ShardStore& store = state.range(1) == 0 ? *env.uncleaned : *env.store;
  const uint64_t user = InboxAfterUpdates(store, static_cast<uint64_t>(state.range(0)));
  if (state.range(1) == 1) {
    // Past the last cleanup's interval (5 s per store), a first page starts one; then time for
    // the flush and the compactions.
    std::this_thread::sleep_for(std::chrono::seconds(5));
    (void)store.ListInbox({user, "", 20});
    std::this_thread::sleep_for(std::chrono::seconds(2));
  }
  for (auto _ : state) {
    auto page = store.ListInbox({user, "", 20});
    if (!page.ok() || page->entries.size() != 20) state.SkipWithError("short inbox");
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ListInboxAfterUpdates)
    ->ArgsProduct({{0, 1000, 10000}, {0, 1}})
    ->Iterations(300)
    ->UseRealTime();

void BM_RawInboxScan20(benchmark::State& state) {
  Env& env = GetEnv();
  size_t bytes = 0;
  for (auto _ : state) {
    std::unique_ptr<rocksdb::Iterator> it(env.raw->NewIterator(rocksdb::ReadOptions()));
    it->Seek(keys::Key(kInboxUser, keys::Tag::kInboxByActivity).str());
    int n = 0;
    for (; it->Valid() && n < 20; it->Next(), ++n) bytes += it->value().size();
    if (n != 20) state.SkipWithError("short scan");
  }
  benchmark::DoNotOptimize(bytes);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RawInboxScan20)->Threads(1)->Threads(2)->UseRealTime();

// A fresh conversation for one benchmark thread, so threads do not queue on one conversation's
// lock; 0 (and the benchmark skipped) if it cannot be created.
uint64_t NewSendConversation(Env& env, benchmark::State& state) {
  const uint64_t conv = 1'000'000 + env.next_id.fetch_add(1);
  if (!env.store->CreateConversation({conv, 1, env.MembersOf(conv), "send"}).ok()) {
    state.SkipWithError("create failed");
    return 0;
  }
  return conv;
}

void BM_SendMessage(benchmark::State& state) {
  Env& env = GetEnv();
  const uint64_t conv = NewSendConversation(env, state);
  if (conv == 0) return;
  const std::string body = Body(conv);
  uint64_t n = 0;
  for (auto _ : state) {
    auto sent = env.store->SendMessage({conv, 1, "s" + std::to_string(++n), body});
    if (!sent.ok()) state.SkipWithError(sent.status().ToString().c_str());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SendMessage)->Threads(1)->Threads(2)->UseRealTime();

// Batched sends: `range(0)` messages per SendMessages call (one WriteBatch).
void BM_SendBatch(benchmark::State& state) {
  Env& env = GetEnv();
  const uint64_t conv = NewSendConversation(env, state);
  if (conv == 0) return;
  const std::string body = Body(conv);
  const size_t batch_size = static_cast<size_t>(state.range(0));
  uint64_t n = 0;
  std::vector<SendMessageRequest> batch;
  for (auto _ : state) {
    batch.clear();
    for (size_t i = 0; i < batch_size; ++i) {
      batch.push_back({conv, 1, "s" + std::to_string(++n), body});
    }
    for (auto& sent : env.store->SendMessages(batch)) {
      if (!sent.ok()) state.SkipWithError(sent.status().ToString().c_str());
    }
  }
  state.SetItemsProcessed(state.iterations() * batch_size);
}
BENCHMARK(BM_SendBatch)->Arg(100)->Threads(1)->Threads(2)->UseRealTime();

// The rows of `range(0)` sends (same keys, values of the same encoding and size) in one
// WriteBatch: the floor under BM_SendMessage (range 1) and BM_SendBatch.
void BM_RawWriteBatch(benchmark::State& state) {
  Env& env = GetEnv();
  const uint64_t conv = 1'000'000 + env.next_id.fetch_add(1);
  const size_t batch_size = static_cast<size_t>(state.range(0));
  Message message;
  message.conv_id = conv;
  message.sender_id = 1;
  message.sent_at_ms = 1'700'000'000'000;
  message.client_msg_id = "s1234";
  message.body = Body(conv);
  InboxUpdate update;
  update.conv_id = conv;
  update.preview = message.body.substr(0, 120);
  update.title = "send";
  std::vector<uint64_t> members;
  for (uint64_t m = 0; m < kMembers; ++m) members.push_back(conv * 100 + m);
  // The outbox record as format 3 stores it: the update once, with its targets.
  const std::string outbox_value = codec::EncodeOutboxEntry(update, members.data(), members.size());
  std::string seq_value(8, '\0');
  rocksdb::WriteBatch batch;
  uint64_t seq = 0;
  for (auto _ : state) {
    batch.Clear();
    for (size_t i = 0; i < batch_size; ++i) {
      ++seq;
      message.seq = seq;
      env.Check(batch.Put(keys::MessageKey(conv, seq).str(), codec::EncodeMessage(message)));
      env.Check(
          batch.Put(keys::ClientMsgIdKey(conv, 1, "s" + std::to_string(seq)).str(), seq_value));
      env.Check(batch.Put(keys::TimeIndexKey(conv, message.sent_at_ms, seq).str(), ""));
      env.Check(batch.Put(keys::SenderIndexKey(conv, 1, seq).str(), ""));
      env.Check(batch.Put(keys::OutboxKey(seq, 0).str(), outbox_value));
    }
    env.Check(env.raw->Write(rocksdb::WriteOptions(), &batch));
  }
  state.SetItemsProcessed(state.iterations() * batch_size);
}
BENCHMARK(BM_RawWriteBatch)->Arg(1)->Arg(100)->Threads(1)->Threads(2)->UseRealTime();

}  // namespace
}  // namespace scrollback

BENCHMARK_MAIN();
