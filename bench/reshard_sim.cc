// scrollback-reshard-sim: the rebalance planner at scale, without nodes (docs/resharding.md,
// "At scale"). A map of --nodes nodes and --shards shards (replication factor --rf) carries a
// zipfian load over its shards that drifts every round (--drift of the hottest shards hand their
// heat to random others); each round PlanRebalance plans, and the plan is applied to the map as
// the controller would (a split replaces a shard by two with new ids; a switchover swaps the
// primary with a replica; a copy replaces the source's copy by the target's). Reported per
// round and in total: planner time, splits and moves, max / mean node load before and after,
// and the bytes one change of today's single-value map writes (and every watcher reads).
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "scrollback/cluster/rebalance_planner.h"
#include "scrollback/router/shard_map.h"

namespace scrollback {
namespace {

struct Options {
  uint32_t nodes = 1000;
  uint32_t shards = 100'000;
  uint32_t rf = 3;
  int rounds = 30;
  double skew = 0.99;
  double drift = 0.01;
  uint32_t max_moves = 200;
  uint32_t max_splits = 50;
  uint64_t seed = 1;
  double total_ops = 10'000'000;  // The cluster's load, spread by the zipfian weights.
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

int Run(const Options& o) {
  std::mt19937_64 rng(o.seed);
  std::vector<NodeInfo> nodes;
  for (uint32_t i = 0; i < o.nodes; ++i) {
    nodes.push_back(
        {"n" + std::to_string(100000 + i), "10.0.0.1:" + std::to_string(7000 + i), "", 0});
  }
  std::vector<ShardInfo> shards = ShardMap::Uniform(1, o.shards, nodes, o.rf).shards();
  // Zipfian heat by rank, ranks given to shards in a random order.
  std::map<uint64_t, double> load;  // Shard id -> ops/s.
  {
    std::vector<double> weight(o.shards);
    double sum = 0;
    for (uint32_t r = 0; r < o.shards; ++r) sum += weight[r] = 1.0 / std::pow(r + 1.0, o.skew);
    std::vector<uint32_t> order(o.shards);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    for (uint32_t r = 0; r < o.shards; ++r) {
      load[shards[order[r]].shard_id] = o.total_ops * weight[r] / sum;
    }
  }
  uint64_t version = 1;
  fmt::print("{} nodes, {} shards, rf {}, zipf {:.2f}, drift {:.0f} % of the hottest per round\n",
             o.nodes, o.shards, o.rf, o.skew, o.drift * 100);
  const size_t map_bytes_start = ShardMap::Make(version, shards, nodes)->Serialize().size();
  std::vector<double> planner_ms;
  uint64_t total_moves = 0, total_switchovers = 0, total_splits = 0;
  double last_ratio = 0;
  PlannerOptions planner;
  planner.max_moves_per_round = o.max_moves;
  planner.max_splits_per_round = o.max_splits;
  for (int round = 0; round < o.rounds; ++round) {
    // Drift: the hottest shards hand their heat to random others.
    if (round > 0 && o.drift > 0) {
      std::vector<std::pair<double, uint64_t>> by_heat;
      for (const auto& [id, ops] : load) by_heat.emplace_back(ops, id);
      std::sort(by_heat.rbegin(), by_heat.rend());
      const size_t n = std::max<size_t>(1, static_cast<size_t>(o.drift * by_heat.size() / 10));
      for (size_t k = 0; k < n && k < by_heat.size(); ++k) {
        const uint64_t to = shards[rng() % shards.size()].shard_id;
        std::swap(load[by_heat[k].second], load[to]);
      }
    }
    auto map = ShardMap::Make(++version, shards, nodes);
    if (!map.ok()) {
      fmt::print(stderr, "bad map: {}\n", map.status().ToString());
      return 1;
    }
    std::vector<ShardLoad> loads;
    loads.reserve(shards.size());
    for (const ShardInfo& s : shards) loads.push_back(ShardLoad{s.shard_id, load[s.shard_id]});
    const auto started = std::chrono::steady_clock::now();
    RebalancePlan plan = PlanRebalance(*map, loads, planner);
    planner_ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started)
            .count());
    // Apply: splits, then moves.
    uint64_t next_id = map->NextShardId();
    std::map<uint64_t, size_t> index;
    for (size_t i = 0; i < shards.size(); ++i) index[shards[i].shard_id] = i;
    for (const PlannedSplit& split : plan.splits) {
      // The piece holding at_token now (an earlier split of the same shard may have cut it).
      size_t at = 0;
      while (at < shards.size() && !(shards[at].range.Contains(split.at_token))) ++at;
      ShardInfo left = shards[at], right = shards[at];
      if (split.at_token <= left.range.first) continue;
      left.shard_id = next_id++;
      right.shard_id = next_id++;
      left.range.last = split.at_token - 1;
      right.range.first = split.at_token;
      load[left.shard_id] = split.left_ops;
      load[right.shard_id] = split.right_ops;
      load.erase(shards[at].shard_id);
      shards[at] = left;
      shards.push_back(right);
      ++total_splits;
    }
    index.clear();
    for (size_t i = 0; i < shards.size(); ++i) index[shards[i].shard_id] = i;
    for (const PlannedMove& move : plan.moves) {
      auto it = index.find(move.shard_id);
      if (it == index.end()) continue;
      ShardInfo& s = shards[it->second];
      if (move.switchover) {
        std::replace(s.replicas.begin(), s.replicas.end(), move.to, s.primary);
        ++total_switchovers;
      }
      s.primary = move.to;
      ++total_moves;
    }
    std::sort(shards.begin(), shards.end(),
              [](const ShardInfo& a, const ShardInfo& b) { return a.range.first < b.range.first; });
    last_ratio = plan.max_over_mean_after;
    fmt::print(
        "round {:>3}: planned in {:>8.1f} ms: {:>3} splits, {:>4} moves ({} switchovers); max/mean "
        "{:.3f} -> {:.3f}\n",
        round + 1, planner_ms.back(), plan.splits.size(), plan.moves.size(),
        std::count_if(plan.moves.begin(), plan.moves.end(),
                      [](const PlannedMove& m) { return m.switchover; }),
        plan.max_over_mean_before, plan.max_over_mean_after);
  }
  const size_t map_bytes_end = ShardMap::Make(version, shards, nodes)->Serialize().size();
  fmt::print(
      "[SIM] {} rounds: planner p50 {:.1f} ms, max {:.1f} ms per round; {} splits, {} moves "
      "({} switchovers, {} copies); max/mean after the last round {:.3f}; {} shards now. Today's "
      "map is one value: {:.1f} MB at the start, {:.1f} MB now (x4/3 in etcd's JSON gateway), "
      "written and read by every watcher on every change\n",
      o.rounds, Percentile(planner_ms, 0.5), Percentile(planner_ms, 1.0), total_splits, total_moves,
      total_switchovers, total_moves - total_switchovers, last_ratio, shards.size(),
      map_bytes_start / 1e6, map_bytes_end / 1e6);
  return 0;
}

}  // namespace
}  // namespace scrollback

int main(int argc, char** argv) {
  scrollback::Options o;
  CLI::App app{"scrollback-reshard-sim: the rebalance planner on a large simulated map"};
  app.add_option("--nodes", o.nodes, "Nodes")->check(CLI::Range(1u, 100'000u));
  app.add_option("--shards", o.shards, "Shards")->check(CLI::Range(1u, 10'000'000u));
  app.add_option("--rf", o.rf, "Copies per shard")->check(CLI::Range(1u, 5u));
  app.add_option("--rounds", o.rounds, "Planner rounds")->check(CLI::Range(1, 100'000));
  app.add_option("--skew", o.skew, "Zipfian exponent of the shards' load");
  app.add_option("--drift", o.drift, "Share of the hottest tenth that moves each round");
  app.add_option("--max-moves", o.max_moves, "Moves per round");
  app.add_option("--max-splits", o.max_splits, "Splits per round");
  app.add_option("--seed", o.seed, "Random seed");
  CLI11_PARSE(app, argc, argv);
  return scrollback::Run(o);
}
