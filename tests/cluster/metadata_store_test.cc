#include "scrollback/cluster/metadata_store.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <thread>

#include "scrollback/cluster/shard_map_store.h"

namespace scrollback {
namespace {

TEST_CASE("metadata compare-and-swap succeeds only at the expected version") {
  auto store = NewInMemoryMetadataStore(std::make_shared<ManualClock>());
  auto v1 = store->CompareAndSwap("/k", 0, "a");
  REQUIRE(v1.ok());
  CHECK(store->CompareAndSwap("/k", 0, "b").status().code() == ErrorCode::kFailedPrecondition);
  auto v2 = store->CompareAndSwap("/k", *v1, "c");
  REQUIRE(v2.ok());
  CHECK(*v2 > *v1);
  CHECK((*store->Get("/k"))->value == "c");
  CHECK(store->CompareAndSwap("/k", *v1, "d").status().code() == ErrorCode::kFailedPrecondition);
  REQUIRE(store->Delete("/k").ok());
  CHECK_FALSE(*store->Get("/k"));
}

TEST_CASE("metadata lists a prefix in key order") {
  auto store = NewInMemoryMetadataStore(std::make_shared<ManualClock>());
  REQUIRE(store->Put("/n/b", "2").ok());
  REQUIRE(store->Put("/n/a", "1").ok());
  REQUIRE(store->Put("/m", "x").ok());
  auto listed = store->List("/n/");
  REQUIRE(listed.ok());
  REQUIRE(listed->size() == 2);
  CHECK((*listed)[0].key == "/n/a");
  CHECK((*listed)[1].value.value == "2");
}

TEST_CASE("keys under a lease vanish when it is not kept alive, and watchers hear it") {
  auto clock = std::make_shared<ManualClock>();
  auto store = NewInMemoryMetadataStore(clock);
  std::atomic<int> deletions{0};
  auto watch = store->Watch("/nodes/", [&](const std::string&, const auto& value) {
    if (!value) ++deletions;
  });
  auto lease = store->GrantLease(std::chrono::seconds(5));
  REQUIRE(lease.ok());
  REQUIRE(store->Put("/nodes/a", "addr", *lease).ok());
  clock->Advance(4000);
  REQUIRE(store->KeepAlive(*lease).ok());
  clock->Advance(4000);
  CHECK(*store->Get("/nodes/a"));  // Kept alive 4 s ago: still there.
  clock->Advance(2000);
  CHECK_FALSE(*store->Get("/nodes/a"));
  CHECK(store->KeepAlive(*lease).code() == ErrorCode::kNotFound);
  for (int i = 0; i < 100 && deletions == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(deletions == 1);
  CHECK(store->Put("/nodes/b", "x", *lease).status().code() == ErrorCode::kNotFound);
}

TEST_CASE("a watch sees every change under its prefix until its handle is dropped") {
  auto store = NewInMemoryMetadataStore(std::make_shared<ManualClock>());
  std::vector<std::string> seen;
  auto watch = store->Watch("/a/", [&](const std::string& key, const auto& value) {
    seen.push_back(key + "=" + (value ? value->value : "<deleted>"));
  });
  REQUIRE(store->Put("/a/1", "x").ok());
  REQUIRE(store->Put("/b/1", "y").ok());
  REQUIRE(store->Delete("/a/1").ok());
  watch.reset();
  REQUIRE(store->Put("/a/2", "z").ok());
  CHECK(seen == std::vector<std::string>{"/a/1=x", "/a/1=<deleted>"});
}

TEST_CASE("a key under an expired lease is never listed, even before the expiry thread runs") {
  auto clock = std::make_shared<ManualClock>();
  auto store = NewInMemoryMetadataStore(clock);
  auto lease = store->GrantLease(std::chrono::milliseconds(100));
  REQUIRE(lease.ok());
  REQUIRE(store->Put("/leases/a", "1", *lease).ok());
  REQUIRE(store->List("/leases/")->size() == 1);
  clock->Advance(101);
  // The failover controller decides from List: a lapsed lease must not look alive.
  CHECK(store->List("/leases/")->empty());
}

TEST_CASE("publishing a node's address keeps the lease the map records for it") {
  auto store = NewInMemoryMetadataStore(std::make_shared<ManualClock>());
  std::vector<NodeInfo> nodes = {{"n1", "127.0.0.1:1", "", 0}, {"n2", "127.0.0.1:2", "", 0}};
  ShardMap first = ShardMap::Uniform(1, 2, nodes, 2);
  std::vector<NodeInfo> leased = first.nodes();
  leased[0].lease_id = 42;  // As the failover controller records it.
  auto map = ShardMap::Make(2, first.shards(), leased);
  REQUIRE(map.ok());
  REQUIRE(PublishFirstShardMap(*store, *map).ok());
  REQUIRE(PublishNodeAddress(*store, {"n1", "127.0.0.1:9", "127.0.0.1:10", 0}).ok());
  auto now = ReadShardMap(*store);
  REQUIRE(now.ok());
  CHECK(now->FindNode("n1")->address == "127.0.0.1:9");
  CHECK(now->FindNode("n1")->lease_id == 42);  // Not reset to the caller's 0.
}

}  // namespace
}  // namespace scrollback
