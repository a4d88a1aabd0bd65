// StorageNode: a process's storage server. Hosts many shard replicas (one ShardStore each) and
// serves the ChatStore and Node Cap'n Proto APIs (schema/chatstore.capnp) for the token ranges
// it owns. It knows nothing of routing or of the metadata store: whoever runs it (scrollbackd,
// EmbeddedCluster) tells it which shards it hosts and the shard-map version.
//
// Threading: `event_loops` threads each run a Cap'n Proto event loop; one accepts and hands the
// connections to the loops in turn. The loops decode requests and encode replies. Lock-free
// reads (getMessage, readHistory, listInbox) run on the loop when memtables and the block cache
// can answer them (CacheOnlyReads); every other engine call, and every read that would touch
// the disk, runs on a bounded pool of `engine_threads` (ShardStore is thread-safe), so slow
// RocksDB work never stalls a loop. A full pool queue answers `overloaded` (decisions 0004,
// 0006).
//
// Bounded input: every connection reads messages with traversal / nesting limits and has a flow
// limit (bytes of calls in flight) beyond which it stops reading (backpressure); the engine
// checks every size against ShardLimits. A malformed message closes that connection only.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "scrollback/engine/shard_store.h"
#include "scrollback/node/primary_lease.h"
#include "scrollback/schema/log.h"
#include "scrollback/schema/status.h"
#include "scrollback/schema/token.h"

namespace scrollback {

namespace replication {
class ShardLog;  // replication/replication.h
}
class NetworkFaults;  // rpc/network_faults.h

// What a node does with a shard it hosts. Persisted in the shard directory's identity file by
// name ("primary", "replica"); never renumber.
enum class ShardRole : uint8_t {
  kPrimary = 1,  // Takes writes and reads; delivers its outbox.
  kReplica = 2,  // Read-only copy kept current by log shipping from the primary (replication/).
};
const char* ShardRoleName(ShardRole role);

// One shard this node hosts, as the shard map gives it.
struct ShardAssignment {
  uint64_t shard_id = 0;
  TokenRange range;
  uint64_t epoch = 1;
  ShardRole role = ShardRole::kPrimary;
  // The map version at which this copy of the shard was placed (ShardInfo::placement_version).
  // A shard directory records the placement it was created for; a directory left by another
  // placement is never served as if it were current (docs/architecture.md, Shard lifecycle).
  uint64_t placement_version = 0;
  // The shard's primary: the node itself for a primary; for a replica, where it pulls the log
  // from (and what notPrimary answers point clients to).
  std::string primary_node;
  std::string primary_address;
  // For a primary: the node ids of the shard's replicas in the map. Only pulls that name one
  // of them acknowledge semi-sync writes. (The name is the puller's word: the fence against a
  // copy that is not what it claims is the epoch and the divergence check, not the name.)
  std::vector<std::string> replica_nodes;
  // For a primary: a planned switchover is in progress (ShardInfo::switch_to): writes are
  // answered unavailable while the new primary catches up; pulls, reads and checksums go on.
  bool writes_paused = false;
  // For a primary: a split or merge is in progress (ShardInfo::split_at, merge_into). The node
  // flushes the store's
  // memtables (writes go on meanwhile, so the seal's checkpoint has little left to flush), then
  // seals it (its last LSN final; writes answered unavailable) until the map replaces the shard
  // with its children.
  bool sealed_for_reshard = false;
  // Any role: a split or merge of the shard is in progress. A replica flushes its memtables at
  // once, so that the checkpoint of its copy later flushes little (it holds the same LSNs).
  bool reshard_pending = false;
  // A split child (ShardInfo::split_from): its first copy is cut from the parent's local copy
  // at exactly split_lsn when the node holds one (no data crosses the network); else a replica
  // bootstraps from its primary, and a primary waits (it never starts empty).
  uint64_t split_from = 0;
  uint64_t split_lsn = 0;
  // A merged shard (ShardInfo::merge_left / merge_right): its first copy is made from the
  // node's copies of both parents at exactly those LSNs when it holds them; else as a split
  // child without a local parent.
  uint64_t merge_left = 0;
  uint64_t merge_right = 0;
  uint64_t merge_left_lsn = 0;
  uint64_t merge_right_lsn = 0;

