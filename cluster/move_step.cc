// The failover controller's move step (move.h, docs/resharding.md): start, switch, finish or
// abort the move of one copy of a shard.
#include <spdlog/logger.h>

#include <algorithm>
#include <sstream>

#include "scrollback/cluster/failover_controller.h"
#include "scrollback/cluster/move.h"

namespace scrollback {
namespace {

bool Holds(const ShardInfo& shard, const std::string& node) {
  return shard.primary == node ||
         std::find(shard.replicas.begin(), shard.replicas.end(), node) != shard.replicas.end();
}

void RemoveReplica(ShardInfo& shard, const std::string& node) { std::erase(shard.replicas, node); }

}  // namespace

bool FailoverController::MoveStep(
    std::vector<ShardInfo>& shards, const std::set<std::string>& changed_nodes,
    const std::function<int64_t(const std::string&)>& live_lease,
    const std::function<const Result<std::map<uint64_t, CopyState>>&(const std::string&)>&
        copies_of,
    const std::vector<KeyValue>& requested, std::chrono::steady_clock::time_point now) {
  std::map<uint64_t, std::string> requests;  // Shard id -> "<from> <to>" or "abort".
  auto drop_request = [&](uint64_t shard_id) {
    if (Status removed = metadata_->Delete(kMovePrefix + std::to_string(shard_id)); !removed.ok()) {
      errors_.fetch_add(1, std::memory_order_relaxed);
      log_->warn("controller {}: removing the move request of shard {} failed: {}",
                 options_.node_id, shard_id, removed.ToString());
    }
  };
  for (const KeyValue& kv : requested) {
    try {
      requests[std::stoull(kv.key.substr(std::string(kMovePrefix).size()))] = kv.value.value;
    } catch (const std::exception&) {
      log_->error("controller {}: move request {} names no shard (dropped)", options_.node_id,
                  kv.key);
      (void)metadata_->Delete(kv.key);
    }
  }

  bool changed = false;
  std::set<uint64_t> present;
  for (ShardInfo& shard : shards) {
    present.insert(shard.shard_id);
    auto request = requests.find(shard.shard_id);
    const bool abort = request != requests.end() && request->second == "abort";
    if (changed_nodes.count(shard.primary)) continue;  // Failing over: a later pass goes on.

    if (shard.move_to.empty()) {
      if (request == requests.end()) continue;
      if (abort) {  // Nothing (left) to abort.
        drop_request(shard.shard_id);
        continue;
      }
      std::istringstream words(request->second);
      std::string from, to;
      words >> from >> to;
      std::string refusal;
      if (from.empty() || to.empty()) {
        refusal = "the request '" + request->second + "' names no source and target";
      } else if (!Holds(shard, from)) {
        refusal = from + " holds no copy";
      } else if (Holds(shard, to)) {
        refusal = to + " holds a copy already";
      } else if (live_lease(to) == 0) {
        refusal = to + " is not live (no lease)";
      } else if (shard.split_at != 0 || !shard.switch_to.empty() || shard.merge_into != 0) {
        refusal = shard.split_at != 0     ? "a split is in progress"
                  : shard.merge_into != 0 ? "a merge is in progress"
                                          : "a switchover is in progress";
      }
      if (!refusal.empty()) {
        moves_aborted_.fetch_add(1, std::memory_order_relaxed);
        log_->error("controller {}: move of shard {} refused: {}", options_.node_id, shard.shard_id,
                    refusal);
        drop_request(shard.shard_id);
        continue;
      }
      shard.replicas.push_back(to);
      shard.move_from = from;
      shard.move_to = to;
      changed = true;
      log_->warn("controller {}: shard {}: moving the copy on {} to {}: {} joins as a replica",
                 options_.node_id, shard.shard_id, from, to, to);
      continue;
    }

    // In progress.
    if (abort) {
      if (shard.primary != shard.move_to && shard.switch_to.empty()) {
        RemoveReplica(shard, shard.move_to);
        log_->warn("controller {}: shard {}: move from {} to {} aborted: {}'s copy removed",
                   options_.node_id, shard.shard_id, shard.move_from, shard.move_to, shard.move_to);
        shard.move_from.clear();
        shard.move_to.clear();
        moves_aborted_.fetch_add(1, std::memory_order_relaxed);
        changed = true;
        // The "abort" request stays until a later pass finds no move left (then it is dropped,
        // above): if this pass's map loses its compare-and-swap, the abort is not lost.
        continue;
      }
      // Switched over already: only the finish is left; the abort is not honoured.
    }
    if (!shard.switch_to.empty()) continue;             // The switchover step carries it on.
    const auto& on_primary = copies_of(shard.primary);  // The primary first: see move.h.
    const auto& on_target = copies_of(shard.move_to);
    bool caught_up = false;
    uint64_t primary_lsn = 0, target_lsn = 0;
    if (on_primary.ok() && on_target.ok()) {
      auto p = on_primary->find(shard.shard_id);
      auto t = on_target->find(shard.shard_id);
      if (p != on_primary->end() && t != on_target->end() && p->second.serving &&
          t->second.serving) {
        primary_lsn = p->second.lsn;
        target_lsn = t->second.lsn;
        caught_up = target_lsn >= primary_lsn;
      }
    }
    if (!caught_up) continue;
    if (shard.primary == shard.move_from) {
      // The moved copy is the primary: a planned switchover to the new copy first.
      if (live_lease(shard.move_to) == 0) continue;
      shard.switch_to = shard.move_to;
      ++shard.epoch;
      epoch_bumps_.fetch_add(1, std::memory_order_relaxed);
      switching_since_[shard.shard_id] = now;
      changed = true;
      log_->warn(
          "controller {}: shard {} epoch {}: the move's new copy on {} has caught up (lsn {}): "
          "switching the primary over from {}",
          options_.node_id, shard.shard_id, shard.epoch, shard.move_to, target_lsn, shard.primary);
      continue;
    }
    // Finish: the old copy leaves.
    RemoveReplica(shard, shard.move_from);
    log_->warn(
        "controller {}: shard {}: moved the copy on {} to {} (caught up at lsn {}): {}'s copy "
        "removed",
        options_.node_id, shard.shard_id, shard.move_from, shard.move_to, target_lsn,
        shard.move_from);
    shard.move_from.clear();
    shard.move_to.clear();
    moves_.fetch_add(1, std::memory_order_relaxed);
    changed = true;
    drop_request(shard.shard_id);
  }
  for (const auto& [shard_id, what] : requests) {
    if (!present.count(shard_id)) {
      log_->error("controller {}: move requested for unknown shard {} (dropped)", options_.node_id,
                  shard_id);
      drop_request(shard_id);
    }
  }
  return changed;
}

}  // namespace scrollback
