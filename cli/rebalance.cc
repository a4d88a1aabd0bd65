#include "scrollback/admin/rebalance.h"

#include <capnp/rpc-twoparty.h>

#include "scrollback/cluster/shard_map_store.h"
#include "scrollback/schema/chatstore.capnp.h"

namespace scrollback::admin {

namespace s = ::scrollback::schema;

Result<std::vector<ShardLoad>> CollectShardLoads(kj::AsyncIoContext& io, const ShardMap& map,
                                                 std::chrono::milliseconds timeout) {
  const kj::Duration wait = timeout.count() * kj::MILLISECONDS;
  auto& timer = io.provider->getTimer();
  std::vector<ShardLoad> loads;
  for (const NodeInfo& node : map.nodes()) {
    bool primary_here = false;
    for (const ShardInfo& shard : map.shards()) primary_here |= shard.primary == node.node_id;
    if (!primary_here) continue;
    try {
      auto addr = io.provider->getNetwork().parseAddress(node.address).wait(io.waitScope);
      auto stream = timer.timeoutAfter(wait, addr->connect()).wait(io.waitScope);
      capnp::TwoPartyClient rpc(*stream);
      auto client = rpc.bootstrap().castAs<s::Node>();
      auto reply = timer.timeoutAfter(wait, client.shardStatsRequest().send()).wait(io.waitScope);
      for (auto st : reply.getStats()) {
        if (st.getRole() != s::ShardRole::PRIMARY || st.getState() != s::ShardState::SERVING) {
          continue;
        }
        ShardLoad& load = loads.emplace_back();
        load.shard_id = st.getShardId();
        load.ops_per_s = st.getReadOpsPerS() + st.getWriteOpsPerS();
        load.bytes_per_s = st.getBytesPerS();
        load.size_bytes = st.getLiveDataBytes() + st.getMemtableBytes();
        for (double ops : st.getLoadBuckets()) load.bucket_ops.push_back(ops);
        for (auto hot : st.getHotTokens()) {
          load.hot_tokens.push_back(HotToken{hot.getToken(), hot.getShare()});
        }
      }
    } catch (const kj::Exception& e) {
      return Status::Unavailable(node.node_id + " (" + node.address +
                                 ") did not report its load: " + e.getDescription().cStr());
    }
  }
  return loads;
}

AppliedPlan ApplyRebalancePlan(MetadataStore& metadata, const RebalancePlan& plan,
                               std::chrono::milliseconds timeout_per_step) {
  AppliedPlan applied;
  for (const PlannedSplit& split : plan.splits) {
    // A shard split twice in one round: the second token now lies in one of the first
    // split's children.
    uint64_t shard_id = split.shard_id;
    if (auto map = ReadShardMap(metadata); map.ok() && map->FindShard(shard_id) == nullptr) {
      shard_id = map->ShardForToken(split.at_token).shard_id;
    }
    auto done = SplitShard(metadata, shard_id, split.at_token, timeout_per_step);
    if (done.ok()) {
      applied.splits.push_back(*done);
    } else {
      applied.errors.push_back("split of shard " + std::to_string(shard_id) + " at " +
                               std::to_string(split.at_token) + ": " + done.status().ToString());
    }
  }
  for (const PlannedMove& move : plan.moves) {
    if (!move.switchover) {
      // A copy to a node holding none: the primary's copy moves there (bootstrap, catch-up,
      // switchover, the old copy removed).
      auto done = MoveCopy(metadata, move.shard_id, move.from, move.to, timeout_per_step);
      if (done.ok()) {
        applied.moves.push_back(*done);
      } else {
        applied.errors.push_back("move of shard " + std::to_string(move.shard_id) + " from " +
                                 move.from + " to " + move.to + ": " + done.status().ToString());
      }
      continue;
    }
    auto done = Switchover(metadata, move.shard_id, move.to, timeout_per_step);
    if (done.ok()) {
      applied.switchovers.push_back(*done);
    } else {
      applied.errors.push_back("switchover of shard " + std::to_string(move.shard_id) + " to " +
                               move.to + ": " + done.status().ToString());
    }
  }
  return applied;
}

}  // namespace scrollback::admin
