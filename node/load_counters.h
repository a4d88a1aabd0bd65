// LoadCounters: one shard's load, decayed, for hot-spot detection and resharding (the rebalance
// planner, scrollback/cluster/rebalance_planner.h, reads a LoadSnapshot as a ShardLoad).
// Private to node/.
//
// Buckets: the shard's range is cut into kBuckets equal sub-ranges. With span = last - first + 1
// (up to 2^64, so computed in 128 bits), bucket i holds the tokens
//   [first + ceil(i * span / 64), first + ceil((i + 1) * span / 64) - 1],
// i.e. token t is in bucket floor((t - first) * 64 / span). A range of fewer than 64 tokens has
// empty buckets (a 1-token range has only bucket 0). ShardLoad::bucket_ops uses the same cut;
// change both or neither.
//
// Rates: Record*() add to the counters of the current period; Tick(now) closes the period and
// folds it into exponentially decayed rates:
//   decay = 0.5 ^ (elapsed / half_life)
//   rate  = rate * decay + (count / elapsed_s) * (1 - decay)
// so a rate with no new traffic halves every half-life, and a steady input of x per second is
// approached as x * (1 - 0.5 ^ (time / half_life)). Rates start at 0.
//
// Hot tokens: every kSampleEvery-th operation (reads and writes alike, counted per instance) is
// fed into a space-saving top-kTopK sketch (Metwally et al.). Its counts decay like the rates:
// each Tick multiplies every count, error and the sample total by the same `decay`, so a share
// reflects roughly the last few half-lives. A reported share is the sketch's guaranteed lower
// bound (count - error) / sampled, so a token is never reported hotter than it may be.
//
// Thread safety: Record*() may be called from any number of threads at once. Tick() and
// Snapshot() may be called from any thread, concurrently with Record*() and with each other.
//
// Cost on the hot path (Record*()): one 128-bit division to find the bucket, two relaxed
// fetch_adds on the bucket's own cache line (its read or write count, its bytes), one on the
// shared sample clock, and, for one operation in kSampleEvery, a mutex and a scan of kTopK
// entries. Nothing allocates. Threads hitting one bucket share its cache line (no lock).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "scrollback/schema/token.h"

namespace scrollback {

// The load of one shard at one time; a plain value.
struct LoadSnapshot {
  struct Bucket {
    double read_ops_per_s = 0;
    double write_ops_per_s = 0;
    double bytes_per_s = 0;  // Reads and writes.
  };
  struct HotToken {
    uint64_t token = 0;
    double share = 0;  // Of the sampled reads and writes, in [0, 1]: a lower bound.
  };

  TokenRange range;
  std::vector<Bucket> buckets;  // LoadCounters::kBuckets entries, bucket i as the file comment.
  // Sums over the buckets.
  double read_ops_per_s = 0;
  double write_ops_per_s = 0;
  double bytes_per_s = 0;
  // At most LoadCounters::kTopK, by share descending (then token ascending); only tokens with a
  // guaranteed share above 0.
  std::vector<HotToken> hot_tokens;

  double ops_per_s() const { return read_ops_per_s + write_ops_per_s; }
};

class LoadCounters {
 public:
  static constexpr size_t kBuckets = 64;
  static constexpr size_t kTopK = 8;
  // One operation in kSampleEvery feeds the hot-token sketch. A power of two.
  static constexpr uint64_t kSampleEvery = 16;

  // `half_life`: default 60 s; values below 1 ms act as 1 ms. REQUIRES: range.first <= range.last.
  explicit LoadCounters(TokenRange range,
                        std::chrono::milliseconds half_life = std::chrono::seconds(60));
  LoadCounters(const LoadCounters&) = delete;
  LoadCounters& operator=(const LoadCounters&) = delete;

  // The bucket of `token` in `range` (the file comment). A token outside the range counts as the
  // range's nearest end (first or last). Pure; no allocation.
  static size_t BucketOf(const TokenRange& range, uint64_t token);

  // Hot path: one read or write of `bytes` bytes at `token` (a token of this shard's range).
  void RecordRead(uint64_t token, uint64_t bytes) { Record(token, bytes, /*write=*/false); }
  void RecordWrite(uint64_t token, uint64_t bytes) { Record(token, bytes, /*write=*/true); }

  // Folds what was recorded since the previous Tick into the rates and decays the hot-token
  // sketch (the file comment). The first Tick only starts the clock: the counts recorded before
  // it are dropped (the sketch keeps its samples). A Tick at or before the previous one's time
  // changes nothing (the counts wait for the next). Meant to be called about once a second, by
  // one caller; `now_ms` comes from the node's clock (never read here).
  void Tick(int64_t now_ms);

  // The rates as of the last Tick, and the hot tokens as sampled so far.
  LoadSnapshot Snapshot() const;

  const TokenRange& range() const { return range_; }

 private:
  // One bucket's counts of the current period, on a cache line of its own.
  struct alignas(64) Counts {
    std::atomic<uint64_t> reads{0};
    std::atomic<uint64_t> writes{0};
    std::atomic<uint64_t> bytes{0};
  };
  // A space-saving entry: `count` overestimates the token's samples by at most `error`.
  struct Entry {
    uint64_t token = 0;
    double count = 0;
    double error = 0;
  };

  void Record(uint64_t token, uint64_t bytes, bool write);
  // Feeds one sampled operation into the sketch. Takes sketch_mu_.
  void Sample(uint64_t token);

  const TokenRange range_;
  const double half_life_ms_;

  std::array<Counts, kBuckets> counts_;
  alignas(64) std::atomic<uint64_t> sample_clock_{0};  // Operations recorded, for sampling.

  // Lock order: mu_ before sketch_mu_. The hot path takes only sketch_mu_, one time in
  // kSampleEvery.
  mutable std::mutex mu_;
  bool started_ = false;                                // GUARDED_BY(mu_)
  int64_t last_tick_ms_ = 0;                            // GUARDED_BY(mu_)
  std::array<LoadSnapshot::Bucket, kBuckets> rates_{};  // GUARDED_BY(mu_)

  mutable std::mutex sketch_mu_;
  std::vector<Entry> top_;  // GUARDED_BY(sketch_mu_); at most kTopK, capacity reserved.
  double sampled_ = 0;      // GUARDED_BY(sketch_mu_); decayed like the counts.
};

}  // namespace scrollback
