// Helpers shared by tests: temporary directories and store fixtures.
#pragma once

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>

#include "scrollback/engine/shard_store.h"

namespace scrollback::testing {

// The seed of a randomized test: SCROLLBACK_SEED from the environment (to replay a failure),
// else a fresh one. Tests print it with INFO so that a failure shows it.
inline uint64_t TestSeed() {
  if (const char* fixed = std::getenv("SCROLLBACK_SEED")) return std::strtoull(fixed, nullptr, 10);
  return (static_cast<uint64_t>(std::random_device{}()) << 32) | std::random_device{}();
}

// A fresh directory under the system temp dir, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("scrollback-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string path() const { return path_.string(); }
  std::string Sub(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// A ShardStore in a temporary directory with a manual clock.
struct StoreFixture {
  explicit StoreFixture(ShardLimits limits = {}) {
    options.clock = clock;
    options.limits = limits;
    Reopen();
  }
  void Reopen() {
    store.reset();
    auto opened = ShardStore::Open(options, dir.Sub("shard"));
    REQUIRE(opened.ok());
    store = std::move(opened).value();
  }
  // Creates conversation `conv_id` with `creator` and `members`; fails the test on error.
  Conversation Create(uint64_t conv_id, uint64_t creator, std::vector<uint64_t> members = {},
                      std::string title = "t") {
    auto conv = store->CreateConversation({conv_id, creator, std::move(members), std::move(title)});
    REQUIRE(conv.ok());
    return *conv;
  }
  uint64_t Send(uint64_t conv_id, uint64_t sender, const std::string& client_id,
                const std::string& body) {
    auto sent = store->SendMessage({conv_id, sender, client_id, body});
    INFO(sent.status().ToString());
    REQUIRE(sent.ok());
    return sent->seq;
  }

  TempDir dir;
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  ShardOptions options;
  std::unique_ptr<ShardStore> store;
};

}  // namespace scrollback::testing
