// The two phases of a scrollback-bench run against one target: the load phase (create the
// conversations, insert the records, wait until the target is idle) and the run phase (client
// threads issuing operations, optionally paced, after an optional warm-up, with a progress line
// a second on stderr). What each operation does is Operations' business; the runner only
// schedules, times and counts.
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "histogram.h"
#include "operations.h"
#include "scrollback/schema/status.h"
#include "target.h"
#include "workload.h"

namespace scrollback::ycsb {

struct RunOptions {
  // Default: 100,000. Operations the run phase performs over all threads (when duration_s is 0).
  uint64_t operations = 100'000;
  // Default: 0. > 0: run for this many seconds instead of `operations` operations.
  double duration_s = 0;
  // Default: 0. Operations finishing in the first warmup_s seconds are not recorded, so that
  // cold caches and connection setup do not count.
  double warmup_s = 0;
  // Default: 2. Client threads, each with its own event loop and Session.
  int threads = 2;
  // Default: 16. Calls in flight per thread, for pipelined (RPC) targets; other targets get 1.
  int inflight = 16;
  // Default: 0 (as fast as possible). Operations/s over all threads. Open loop: each operation
  // has an intended start and its latency counts from then, so queueing is not hidden.
  double target_rate = 0;
  // Default: 1. Seeds the client threads' random sources (thread t: seed * 7919 + t).
  uint64_t seed = 1;
};

// Measurements of one client thread, or of all threads merged.
struct Stats {
  std::map<Op, LatencyHistogram> latency;  // Successful operations, by operation.
  std::map<Op, uint64_t> errors;           // Failed operations; an op is absent until one fails.
};

// What a run phase measured.
struct PhaseResult {
  // The measured window: from the end of the warm-up to the end of the run; 0 when the run
  // ended within the warm-up (nothing was measured).
  double seconds = 0;
  // Successful operations recorded in the window (the latency histograms' counts summed).
  uint64_t operations = 0;
  Stats stats;
  // (second, operations completed in that second) for each whole second of the run, warm-up
  // included; the progress lines print the same figures.
  std::vector<std::pair<double, double>> throughput_over_time;
};

class Runner {
 public:
  // REQUIRES: `operations` and `target` outlive the runner; `operations` is fresh (nothing
  // loaded through it yet).
  Runner(const RunOptions& options, Operations& operations, Target& target);

  // Creates every conversation, then inserts operations.records() records, from
  // options.threads threads; then waits (at most 120 s) until the target is idle, so that
  // background work of the load (inbox fan-out) is not measured as part of the run. Call once.
  [[nodiscard]] Status Load();

  // Runs the workload. REQUIRES: Load() succeeded. A failed operation is counted in
  // stats.errors and the run goes on.
  PhaseResult Run();

 private:
  const RunOptions options_;
  Operations& operations_;
  Target& target_;
};

}  // namespace scrollback::ycsb
