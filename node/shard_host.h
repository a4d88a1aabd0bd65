// ShardHost: a storage node's shard lifecycle. Private to node/.
//
// The node is told which shards to host (Assign); the host opens new ones and closes dropped ones
// in the background on `shard_lifecycle_threads` threads, so neither the caller of Assign (the
// map follower), nor the RPC loops, nor the other shards wait for a slow open.
//
// Per shard:   assigned -> opening --(identity ok, RocksDB open)--> serving --(dropped)--> closed
//                             |  ^ open failed (e.g. the RocksDB LOCK is still held by the
//                             |  |  previous holder): retried with backoff, 50 ms .. 2 s
//                             +--> refused: the directory belongs to another placement, shard or
//                                  range; not retried until the map changes the assignment.
// A dropped shard leaves the routing table at once (its keys answer not-owner); its store closes
// when the calls and fan-out passes holding it finish; then its directory is moved aside to
// data_dir/dropped/ unless NodeOptions::keep_dropped_directories.
//
// Every change republishes the node's ShardTable (NodeCore::Publish): serving shards route to
// their store, shards still opening or refused answer `unavailable`.
//
// Replicas (docs/replication.md): a replica copy with no database yet is bootstrapped from its
// primary's checkpoint before it opens (state bootstrapping, on the lifecycle thread); once
// serving, the node's ReplicaFollower pulls its primary's log into it. A replica that cannot
// continue from its log (a gap, divergence) is closed, its directory moved aside, and opened
// again, which bootstraps it afresh. Which shards the follower follows is derived from the slots
// by SyncFollow, never while holding mu_ (the follower's thread calls back into the host).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "load_counters.h"
#include "node_core.h"
#include "scrollback/replication/replication.h"

namespace scrollback {

// "shard N [first, last] epoch E as role (placed at map version V)", for log lines.
std::string Describe(const ShardAssignment& a);

class ShardHost {
 public:
  // `core` must outlive the host. Starts the lifecycle threads.
  ShardHost(NodeCore& core, std::shared_ptr<StorageResources> resources);
  ~ShardHost();  // Stop().

  // See StorageNode::AssignShards.
  Status Assign(uint64_t map_version, const std::vector<ShardAssignment>& shards,
                std::string shard_map);
  std::vector<ShardStatus> Statuses() const;
  // Drops every shard, waits until each is closed (up to `grace` for calls holding one; after
  // that the last holder closes it), and joins the threads. Idempotent.
  void Stop(std::chrono::milliseconds grace);

  // Prometheus text: shards by state, open failures, refusals, directories moved aside, and the
  // follower's pulls and bootstraps.
  void RenderMetrics(std::string* out) const;

 private:
  using TimePoint = std::chrono::steady_clock::time_point;

  struct Slot {
    ShardAssignment assignment;
    ShardState state = ShardState::kOpening;
    std::shared_ptr<ShardStore> store;  // Set while serving.
    std::shared_ptr<replication::ShardLog> log = std::make_shared<replication::ShardLog>();
    std::shared_ptr<LoadCounters> load;  // Made with the slot, for its range.
    uint32_t attempts = 0;
    std::string last_error;
    uint64_t generation = 0;  // Bumped whenever the assignment changes; stale tasks see it.
    // Set when the follower gave the copy up (a log gap or divergence): a split child or merged
    // shard is then bootstrapped from its primary, never cut again from a parent copy that may
    // still lie on disk at the old LSN (its log since is gone).
    bool bootstrap_only = false;
  };
  struct Task {
    TimePoint not_before;
    uint64_t shard_id = 0;
    uint64_t generation = 0;              // Open: the slot generation it was made for.
    std::shared_ptr<ShardStore> closing;  // Close: the store to close.
    ShardAssignment closing_assignment;   // Close: what it was assigned as.
    bool discard = false;  // Close: move the directory aside even if still assigned (rebootstrap).
    bool unfollowed = false;  // Close: the follower was told to let go of it.
    // Open of a split child: the parent's open store, held so that the parent closes only
    // after the child's copy was cut from it (null: look for the parent's directory on disk).
    std::shared_ptr<ShardStore> split_source = nullptr;
    // Open of a merged shard: split_source is the left parent's open store, this the right's.
    std::shared_ptr<ShardStore> merge_right_source = nullptr;
    // A split started on this open copy: flush it, then seal it if `seal` (the primary).
    std::shared_ptr<ShardStore> split_start = nullptr;
    bool seal = false;
  };

