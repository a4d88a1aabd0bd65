#include "scrollback/cluster/merge.h"

#include <algorithm>
#include <optional>
#include <set>
#include <thread>

#include "scrollback/cluster/shard_map_store.h"

namespace scrollback {

Result<MergeResult> MergeShards(MetadataStore& metadata, uint64_t left_id, uint64_t right_id,
                                std::chrono::milliseconds timeout) {
  auto map = ReadShardMap(metadata);
  if (!map.ok()) return map.status();
  const ShardInfo* left = map->FindShard(left_id);
  const ShardInfo* right = map->FindShard(right_id);
  if (left == nullptr || right == nullptr) {
    return Status::InvalidArgument("shard",
                                   "no shard " + std::to_string(left ? right_id : left_id));
  }
  if (left->range.last == UINT64_MAX || left->range.last + 1 != right->range.first) {
    return Status::InvalidArgument("with", "shard " + std::to_string(right_id) +
                                               " does not start right after shard " +
                                               std::to_string(left_id));
  }
  const std::set<std::string> left_nodes(left->replicas.begin(), left->replicas.end());
  const std::set<std::string> right_nodes(right->replicas.begin(), right->replicas.end());
  if (left->primary != right->primary || left_nodes != right_nodes) {
    return Status::FailedPrecondition(
        "shards " + std::to_string(left_id) + " and " + std::to_string(right_id) +
        " are not held by the same nodes with the same primary (primaries " + left->primary +
        " and " + right->primary + "): move copies or switch over first");
  }
  for (const ShardInfo* s : {left, right}) {
    if (s->split_at != 0 || !s->move_to.empty() || !s->switch_to.empty() || s->merge_into != 0) {
      return Status::FailedPrecondition("shard " + std::to_string(s->shard_id) +
                                        " is already splitting, moving, merging or switching over");
    }
  }
  const std::string key = kMergePrefix + std::to_string(left_id);
  auto put = metadata.CompareAndSwap(key, 0, std::to_string(right_id));
  if (!put.ok()) {
    if (put.status().code() == ErrorCode::kFailedPrecondition) {
      return Status::FailedPrecondition("a merge of shard " + std::to_string(left_id) +
                                        " is already requested");
    }
    return put.status();
  }
  MergeResult result{left_id, right_id, 0, TokenRange{left->range.first, right->range.last}, {}};
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::optional<std::chrono::steady_clock::time_point> sealed_at;
  while (std::chrono::steady_clock::now() < deadline) {
    auto now_map = ReadShardMap(metadata);
    if (now_map.ok()) {
      const ShardInfo* now_left = now_map->FindShard(left_id);
      if (now_left != nullptr && now_left->merge_into != 0 && !sealed_at) {
        sealed_at = std::chrono::steady_clock::now();
      }
      if (now_left == nullptr) {
        const ShardInfo& merged = now_map->ShardForToken(result.range.first);
        if (merged.merge_left != left_id || merged.merge_right != right_id) {
          return Status::FailedPrecondition("shard " + std::to_string(left_id) +
                                            " left the map without the requested merge");
        }
        result.merged_id = merged.shard_id;
        if (sealed_at) {
          result.took = std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::steady_clock::now() - *sealed_at);
        }
        return result;
      }
      auto pending = metadata.Get(key);
      if (pending.ok() && !*pending && now_left->merge_into == 0) {
        return Status::FailedPrecondition(
            "the merge of shards " + std::to_string(left_id) + " and " + std::to_string(right_id) +
            " was refused or abandoned: both serve on (the controller's log says why)");
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return Status::Unavailable("the merge of shard " + std::to_string(left_id) +
                             " did not finish in time (still requested)");
}

}  // namespace scrollback
