// FanOutWorker: drains a node's outboxes into the members' inboxes.
//
// For each shard the node hosts, it reads outbox records in key order, delivers them to the
// users' shards through the smart client (ApplyInboxUpdates, grouped by owning node), and
// deletes the records that were applied. Delivery is at least once: a record is deleted only
// after its update was applied (or found already applied), so a crash or a down target means a
// later retry, never a loss; applying is idempotent by seq, so a repeat is harmless.
//
// No record is ever deleted undelivered. Records whose target fails (unavailable, overloaded,
// or answers that it cannot apply them: invalid-argument from a node with stricter limits,
// corruption from a bad SST file) stay in the outbox; the worker moves on to later records and
// comes back to the oldest failed one after a backoff that doubles per failed retry, from
// `retry_wait` up to `max_retry_wait`. Errors that a retry cannot fix by itself (invalid
// argument, corruption) are logged at error level and counted as undeliverable in /metrics:
// an operator fixes the target, and the next retry delivers them.
//
// Positions are per shard *store*: a shard that is closed and opened again (moved away and
// back) restarts its outbox positions, so the worker's cursor for it starts afresh too.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "scrollback/node/storage_node.h"
#include "scrollback/router/chat_client.h"

namespace scrollback {

struct FanOutOptions {
  // Default: 500. Outbox records read (and delivered in one round) per shard.
  uint32_t batch = 500;
  // Default: 50 ms. Longest sleep when idle; a write wakes the worker sooner.
  std::chrono::milliseconds idle_wait = std::chrono::milliseconds(50);
  // Default: 20 ms. After a round that delivered records and emptied every outbox it read, the
  // worker waits this long before the next (a full round goes on at once). Updates that arrive
  // meanwhile are delivered together, and each batch writes every (user, conversation) inbox
  // row pair once however many of its messages it carries: under a skewed send load most
  // inbox writes collapse. It adds at most this much to the time a send takes to reach the
  // inboxes (docs/benchmarks.md, Hot paths: +31 % sends at rf 1, inbox p99 unchanged). 0: none.
  std::chrono::milliseconds linger = std::chrono::milliseconds(20);
  // Default: 100 ms. First wait before retrying records whose delivery failed.
  std::chrono::milliseconds retry_wait = std::chrono::milliseconds(100);
  // Default: 10 s. Longest wait between retries of records that keep failing.
  std::chrono::milliseconds max_retry_wait = std::chrono::seconds(10);
  // Default: none (quiet). Delivery failures and undeliverable records are logged here.
  Logger logger;
  // Client used for delivery; its call timeout bounds how long a stuck node delays the worker.
  ClientOptions client;
};

class FanOutWorker {
 public:
  // Starts the worker thread. `node` must outlive the worker.
  FanOutWorker(StorageNode& node, std::shared_ptr<ShardMapSource> maps, FanOutOptions options);
  ~FanOutWorker();  // Stops and joins.

  uint64_t delivered() const { return delivered_.load(); }
  // Delivery calls made (one per outbox read that found records).
  uint64_t rounds() const { return rounds_.load(); }
  // Delivery attempts answered invalid-argument or corruption (kept and retried, never dropped).
  uint64_t undeliverable() const { return undeliverable_.load(); }
  // Delivery attempts that failed for any reason (kept and retried).
  uint64_t failed() const { return failed_.load(); }

  // Prometheus text: delivered, failed and undeliverable attempts, retries, outbox read errors.
  void RenderMetrics(std::string* out) const;

 private:
  void Run();

  StorageNode& node_;
  std::shared_ptr<ShardMapSource> maps_;
  const FanOutOptions options_;
  std::atomic<bool> stop_{false};
  std::mutex linger_mu_;  // With linger_cv_: the linger's wait, which stop ends.
  std::condition_variable linger_cv_;
  const Logger log_;
  std::atomic<uint64_t> delivered_{0};
  std::atomic<uint64_t> rounds_{0};
  std::atomic<uint64_t> failed_{0};
  std::atomic<uint64_t> undeliverable_{0};
  std::atomic<uint64_t> read_errors_{0};
  std::atomic<uint64_t> delete_errors_{0};
  std::thread thread_;
};

}  // namespace scrollback
