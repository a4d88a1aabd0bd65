#include "scrollback/cluster/shard_map_store.h"

#include <pthread.h>
#include <spdlog/logger.h>

namespace scrollback {

Result<ShardMap> ReadShardMap(MetadataStore& metadata) {
  auto stored = metadata.Get(kShardMapKey);
  if (!stored.ok()) return stored.status();
  if (!*stored) return Status::NotFound("no shard map published");
  return ShardMap::Parse((*stored)->value);
}

Result<int64_t> PublishShardMap(MetadataStore& metadata, const ShardMap& map,
                                int64_t expected_store_version) {
  return metadata.CompareAndSwap(kShardMapKey, expected_store_version, map.Serialize());
}

Status BootstrapShardMap(MetadataStore& metadata, uint32_t shards,
                         const std::vector<std::string>& node_ids, uint32_t replication_factor) {
  if (shards == 0 || node_ids.empty()) {
    return Status::InvalidArgument("shards", "need at least one shard and one node");
  }
  std::vector<NodeInfo> nodes;
  for (const std::string& id : node_ids) nodes.push_back({id, "", ""});
  auto published =
      PublishShardMap(metadata, ShardMap::Uniform(1, shards, nodes, replication_factor), 0);
  if (published.ok() || published.status().code() == ErrorCode::kFailedPrecondition) {
    return Status::Ok();  // Ours, or someone else's first.
  }
  return published.status();
}

Status PublishNodeAddress(MetadataStore& metadata, const NodeInfo& node) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    auto stored = metadata.Get(kShardMapKey);
    if (!stored.ok()) return stored.status();
    if (!*stored) return Status::NotFound("no shard map published");
    auto map = ShardMap::Parse((*stored)->value);
    if (!map.ok()) return map.status();
    std::vector<NodeInfo> nodes = map->nodes();
    bool found = false, changed = false;
    for (NodeInfo& info : nodes) {
      if (info.node_id != node.node_id) continue;
      found = true;
      changed = info.address != node.address || info.http_address != node.http_address;
      info.address = node.address;  // The recorded lease is the controller's to change.
      info.http_address = node.http_address;
    }
    if (!found) return Status::NotFound("the shard map has no node " + node.node_id);
    if (!changed) return Status::Ok();
    auto next = ShardMap::Make(map->version() + 1, map->shards(), std::move(nodes));
    if (!next.ok()) return next.status();
    auto published = PublishShardMap(metadata, *next, (*stored)->version);
    if (published.ok()) return Status::Ok();
    if (published.status().code() != ErrorCode::kFailedPrecondition) return published.status();
  }
  return Status::Unavailable("the shard map kept changing under us");
}

Result<std::shared_ptr<MetadataShardMapSource>> MetadataShardMapSource::Create(
    std::shared_ptr<MetadataStore> metadata, Logger logger) {
  auto map = ReadShardMap(*metadata);
  if (!map.ok()) return map.status();
  std::shared_ptr<MetadataShardMapSource> source(
      new MetadataShardMapSource(metadata, std::move(map).value(), std::move(logger)));
  MetadataShardMapSource* raw = source.get();
  source->watch_ = metadata->Watch(
      kShardMapKey, [raw](const std::string&, const std::optional<VersionedValue>& value) {
        if (!value) return;
        auto parsed = ShardMap::Parse(value->value);
        if (parsed.ok()) {
          raw->Offer(std::move(parsed).value());
        } else {
          raw->log_->error("the published shard map does not parse (ignored): {}",
                           parsed.status().ToString());
        }
      });
  source->RefreshNow();  // A change between the first read and the watch is not missed.
  source->refresher_ = std::thread([raw] { raw->RefreshLoop(); });
  return source;
}

MetadataShardMapSource::MetadataShardMapSource(std::shared_ptr<MetadataStore> metadata,
                                               ShardMap map, Logger logger)
    : metadata_(std::move(metadata)),
      log_(OrNull(std::move(logger))),
      map_(std::make_shared<const ShardMap>(std::move(map))) {}

MetadataShardMapSource::~MetadataShardMapSource() {
  watch_.reset();
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (refresher_.joinable()) refresher_.join();
}

std::shared_ptr<const ShardMap> MetadataShardMapSource::Current() {
  std::lock_guard lock(mu_);
  return map_;
}

void MetadataShardMapSource::RequestRefresh() {
  {
    std::lock_guard lock(mu_);
    refresh_requested_ = true;
  }
  cv_.notify_one();
}

std::shared_ptr<const ShardMap> MetadataShardMapSource::RefreshNow() {
  auto map = ReadShardMap(*metadata_);
  // A failed read keeps the map we have: better stale than none.
  if (map.ok()) {
    Offer(std::move(map).value());
  } else {
    log_->warn("re-reading the shard map failed (keeping version {}): {}", Current()->version(),
               map.status().ToString());
  }
  return Current();
}

void MetadataShardMapSource::RefreshLoop() {
  pthread_setname_np(pthread_self(), "sb-map-refresh");
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stopping_ || refresh_requested_; });
    if (stopping_) return;
    refresh_requested_ = false;  // Requests made while this read runs get a read of their own.
    lock.unlock();
    RefreshNow();
    refreshes_.fetch_add(1, std::memory_order_relaxed);
    lock.lock();
  }
}

void MetadataShardMapSource::Offer(ShardMap map) {
  std::lock_guard lock(mu_);
  if (map.version() <= map_->version()) return;
  log_->info("shard map version {} -> {} ({} shards, {} nodes)", map_->version(), map.version(),
             map.shards().size(), map.nodes().size());
  map_ = std::make_shared<const ShardMap>(std::move(map));
}

}  // namespace scrollback
