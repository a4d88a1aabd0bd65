// The shard map in the metadata store: where it lives, how it is published, and a ShardMapSource
// for clients (router/chat_client.h) that follows it. The follower that makes a storage node host
// what the map gives it is in shard_map_follower.h.
//
// Keys (persisted; never rename):
//   /scrollback/shardmap       the current map: a serialized schema::ShardMap
//   /scrollback/nodes/<id>     a registered node's address (under the node's lease)
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "scrollback/cluster/metadata_store.h"
#include "scrollback/router/chat_client.h"
#include "scrollback/router/shard_map.h"
#include "scrollback/schema/log.h"

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
// addresses are filled in as the nodes start), each with replication_factor - 1 replicas on the
// next nodes — unless a map exists already. Safe to call from every node at once: one wins, the
// others see the existing map.
Status BootstrapShardMap(MetadataStore& metadata, uint32_t shards,
                         const std::vector<std::string>& node_ids, uint32_t replication_factor = 3);
// Sets `node_id`'s addresses in the current map (a new map version) unless they are already
// current. Retries on concurrent changes. not-found if the map does not name the node.
Status PublishNodeAddress(MetadataStore& metadata, const NodeInfo& node);

// A ShardMapSource backed by the metadata store: reads the map once, then follows a watch.
// RequestRefresh() wakes a refresher thread of its own, so the (blocking) metadata read never
// runs on the caller's thread — a smart client's event loop keeps serving while etcd is slow.
class MetadataShardMapSource final : public ShardMapSource {
 public:
  // not-found until a map is published.
  static Result<std::shared_ptr<MetadataShardMapSource>> Create(
      std::shared_ptr<MetadataStore> metadata, Logger logger = nullptr);
  ~MetadataShardMapSource() override;

  std::shared_ptr<const ShardMap> Current() override;
  void RequestRefresh() override;
  // Reads the map now, on the calling thread (blocking), and returns the newest known.
  std::shared_ptr<const ShardMap> RefreshNow();
  // Reads completed by the refresher thread (for tests and /metrics).
  uint64_t refreshes() const { return refreshes_.load(); }

 private:
  MetadataShardMapSource(std::shared_ptr<MetadataStore> metadata, ShardMap map, Logger logger);
  void Offer(ShardMap map);  // Keeps the newer of the current and `map`.
  void RefreshLoop();

  std::shared_ptr<MetadataStore> metadata_;
  const Logger log_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<const ShardMap> map_;  // GUARDED_BY(mu_)
  bool refresh_requested_ = false;       // GUARDED_BY(mu_)
  bool stopping_ = false;                // GUARDED_BY(mu_)
  std::atomic<uint64_t> refreshes_{0};
  std::unique_ptr<WatchHandle> watch_;
  std::thread refresher_;
};

}  // namespace scrollback
