// FailoverController: replaces the primaries of nodes whose primary lease is gone (decision
// 0010, docs/replication.md "Failover"). Every storage node runs a candidate; one at a time
// leads, elected by a lease on a key, and every change it makes is a compare-and-swap of the
// shard map, so two leaders (one of them late to notice it lost) cannot both apply a decision
// to the same map version.
//
// Keys (persisted; never rename):
//   /scrollback/controller   the leader's node id, under the leader's lease
//
// Planned switchovers (switchover.h), splits (split.h) and moves of copies (move.h) are decided
// in the same passes, after failovers.
//
// One pass (every `interval`, and at once when a primary lease changes):
//   For each node of the map whose live lease (node_lease.h) differs from the lease the map
//   records for it (NodeInfo.lease_id): the node died, was cut off from the store, or restarted.
//   For each shard it is primary of, the controller asks every copy on a node holding a live
//   lease for its LSN (Node.shardStats) and makes the most advanced serving copy primary at
//   epoch + 1 (the old primary, if it is alive and at least as advanced, keeps it), the others
//   replicas. A copy still opening (a restarted node replaying its WAL) is waited for up to
//   `opening_patience`; a live node that does not answer is waited for (it may hold the only
//   copy of an acknowledged write). Then the map records the node's live lease (0: none), which
//   lets the node write again at the new epochs.
// In semi-sync mode every acknowledged LSN is on a replica the map listed; acknowledgements
// are prefixes of the log, so the most advanced live copy has all of them.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "scrollback/cluster/metadata_store.h"
#include "scrollback/cluster/rebalance_planner.h"
#include "scrollback/cluster/shard_map_store.h"
#include "scrollback/router/shard_map.h"
#include "scrollback/schema/log.h"

namespace scrollback {

inline constexpr const char* kControllerKey = "/scrollback/controller";

struct FailoverControllerOptions {
  // Required: this candidate's name (its node id).
  std::string node_id;
  // Default: 1 s. The leader's lease; a dead leader is replaced after about this long.
  std::chrono::milliseconds leader_ttl{1000};
  // Default: 100 ms. Time between passes (a primary lease change starts one at once).
  std::chrono::milliseconds interval{100};
  // Default: 500 ms. Connect and shardStats timeout per node.
  std::chrono::milliseconds call_timeout{500};
  // Default: 5 s. How long a copy that is still opening holds up its shard's failover.
  std::chrono::milliseconds opening_patience{5000};
  // Default: 10 s. How long a planned switchover waits for its target to catch up before it
  // gives up (the old primary then takes writes again; switchover.h).
  std::chrono::milliseconds switchover_timeout{10000};
  // Default: 10 s. How long a split waits for its primary to seal before it gives up (the
  // parent then takes writes again; split.h).
  std::chrono::milliseconds split_timeout{10000};
  // Default: 2 s. How long a sealed split waits for a live replica to reach the sealed LSN;
  // after that the split goes on without it (that copy is bootstrapped from the child's primary).
  std::chrono::milliseconds split_replica_patience{2000};
  // Default: 20,000. A split seals its primary only once every live replica is within this many
  // LSNs of it (else writes would stay paused while a replica catches up, or its copy would be
  // bootstrapped); the start waits for that up to split_timeout, then seals anyway.
  uint64_t split_max_replica_lag = 20'000;
  // Default: 0 (off). When set, the leader runs the rebalance planner this often, from the
  // load its primaries report, and files the plan's first steps as requests (one split per
  // shard, then switchovers and moves), which the passes carry out; a round is skipped while
  // any split, merge, move or switchover is in progress. `scrollbackctl rebalance` does the
  // same on demand.
  std::chrono::milliseconds rebalance_interval{0};
  PlannerOptions planner;
  Logger logger;
};

class FailoverController {
 public:
  // Starts campaigning on a thread of its own.
  static std::unique_ptr<FailoverController> Start(std::shared_ptr<MetadataStore> metadata,
                                                   FailoverControllerOptions options);
  // Stops; a leader revokes its lease so that another candidate takes over at once.
  ~FailoverController();

  bool leading() const { return leading_.load(); }
  // Failovers done (a shard's primary replaced) and epochs granted in all.
  uint64_t failovers() const { return failovers_.load(); }

  // Prometheus text: leadership, passes, failovers, epoch bumps, deferrals, errors.
  void RenderMetrics(std::string* out) const;

