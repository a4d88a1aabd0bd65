// scrollback-reshard-sim: the rebalance planner and the shard map's storage at scale, without
// nodes (docs/resharding.md, "At scale"). A map of --nodes nodes and --shards shards
// (replication factor --rf) carries a zipfian load over its shards that drifts every round
// (--drift of the hottest shards hand their heat to random others); each round PlanRebalance
// plans, and the plan is carried out through the metadata store (in memory, or a real etcd with
// --etcd) in the map changes the controller makes: a split marks its shard, then replaces it by
// two children; a switchover names its target, then swaps; a copy move adds the new copy, then
// makes it primary and drops the old one. Changes to many shards share a commit, up to what one
// commit takes. A client follows the map with a ShardMapWatcher.
//
// Reported: planner time per round, splits and moves per round, max / mean node load, and per
// map change the metadata bytes written, the watch traffic a follower receives, and the time
// the follower takes to apply it; beside them what one change of the format-1 map (one value)
// would write and send to every watcher. Exits non-zero if the follower's map ever differs from
// the published one.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "scrollback/cluster/etcd_metadata_store.h"
#include "scrollback/cluster/metered_metadata_store.h"
#include "scrollback/cluster/rebalance_planner.h"
#include "scrollback/cluster/shard_map_store.h"
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
  std::string etcd;
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

double Ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

// The map as the controller keeps it, published change by change through the metadata store,
// and a follower (ShardMapWatcher) that must end every change with the same map.
class Publisher {
 public:
  Publisher(std::shared_ptr<MeteredMetadataStore> writer,
            std::shared_ptr<MeteredMetadataStore> follower_store, std::vector<NodeInfo> nodes)
      : writer_(std::move(writer)),
        follower_store_(std::move(follower_store)),
        nodes_(std::move(nodes)) {}

  Status Bootstrap(const ShardMap& map) {
    const auto started = std::chrono::steady_clock::now();
    SB_RETURN_IF_ERROR(PublishFirstShardMap(*writer_, map));
    bootstrap_ms_ = Ms(std::chrono::steady_clock::now() - started);
    bootstrap_ = writer_->traffic();
    auto stored = LoadShardMap(*writer_);
    if (!stored.ok()) return stored.status();
    current_ = std::move(stored).value();
    for (const ShardInfo& shard : current_.map.shards()) shards_[shard.shard_id] = shard;
    const auto follow_started = std::chrono::steady_clock::now();
    auto watcher = ShardMapWatcher::Start(follower_store_);
    if (!watcher.ok()) return watcher.status();
    follower_ = std::move(watcher).value();
    load_ms_ = Ms(std::chrono::steady_clock::now() - follow_started);
    load_ = follower_store_->traffic();
    return Status::Ok();
  }

  const ShardMap& map() const { return current_.map; }
  std::map<uint64_t, ShardInfo>& shards() { return shards_; }
  size_t per_commit() const { return writer_->max_writes_per_commit() - 1; }

