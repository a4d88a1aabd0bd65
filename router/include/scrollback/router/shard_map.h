// The shard map: which shard owns which token range of the ring, which node is each shard's
// primary, and where the nodes listen. Immutable once built; a new version replaces it whole.
//
// Served whole by Node.shardMap as the Cap'n Proto struct schema::ShardMap (chatstore.capnp);
// the metadata store keeps it one record per shard and per node (cluster/shard_map_store.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "scrollback/schema/status.h"
#include "scrollback/schema/token.h"

namespace scrollback {

struct ShardInfo {
  uint64_t shard_id = 0;
  TokenRange range;
  std::string primary;                // Node id.
  std::vector<std::string> replicas;  // Node ids of the other copies (no node twice).
  uint64_t epoch = 0;
  // The map version at which the primary's copy was placed (schema ShardInfo.placementVersion).
  // Kept when the same copy changes node (EmbeddedCluster's shared directories); a new copy
  // gets the version of the map that places it.
  uint64_t placement_version = 0;
  // A planned switchover in progress: the replica that becomes primary once it caught up; the
  // primary takes no writes meanwhile (schema ShardInfo.switchTo). Empty: none.
  std::string switch_to;
  // A split in progress (schema ShardInfo.splitAt): the right child starts at split_at; the
  // children get split_left_id and split_right_id. 0: none.
  uint64_t split_at = 0;
  uint64_t split_left_id = 0;
  uint64_t split_right_id = 0;
  // A split child: its parent's id and the parent's sealed LSN it was cut at (0: none).
  uint64_t split_from = 0;
  uint64_t split_lsn = 0;
  // A move of one copy in progress (schema ShardInfo.moveFrom / moveTo): move_to holds a new
  // copy (listed among the replicas, or primary after the move's switchover), move_from's copy
  // goes once move_to has caught up. Empty: none.
  std::string move_from;
  std::string move_to;
  // A merge in progress, on both shards: the merged shard's id (schema ShardInfo.mergeInto).
  uint64_t merge_into = 0;
  // A merged shard: its parents and their sealed LSNs (0: none).
  uint64_t merge_left = 0;
  uint64_t merge_right = 0;
  uint64_t merge_left_lsn = 0;
  uint64_t merge_right_lsn = 0;

  friend bool operator==(const ShardInfo&, const ShardInfo&) = default;
};

struct NodeInfo {
  std::string node_id;
  std::string address;       // host:port of the RPC listener.
  std::string http_address;  // host:port of /health and /metrics; may be empty.
  // The primary lease the failover controller last recorded for the node (schema
  // NodeInfo.leaseId; 0: none). The node writes only while it holds exactly this lease.
  int64_t lease_id = 0;

  friend bool operator==(const NodeInfo&, const NodeInfo&) = default;
};

class ShardMap {
 public:
  // Validates the invariants: shards sorted by range, covering [0, 2^64-1] with no gap and no
  // overlap, unique shard ids, and every primary / replica naming a listed node.
  static Result<ShardMap> Make(uint64_t version, std::vector<ShardInfo> shards,
                               std::vector<NodeInfo> nodes);
  // `shard_count` equal token ranges (ids 1..shard_count), primaries assigned round robin, each
  // shard's replicas on the next replication_factor - 1 nodes (capped at the node count).
  // REQUIRES: shard_count >= 1 and !nodes.empty().
  static ShardMap Uniform(uint64_t version, uint32_t shard_count, std::vector<NodeInfo> nodes,
                          uint32_t replication_factor = 1);

  static Result<ShardMap> Parse(std::string_view bytes);
  std::string Serialize() const;

  uint64_t version() const { return version_; }
  const std::vector<ShardInfo>& shards() const { return shards_; }
  // In the order given to Make; a map loaded from the metadata store has them in id order.
  const std::vector<NodeInfo>& nodes() const { return nodes_; }

  // The shard owning `token`: O(log shards), no allocation.
  const ShardInfo& ShardForToken(uint64_t token) const;
  const ShardInfo& ShardForKey(uint64_t shard_key) const {
    return ShardForToken(TokenOf(shard_key));
  }
  // nullptr when unknown. O(log n).
  const NodeInfo* FindNode(std::string_view node_id) const;
  const ShardInfo* FindShard(uint64_t shard_id) const;
  // An id no shard of this map has, nor will have through a split in progress: one past the
  // largest in use. Splits (and merges) replace shards by ones with new, larger ids, so an id
  // is never reused and a directory left by an earlier shard is never mistaken for a new one.
  uint64_t NextShardId() const;

 private:
  ShardMap() = default;
  void BuildIndexes();

  uint64_t version_ = 0;
  std::vector<ShardInfo> shards_;  // Sorted by range.first.
  std::vector<NodeInfo> nodes_;
  std::vector<std::pair<uint64_t, uint32_t>> shard_index_;    // (shard id, index), sorted.
  std::vector<std::pair<std::string, uint32_t>> node_index_;  // (node id, index), sorted.
};

// One shard's or one node's record on its own, as the metadata store keeps them
// (cluster/shard_map_store.h): the Cap'n Proto structs schema::ShardInfo and schema::NodeInfo.
std::string SerializeShardInfo(const ShardInfo& shard);
Result<ShardInfo> ParseShardInfo(std::string_view bytes);
std::string SerializeNodeInfo(const NodeInfo& node);
Result<NodeInfo> ParseNodeInfo(std::string_view bytes);

}  // namespace scrollback
