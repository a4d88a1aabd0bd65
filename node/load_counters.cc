#include "load_counters.h"

#include <algorithm>
#include <cmath>

namespace scrollback {

LoadCounters::LoadCounters(TokenRange range, std::chrono::milliseconds half_life)
    : range_(range), half_life_ms_(static_cast<double>(std::max<int64_t>(half_life.count(), 1))) {
  top_.reserve(kTopK);
}

size_t LoadCounters::BucketOf(const TokenRange& range, uint64_t token) {
  token = std::clamp(token, range.first, range.last);
  // span <= 2^64 and offset < span: offset * kBuckets fits in 71 bits.
  const unsigned __int128 span = static_cast<unsigned __int128>(range.last - range.first) + 1;
  const unsigned __int128 offset = token - range.first;
  return static_cast<size_t>(offset * kBuckets / span);
}

void LoadCounters::Record(uint64_t token, uint64_t bytes, bool write) {
  Counts& counts = counts_[BucketOf(range_, token)];
  (write ? counts.writes : counts.reads).fetch_add(1, std::memory_order_relaxed);
  counts.bytes.fetch_add(bytes, std::memory_order_relaxed);
  if ((sample_clock_.fetch_add(1, std::memory_order_relaxed) & (kSampleEvery - 1)) == 0) {
    Sample(token);
  }
}

void LoadCounters::Sample(uint64_t token) {
  std::lock_guard<std::mutex> lock(sketch_mu_);
  sampled_ += 1;
  for (Entry& entry : top_) {
    if (entry.token == token) {
      entry.count += 1;
      return;
    }
  }
  if (top_.size() < kTopK) {
    top_.push_back({token, 1, 0});
    return;
  }
  // Space-saving: the newcomer replaces the least counted entry and inherits its count as its
  // possible overestimate.
  Entry& least = *std::min_element(
      top_.begin(), top_.end(), [](const Entry& a, const Entry& b) { return a.count < b.count; });
  least = {token, least.count + 1, least.count};
}

void LoadCounters::Tick(int64_t now_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  if (started_ && now_ms <= last_tick_ms_) return;
  // Take the period's counts. An operation racing with this may land its count in this period
  // and its bytes in the next, never in neither.
  std::array<uint64_t, kBuckets> reads, writes, bytes;
  for (size_t i = 0; i < kBuckets; ++i) {
    reads[i] = counts_[i].reads.exchange(0, std::memory_order_relaxed);
    writes[i] = counts_[i].writes.exchange(0, std::memory_order_relaxed);
    bytes[i] = counts_[i].bytes.exchange(0, std::memory_order_relaxed);
  }
  if (!started_) {
    started_ = true;
    last_tick_ms_ = now_ms;
    return;
  }
  const double elapsed_ms = static_cast<double>(now_ms - last_tick_ms_);
  last_tick_ms_ = now_ms;
  const double elapsed_s = elapsed_ms / 1000;
  const double decay = std::exp2(-elapsed_ms / half_life_ms_);
  const double gain = (1 - decay) / elapsed_s;
  for (size_t i = 0; i < kBuckets; ++i) {
    LoadSnapshot::Bucket& rate = rates_[i];
    rate.read_ops_per_s = rate.read_ops_per_s * decay + static_cast<double>(reads[i]) * gain;
    rate.write_ops_per_s = rate.write_ops_per_s * decay + static_cast<double>(writes[i]) * gain;
    rate.bytes_per_s = rate.bytes_per_s * decay + static_cast<double>(bytes[i]) * gain;
  }
  std::lock_guard<std::mutex> sketch_lock(sketch_mu_);
  sampled_ *= decay;
  for (Entry& entry : top_) {
    entry.count *= decay;
    entry.error *= decay;
  }
}

LoadSnapshot LoadCounters::Snapshot() const {
  LoadSnapshot snapshot;
  snapshot.range = range_;
  std::lock_guard<std::mutex> lock(mu_);
  snapshot.buckets.assign(rates_.begin(), rates_.end());
  for (const LoadSnapshot::Bucket& bucket : rates_) {
    snapshot.read_ops_per_s += bucket.read_ops_per_s;
    snapshot.write_ops_per_s += bucket.write_ops_per_s;
    snapshot.bytes_per_s += bucket.bytes_per_s;
  }
  std::lock_guard<std::mutex> sketch_lock(sketch_mu_);
  if (sampled_ > 0) {
    for (const Entry& entry : top_) {
      const double share = std::clamp((entry.count - entry.error) / sampled_, 0.0, 1.0);
      if (share > 0) snapshot.hot_tokens.push_back({entry.token, share});
    }
  }
  std::sort(snapshot.hot_tokens.begin(), snapshot.hot_tokens.end(),
            [](const LoadSnapshot::HotToken& a, const LoadSnapshot::HotToken& b) {
              return a.share != b.share ? a.share > b.share : a.token < b.token;
            });
  return snapshot;
}

}  // namespace scrollback
