#include "generators.h"

#include <algorithm>
#include <cmath>
#include <functional>

namespace scrollback::ycsb {

namespace {

// SplitMix64: a fast, well-mixed sequence from any seed.
uint64_t SplitMix(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

const std::vector<std::string>& Vocabulary() {
  static const std::vector<std::string> words = [] {
    std::vector<std::string> out;
    uint64_t state = 42;
    for (int i = 0; i < 2048; ++i) {
      std::string word(2 + SplitMix(state) % 8, 'a');
      for (char& c : word) c = static_cast<char>('a' + SplitMix(state) % 26);
      out.push_back(std::move(word));
    }
    return out;
  }();
  return words;
}

}  // namespace

std::string TextBody(uint64_t n, size_t bytes) {
  const auto& words = Vocabulary();
  std::string body;
  body.reserve(bytes + 10);
  uint64_t state = n * 0x2545F4914F6CDD1Dull + 1;
  while (body.size() < bytes) {
    if (!body.empty()) body += ' ';
    body += words[SplitMix(state) % words.size()];
  }
  body.resize(bytes);
  return body;
}

uint64_t FnvHash64(uint64_t value) {
  constexpr uint64_t kOffsetBasis = 0xCBF29CE484222325ull;
  constexpr uint64_t kPrime = 1099511628211ull;
  uint64_t hash = kOffsetBasis;
  for (int i = 0; i < 8; ++i) {
    hash ^= value & 0xff;
    hash *= kPrime;
    value >>= 8;
  }
  // YCSB returns Math.abs of the signed value.
  auto signed_hash = static_cast<int64_t>(hash);
  return signed_hash < 0 ? static_cast<uint64_t>(-(signed_hash + 1)) + 1 : hash;
}

ZipfianGenerator::ZipfianGenerator(uint64_t lo, uint64_t hi, double theta, double zetan)
    : lo_(lo), items_(hi - lo + 1), theta_(theta) {
  zeta2theta_ = Zeta(2, theta_);
  alpha_ = 1.0 / (1.0 - theta_);
  zetan_ = zetan > 0 ? zetan : Zeta(items_, theta_);
  count_for_zeta_ = items_;
  eta_ = (1 - std::pow(2.0 / items_, 1 - theta_)) / (1 - zeta2theta_ / zetan_);
}

double ZipfianGenerator::ZetaFrom(uint64_t st, uint64_t n, double theta, double initial) {
  double sum = initial;
  for (uint64_t i = st; i < n; ++i) sum += 1 / std::pow(static_cast<double>(i + 1), theta);
  return sum;
}

uint64_t ZipfianGenerator::NextWithin(Rng& rng, uint64_t items) {
  if (items > count_for_zeta_) {
    // Inserts grew the item set: extend zeta incrementally (YCSB does the same).
    zetan_ = ZetaFrom(count_for_zeta_, items, theta_, zetan_);
    count_for_zeta_ = items;
    eta_ = (1 - std::pow(2.0 / items, 1 - theta_)) / (1 - zeta2theta_ / zetan_);
  }
  const double u = NextDouble(rng);
  const double uz = u * zetan_;
  if (uz < 1.0) return lo_;
  if (uz < 1.0 + std::pow(0.5, theta_)) return lo_ + 1;
  auto offset = static_cast<uint64_t>(static_cast<double>(count_for_zeta_) *
                                      std::pow(eta_ * u - eta_ + 1, alpha_));
  return lo_ + std::min(offset, items - 1);
}

void InsertCounter::Acknowledge(uint64_t key) {
  std::lock_guard lock(mu_);
  done_.push_back(key);
  std::push_heap(done_.begin(), done_.end(), std::greater<>());
  uint64_t limit = limit_.load();
  while (!done_.empty() && done_.front() == limit) {
    std::pop_heap(done_.begin(), done_.end(), std::greater<>());
    done_.pop_back();
    ++limit;
  }
  limit_.store(limit);
}

}  // namespace scrollback::ycsb
