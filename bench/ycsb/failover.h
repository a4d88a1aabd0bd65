// The failover scenario of scrollback-bench (--failover-kills N; docs/benchmarks.md,
// "Failover"): an embedded cluster (3 nodes, replication factor 3) under a send load from one
// writer per conversation, one conversation per shard. N times: crash the node that holds the
// most primaries (EmbeddedCluster::StopNode: its lease is left to expire), measure for each of
// its shards the time from the crash to the first send acknowledged there, then restart it and
// let it catch up. Afterwards every acknowledged send is looked for in its conversation's
// history: in async mode the ones a crash lost are counted (semi-sync must lose none). Then,
// optionally, planned switchovers (no loss in either mode), measured by their pause.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "scrollback/schema/status.h"
#include "scrollback/schema/types.h"

namespace scrollback::ycsb {

struct FailoverOptions {
  int kills = 10;
  // Planned switchovers after the kills (each: the shard of one writer moved to its most
  // advanced replica), measured by their pause.
  int switchovers = 0;
  AckMode ack = AckMode::kSemiSync;
  uint32_t shards = 12;
  // Primary lease length (and the controller's): a dead primary's shards move after about this.
  std::chrono::milliseconds lease{1000};
  // Load between kills, and after a restart before the next kill.
  std::chrono::milliseconds settle{1500};
  std::string data_dir;  // Empty: a temporary directory.
  uint64_t seed = 1;
};

struct FailoverResult {
  int kills = 0;
  // Per (kill, shard whose primary died): ms from the crash to the first acknowledged send.
  std::vector<double> unavailable_ms;
  // Per planned switchover: ms writes were paused (switchover.h, from the map that paused them
  // to the map that names the new primary), and the longest gap between two acknowledged sends
  // on that shard around it (what its writer saw, the new primary's reopen included).
  std::vector<double> switchover_pause_ms;
  std::vector<double> switchover_resume_ms;
  uint64_t acknowledged = 0;     // Sends acknowledged in the whole run.
  uint64_t lost = 0;             // Of those, missing from history at the end.
  uint64_t failed_attempts = 0;  // Attempts answered with an error (then retried).
  double sends_per_s = 0;        // Acknowledged sends / run time (kills included).
  double run_s = 0;
};

Result<FailoverResult> RunFailover(const FailoverOptions& options);

}  // namespace scrollback::ycsb
