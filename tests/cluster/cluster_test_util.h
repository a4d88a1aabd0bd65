// Helpers for tests that run an EmbeddedCluster and talk to it over real RPC.
#pragma once

#include <kj/async-io.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <thread>

#include "scrollback/cluster/embedded_cluster.h"

namespace scrollback::testing {

// Options for a cluster whose tests move shard directories between nodes (MoveShard): one copy
// per shard, in directories the nodes share.
inline EmbeddedClusterOptions SharedDirectoryOptions() {
  EmbeddedClusterOptions options;
  options.replication_factor = 1;
  return options;
}

// A cluster plus an event loop and a smart client on the test's thread.
struct ClusterFixture {
  explicit ClusterFixture(EmbeddedClusterOptions options = {}) {
    // Generous: sanitizer builds under parallel ctest are slow, and no test depends on a call
    // timing out (dead nodes refuse connections at once).
    options.fan_out_options.client.call_timeout = std::chrono::seconds(10);
    // Quiet unless SCROLLBACK_TEST_LOG names a level (e.g. SCROLLBACK_TEST_LOG=debug).
    if (!options.logger) options.logger = MakeTestLogger("cluster");
    auto started = EmbeddedCluster::Start(options);
    INFO(started.status().ToString());
    REQUIRE(started.ok());
    cluster = std::move(started).value();
    ClientOptions client_options;
    client_options.call_timeout = std::chrono::seconds(10);
    client = cluster->NewClient(*io.provider, client_options);
  }

  template <typename T>
  T Wait(kj::Promise<T>&& promise) {
    return promise.wait(io.waitScope);
  }

  // Polls `done` (which may use Wait) every 20 ms until it returns true or `limit` passes.
  template <typename Fn>
  bool Eventually(Fn&& done, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      if (done()) return true;
      io.provider->getTimer().afterDelay(20 * kj::MILLISECONDS).wait(io.waitScope);
    }
    return done();
  }

  kj::AsyncIoContext io = kj::setupAsyncIo();
  std::unique_ptr<EmbeddedCluster> cluster;
  std::unique_ptr<ChatClient> client;
};

// A query for the first page (up to 200 rows) of `user`'s inbox.
inline InboxQuery Inbox(uint64_t user) {
  InboxQuery q;
  q.user_id = user;
  q.limit = 200;
  return q;
}

// The newest seq `user`'s inbox shows for `conv` (0 if the row is missing).
inline uint64_t InboxSeq(ClusterFixture& f, uint64_t user, uint64_t conv) {
  auto page = f.Wait(f.client->ListInbox(Inbox(user)));
  if (!page.ok()) return 0;
  for (auto& e : page->entries) {
    if (e.conv_id == conv) return e.last_seq;
  }
  return 0;
}

// Whether `user`'s inbox has a row for `conv`.
inline bool HasInboxRow(ClusterFixture& f, uint64_t user, uint64_t conv) {
  auto page = f.Wait(f.client->ListInbox(Inbox(user)));
  if (!page.ok()) return false;
  for (auto& e : page->entries) {
    if (e.conv_id == conv) return true;
  }
  return false;
}

}  // namespace scrollback::testing
