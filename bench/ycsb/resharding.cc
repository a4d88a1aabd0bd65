#include "ycsb/resharding.h"

#include <kj/async-io.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "scrollback/admin/rebalance.h"
#include "scrollback/cluster/embedded_cluster.h"
#include "ycsb/generators.h"
#include "ycsb/writers.h"

namespace scrollback::ycsb {
namespace {

constexpr uint64_t kConversations = 1000;
constexpr size_t kBodyBytes = 1024;
constexpr size_t kBatch = 1000;

// The value of `metric`'s first sample in Prometheus text, or 0.
uint64_t Metric(const std::string& text, const std::string& metric) {
  const size_t at = text.find("\n" + metric + " ");
  if (at == std::string::npos) return 0;
  return std::stoull(text.substr(at + metric.size() + 2));
}

double P99(std::vector<double> ms) {
  if (ms.empty()) return 0;
  std::sort(ms.begin(), ms.end());
  return ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
}

double Ms(SteadyTime from, SteadyTime to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// Latencies (first attempt to acknowledgement) of the sends begun in [from, to).
std::vector<double> LatenciesIn(const std::vector<Acked>& acked, SteadyTime from, SteadyTime to) {
  std::vector<double> out;
  for (const Acked& a : acked) {
    if (a.first_started >= from && a.first_started < to)
      out.push_back(Ms(a.first_started, a.answered));
  }
  return out;
}

}  // namespace

Result<ReshardResult> RunResharding(const ReshardOptions& options) {
  EmbeddedClusterOptions cluster_options;
  cluster_options.nodes = 3;
  cluster_options.shards = 1;
  cluster_options.data_dir = options.data_dir;
  cluster_options.node.replication.default_ack = AckMode::kAsync;  // The load; writers ask.
  cluster_options.node.replication.semi_sync_timeout = std::chrono::milliseconds(2000);
  auto started = EmbeddedCluster::Start(cluster_options);
  if (!started.ok()) return started.status();
  EmbeddedCluster& cluster = **started;
  auto io = kj::setupAsyncIo();
  ClientOptions client_options;
  client_options.call_timeout = std::chrono::seconds(30);
  auto client = cluster.NewClient(*io.provider, client_options);
  ReshardResult result;

  // The primary's copy of `shard_id` (by the stored map), or null.
  auto primary_copy = [&](uint64_t shard_id) -> std::shared_ptr<ShardStore> {
    auto map = ReadShardMap(*cluster.metadata());
    if (!map.ok() || map->FindShard(shard_id) == nullptr) return nullptr;
    StorageNode* node = cluster.node(cluster.IndexOf(map->FindShard(shard_id)->primary));
    if (node == nullptr) return nullptr;
    for (const HostedShard& h : node->Shards()) {
      if (h.assignment.shard_id == shard_id) return h.store;
    }
    return nullptr;
  };
  auto shard_bytes = [&](uint64_t shard_id) -> uint64_t {
    auto store = primary_copy(shard_id);
    if (!store) return 0;
    auto stats = store->GetStats();
    return stats.ok() ? stats->live_data_bytes + stats->memtable_bytes : 0;
  };

  // Load.
  const auto load_begin = std::chrono::steady_clock::now();
  for (uint64_t conv = 1; conv <= kConversations; ++conv) {
    auto created = client->CreateConversation({conv, 1, {}, "reshard"}).wait(io.waitScope);
    if (!created.ok()) return created.status();
  }
  std::vector<uint64_t> sent(kConversations + 1, 0);
  const uint64_t target = options.shard_mb << 20;
  for (uint64_t batch = 0;; ++batch) {
    if (batch % 8 == 0 && shard_bytes(1) >= target) break;
    std::vector<SendMessageRequest> sends;
    for (size_t k = 0; k < kBatch; ++k) {
      const uint64_t conv = 1 + (result.messages + k) % kConversations;
      const uint64_t n = ++sent[conv];
      sends.push_back(
          {conv, 1, "l" + std::to_string(n), TextBody(result.messages + k, kBodyBytes)});
    }
    for (auto& r : client->SendBatch(std::move(sends)).wait(io.waitScope)) {
      if (!r.ok()) return r.status();
    }
    result.messages += kBatch;
  }
  // Settled: every copy has the whole load (up to 10 minutes).
  for (int i = 0; i < 60000; ++i) {
    auto primary = primary_copy(1);
    uint64_t lowest = UINT64_MAX;
    for (size_t n = 0; n < cluster.node_count(); ++n) {
      for (const HostedShard& h : cluster.node(n)->Shards()) {
        lowest = std::min(lowest, h.store->LatestSequence());
      }
    }
    if (primary && lowest >= primary->LatestSequence()) break;
    io.provider->getTimer().afterDelay(10 * kj::MILLISECONDS).wait(io.waitScope);
  }
  result.load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_begin).count();
  // Compactions settle too (a shard of that size at rest), so that the split meets files
  // rather than a backlog.
  if (auto primary = primary_copy(1)) (void)primary->Flush();
  result.shard_bytes = shard_bytes(1);

