// Merging two adjacent shards into one (docs/resharding.md, Merge): the reverse of a split, so
// that a cluster that shrank does not keep thousands of small shards. The request goes through
// the metadata store to the failover controller, which carries it out in its passes:
//   1. start: both shards get mergeInto = a new id, at epoch + 1; every copy flushes and both
//      primaries seal (their last LSNs final; writes answered unavailable, retryable);
//   2. finish: once both primaries report themselves sealed and every live replica holds its
//      primary's sealed LSN, the map replaces the two by the merged shard, on the same nodes,
//      marked mergeLeft / mergeRight with the sealed LSNs. Every node makes the merged copy from
//      its own copies of both (ShardStore::CreateMergedCopy: a checkpoint of the left, the
//      right's rows written into it); a node without them bootstraps from the new primary.
// Both shards must be held by the same nodes with the same primary (move copies or switch over
// first). A merge whose primaries do not seal within the controller's split_timeout is
// abandoned: both take writes again.
//
// Keys (persisted; never rename):
//   /scrollback/merge/<left shard id>   the right shard's id (decimal)
#pragma once

#include <chrono>
#include <cstdint>

#include "scrollback/cluster/metadata_store.h"
#include "scrollback/schema/token.h"

namespace scrollback {

inline constexpr const char* kMergePrefix = "/scrollback/merge/";

struct MergeResult {
  uint64_t left_id = 0;
  uint64_t right_id = 0;
  uint64_t merged_id = 0;
  TokenRange range;
  // From the map that sealed the two to the map that names the merged shard.
  std::chrono::milliseconds took{0};
};

// Asks for `left_id` and `right_id` (the shard right after it) to merge, and waits until the
// map names the merged shard. invalid-argument: unknown shards, not adjacent; failed-precondition:
// held by different nodes or primaries, already splitting / moving / merging / switching over,
// or the controller gave up; unavailable after `timeout` (the request stays).
Result<MergeResult> MergeShards(MetadataStore& metadata, uint64_t left_id, uint64_t right_id,
                                std::chrono::milliseconds timeout);

}  // namespace scrollback
