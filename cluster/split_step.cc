// The failover controller's split step (split.h, docs/resharding.md): start, finish or abandon.
#include <spdlog/logger.h>

#include <algorithm>

#include "scrollback/cluster/failover_controller.h"
#include "scrollback/cluster/split.h"

namespace scrollback {

bool FailoverController::SplitStep(std::vector<ShardInfo>& shards, uint64_t next_version,
                                   const std::set<std::string>& changed_nodes,
                                   const std::function<int64_t(const std::string&)>& live_lease,
                                   const CopiesOf& copies_of,
                                   const std::vector<KeyValue>& requested,
                                   std::chrono::steady_clock::time_point now) {
  std::map<uint64_t, uint64_t> requests;  // Shard id -> the right child's first token.
  auto drop_request = [&](uint64_t shard_id) {
    splitting_since_.erase(shard_id);
    split_waiting_since_.erase(shard_id);
    if (Status removed = metadata_->Delete(kSplitPrefix + std::to_string(shard_id));
        !removed.ok()) {
      errors_.fetch_add(1, std::memory_order_relaxed);
      log_->warn("controller {}: removing the split request of shard {} failed: {}",
                 options_.node_id, shard_id, removed.ToString());
    }
  };
  for (const KeyValue& kv : requested) {
    try {
      const uint64_t shard_id = std::stoull(kv.key.substr(std::string(kSplitPrefix).size()));
      requests[shard_id] = std::stoull(kv.value.value);
    } catch (const std::exception&) {
      log_->error("controller {}: split request {} = '{}' does not parse (dropped)",
                  options_.node_id, kv.key, kv.value.value);
      (void)metadata_->Delete(kv.key);
    }
  }

  bool changed = false;
  uint64_t next_id = 1;  // Past every id in use or promised to a split in progress.
  for (const ShardInfo& shard : shards) {
    next_id = std::max({next_id, shard.shard_id + 1, shard.split_left_id + 1,
                        shard.split_right_id + 1, shard.merge_into + 1});
  }
  std::vector<ShardInfo> children;  // Of the splits finished in this pass.
  std::set<uint64_t> finished;      // Their parents.
  std::set<uint64_t> present;
  for (ShardInfo& shard : shards) {
    present.insert(shard.shard_id);
    auto request = requests.find(shard.shard_id);
    if (shard.split_at == 0 && request == requests.end()) continue;
    if (changed_nodes.count(shard.primary)) continue;  // Failing over: a later pass goes on.

    if (shard.split_at == 0) {
      // Start: seal the primary at a new epoch.
      const uint64_t at = request->second;
      std::string refusal;
      if (at <= shard.range.first || at > shard.range.last) {
        refusal = "token " + std::to_string(at) + " is outside the shard's (first, last]";
      } else if (!shard.switch_to.empty()) {
        refusal = "a switchover is in progress";
      } else if (!shard.move_to.empty()) {
        refusal = "a move is in progress";
      } else if (shard.merge_into != 0) {
        refusal = "a merge is in progress";
      } else if (live_lease(shard.primary) == 0) {
        refusal = "its primary " + shard.primary + " holds no lease";
      }
      if (refusal.empty()) {
        // Replicas close behind the primary first: the pause after the seal is then short.
        auto& asked = splitting_since_.try_emplace(shard.shard_id, now).first->second;
        uint64_t worst_lag = 0;
        std::string behind;
        const auto& on_primary = copies_of(shard.primary);
        const bool primary_answered =
            on_primary.ok() && on_primary->find(shard.shard_id) != on_primary->end();
        if (primary_answered) {
          const uint64_t primary_lsn = on_primary->find(shard.shard_id)->second.lsn;
          for (const std::string& node : shard.replicas) {
            if (live_lease(node) == 0) continue;
            const auto& hosted = copies_of(node);
            if (!hosted.ok()) continue;
            auto it = hosted->find(shard.shard_id);
            if (it == hosted->end() || !it->second.serving || it->second.lsn >= primary_lsn) {
              continue;
            }
            if (primary_lsn - it->second.lsn > worst_lag) {
              worst_lag = primary_lsn - it->second.lsn;
              behind = node;
            }
          }
        }
        if (worst_lag > options_.split_max_replica_lag && now - asked < options_.split_timeout) {
          log_->info("controller {}: split of shard {} waits for {} ({} lsns behind)",
                     options_.node_id, shard.shard_id, behind, worst_lag);
          continue;
        }
      }
      if (!refusal.empty()) {
        splits_abandoned_.fetch_add(1, std::memory_order_relaxed);
        log_->error("controller {}: split of shard {} refused: {}", options_.node_id,
                    shard.shard_id, refusal);
        drop_request(shard.shard_id);
        continue;
      }
      shard.split_at = at;
      shard.split_left_id = next_id++;
      shard.split_right_id = next_id++;
      ++shard.epoch;
      epoch_bumps_.fetch_add(1, std::memory_order_relaxed);
      splitting_since_[shard.shard_id] = now;
      changed = true;
      log_->warn(
          "controller {}: shard {} epoch {}: splitting at token {} into shards {} and {}: "
          "sealing {}",
          options_.node_id, shard.shard_id, shard.epoch, at, shard.split_left_id,
          shard.split_right_id, shard.primary);
      continue;
    }

    // Started: is the primary sealed at this epoch, and have the live replicas its LSN?
    auto& since = splitting_since_.try_emplace(shard.shard_id, now).first->second;
    const auto& on_primary = copies_of(shard.primary);
    std::optional<uint64_t> sealed_lsn;
    if (on_primary.ok()) {
      auto p = on_primary->find(shard.shard_id);
      if (p != on_primary->end() && p->second.serving && p->second.sealed &&
          p->second.epoch == shard.epoch) {
        sealed_lsn = p->second.lsn;
      }
    }
    if (!sealed_lsn) {
      if (now - since > options_.split_timeout) {
        splits_abandoned_.fetch_add(1, std::memory_order_relaxed);
        log_->error(
            "controller {}: split of shard {} abandoned: {} did not seal it within {} ms; it "
            "takes writes again",
            options_.node_id, shard.shard_id, shard.primary, options_.split_timeout.count());
        shard.split_at = shard.split_left_id = shard.split_right_id = 0;
        ++shard.epoch;
        epoch_bumps_.fetch_add(1, std::memory_order_relaxed);
        changed = true;
        drop_request(shard.shard_id);
      }
      continue;
    }
    std::string lagging;
    for (const std::string& node : shard.replicas) {
      if (live_lease(node) == 0) continue;  // Dead or cut off: it bootstraps when back.
      const auto& hosted = copies_of(node);
      if (!hosted.ok()) continue;
      auto it = hosted->find(shard.shard_id);
      if (it == hosted->end() || !it->second.serving) continue;  // Nothing to cut from.
      if (it->second.lsn < *sealed_lsn) {
        lagging +=
            (lagging.empty() ? "" : ", ") + node + " at lsn " + std::to_string(it->second.lsn);
      }
    }
    if (!lagging.empty()) {
      auto& waiting = split_waiting_since_.try_emplace(shard.shard_id, now).first->second;
      if (now - waiting < options_.split_replica_patience) continue;
      log_->warn(
          "controller {}: split of shard {} goes on without {} (sealed at lsn {}): those copies "
          "will be bootstrapped",
          options_.node_id, shard.shard_id, lagging, *sealed_lsn);
    }
    // Finish: the children replace the parent, on the same nodes, cut at the sealed LSN.
    ShardInfo left = shard;
    left.shard_id = shard.split_left_id;
    left.range = TokenRange{shard.range.first, shard.split_at - 1};
    ShardInfo right = shard;
    right.shard_id = shard.split_right_id;
    right.range = TokenRange{shard.split_at, shard.range.last};
    for (ShardInfo* child : {&left, &right}) {
      child->epoch = shard.epoch + 1;
      child->placement_version = next_version;
      child->split_at = child->split_left_id = child->split_right_id = 0;
      child->split_from = shard.shard_id;
      child->split_lsn = *sealed_lsn;
      child->merge_left = child->merge_right = child->merge_left_lsn = child->merge_right_lsn = 0;
      children.push_back(*child);
    }
    finished.insert(shard.shard_id);
    splits_.fetch_add(1, std::memory_order_relaxed);
    changed = true;
    log_->warn(
        "controller {}: shard {} split at token {} and lsn {} into {} [{}, {}] and {} [{}, {}] "
        "({} ms after sealing began)",
        options_.node_id, shard.shard_id, shard.split_at, *sealed_lsn, left.shard_id,
        left.range.first, left.range.last, right.shard_id, right.range.first, right.range.last,
        std::chrono::duration_cast<std::chrono::milliseconds>(now - since).count());
    drop_request(shard.shard_id);
  }
  for (const auto& [shard_id, at] : requests) {
    if (!present.count(shard_id)) {
      log_->error("controller {}: split requested for unknown shard {} (dropped)", options_.node_id,
                  shard_id);
      drop_request(shard_id);
    }
  }
  if (!finished.empty()) {
    std::erase_if(shards, [&](const ShardInfo& s) { return finished.count(s.shard_id) > 0; });
    shards.insert(shards.end(), children.begin(), children.end());  // ShardMap::Make sorts.
  }
  return changed;
}

}  // namespace scrollback
