// Replication: a shard's primary ships its RocksDB WAL to the shard's replicas
// (docs/replication.md; the wire protocol is schema/replication.capnp).
//
//   replica                                   primary
//   -------                                   -------
//   (new or after a log gap)
//   Bootstrap: beginCheckpoint ------------>  CheckpointSource::Begin (hard-link checkpoint,
//              readCheckpoint  ------------>    files listed with size + XXH64)
//              (checks every file, renames the copy into place, opens it)
//   Follow:    pullLog(applied + 1) -------->  ShardStore::ReadLog (long poll on ShardLog)
//              ShardStore::ApplyLog each batch: the replica's LSNs equal the primary's
//
// The three pieces here are all a storage node needs; node/ wires them to its shards and its
// Cap'n Proto service:
//  - ShardLog: per hosted shard, the LSN its store has reached (fed by ShardOptions::on_commit)
//    with waiters (long polls, session reads, checksums at an LSN), and the progress of a
//    replica (lag, bootstrap) or of a primary's replicas (their last pulls).
//  - CheckpointSource: the primary side of bootstrap.
//  - ReplicaFollower: the replica side: bootstraps copies and follows primaries, on its own
//    thread and event loop.
#pragma once

#include <kj/async.h>
#include <kj/timer.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "scrollback/engine/shard_store.h"
#include "scrollback/schema/log.h"
#include "scrollback/schema/status.h"

namespace scrollback {
class NetworkFaults;  // rpc/network_faults.h
}  // namespace scrollback

namespace scrollback::replication {

// Milliseconds on the steady clock (progress times; never compared across processes).
int64_t SteadyMs();

// What a primary knows of one of its replicas: the last pull it served.
struct ReplicaPull {
  std::string node_id;
  uint64_t applied_lsn = 0;  // The pull's fromLsn - 1.
  int64_t at_ms = 0;         // SteadyMs() of the pull.
};

// An LSN that only grows, with waiters: Raise from any thread wakes the waiters it satisfies;
// Wait resolves on the caller's KJ event loop. Thread-safe.
class LsnWatch {
 public:
  void Raise(uint64_t lsn);
  uint64_t value() const { return value_.load(std::memory_order_acquire); }
  // Resolves true once value() >= `lsn`, false after `timeout`.
  kj::Promise<bool> Wait(uint64_t lsn, kj::Timer& timer, std::chrono::milliseconds timeout);

 private:
  struct Waiter {
    uint64_t lsn;
    kj::Own<kj::CrossThreadPromiseFulfiller<void>> fulfiller;
  };
  std::atomic<uint64_t> value_{0};
  std::mutex mu_;
  std::vector<Waiter> waiters_;  // GUARDED_BY(mu_)
};

// Per hosted shard, shared by the shard host (which creates it before the store opens), the
// store's on_commit hook, the RPC service and the follower. Thread-safe.
class ShardLog {
 public:
  // ---- The LSN the local store has reached --------------------------------------------------

  // Called after every commit (primary writes, replica applies) with the store's latest LSN.
  // Wakes the waiters it satisfies. Any thread.
  void Publish(uint64_t lsn) { reached_.Raise(lsn); }
  uint64_t lsn() const { return reached_.value(); }
  // On the caller's KJ event loop: resolves true once lsn() >= `lsn`, false after `timeout`.
  kj::Promise<bool> WaitFor(uint64_t lsn, kj::Timer& timer, std::chrono::milliseconds timeout) {
    return reached_.Wait(lsn, timer, timeout);
  }

  // ---- Replica side ---------------------------------------------------------------------------

  // After each answered pull: the primary's latest LSN, and whether this copy had applied all
  // of it (then the copy is known current as of now).
  void RecordPrimaryState(uint64_t primary_latest_lsn, bool caught_up);
  uint64_t primary_latest_lsn() const { return primary_latest_.load(std::memory_order_relaxed); }
  // How far behind the primary's last known LSN (0 when caught up).
  uint64_t lag_lsn() const;
  // Staleness: milliseconds since this copy was last known to hold everything its primary had
  // (the reply to a pull that it fully applied). A copy that never caught up counts from when it
  // started following.
  uint64_t lag_ms() const;
  void StartedFollowing();

