#include "scrollback/router/shard_map.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <algorithm>
#include <cstring>
#include <unordered_set>

#include "scrollback/schema/chatstore.capnp.h"
#include "scrollback/schema/wire.h"

namespace scrollback {

Result<ShardMap> ShardMap::Make(uint64_t version, std::vector<ShardInfo> shards,
                                std::vector<NodeInfo> nodes) {
  if (shards.empty()) return Status::InvalidArgument("shards", "a shard map needs a shard");
  // By range: an order of indexes is sorted, then the shards are moved once (a ShardInfo is a few
  // hundred bytes; sorting them in place moved each many times).
  auto by_first = [](const ShardInfo& a, const ShardInfo& b) {
    return a.range.first < b.range.first;
  };
  if (!std::is_sorted(shards.begin(), shards.end(), by_first)) {
    std::vector<uint32_t> order(shards.size());
    for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&shards](uint32_t a, uint32_t b) {
      return shards[a].range.first < shards[b].range.first;
    });
    std::vector<ShardInfo> sorted;
    sorted.reserve(shards.size());
    for (uint32_t i : order) sorted.push_back(std::move(shards[i]));
    shards.swap(sorted);
  }
  // Validation is O(shards) with no allocation per shard: followers rebuild the map on every
  // change, and a map may hold 100,000 shards.
  std::unordered_set<std::string_view> node_ids;
  node_ids.reserve(nodes.size());
  for (const NodeInfo& node : nodes) {
    if (node.node_id.empty() || !node_ids.insert(node.node_id).second) {
      return Status::InvalidArgument("nodes", "node ids must be unique and non-empty");
    }
  }
  std::unordered_set<uint64_t> shard_ids;
  shard_ids.reserve(shards.size());
  uint64_t expected_first = 0;
  for (size_t i = 0; i < shards.size(); ++i) {
    const ShardInfo& shard = shards[i];
    if (!shard_ids.insert(shard.shard_id).second) {
      return Status::InvalidArgument("shards",
                                     "duplicate shard id " + std::to_string(shard.shard_id));
    }
    if (shard.range.first != expected_first || shard.range.last < shard.range.first) {
      return Status::InvalidArgument("shards",
                                     "shard ranges must cover the ring with no gap "
                                     "or overlap (at shard " +
                                         std::to_string(shard.shard_id) + ")");
    }
    if (!node_ids.count(shard.primary)) {
      return Status::InvalidArgument("shards", "shard " + std::to_string(shard.shard_id) +
                                                   " names unknown primary " + shard.primary);
    }
    auto holds = [&shard](std::string_view node) {
      return node == shard.primary ||
             std::find(shard.replicas.begin(), shard.replicas.end(), node) != shard.replicas.end();
    };
    for (size_t r = 0; r < shard.replicas.size(); ++r) {
      const std::string& replica = shard.replicas[r];
      if (!node_ids.count(replica)) {
        return Status::InvalidArgument("shards", "unknown replica node " + replica);
      }
      if (replica == shard.primary || std::find(shard.replicas.begin(), shard.replicas.begin() + r,
                                                replica) != shard.replicas.begin() + r) {
        return Status::InvalidArgument("shards", "shard " + std::to_string(shard.shard_id) +
                                                     " has two copies on node " + replica);
      }
    }
    if (!shard.switch_to.empty() && (shard.switch_to == shard.primary || !holds(shard.switch_to))) {
      return Status::InvalidArgument("shards", "shard " + std::to_string(shard.shard_id) +
                                                   " switches over to " + shard.switch_to +
                                                   ", which is not one of its replicas");
    }
    if (!shard.move_to.empty() &&
        (shard.move_from == shard.move_to || !holds(shard.move_to) || !holds(shard.move_from))) {
      return Status::InvalidArgument("shards", "shard " + std::to_string(shard.shard_id) +
                                                   " moves a copy from " + shard.move_from +
                                                   " to " + shard.move_to +
                                                   ": both must hold one, and differ");
    }
    if (shard.split_at != 0) {
      if (shard.split_at <= shard.range.first || shard.split_at > shard.range.last) {
        return Status::InvalidArgument("shards", "shard " + std::to_string(shard.shard_id) +
                                                     " splits at a token outside (first, last]");
      }
      if (shard.split_left_id == 0 || shard.split_right_id == 0 ||
          shard.split_left_id == shard.split_right_id) {
        return Status::InvalidArgument("shards", "shard " + std::to_string(shard.shard_id) +
                                                     " splits without two distinct child ids");
      }
      if (!shard.switch_to.empty()) {
        return Status::InvalidArgument("shards", "shard " + std::to_string(shard.shard_id) +
                                                     " cannot split and switch over at once");
      }
    }
    if (shard.merge_into != 0 &&
        (shard.split_at != 0 || !shard.switch_to.empty() || !shard.move_to.empty())) {
      return Status::InvalidArgument("shards", "shard " + std::to_string(shard.shard_id) +
                                                   " cannot merge while it splits, moves or "
                                                   "switches over");
    }
    bool last = i + 1 == shards.size();
    if (last != (shard.range.last == UINT64_MAX)) {
      return Status::InvalidArgument("shards", "shard ranges must end at the top of the ring");
    }
    if (!last) expected_first = shard.range.last + 1;
  }
  for (const ShardInfo& shard : shards) {
    for (uint64_t child : {shard.split_left_id, shard.split_right_id, shard.merge_into}) {
      if (child != 0 && shard_ids.count(child)) {
        return Status::InvalidArgument("shards", "shard " + std::to_string(shard.shard_id) +
                                                     " splits into shard " + std::to_string(child) +
                                                     ", which exists");
      }
    }
  }
  ShardMap map;
  map.version_ = version;
  map.shards_ = std::move(shards);
  map.nodes_ = std::move(nodes);
  map.BuildIndexes();
  return map;
}

