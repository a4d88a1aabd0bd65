#include "scrollback/cluster/split.h"

#include <thread>

#include "scrollback/cluster/shard_map_store.h"

namespace scrollback {

uint64_t MiddleToken(TokenRange range) {
  return range.first +
         static_cast<uint64_t>((static_cast<unsigned __int128>(range.last) - range.first + 1) / 2);
}

Result<SplitResult> SplitShard(MetadataStore& metadata, uint64_t shard_id,
                               std::optional<uint64_t> at_token,
                               std::chrono::milliseconds timeout) {
  auto map = ReadShardMap(metadata);
  if (!map.ok()) return map.status();
  const ShardInfo* shard = map->FindShard(shard_id);
  if (shard == nullptr) {
    return Status::InvalidArgument("shard", "no shard " + std::to_string(shard_id));
  }
  const TokenRange range = shard->range;
  if (range.first == range.last) {
    return Status::InvalidArgument(
        "shard", "shard " + std::to_string(shard_id) + " owns one token: it cannot split");
  }
  const uint64_t at = at_token.value_or(MiddleToken(range));
  if (at <= range.first || at > range.last) {
    return Status::InvalidArgument("at", "token " + std::to_string(at) + " is outside (" +
                                             std::to_string(range.first) + ", " +
                                             std::to_string(range.last) + "], where shard " +
                                             std::to_string(shard_id) + " can split");
  }
  if (shard->split_at != 0 || !shard->switch_to.empty()) {
    return Status::FailedPrecondition("shard " + std::to_string(shard_id) + " is already " +
                                      (shard->split_at != 0 ? "splitting" : "switching over"));
  }
  const std::string key = kSplitPrefix + std::to_string(shard_id);
  auto put = metadata.CompareAndSwap(key, 0, std::to_string(at));
  if (!put.ok()) {
    if (put.status().code() == ErrorCode::kFailedPrecondition) {
      return Status::FailedPrecondition("a split of shard " + std::to_string(shard_id) +
                                        " is already requested");
    }
    return put.status();
  }

  SplitResult result;
  result.shard_id = shard_id;
  result.at_token = at;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::optional<std::chrono::steady_clock::time_point> sealed_at;
  while (std::chrono::steady_clock::now() < deadline) {
    auto now_map = ReadShardMap(metadata);
    if (now_map.ok()) {
      const ShardInfo* now = now_map->FindShard(shard_id);
      if (now != nullptr && now->split_at != 0 && !sealed_at) {
        sealed_at = std::chrono::steady_clock::now();
      }
      if (now == nullptr) {
        const ShardInfo& left = now_map->ShardForToken(at - 1);
        const ShardInfo& right = now_map->ShardForToken(at);
        if (left.split_from != shard_id || right.split_from != shard_id) {
          return Status::FailedPrecondition("shard " + std::to_string(shard_id) +
                                            " left the map without the requested split");
        }
        result.left_id = left.shard_id;
        result.right_id = right.shard_id;
        result.left = left.range;
        result.right = right.range;
        result.lsn = right.split_lsn;
        if (sealed_at) {
          result.pause = std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::steady_clock::now() - *sealed_at);
        }
        return result;
      }
      auto pending = metadata.Get(key);
      if (pending.ok() && !*pending && now->split_at == 0) {
        return Status::FailedPrecondition(
            "the split of shard " + std::to_string(shard_id) +
            " was abandoned (its primary did not seal in time): it serves on unsplit (the "
            "controller's log says why)");
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return Status::Unavailable("the split of shard " + std::to_string(shard_id) +
                             " did not finish in time (still requested)");
}

}  // namespace scrollback
