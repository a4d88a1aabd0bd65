// PlanRebalance: which shards to split and which primaries to move so that no node carries much
// more than its share of the load (resharding: hot-spot detection and rebalancing). A pure
// function of the shard map and the measured loads: no I/O, no clock, no randomness; the same
// input gives the same plan. Carrying a plan out (splitting, switchovers, copies) is the
// caller's business; the planner only proposes one round of it.
//
// Model: a shard's load (ShardLoad::ops_per_s, reads and writes) is carried by its primary's node,
// which serves its writes and strong reads. A node's load is the sum over the shards it is
// primary of. Every node of map.nodes() counts, also one with no shard (a new node: load 0, so
// it receives moves). A shard with no ShardLoad has load 0. mean = total load / node count and
// target = target_ratio * mean. Nothing is planned while max node load <= target.
//
// Rules, in order:
//  1. Splits. A shard is a split candidate when its load is at least min_ops_to_split, it has at
//     least 2 tokens, and either
//       (coarse) its primary's node is over target and its load is above
//                min(split_fraction_of_node_mean, target_ratio) * mean: such a shard makes
//                balancing coarse, and one that alone exceeds the target always qualifies; or
//       (stuck)  moves alone cannot bring a node within target: a trial of rule 3 with no move
//                limit ends with the node over target, and the shard is the hottest of those
//                primary there at the trial's end that have the load and tokens above.
//     Candidates are taken hottest first (then by shard id) while the round's split budget
//     (max_splits_per_round) and max_shard_count allow; one that does not fit is skipped.
//     A candidate is split in one of two ways:
//     (a) isolate: when its hottest hot token (within its range) carries >= isolate_share of its
//         load, splits at t and at t + 1 put token t in a shard of its own; the split at t is
//         left out when t == range.first, the one at t + 1 when t == range.last. This uses one
//         or two splits of the budget; if two do not fit, the shard waits for the next round.
//     (b) median: otherwise, one split at the bucket boundary (1..63, bucket cut as for
//         ShardLoad::bucket_ops) whose cumulative share of the load is closest to one half (ties:
//         the lower boundary), never at range.first; with unknown buckets, as if the load were
//         uniform over the tokens (the middle: bucket 32's first token when the range has 64
//         tokens or more). A load packed into one bucket splits off that bucket: the next round
//         sees the hot child's own, finer buckets.
//     Estimated left / right loads come from the buckets (linear within a bucket), uniform over
//     the tokens when they are unknown; for (a) the hot token's load is share * ops and the rest
//     is spread as its buckets say less the hot token's share of its own bucket.
//  2. A shard split in this round does not move in it: its children have no ids yet (the caller
//     allocates them), and they stay where their parent is. Splits do not change node loads.
//     A shard with a split, merge, move or switchover in progress (ShardInfo::split_at,
//     merge_into, move_to, switch_to) is neither split nor moved; its load stays on its primary.
//  3. Moves, greedily, while the budget (max_moves_per_round) lasts: take the most loaded node
//     not passed over yet (ties: the lowest node id); stop when it is within target. Else
//     consider moving the primary
//     of each of its shards (load > 0, not split or moved in this round) to
//       - each node holding a replica of it: a switchover (cheap: only the role moves), or
//       - the least loaded node holding no copy of it (ties: the lowest node id): a copy (a
//         bootstrap of size_bytes);
//     keeping only moves after which the two nodes' larger load is below the source's load (the
//     move lowers the maximum or, when nodes tie at it, one of them; never overshoots). Any
//     switchover is preferred to any copy; then the smallest resulting larger load of the two
//     nodes (the move closing the gap best); then, for copies, the smaller size_bytes; then the
//     lower shard id and the lower target node id. When no move qualifies for that node (its
//     load is, say, one shard being split this round), it is passed over for the rest of the
//     call and the next busiest node sheds load instead. Every move lowers the sum of squared
//     node loads, so repeated rounds never cycle.
//
// Bounds: with S shards, N nodes, R copies per shard and M = max_moves_per_round, one call costs
// O(S log S) for the candidates and the split budget, plus for each move step (at most M in the
// plan, at most S in the trial of rule 1) O(N log N + S * R) to rank nodes and scan the source's
// shards; allocation O(S + N).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "scrollback/router/shard_map.h"

