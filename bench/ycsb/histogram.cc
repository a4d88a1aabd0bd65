#include "histogram.h"

#include <algorithm>
#include <bit>

namespace scrollback::ycsb {

int LatencyHistogram::Index(uint64_t v) {
  if (v < kSub) return static_cast<int>(v);       // Exact below 64.
  const int exponent = 63 - std::countl_zero(v);  // >= kSubBits.
  const int shift = exponent - kSubBits;
  const auto mantissa = static_cast<int>((v >> shift) & (kSub - 1));
  return (shift + 1) * kSub + mantissa;
}

uint64_t LatencyHistogram::UpperOf(int index) {
  if (index < kSub) return static_cast<uint64_t>(index);
  const int shift = index / kSub - 1;
  const uint64_t mantissa = static_cast<uint64_t>(index % kSub) | kSub;
  return ((mantissa + 1) << shift) - 1;
}

void LatencyHistogram::Record(uint64_t nanos) {
  nanos = std::clamp<uint64_t>(nanos, 1, (uint64_t{1} << 62));
  ++buckets_[Index(nanos)];
  ++count_;
  sum_ += nanos;
  min_ = std::min(min_, nanos);
  max_ = std::max(max_, nanos);
}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  for (int i = 0; i < kBuckets; ++i) buckets_[i] += other.buckets_[i];
  count_ += other.count_;
  sum_ += other.sum_;
  min_ = std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
}

uint64_t LatencyHistogram::Percentile(double p) const {
  if (count_ == 0) return 0;
  const auto rank = static_cast<uint64_t>(p * static_cast<double>(count_) + 0.5);
  uint64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += buckets_[i];
    if (seen >= std::max<uint64_t>(rank, 1)) return std::min(UpperOf(i), max_);
  }
  return max_;
}

}  // namespace scrollback::ycsb
