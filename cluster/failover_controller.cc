#include "scrollback/cluster/failover_controller.h"

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <pthread.h>
#include <spdlog/logger.h>

#include <algorithm>
#include <set>

#include "scrollback/cluster/merge.h"
#include "scrollback/cluster/move.h"
#include "scrollback/cluster/node_lease.h"
#include "scrollback/cluster/shard_map_store.h"
#include "scrollback/cluster/split.h"
#include "scrollback/cluster/switchover.h"
#include "scrollback/schema/chatstore.capnp.h"

namespace scrollback {

namespace s = ::scrollback::schema;

// Node.shardStats over Cap'n Proto, one short-lived connection per node and pass, on the
// controller's thread (which owns the KJ event loop).
class FailoverController::Probe {
 public:
  explicit Probe(std::chrono::milliseconds timeout)
      : io_(kj::setupAsyncIo()), timeout_(timeout.count() * kj::MILLISECONDS) {}

  // The copies `address` hosts, by shard id.
  Result<std::map<uint64_t, CopyState>> Copies(const std::string& address) {
    try {
      // The loop sleeps between passes and its timer reads the clock only when the loop runs:
      // let it catch up first, or the timeout below would start from a stale "now".
      io_.waitScope.poll();
      auto& timer = io_.provider->getTimer();
      auto addr = io_.provider->getNetwork().parseAddress(address).wait(io_.waitScope);
      auto stream = timer.timeoutAfter(timeout_, addr->connect()).wait(io_.waitScope);
      capnp::TwoPartyClient rpc(*stream);
      auto node = rpc.bootstrap().castAs<s::Node>();
      auto reply =
          timer.timeoutAfter(timeout_, node.shardStatsRequest().send()).wait(io_.waitScope);
      std::map<uint64_t, CopyState> out;
      for (auto st : reply.getStats()) {
        CopyState& copy = out[st.getShardId()];
        copy.serving = st.getState() == s::ShardState::SERVING;
        copy.opening = st.getState() == s::ShardState::OPENING;
        copy.lsn = st.getLatestSequence();
        copy.epoch = st.getEpoch();
        copy.sealed = st.getSealed();
        copy.load.shard_id = st.getShardId();
        copy.load.ops_per_s = st.getReadOpsPerS() + st.getWriteOpsPerS();
        copy.load.size_bytes = st.getLiveDataBytes() + st.getMemtableBytes();
        for (double ops : st.getLoadBuckets()) copy.load.bucket_ops.push_back(ops);
        for (auto hot : st.getHotTokens()) {
          copy.load.hot_tokens.push_back(HotToken{hot.getToken(), hot.getShare()});
        }
      }
      return out;
    } catch (const kj::Exception& e) {
      return Status::Unavailable(address + ": " + e.getDescription().cStr());
    }
  }

