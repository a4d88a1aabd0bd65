// The failover controller's merge step (merge.h, docs/resharding.md): start, finish or abandon
// the merge of two adjacent shards.
#include <spdlog/logger.h>

#include <algorithm>
#include <set>

#include "scrollback/cluster/failover_controller.h"
#include "scrollback/cluster/merge.h"

namespace scrollback {

bool FailoverController::MergeStep(std::vector<ShardInfo>& shards, uint64_t next_version,
                                   const std::set<std::string>& changed_nodes,
                                   const std::function<int64_t(const std::string&)>& live_lease,
                                   const CopiesOf& copies_of,
                                   const std::vector<KeyValue>& requested,
                                   std::chrono::steady_clock::time_point now) {
  std::map<uint64_t, uint64_t> requests;  // Left shard id -> right shard id.
  auto drop_request = [&](uint64_t left_id) {
    merging_since_.erase(left_id);
    if (Status removed = metadata_->Delete(kMergePrefix + std::to_string(left_id)); !removed.ok()) {
      errors_.fetch_add(1, std::memory_order_relaxed);
      log_->warn("controller {}: removing the merge request of shard {} failed: {}",
                 options_.node_id, left_id, removed.ToString());
    }
  };
  for (const KeyValue& kv : requested) {
    try {
      requests[std::stoull(kv.key.substr(std::string(kMergePrefix).size()))] =
          std::stoull(kv.value.value);
    } catch (const std::exception&) {
      log_->error("controller {}: merge request {} = '{}' does not parse (dropped)",
                  options_.node_id, kv.key, kv.value.value);
      (void)metadata_->Delete(kv.key);
    }
  }
  std::sort(shards.begin(), shards.end(),
            [](const ShardInfo& a, const ShardInfo& b) { return a.range.first < b.range.first; });
  uint64_t next_id = 1;
  for (const ShardInfo& shard : shards) {
    next_id = std::max({next_id, shard.shard_id + 1, shard.split_left_id + 1,
                        shard.split_right_id + 1, shard.merge_into + 1});
  }
  // The sealed LSN of `shard`'s primary at its epoch, if it reports one.
  auto sealed_lsn = [&](const ShardInfo& shard) -> std::optional<uint64_t> {
    const auto& hosted = copies_of(shard.primary);
    if (!hosted.ok()) return std::nullopt;
    auto it = hosted->find(shard.shard_id);
    if (it == hosted->end() || !it->second.serving || !it->second.sealed ||
        it->second.epoch != shard.epoch) {
      return std::nullopt;
    }
    return it->second.lsn;
  };
  // Whether every live replica of `shard` holds `lsn`.
  auto replicas_at = [&](const ShardInfo& shard, uint64_t lsn) {
    for (const std::string& node : shard.replicas) {
      if (live_lease(node) == 0) continue;
      const auto& hosted = copies_of(node);
      if (!hosted.ok()) continue;
      auto it = hosted->find(shard.shard_id);
      if (it != hosted->end() && it->second.serving && it->second.lsn < lsn) return false;
    }
    return true;
  };

  bool changed = false;
  std::vector<ShardInfo> merged_shards;
  std::set<uint64_t> merged_away;
  std::set<uint64_t> present;
  for (const ShardInfo& shard : shards) present.insert(shard.shard_id);
  for (size_t i = 0; i + 1 < shards.size(); ++i) {
    ShardInfo& left = shards[i];
    ShardInfo& right = shards[i + 1];
    auto request = requests.find(left.shard_id);
    const bool started = left.merge_into != 0 && left.merge_into == right.merge_into;
    if (!started && request == requests.end()) continue;
    if (changed_nodes.count(left.primary) || changed_nodes.count(right.primary)) continue;

    if (!started) {
      std::string refusal;
      const std::set<std::string> left_nodes(left.replicas.begin(), left.replicas.end());
      const std::set<std::string> right_nodes(right.replicas.begin(), right.replicas.end());
      if (request->second != right.shard_id) {
        refusal = "shard " + std::to_string(request->second) + " is not the next shard";
      } else if (left.primary != right.primary || left_nodes != right_nodes) {
        refusal = "the two are not held by the same nodes with the same primary";
      } else if (left.split_at != 0 || right.split_at != 0 || !left.move_to.empty() ||
                 !right.move_to.empty() || !left.switch_to.empty() || !right.switch_to.empty() ||
                 left.merge_into != 0 || right.merge_into != 0) {
        refusal = "one of them is splitting, moving, merging or switching over";
      } else if (live_lease(left.primary) == 0) {
        refusal = "their primary " + left.primary + " holds no lease";
      }
      if (!refusal.empty()) {
        splits_abandoned_.fetch_add(1, std::memory_order_relaxed);
        log_->error("controller {}: merge of shards {} and {} refused: {}", options_.node_id,
                    left.shard_id, request->second, refusal);
        drop_request(left.shard_id);
        continue;
      }
      left.merge_into = right.merge_into = next_id++;
      ++left.epoch;
      ++right.epoch;
      epoch_bumps_.fetch_add(2, std::memory_order_relaxed);
      merging_since_[left.shard_id] = now;
      changed = true;
      log_->warn("controller {}: merging shards {} and {} into shard {}: sealing both on {}",
                 options_.node_id, left.shard_id, right.shard_id, left.merge_into, left.primary);
      ++i;  // The right one is taken.
      continue;
    }

    auto& since = merging_since_.try_emplace(left.shard_id, now).first->second;
    {
      // A failover in between may have given the two different primaries: one node must hold
      // both sealed copies to make the merged one. Abandoned; the operator may ask again.
      const std::set<std::string> left_nodes(left.replicas.begin(), left.replicas.end());
      const std::set<std::string> right_nodes(right.replicas.begin(), right.replicas.end());
      if (left.primary != right.primary || left_nodes != right_nodes) {
        splits_abandoned_.fetch_add(1, std::memory_order_relaxed);
        log_->error(
            "controller {}: merge of shards {} and {} abandoned: their primaries differ now ({} "
            "and {}); both take writes again",
            options_.node_id, left.shard_id, right.shard_id, left.primary, right.primary);
        left.merge_into = right.merge_into = 0;
        ++left.epoch;
        ++right.epoch;
        epoch_bumps_.fetch_add(2, std::memory_order_relaxed);
        changed = true;
        drop_request(left.shard_id);
        ++i;
        continue;
      }
    }
    const auto left_lsn = sealed_lsn(left);
    const auto right_lsn = sealed_lsn(right);
    if (!left_lsn || !right_lsn) {
      if (now - since > options_.split_timeout) {
        splits_abandoned_.fetch_add(1, std::memory_order_relaxed);
        log_->error(
            "controller {}: merge of shards {} and {} abandoned: {} did not seal both "
            "within {} ms; both take writes again",
            options_.node_id, left.shard_id, right.shard_id, left.primary,
            options_.split_timeout.count());
        left.merge_into = right.merge_into = 0;
        ++left.epoch;
        ++right.epoch;
        epoch_bumps_.fetch_add(2, std::memory_order_relaxed);
        changed = true;
        drop_request(left.shard_id);
      }
      ++i;
      continue;
    }
    if ((!replicas_at(left, *left_lsn) || !replicas_at(right, *right_lsn)) &&
        now - since < options_.split_timeout) {
      ++i;
      continue;  // A replica still applying its primary's last writes.
    }
    ShardInfo merged = left;
    merged.shard_id = left.merge_into;
    merged.range = TokenRange{left.range.first, right.range.last};
    merged.epoch = std::max(left.epoch, right.epoch) + 1;
    merged.placement_version = next_version;
    merged.merge_into = 0;
    merged.split_from = merged.split_lsn = 0;
    merged.merge_left = left.shard_id;
    merged.merge_right = right.shard_id;
    merged.merge_left_lsn = *left_lsn;
    merged.merge_right_lsn = *right_lsn;
    merged_shards.push_back(merged);
    merged_away.insert(left.shard_id);
    merged_away.insert(right.shard_id);
    splits_.fetch_add(1, std::memory_order_relaxed);
    changed = true;
    log_->warn("controller {}: shards {} (lsn {}) and {} (lsn {}) merged into shard {} [{}, {}]",
               options_.node_id, left.shard_id, *left_lsn, right.shard_id, *right_lsn,
               merged.shard_id, merged.range.first, merged.range.last);
    drop_request(left.shard_id);
    ++i;
  }
  for (const auto& [left_id, right_id] : requests) {
    if (!present.count(left_id)) {
      log_->error("controller {}: merge requested for unknown shard {} (dropped)", options_.node_id,
                  left_id);
      drop_request(left_id);
    }
  }
  if (!merged_away.empty()) {
    std::erase_if(shards, [&](const ShardInfo& s) { return merged_away.count(s.shard_id) > 0; });
    shards.insert(shards.end(), merged_shards.begin(), merged_shards.end());
  }
  return changed;
}

}  // namespace scrollback
