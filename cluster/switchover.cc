#include "scrollback/cluster/switchover.h"

#include <algorithm>
#include <optional>
#include <thread>

#include "scrollback/cluster/shard_map_store.h"

namespace scrollback {

Result<SwitchoverResult> Switchover(MetadataStore& metadata, uint64_t shard_id,
                                    const std::string& to, std::chrono::milliseconds timeout) {
  auto map = ReadShardMap(metadata);
  if (!map.ok()) return map.status();
  const ShardInfo* shard = map->FindShard(shard_id);
  if (shard == nullptr) {
    return Status::InvalidArgument("shard", "no shard " + std::to_string(shard_id));
  }
  if (!to.empty() &&
      std::find(shard->replicas.begin(), shard->replicas.end(), to) == shard->replicas.end()) {
    return Status::InvalidArgument(
        "to", to + " holds no replica of shard " + std::to_string(shard_id) +
                  (to == shard->primary ? " (it is the primary already)" : ""));
  }
  if (shard->split_at != 0 || shard->merge_into != 0 || !shard->move_to.empty()) {
    return Status::FailedPrecondition("shard " + std::to_string(shard_id) +
                                      " is splitting, merging or moving: switch over after");
  }
  if (shard->replicas.empty()) {
    return Status::FailedPrecondition("shard " + std::to_string(shard_id) +
                                      " has no replica to switch over to");
  }
  SwitchoverResult result;
  result.shard_id = shard_id;
  result.from = shard->primary;
  const std::string key = kSwitchoverPrefix + std::to_string(shard_id);
  auto put = metadata.Put(key, to);
  if (!put.ok()) return put.status();

  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::optional<std::chrono::steady_clock::time_point> paused_at;
  while (std::chrono::steady_clock::now() < deadline) {
    auto now_map = ReadShardMap(metadata);
    if (now_map.ok()) {
      const ShardInfo* now = now_map->FindShard(shard_id);
      if (now == nullptr) return Status::NotFound("shard " + std::to_string(shard_id) + " is gone");
      if (!now->switch_to.empty() && !paused_at) paused_at = std::chrono::steady_clock::now();
      if (now->switch_to.empty() && now->primary != result.from) {
        result.to = now->primary;
        result.epoch = now->epoch;
        if (paused_at) {
          result.pause = std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::steady_clock::now() - *paused_at);
        }
        return result;
      }
      auto pending = metadata.Get(key);
      if (pending.ok() && !*pending && now->switch_to.empty()) {
        // The controller took the request away without moving the primary: it gave up.
        return Status::FailedPrecondition(
            "the switchover of shard " + std::to_string(shard_id) +
            " was abandoned (the target did not catch up in time, or a node failed): " +
            result.from + " keeps it (the controller's log says why)");
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return Status::Unavailable("the switchover of shard " + std::to_string(shard_id) +
                             " did not finish in time (still requested)");
}

Result<std::vector<SwitchoverResult>> DrainPrimaries(MetadataStore& metadata,
                                                     const std::string& node_id,
                                                     std::chrono::milliseconds timeout_per_shard) {
  auto map = ReadShardMap(metadata);
  if (!map.ok()) return map.status();
  if (map->FindNode(node_id) == nullptr) {
    return Status::InvalidArgument("node", "the shard map has no node " + node_id);
  }
  std::vector<SwitchoverResult> done;
  for (const ShardInfo& shard : map->shards()) {
    if (shard.primary != node_id) continue;
    auto moved = Switchover(metadata, shard.shard_id, "", timeout_per_shard);
    if (!moved.ok()) return moved.status();
    done.push_back(*moved);
  }
  return done;
}

}  // namespace scrollback
