// Request generators with YCSB's definitions (YCSB core: site.ycsb.generator), so that figures
// compare with published YCSB results:
//
//   UniformGenerator          every item in [lo, hi] equally likely
//   ZipfianGenerator          item i (0-based) with probability ~ 1 / (i+1)^theta, by Gray et
//                             al.'s method ("Quickly generating billion-record synthetic
//                             databases", SIGMOD 1994), as YCSB's ZipfianGenerator
//   ScrambledZipfianGenerator zipfian popularity, hot items spread over the key space by FNV-1a
//                             hashing (YCSB: zipfian over 10^10 items, zetan precomputed)
//   SkewedLatestGenerator     YCSB's "latest": the most recently inserted items are hottest
//   InsertCounter             YCSB's acknowledged counter: the highest key below which every
//                             insert has completed
//
// Generators take the random source as an argument (seeded by the caller) and are not
// thread-safe unless noted: give each client thread its own.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <random>
#include <string>
#include <vector>

namespace scrollback::ycsb {

using Rng = std::mt19937_64;

// YCSB's 64-bit FNV-1a over the 8 little-endian bytes of `value`, as Math.abs(long).
uint64_t FnvHash64(uint64_t value);

// `bytes` of chat-like text for item `n` (the same text for the same n): words of 2 to 9
// letters drawn from a fixed vocabulary of 2,048, separated by spaces. Compresses like text
// (about 2x with LZ4), not like a repeated byte, so that compression figures are honest.
std::string TextBody(uint64_t n, size_t bytes);

// A double in [0, 1).
inline double NextDouble(Rng& rng) {
  return static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0);
}

class UniformGenerator {
 public:
  UniformGenerator(uint64_t lo, uint64_t hi) : lo_(lo), span_(hi - lo + 1) {}
  uint64_t Next(Rng& rng) { return lo_ + rng() % span_; }

 private:
  uint64_t lo_;
  uint64_t span_;
};

class ZipfianGenerator {
 public:
  static constexpr double kDefaultTheta = 0.99;  // YCSB's ZIPFIAN_CONSTANT.

  // Items [lo, hi]. `zetan` may be given when known (it costs O(items) to compute).
  ZipfianGenerator(uint64_t lo, uint64_t hi, double theta = kDefaultTheta, double zetan = 0);

  uint64_t Next(Rng& rng) { return NextWithin(rng, items_); }
  // Draws among the first `items` items, growing (never shrinking) the item count first; used
  // by SkewedLatestGenerator as inserts add items. REQUIRES: items >= 1.
  uint64_t NextWithin(Rng& rng, uint64_t items);

  // zeta(n, theta) = sum over i = 1..n of 1 / i^theta.
  static double Zeta(uint64_t n, double theta) { return ZetaFrom(0, n, theta, 0); }

 private:
  // zeta(n) given zeta(st) = initial.
  static double ZetaFrom(uint64_t st, uint64_t n, double theta, double initial);

  uint64_t lo_;
  uint64_t items_;
  double theta_;
  double zeta2theta_;
  double alpha_;
  double zetan_;
  double eta_;
  uint64_t count_for_zeta_;  // Items zetan_ covers.
};

class ScrambledZipfianGenerator {
 public:
  static constexpr uint64_t kItemCount = 10'000'000'000ull;  // YCSB's ITEM_COUNT.
  static constexpr double kZetan = 26.46902820178302;        // zeta(10^10, 0.99).

  ScrambledZipfianGenerator(uint64_t lo, uint64_t hi)
      : lo_(lo),
        items_(hi - lo + 1),
        zipfian_(0, kItemCount, ZipfianGenerator::kDefaultTheta, kZetan) {}
  uint64_t Next(Rng& rng) { return lo_ + FnvHash64(zipfian_.Next(rng)) % items_; }

 private:
  uint64_t lo_;
  uint64_t items_;
  ZipfianGenerator zipfian_;
};

// Keys handed out for inserts, and the highest key below which every insert is acknowledged
// (readers never ask for a key whose insert has not completed). Thread-safe.
class InsertCounter {
 public:
  explicit InsertCounter(uint64_t start) : next_(start), limit_(start) {}
  // The next key to insert.
  uint64_t Next() { return next_.fetch_add(1); }
  // Marks `key` inserted; advances the acknowledged limit over every contiguous finished key.
  void Acknowledge(uint64_t key);
  // Keys below this are all inserted.
  uint64_t Limit() const { return limit_.load(); }

 private:
  std::atomic<uint64_t> next_;
  std::atomic<uint64_t> limit_;
  std::mutex mu_;
  std::vector<uint64_t> done_;  // GUARDED_BY(mu_): finished keys above limit_ (a min-heap).
};

// YCSB's SkewedLatestGenerator: next = newest - zipfian(newest), so the newest items are the
// hottest and the popularity follows inserts.
class SkewedLatestGenerator {
 public:
  explicit SkewedLatestGenerator(const InsertCounter& counter)
      : counter_(counter), zipfian_(0, std::max<uint64_t>(counter.Limit(), 1) - 1) {}
  // REQUIRES: at least one insert acknowledged.
  uint64_t Next(Rng& rng) {
    uint64_t max = counter_.Limit() - 1;
    return max - zipfian_.NextWithin(rng, max + 1);
  }

 private:
  const InsertCounter& counter_;
  ZipfianGenerator zipfian_;
};

}  // namespace scrollback::ycsb
