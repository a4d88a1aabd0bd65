// The shard map as records in the metadata store (cluster/shard_map_store.h): a change writes
// what it changed, watchers apply changes, loads are consistent, big maps are bootstrapped in
// several commits without a reader seeing half of one, and a format-1 map is migrated.
#include "scrollback/cluster/shard_map_store.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <random>
#include <thread>

#include "scrollback/cluster/metered_metadata_store.h"

namespace scrollback {
namespace {

std::vector<NodeInfo> Nodes(int count) {
  std::vector<NodeInfo> nodes;
  for (int i = 0; i < count; ++i) {
    nodes.push_back({"n" + std::to_string(i), "127.0.0.1:" + std::to_string(7000 + i), "", 0});
  }
  return nodes;
}

// Splits the shard holding `token` in two at it (the children get new ids), as the controller's
// last split step does.
Status SplitAt(std::vector<ShardInfo>& shards, uint64_t next_id, uint64_t token) {
  for (size_t i = 0; i < shards.size(); ++i) {
    if (!shards[i].range.Contains(token) || shards[i].range.first == token) continue;
    ShardInfo left = shards[i], right = shards[i];
    left.shard_id = next_id;
    right.shard_id = next_id + 1;
    left.range.last = token - 1;
    right.range.first = token;
    shards[i] = left;
    shards.push_back(right);
    return Status::Ok();
  }
  return Status::InvalidArgument("token", "no shard to split there");
}

TEST_CASE("a change of the shard map writes only the records it changes") {
  auto metered = std::make_shared<MeteredMetadataStore>(NewInMemoryMetadataStore(SystemClock()));
  REQUIRE(PublishFirstShardMap(*metered, ShardMap::Uniform(1, 1000, Nodes(10), 3)).ok());
  const MetadataTraffic bootstrapped = metered->traffic();
  CHECK(bootstrapped.keys_written == 1000 + 10 + 1 + 2);  // Records, version, bootstrap digest.
  CHECK(bootstrapped.commits > 1);                        // More than one commit holds.

  // A switchover: one shard record and the version key.
  auto before = metered->traffic();
  auto switched = EditShardMap(*metered, [](std::vector<ShardInfo>& shards, auto&) {
    std::swap(shards[17].primary, shards[17].replicas[0]);
    ++shards[17].epoch;
    return Status::Ok();
  });
  REQUIRE(switched.ok());
  CHECK(switched->version() == 2);
  auto after = metered->traffic();
  CHECK(after.commits - before.commits == 1);
  CHECK(after.keys_written - before.keys_written == 2);
  CHECK(after.bytes_written - before.bytes_written < 400);

  // A split: the parent's record deleted, two children written, and the version key.
  before = after;
  const uint64_t next_id = switched->NextShardId();
  const uint64_t token = switched->shards()[500].range.first + 12345;
  REQUIRE(EditShardMap(*metered, [&](std::vector<ShardInfo>& shards, auto&) {
            return SplitAt(shards, next_id, token);
          }).ok());
  after = metered->traffic();
  CHECK(after.keys_written - before.keys_written == 4);
  auto now = ReadShardMap(*metered);
  REQUIRE(now.ok());
  CHECK(now->version() == 3);
  CHECK(now->shards().size() == 1001);
  CHECK(now->ShardForToken(token).shard_id == next_id + 1);
  CHECK(now->ShardForToken(token - 1).shard_id == next_id);

  // An edit that changes nothing publishes nothing.
  before = metered->traffic();
  REQUIRE(EditShardMap(*metered, [](auto&, auto&) { return Status::Ok(); }).ok());
  CHECK(metered->traffic().commits == before.commits);
}

TEST_CASE("a shard map change larger than one commit is refused whole, not written in part") {
  auto store = NewInMemoryMetadataStore(SystemClock());
  REQUIRE(PublishFirstShardMap(*store, ShardMap::Uniform(1, 300, Nodes(3), 1)).ok());
  auto edited = EditShardMap(*store, [](std::vector<ShardInfo>& shards, auto&) {
    for (ShardInfo& shard : shards) ++shard.epoch;  // 300 records: more than 128.
    return Status::Ok();
  });
  REQUIRE_FALSE(edited.ok());
  CHECK(edited.status().code() == ErrorCode::kInvalidArgument);
  auto now = ReadShardMap(*store);
  REQUIRE(now.ok());
  CHECK(now->version() == 1);
  for (const ShardInfo& shard : now->shards()) CHECK(shard.epoch == 1);
}

TEST_CASE("publishing against a map that changed since it was read fails the compare") {
  auto store = NewInMemoryMetadataStore(SystemClock());
  REQUIRE(PublishFirstShardMap(*store, ShardMap::Uniform(1, 8, Nodes(3), 3)).ok());
  auto base = LoadShardMap(*store);
  REQUIRE(base.ok());
  std::vector<ShardInfo> shards = base->map.shards();
  ++shards[0].epoch;
  auto next = ShardMap::Make(2, shards, base->map.nodes());
  REQUIRE(next.ok());
  REQUIRE(PublishShardMap(*store, *base, *next).ok());
  // A second writer with the same (now old) base loses, even though it changes another shard.
  shards = base->map.shards();
  ++shards[5].epoch;
  auto other = ShardMap::Make(2, shards, base->map.nodes());
  REQUIRE(other.ok());
  auto lost = PublishShardMap(*store, *base, *other);
  CHECK(lost.status().code() == ErrorCode::kFailedPrecondition);
  auto now = ReadShardMap(*store);
  REQUIRE(now.ok());
  CHECK(now->FindShard(shards[0].shard_id)->epoch == 2);
  CHECK(now->FindShard(shards[5].shard_id)->epoch == 1);
}

TEST_CASE("a map bootstrapped in several commits is never seen half-written") {
  auto store = NewInMemoryMetadataStore(SystemClock());
  const ShardMap map = ShardMap::Uniform(1, 3000, Nodes(20), 3);
  // After every commit (the in-memory store delivers on the writer's thread), a reader reads.
  std::atomic<int> not_found{0}, whole{0}, partial{0};
  auto reader = store->WatchChanges(kShardMapPrefix, 0, [&](const ChangeBatch&) {
    auto read = ReadShardMap(*store);
    if (!read.ok()) {
      if (read.status().code() == ErrorCode::kNotFound)
        ++not_found;
      else
        ++partial;  // A half-written map would not validate.
    } else if (read->shards().size() == 3000) {
      ++whole;
    } else {
      ++partial;
    }
  });
  REQUIRE(PublishFirstShardMap(*store, map).ok());
  reader.reset();
  INFO("not found " << not_found << ", whole " << whole << ", partial " << partial);
  CHECK(not_found >= 3020 / 128);  // Read after each commit of records...
  CHECK(whole == 1);               // ... and after the version key's.
  CHECK(partial == 0);
  auto read = ReadShardMap(*store);
  REQUIRE(read.ok());
  CHECK(read->shards().size() == 3000);
  CHECK(store->Get(kShardMapBootstrapKey)->has_value() == false);

  // Two bootstrappers of the same map at once, as every node of a new cluster is: both succeed.
  auto fresh = NewInMemoryMetadataStore(SystemClock());
  std::thread other([&] { CHECK(PublishFirstShardMap(*fresh, map).ok()); });
  CHECK(PublishFirstShardMap(*fresh, map).ok());
  other.join();
  auto both = ReadShardMap(*fresh);
  REQUIRE(both.ok());
  CHECK(both->shards() == map.shards());
  CHECK(both->nodes().size() == map.nodes().size());  // In id order, as records are kept.
}

TEST_CASE("a different first map being bootstrapped at the same time is refused") {
  auto store = NewInMemoryMetadataStore(SystemClock());
  // The first bootstrapper claimed the digest and wrote part of its records, then stopped.
  REQUIRE(store->Put(kShardMapBootstrapKey, "0123456789abcdef").ok());
  Status second = PublishFirstShardMap(*store, ShardMap::Uniform(1, 500, Nodes(4), 3));
  CHECK(second.code() == ErrorCode::kFailedPrecondition);
  CHECK(ReadShardMap(*store).status().code() == ErrorCode::kNotFound);
}

TEST_CASE("a format-1 map (one value) is migrated to records on first load") {
  auto store = NewInMemoryMetadataStore(SystemClock());
  auto legacy = ShardMap::Make(7, ShardMap::Uniform(1, 200, Nodes(3), 3).shards(), Nodes(3));
  REQUIRE(legacy.ok());
  REQUIRE(store->Put(kLegacyShardMapKey, legacy->Serialize()).ok());
  auto loaded = LoadShardMap(*store);
  REQUIRE(loaded.ok());
  CHECK(loaded->map.version() == 7);
  CHECK(loaded->map.Serialize() == legacy->Serialize());
  CHECK_FALSE(store->Get(kLegacyShardMapKey)->has_value());
  CHECK(store->List(kShardMapShardsPrefix)->size() == 200);
}

TEST_CASE("a shard map watcher follows changes record by record, without loading again") {
  auto store = NewInMemoryMetadataStore(SystemClock());
  auto metered = std::make_shared<MeteredMetadataStore>(store);
  REQUIRE(PublishFirstShardMap(*store, ShardMap::Uniform(1, 2000, Nodes(30), 3)).ok());
  std::vector<uint64_t> seen;
  auto watcher = ShardMapWatcher::Start(
      metered, nullptr,
      [&](const std::shared_ptr<const StoredShardMap>& m) { seen.push_back(m->map.version()); });
  REQUIRE(watcher.ok());
  const MetadataTraffic loaded = metered->traffic();
  CHECK(loaded.reads == 3);  // 2,000 shards, 30 nodes and the version: pages of 1,000.

  const uint64_t seed = std::random_device{}();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (int change = 0; change < 50; ++change) {
    auto edited = EditShardMap(*store, [&](std::vector<ShardInfo>& shards, auto&) {
      if (change % 5 == 0) {
        uint64_t next_id = 0;
        for (const ShardInfo& s : shards) next_id = std::max(next_id, s.shard_id + 1);
        return SplitAt(shards, next_id, rng() | 1);
      }
      ShardInfo& shard = shards[rng() % shards.size()];
      std::swap(shard.primary, shard.replicas[rng() % shard.replicas.size()]);
      ++shard.epoch;
      return Status::Ok();
    });
    REQUIRE(edited.ok());
    // The in-memory store delivers before the write returns.
    auto current = (*watcher)->Current();
    REQUIRE(current->map.version() == edited->version());
    CHECK(current->map.Serialize() == edited->Serialize());
  }
  const MetadataTraffic followed = metered->traffic();
  CHECK(followed.reads == loaded.reads);  // Not one read more.
  CHECK((*watcher)->reloads() == 1);
  CHECK((*watcher)->batches_applied() == 50);
  CHECK(followed.watch_keys <= 50 * 4);  // At most a split's 3 records and the version key each.
  REQUIRE(seen.size() == 51);
  for (size_t i = 0; i < seen.size(); ++i) CHECK(seen[i] == i + 1);
}

TEST_CASE("a shard map watcher that falls behind the store's history loads afresh") {
  auto store = NewInMemoryMetadataStore(SystemClock());
  REQUIRE(PublishFirstShardMap(*store, ShardMap::Uniform(1, 4, Nodes(3), 3)).ok());
  auto from = LoadShardMap(*store);
  REQUIRE(from.ok());
  // More versions than the store keeps.
  for (size_t i = 0; i <= kInMemoryHistoryVersions; ++i) REQUIRE(store->Put("/other", "x").ok());
  std::atomic<bool> lost{false};
  auto watch = store->WatchChanges(kShardMapPrefix, from->store_version,
                                   [&](const ChangeBatch& batch) { lost = batch.history_lost; });
  CHECK(lost);

  // The watcher recovers from a lost history by loading afresh (here: its watch fed a batch it
  // cannot apply, which takes the same path).
  auto watcher = ShardMapWatcher::Start(store);
  REQUIRE(watcher.ok());
  REQUIRE(store->Put(ShardRecordKey(99), "not a record").ok());
  REQUIRE(EditShardMap(*store,
                       [](std::vector<ShardInfo>& shards, auto&) {
                         ++shards[0].epoch;
                         return Status::Ok();
                       })
              .status()
              .code() == ErrorCode::kCorruption);   // The stored map is broken now...
  REQUIRE(store->Delete(ShardRecordKey(99)).ok());  // ... and mended.
  REQUIRE(EditShardMap(*store, [](std::vector<ShardInfo>& shards, auto&) {
            ++shards[0].epoch;
            return Status::Ok();
          }).ok());
  for (int i = 0; i < 500 && (*watcher)->Current()->map.version() != 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK((*watcher)->Current()->map.version() == 2);
  CHECK((*watcher)->reloads() >= 2);
}

TEST_CASE("a follower started before the first map hosts it once it is published") {
  auto store = NewInMemoryMetadataStore(SystemClock());
  std::atomic<uint64_t> got{0};
  auto watcher = ShardMapWatcher::Start(
      store, nullptr,
      [&](const std::shared_ptr<const StoredShardMap>& m) { got = m->map.version(); },
      /*wait_for_first=*/true);
  REQUIRE(watcher.ok());
  CHECK((*watcher)->Current() == nullptr);
  REQUIRE(PublishFirstShardMap(*store, ShardMap::Uniform(3, 500, Nodes(5), 3)).ok());
  for (int i = 0; i < 500 && got == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(got == 3);
  REQUIRE((*watcher)->Current() != nullptr);
  CHECK((*watcher)->Current()->map.shards().size() == 500);
}

TEST_CASE("commits apply every write at one version or none, and a watch gets them together") {
  auto store = NewInMemoryMetadataStore(SystemClock());
  std::vector<ChangeBatch> batches;
  auto watch = store->WatchChanges("/t/", 0, [&](const ChangeBatch& b) { batches.push_back(b); });
  auto first = store->Commit({{"/t/a", 0}}, {{"/t/a", "1"}, {"/t/b", "2"}, {"/u/c", "3"}});
  REQUIRE(first.ok());
  auto refused = store->Commit({{"/t/a", 0}}, {{"/t/a", "9"}});
  CHECK(refused.status().code() == ErrorCode::kFailedPrecondition);
  REQUIRE(store->Commit({{"/t/a", *first}}, {{"/t/a", std::nullopt}, {"/t/b", "4"}}).ok());
  REQUIRE(batches.size() == 2);
  CHECK(batches[0].version == *first);
  CHECK(batches[0].changes.size() == 2);  // /u/c is outside the prefix.
  CHECK(batches[1].changes[0].first == "/t/a");
  CHECK_FALSE(batches[1].changes[0].second.has_value());
  CHECK((*store->Get("/t/b"))->value == "4");

  // A page read at a version refuses once the prefix changed after it.
  auto page = store->ListPage("/t/", "", 1, 0);
  REQUIRE(page.ok());
  CHECK(page->kvs.size() == 1);
  CHECK_FALSE(page->more);
  REQUIRE(store->Put("/u/d", "x").ok());  // Outside the prefix: still readable at it.
  CHECK(store->ListPage("/t/", "", 10, page->version).ok());
  REQUIRE(store->Put("/t/e", "x").ok());
  CHECK(store->ListPage("/t/", "", 10, page->version).status().code() ==
        ErrorCode::kFailedPrecondition);

  // A watch from a past version replays what came after it.
  std::vector<int64_t> replayed;
  auto late = store->WatchChanges("/t/", *first,
                                  [&](const ChangeBatch& b) { replayed.push_back(b.version); });
  CHECK(replayed.size() == 2);
}

}  // namespace
}  // namespace scrollback

namespace scrollback {
namespace {

// Steps from `base` to `target` with FirstStepOfChange, as the controller does over passes;
// returns the steps' sizes in writes.
std::vector<size_t> StepThrough(ShardMap base, const ShardMap& target, size_t max_writes) {
  std::vector<size_t> steps;
  for (int pass = 0; pass < 100; ++pass) {
    auto next = ShardMap::Make(base.version() + 1, target.shards(), target.nodes());
    REQUIRE(next.ok());
    if (next->shards() == base.shards() && next->nodes() == base.nodes()) return steps;
    auto step = FirstStepOfChange(base, *next, max_writes);
    INFO(step.status().ToString());
    REQUIRE(step.ok());
    // What the step writes, as PublishShardMap counts it.
    auto store = NewInMemoryMetadataStore(SystemClock());
    REQUIRE(PublishFirstShardMap(*store, base).ok());
    auto stored = LoadShardMap(*store);
    REQUIRE(stored.ok());
    auto metered = std::make_shared<MeteredMetadataStore>(store);
    REQUIRE(PublishShardMap(*metered, *stored, *step).ok());
    steps.push_back(metered->traffic().keys_written);
    base = std::move(step).value();
  }
  FAIL("no end of steps");
  return steps;
}

TEST_CASE("a failover of two nodes' primaries too large for one commit is published node by node") {
  std::vector<NodeInfo> nodes = Nodes(3);
  const ShardMap base = ShardMap::Uniform(1, 300, nodes, 3);  // 100 primaries per node.
  std::vector<ShardInfo> shards = base.shards();
  for (ShardInfo& shard : shards) {
    if (shard.primary != "n2") ++shard.epoch;  // n0 and n1 came back under new leases.
  }
  nodes[0].lease_id = 7;
  nodes[1].lease_id = 8;
  auto target = ShardMap::Make(2, shards, nodes);
  REQUIRE(target.ok());
  // 202 records and the version key: n0's unit (its record and its 100 primaries), then n1's.
  CHECK(StepThrough(base, *target, 128) == std::vector<size_t>{102, 102});
  // A node with more primaries than one commit takes cannot be recorded at all.
  auto refused = FirstStepOfChange(base, *target, 64);
  CHECK(refused.status().code() == ErrorCode::kInvalidArgument);
}

TEST_CASE("splits too many for one commit are published whole, a part at a time") {
  const ShardMap base = ShardMap::Uniform(1, 200, Nodes(3), 3);
  std::vector<ShardInfo> shards = base.shards();
  uint64_t next_id = base.NextShardId();
  for (int i = 0; i < 100; ++i) {
    const ShardInfo parent = shards[2 * i];
    REQUIRE(
        SplitAt(shards, next_id, parent.range.first + (parent.range.last - parent.range.first) / 2)
            .ok());
    for (ShardInfo& s : shards) {
      if (s.shard_id == next_id || s.shard_id == next_id + 1) s.split_from = parent.shard_id;
    }
    next_id += 2;
  }
  auto target = ShardMap::Make(2, shards, base.nodes());
  REQUIRE(target.ok());
  // 300 records: 42 whole splits (126 records and the version key) per commit.
  CHECK(StepThrough(base, *target, 128) == std::vector<size_t>{127, 127, 49});
}

}  // namespace
}  // namespace scrollback