  void Work();
  // One attempt to open shard `task.shard_id`; reschedules itself on a retryable failure.
  void Open(const Task& task);
  // Closes `task.closing` once nobody else holds it (else reschedules itself), writes its
  // identity and moves the directory aside if the shard is no longer assigned.
  void Close(Task task);
  void Schedule(Task task);  // REQUIRES: mu_ held.
  // Closes the slot's open store and opens the shard again as its (new) assignment says: the
  // engine's in-memory state is rebuilt from the data. REQUIRES: mu_ held, slot.store set.
  void ReopenLocked(uint64_t shard_id, Slot& slot);
  Status AssignLocked(uint64_t map_version, const std::vector<ShardAssignment>& sorted,
                      std::string shard_map);  // REQUIRES: mu_ held.
  // A split started on `task.split_start`: flushes it while writes go on, so that little is
  // left in its memtables when they stop, then (a primary) seals it.
  void StartSplit(const Task& task);
  // Makes the follower follow shard `shard_id` iff its slot is a serving replica. REQUIRES: mu_
  // not held.
  void SyncFollow(uint64_t shard_id);
  // The follower gave up on a copy (on its thread): reopen it from a fresh bootstrap.
  void OnRebootstrap(uint64_t shard_id, const Status& why);
  // Makes a split child's first copy in `dir` from the parent's copy on this node (docs/
  // resharding.md): `source` if set, else the parent's directory opened from disk (after a
  // restart). failed-precondition when no copy of the parent at exactly the split LSN is here.
  Status CutSplitChild(const ShardAssignment& child, const std::shared_ptr<ShardStore>& source,
                       const std::string& dir);
  // Makes a merged shard's first copy in `dir` from this node's copies of both parents at
  // their merge LSNs (`left` / `right` if set, else opened from disk). failed-precondition when
  // this node lacks either at the right LSN.
  Status MakeMergedCopy(const ShardAssignment& merged, const std::shared_ptr<ShardStore>& left,
                        const std::shared_ptr<ShardStore>& right, const std::string& dir);
  // Makes a first copy for `shard` with `make` (which writes it into the directory it is given,
  // beside `dir`), renames it into `dir` durably and writes its identity. Returns its LSN.
  Result<uint64_t> PlaceFirstCopy(
      const ShardAssignment& shard, const std::string& dir,
      const std::function<Result<uint64_t>(const std::string& aside)>& make);
  // A parent's copy on this node: `source` if set, else its directory opened from disk (after a
  // restart). failed-precondition when this node has none.
  Result<std::shared_ptr<ShardStore>> ParentCopy(uint64_t parent_id,
                                                 const std::shared_ptr<ShardStore>& source);
  void PublishLocked();  // REQUIRES: mu_ held.
  std::string DirectoryOf(uint64_t shard_id) const;
  // REQUIRES: mu_ held.
  ShardOptions OptionsFor(const ShardAssignment& assignment,
                          const std::shared_ptr<replication::ShardLog>& log) const;

  NodeCore& core_;
  const std::shared_ptr<StorageResources> resources_;
  const Logger& log_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t map_version_ = 0;              // GUARDED_BY(mu_)
  std::string shard_map_;                 // GUARDED_BY(mu_)
  std::map<uint64_t, Slot> slots_;        // GUARDED_BY(mu_). By shard id.
  std::multimap<TimePoint, Task> tasks_;  // GUARDED_BY(mu_). By when they may run.
  size_t closing_ = 0;                    // GUARDED_BY(mu_). Close tasks queued or running.
  // GUARDED_BY(mu_). Close tasks queued or running per shard id: an open of that id waits for
  // them, so a directory is never opened while its previous copy closes or moves aside.
  std::map<uint64_t, int> closing_ids_;
  // GUARDED_BY(mu_). Shard ids with an open running: a second open of the same id (a newer
  // assignment) waits for it, so two bootstraps never share a directory.
  std::set<uint64_t> opening_ids_;
  uint64_t next_generation_ = 1;  // GUARDED_BY(mu_)
  bool stopping_ = false;         // GUARDED_BY(mu_)
  // GUARDED_BY(mu_). When the lifecycle threads next fold the shards' load counters (every
  // kLoadTick).
  TimePoint next_load_tick_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point stop_deadline_;  // GUARDED_BY(mu_)
  std::vector<std::thread> threads_;
  std::unique_ptr<replication::ReplicaFollower> follower_;
  std::mutex follow_mu_;  // Serializes SyncFollow. Taken before mu_, never while holding it.

  std::atomic<uint64_t> opens_{0};
  std::atomic<uint64_t> open_failures_{0};
  std::atomic<uint64_t> refusals_{0};
  std::atomic<uint64_t> closes_{0};
  std::atomic<uint64_t> moved_aside_{0};
  std::atomic<uint64_t> lifecycle_errors_{0};  // Identity writes and moves that failed.
  std::atomic<uint64_t> rebootstraps_{0};
  std::atomic<uint64_t> split_cuts_{0};          // Children cut (split) or made (merge) locally.
  std::atomic<uint64_t> split_cut_failures_{0};  // Cuts that failed (then bootstrapped/retried).
};

}  // namespace scrollback
