#include "scrollback/cluster/etcd_metadata_store.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <mutex>
#include <thread>

#include "process_util.h"
#include "scrollback/cluster/shard_map_store.h"

namespace scrollback {
namespace {

using testing::EtcdFixture;

std::shared_ptr<MetadataStore> Connect(EtcdFixture& etcd) {
  EtcdOptions options;
  options.endpoint = etcd.endpoint();
  options.watch_retry_interval = std::chrono::milliseconds(20);
  std::shared_ptr<MetadataStore> store;
  // etcd accepts connections a moment before it serves.
  for (int i = 0; i < 100 && !store; ++i) {
    auto connected = NewEtcdMetadataStore(options);
    if (connected.ok())
      store = *connected;
    else
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  REQUIRE(store);
  return store;
}

TEST_CASE("etcd: put, get, list and delete round-trip binary keys and values") {
  EtcdFixture etcd;
  auto store = Connect(etcd);
  std::string binary("\x00\x01\xff value", 9);
  auto v1 = store->Put("/t/a", binary);
  REQUIRE(v1.ok());
  REQUIRE(store->Put("/t/b", "2").ok());
  REQUIRE(store->Put("/u", "outside").ok());
  auto got = store->Get("/t/a");
  REQUIRE(got.ok());
  REQUIRE(*got);
  CHECK((*got)->value == binary);
  CHECK((*got)->version == *v1);
  auto listed = store->List("/t/");
  REQUIRE(listed.ok());
  REQUIRE(listed->size() == 2);
  CHECK((*listed)[1].key == "/t/b");
  REQUIRE(store->Delete("/t/a").ok());
  CHECK_FALSE(*store->Get("/t/a"));
}

TEST_CASE("etcd: compare-and-swap succeeds only at the expected version") {
  EtcdFixture etcd;
  auto store = Connect(etcd);
  auto v1 = store->CompareAndSwap("/cas", 0, "first");
  REQUIRE(v1.ok());
  CHECK(store->CompareAndSwap("/cas", 0, "again").status().code() ==
        ErrorCode::kFailedPrecondition);
  auto v2 = store->CompareAndSwap("/cas", *v1, "second");
  REQUIRE(v2.ok());
  CHECK(store->CompareAndSwap("/cas", *v1, "stale").status().code() ==
        ErrorCode::kFailedPrecondition);
  CHECK((*store->Get("/cas"))->value == "second");
}

TEST_CASE("etcd: a key under a lease disappears when the lease is revoked or lapses") {
  EtcdFixture etcd;
  auto store = Connect(etcd);
  auto lease = store->GrantLease(std::chrono::seconds(2));
  REQUIRE(lease.ok());
  REQUIRE(store->Put("/nodes/x", "addr", *lease).ok());
  REQUIRE(store->KeepAlive(*lease).ok());
  CHECK(*store->Get("/nodes/x"));
  REQUIRE(store->RevokeLease(*lease).ok());
  CHECK_FALSE(*store->Get("/nodes/x"));
  CHECK(store->KeepAlive(*lease).code() == ErrorCode::kNotFound);
  CHECK(store->Put("/nodes/y", "x", *lease).status().code() == ErrorCode::kNotFound);

  auto short_lease = store->GrantLease(std::chrono::seconds(1));
  REQUIRE(short_lease.ok());
  REQUIRE(store->Put("/nodes/z", "addr", *short_lease).ok());
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {  // etcd's minimum TTL is a few seconds.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    gone = !*store->Get("/nodes/z");
  }
  CHECK(gone);
}

TEST_CASE("etcd: a watch reports puts and deletes under its prefix") {
  EtcdFixture etcd;
  auto store = Connect(etcd);
  std::mutex mu;
  std::vector<std::string> seen;
  auto watch = store->Watch("/w/", [&](const std::string& key, const auto& value) {
    std::lock_guard lock(mu);
    seen.push_back(key + "=" + (value ? value->value : "<deleted>"));
  });
  REQUIRE(store->Put("/w/1", "x").ok());
  REQUIRE(store->Put("/other", "y").ok());
  auto saw = [&](const std::string& what) {
    for (int i = 0; i < 200; ++i) {
      {
        std::lock_guard lock(mu);
        if (std::find(seen.begin(), seen.end(), what) != seen.end()) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  };
  CHECK(saw("/w/1=x"));
  REQUIRE(store->Delete("/w/1").ok());
  CHECK(saw("/w/1=<deleted>"));
  std::lock_guard lock(mu);
  for (auto& s : seen) CHECK(s.rfind("/w/", 0) == 0);
}

// Waits (bounded) until `done()` holds, checking every 10 ms.
template <typename Done>
bool Within(std::chrono::milliseconds limit, Done&& done) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

TEST_CASE(
    "etcd: a commit writes all or nothing at one revision, and a watch gets it in one batch") {
  EtcdFixture etcd;
  auto store = Connect(etcd);
  std::mutex mu;
  std::vector<ChangeBatch> batches;
  auto watch = store->WatchChanges("/t/", 0, [&](const ChangeBatch& batch) {
    std::lock_guard lock(mu);
    batches.push_back(batch);
  });
  auto first = store->Commit({{"/t/a", 0}}, {{"/t/a", "1"}, {"/t/b", "2"}, {"/u/c", "3"}});
  REQUIRE(first.ok());
  CHECK(store->Commit({{"/t/a", 0}}, {{"/t/a", "9"}}).status().code() ==
        ErrorCode::kFailedPrecondition);
  REQUIRE(store->Commit({{"/t/a", *first}}, {{"/t/a", std::nullopt}, {"/t/b", "4"}}).ok());
  REQUIRE(Within(std::chrono::seconds(5), [&] {
    std::lock_guard lock(mu);
    return batches.size() == 2;
  }));
  {
    std::lock_guard lock(mu);
    CHECK(batches[0].version == *first);
    CHECK(batches[0].changes.size() == 2);  // /u/c is outside the prefix.
    CHECK_FALSE(batches[1].changes[0].second.has_value());
    CHECK(batches[1].changes[1].second->value == "4");
  }
  std::vector<MetadataWrite> too_many;
  for (int i = 0; i < 129; ++i) too_many.push_back({"/t/many/" + std::to_string(i), "x"});
  CHECK(store->Commit({}, too_many).status().code() == ErrorCode::kInvalidArgument);

  // A watch from a past revision replays what came after it.
  std::atomic<int> replayed{0};
  auto late = store->WatchChanges("/t/", *first, [&](const ChangeBatch&) { ++replayed; });
  CHECK(Within(std::chrono::seconds(5), [&] { return replayed == 1; }));

  // Pages read at one revision do not see later writes.
  auto page = store->ListPage("/t/", "", 1, 0);
  REQUIRE(page.ok());
  REQUIRE(page->kvs.size() == 1);
  REQUIRE(store->Put("/t/c", "new").ok());
  auto rest = store->ListPage("/t/", page->kvs.back().key, 10, page->version);
  REQUIRE(rest.ok());
  CHECK(rest->kvs.empty());
  CHECK(store->ListPage("/t/", page->kvs.back().key, 10, 0)->kvs.size() == 1);
}

TEST_CASE(
    "etcd: a 3,000-shard map is bootstrapped in several commits and followed change by change") {
  EtcdFixture etcd;
  auto store = Connect(etcd);
  std::vector<NodeInfo> nodes;
  for (int i = 0; i < 30; ++i) nodes.push_back({"n" + std::to_string(i), "127.0.0.1:1", "", 0});
  REQUIRE(PublishFirstShardMap(*store, ShardMap::Uniform(1, 3000, nodes, 3)).ok());
  auto watcher = ShardMapWatcher::Start(store);
  REQUIRE(watcher.ok());
  CHECK((*watcher)->Current()->map.shards().size() == 3000);
  ShardMap last = (*watcher)->Current()->map;
  for (int change = 0; change < 20; ++change) {
    auto edited = EditShardMap(*store, [&](std::vector<ShardInfo>& shards, auto&) {
      ShardInfo& shard = shards[(change * 131) % shards.size()];
      std::swap(shard.primary, shard.replicas[0]);
      ++shard.epoch;
      return Status::Ok();
    });
    REQUIRE(edited.ok());
    last = std::move(edited).value();
  }
  REQUIRE(Within(std::chrono::seconds(10),
                 [&] { return (*watcher)->Current()->map.version() == last.version(); }));
  CHECK((*watcher)->Current()->map.Serialize() == last.Serialize());
  CHECK((*watcher)->reloads() == 1);
  CHECK((*watcher)->batches_applied() == 20);
}

TEST_CASE("etcd: a watch stream resumes after etcd restarts, from the revision after the last") {
  EtcdFixture etcd;
  auto store = Connect(etcd);
  std::mutex mu;
  std::vector<ChangeBatch> batches;
  auto watch = store->WatchChanges("/r/", 0, [&](const ChangeBatch& batch) {
    std::lock_guard lock(mu);
    batches.push_back(batch);
  });
  auto seen = [&](const std::string& key) {
    return Within(std::chrono::seconds(20), [&] {
      std::lock_guard lock(mu);
      for (const ChangeBatch& b : batches) {
        for (const auto& change : b.changes) {
          if (change.first == key) return true;
        }
      }
      return false;
    });
  };
  REQUIRE(store->Put("/r/1", "before").ok());
  CHECK(seen("/r/1"));
  etcd.process->Stop(SIGKILL, std::chrono::milliseconds(0));  // The stream breaks.
  CHECK_FALSE(store->Put("/r/lost", "x").ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // The watch retries meanwhile.
  etcd.Start();
  // Writes once etcd is back (the first may meet a connection still closing: retried).
  Result<int64_t> put = Status::Unavailable("not tried");
  for (int i = 0; i < 50 && !put.ok(); ++i) {
    put = store->Put("/r/2", "after");
    if (!put.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  REQUIRE(put.ok());
  CHECK(seen("/r/2"));
  std::lock_guard lock(mu);
  for (size_t i = 1; i < batches.size(); ++i) {
    CHECK(batches[i].version > batches[i - 1].version);  // Nothing delivered twice.
  }
}

TEST_CASE("etcd: an unreachable endpoint is reported as unavailable") {
  EtcdOptions options;
  options.endpoint = "127.0.0.1:" + std::to_string(testing::FreePort());
  options.request_timeout = std::chrono::milliseconds(500);
  CHECK(NewEtcdMetadataStore(options).status().code() == ErrorCode::kUnavailable);
}

}  // namespace
}  // namespace scrollback
