// Node.shardStats: what each copy this node holds reports of itself (schema ShardStats) —
// role, state, LSN and lag, sizes, bootstrap progress, and its load (docs/resharding.md, Hot
// spots). Private to node/.
#pragma once

#include "node_core.h"
#include "scrollback/schema/chatstore.capnp.h"

namespace scrollback {

// Fills `results` with one ShardStats per shard of `table`, serving ones first, then those
// still opening, bootstrapping or refused.
void WriteShardStats(const ShardTable& table, schema::Node::ShardStatsResults::Builder results);

}  // namespace scrollback
