#include "scrollback/cluster/shard_map_store.h"

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
                         const std::vector<std::string>& node_ids) {
  if (shards == 0 || node_ids.empty()) {
    return Status::InvalidArgument("shards", "need at least one shard and one node");
  }
  std::vector<NodeInfo> nodes;
  for (const std::string& id : node_ids) nodes.push_back({id, "", ""});
  auto published = PublishShardMap(metadata, ShardMap::Uniform(1, shards, nodes), 0);
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
      info = node;
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
    std::shared_ptr<MetadataStore> metadata) {
  auto map = ReadShardMap(*metadata);
  if (!map.ok()) return map.status();
  std::shared_ptr<MetadataShardMapSource> source(
      new MetadataShardMapSource(metadata, std::move(map).value()));
  MetadataShardMapSource* raw = source.get();
  source->watch_ = metadata->Watch(
      kShardMapKey, [raw](const std::string&, const std::optional<VersionedValue>& value) {
        if (!value) return;
        auto parsed = ShardMap::Parse(value->value);
        if (parsed.ok()) raw->Offer(std::move(parsed).value());
      });
  source->Refresh();  // A change between the first read and the watch is not missed.
  return source;
}

MetadataShardMapSource::MetadataShardMapSource(std::shared_ptr<MetadataStore> metadata,
                                               ShardMap map)
    : metadata_(std::move(metadata)), map_(std::make_shared<const ShardMap>(std::move(map))) {}

MetadataShardMapSource::~MetadataShardMapSource() { watch_.reset(); }

std::shared_ptr<const ShardMap> MetadataShardMapSource::Current() {
  std::lock_guard lock(mu_);
  return map_;
}

std::shared_ptr<const ShardMap> MetadataShardMapSource::Refresh() {
  auto map = ReadShardMap(*metadata_);
  // A failed read keeps the map we have: better stale than none.
  if (map.ok()) Offer(std::move(map).value());
  return Current();
}

void MetadataShardMapSource::Offer(ShardMap map) {
  std::lock_guard lock(mu_);
  if (map.version() > map_->version()) map_ = std::make_shared<const ShardMap>(std::move(map));
}

Result<std::unique_ptr<ShardMapFollower>> ShardMapFollower::Start(
    std::shared_ptr<MetadataStore> metadata, StorageNode& node) {
  std::unique_ptr<ShardMapFollower> follower(new ShardMapFollower(metadata, node));
  ShardMapFollower* raw = follower.get();
  follower->watch_ = metadata->Watch(
      kShardMapKey, [raw](const std::string&, const std::optional<VersionedValue>& value) {
        if (!value) return;
        auto parsed = ShardMap::Parse(value->value);
        // A map this node cannot apply (e.g. a shard fails to open) leaves it serving the
        // previous one; the next published map is tried afresh.
        if (parsed.ok()) (void)raw->Apply(*parsed);
      });
  auto map = ReadShardMap(*metadata);
  if (map.ok()) SB_RETURN_IF_ERROR(follower->Apply(*map));
  return follower;
}

ShardMapFollower::ShardMapFollower(std::shared_ptr<MetadataStore> metadata, StorageNode& node)
    : metadata_(std::move(metadata)), node_(node) {}

ShardMapFollower::~ShardMapFollower() { watch_.reset(); }

Status ShardMapFollower::Apply(const ShardMap& map) {
  std::lock_guard lock(mu_);
  if (map.version() < node_.map_version()) return Status::Ok();  // Older than what we serve.
  std::vector<ShardAssignment> mine;
  for (const ShardInfo& shard : map.shards()) {
    if (shard.primary == node_.node_id()) {
      mine.push_back(ShardAssignment{shard.shard_id, shard.range, shard.epoch});
    }
  }
  return node_.AssignShards(map.version(), mine, map.Serialize());
}

}  // namespace scrollback