  // Writers on conversations spread over the ring (both halves of the split).
  std::vector<uint64_t> convs, shards;
  std::set<uint64_t> sixteenths;
  for (uint64_t conv = 1;
       conv <= kConversations && convs.size() < static_cast<size_t>(options.writers); ++conv) {
    if (sixteenths.insert(TokenOf(conv) >> 60).second || sixteenths.size() >= 16) {
      convs.push_back(conv);
      shards.push_back(1);
    }
  }
  Writers writers(io, *client, convs, shards, {AckMode::kSemiSync, 0});
  writers.Start();
  const SteadyTime warm = std::chrono::steady_clock::now();
  writers.Pump([] { return false; }, std::chrono::milliseconds(1000));
  const SteadyTime split_requested = std::chrono::steady_clock::now();
  result.baseline_p99_ms = P99(LatenciesIn(writers.acked, warm, split_requested));
  Result<SplitResult> split = writers.WhileSending([&] { return cluster.Split(1); });
  if (!split.ok()) return split.status();
  writers.Pump([] { return false; }, std::chrono::milliseconds(500));
  const SteadyTime split_settled = std::chrono::steady_clock::now();
  result.split_ms = static_cast<double>(split->pause.count());
  result.split_p99_ms = P99(LatenciesIn(writers.acked, split_requested, split_settled));
  std::map<uint64_t, SteadyTime> last;  // Per writer: its last acknowledgement.
  for (const Acked& a : writers.acked) {
    auto it = last.find(a.conv);
    if (it != last.end() && a.answered >= split_requested) {
      result.split_gap_ms = std::max(result.split_gap_ms, Ms(it->second, a.answered));
    }
    last[a.conv] = a.answered;
  }

  // A fourth node; a replica's copy of the left child moves to it.
  Result<size_t> added = writers.WhileSending([&] { return cluster.AddNode(); });
  if (!added.ok()) return added.status();
  auto map = ReadShardMap(*cluster.metadata());
  if (!map.ok()) return map.status();
  const ShardInfo* left = map->FindShard(split->left_id);
  if (left == nullptr || left->replicas.empty()) return Status::Internal("no left child replica");
  const std::string from = left->replicas.front();
  const std::string to = cluster.node_id(*added);
  const SteadyTime move_begin = std::chrono::steady_clock::now();
  Result<MoveResult> moved =
      writers.WhileSending([&] { return cluster.Move(split->left_id, from, to); });
  if (!moved.ok()) return moved.status();
  const SteadyTime move_end = std::chrono::steady_clock::now();
  result.move_s = Ms(move_begin, move_end) / 1000;
  result.move_bytes =
      Metric(cluster.node(*added)->RenderMetrics(), "scrollback_replica_bootstrap_bytes_total");
  result.move_mb_per_s = result.move_bytes / 1048576.0 / std::max(result.move_s, 1e-9);
  result.move_p99_ms = P99(LatenciesIn(writers.acked, move_begin, move_end));
  writers.Pump([] { return false; }, std::chrono::milliseconds(300));
  writers.Stop();
  result.acknowledged = writers.acked.size();

