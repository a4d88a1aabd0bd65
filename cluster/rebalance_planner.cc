#include "scrollback/cluster/rebalance_planner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <optional>

namespace scrollback {
namespace {

using u128 = unsigned __int128;

// A move must lower the larger load of its two nodes by more than rounding: relative slack.
constexpr double kSlack = 1e-9;

// Loads as reported; negative and non-finite figures count as 0.
double Sane(double x) { return std::isfinite(x) && x > 0 ? x : 0; }

// printf-style, for reasons.
template <typename... Args>
std::string Format(const char* format, Args... args) {
  const int size = std::snprintf(nullptr, 0, format, args...);
  if (size <= 0) return {};
  std::string out(static_cast<size_t>(size), '\0');
  std::snprintf(out.data(), out.size() + 1, format, args...);
  return out;
}

unsigned long long Ull(uint64_t x) { return x; }

// Tokens in `range`: up to 2^64.
u128 Span(const TokenRange& range) { return static_cast<u128>(range.last - range.first) + 1; }

// The first token of bucket `bucket` in 0..kShardLoadBuckets (the header's cut); the end one is
// range.last + 1, which may be 2^64.
u128 BucketStart(const TokenRange& range, size_t bucket) {
  return range.first +
         (static_cast<u128>(bucket) * Span(range) + kShardLoadBuckets - 1) / kShardLoadBuckets;
}

// REQUIRES: range.Contains(token).
size_t BucketOf(const TokenRange& range, uint64_t token) {
  return static_cast<size_t>(static_cast<u128>(token - range.first) * kShardLoadBuckets /
                             Span(range));
}

// How a shard's load spreads over its buckets: shares adding up to 1, or empty when unknown
// (which reads as uniform over the tokens).
std::vector<double> Shape(const ShardLoad* load) {
  std::vector<double> shape;
  if (load == nullptr || load->bucket_ops.size() != kShardLoadBuckets) return shape;
  double total = 0;
  for (double ops : load->bucket_ops) total += Sane(ops);
  if (total <= 0) return shape;
  shape.reserve(kShardLoadBuckets);
  for (double ops : load->bucket_ops) shape.push_back(Sane(ops) / total);
  return shape;
}

// The share of the load on the tokens of `range` below `token`, linear within a bucket.
// REQUIRES: range.first <= token <= range.last + 1.
double ShareBelow(const TokenRange& range, const std::vector<double>& shape, u128 token) {
  const u128 span = Span(range);
  const u128 offset = token - range.first;
  if (offset >= span) return 1;
  if (shape.empty()) return static_cast<double>(offset) / static_cast<double>(span);
  const size_t bucket = BucketOf(range, static_cast<uint64_t>(token));
  double below = 0;
  for (size_t i = 0; i < bucket; ++i) below += shape[i];
  const u128 start = BucketStart(range, bucket);
  const u128 end = BucketStart(range, bucket + 1);  // > start: the bucket holds `token`.
  below += shape[bucket] * static_cast<double>(token - start) / static_cast<double>(end - start);
  return std::min(below, 1.0);
}

struct Shard {
  const ShardInfo* info = nullptr;
  const ShardLoad* load = nullptr;  // nullptr: none reported.
  double ops = 0;
  uint64_t size_bytes = 0;
  size_t primary = 0;            // Node index.
  std::vector<size_t> replicas;  // Node indexes.
  // It stays where it is and stays whole: a split or a switchover of it is in progress, or it
  // is split in this round.
  bool pinned = false;
};

struct Cluster {
  std::vector<std::string> nodes;  // Node ids, sorted: index order is id order.
  std::vector<Shard> shards;       // By shard id: index order is id order.
  std::vector<double> load;        // Per node.
};

size_t MostLoaded(const std::vector<double>& load) {
  size_t most = 0;
  for (size_t n = 1; n < load.size(); ++n) {
    if (load[n] > load[most]) most = n;
  }
  return most;
}

// Rule 3 on `cluster`, which it updates (node loads, primaries, replicas): at most `budget`
// moves, each shard at most once.
std::vector<PlannedMove> PlanMoves(Cluster& cluster, double target, double mean, size_t budget) {
  struct Candidate {
    size_t shard;
    size_t to;
    bool switchover;
    double larger;  // The larger load of the two nodes after the move.
  };
  std::vector<double>& load = cluster.load;
  std::vector<PlannedMove> moves;
  std::vector<bool> moved(cluster.shards.size(), false);
  std::vector<size_t> by_load(cluster.nodes.size());
  // Nodes over target that no move can relieve now (say, their load is one shard being split
  // this round): passed over, so the next busiest nodes still shed load.
  std::vector<bool> stuck(cluster.nodes.size(), false);
  while (moves.size() < budget && !cluster.nodes.empty()) {
    size_t hi = cluster.nodes.size();
    for (size_t n = 0; n < load.size(); ++n) {
      if (!stuck[n] && (hi == cluster.nodes.size() || load[n] > load[hi])) hi = n;
    }
    if (hi == cluster.nodes.size() || load[hi] <= target) break;
    std::iota(by_load.begin(), by_load.end(), size_t{0});
    std::sort(by_load.begin(), by_load.end(),
              [&](size_t a, size_t b) { return load[a] != load[b] ? load[a] < load[b] : a < b; });
    auto better = [&](const Candidate& a, const Candidate& b) {
      if (a.switchover != b.switchover) return a.switchover;
      if (a.larger != b.larger) return a.larger < b.larger;
      const uint64_t a_size = cluster.shards[a.shard].size_bytes;
      const uint64_t b_size = cluster.shards[b.shard].size_bytes;
      if (!a.switchover && a_size != b_size) return a_size < b_size;
      if (a.shard != b.shard) return a.shard < b.shard;
      return a.to < b.to;
    };
    std::optional<Candidate> best;
    auto consider = [&](size_t s, size_t to, bool switchover) {
      const double ops = cluster.shards[s].ops;
      const double to_after = load[to] + ops;
      if (to_after >= load[hi] * (1 - kSlack)) return;  // Would not lower the pair's maximum.
      const Candidate candidate{s, to, switchover, std::max(load[hi] - ops, to_after)};
      if (!best || better(candidate, *best)) best = candidate;
    };
    for (size_t s = 0; s < cluster.shards.size(); ++s) {
      const Shard& shard = cluster.shards[s];
      if (shard.primary != hi || shard.pinned || moved[s] || shard.ops <= 0) continue;
      for (size_t replica : shard.replicas) consider(s, replica, /*switchover=*/true);
      for (size_t n : by_load) {  // The least loaded node holding no copy.
        if (n == hi ||
            std::find(shard.replicas.begin(), shard.replicas.end(), n) != shard.replicas.end()) {
          continue;
        }
        consider(s, n, /*switchover=*/false);
        break;
      }
    }
    if (!best) {
      stuck[hi] = true;
      continue;
    }

    Shard& shard = cluster.shards[best->shard];
    const size_t to = best->to;
    PlannedMove move;
    move.shard_id = shard.info->shard_id;
    move.from = cluster.nodes[hi];
    move.to = cluster.nodes[to];
    move.switchover = best->switchover;
    move.ops = shard.ops;
    move.reason = Format(
        "%s carries %.2fx the mean node load: %s of shard %llu (%.0f ops/s) to %s "
        "(%.2fx -> %.2fx)",
        move.from.c_str(), load[hi] / mean, move.switchover ? "switchover" : "copy",
        Ull(move.shard_id), shard.ops, move.to.c_str(), load[to] / mean,
        (load[to] + shard.ops) / mean);
    load[hi] -= shard.ops;
    load[to] += shard.ops;
    if (move.switchover) std::replace(shard.replicas.begin(), shard.replicas.end(), to, hi);
    shard.primary = to;
    moved[best->shard] = true;
    moves.push_back(std::move(move));
  }
  return moves;
}

bool Splittable(const Shard& shard, const PlannerOptions& options) {
  return !shard.pinned && shard.ops > 0 && shard.ops >= options.min_ops_to_split &&
         shard.info->range.last > shard.info->range.first;
}

// Rule 1a or 1b for one candidate. REQUIRES: Splittable(shard).
std::vector<PlannedSplit> SplitsFor(const Shard& shard, const PlannerOptions& options,
                                    const std::string& why) {
  const TokenRange& range = shard.info->range;
  const uint64_t id = shard.info->shard_id;
  const double ops = shard.ops;
  std::vector<double> shape = Shape(shard.load);
  std::vector<PlannedSplit> splits;

  const HotToken* top = nullptr;
  if (shard.load != nullptr) {
    for (const HotToken& hot : shard.load->hot_tokens) {
      const double share = Sane(hot.share);
      if (share <= 0 || !range.Contains(hot.token)) continue;
      if (top == nullptr || share > Sane(top->share) ||
          (share == Sane(top->share) && hot.token < top->token)) {
        top = &hot;
      }
    }
  }
  const double top_share = top == nullptr ? 0 : std::min(Sane(top->share), 1.0);
  if (top != nullptr && top_share >= options.isolate_share) {
    // (a) Isolate token t: [first, t - 1], [t, t], [t + 1, last].
    const uint64_t t = top->token;
    const double hot_ops = top_share * ops;
    const double rest_ops = ops - hot_ops;
    // The rest spreads as the buckets say, less the hot token's share of its own bucket.
    if (!shape.empty()) {
      double& own = shape[BucketOf(range, t)];
      own = std::max(0.0, own - top_share);
      const double total = std::accumulate(shape.begin(), shape.end(), 0.0);
      if (total > 0) {
        for (double& share : shape) share /= total;
      } else {
        shape.clear();
      }
    }
    const double below = rest_ops * ShareBelow(range, shape, t);
    const double above = rest_ops - below;
    const std::string reason = Format("token %llu carries %.0f%% of shard %llu's %.0f ops/s; ",
                                      Ull(t), top_share * 100, Ull(id), ops) +
                               why + "; isolated";
    if (t > range.first) splits.push_back({id, t, below, ops - below, reason});
    if (t < range.last) {
      splits.push_back({id, t + 1, t > range.first ? hot_ops : below + hot_ops, above, reason});
    }
    return splits;
  }

  // (b) At the bucket boundary whose cumulative share is closest to one half.
  const u128 span = Span(range);
  u128 at = 0;
  double left = 0;
  double distance = std::numeric_limits<double>::infinity();
  double cumulative = 0;
  for (size_t j = 1; j < kShardLoadBuckets; ++j) {
    if (!shape.empty()) cumulative += shape[j - 1];
    const u128 start = BucketStart(range, j);
    if (start > range.last) break;  // Boundaries only grow; span >= 2 makes j = 1 valid.
    const double share = shape.empty()
                             ? static_cast<double>(start - range.first) / static_cast<double>(span)
                             : std::min(cumulative, 1.0);
    if (std::abs(share - 0.5) < distance) {
      distance = std::abs(share - 0.5);
      at = start;
      left = share;
    }
  }
  const std::string reason = Format("shard %llu: %.0f ops/s; ", Ull(id), ops) + why +
                             Format("; split at its load median (%.0f%% left)", left * 100);
  splits.push_back({id, static_cast<uint64_t>(at), ops * left, ops - ops * left, reason});
  return splits;
}

}  // namespace

RebalancePlan PlanRebalance(const ShardMap& map, const std::vector<ShardLoad>& loads,
                            const PlannerOptions& options) {
  Cluster cluster;
  for (const NodeInfo& node : map.nodes()) cluster.nodes.push_back(node.node_id);
  std::sort(cluster.nodes.begin(), cluster.nodes.end());
  cluster.nodes.erase(std::unique(cluster.nodes.begin(), cluster.nodes.end()), cluster.nodes.end());
  auto index_of = [&](const std::string& id) -> std::optional<size_t> {
    auto it = std::lower_bound(cluster.nodes.begin(), cluster.nodes.end(), id);
    if (it == cluster.nodes.end() || *it != id) return std::nullopt;
    return static_cast<size_t>(it - cluster.nodes.begin());
  };

  std::map<uint64_t, const ShardLoad*> load_of;
  for (const ShardLoad& load : loads) load_of.emplace(load.shard_id, &load);  // First wins.
  for (const ShardInfo& info : map.shards()) {
    // ShardMap::Make checks that every primary and replica is a listed node.
    const std::optional<size_t> primary = index_of(info.primary);
    if (!primary) continue;
    Shard shard;
    shard.info = &info;
    shard.primary = *primary;
    shard.pinned = info.split_at != 0 || !info.switch_to.empty() || !info.move_to.empty() ||
                   info.merge_into != 0;
    for (const std::string& replica : info.replicas) {
      const std::optional<size_t> n = index_of(replica);
      if (n && *n != *primary) shard.replicas.push_back(*n);
    }
    if (auto it = load_of.find(info.shard_id); it != load_of.end()) {
      shard.load = it->second;
      shard.ops = Sane(it->second->ops_per_s);
      shard.size_bytes = it->second->size_bytes;
    }
    cluster.shards.push_back(std::move(shard));
  }
  std::sort(cluster.shards.begin(), cluster.shards.end(),
            [](const Shard& a, const Shard& b) { return a.info->shard_id < b.info->shard_id; });
  cluster.load.assign(cluster.nodes.size(), 0.0);
  for (const Shard& shard : cluster.shards) cluster.load[shard.primary] += shard.ops;

  RebalancePlan plan;
  const size_t node_count = cluster.nodes.size();
  const double total = std::accumulate(cluster.load.begin(), cluster.load.end(), 0.0);
  const double mean = node_count == 0 ? 0 : total / static_cast<double>(node_count);
  const double ratio = std::max(1.0, options.target_ratio);
  const double target = ratio * mean;
  auto max_over_mean = [&]() {
    return mean > 0 ? cluster.load[MostLoaded(cluster.load)] / mean : 0.0;
  };
  for (size_t n = 0; n < node_count; ++n) {
    plan.node_load_before[cluster.nodes[n]] = cluster.load[n];
  }
  plan.max_over_mean_before = max_over_mean();
  auto finish = [&]() {
    for (size_t n = 0; n < node_count; ++n) {
      plan.node_load_after[cluster.nodes[n]] = cluster.load[n];
    }
    plan.max_over_mean_after = max_over_mean();
    std::sort(plan.splits.begin(), plan.splits.end(),
              [](const PlannedSplit& a, const PlannedSplit& b) {
                return a.shard_id != b.shard_id ? a.shard_id < b.shard_id : a.at_token < b.at_token;
              });
  };
  if (mean <= 0 || cluster.load[MostLoaded(cluster.load)] <= target) {
    finish();
    return plan;
  }

  // Rule 1: candidates, and why each is one.
  std::vector<std::string> why(cluster.shards.size());
  std::vector<size_t> candidates;
  const double coarse = std::min(options.split_fraction_of_node_mean, ratio) * mean;
  for (size_t s = 0; s < cluster.shards.size(); ++s) {
    const Shard& shard = cluster.shards[s];
    if (!Splittable(shard, options) || cluster.load[shard.primary] <= target ||
        shard.ops <= coarse) {
      continue;
    }
    why[s] = Format("%.2fx the mean node load on %s, which carries %.2fx", shard.ops / mean,
                    cluster.nodes[shard.primary].c_str(), cluster.load[shard.primary] / mean);
    candidates.push_back(s);
  }
  {
    Cluster trial = cluster;
    (void)PlanMoves(trial, target, mean, trial.shards.size());  // Only its end state counts.
    for (size_t n = 0; n < node_count; ++n) {
      if (trial.load[n] <= target) continue;
      std::optional<size_t> hottest;
      for (size_t s = 0; s < trial.shards.size(); ++s) {
        const Shard& shard = trial.shards[s];
        if (shard.primary != n || !Splittable(shard, options)) continue;
        if (!hottest || shard.ops > trial.shards[*hottest].ops) hottest = s;
      }
      if (!hottest) continue;
      if (why[*hottest].empty()) {
        why[*hottest] = Format("moves alone leave %s at %.2fx the mean node load",
                               cluster.nodes[n].c_str(), trial.load[n] / mean);
      }
      candidates.push_back(*hottest);
    }
  }
  std::sort(candidates.begin(), candidates.end(), [&](size_t a, size_t b) {
    const double a_ops = cluster.shards[a].ops, b_ops = cluster.shards[b].ops;
    return a_ops != b_ops ? a_ops > b_ops : a < b;
  });
  candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
  const size_t split_budget = options.max_splits_per_round;
  const size_t shard_count = map.shards().size();
  for (size_t s : candidates) {
    std::vector<PlannedSplit> splits = SplitsFor(cluster.shards[s], options, why[s]);
    if (plan.splits.size() + splits.size() > split_budget) continue;
    if (options.max_shard_count > 0 &&
        shard_count + plan.splits.size() + splits.size() > options.max_shard_count) {
      continue;
    }
    for (PlannedSplit& split : splits) plan.splits.push_back(std::move(split));
    cluster.shards[s].pinned = true;
  }

  // Rule 3, on what the splits left movable.
  plan.moves = PlanMoves(cluster, target, mean, options.max_moves_per_round);
  finish();
  return plan;
}

}  // namespace scrollback
