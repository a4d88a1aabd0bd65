// The resharding scenario of scrollback-bench (--reshard-mb SIZE; docs/benchmarks.md,
// "Resharding"): an embedded cluster (3 nodes, replication factor 3, one shard) loaded to SIZE
// MB of messages with incompressible 1 KiB bodies, then, under a send load from writers spread
// over the ring (semi-sync):
//   1. split the shard in the middle: the controller's pause (sealed to children named), the
//      longest gap a writer of the shard saw, and the send p99 around it;
//   2. add a fourth node and move a replica's copy of one child to it: duration, bytes copied,
//      MB/s, and the send p99 while it runs.
// The split's pause must not grow with SIZE (no data crosses the network; a checkpoint is hard
// links); the move's duration does.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "scrollback/schema/status.h"

namespace scrollback::ycsb {

struct ReshardOptions {
  uint64_t shard_mb = 100;  // Live data of the shard before the split.
  int writers = 16;
  std::string data_dir;  // Empty: a temporary directory.
  uint64_t seed = 1;
};

struct ReshardResult {
  uint64_t shard_bytes = 0;  // Primary's live data + memtables when the split began.
  uint64_t messages = 0;     // Loaded.
  double load_s = 0;
  double split_ms = 0;      // SplitResult::pause: from the seal's start to the children
                            // named (copies flush first, writes going on).
  double split_gap_ms = 0;  // Longest gap between acknowledged sends of a split writer.
  double split_p99_ms = 0;  // Sends (first attempt to acknowledgement) around the split.
  double move_s = 0;
  uint64_t move_bytes = 0;  // Checkpoint bytes the new copy received.
  double move_mb_per_s = 0;
  double move_p99_ms = 0;      // Sends while the move ran.
  double baseline_p99_ms = 0;  // Sends in the second before the split.
  uint64_t acknowledged = 0;
  uint64_t lost = 0;  // Acknowledged sends missing from history at the end.
};

Result<ReshardResult> RunResharding(const ReshardOptions& options);

// The rebalancing scenario (--rebalance-seconds S): an embedded cluster (3 nodes, 6 shards,
// replication factor 3) under a skewed send load (`chains` chains of sends, each on a
// conversation drawn zipfian(0.99) from 200: the hottest conversations get many chains) for S
// seconds; then one round of PlanRebalance from the load the primaries measured, carried out
// with ApplyRebalancePlan; then the same load for S seconds again.
struct RebalanceBenchOptions {
  double seconds = 5;
  int chains = 64;
  std::string data_dir;
  uint64_t seed = 1;
};

struct RebalanceBenchResult {
  double sends_per_s_before = 0;
  double sends_per_s_after = 0;
  double p99_ms_before = 0;
  double p99_ms_after = 0;
  double max_over_mean_before = 0;  // Of node load, as the planner measured and estimated.
  double max_over_mean_after = 0;
  int splits = 0;
  int switchovers = 0;
  int copies = 0;
  uint64_t lost = 0;
};

Result<RebalanceBenchResult> RunRebalanceBench(const RebalanceBenchOptions& options);

}  // namespace scrollback::ycsb