  // Checksums at an exact LSN: the follower stops applying once it reaches `pause_at` (batches
  // are the primary's write groups, so the copy lands exactly on any LSN the primary reported)
  // until it is cleared (0).
  void SetPauseAt(uint64_t lsn) { pause_at_.store(lsn, std::memory_order_release); }
  uint64_t pause_at() const { return pause_at_.load(std::memory_order_acquire); }

  // Bootstrap progress (bytes copied of the checkpoint's total; both 0 when not bootstrapping).
  std::atomic<uint64_t> bootstrap_done{0};
  std::atomic<uint64_t> bootstrap_total{0};

  // ---- Primary side ---------------------------------------------------------------------------

  // Keeps the last pull of at most kMaxReplicasTracked replicas (the oldest is forgotten).
  // A pull asks for the LSN after the last one the replica applied (to its WAL): when the
  // pulling node is one of the shard's replicas in the shard map (`listed`), that LSN counts
  // as acknowledged (semi-sync writes wait for it; docs/replication.md, Acknowledgement).
  static constexpr size_t kMaxReplicasTracked = 32;
  void RecordPull(const std::string& replica_node, uint64_t applied_lsn, bool listed = false);
  std::vector<ReplicaPull> Pulls() const;
  // The highest LSN a listed replica has applied.
  uint64_t acked_lsn() const { return acked_.value(); }
  // On the caller's KJ event loop: resolves true once acked_lsn() >= `lsn`, false after
  // `timeout`.
  kj::Promise<bool> WaitAcked(uint64_t lsn, kj::Timer& timer, std::chrono::milliseconds timeout) {
    return acked_.Wait(lsn, timer, timeout);
  }

 private:
  LsnWatch reached_;
  LsnWatch acked_;
  std::atomic<uint64_t> primary_latest_{0};
  std::atomic<int64_t> caught_up_at_ms_{0};
  std::atomic<uint64_t> pause_at_{0};

  mutable std::mutex mu_;
  std::map<std::string, ReplicaPull> pulls_;  // GUARDED_BY(mu_). By replica node id.
};

// One file of a checkpoint, as beginCheckpoint lists it.
struct CheckpointFile {
  std::string name;
  uint64_t size = 0;
  uint64_t xxh64 = 0;
};

struct CheckpointInfo {
  uint64_t id = 0;
  uint64_t lsn = 0;
  std::vector<CheckpointFile> files;
};

// The primary side of bootstrap: checkpoints of hosted shards under `root` (one directory each),
// read by id, released by End or after `idle_timeout` without a read. Thread-safe.
class CheckpointSource {
 public:
  // At most kMaxOpen checkpoints at once: Begin answers `overloaded` beyond (each holds disk).
  static constexpr size_t kMaxOpen = 16;
  CheckpointSource(std::string root, std::chrono::milliseconds idle_timeout, Logger logger);
  ~CheckpointSource();  // Removes every checkpoint left.

  // Makes a checkpoint of `store` (hard links where possible) and digests its files.
  Result<CheckpointInfo> Begin(ShardStore& store);
  // Up to `max_bytes` of file `file_index` from `offset` (fewer only at the file's end).
  Result<std::string> Read(uint64_t id, uint32_t file_index, uint64_t offset, uint32_t max_bytes);
  Status End(uint64_t id);
  // Releases checkpoints idle for longer than the timeout (called by Begin; cheap).
  void ExpireIdle();
  size_t open_checkpoints() const;
  uint64_t bytes_served() const { return bytes_served_.load(std::memory_order_relaxed); }

