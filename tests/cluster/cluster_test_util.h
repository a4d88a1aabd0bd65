// Helpers for tests that run an EmbeddedCluster and talk to it over real RPC.
#pragma once

#include <kj/async-io.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <thread>

#include "scrollback/cluster/embedded_cluster.h"

namespace scrollback::testing {

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

}  // namespace scrollback::testing