  // Every acknowledged send, looked for in its conversation's history.
  // The writers' sends come after the load's.
  auto lost = writers.CountLost([&](uint64_t conv) { return sent[conv]; });
  if (!lost.ok()) return lost.status();
  result.lost = *lost;
  return result;
}

Result<RebalanceBenchResult> RunRebalanceBench(const RebalanceBenchOptions& options) {
  EmbeddedClusterOptions cluster_options;
  cluster_options.nodes = 3;
  cluster_options.shards = 6;
  cluster_options.data_dir = options.data_dir;
  auto started = EmbeddedCluster::Start(cluster_options);
  if (!started.ok()) return started.status();
  EmbeddedCluster& cluster = **started;
  auto io = kj::setupAsyncIo();
  ClientOptions client_options;
  client_options.call_timeout = std::chrono::seconds(30);
  auto client = cluster.NewClient(*io.provider, client_options);
  constexpr uint64_t kConvs = 200;
  for (uint64_t conv = 1; conv <= kConvs; ++conv) {
    auto created = client->CreateConversation({conv, 1, {2, 3}, "skewed"}).wait(io.waitScope);
    if (!created.ok()) return created.status();
  }
  // Chains on conversations drawn zipfian(0.99): conversation k (from 1) with weight 1/k.
  Rng rng(options.seed);
  std::vector<double> cumulative;
  double sum = 0;
  for (uint64_t k = 1; k <= kConvs; ++k) cumulative.push_back(sum += 1.0 / std::pow(k, 0.99));
  std::vector<uint64_t> convs, shards;
  for (int c = 0; c < options.chains; ++c) {
    const double x = NextDouble(rng) * sum;
    convs.push_back(
        1 + (std::lower_bound(cumulative.begin(), cumulative.end(), x) - cumulative.begin()));
    shards.push_back(0);
  }
  RebalanceBenchResult result;
  const auto phase = std::chrono::milliseconds(static_cast<int64_t>(options.seconds * 1000));
  // One phase of the load: sends acknowledged per second and their p99.
  auto measure = [&](Writers& writers, double* per_s, double* p99) {
    const size_t from = writers.acked.size();
    const SteadyTime begin = std::chrono::steady_clock::now();
    writers.Pump([] { return false; }, phase);
    const SteadyTime end = std::chrono::steady_clock::now();
    *per_s = (writers.acked.size() - from) / std::chrono::duration<double>(end - begin).count();
    *p99 = P99(LatenciesIn(writers.acked, begin, end));
  };
  Writers writers(io, *client, convs, shards, {});
  writers.Start();
  writers.Pump([] { return false; }, std::chrono::milliseconds(1000));  // Warm-up.
  measure(writers, &result.sends_per_s_before, &result.p99_ms_before);

  auto map = ReadShardMap(*cluster.metadata());
  if (!map.ok()) return map.status();
  auto loads = writers.WhileSending([&] {
    kj::AsyncIoContext probe_io = kj::setupAsyncIo();
    return admin::CollectShardLoads(probe_io, *map, std::chrono::seconds(5));
  });
  if (!loads.ok()) return loads.status();
  PlannerOptions planner;
  planner.min_ops_to_split = 1;  // Rates decay over a minute: seconds of load read low.
  const RebalancePlan plan = PlanRebalance(*map, *loads, planner);
  result.max_over_mean_before = plan.max_over_mean_before;
  result.max_over_mean_after = plan.max_over_mean_after;
  const admin::AppliedPlan applied = writers.WhileSending([&] {
    return admin::ApplyRebalancePlan(*cluster.metadata(), plan, std::chrono::seconds(60));
  });
  if (!applied.errors.empty()) return Status::Internal("rebalance: " + applied.errors.front());
  result.splits = static_cast<int>(applied.splits.size());
  result.switchovers = static_cast<int>(applied.switchovers.size());
  result.copies = static_cast<int>(applied.moves.size());
  auto after = ReadShardMap(*cluster.metadata());
  if (!after.ok()) return after.status();
  Status serving = writers.WhileSending([&] { return cluster.WaitUntilServing(after->version()); });
  if (!serving.ok()) return serving;
  writers.Pump([] { return false; }, std::chrono::milliseconds(1000));  // Settle.
  measure(writers, &result.sends_per_s_after, &result.p99_ms_after);
  writers.Stop();

  auto lost = writers.CountLost();
  if (!lost.ok()) return lost.status();
  result.lost = *lost;
  return result;
}

}  // namespace scrollback::ycsb