  friend bool operator==(const ShardAssignment&, const ShardAssignment&) = default;
};

// Per-node resource budgets, shared by every shard the node hosts (however many): memory and
// files stay bounded by these, not by shards x per-shard settings.
struct NodeBudgets {
  // Default: 1 GiB. One LRU block cache (data, index and filter blocks) for all shards; the
  // memtables (below) are charged to it too. With 3 copies per shard a node holds 3x the data
  // of a single-copy cluster: at 256 MiB the memtables of its replicas crowded the data blocks
  // out and halved read throughput (docs/benchmarks.md, Replication).
  size_t block_cache_bytes = 1ull << 30;
  // Default: 512 MiB. Memtable memory of all shards together (one WriteBufferManager, charged
  // to the block cache); a shard over its share flushes. A node holds its replicas' memtables
  // too: at 256 MiB with 3 copies, small flushes and their compactions cost 8-11 % of send
  // throughput (docs/benchmarks.md, Replication).
  size_t write_buffer_bytes = 512ull << 20;
  // Default: 8,192. Open SST files of all shards together; each shard opens with an equal share
  // of it (at least 64) for the shards hosted when it opens.
  int max_open_files = 8192;
  // Default: 4 GiB. WAL archive kept for replica catch-up, all shards together; each shard keeps
  // an equal share (at least 64 MiB) for the shards hosted when it opens.
  uint64_t wal_archive_bytes = 4ull << 30;
  // Default: 64 MiB. The newest messages of recently read conversations (the engine's history
  // tail cache, decision 0014): a history page from the newest message is served from memory,
  // on the event loop. 0: off.
  size_t history_cache_bytes = 64ull << 20;
};

// Log shipping and replica reads (docs/replication.md).
struct ReplicationOptions {
  // Default: 0 (unlimited). Checkpoint copy rate of a bootstrapping replica, MB/s.
  double bootstrap_mb_per_s = 0;
  // Default: 250 ms. How long a replica's pull waits on the primary for new writes.
  std::chrono::milliseconds pull_wait{250};
  // Default: 0. After a pull that brought a few batches, a replica waits this long before the
  // next, so that a busy shard ships in groups (FollowerOptions::pull_linger). Measured on the
  // 2-core reference machine, 1-8 ms gained nothing over 0 (docs/benchmarks.md).
  std::chrono::microseconds pull_linger{0};
  // Default: 4 MiB. Log bytes per pull.
  uint32_t pull_max_bytes = 4u << 20;
  // Default: async. How writes that do not choose (WriteOptions ack = default) are
  // acknowledged: async (the primary committed) or semi-sync (a replica applied it too).
  AckMode default_ack = AckMode::kAsync;
  // Default: 1 s. How long a semi-sync write waits for a replica before it answers
  // notReplicated (a write's own timeout_ms, when set, wins, capped at 60 s; clients add that
  // to their call deadline). Keep it below clients' call timeout (5 s): a client that gives up
  // first marks the node down and answers unavailable.
  std::chrono::milliseconds semi_sync_timeout{1000};
  // Default: 200 ms. How long a replica holds a session read for the caller's token before
  // answering unavailable (the client then reads from the primary).
  std::chrono::milliseconds session_wait{200};
  // Default: 1 s. Staleness bound of `replica` reads that give none.
  std::chrono::milliseconds default_max_lag = std::chrono::seconds(1);
  // Default: 5 min. A checkpoint served to a replica and not read for this long is released.
  std::chrono::milliseconds checkpoint_idle_timeout = std::chrono::minutes(5);
  // Test seam (see FollowerOptions::faults): the node's connections to primaries. Default: none.
  std::shared_ptr<NetworkFaults> faults;
  // Test seam (see FollowerOptions::tamper_chunk). Default: none.
  std::function<void(const std::string& file, uint64_t offset, std::string* data)> tamper_chunk;
};

struct NodeOptions {
  // Default: "node". Reported by health(); unique in a cluster.
  std::string node_id = "node";
  // Required. Shard replicas live in data_dir/shard-<id>.
  std::string data_dir;
  // Default: "127.0.0.1:0" (a free port). IPv4 host:port to listen on.
  std::string listen_address = "127.0.0.1:0";
  // Default: 2. Event-loop threads (one per core is right).
  int event_loops = 2;
  // Default: 64 MiB. Largest RPC message a connection may send (Cap'n Proto traversal limit).
  uint64_t max_message_bytes = 64ull << 20;
  // Default: 16 MiB. Bytes of calls in flight per connection before the node stops reading
  // from it (the client sees backpressure, the node's memory stays bounded).
  size_t flow_limit_bytes = 16ull << 20;
  // Default: 256 MiB. Bytes of incoming frames held for all connections together; a frame that
  // does not fit waits (RpcServerOptions::receive_budget_bytes).
  size_t receive_budget_bytes = 256ull << 20;
  // Default: 30 s. A connection whose started frame stalls this long is dropped.
  std::chrono::milliseconds partial_frame_timeout = std::chrono::seconds(30);
  // Default: 0 (none). A connection with no frame for this long is dropped.
  std::chrono::milliseconds idle_timeout{0};
  // Default: 10,000. Connections served at once; more are closed when accepted.
  size_t max_connections = 10'000;
  // Default: 1,000. Most entries in one sendBatch or applyInboxUpdates call.
  uint32_t max_batch = 1000;
  // Default: 4. Threads that run engine calls off the event loops, so a slow call (an fsync,
  // a cold read) delays only its caller. 0 runs engine calls on the event loops themselves
  // (fewer thread hops, but a slow call stalls that loop's other connections).
  int engine_threads = 4;
  // Default: 10,000. Engine calls queued beyond this are answered `overloaded`.
  size_t max_queued_calls = 10'000;
  // Shard options applied to every hosted shard (shard_id, token_range and the per-shard shares
  // of `budgets` are set per shard).
  ShardOptions shard_options;
  NodeBudgets budgets;
  // Default: 2. Threads that open and close shards, off the RPC loops and off the caller of
  // AssignShards: a slow open (a large WAL to replay) delays only shards queued behind it.
  int shard_lifecycle_threads = 2;
  // Default: false: a shard directory the node stops hosting is moved aside to
  // data_dir/dropped/ (never deleted) with a log line. true keeps it in place: only for
  // EmbeddedCluster, whose nodes share one directory per shard (decision 0007).
  bool keep_dropped_directories = false;
  ReplicationOptions replication;
  // Default: none: writes are allowed wherever the shard table says the node is primary (a
  // node without a metadata store). With a metadata store, the lease keeper (cluster/) and the
  // map follower keep it current, and writes need it (primary_lease.h; decision 0010).
  std::shared_ptr<PrimaryLease> primary_lease;
  // Default: none (quiet). Start-up, shard lifecycle, and every error the node swallows.
  Logger logger;
};

// Where a hosted shard is in its lifecycle.
enum class ShardState : uint8_t {
  kOpening,  // Assigned; its RocksDB is being opened (or retried after a failure).
  kServing,  // Open: calls are served.
  kRefused,  // Its directory belongs to another placement, shard or range: not opened until the
             // map changes (an operator's decision; see last_error).
  kBootstrapping,  // A replica copying a checkpoint of its primary before it opens.
};
const char* ShardStateName(ShardState state);

struct ShardStatus {
  ShardAssignment assignment;
  ShardState state = ShardState::kOpening;
  uint32_t open_attempts = 0;
  std::string last_error;  // Empty when the last attempt succeeded.
};

// Wakes the fan-out worker when a write produced outbox records.
class OutboxSignal {
 public:
  void Notify() {
    {
      std::lock_guard lock(mu_);
      ++generation_;
    }
    cv_.notify_all();
  }
  // Returns once Notify() was called after `*seen` (updating it), or after `timeout`.
  void WaitFor(uint64_t* seen, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return generation_ != *seen; });
    *seen = generation_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t generation_ = 0;  // GUARDED_BY(mu_)
};

