// The shard map in the metadata store: how it is stored (one record per shard and per node, so a
// change writes only what changed), published (one commit per change, compared against one
// version key), loaded (in pages, consistent at one store version) and followed (a watch of
// record changes applied to a mirror; no re-reading of whole maps). The follower that makes a
// storage node host what the map gives it is in shard_map_follower.h.
//
// Keys (persisted; never rename; docs/formats.md, "Shard map"):
//   /scrollback/map/version               the map version, decimal. Every change rewrites it in
//                                         the same commit as the records it changes, on the
//                                         condition that its store version is the one read.
//   /scrollback/map/shards/<16 hex digits>  a shard: schema::ShardInfo, keyed by shard id
//   /scrollback/map/nodes/<node id>       a node of the map: schema::NodeInfo
//   /scrollback/map/bootstrap             while a first map is written in several commits: a
//                                         digest of that map (concurrent bootstrappers must agree)
//   /scrollback/shardmap                  format 1 (the whole map in one schema::ShardMap value):
//                                         migrated to the records on first load, then deleted
//   /scrollback/nodes/<id>                a registered node's address (under the node's lease)
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "scrollback/cluster/metadata_store.h"
#include "scrollback/router/chat_client.h"
#include "scrollback/router/shard_map.h"
#include "scrollback/schema/log.h"

namespace scrollback {

inline constexpr const char* kShardMapPrefix = "/scrollback/map/";
inline constexpr const char* kShardMapVersionKey = "/scrollback/map/version";
inline constexpr const char* kShardMapShardsPrefix = "/scrollback/map/shards/";
inline constexpr const char* kShardMapNodesPrefix = "/scrollback/map/nodes/";
inline constexpr const char* kShardMapBootstrapKey = "/scrollback/map/bootstrap";
inline constexpr const char* kLegacyShardMapKey = "/scrollback/shardmap";
inline constexpr const char* kNodesPrefix = "/scrollback/nodes/";

// Records read per page when a map is loaded.
inline constexpr size_t kShardMapPageSize = 1000;

std::string ShardRecordKey(uint64_t shard_id);
std::string NodeRecordKey(const std::string& node_id);

// A map as read from the store, with the store version of its version key: what a change of
// it compares against.
struct StoredShardMap {
  ShardMap map;
  int64_t store_version = 0;
};

// Loads the current map in pages of kShardMapPageSize, every page at the store version of the
// first (started over, a bounded number of times, when the store cannot read at that version).
// not-found when none was published. A map still in format 1 is migrated first.
Result<StoredShardMap> LoadShardMap(MetadataStore& metadata);
// LoadShardMap without the store version.
Result<ShardMap> ReadShardMap(MetadataStore& metadata);

// Publishes `next` in place of `base` if the map has not changed since `base` was read: one
// commit that rewrites the version key and the records of shards and nodes that differ (and
// deletes those `next` no longer has). failed-precondition when someone changed the map first;
// invalid-argument when the change needs more writes than one commit takes
// (MetadataStore::max_writes_per_commit). Returns the new store version.
Result<int64_t> PublishShardMap(MetadataStore& metadata, const StoredShardMap& base,
                                const ShardMap& next);
// The first step of going from `base` to `next` when the whole change needs more writes than one
// commit takes (`max_writes`, the version key included): `next`'s version with as many whole
// units of the change as fit, in order — a node whose record changed together with every shard
// change of which it was primary (a failover records a node's new lease with all of its
// primaries' new epochs), then a changed shard alone, a split's parent with its children, a
// merge's parents with the merged shard. `next` itself when it all fits. The caller publishes
// the step and plans the rest from the map that results (the failover controller does so on its
// next pass). invalid-argument when no unit fits.
Result<ShardMap> FirstStepOfChange(const ShardMap& base, const ShardMap& next, size_t max_writes);

// Publishes `map` as the first map unless one exists (then OK: someone else's first). A map with
// more records than one commit takes is written in several, the version key last, so no reader
// sees it half-written. Safe to call from every node at once with the same map; a different
// map being bootstrapped concurrently is refused with failed-precondition.
Status PublishFirstShardMap(MetadataStore& metadata, const ShardMap& map);

// Reads the map, lets `edit` change its shards and nodes, and publishes the result at the next
// version; retried from a fresh read while others change the map first. `edit` returns what to
// refuse with (passed through), or OK. Returns the published map.
using ShardMapEdit =
    std::function<Status(std::vector<ShardInfo>& shards, std::vector<NodeInfo>& nodes)>;
Result<ShardMap> EditShardMap(MetadataStore& metadata, const ShardMapEdit& edit);

// Publishes a first map — `shards` equal ranges, primaries round robin over `node_ids` (whose
// addresses are filled in as the nodes start), each with replication_factor - 1 replicas on the
// next nodes — unless a map exists already. Safe to call from every node at once.
Status BootstrapShardMap(MetadataStore& metadata, uint32_t shards,
                         const std::vector<std::string>& node_ids, uint32_t replication_factor = 3);
// Sets `node_id`'s addresses in the current map (a new map version) unless they are already
// current. Retries on concurrent changes. not-found if the map does not name the node.
Status PublishNodeAddress(MetadataStore& metadata, const NodeInfo& node);

// The records of one map, kept current by applying watched changes: each change costs
// O(changed records) to apply, plus one rebuild of the ShardMap value when the version key
// moves (every record of one change arrives in the same batch as its version key).
class ShardMapMirror {
 public:
  // From a consistent load (LoadShardMap's pages).
  static Result<ShardMapMirror> Load(MetadataStore& metadata);

