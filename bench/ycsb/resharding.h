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

}  // namespace scrollback::ycsb