class LoadCounters;  // node/load_counters.h: a copy's decayed load per token bucket.

struct HostedShard {
  ShardAssignment assignment;
  std::shared_ptr<ShardStore> store;
  // The LSN the store has reached with its waiters, and replication progress (never null for a
  // serving shard).
  std::shared_ptr<replication::ShardLog> log;
  // The reads and writes this copy served, for hot-spot detection (never null for a serving
  // shard; Node.shardStats and /metrics report it).
  std::shared_ptr<LoadCounters> load;
};

class StorageNode {
 public:
  // Binds the listener and starts the event loops. Hosts no shard until AssignShards.
  static Result<std::unique_ptr<StorageNode>> Start(const NodeOptions& options);
  virtual ~StorageNode() = default;

  // host:port the node actually listens on (the port is chosen when options say :0).
  virtual std::string address() const = 0;
  virtual const std::string& node_id() const = 0;
  // NodeOptions::primary_lease (nullptr when the node runs without one).
  virtual PrimaryLease* primary_lease() const = 0;

  // Makes the node host exactly `shards` and answer not-owner with `map_version` for every
  // other key. Returns at once: new shards open in the background (keys of a shard still
  // opening are answered `unavailable`, retryable), dropped shards close once their calls in
  // flight finish. `shard_map` is the serialized map these come from, opaque to the node and
  // served back by Node.shardMap. An older `map_version` than the one served is ignored.
  // invalid-argument for overlapping ranges or repeated shard ids. Thread-safe.
  virtual Status AssignShards(uint64_t map_version, const std::vector<ShardAssignment>& shards,
                              std::string shard_map) = 0;
  virtual uint64_t map_version() const = 0;
  // A snapshot of the serving shards, sorted by range.
  virtual std::vector<HostedShard> Shards() const = 0;
  // Every assigned shard with its lifecycle state, sorted by shard id.
  virtual std::vector<ShardStatus> ShardStatuses() const = 0;
  virtual OutboxSignal& outbox_signal() = 0;

  // Prometheus text exposition: requests, errors and latencies per method, errors per code,
  // per-shard sizes, block-cache usage (for GET /metrics).
  virtual std::string RenderMetrics() = 0;

  // Graceful stop: stops accepting, lets calls in flight finish (up to `grace`), closes the
  // connections and the shards. Idempotent; the destructor calls it.
  virtual void Stop(std::chrono::milliseconds grace = std::chrono::seconds(2)) = 0;
};

}  // namespace scrollback
