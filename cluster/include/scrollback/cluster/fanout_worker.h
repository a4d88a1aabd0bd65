// FanOutWorker: drains a node's outboxes into the members' inboxes.
//
// For each shard the node hosts, it reads outbox records in key order, delivers them to the
// users' shards through the smart client (ApplyInboxUpdates, grouped by owning node), and
// deletes the records that were applied. Delivery is at least once: a record is deleted only
// after its update was applied (or found already applied), so a crash or a down target means a
// later retry, never a loss; applying is idempotent by seq, so a repeat is harmless.
//
// Records whose target is unavailable stay in the outbox; the worker moves on to later records
// and comes back to them on its next pass over the shard.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include "scrollback/engine/storage_node.h"
#include "scrollback/router/chat_client.h"

namespace scrollback {

struct FanOutOptions {
  // Default: 500. Outbox records read (and delivered in one round) per shard.
  uint32_t batch = 500;
  // Default: 50 ms. Longest sleep when idle; a write wakes the worker sooner.
  std::chrono::milliseconds idle_wait = std::chrono::milliseconds(50);
  // Default: 100 ms. Sleep after a pass in which deliveries failed and none succeeded.
  std::chrono::milliseconds retry_wait = std::chrono::milliseconds(100);
  // Client used for delivery; its call timeout bounds how long a stuck node delays the worker.
  ClientOptions client;
};

class FanOutWorker {
 public:
  // Starts the worker thread. `node` must outlive the worker.
  FanOutWorker(StorageNode& node, std::shared_ptr<ShardMapSource> maps, FanOutOptions options);
  ~FanOutWorker();  // Stops and joins.

  uint64_t delivered() const { return delivered_.load(); }
  // Records dropped because they can never apply (invalid or corrupt); each one is a bug.
  uint64_t dropped() const { return dropped_.load(); }

 private:
  void Run();

  StorageNode& node_;
  std::shared_ptr<ShardMapSource> maps_;
  const FanOutOptions options_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> delivered_{0};
  std::atomic<uint64_t> dropped_{0};
  std::thread thread_;
};

}  // namespace scrollback
