// A latency histogram with bounded relative error (about 1.5 %): values are bucketed by their
// power of two and the next 6 bits, like HdrHistogram with 2 significant digits. Fixed memory
// (~30 KiB), O(1) record, mergeable across threads.
#pragma once

#include <array>
#include <cstdint>

namespace scrollback::ycsb {

class LatencyHistogram {
 public:
  // `nanos` is clamped to [1, 2^63).
  void Record(uint64_t nanos);
  void Merge(const LatencyHistogram& other);

  uint64_t count() const { return count_; }
  uint64_t min() const { return count_ ? min_ : 0; }
  uint64_t max() const { return max_; }
  double mean() const { return count_ ? static_cast<double>(sum_) / count_ : 0; }
  // The smallest recorded bucket's upper value at or above fraction `p` (0..1) of the values.
  uint64_t Percentile(double p) const;

 private:
  static constexpr int kSubBits = 6;
  static constexpr int kSub = 1 << kSubBits;
  static constexpr int kBuckets = 64 * kSub;
  static int Index(uint64_t v);
  static uint64_t UpperOf(int index);

  std::array<uint64_t, kBuckets> buckets_{};
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t min_ = UINT64_MAX;
  uint64_t max_ = 0;
};

}  // namespace scrollback::ycsb