 private:
  kj::AsyncIoContext io_;
  kj::Duration timeout_;
};

std::unique_ptr<FailoverController> FailoverController::Start(
    std::shared_ptr<MetadataStore> metadata, FailoverControllerOptions options) {
  std::unique_ptr<FailoverController> controller(
      new FailoverController(std::move(metadata), std::move(options)));
  FailoverController* raw = controller.get();
  // A primary lease that changes (gone, or granted anew) starts a pass at once.
  controller->watch_ = controller->metadata_->Watch(
      kPrimaryLeasesPrefix, [raw](const std::string&, const std::optional<VersionedValue>&) {
        {
          std::lock_guard lock(raw->mu_);
          raw->wake_ = true;
        }
        raw->cv_.notify_all();
      });
  controller->thread_ = std::thread([raw] { raw->Loop(); });
  return controller;
}

FailoverController::FailoverController(std::shared_ptr<MetadataStore> metadata,
                                       FailoverControllerOptions options)
    : metadata_(std::move(metadata)), options_(std::move(options)), log_(OrNull(options_.logger)) {}

FailoverController::~FailoverController() {
  watch_.reset();
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void FailoverController::Loop() {
  pthread_setname_np(pthread_self(), "sb-controller");
  Probe probe(options_.call_timeout);
  for (;;) {
    {
      std::unique_lock lock(mu_);
      // While a switchover, split or move is in progress (writes may be paused), passes come
      // every 20 ms: each of their steps waits for the next pass.
      const auto wait = busy_ ? std::min<std::chrono::milliseconds>(options_.interval,
                                                                    std::chrono::milliseconds(20))
                              : options_.interval;
      cv_.wait_for(lock, wait, [this] { return stopping_ || wake_; });
      if (stopping_) break;
      wake_ = false;
    }
    if (!Campaign()) continue;
    passes_.fetch_add(1, std::memory_order_relaxed);
    auto published = Pass(probe);
    if (!published.ok()) {
      errors_.fetch_add(1, std::memory_order_relaxed);
      log_->warn("controller {}: failover pass failed (retrying): {}", options_.node_id,
                 published.status().ToString());
    }
    const auto now = std::chrono::steady_clock::now();
    if (options_.rebalance_interval.count() > 0 && !busy_ &&
        now - last_rebalance_ >= options_.rebalance_interval) {
      last_rebalance_ = now;
      auto filed = RebalanceRound(probe);
      if (!filed.ok()) {
        errors_.fetch_add(1, std::memory_order_relaxed);
        log_->warn("controller {}: rebalance round failed: {}", options_.node_id,
                   filed.status().ToString());
      }
    }
  }
  if (leading_.exchange(false) && leader_lease_ != 0) {
    // Another candidate takes over at once rather than after the lease runs out.
    if (Status revoked = metadata_->RevokeLease(leader_lease_); !revoked.ok()) {
      log_->warn("controller {}: revoking the leader lease failed (it expires by itself): {}",
                 options_.node_id, revoked.ToString());
    }
  }
}

bool FailoverController::Campaign() {
  if (leader_lease_ != 0) {
    Status kept = metadata_->KeepAlive(leader_lease_);
    if (kept.ok()) return leading_.load();
    if (kept.code() != ErrorCode::kNotFound) {
      // The store did not answer: nothing can be published now anyway.
      errors_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    if (leading_.exchange(false)) {
      log_->warn("controller {}: leadership lost (lease expired)", options_.node_id);
    }
    leader_lease_ = 0;
  }
  // Someone leads (the key lives under the leader's lease): one read, not a campaign.
  auto current = metadata_->Get(kControllerKey);
  if (!current.ok() || *current) return false;
  auto lease = metadata_->GrantLease(options_.leader_ttl);
  if (!lease.ok()) {
    errors_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  auto won = metadata_->CompareAndSwap(kControllerKey, 0, options_.node_id, *lease);
  if (!won.ok()) {
    (void)metadata_->RevokeLease(*lease);  // Someone else leads; ours is not needed.
    if (won.status().code() != ErrorCode::kFailedPrecondition) {
      errors_.fetch_add(1, std::memory_order_relaxed);
    }
    return false;
  }
  leader_lease_ = *lease;
  leading_.store(true);
  log_->info("controller {}: leading (lease {})", options_.node_id, *lease);
  return true;
}

Result<bool> FailoverController::Pass(Probe& probe) {
  if (!maps_) {
    auto started = ShardMapWatcher::Start(metadata_, log_);
    if (!started.ok()) {
      if (started.status().code() == ErrorCode::kNotFound) return false;  // No map yet.
      return started.status();
    }
    maps_ = std::move(started).value();
  }
  // The map as the watch has it: a moment stale at worst, and then the publish below fails its
  // compare-and-swap and the next pass decides afresh.
  const std::shared_ptr<const StoredShardMap> stored = maps_->Current();
  const ShardMap* map = &stored->map;
  auto listed = metadata_->List(kPrimaryLeasesPrefix);
  if (!listed.ok()) return listed.status();
  std::map<std::string, int64_t> live;  // Node id -> its live primary lease.
  for (const KeyValue& kv : *listed) {
    const std::string node = kv.key.substr(std::string(kPrimaryLeasesPrefix).size());
    try {
      live[node] = std::stoll(kv.value.value);
    } catch (const std::exception&) {
      log_->error("controller {}: {} holds '{}', not a lease id (ignored)", options_.node_id,
                  kv.key, kv.value.value);
    }
  }
  auto live_lease = [&](const std::string& node) {
    auto it = live.find(node);
    return it == live.end() ? int64_t{0} : it->second;
  };
  std::set<std::string> changed_nodes;  // Nodes whose recorded lease is not their live one.
  for (const NodeInfo& node : map->nodes()) {
    if (node.lease_id != live_lease(node.node_id)) changed_nodes.insert(node.node_id);
  }
  auto requested = metadata_->List(kSwitchoverPrefix);
  if (!requested.ok()) return requested.status();
  auto split_requests = metadata_->List(kSplitPrefix);
  if (!split_requests.ok()) return split_requests.status();
  auto move_requests = metadata_->List(kMovePrefix);
  if (!move_requests.ok()) return move_requests.status();
  auto merge_requests = metadata_->List(kMergePrefix);
  if (!merge_requests.ok()) return merge_requests.status();
  bool switching = !requested->empty() || !split_requests->empty() || !move_requests->empty() ||
                   !merge_requests->empty();
  for (const ShardInfo& shard : map->shards()) {
    switching = switching || !shard.switch_to.empty() || shard.split_at != 0 ||
                !shard.move_to.empty() || shard.merge_into != 0;
  }
  busy_ = switching;
  if (changed_nodes.empty()) waiting_since_.clear();
  if (changed_nodes.empty() && !switching) return false;

  // The copies of every live node (asked once per pass).
  std::map<std::string, Result<std::map<uint64_t, CopyState>>> copies;
  auto copies_of = [&](const std::string& node_id) -> const Result<std::map<uint64_t, CopyState>>& {
    auto it = copies.find(node_id);
    if (it != copies.end()) return it->second;
    const NodeInfo* info = map->FindNode(node_id);
    Result<std::map<uint64_t, CopyState>> got =
        info == nullptr || info->address.empty()
            ? Result<std::map<uint64_t, CopyState>>(
                  Status::Unavailable(node_id + " has no address"))
            : probe.Copies(info->address);
    return copies.emplace(node_id, std::move(got)).first->second;
  };

  std::vector<ShardInfo> shards = map->shards();
  std::set<std::string> undecided;  // Changed nodes with a primary shard left for a later pass.
  struct Decision {
    ShardInfo* shard;
    std::string primary;              // The copy that leads at the next epoch.
    std::vector<std::string> copies;  // Every copy: the old primary first, then the replicas.
    std::string considered;           // For the log line.
  };
  std::vector<Decision> decisions;
  bool changed = false;
  const auto now = std::chrono::steady_clock::now();
  for (ShardInfo& shard : shards) {
    if (!changed_nodes.count(shard.primary)) continue;
    std::vector<std::string> candidates;  // Old primary first: it keeps the shard on a tie.
    candidates.push_back(shard.primary);
    candidates.insert(candidates.end(), shard.replicas.begin(), shard.replicas.end());
    std::string best;
    uint64_t best_lsn = 0;
    std::string wait_reason;
    std::string considered;
    for (const std::string& node : candidates) {
      if (live_lease(node) == 0) continue;  // Dead or cut off: it cannot take writes.
      const auto& hosted = copies_of(node);
      if (!hosted.ok()) {
        wait_reason =
            node + " holds a lease but did not answer (" + hosted.status().ToString() + ")";
        break;
      }
      auto it = hosted->find(shard.shard_id);
      if (it == hosted->end()) continue;
      if (it->second.opening) {
        auto& since = waiting_since_.try_emplace(shard.shard_id, now).first->second;
        if (now - since < options_.opening_patience) {
          wait_reason = node + "'s copy is still opening";
          break;
        }
        continue;  // Waited long enough: decided without it.
      }
      if (!it->second.serving) continue;  // Bootstrapping or refused: it has nothing acked.
      considered +=
          (considered.empty() ? "" : ", ") + node + " at lsn " + std::to_string(it->second.lsn);
      if (best.empty() || it->second.lsn > best_lsn) {
        best = node;
        best_lsn = it->second.lsn;
      }
    }
    if (!wait_reason.empty()) {
      deferred_.fetch_add(1, std::memory_order_relaxed);
      log_->info("controller {}: shard {} failover waits: {}", options_.node_id, shard.shard_id,
                 wait_reason);
      undecided.insert(shard.primary);
      continue;
    }
    waiting_since_.erase(shard.shard_id);
    decisions.push_back({&shard, best.empty() ? shard.primary : best, std::move(candidates),
                         std::move(considered)});
  }
  // Applied per node, all of its primaries at once: a node with a shard left undecided keeps
  // every epoch as it is (it stays fenced), rather than having its other shards' epochs bumped
  // again on every pass until the last one is decided.
  for (Decision& d : decisions) {
    ShardInfo& shard = *d.shard;
    if (undecided.count(shard.primary)) continue;
    shard.switch_to.clear();  // A switchover in progress is overtaken by the failover.
    const std::string old_primary = shard.primary;
    const uint64_t old_epoch = shard.epoch;
    if (d.primary != old_primary) {
      std::vector<std::string> replicas;
      for (const std::string& node : d.copies) {
        if (node != d.primary) replicas.push_back(node);
      }
      shard.primary = d.primary;
      shard.replicas = std::move(replicas);
      failovers_.fetch_add(1, std::memory_order_relaxed);
    }
    ++shard.epoch;
    epoch_bumps_.fetch_add(1, std::memory_order_relaxed);
    changed = true;
    // A failover is worth a warning; a primary kept under a new lease (start-up, a restart
    // before anyone took over) is routine.
    log_->log(
        shard.primary != old_primary ? spdlog::level::warn : spdlog::level::info,
        "controller {}: shard {} epoch {} -> {}: primary {} (lease {}) -> {} [{}]",
        options_.node_id, shard.shard_id, old_epoch, shard.epoch, old_primary,
        live_lease(old_primary) == 0 ? "gone" : "granted anew", shard.primary,
        d.considered.empty() ? "no live copy answered: kept until its node is back" : d.considered);
  }
  // Planned switchovers: requested ones start (writes pause at epoch + 1), started ones finish
  // once the target has everything (epoch + 2), or are abandoned after switchover_timeout.
  std::map<uint64_t, std::string> requests;  // Shard id -> requested target ("" = any).
  for (const KeyValue& kv : *requested) {
    const std::string id = kv.key.substr(std::string(kSwitchoverPrefix).size());
    uint64_t shard_id = 0;
    try {
      shard_id = std::stoull(id);
    } catch (const std::exception&) {
      log_->error("controller {}: {} names no shard (dropped)", options_.node_id, kv.key);
      (void)metadata_->Delete(kv.key);
      continue;
    }
    requests[shard_id] = kv.value.value;
  }
  auto finish_request = [&](uint64_t shard_id) {
    switching_since_.erase(shard_id);
    if (Status removed = metadata_->Delete(kSwitchoverPrefix + std::to_string(shard_id));
        !removed.ok()) {
      errors_.fetch_add(1, std::memory_order_relaxed);
      log_->warn("controller {}: removing the switchover request of shard {} failed: {}",
                 options_.node_id, shard_id, removed.ToString());
    }
  };
  for (auto& [shard_id, target] : requests) {
    if (std::none_of(shards.begin(), shards.end(),
                     [&](const ShardInfo& s) { return s.shard_id == shard_id; })) {
      log_->error("controller {}: switchover requested for unknown shard {} (dropped)",
                  options_.node_id, shard_id);
      finish_request(shard_id);
    }
  }
  for (ShardInfo& shard : shards) {
    auto request = requests.find(shard.shard_id);
    if (changed_nodes.count(shard.primary)) continue;  // Failing over: decided above.
    if (shard.switch_to.empty() && request == requests.end()) continue;
    if (shard.switch_to.empty()) {
      // Start: pick the target, pause writes at a new epoch.
      std::string target = request->second;
      if (target.empty()) {
        uint64_t best_lsn = 0;
        for (const std::string& node : shard.replicas) {
          if (live_lease(node) == 0) continue;
          const auto& hosted = copies_of(node);
          if (!hosted.ok()) continue;
          auto it = hosted->find(shard.shard_id);
          if (it == hosted->end() || !it->second.serving) continue;
          if (target.empty() || it->second.lsn > best_lsn) {
            target = node;
            best_lsn = it->second.lsn;
          }
        }
      }
      const bool is_replica =
          std::find(shard.replicas.begin(), shard.replicas.end(), target) != shard.replicas.end();
      // A shard splitting, merging or moving changes its primary only through that operation
      // (a map with both would not validate, and every later pass would fail on it).
      const bool busy = shard.split_at != 0 || shard.merge_into != 0 || !shard.move_to.empty();
      if (target.empty() || !is_replica || live_lease(target) == 0 ||
          live_lease(shard.primary) == 0 || busy) {
        switchovers_abandoned_.fetch_add(1, std::memory_order_relaxed);
        log_->error(
            "controller {}: switchover of shard {} from {} to '{}' refused: the target must be "
            "a live replica, the primary live, and the shard not splitting, merging or moving",
            options_.node_id, shard.shard_id, shard.primary, target);
        finish_request(shard.shard_id);
        continue;
      }
      shard.switch_to = target;
      ++shard.epoch;
      epoch_bumps_.fetch_add(1, std::memory_order_relaxed);
      changed = true;
      switching_since_[shard.shard_id] = now;
      log_->warn("controller {}: shard {} epoch {}: switching over from {} to {}: writes paused",
                 options_.node_id, shard.shard_id, shard.epoch, shard.primary, shard.switch_to);
      continue;
    }
    // Started: is the target at the primary's LSN, with the pause applied on the primary?
    auto& since = switching_since_.try_emplace(shard.shard_id, now).first->second;
    const auto& on_primary = copies_of(shard.primary);
    const auto& on_target = copies_of(shard.switch_to);
    bool ready = false;
    uint64_t primary_lsn = 0, target_lsn = 0;
    if (on_primary.ok() && on_target.ok()) {
      auto p = on_primary->find(shard.shard_id);
      auto t = on_target->find(shard.shard_id);
      if (p != on_primary->end() && t != on_target->end() && p->second.serving &&
          t->second.serving && p->second.epoch == shard.epoch) {
        primary_lsn = p->second.lsn;
        target_lsn = t->second.lsn;
        ready = target_lsn >= primary_lsn;
      }
    }
    if (ready) {
      const std::string old_primary = shard.primary;
      std::vector<std::string> replicas = {old_primary};
      for (const std::string& node : shard.replicas) {
        if (node != shard.switch_to) replicas.push_back(node);
      }
      shard.primary = shard.switch_to;
      shard.replicas = std::move(replicas);
      shard.switch_to.clear();
      ++shard.epoch;
      epoch_bumps_.fetch_add(1, std::memory_order_relaxed);
      switchovers_.fetch_add(1, std::memory_order_relaxed);
      changed = true;
      log_->warn(
          "controller {}: shard {} epoch {}: switched over from {} to {} at lsn {} ({} ms after "
          "writes paused)",
          options_.node_id, shard.shard_id, shard.epoch, old_primary, shard.primary, target_lsn,
          std::chrono::duration_cast<std::chrono::milliseconds>(now - since).count());
      finish_request(shard.shard_id);
    } else if (now - since > options_.switchover_timeout) {
      switchovers_abandoned_.fetch_add(1, std::memory_order_relaxed);
      log_->error(
          "controller {}: switchover of shard {} to {} abandoned after {} ms (target at lsn {}, "
          "primary at {}): {} takes writes again",
          options_.node_id, shard.shard_id, shard.switch_to, options_.switchover_timeout.count(),
          target_lsn, primary_lsn, shard.primary);
      shard.switch_to.clear();
      ++shard.epoch;
      epoch_bumps_.fetch_add(1, std::memory_order_relaxed);
      changed = true;
      finish_request(shard.shard_id);
    }
  }
  if (SplitStep(shards, map->version() + 1, changed_nodes, live_lease, copies_of, *split_requests,
                now)) {
    changed = true;
  }
  if (MoveStep(shards, changed_nodes, live_lease, copies_of, *move_requests, now)) changed = true;
  if (MergeStep(shards, map->version() + 1, changed_nodes, live_lease, copies_of, *merge_requests,
                now)) {
    changed = true;
  }
  std::vector<NodeInfo> nodes = map->nodes();
  for (NodeInfo& node : nodes) {
    if (!changed_nodes.count(node.node_id) || undecided.count(node.node_id)) continue;
    node.lease_id = live_lease(node.node_id);
    changed = true;
  }
  if (!changed) return false;
  auto next = ShardMap::Make(map->version() + 1, std::move(shards), std::move(nodes));
  if (!next.ok()) return next.status();
  // A change larger than one commit is published a part at a time, one per pass.
  auto step = FirstStepOfChange(*map, *next, metadata_->max_writes_per_commit());
  if (!step.ok()) return step.status();
  if (!(step->shards() == next->shards() && step->nodes() == next->nodes())) {
    partial_changes_.fetch_add(1, std::memory_order_relaxed);
    log_->warn(
        "controller {}: this pass's change of the shard map needs more writes than one "
        "commit takes; publishing part of it now, the rest on the next passes",
        options_.node_id);
    busy_ = true;
    next = std::move(step);
  }
  auto published = PublishShardMap(*metadata_, *stored, *next);
  if (!published.ok()) {
    // Someone changed the map first: decided afresh on the next pass.
    if (published.status().code() == ErrorCode::kFailedPrecondition) return false;
    return published.status();
  }
  log_->info("controller {}: shard map version {} published", options_.node_id, next->version());
  return true;
}

Result<int> FailoverController::RebalanceRound(Probe& probe) {
  const std::shared_ptr<const StoredShardMap> stored = maps_ ? maps_->Current() : nullptr;
  if (!stored) return 0;
  const ShardMap* map = &stored->map;
  // The load of every shard, as its primary measures it. A primary that does not answer makes
  // the round wait: a plan from partial figures would pile load onto the silent node.
  std::vector<ShardLoad> loads;
  std::set<std::string> asked;
  for (const ShardInfo& shard : map->shards()) {
    if (!asked.insert(shard.primary).second) continue;
    const NodeInfo* node = map->FindNode(shard.primary);
    if (node == nullptr || node->address.empty()) return 0;
    auto copies = probe.Copies(node->address);
    if (!copies.ok()) return 0;
    for (const auto& [id, copy] : *copies) {
      const ShardInfo* info = map->FindShard(id);
      if (info != nullptr && info->primary == shard.primary && copy.serving) {
        loads.push_back(copy.load);
      }
    }
  }
  rebalance_rounds_.fetch_add(1, std::memory_order_relaxed);
  const RebalancePlan plan = PlanRebalance(*map, loads, options_.planner);
  if (plan.empty()) return 0;
  int filed = 0;
  std::set<uint64_t> split;  // One split per shard per round: the next round sees the children.
  auto file = [&](const std::string& key, const std::string& value, const std::string& what) {
    auto put = metadata_->CompareAndSwap(key, 0, value);
    if (put.ok()) {
      ++filed;
      rebalance_requests_.fetch_add(1, std::memory_order_relaxed);
      log_->warn("controller {}: rebalancing (max/mean {:.2f} -> {:.2f}): {}", options_.node_id,
                 plan.max_over_mean_before, plan.max_over_mean_after, what);
    }
  };
  for (const PlannedSplit& s : plan.splits) {
    if (!split.insert(s.shard_id).second) continue;
    file(kSplitPrefix + std::to_string(s.shard_id), std::to_string(s.at_token),
         "split shard " + std::to_string(s.shard_id) + " at " + std::to_string(s.at_token) + " (" +
             s.reason + ")");
  }
  for (const PlannedMove& m : plan.moves) {
    if (m.switchover) {
      file(kSwitchoverPrefix + std::to_string(m.shard_id), m.to,
           "switch shard " + std::to_string(m.shard_id) + " over to " + m.to);
    } else {
      file(kMovePrefix + std::to_string(m.shard_id), m.from + " " + m.to,
           "move shard " + std::to_string(m.shard_id) + " from " + m.from + " to " + m.to);
    }
  }
  return filed;
}

void FailoverController::RenderMetrics(std::string* out) const {
  auto counter = [out](const char* name, const char* help, uint64_t value) {
    *out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n" + name +
            " " + std::to_string(value) + "\n";
  };
  *out +=
      "# HELP scrollback_controller_leading 1 while this node's failover controller leads.\n"
      "# TYPE scrollback_controller_leading gauge\nscrollback_controller_leading " +
      std::string(leading_.load() ? "1" : "0") + "\n";
  counter("scrollback_controller_passes_total", "Failover passes run while leading.",
          passes_.load());
  counter("scrollback_controller_failovers_total",
          "Shards whose primary the controller replaced (logged).", failovers_.load());
  counter("scrollback_controller_epoch_bumps_total",
          "Epochs the controller granted (failovers, and primaries kept after a new lease).",
          epoch_bumps_.load());
  counter("scrollback_controller_deferred_total",
          "Shard failovers put off to a later pass (a live copy opening or not answering).",
          deferred_.load());
  counter("scrollback_controller_partial_map_changes_total",
          "Passes that published only part of their shard map change: it needed more writes "
          "than one metadata commit takes (logged).",
          partial_changes_.load());
  counter("scrollback_controller_switchovers_total",
          "Planned switchovers completed (a primary moved with writes paused, no loss).",
          switchovers_.load());
  counter("scrollback_controller_switchovers_abandoned_total",
          "Planned switchovers refused or given up (logged).", switchovers_abandoned_.load());
  counter("scrollback_controller_splits_total",
          "Splits and merges completed (a shard replaced by its two children, or two by one).",
          splits_.load());
  counter("scrollback_controller_splits_abandoned_total",
          "Splits and merges refused or given up (logged).", splits_abandoned_.load());
  counter("scrollback_controller_moves_total",
          "Moves of a shard copy completed (new copy caught up, old copy removed).", moves_.load());
  counter("scrollback_controller_moves_aborted_total", "Moves refused or aborted (logged).",
          moves_aborted_.load());
  counter("scrollback_controller_rebalance_rounds_total",
          "Rounds of the continuous rebalancer (rebalance_interval).", rebalance_rounds_.load());
  counter("scrollback_controller_rebalance_requests_total",
          "Splits, switchovers and moves the rebalancer filed (logged).",
          rebalance_requests_.load());
  counter("scrollback_controller_errors_total",
          "Passes or campaigns that failed (metadata store errors; logged).", errors_.load());
}

}  // namespace scrollback
