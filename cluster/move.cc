#include "scrollback/cluster/move.h"

#include <algorithm>
#include <map>
#include <optional>
#include <thread>

#include "scrollback/cluster/shard_map_store.h"

namespace scrollback {
namespace {

constexpr auto kPoll = std::chrono::milliseconds(100);

bool Holds(const ShardInfo& shard, const std::string& node) {
  return shard.primary == node ||
         std::find(shard.replicas.begin(), shard.replicas.end(), node) != shard.replicas.end();
}

// Applies `edit` to the stored map (retried while others change it first).
template <typename Edit>
Status EditMap(MetadataStore& metadata, Edit&& edit) {
  return EditShardMap(metadata, edit).status();
}

}  // namespace

const char* MovePhaseName(MovePhase phase) {
  switch (phase) {
    case MovePhase::kRequested:
      return "requested";
    case MovePhase::kCatchingUp:
      return "copying and catching up";
    case MovePhase::kSwitching:
      return "switching the primary over";
    case MovePhase::kDone:
      return "done";
  }
  return "?";
}

Result<MoveResult> MoveCopy(MetadataStore& metadata, uint64_t shard_id, const std::string& from,
                            const std::string& to, std::chrono::milliseconds timeout,
                            const std::function<void(MovePhase)>& progress) {
  const auto started = std::chrono::steady_clock::now();
  auto map = ReadShardMap(metadata);
  if (!map.ok()) return map.status();
  const ShardInfo* shard = map->FindShard(shard_id);
  if (shard == nullptr) {
    return Status::InvalidArgument("shard", "no shard " + std::to_string(shard_id));
  }
  if (map->FindNode(to) == nullptr) {
    return Status::InvalidArgument("to", "the shard map has no node " + to);
  }
  if (!Holds(*shard, from)) {
    return Status::InvalidArgument("from",
                                   from + " holds no copy of shard " + std::to_string(shard_id));
  }
  if (Holds(*shard, to)) {
    return Status::InvalidArgument(
        "to", to + " already holds a copy of shard " + std::to_string(shard_id));
  }
  if (!shard->move_to.empty() || shard->split_at != 0 || !shard->switch_to.empty()) {
    return Status::FailedPrecondition("shard " + std::to_string(shard_id) + " is already " +
                                      (!shard->move_to.empty() ? "moving"
                                       : shard->split_at != 0  ? "splitting"
                                                               : "switching over"));
  }
  MoveResult result{shard_id, from, to, shard->primary == from, {}};
  const std::string key = kMovePrefix + std::to_string(shard_id);
  auto put = metadata.CompareAndSwap(key, 0, from + " " + to);
  if (!put.ok()) {
    if (put.status().code() == ErrorCode::kFailedPrecondition) {
      return Status::FailedPrecondition("a move of shard " + std::to_string(shard_id) +
                                        " is already requested");
    }
    return put.status();
  }
  const auto deadline = started + timeout;
  bool seen = false;  // The map recorded this move at least once.
  while (std::chrono::steady_clock::now() < deadline) {
    auto now_map = ReadShardMap(metadata);
    if (now_map.ok()) {
      const ShardInfo* now = now_map->FindShard(shard_id);
      if (now == nullptr) {
        return Status::FailedPrecondition("shard " + std::to_string(shard_id) +
                                          " left the map during the move (split or merged)");
      }
      const bool recorded = now->move_from == from && now->move_to == to;
      seen = seen || recorded;
      if (!recorded && Holds(*now, to) && !Holds(*now, from)) {
        result.took = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::steady_clock::now() - started);
        if (progress) progress(MovePhase::kDone);
        return result;
      }
      auto pending = metadata.Get(key);
      if (pending.ok() && !*pending && !recorded) {
        return Status::FailedPrecondition(
            "the move of shard " + std::to_string(shard_id) + " from " + from + " to " + to +
            (seen ? " was aborted" : " was refused") +
            ": the old placement serves on (the controller's log says why)");
      }
      if (progress) {
        progress(!recorded                 ? MovePhase::kRequested
                 : !now->switch_to.empty() ? MovePhase::kSwitching
                                           : MovePhase::kCatchingUp);
      }
    }
    std::this_thread::sleep_for(kPoll);
  }
  return Status::Unavailable("the move of shard " + std::to_string(shard_id) +
                             " did not finish in time (it goes on; abort it to roll back)");
}