namespace scrollback {

// Sub-ranges per shard in ShardLoad::bucket_ops. With span = last - first + 1, bucket i holds
// the tokens [first + ceil(i * span / 64), first + ceil((i + 1) * span / 64) - 1]: the same cut
// as the node's load counters (node/load_counters.h).
inline constexpr size_t kShardLoadBuckets = 64;

// A token carrying a large share of its shard's load.
struct HotToken {
  uint64_t token = 0;
  double share = 0;  // Of the shard's ops, in [0, 1].
};

// One shard's measured load, as its primary reports it. Negative or non-finite figures count as
// 0. One entry per shard: a later entry for the same shard id is ignored, as is one for a shard
// the map does not list.
struct ShardLoad {
  uint64_t shard_id = 0;
  double ops_per_s = 0;     // Reads and writes: what the planner balances.
  double bytes_per_s = 0;   // Informational.
  uint64_t size_bytes = 0;  // What a copy of it moves; breaks ties between copies.
  // kShardLoadBuckets entries, or none (unknown distribution: uniform over the tokens); any
  // other size counts as unknown. Only the shape is used: it is scaled to ops_per_s.
  std::vector<double> bucket_ops;
  std::vector<HotToken> hot_tokens;  // Any order; tokens outside the shard's range are ignored.
};

struct PlannerOptions {
  // Default: 2. Splits proposed per round (an isolation counts one or two).
  uint32_t max_splits_per_round = 2;
  // Default: 4. Primary moves proposed per round, switchovers and copies together.
  uint32_t max_moves_per_round = 4;
  // Default: 1.1. Balanced enough when the most loaded node carries at most this times the mean
  // node load; below 1 acts as 1.
  double target_ratio = 1.1;
  // Default: 0.5. On a node over target, a shard carrying more than this fraction of the mean
  // node load is split (rule 1, coarse): such shards make balancing by moves coarse.
  double split_fraction_of_node_mean = 0.5;
  // Default: 100 ops/s. Shards with less load are never split: idle shards stay whole.
  double min_ops_to_split = 100;
  // Default: 0.5. A hot token carrying at least this share of a split candidate's load gets a
  // shard of its own (rule 1a); above 1 disables isolation.
  double isolate_share = 0.5;
  // Default: 0 (no cap). Splits that would take the map beyond this many shards are not
  // proposed.
  uint64_t max_shard_count = 0;
};

// Split a shard's range in two: [first, at_token - 1] and [at_token, last].
// Several splits may name one shard (an isolation): they are listed by ascending at_token, and
// each divides the piece of that shard's range, after the earlier ones, that holds at_token.
struct PlannedSplit {
  uint64_t shard_id = 0;
  uint64_t at_token = 0;  // The right piece starts here. Always first < at_token <= last.
  // Estimated loads of the two pieces (ops/s); they add up to the divided piece's load.
  double left_ops = 0;
  double right_ops = 0;
  std::string reason;  // For logs and operators.
};

// Move a shard's primary from node `from` to node `to`.
struct PlannedMove {
  uint64_t shard_id = 0;
  std::string from;
  std::string to;
  // True: `to` already holds a replica, so only the primary role moves (a switchover; `from`
  // keeps a replica). False: `to` holds no copy of the shard; a copy is made there, which then
  // becomes primary, and `from`'s copy leaves (the number of copies stays the same).
  bool switchover = false;
  double ops = 0;  // The shard's load, which moves from `from` to `to`.
  std::string reason;
};

struct RebalancePlan {
  std::vector<PlannedSplit> splits;  // By shard id, then at_token.
  std::vector<PlannedMove> moves;    // In the order decided; each shard at most once.
  // Every node of the map, before and (estimated) after the moves.
  std::map<std::string, double> node_load_before;
  std::map<std::string, double> node_load_after;
  // Max node load over the mean node load; 0 when there is no load at all.
  double max_over_mean_before = 0;
  double max_over_mean_after = 0;

  bool empty() const { return splits.empty() && moves.empty(); }
};

// One round of rebalancing (the file comment). Pure and deterministic.
RebalancePlan PlanRebalance(const ShardMap& map, const std::vector<ShardLoad>& loads,
                            const PlannerOptions& options);

}  // namespace scrollback
