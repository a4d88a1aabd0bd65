// A shard's load counters (node/load_counters.h): tokens fall into 64 equal buckets, rates decay
// with the half-life and follow a steady input, the hot-token sketch finds a token that takes
// most of the traffic, and concurrent recording loses nothing. Time is passed in: no sleeps.
#include "load_counters.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

namespace scrollback {
namespace {

constexpr TokenRange kRing{0, UINT64_MAX};

TEST_CASE("tokens fall into 64 equal buckets, also at the ends of the ring and in tiny ranges") {
  // The whole ring: buckets of 2^58 tokens.
  CHECK(LoadCounters::BucketOf(kRing, 0) == 0);
  CHECK(LoadCounters::BucketOf(kRing, (1ull << 58) - 1) == 0);
  CHECK(LoadCounters::BucketOf(kRing, 1ull << 58) == 1);
  CHECK(LoadCounters::BucketOf(kRing, 1ull << 63) == 32);
  CHECK(LoadCounters::BucketOf(kRing, UINT64_MAX - (1ull << 58)) == 62);
  CHECK(LoadCounters::BucketOf(kRing, UINT64_MAX - (1ull << 58) + 1) == 63);
  CHECK(LoadCounters::BucketOf(kRing, UINT64_MAX) == 63);

  // One token: bucket 0, wherever the range is.
  CHECK(LoadCounters::BucketOf({0, 0}, 0) == 0);
  CHECK(LoadCounters::BucketOf({UINT64_MAX, UINT64_MAX}, UINT64_MAX) == 0);

  // 64 tokens at the top of the ring: one per bucket.
  const TokenRange top{UINT64_MAX - 63, UINT64_MAX};
  for (uint64_t i = 0; i < 64; ++i) {
    INFO("token " << i);
    CHECK(LoadCounters::BucketOf(top, top.first + i) == i);
  }

  // 3 tokens: floor(offset * 64 / 3).
  const TokenRange three{100, 102};
  CHECK(LoadCounters::BucketOf(three, 100) == 0);
  CHECK(LoadCounters::BucketOf(three, 101) == 21);
  CHECK(LoadCounters::BucketOf(three, 102) == 42);
  // Outside the range: as its nearest end.
  CHECK(LoadCounters::BucketOf(three, 5) == 0);
  CHECK(LoadCounters::BucketOf(three, UINT64_MAX) == 42);

  // 100 tokens: every bucket gets one or two, in token order.
  const TokenRange hundred{1000, 1099};
  std::vector<int> tokens_per_bucket(LoadCounters::kBuckets);
  size_t previous = 0;
  for (uint64_t token = hundred.first; token <= hundred.last; ++token) {
    const size_t bucket = LoadCounters::BucketOf(hundred, token);
    REQUIRE(bucket < LoadCounters::kBuckets);
    CHECK(bucket >= previous);
    previous = bucket;
    ++tokens_per_bucket[bucket];
  }
  for (int count : tokens_per_bucket) CHECK((count == 1 || count == 2));
  CHECK(LoadCounters::BucketOf(hundred, 1001) == 0);  // 64 / 100.
  CHECK(LoadCounters::BucketOf(hundred, 1002) == 1);  // 128 / 100.
  CHECK(LoadCounters::BucketOf(hundred, 1099) == 63);
}

TEST_CASE("recorded operations show in the bucket of their token") {
  LoadCounters counters(kRing, std::chrono::milliseconds(1));
  counters.Tick(0);
  counters.RecordRead(0, 10);
  counters.RecordWrite(UINT64_MAX, 20);
  counters.RecordWrite(UINT64_MAX, 20);
  counters.RecordRead(1ull << 63, 5);
  counters.Tick(1000);  // With a 1 ms half-life, a 1 s period's rates are its counts per second.
  const LoadSnapshot snapshot = counters.Snapshot();
  REQUIRE(snapshot.buckets.size() == LoadCounters::kBuckets);
  CHECK(snapshot.range == kRing);
  CHECK(snapshot.buckets[0].read_ops_per_s == Approx(1));
  CHECK(snapshot.buckets[0].bytes_per_s == Approx(10));
  CHECK(snapshot.buckets[32].read_ops_per_s == Approx(1));
  CHECK(snapshot.buckets[63].write_ops_per_s == Approx(2));
  CHECK(snapshot.buckets[63].bytes_per_s == Approx(40));
  CHECK(snapshot.buckets[1].read_ops_per_s == 0);
  CHECK(snapshot.read_ops_per_s == Approx(2));
  CHECK(snapshot.write_ops_per_s == Approx(2));
  CHECK(snapshot.ops_per_s() == Approx(4));
  CHECK(snapshot.bytes_per_s == Approx(55));
}

TEST_CASE("the first tick starts the clock and drops what was recorded before it") {
  LoadCounters counters(kRing, std::chrono::milliseconds(1));
  for (int i = 0; i < 100; ++i) counters.RecordRead(7, 1);
  counters.Tick(5000);
  counters.Tick(6000);
  CHECK(counters.Snapshot().read_ops_per_s == 0);
  counters.RecordRead(7, 1);
  counters.Tick(7000);
  CHECK(counters.Snapshot().read_ops_per_s == Approx(1));
}

TEST_CASE("a rate with no new traffic halves every half-life") {
  LoadCounters counters(kRing, std::chrono::seconds(10));
  counters.Tick(0);
  for (int i = 0; i < 1000; ++i) counters.RecordWrite(42, 100);
  counters.Tick(1000);
  const LoadSnapshot first = counters.Snapshot();
  // 1000 ops/s over 1 s of a 10 s half-life: weighted by 1 - 0.5^(1/10).
  const double weight = 1 - std::exp2(-0.1);
  CHECK(first.write_ops_per_s == Approx(1000 * weight));
  CHECK(first.bytes_per_s == Approx(100000 * weight));
  CHECK(first.read_ops_per_s == 0);

  counters.Tick(11000);  // One half-life later, nothing recorded meanwhile.
  const LoadSnapshot later = counters.Snapshot();
  CHECK(later.write_ops_per_s == Approx(first.write_ops_per_s / 2));
  CHECK(later.bytes_per_s == Approx(first.bytes_per_s / 2));
  CHECK(later.buckets[0].write_ops_per_s == Approx(first.buckets[0].write_ops_per_s / 2));

  counters.Tick(31000);  // Two more: an eighth of the first.
  CHECK(counters.Snapshot().write_ops_per_s == Approx(first.write_ops_per_s / 8));
  counters.Tick(31000);  // A tick that does not advance the clock changes nothing.
  counters.Tick(30000);
  CHECK(counters.Snapshot().write_ops_per_s == Approx(first.write_ops_per_s / 8));
}

TEST_CASE("rates approach a steady input within a few half-lives") {
  // 6400 tokens: 100 per bucket.
  const TokenRange range{1000, 1000 + 6399};
  LoadCounters counters(range, std::chrono::seconds(1));
  counters.Tick(0);
  // Every 500 ms for 10 s (ten half-lives): 128 reads of 10 bytes, two per bucket, and 32 writes
  // of 1000 bytes into bucket 5. That is 256 reads/s (4 per bucket) and 64 writes/s.
  int64_t now = 0;
  for (int tick = 0; tick < 20; ++tick) {
    for (uint64_t i = 0; i < 128; ++i) {
      counters.RecordRead(range.first + (i % 64) * 100 + i / 64, 10);
    }
    for (uint64_t i = 0; i < 32; ++i) counters.RecordWrite(range.first + 500 + i, 1000);
    now += 500;
    counters.Tick(now);
  }
  const LoadSnapshot snapshot = counters.Snapshot();
  // After ten half-lives a rate is within 0.1 % of its input.
  CHECK(snapshot.read_ops_per_s == Approx(256).epsilon(0.002));
  CHECK(snapshot.write_ops_per_s == Approx(64).epsilon(0.002));
  CHECK(snapshot.bytes_per_s == Approx(256 * 10 + 64 * 1000).epsilon(0.002));
  for (size_t b = 0; b < LoadCounters::kBuckets; ++b) {
    INFO("bucket " << b);
    CHECK(snapshot.buckets[b].read_ops_per_s == Approx(4).epsilon(0.002));
    CHECK(snapshot.buckets[b].write_ops_per_s == Approx(b == 5 ? 64 : 0).epsilon(0.002));
  }
}

TEST_CASE("the hot tokens find a token that receives most of the traffic") {
  LoadCounters counters(kRing);
  std::mt19937_64 rng(7);
  std::bernoulli_distribution to_hot(0.7);
  const uint64_t hot = 0x1234'5678'9abc'def0;
  for (int i = 0; i < 32000; ++i) {
    const uint64_t token = to_hot(rng) ? hot : rng();
    if (i % 2 == 0) {
      counters.RecordRead(token, 10);
    } else {
      counters.RecordWrite(token, 10);
    }
  }
  LoadSnapshot snapshot = counters.Snapshot();
  REQUIRE_FALSE(snapshot.hot_tokens.empty());
  CHECK(snapshot.hot_tokens.size() <= LoadCounters::kTopK);
  CHECK(snapshot.hot_tokens[0].token == hot);
  // 2000 samples, 70 % of them the hot token's.
  CHECK(snapshot.hot_tokens[0].share > 0.6);
  CHECK(snapshot.hot_tokens[0].share < 0.8);
  for (size_t i = 1; i < snapshot.hot_tokens.size(); ++i) {
    CHECK(snapshot.hot_tokens[i].share <= snapshot.hot_tokens[i - 1].share);
    CHECK(snapshot.hot_tokens[i].share < 0.05);
  }
}

TEST_CASE("the hot-token sketch decays so that a new hot token overtakes an old one") {
  LoadCounters counters(kRing, std::chrono::seconds(1));
  const uint64_t old_hot = 11, new_hot = 1ull << 60;
  counters.Tick(0);
  for (int i = 0; i < 16000; ++i) counters.RecordRead(old_hot, 1);
  counters.Tick(1000);
  REQUIRE_FALSE(counters.Snapshot().hot_tokens.empty());
  CHECK(counters.Snapshot().hot_tokens[0].token == old_hot);
  // A minute later (60 half-lives) a tenth of that traffic goes to another token. Without the
  // decay the old token's 1000 samples would still outweigh the new one's 100.
  counters.Tick(61000);
  for (int i = 0; i < 1600; ++i) counters.RecordRead(new_hot, 1);
  const LoadSnapshot snapshot = counters.Snapshot();
  REQUIRE_FALSE(snapshot.hot_tokens.empty());
  CHECK(snapshot.hot_tokens[0].token == new_hot);
  CHECK(snapshot.hot_tokens[0].share > 0.99);
}

TEST_CASE("recording from four threads at once loses no count") {
  // A 1 ms half-life: the rates after a 1 s period are exactly its counts per second
  // (decay 2^-1000).
  LoadCounters counters(kRing, std::chrono::milliseconds(1));
  counters.Tick(0);
  constexpr int kThreads = 4;
  constexpr uint64_t kOps = 50000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&counters, t] {
      std::mt19937_64 rng(t + 1);
      for (uint64_t i = 0; i < kOps; ++i) {
        // A quarter on one token (one bucket shared by all threads), the rest anywhere.
        const uint64_t token = i % 4 == 0 ? 42 : rng();
        if (i % 3 == 0) {
          counters.RecordWrite(token, 7);
        } else {
          counters.RecordRead(token, 3);
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  counters.Tick(1000);
  const LoadSnapshot snapshot = counters.Snapshot();
  const double writes = kThreads * static_cast<double>((kOps + 2) / 3);  // i % 3 == 0.
  const double reads = kThreads * static_cast<double>(kOps) - writes;
  CHECK(snapshot.write_ops_per_s == Approx(writes).epsilon(1e-12));
  CHECK(snapshot.read_ops_per_s == Approx(reads).epsilon(1e-12));
  CHECK(snapshot.bytes_per_s == Approx(writes * 7 + reads * 3).epsilon(1e-12));
  double bucket_ops = 0;
  for (const LoadSnapshot::Bucket& bucket : snapshot.buckets) {
    bucket_ops += bucket.read_ops_per_s + bucket.write_ops_per_s;
  }
  CHECK(bucket_ops == Approx(kThreads * static_cast<double>(kOps)).epsilon(1e-12));
  // Bucket 0 has at least the shared token's quarter.
  CHECK(snapshot.buckets[0].read_ops_per_s + snapshot.buckets[0].write_ops_per_s >=
        kThreads * static_cast<double>(kOps / 4));
}

}  // namespace
}  // namespace scrollback