Status AbortMove(MetadataStore& metadata, uint64_t shard_id, std::chrono::milliseconds timeout) {
  auto map = ReadShardMap(metadata);
  if (!map.ok()) return map.status();
  const ShardInfo* shard = map->FindShard(shard_id);
  if (shard == nullptr)
    return Status::InvalidArgument("shard", "no shard " + std::to_string(shard_id));
  if (shard->move_to.empty()) {
    return Status::FailedPrecondition("shard " + std::to_string(shard_id) + " is not moving");
  }
  if (shard->primary == shard->move_to || !shard->switch_to.empty()) {
    return Status::FailedPrecondition("shard " + std::to_string(shard_id) +
                                      " has switched over to its new copy already: the move "
                                      "can only finish");
  }
  auto put = metadata.Put(kMovePrefix + std::to_string(shard_id), "abort");
  if (!put.ok()) return put.status();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto now_map = ReadShardMap(metadata);
    if (now_map.ok()) {
      const ShardInfo* now = now_map->FindShard(shard_id);
      if (now == nullptr || now->move_to.empty()) {
        // Rolled back: the source still holds its copy. Else the move finished first.
        if (now == nullptr || !Holds(*now, shard->move_from) || Holds(*now, shard->move_to)) {
          return Status::FailedPrecondition("the move of shard " + std::to_string(shard_id) +
                                            " finished before the abort");
        }
        return Status::Ok();
      }
    }
    std::this_thread::sleep_for(kPoll);
  }
  return Status::Unavailable("the abort of shard " + std::to_string(shard_id) +
                             "'s move did not finish in time");
}

Status AddNodeToMap(MetadataStore& metadata, const std::string& node_id,
                    const std::string& address) {
  if (node_id.empty()) return Status::InvalidArgument("node_id", "a node needs an id");
  return EditMap(metadata, [&](std::vector<ShardInfo>&, std::vector<NodeInfo>& nodes) {
    for (const NodeInfo& node : nodes) {
      if (node.node_id == node_id) {
        return Status::AlreadyExists("the shard map names node " + node_id + " already");
      }
    }
    nodes.push_back(NodeInfo{node_id, address, "", 0});
    return Status::Ok();
  });
}

Status RemoveNodeFromMap(MetadataStore& metadata, const std::string& node_id) {
  return EditMap(metadata, [&](std::vector<ShardInfo>& shards, std::vector<NodeInfo>& nodes) {
    auto it = std::find_if(nodes.begin(), nodes.end(),
                           [&](const NodeInfo& n) { return n.node_id == node_id; });
    if (it == nodes.end()) return Status::NotFound("the shard map has no node " + node_id);
    size_t held = 0;
    for (const ShardInfo& shard : shards) held += Holds(shard, node_id) ? 1 : 0;
    if (held > 0) {
      return Status::FailedPrecondition(node_id + " still holds copies of " + std::to_string(held) +
                                        " shards: drain it first");
    }
    nodes.erase(it);
    return Status::Ok();
  });
}

Result<std::vector<MoveResult>> DrainCopies(MetadataStore& metadata, const std::string& node_id,
                                            std::chrono::milliseconds timeout_per_shard,
                                            const std::function<void(const MoveResult&)>& done) {
  std::vector<MoveResult> moved;
  for (;;) {
    auto map = ReadShardMap(metadata);
    if (!map.ok()) return map.status();
    if (map->FindNode(node_id) == nullptr) {
      return Status::InvalidArgument("node", "the shard map has no node " + node_id);
    }
    const ShardInfo* next = nullptr;
    for (const ShardInfo& shard : map->shards()) {
      if (Holds(shard, node_id)) {
        next = &shard;
        break;
      }
    }
    if (next == nullptr) return moved;
    std::map<std::string, size_t> copies;  // Per node, of every shard.
    for (const NodeInfo& node : map->nodes()) copies[node.node_id] = 0;
    for (const ShardInfo& shard : map->shards()) {
      ++copies[shard.primary];
      for (const std::string& r : shard.replicas) ++copies[r];
    }
    std::optional<std::string> to;
    for (const auto& [node, count] : copies) {  // In id order: ties go to the lowest id.
      if (node == node_id || Holds(*next, node) || map->FindNode(node)->address.empty()) continue;
      if (!to || count < copies[*to]) to = node;
    }
    if (!to) {
      return Status::FailedPrecondition("shard " + std::to_string(next->shard_id) +
                                        " has a copy on every other node: nowhere to move " +
                                        node_id + "'s");
    }
    auto one = MoveCopy(metadata, next->shard_id, node_id, *to, timeout_per_shard);
    if (!one.ok()) return one.status();
    if (done) done(*one);
    moved.push_back(*one);
  }
}

}  // namespace scrollback