void ShardMap::BuildIndexes() {
  shard_index_.clear();
  shard_index_.reserve(shards_.size());
  for (uint32_t i = 0; i < shards_.size(); ++i) shard_index_.emplace_back(shards_[i].shard_id, i);
  std::sort(shard_index_.begin(), shard_index_.end());
  node_index_.clear();
  node_index_.reserve(nodes_.size());
  for (uint32_t i = 0; i < nodes_.size(); ++i) node_index_.emplace_back(nodes_[i].node_id, i);
  std::sort(node_index_.begin(), node_index_.end());
}

uint64_t ShardMap::NextShardId() const {
  uint64_t largest = 0;
  for (const ShardInfo& shard : shards_) {
    largest = std::max(
        {largest, shard.shard_id, shard.split_left_id, shard.split_right_id, shard.merge_into});
  }
  return largest + 1;
}

ShardMap ShardMap::Uniform(uint64_t version, uint32_t shard_count, std::vector<NodeInfo> nodes,
                           uint32_t replication_factor) {
  const size_t copies = std::clamp<size_t>(replication_factor, 1, nodes.size());
  std::vector<ShardInfo> shards;
  // Shard i starts at floor(i * 2^64 / n): exact powers of two for power-of-two counts.
  auto start = [shard_count](uint32_t i) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(i) << 64) / shard_count);
  };
  for (uint32_t i = 0; i < shard_count; ++i) {
    ShardInfo shard;
    shard.shard_id = i + 1;
    shard.range.first = start(i);
    shard.range.last = i + 1 == shard_count ? UINT64_MAX : start(i + 1) - 1;
    shard.primary = nodes[i % nodes.size()].node_id;
    for (size_t r = 1; r < copies; ++r)
      shard.replicas.push_back(nodes[(i + r) % nodes.size()].node_id);
    shard.epoch = 1;
    shard.placement_version = version;
    shards.push_back(std::move(shard));
  }
  ShardMap map;
  map.version_ = version;
  map.shards_ = std::move(shards);
  map.nodes_ = std::move(nodes);
  map.BuildIndexes();
  return map;
}

const ShardInfo& ShardMap::ShardForToken(uint64_t token) const {
  // The last shard whose first token is <= token; shards cover the ring, so one exists.
  auto it = std::upper_bound(shards_.begin(), shards_.end(), token,
                             [](uint64_t t, const ShardInfo& s) { return t < s.range.first; });
  return *(it - 1);
}

const NodeInfo* ShardMap::FindNode(std::string_view node_id) const {
  auto it =
      std::lower_bound(node_index_.begin(), node_index_.end(), node_id,
                       [](const auto& entry, std::string_view id) { return entry.first < id; });
  return it != node_index_.end() && it->first == node_id ? &nodes_[it->second] : nullptr;
}

const ShardInfo* ShardMap::FindShard(uint64_t shard_id) const {
  auto it = std::lower_bound(shard_index_.begin(), shard_index_.end(),
                             std::make_pair(shard_id, uint32_t{0}));
  return it != shard_index_.end() && it->first == shard_id ? &shards_[it->second] : nullptr;
}

