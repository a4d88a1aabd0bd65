#include "ycsb/generators.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <map>

#include "ycsb/workload.h"

namespace scrollback::ycsb {
namespace {

// Gray et al.'s method (and so YCSB's) is exact for the two hottest ranks and approximates the
// rest (rank 3 comes out ~17 % heavy, as in YCSB); the bounds below say so.
TEST_CASE("zipfian frequencies of the top ranks match 1 / (rank^theta * zeta(n))") {
  constexpr uint64_t kItems = 1000;
  constexpr int kDraws = 1'000'000;
  ZipfianGenerator zipf(0, kItems - 1);
  Rng rng(42);
  std::vector<int> counts(kItems);
  uint64_t max_seen = 0;
  for (int i = 0; i < kDraws; ++i) {
    uint64_t v = zipf.Next(rng);
    max_seen = std::max(max_seen, v);
    ++counts[std::min(v, kItems - 1)];
  }
  CHECK(max_seen < kItems);
  const double zetan = ZipfianGenerator::Zeta(kItems, ZipfianGenerator::kDefaultTheta);
  for (int rank = 1; rank <= 5; ++rank) {
    double expected = 1.0 / (std::pow(rank, ZipfianGenerator::kDefaultTheta) * zetan);
    double observed = static_cast<double>(counts[rank - 1]) / kDraws;
    INFO("rank " << rank << " expected " << expected << " observed " << observed);
    CHECK(observed == Approx(expected).epsilon(rank <= 2 ? 0.03 : 0.25));
  }
  // Popularity falls with rank.
  CHECK(counts[0] > counts[10]);
  CHECK(counts[10] > counts[500]);
}

TEST_CASE("scrambled zipfian keeps the skew but spreads hot keys over the key space") {
  constexpr uint64_t kItems = 100'000;
  ScrambledZipfianGenerator zipf(0, kItems - 1);
  Rng rng(7);
  std::map<uint64_t, int> counts;
  for (int i = 0; i < 500'000; ++i) ++counts[zipf.Next(rng)];
  CHECK(counts.rbegin()->first < kItems);
  std::vector<std::pair<int, uint64_t>> by_count;
  for (auto [key, n] : counts) by_count.emplace_back(n, key);
  std::sort(by_count.rbegin(), by_count.rend());
  // Skewed: the hottest key takes a large share (YCSB's ~zeta(10^10) tail makes it ~4%).
  CHECK(by_count[0].first > 500'000 / 100);
  // Spread: the 20 hottest keys are not bunched at the low end (as plain zipfian's would be).
  int low = 0;
  for (int i = 0; i < 20; ++i) low += by_count[i].second < kItems / 10;
  CHECK(low < 10);
}

TEST_CASE("the insert counter acknowledges only contiguous prefixes") {
  InsertCounter counter(100);
  CHECK(counter.Next() == 100);
  CHECK(counter.Next() == 101);
  CHECK(counter.Next() == 102);
  counter.Acknowledge(101);
  CHECK(counter.Limit() == 100);  // 100 is still in flight.
  counter.Acknowledge(100);
  CHECK(counter.Limit() == 102);
  counter.Acknowledge(102);
  CHECK(counter.Limit() == 103);
}

TEST_CASE("latest favours the newest records and follows inserts") {
  InsertCounter counter(0);
  for (int i = 0; i < 1000; ++i) counter.Acknowledge(counter.Next());
  SkewedLatestGenerator latest(counter);
  Rng rng(3);
  std::map<uint64_t, int> counts;
  for (int i = 0; i < 100'000; ++i) ++counts[latest.Next(rng)];
  CHECK(counts.rbegin()->first < 1000);
  CHECK(counts[999] > counts[990]);
  CHECK(counts[999] > 100'000 / 20);
  for (int i = 0; i < 500; ++i) counter.Acknowledge(counter.Next());
  int newest = 0;
  for (int i = 0; i < 10'000; ++i) newest += latest.Next(rng) == 1499;
  CHECK(newest > 10'000 / 20);  // The hot spot moved to the new newest record.
}

TEST_CASE("operation mixes follow the workload's proportions") {
  Rng rng(5);
  for (const std::string& name : Workload::Names()) {
    auto workload = Workload::Named(name);
    REQUIRE(workload);
    OpChooser chooser(*workload);
    std::map<Op, int> counts;
    constexpr int kDraws = 200'000;
    for (int i = 0; i < kDraws; ++i) ++counts[chooser.Next(rng)];
    for (auto [op, share] : workload->mix) {
      INFO("workload " << name << " op " << OpName(op));
      CHECK(static_cast<double>(counts[op]) / kDraws == Approx(share).margin(0.01));
    }
  }
  CHECK_FALSE(Workload::Named("z"));
}

TEST_CASE("a zipfian key chooser never returns a record that is not inserted yet") {
  InsertCounter counter(0);
  for (int i = 0; i < 50; ++i) counter.Acknowledge(counter.Next());
  KeyChooser keys(Distribution::kZipfian, 100, counter);
  Rng rng(9);
  uint64_t max_seen = 0;
  for (int i = 0; i < 10'000; ++i) max_seen = std::max(max_seen, keys.Next(rng));
  CHECK(max_seen < 50);
}

}  // namespace
}  // namespace scrollback::ycsb

#include "ycsb/histogram.h"

namespace scrollback::ycsb {
namespace {

TEST_CASE("latency percentiles are within 2 percent of the exact ones") {
  LatencyHistogram h;
  Rng rng(1);
  std::vector<uint64_t> values;
  for (int i = 0; i < 100'000; ++i) {
    uint64_t v = 1000 + rng() % 5'000'000;  // 1 us .. 5 ms in ns.
    values.push_back(v);
    h.Record(v);
  }
  std::sort(values.begin(), values.end());
  for (double p : {0.5, 0.95, 0.99, 0.999}) {
    uint64_t exact = values[static_cast<size_t>(p * values.size()) - 1];
    INFO("p" << p);
    CHECK(static_cast<double>(h.Percentile(p)) == Approx(exact).epsilon(0.02));
  }
  CHECK(h.count() == 100'000);
  CHECK(h.min() == values.front());
  CHECK(h.max() == values.back());
  LatencyHistogram other;
  other.Record(10);
  h.Merge(other);
  CHECK(h.min() == 10);
  CHECK(h.count() == 100'001);
}

}  // namespace
}  // namespace scrollback::ycsb
