// Online split of a shard (docs/resharding.md): the request an operator (scrollbackctl split)
// or the rebalance planner makes, and the wait for it. The failover controller, which owns every
// change of the map's shards, carries it out in its passes:
//   1. start: the map marks the shard splitAt = token with the children's ids, at epoch + 1.
//      The primary records the epoch and seals its store (writes answered unavailable,
//      retryable): its last LSN, M, is final.
//   2. finish: once the primary reports itself sealed at M and every live replica holds M (a
//      replica that does not within the controller's split_replica_patience is left to
//      bootstrap), the map replaces the shard by its two children on the same nodes, at epoch
//      + 1, each marked splitFrom = the parent and splitLsn = M. Every node cuts each child's
//      copy from its own copy of the parent (a checkpoint of hard links and one DeleteRange
//      write; ShardStore::CreateSplitCopy): no message crosses the network, and the pause does
//      not grow with the shard's size.
//   A split whose primary does not seal within split_timeout (the node is gone and no failover
//   could replace it) is abandoned: the parent takes writes again at epoch + 1.
//
// Keys (persisted; never rename):
//   /scrollback/split/<shard id>   the token the right child starts at (decimal)
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

#include "scrollback/cluster/metadata_store.h"
#include "scrollback/schema/token.h"

namespace scrollback {

inline constexpr const char* kSplitPrefix = "/scrollback/split/";

struct SplitResult {
  uint64_t shard_id = 0;  // The parent, gone from the map.
  uint64_t at_token = 0;  // The right child's first token.
  uint64_t left_id = 0;
  uint64_t right_id = 0;
  TokenRange left;
  TokenRange right;
  uint64_t lsn = 0;  // The parent's sealed LSN: both children start from it.
  // From the map that sealed the parent to the map that names the children (the write pause
  // clients see adds the children's opening, about a checkpoint and an open).
  std::chrono::milliseconds pause{0};
};

// The middle token of `range`: where a split with no token given cuts.
uint64_t MiddleToken(TokenRange range);

// Asks the controller to split `shard_id` so that the right child starts at `at_token` (nullopt:
// the middle of its range), and waits until the map names the children. invalid-argument for an
// unknown shard or a token outside (first, last]; failed-precondition when the shard is already
// splitting or switching over, or when the controller gave up (the parent serves on);
// unavailable after `timeout` (the request stays: the controller may still finish it).
Result<SplitResult> SplitShard(MetadataStore& metadata, uint64_t shard_id,
                               std::optional<uint64_t> at_token, std::chrono::milliseconds timeout);

}  // namespace scrollback