namespace {

void WriteShard(const ShardInfo& in, schema::ShardInfo::Builder out) {
  out.setShardId(in.shard_id);
  out.setTokenFirst(in.range.first);
  out.setTokenLast(in.range.last);
  out.setPrimary(wire::AsText(in.primary));
  auto replicas = out.initReplicas(static_cast<unsigned>(in.replicas.size()));
  for (unsigned r = 0; r < in.replicas.size(); ++r) replicas.set(r, wire::AsText(in.replicas[r]));
  out.setEpoch(in.epoch);
  out.setPlacementVersion(in.placement_version);
  out.setSwitchTo(wire::AsText(in.switch_to));
  out.setSplitAt(in.split_at);
  out.setSplitLeftId(in.split_left_id);
  out.setSplitRightId(in.split_right_id);
  out.setSplitFrom(in.split_from);
  out.setSplitLsn(in.split_lsn);
  out.setMoveFrom(wire::AsText(in.move_from));
  out.setMoveTo(wire::AsText(in.move_to));
  out.setMergeInto(in.merge_into);
  out.setMergeLeft(in.merge_left);
  out.setMergeRight(in.merge_right);
  out.setMergeLeftLsn(in.merge_left_lsn);
  out.setMergeRightLsn(in.merge_right_lsn);
}

ShardInfo ReadShard(schema::ShardInfo::Reader in) {
  ShardInfo shard;
  shard.shard_id = in.getShardId();
  shard.range = TokenRange{in.getTokenFirst(), in.getTokenLast()};
  shard.primary = wire::View(in.getPrimary());
  for (auto replica : in.getReplicas()) shard.replicas.emplace_back(wire::View(replica));
  shard.epoch = in.getEpoch();
  shard.placement_version = in.getPlacementVersion();
  shard.switch_to = wire::View(in.getSwitchTo());
  shard.split_at = in.getSplitAt();
  shard.split_left_id = in.getSplitLeftId();
  shard.split_right_id = in.getSplitRightId();
  shard.split_from = in.getSplitFrom();
  shard.split_lsn = in.getSplitLsn();
  shard.move_from = wire::View(in.getMoveFrom());
  shard.move_to = wire::View(in.getMoveTo());
  shard.merge_into = in.getMergeInto();
  shard.merge_left = in.getMergeLeft();
  shard.merge_right = in.getMergeRight();
  shard.merge_left_lsn = in.getMergeLeftLsn();
  shard.merge_right_lsn = in.getMergeRightLsn();
  return shard;
}

void WriteNode(const NodeInfo& in, schema::NodeInfo::Builder out) {
  out.setNodeId(wire::AsText(in.node_id));
  out.setAddress(wire::AsText(in.address));
  out.setHttpAddress(wire::AsText(in.http_address));
  out.setLeaseId(in.lease_id);
}

NodeInfo ReadNode(schema::NodeInfo::Reader in) {
  return {std::string(wire::View(in.getNodeId())), std::string(wire::View(in.getAddress())),
          std::string(wire::View(in.getHttpAddress())), in.getLeaseId()};
}

std::string ToBytes(capnp::MallocMessageBuilder& builder) {
  auto words = capnp::messageToFlatArray(builder);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

// Calls `read(root)` on the message in `bytes`; a malformed message is corruption of `what`.
template <typename Root, typename Read>
Status ReadMessage(std::string_view bytes, const char* what, Read&& read) {
  if (bytes.size() % sizeof(capnp::word) != 0) {
    return Status::Corruption(std::string(what) + ": size is not a multiple of 8");
  }
  auto words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data(), bytes.size());
  try {
    capnp::FlatArrayMessageReader message(words);
    read(message.getRoot<Root>());
  } catch (const kj::Exception& e) {
    return Status::Corruption(std::string(what) + ": " + e.getDescription().cStr());
  }
  return Status::Ok();
}

}  // namespace

std::string ShardMap::Serialize() const {
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<schema::ShardMap>();
  root.setVersion(version_);
  auto shards = root.initShards(static_cast<unsigned>(shards_.size()));
  for (unsigned i = 0; i < shards_.size(); ++i) WriteShard(shards_[i], shards[i]);
  auto nodes = root.initNodes(static_cast<unsigned>(nodes_.size()));
  for (unsigned i = 0; i < nodes_.size(); ++i) WriteNode(nodes_[i], nodes[i]);
  return ToBytes(builder);
}

Result<ShardMap> ShardMap::Parse(std::string_view bytes) {
  std::vector<ShardInfo> shards;
  std::vector<NodeInfo> nodes;
  uint64_t version = 0;
  SB_RETURN_IF_ERROR(ReadMessage<schema::ShardMap>(bytes, "shard map", [&](auto root) {
    version = root.getVersion();
    for (auto in : root.getShards()) shards.push_back(ReadShard(in));
    for (auto in : root.getNodes()) nodes.push_back(ReadNode(in));
  }));
  return Make(version, std::move(shards), std::move(nodes));
}

std::string SerializeShardInfo(const ShardInfo& shard) {
  capnp::MallocMessageBuilder builder;
  WriteShard(shard, builder.initRoot<schema::ShardInfo>());
  return ToBytes(builder);
}

Result<ShardInfo> ParseShardInfo(std::string_view bytes) {
  ShardInfo shard;
  SB_RETURN_IF_ERROR(ReadMessage<schema::ShardInfo>(bytes, "shard record",
                                                    [&](auto root) { shard = ReadShard(root); }));
  if (shard.range.first > shard.range.last) {
    return Status::Corruption("shard record " + std::to_string(shard.shard_id) +
                              ": empty token range");
  }
  return shard;
}

std::string SerializeNodeInfo(const NodeInfo& node) {
  capnp::MallocMessageBuilder builder;
  WriteNode(node, builder.initRoot<schema::NodeInfo>());
  return ToBytes(builder);
}

Result<NodeInfo> ParseNodeInfo(std::string_view bytes) {
  NodeInfo node;
  SB_RETURN_IF_ERROR(ReadMessage<schema::NodeInfo>(bytes, "node record",
                                                   [&](auto root) { node = ReadNode(root); }));
  return node;
}

}  // namespace scrollback