 private:
  struct Open {
    std::string dir;
    std::vector<CheckpointFile> files;
    int64_t last_used_ms = 0;
  };
  const std::string root_;
  const std::chrono::milliseconds idle_timeout_;
  const Logger log_;
  mutable std::mutex mu_;
  uint64_t next_id_ = 1;           // GUARDED_BY(mu_)
  size_t beginning_ = 0;           // GUARDED_BY(mu_). Begins still making their checkpoint.
  std::map<uint64_t, Open> open_;  // GUARDED_BY(mu_)
  std::atomic<uint64_t> bytes_served_{0};
};

struct FollowerOptions {
  // Default: "replica". Sent with every pull so the primary can report this copy's progress.
  std::string node_id = "replica";
  // Default: 4 MiB. Log bytes asked for per pull.
  uint32_t pull_max_bytes = 4u << 20;
  // Default: 250 ms. How long a pull waits on the primary for a write when there is nothing new
  // (also how often an idle replica hears that it is current).
  std::chrono::milliseconds pull_wait{250};
  // Default: 0 (pull again at once). After a pull that brought only a few batches, wait this
  // long before the next: a busy shard then ships in groups (one call and one replica write
  // per group) at the cost of this much more lag.
  std::chrono::microseconds pull_linger{0};
  // Default: 10 s. A call without an answer by then counts as a failure (the connection is
  // dropped and made afresh).
  std::chrono::milliseconds call_timeout = std::chrono::seconds(10);
  // Default: 50 ms .. 2 s. Backoff after a failed pull (primary down, not primary yet, ...).
  std::chrono::milliseconds retry_min{50};
  std::chrono::milliseconds retry_max = std::chrono::seconds(2);
  // Default: 0 (unlimited). Bootstrap copy rate, MB/s (10^6 bytes).
  double bootstrap_mb_per_s = 0;
  // Default: 1 MiB, 8 in flight. Checkpoint chunk size and pipelining.
  uint32_t bootstrap_chunk_bytes = 1u << 20;
  int bootstrap_inflight = 8;
  // Default: 64 MiB. Largest reply accepted (Cap'n Proto traversal limit).
  uint64_t max_message_bytes = 64ull << 20;
  Logger logger;
  // Test seam, default none: connections to primaries go through these faults, as the link from
  // node_id to the primary's node id (rpc/network_faults.h).
  std::shared_ptr<NetworkFaults> faults;
  // Test seam, default none: sees (and may change) every checkpoint chunk received, before it
  // is written and checked. Tests corrupt or truncate chunks with it.
  std::function<void(const std::string& file, uint64_t offset, std::string* data)> tamper_chunk;
};

// Where a replica copy gets its log.
struct FollowTarget {
  uint64_t shard_id = 0;
  uint64_t epoch = 0;
  std::string primary_node;
  std::string primary_address;  // host:port of the primary node's RPC listener.
  friend bool operator==(const FollowTarget&, const FollowTarget&) = default;
};

// The replica side. One per storage node: one thread with its own KJ event loop, one
// connection per primary node, one pull loop per followed shard. Thread-safe.
class ReplicaFollower {
 public:
  // `on_rebootstrap(shard_id, why)` is called (on the follower's thread) when a followed copy
  // cannot continue from its log (log gap, divergence, a batch that does not apply): the host
  // must close it and bootstrap it again. The follower has stopped following it by then. It
  // runs on the follower's thread and must not call back into the follower.
  static std::unique_ptr<ReplicaFollower> Start(
      FollowerOptions options, std::function<void(uint64_t, const Status&)> on_rebootstrap);
  virtual ~ReplicaFollower() = default;

  // Starts following `target` into `store` (an open replica copy), or retargets the shard if it
  // is followed already (a new primary or epoch).
  virtual void Follow(const FollowTarget& target, std::shared_ptr<ShardStore> store,
                      std::shared_ptr<ShardLog> log) = 0;
  // Stops following; returns once the follower no longer holds the store.
  virtual void Unfollow(uint64_t shard_id) = 0;
  // Copies a checkpoint of the target's primary into `dir` (which must not exist), checking
  // every file's size and checksum; returns the checkpoint's LSN. Blocks the caller (not the
  // follower's other shards) until done. On failure `dir` is removed. Progress in `log`.
  virtual Result<uint64_t> Bootstrap(const FollowTarget& target, const std::string& dir,
                                     ShardLog& log) = 0;

  // Prometheus text: pulls, batches and bytes applied, failures by kind, bootstraps.
  virtual void RenderMetrics(std::string* out) const = 0;
  // Stops every pull loop and the thread. Idempotent; the destructor calls it.
  virtual void Stop() = 0;
};

}  // namespace scrollback::replication
