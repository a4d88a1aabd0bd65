// Rebalancing from the admin side (scrollbackctl rebalance, docs/resharding.md): the measured
// load of every shard, and carrying out one round of the planner's plan
// (scrollback/cluster/rebalance_planner.h) through the metadata store.
#pragma once

#include <kj/async-io.h>

#include <chrono>
#include <string>
#include <vector>

#include "scrollback/cluster/metadata_store.h"
#include "scrollback/cluster/move.h"
#include "scrollback/cluster/rebalance_planner.h"
#include "scrollback/cluster/split.h"
#include "scrollback/cluster/switchover.h"
#include "scrollback/router/shard_map.h"

namespace scrollback::admin {

// Every shard's load as its primary's copy reports it (Node.shardStats: decayed ops/s per
// token bucket, hot tokens, sizes). unavailable if a node holding a primary does not answer
// within `timeout` (a plan from partial figures would move load onto the silent node).
Result<std::vector<ShardLoad>> CollectShardLoads(kj::AsyncIoContext& io, const ShardMap& map,
                                                 std::chrono::milliseconds timeout);

struct AppliedPlan {
  std::vector<SplitResult> splits;
  std::vector<SwitchoverResult> switchovers;
  std::vector<MoveResult> moves;    // Copies moved to a node that held none.
  std::vector<std::string> errors;  // A step that failed; the later steps still ran.
};

// Carries out `plan`: its splits (in order; a second split of the same shard lands on the child
// that now holds its token), then its moves (switchovers, and copies moved with MoveCopy). Each
// step waits up to `timeout_per_step`.
AppliedPlan ApplyRebalancePlan(MetadataStore& metadata, const RebalancePlan& plan,
                               std::chrono::milliseconds timeout_per_step);

}  // namespace scrollback::admin
