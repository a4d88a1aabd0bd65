// ShardMapFollower: makes a storage node host exactly the shards the shard map in the metadata
// store gives it, following every published version.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "scrollback/cluster/metadata_store.h"
#include "scrollback/cluster/shard_map_store.h"
#include "scrollback/node/storage_node.h"
#include "scrollback/router/shard_map.h"
#include "scrollback/schema/log.h"

namespace scrollback {

// Keeps `node` hosting the shards whose primary is `node.node_id()` in the current map: a
// ShardMapWatcher, so each change costs what it changed, not the whole map.
class ShardMapFollower {
 public:
  // Applies the current map (if one is published), then follows the watch. Maps that do not
  // parse or apply are logged to `logger` and counted.
  static Result<std::unique_ptr<ShardMapFollower>> Start(std::shared_ptr<MetadataStore> metadata,
                                                         StorageNode& node,
                                                         Logger logger = nullptr);
  ~ShardMapFollower();

  // Prometheus text: maps that failed to parse or apply.
  void RenderMetrics(std::string* out) const;

 private:
  ShardMapFollower(std::shared_ptr<MetadataStore> metadata, StorageNode& node, Logger logger);
  Status Follow();
  Status Apply(const ShardMap& map);

  std::shared_ptr<MetadataStore> metadata_;
  StorageNode& node_;
  const Logger log_;
  std::atomic<uint64_t> failures_{0};
  std::mutex mu_;  // Serializes Apply.
  std::unique_ptr<ShardMapWatcher> watcher_;
};

}  // namespace scrollback
