// The shard map in the metadata store: where it lives, how it is published, and the two
// readers of it — a ShardMapSource for clients (router/chat_client.h) and a follower that makes
// a StorageNode host exactly the shards the map gives it.
//
// Keys (persisted; never rename):
//   /scrollback/shardmap       the current map: a serialized schema::ShardMap
//   /scrollback/nodes/<id>     a registered node's address (under the node's lease)
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "scrollback/cluster/metadata_store.h"
#include "scrollback/engine/storage_node.h"
#include "scrollback/router/chat_client.h"
#include "scrollback/router/shard_map.h"

namespace scrollback {

inline constexpr const char* kShardMapKey = "/scrollback/shardmap";
inline constexpr const char* kNodesPrefix = "/scrollback/nodes/";

// Reads the current map; not-found when none was published.
Result<ShardMap> ReadShardMap(MetadataStore& metadata);
// Publishes `map` if the stored map's version is still `expected_store_version` (the metadata
// version returned when it was read; 0: no map yet). failed-precondition when someone else
// changed it first. Returns the new metadata version.
Result<int64_t> PublishShardMap(MetadataStore& metadata, const ShardMap& map,
                                int64_t expected_store_version);

// Publishes a first map — `shards` equal ranges, primaries round robin over `node_ids` (whose
// addresses are filled in as the nodes start) — unless a map exists already. Safe to call from
// every node at once: one wins, the others see the existing map.
Status BootstrapShardMap(MetadataStore& metadata, uint32_t shards,
                         const std::vector<std::string>& node_ids);
// Sets `node_id`'s addresses in the current map (a new map version) unless they are already
// current. Retries on concurrent changes. not-found if the map does not name the node.
Status PublishNodeAddress(MetadataStore& metadata, const NodeInfo& node);

// A ShardMapSource backed by the metadata store: reads the map once, then follows a watch.
class MetadataShardMapSource final : public ShardMapSource {
 public:
  // not-found until a map is published.
  static Result<std::shared_ptr<MetadataShardMapSource>> Create(
      std::shared_ptr<MetadataStore> metadata);
  ~MetadataShardMapSource() override;

  std::shared_ptr<const ShardMap> Current() override;
  std::shared_ptr<const ShardMap> Refresh() override;

 private:
  MetadataShardMapSource(std::shared_ptr<MetadataStore> metadata, ShardMap map);
  void Offer(ShardMap map);  // Keeps the newer of the current and `map`.

  std::shared_ptr<MetadataStore> metadata_;
  std::mutex mu_;
  std::shared_ptr<const ShardMap> map_;  // GUARDED_BY(mu_)
  std::unique_ptr<WatchHandle> watch_;
};

// Keeps `node` hosting the shards whose primary is `node.node_id()` in the current map.
class ShardMapFollower {
 public:
  static Result<std::unique_ptr<ShardMapFollower>> Start(std::shared_ptr<MetadataStore> metadata,
                                                         StorageNode& node);
  ~ShardMapFollower();

 private:
  ShardMapFollower(std::shared_ptr<MetadataStore> metadata, StorageNode& node);
  Status Apply(const ShardMap& map);

  std::shared_ptr<MetadataStore> metadata_;
  StorageNode& node_;
  std::mutex mu_;
  std::unique_ptr<WatchHandle> watch_;
};

}  // namespace scrollback
