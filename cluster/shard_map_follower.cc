#include "scrollback/cluster/shard_map_follower.h"

#include <spdlog/logger.h>

#include <algorithm>

#include "scrollback/cluster/shard_map_store.h"

namespace scrollback {

Result<std::unique_ptr<ShardMapFollower>> ShardMapFollower::Start(
    std::shared_ptr<MetadataStore> metadata, StorageNode& node, Logger logger) {
  std::unique_ptr<ShardMapFollower> follower(
      new ShardMapFollower(metadata, node, OrNull(std::move(logger))));
  SB_RETURN_IF_ERROR(follower->Follow());
  return follower;
}

Status ShardMapFollower::Follow() {
  // A map this node cannot apply leaves it serving the previous one; the next published map is
  // tried afresh. Apply logs and counts the failure.
  auto watcher = ShardMapWatcher::Start(
      metadata_, log_,
      [this](const std::shared_ptr<const StoredShardMap>& stored) { (void)Apply(stored->map); },
      /*wait_for_first=*/true);
  if (!watcher.ok()) {
    // The caller must not carry on without the map.
    log_->error("reading the shard map failed: {}", watcher.status().ToString());
    return watcher.status();
  }
  if (!(*watcher)->Current())
    log_->info("no shard map published yet: hosting nothing until one is");
  watcher_ = std::move(watcher).value();
  return Status::Ok();
}

ShardMapFollower::ShardMapFollower(std::shared_ptr<MetadataStore> metadata, StorageNode& node,
                                   Logger logger)
    : metadata_(std::move(metadata)), node_(node), log_(std::move(logger)) {}

ShardMapFollower::~ShardMapFollower() { watcher_.reset(); }

Status ShardMapFollower::Apply(const ShardMap& map) {
  std::lock_guard lock(mu_);
  if (map.version() < node_.map_version()) return Status::Ok();  // Older than what we serve.
  std::vector<ShardAssignment> mine;
  for (const ShardInfo& shard : map.shards()) {
    const bool primary = shard.primary == node_.node_id();
    const bool replica = std::find(shard.replicas.begin(), shard.replicas.end(), node_.node_id()) !=
                         shard.replicas.end();
    if (!primary && !replica) continue;
    const NodeInfo* primary_node = map.FindNode(shard.primary);
    ShardAssignment& a = mine.emplace_back();
    a.shard_id = shard.shard_id;
    a.range = shard.range;
    a.epoch = shard.epoch;
    a.role = primary ? ShardRole::kPrimary : ShardRole::kReplica;
    a.placement_version = shard.placement_version;
    a.primary_node = shard.primary;
    a.primary_address = primary_node ? primary_node->address : std::string();
    if (primary) a.replica_nodes = shard.replicas;
    a.reshard_pending = shard.split_at != 0 || shard.merge_into != 0;
    a.sealed_for_reshard = primary && a.reshard_pending;
    a.writes_paused = primary && !shard.switch_to.empty();
    a.split_from = shard.split_from;
    a.split_lsn = shard.split_lsn;
    a.merge_left = shard.merge_left;
    a.merge_right = shard.merge_right;
    a.merge_left_lsn = shard.merge_left_lsn;
    a.merge_right_lsn = shard.merge_right_lsn;
  }
  Status applied = node_.AssignShards(map.version(), mine, map.Serialize());
  if (applied.ok() && node_.primary_lease() != nullptr && map.version() >= node_.map_version()) {
    // After the shards: a lease the map now records only allows writes at the epochs this
    // map gives (decision 0010).
    const NodeInfo* self = map.FindNode(node_.node_id());
    node_.primary_lease()->RecordedInMap(self ? self->lease_id : 0);
  }
  if (!applied.ok()) {
    failures_.fetch_add(1, std::memory_order_relaxed);
    log_->error("applying shard map version {} failed (still serving version {}): {}",
                map.version(), node_.map_version(), applied.ToString());
  }
  return applied;
}

void ShardMapFollower::RenderMetrics(std::string* out) const {
  *out +=
      "# HELP scrollback_shard_map_apply_failures_total Published shard maps this node could not "
      "apply (logged).\n"
      "# TYPE scrollback_shard_map_apply_failures_total counter\n"
      "scrollback_shard_map_apply_failures_total " +
      std::to_string(failures_.load()) + "\n";
}

}  // namespace scrollback