  // Publishes the working shards as the next version and waits for the follower to have it.
  Status Publish() {
    std::vector<ShardInfo> shards;
    shards.reserve(shards_.size());
    for (const auto& [id, shard] : shards_) shards.push_back(shard);
    auto next = ShardMap::Make(current_.map.version() + 1, std::move(shards), nodes_);
    if (!next.ok()) return next.status();
    const MetadataTraffic before = writer_->traffic();
    const MetadataTraffic watched_before = follower_store_->traffic();
    const uint64_t applied_before = follower_->apply_nanos();
    const auto started = std::chrono::steady_clock::now();
    auto published = PublishShardMap(*writer_, current_, *next);
    if (!published.ok()) return published.status();
    current_ = StoredShardMap{std::move(next).value(), *published};
    // The follower has it when its map is this version (etcd: a moment later).
    for (int i = 0; follower_->Current()->map.version() != current_.map.version(); ++i) {
      if (i > 30'000) return Status::Unavailable("the follower never caught up");
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    follow_ms_.push_back(Ms(std::chrono::steady_clock::now() - started));
    apply_ms_.push_back((follower_->apply_nanos() - applied_before) / 1e6);
    const MetadataTraffic after = writer_->traffic();
    const MetadataTraffic watched = follower_store_->traffic();
    bytes_written_.push_back(static_cast<double>(after.bytes_written - before.bytes_written));
    keys_written_.push_back(static_cast<double>(after.keys_written - before.keys_written));
    watch_bytes_.push_back(static_cast<double>(watched.watch_bytes - watched_before.watch_bytes));
    if (!(follower_->Current()->map.Serialize() == current_.map.Serialize())) {
      return Status::Internal("the follower's map differs from the published one at version " +
                              std::to_string(current_.map.version()));
    }
    return Status::Ok();
  }

  void Report(size_t single_value_bytes_start, size_t single_value_bytes_end) const {
    const double changes = static_cast<double>(bytes_written_.size());
    auto mean = [&](const std::vector<double>& v) {
      return v.empty() ? 0 : std::accumulate(v.begin(), v.end(), 0.0) / v.size();
    };
    fmt::print(
        "[SIM] map store: bootstrap of {} records in {} commits, {:.1f} MB, {:.0f} ms; a "
        "follower's full load: {} pages, {:.1f} MB, {:.0f} ms\n",
        bootstrap_.keys_written, bootstrap_.commits, bootstrap_.bytes_written / 1e6, bootstrap_ms_,
        load_.reads, load_.bytes_read / 1e6, load_ms_);
    fmt::print(
        "[SIM] map changes: {:.0f}; per change: {:.1f} records / {:.1f} KB written (max {:.1f} "
        "KB), watch traffic {:.1f} KB (max {:.1f} KB), published and applied by the follower in "
        "p50 {:.1f} ms / p99 {:.1f} ms, of which the follower's apply p50 {:.1f} ms / p99 {:.1f} "
        "ms; follower reloads {} (reads after its load: {}). One "
        "change of the format-1 map wrote and sent {:.1f} MB at the start, {:.1f} MB at the end "
        "(x4/3 in etcd's JSON gateway)\n",
        changes, mean(keys_written_), mean(bytes_written_) / 1e3,
        Percentile(bytes_written_, 1.0) / 1e3, mean(watch_bytes_) / 1e3,
        Percentile(watch_bytes_, 1.0) / 1e3, Percentile(follow_ms_, 0.5),
        Percentile(follow_ms_, 0.99), Percentile(apply_ms_, 0.5), Percentile(apply_ms_, 0.99),
        follower_->reloads() - 1, follower_store_->traffic().reads - load_.reads,
        single_value_bytes_start / 1e6, single_value_bytes_end / 1e6);
  }

 private:
  std::shared_ptr<MeteredMetadataStore> writer_;
  std::shared_ptr<MeteredMetadataStore> follower_store_;
  const std::vector<NodeInfo> nodes_;
  StoredShardMap current_{ShardMap::Uniform(1, 1, {{"x", "", "", 0}}), 0};
  std::map<uint64_t, ShardInfo> shards_;  // The working copy, by id.
  std::unique_ptr<ShardMapWatcher> follower_;
  MetadataTraffic bootstrap_, load_;
  double bootstrap_ms_ = 0, load_ms_ = 0;
  std::vector<double> bytes_written_, keys_written_, watch_bytes_, follow_ms_, apply_ms_;
};

// Runs `edits` (each touching `records_each` shard records) against the publisher's working
// shards, publishing whenever the next edit would not fit in the same commit.
template <typename Edit>
Status InCommits(Publisher& pub, const std::vector<Edit>& edits, size_t records_each,
                 const std::function<bool(const Edit&)>& apply) {
  size_t pending = 0;
  for (const Edit& edit : edits) {
    if (pending + records_each > pub.per_commit()) {
      SB_RETURN_IF_ERROR(pub.Publish());
      pending = 0;
    }
    if (apply(edit)) pending += records_each;
  }
  return pending > 0 ? pub.Publish() : Status::Ok();
}

int Run(const Options& o) {
  std::mt19937_64 rng(o.seed);
  std::vector<NodeInfo> nodes;
  for (uint32_t i = 0; i < o.nodes; ++i) {
    nodes.push_back(
        {"n" + std::to_string(100000 + i), "10.0.0.1:" + std::to_string(7000 + i), "", 0});
  }
  std::shared_ptr<MetadataStore> store;
  if (o.etcd.empty()) {
    store = NewInMemoryMetadataStore(SystemClock());
  } else {
    EtcdOptions options;
    options.endpoint = o.etcd;
    options.request_timeout = std::chrono::seconds(30);
    options.wait_for_etcd = std::chrono::seconds(10);
    auto connected = NewEtcdMetadataStore(options);
    if (!connected.ok()) {
      fmt::print(stderr, "etcd: {}\n", connected.status().ToString());
      return 1;
    }
    store = *connected;
  }
  auto writer = std::make_shared<MeteredMetadataStore>(store);
  auto follower = std::make_shared<MeteredMetadataStore>(store);
  Publisher pub(writer, follower, nodes);
  const ShardMap first = ShardMap::Uniform(1, o.shards, nodes, o.rf);
  const size_t map_bytes_start = first.Serialize().size();
  if (Status s = pub.Bootstrap(first); !s.ok()) {
    fmt::print(stderr, "bootstrap: {}\n", s.ToString());
    return 1;
  }
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
      load[first.shards()[order[r]].shard_id] = o.total_ops * weight[r] / sum;
    }
  }
  fmt::print(
      "{} nodes, {} shards, rf {}, zipf {:.2f}, drift {:.0f} % of the hottest per round, "
      "metadata store: {}\n",
      o.nodes, o.shards, o.rf, o.skew, o.drift * 100,
      o.etcd.empty() ? "in memory" : "etcd at " + o.etcd);
  std::vector<double> planner_ms;
  uint64_t total_moves = 0, total_switchovers = 0, total_splits = 0;
  double last_ratio = 0;
  PlannerOptions planner;
  planner.max_moves_per_round = o.max_moves;
  planner.max_splits_per_round = o.max_splits;
  auto fail = [](const char* what, const Status& s) {
    fmt::print(stderr, "{}: {}\n", what, s.ToString());
    return 1;
  };
  for (int round = 0; round < o.rounds; ++round) {
    // Drift: the hottest shards hand their heat to random others.
    if (round > 0 && o.drift > 0) {
      std::vector<std::pair<double, uint64_t>> by_heat;
      for (const auto& [id, ops] : load) by_heat.emplace_back(ops, id);
      std::sort(by_heat.rbegin(), by_heat.rend());
      const size_t n = std::max<size_t>(1, static_cast<size_t>(o.drift * by_heat.size() / 10));
      for (size_t k = 0; k < n && k < by_heat.size(); ++k) {
        const uint64_t to = by_heat[rng() % by_heat.size()].second;
        std::swap(load[by_heat[k].second], load[to]);
      }
    }
    const ShardMap& map = pub.map();
    std::vector<ShardLoad> loads;
    loads.reserve(map.shards().size());
    for (const ShardInfo& s : map.shards())
      loads.push_back(ShardLoad{s.shard_id, load[s.shard_id]});
    const auto started = std::chrono::steady_clock::now();
    RebalancePlan plan = PlanRebalance(map, loads, planner);
    planner_ms.push_back(Ms(std::chrono::steady_clock::now() - started));
    auto& shards = pub.shards();

    // Splits, in waves: one split per shard at a time (a piece may split again next wave).
    std::vector<PlannedSplit> splits = plan.splits;
    while (!splits.empty()) {
      std::vector<std::pair<uint64_t, PlannedSplit>> wave;  // (piece's id, split)
      std::vector<PlannedSplit> later;
      std::set<uint64_t> marked;
      for (const PlannedSplit& split : splits) {
        uint64_t piece = 0;
        for (const auto& [id, s] : shards) {
          if (s.range.Contains(split.at_token)) piece = id;
        }
        if (piece == 0 || split.at_token <= shards[piece].range.first) continue;
        if (!marked.insert(piece).second) {
          later.push_back(split);
          continue;
        }
        wave.emplace_back(piece, split);
      }
      uint64_t next_id = pub.map().NextShardId();
      using Marked = std::pair<uint64_t, PlannedSplit>;
      Status s = InCommits<Marked>(pub, wave, 1, [&](const Marked& m) {
        ShardInfo& parent = shards[m.first];
        parent.split_at = m.second.at_token;
        parent.split_left_id = next_id++;
        parent.split_right_id = next_id++;
        ++parent.epoch;
        return true;
      });
      if (!s.ok()) return fail("split start", s);
      s = InCommits<Marked>(pub, wave, 3, [&](const Marked& m) {
        const ShardInfo parent = shards[m.first];
        ShardInfo left = parent, right = parent;
        left.shard_id = parent.split_left_id;
        right.shard_id = parent.split_right_id;
        left.range.last = parent.split_at - 1;
        right.range.first = parent.split_at;
        for (ShardInfo* child : {&left, &right}) {
          child->split_at = child->split_left_id = child->split_right_id = 0;
          child->split_from = parent.shard_id;
          child->split_lsn = 1;
        }
        load[left.shard_id] = m.second.left_ops;
        load[right.shard_id] = m.second.right_ops;
        load.erase(parent.shard_id);
        shards.erase(parent.shard_id);
        shards[left.shard_id] = left;
        shards[right.shard_id] = right;
        ++total_splits;
        return true;
      });
      if (!s.ok()) return fail("split finish", s);
      splits = std::move(later);
    }
    // Moves: start every one (switch_to, or the new copy), then finish every one.
    Status s = InCommits<PlannedMove>(pub, plan.moves, 1, [&](const PlannedMove& move) {
      auto it = shards.find(move.shard_id);
      if (it == shards.end() || it->second.primary != move.from) return false;
      if (move.switchover) {
        it->second.switch_to = move.to;
      } else {
        it->second.replicas.push_back(move.to);
        it->second.move_from = move.from;
        it->second.move_to = move.to;
      }
      return true;
    });
    if (!s.ok()) return fail("move start", s);
    s = InCommits<PlannedMove>(pub, plan.moves, 1, [&](const PlannedMove& move) {
      auto it = shards.find(move.shard_id);
      if (it == shards.end() || it->second.primary != move.from) return false;
      ShardInfo& shard = it->second;
      std::vector<std::string>& replicas = shard.replicas;
      if (move.switchover) {
        shard.switch_to.clear();
        std::replace(replicas.begin(), replicas.end(), move.to, shard.primary);
        ++total_switchovers;
      } else {
        replicas.erase(std::remove(replicas.begin(), replicas.end(), move.to), replicas.end());
        shard.move_from.clear();
        shard.move_to.clear();
      }
      shard.primary = move.to;
      ++shard.epoch;
      ++total_moves;
      return true;
    });
    if (!s.ok()) return fail("move finish", s);
    last_ratio = plan.max_over_mean_after;
    fmt::print(
        "round {:>3}: planned in {:>8.1f} ms: {:>3} splits, {:>4} moves ({} switchovers); max/mean "
        "{:.3f} -> {:.3f}; map version {}\n",
        round + 1, planner_ms.back(), plan.splits.size(), plan.moves.size(),
        std::count_if(plan.moves.begin(), plan.moves.end(),
                      [](const PlannedMove& m) { return m.switchover; }),
        plan.max_over_mean_before, plan.max_over_mean_after, pub.map().version());
  }
  fmt::print(
      "[SIM] {} rounds: planner p50 {:.1f} ms, max {:.1f} ms per round; {} splits, {} moves "
      "({} switchovers, {} copies); max/mean after the last round {:.3f}; {} shards now\n",
      o.rounds, Percentile(planner_ms, 0.5), Percentile(planner_ms, 1.0), total_splits, total_moves,
      total_switchovers, total_moves - total_switchovers, last_ratio, pub.map().shards().size());
  pub.Report(map_bytes_start, pub.map().Serialize().size());
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
  app.add_option("--etcd", o.etcd, "host:port of an etcd to keep the map in (default: in memory)");
  CLI11_PARSE(app, argc, argv);
  return scrollback::Run(o);
}