 private:
  class Probe;  // Asks nodes for their copies' LSNs (Cap'n Proto; failover_controller.cc).
  // A copy's state as its node reported it.
  struct CopyState {
    bool serving = false;
    bool opening = false;  // Still opening (not bootstrapping): worth waiting for.
    uint64_t lsn = 0;
    uint64_t epoch = 0;   // The epoch the node applied for it.
    bool sealed = false;  // A primary sealed for a split: lsn is final.
    ShardLoad load;       // As the copy measures it (rebalancing).
  };

  FailoverController(std::shared_ptr<MetadataStore> metadata, FailoverControllerOptions options);
  void Loop();
  // Holds or takes the leadership; true while leading.
  bool Campaign();
  // One pass over the map (the class comment). Returns true when it published a map.
  Result<bool> Pass(Probe& probe);
  // One round of the continuous rebalancer (rebalance_interval): plans from the primaries'
  // load and files requests. Returns how many it filed.
  Result<int> RebalanceRound(Probe& probe);
  // The split part of a pass (split_step.cc): starts requested splits, finishes sealed ones
  // (replacing the shard in `shards` by its children at `next_version`) and abandons stuck ones.
  // Shards whose primary fails over in this pass are left for a later pass. True when it
  // changed `shards`.
  // The merge part of a pass (merge_step.cc, merge.h): starts requested merges, replaces two
  // sealed shards by the merged one at `next_version`, abandons stuck ones. Counted with splits.
  bool MergeStep(
      std::vector<ShardInfo>& shards, uint64_t next_version,
      const std::set<std::string>& changed_nodes,
      const std::function<int64_t(const std::string&)>& live_lease,
      const std::function<const Result<std::map<uint64_t, CopyState>>&(const std::string& node_id)>&
          copies_of,
      const std::vector<KeyValue>& requested, std::chrono::steady_clock::time_point now);
  // The move part of a pass (move_step.cc, move.h): starts requested moves, switches the
  // primary over to a caught-up new copy, finishes (removes the old copy) or aborts.
  bool MoveStep(
      std::vector<ShardInfo>& shards, const std::set<std::string>& changed_nodes,
      const std::function<int64_t(const std::string&)>& live_lease,
      const std::function<const Result<std::map<uint64_t, CopyState>>&(const std::string& node_id)>&
          copies_of,
      const std::vector<KeyValue>& requested, std::chrono::steady_clock::time_point now);
  using CopiesOf =
      std::function<const Result<std::map<uint64_t, CopyState>>&(const std::string& node_id)>;
  bool SplitStep(std::vector<ShardInfo>& shards, uint64_t next_version,
                 const std::set<std::string>& changed_nodes,
                 const std::function<int64_t(const std::string&)>& live_lease,
                 const CopiesOf& copies_of, const std::vector<KeyValue>& requested,
                 std::chrono::steady_clock::time_point now);

  const std::shared_ptr<MetadataStore> metadata_;
  const FailoverControllerOptions options_;
  const Logger log_;
  int64_t leader_lease_ = 0;  // Only the loop's thread.
  // Only the loop's thread: the last pass saw a switchover, split or move in progress.
  bool busy_ = false;
  // Only the loop's thread: when the rebalancer last planned.
  std::chrono::steady_clock::time_point last_rebalance_{};
  // Only the loop's thread: when a shard's failover first waited for an opening copy.
  std::map<uint64_t, std::chrono::steady_clock::time_point> waiting_since_;
  // Only the loop's thread: when this controller first saw each switchover pausing writes.
  std::map<uint64_t, std::chrono::steady_clock::time_point> switching_since_;
  // Only the loop's thread: when this controller first saw each split started, and when each
  // sealed split started waiting for a lagging replica.
  std::map<uint64_t, std::chrono::steady_clock::time_point> splitting_since_;
  std::map<uint64_t, std::chrono::steady_clock::time_point> split_waiting_since_;
  // Only the loop's thread: when this controller first saw each merge started (by left id).
  std::map<uint64_t, std::chrono::steady_clock::time_point> merging_since_;
  std::unique_ptr<WatchHandle> watch_;
  std::unique_ptr<ShardMapWatcher> maps_;  // The loop thread's; started with the first map.
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // GUARDED_BY(mu_)
  bool wake_ = false;      // GUARDED_BY(mu_)
  std::atomic<bool> leading_{false};
  std::atomic<uint64_t> passes_{0}, failovers_{0}, epoch_bumps_{0}, deferred_{0}, errors_{0},
      switchovers_{0}, switchovers_abandoned_{0}, splits_{0}, splits_abandoned_{0}, moves_{0},
      moves_aborted_{0}, rebalance_rounds_{0}, rebalance_requests_{0}, partial_changes_{0};
  std::thread thread_;
};

}  // namespace scrollback