  // Applies one watched batch. Returns true when it published a new map version. An invalid
  // record or map is corruption: the caller reloads.
  Result<bool> Apply(const ChangeBatch& batch);

  const std::shared_ptr<const StoredShardMap>& current() const { return current_; }
  // The newest store version applied (any key under the map's prefix).
  int64_t applied_version() const { return applied_version_; }

  ShardMapMirror(ShardMapMirror&&) noexcept;
  ShardMapMirror& operator=(ShardMapMirror&&) noexcept;
  ~ShardMapMirror();

  struct Records;  // The parsed records, by shard id and node id (shard_map_store.cc).

 private:
  ShardMapMirror();
  Status Rebuild();

  std::unique_ptr<Records> records_;
  int64_t applied_version_ = 0;
  std::shared_ptr<const StoredShardMap> current_;
};

// Follows the map in the store: loads it once, then applies watched changes (ShardMapMirror).
// A watch that loses its history, or a change that does not apply, makes it load afresh on a
// thread of its own. Calls `on_map` (if given) with each new map, one call at a time, in
// version order, on the watch's thread.
class ShardMapWatcher {
 public:
  using MapCallback = std::function<void(const std::shared_ptr<const StoredShardMap>&)>;
  // not-found until a map is published, unless `wait_for_first`: then Current() is null until
  // the first map is published, and that map is loaded (and given to on_map) once it is.
  static Result<std::unique_ptr<ShardMapWatcher>> Start(std::shared_ptr<MetadataStore> metadata,
                                                        Logger logger = nullptr,
                                                        MapCallback on_map = nullptr,
                                                        bool wait_for_first = false);
  ~ShardMapWatcher();

  // Null only while waiting for a first map (see Start).
  std::shared_ptr<const StoredShardMap> Current();
  // Loads afresh in the background if the store's map version is newer than ours (reads the
  // version key first; a watch that fell behind catches up). Never blocks.
  void RequestRefresh();
  // Reads the version key now, on the calling thread, loading afresh if ours is older.
  std::shared_ptr<const StoredShardMap> RefreshNow();

  uint64_t reloads() const { return reloads_.load(); }
  uint64_t batches_applied() const { return batches_.load(); }
  uint64_t refreshes() const { return refreshes_.load(); }
  // Time spent applying batches (the mirror and the new ShardMap), excluding on_map.
  uint64_t apply_nanos() const { return apply_nanos_.load(); }

 private:
  ShardMapWatcher(std::shared_ptr<MetadataStore> metadata, Logger logger, MapCallback on_map);
  Status Reload();  // Loads and re-creates the watch from the loaded version.
  void OnBatch(const ChangeBatch& batch, uint64_t generation);
  void Publish(const std::shared_ptr<const StoredShardMap>& map);
  void RefreshLoop();

  const std::shared_ptr<MetadataStore> metadata_;
  const Logger log_;
  const MapCallback on_map_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<ShardMapMirror> mirror_;           // GUARDED_BY(mu_)
  std::shared_ptr<const StoredShardMap> current_;  // GUARDED_BY(mu_)
  uint64_t watch_generation_ = 0;                  // GUARDED_BY(mu_); batches of older watches
                                                   // are dropped.
  bool reload_requested_ = false;                  // GUARDED_BY(mu_)
  bool refresh_requested_ = false;                 // GUARDED_BY(mu_)
  bool stopping_ = false;                          // GUARDED_BY(mu_)
  std::mutex publish_mu_;           // Serializes on_map_ calls; taken before mu_, never inside it.
  uint64_t published_version_ = 0;  // GUARDED_BY(publish_mu_)
  std::mutex reload_mu_;            // One reload at a time.
  std::unique_ptr<WatchHandle> watch_;            // GUARDED_BY(reload_mu_)
  std::unique_ptr<WatchHandle> first_map_watch_;  // wait_for_first: the version key appearing.
  std::atomic<uint64_t> reloads_{0};
  std::atomic<uint64_t> batches_{0};
  std::atomic<uint64_t> refreshes_{0};
  std::atomic<uint64_t> apply_nanos_{0};
  std::thread refresher_;
};

// A ShardMapSource (router/chat_client.h) backed by the metadata store: a ShardMapWatcher.
// RequestRefresh() never blocks the caller's event loop.
class MetadataShardMapSource final : public ShardMapSource {
 public:
  // not-found until a map is published.
  static Result<std::shared_ptr<MetadataShardMapSource>> Create(
      std::shared_ptr<MetadataStore> metadata, Logger logger = nullptr);

  std::shared_ptr<const ShardMap> Current() override;
  void RequestRefresh() override { watcher_->RequestRefresh(); }
  // Checks the store's version now, on the calling thread (blocking); returns the newest map.
  std::shared_ptr<const ShardMap> RefreshNow();
  // Version checks done by the refresher thread (for tests and /metrics).
  uint64_t refreshes() const { return watcher_->refreshes(); }
  const ShardMapWatcher& watcher() const { return *watcher_; }

 private:
  explicit MetadataShardMapSource(std::unique_ptr<ShardMapWatcher> watcher)
      : watcher_(std::move(watcher)) {}
  std::unique_ptr<ShardMapWatcher> watcher_;
};

}  // namespace scrollback
