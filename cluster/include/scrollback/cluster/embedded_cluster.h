// EmbeddedCluster: a whole Scrollback cluster in one process, for tests and for applications
// that want the store in-process. N storage nodes with real RocksDB shards under one directory,
// real Cap'n Proto connections over loopback, an in-memory metadata store holding the shard
// map, and a fan-out worker per node.
//
// With replication (the default: replication_factor 3, capped at the node count) every node has
// its own directory, data_dir/node-<i>/shard-<id>, and each shard a primary and replicas kept
// current by log shipping, as on separate machines. With replication_factor 1, shards are laid
// out as data_dir/shard-<id>, shared by all nodes, so that moving a shard's primary between
// nodes needs no copy (MoveShard; decision 0007).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "scrollback/cluster/failover_controller.h"
#include "scrollback/cluster/merge.h"
#include "scrollback/cluster/metadata_faults.h"
#include "scrollback/cluster/metadata_store.h"
#include "scrollback/cluster/move.h"
#include "scrollback/cluster/node_lease.h"
#include "scrollback/cluster/shard_map_follower.h"
#include "scrollback/cluster/shard_map_store.h"
#include "scrollback/cluster/split.h"
#include "scrollback/cluster/switchover.h"
#include "scrollback/node/fanout_worker.h"
#include "scrollback/node/storage_node.h"
#include "scrollback/router/chat_client.h"
#include "scrollback/rpc/network_faults.h"

namespace scrollback {

struct EmbeddedClusterOptions {
  // Default: 3 nodes, 16 shards (equal token ranges, primaries round robin).
  int nodes = 3;
  uint32_t shards = 16;
  // Default: 3 (capped at `nodes`). Copies of each shard: one primary, the rest replicas.
  uint32_t replication_factor = 3;
  // Default: empty, meaning a fresh temporary directory removed when the cluster is destroyed.
  std::string data_dir;
  // Default: 1. Event-loop threads per node (nodes share the machine's cores).
  int event_loops_per_node = 1;
  // Default: true. Run a fan-out worker per node.
  bool fan_out = true;
  // Per-node settings (node_id, data_dir and listen_address are filled in per node).
  NodeOptions node;
  FanOutOptions fan_out_options;
  // Default: none. Called for node `index` after the defaults above are filled in: a seam for
  // tests that need one node to differ (limits, budgets).
  std::function<void(size_t index, NodeOptions&)> customize_node;
  // Default: true. Failover (decision 0010): every node holds a primary lease and writes only
  // under it, and runs a failover-controller candidate; a stopped or cut-off node's primaries
  // move to its most advanced live replicas. false: fixed primaries, no leases (a stopped
  // node's shards stay unavailable until it is back).
  bool failover = true;
  // Lease keeper settings (node_id is filled in per node). Default ttl 1 s.
  LeaseKeeperOptions lease;
  // Controller settings (node_id is filled in per node).
  FailoverControllerOptions controller;
  // Default: the system clock. The metadata store's clock (lease expiry) and the nodes' lease
  // clocks.
  std::shared_ptr<Clock> clock;
  // Default: none. The fault seam between named nodes (rpc/network_faults.h): replicas' pulls,
  // fan-out deliveries, and the clients NewClient makes ("client") go through it.
  std::shared_ptr<NetworkFaults> faults;
  // Default: none (quiet). Given to every node, follower, worker and map source that has none.
  Logger logger;
};

class EmbeddedCluster {
 public:
  static Result<std::unique_ptr<EmbeddedCluster>> Start(EmbeddedClusterOptions options);
  ~EmbeddedCluster();

  std::shared_ptr<MetadataStore> metadata() { return metadata_; }
  std::shared_ptr<ShardMapSource> shard_maps() { return maps_; }
  // A smart client on the caller's event loop.
  std::unique_ptr<ChatClient> NewClient(kj::AsyncIoProvider& io, ClientOptions options = {});

  size_t node_count() const { return nodes_.size(); }
  const std::string& node_id(size_t i) const { return nodes_[i].id; }
  // nullptr while node `i` is stopped.
  StorageNode* node(size_t i) { return nodes_[i].node.get(); }
  // Node `i`'s fan-out worker; nullptr while it is stopped or fan-out is off.
  FanOutWorker* fan_out_worker(size_t i) { return nodes_[i].worker.get(); }
  // The index of node `node_id`, or node_count() if there is none.
  size_t IndexOf(const std::string& node_id) const {
    size_t i = 0;
    while (i < nodes_.size() && nodes_[i].id != node_id) ++i;
    return i;
  }
  const std::string& data_dir() const { return data_dir_; }
  // The directory node `i` keeps its shards in.
  std::string node_data_dir(size_t i) const;
  uint32_t replication_factor() const;

