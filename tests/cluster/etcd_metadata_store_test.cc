#include "scrollback/cluster/etcd_metadata_store.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <mutex>
#include <thread>

#include "process_util.h"

namespace scrollback {
namespace {

using testing::EtcdFixture;

std::shared_ptr<MetadataStore> Connect(EtcdFixture& etcd) {
  EtcdOptions options;
  options.endpoint = etcd.endpoint();
  options.watch_interval = std::chrono::milliseconds(20);
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

TEST_CASE("etcd: an unreachable endpoint is reported as unavailable") {
  EtcdOptions options;
  options.endpoint = "127.0.0.1:" + std::to_string(testing::FreePort());
  options.request_timeout = std::chrono::milliseconds(500);
  CHECK(NewEtcdMetadataStore(options).status().code() == ErrorCode::kUnavailable);
}

}  // namespace
}  // namespace scrollback
