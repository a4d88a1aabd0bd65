// State shared by every event loop, connection and engine-pool task of one storage node.
// Private to node/.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine_pool.h"
#include "node_metrics.h"
#include "scrollback/node/storage_node.h"
#include "scrollback/replication/replication.h"

namespace scrollback {

// A shard the node was assigned but does not serve yet: its keys are answered `unavailable`
// (retryable) rather than not-owner, since the map does name this node.
struct PendingShard {
  ShardAssignment assignment;
  ShardState state = ShardState::kOpening;
  std::string why;                             // The last open error, if any.
  std::shared_ptr<replication::ShardLog> log;  // Bootstrap progress.
};

// Which shards the node serves, at one shard-map version. Published whole by the ShardHost and
// never mutated after: readers take a shared_ptr and route without locks.
struct ShardTable {
  uint64_t map_version = 0;
  std::string shard_map;              // Serialized map, opaque here.
  std::vector<HostedShard> shards;    // Serving. Sorted by range.first; ranges do not overlap.
  std::vector<PendingShard> pending;  // Assigned, not serving (opening or refused).

  const HostedShard* Find(uint64_t token) const {
    auto it = std::upper_bound(
        shards.begin(), shards.end(), token,
        [](uint64_t t, const HostedShard& h) { return t < h.assignment.range.first; });
    if (it == shards.begin()) return nullptr;
    --it;
    return it->assignment.range.Contains(token) ? &*it : nullptr;
  }
  // Linear: a node has few shards in transition at once.
  // By shard id (linear: replication calls are few per shard).
  const HostedShard* FindShard(uint64_t shard_id) const {
    for (const HostedShard& h : shards) {
      if (h.assignment.shard_id == shard_id) return &h;
    }
    return nullptr;
  }
  const PendingShard* FindPending(uint64_t token) const {
    for (const PendingShard& p : pending) {
      if (p.assignment.range.Contains(token)) return &p;
    }
    return nullptr;
  }
};

class NodeCore {
 public:
  explicit NodeCore(const NodeOptions& options)
      : options(options),
        logger(OrNull(options.logger)),
        pool(options.engine_threads > 0
                 ? std::make_unique<EnginePool>(options.engine_threads, options.max_queued_calls)
                 : nullptr),
        checkpoints(options.data_dir + "/checkpoints", options.replication.checkpoint_idle_timeout,
                    logger) {}

  std::shared_ptr<const ShardTable> Table() const {
    std::lock_guard lock(mu);
    return table;
  }
  void Publish(std::shared_ptr<const ShardTable> next) {
    std::lock_guard lock(mu);
    table = std::move(next);
  }

  const NodeOptions options;
  const Logger logger;
  OutboxSignal signal;
  NodeMetrics metrics;
  std::unique_ptr<EnginePool> pool;  // Null: engine calls run on the event loops.
  // Checkpoints served to bootstrapping replicas (data_dir/checkpoints: the shards' filesystem,
  // so they are hard links).
  replication::CheckpointSource checkpoints;

 private:
  mutable std::mutex mu;
  std::shared_ptr<const ShardTable> table = std::make_shared<ShardTable>();  // GUARDED_BY(mu)
};

}  // namespace scrollback