  // Stops node `i` at once (no grace), as a crash would: its lease is not revoked but expires,
  // and then (with failover) its primaries move to live replicas; until then its shards are
  // unavailable.
  void StopNode(size_t i);
  // Cuts node `i` off from the metadata store (true) or heals the cut (false): the fault seam
  // for a partition between a node and etcd. The node keeps serving its clients; its lease
  // expires in the store and it fences itself first.
  void CutFromMetadata(size_t i, bool cut);
  // Node `i`'s failover-controller candidate (nullptr while stopped or without failover).
  FailoverController* controller(size_t i) { return nodes_[i].controller.get(); }
  // Node `i`'s lease keeper (nullptr while stopped or without failover).
  LeaseKeeper* lease_keeper(size_t i) { return nodes_[i].keeper.get(); }
  // Starts node `i` again on its data (a new port) and publishes its new address.
  Status RestartNode(size_t i);
  // Makes `to_node` the primary of `shard_id` (a new map version); the old primary answers
  // not-owner from then on. Returns once every running node serves the new map with all of its
  // shards open (unavailable on timeout, failed-precondition if a node refuses a shard).
  // Only with replication_factor 1 (shared directories): a replicated shard changes primary by
  // a switchover (failover), failed-precondition here.
  Status MoveShard(uint64_t shard_id, size_t to_node);
  // A planned switchover of `shard_id` to node `to` (empty: its most advanced replica), with
  // no loss even of async writes (switchover.h); returns once every running node serves the map
  // that names the new primary.
  Result<SwitchoverResult> Switchover(uint64_t shard_id, const std::string& to = "");
  // Splits `shard_id` online so that the right child starts at `at_token` (nullopt: the middle
  // of its range; split.h); returns once every running node serves the map that names the
  // children with all of its shards open. Needs failover (the controller carries splits out).
  Result<SplitResult> Split(uint64_t shard_id, std::optional<uint64_t> at_token = std::nullopt);
  // Merges `left_id` with the shard right after it, `right_id` (merge.h); returns once every
  // running node serves the map that names the merged shard. Needs failover.
  Result<MergeResult> Merge(uint64_t left_id, uint64_t right_id);
  // Moves `shard_id`'s copy on node `from` to node `to` (move.h): the new copy bootstraps and
  // catches up, the primary switches over if it moved, the old copy goes. Returns once every
  // running node serves the map without the move. Needs failover (the controller moves).
  Result<MoveResult> Move(uint64_t shard_id, const std::string& from, const std::string& to);
  // Starts a new node (the next index) with no shards and adds it to the map; moves and
  // rebalancing give it copies. Returns its index. Only with replication (own directories).
  Result<size_t> AddNode();
  // Waits until every running node serves map `version` (or newer) with all its shards open
  // and (with failover) may write under its lease.
  Status WaitUntilServing(uint64_t version,
                          std::chrono::milliseconds timeout = std::chrono::seconds(30));

 private:
  struct Member {
    std::string id;
    // The node's way to the shared store (CutFromMetadata cuts it).
    std::shared_ptr<CuttableMetadataStore> metadata;
    std::shared_ptr<PrimaryLease> lease;  // Null without failover.
    std::unique_ptr<StorageNode> node;
    std::unique_ptr<ShardMapFollower> follower;
    std::unique_ptr<LeaseKeeper> keeper;
    std::unique_ptr<FailoverController> controller;
    std::unique_ptr<FanOutWorker> worker;
  };

  EmbeddedCluster() = default;
  NodeOptions OptionsOf(size_t i);
  void StartWorker(Member& member);
  // The lease keeper and controller candidate of a started node (with failover).
  Status StartFailover(Member& member);
  Status StartNode(size_t i);
  // Rewrites the map with `change` applied and a version one higher, then waits until every
  // running node serves it.
  template <typename Change>
  Status UpdateMap(Change&& change);

  EmbeddedClusterOptions options_;
  Logger log_;
  std::string data_dir_;
  bool owns_data_dir_ = false;
  std::shared_ptr<MetadataStore> metadata_;
  std::shared_ptr<MetadataShardMapSource> maps_;
  std::vector<Member> nodes_;
};

}  // namespace scrollback
