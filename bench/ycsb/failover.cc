#include "ycsb/failover.h"

#include <kj/async-io.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "scrollback/cluster/embedded_cluster.h"
#include "ycsb/writers.h"

namespace scrollback::ycsb {

Result<FailoverResult> RunFailover(const FailoverOptions& options) {
  EmbeddedClusterOptions cluster_options;
  cluster_options.nodes = 3;
  cluster_options.shards = options.shards;
  cluster_options.data_dir = options.data_dir;
  cluster_options.lease.ttl = options.lease;
  cluster_options.controller.leader_ttl = options.lease;
  cluster_options.node.replication.default_ack = options.ack;
  cluster_options.node.replication.semi_sync_timeout = std::chrono::milliseconds(2000);
  auto cluster = EmbeddedCluster::Start(cluster_options);
  if (!cluster.ok()) return cluster.status();
  auto io = kj::setupAsyncIo();
  ClientOptions client_options;
  client_options.call_timeout = std::chrono::seconds(5);
  auto client = (*cluster)->NewClient(*io.provider, client_options);

  // One conversation per shard.
  auto stored = ReadShardMap(*(*cluster)->metadata());
  if (!stored.ok()) return stored.status();
  std::vector<uint64_t> convs, shard_of;
  std::set<uint64_t> covered;
  for (uint64_t conv = 1'000'000 + options.seed % 1000; covered.size() < stored->shards().size();
       ++conv) {
    const uint64_t shard = stored->ShardForKey(conv).shard_id;
    if (!covered.insert(shard).second) continue;
    convs.push_back(conv);
    shard_of.push_back(shard);
    auto created = client->CreateConversation({conv, 1, {2, 3}, "failover"}).wait(io.waitScope);
    if (!created.ok()) return created.status();
  }

  Writers writers(io, *client, convs, shard_of, {options.ack, 0});
  const SteadyTime begin = std::chrono::steady_clock::now();
  writers.Start();
  FailoverResult result;
  auto settle = [&] { writers.Pump([] { return false; }, options.settle); };
  for (int kill = 0; kill < options.kills; ++kill) {
    settle();
    auto map = ReadShardMap(*(*cluster)->metadata());
    if (!map.ok()) return map.status();
    std::map<std::string, std::vector<uint64_t>> primaries;
    for (const ShardInfo& shard : map->shards()) primaries[shard.primary].push_back(shard.shard_id);
    auto busiest = std::max_element(primaries.begin(), primaries.end(), [](auto& a, auto& b) {
      return a.second.size() < b.second.size();
    });
    const size_t victim = (*cluster)->IndexOf(busiest->first);
    const std::vector<uint64_t> affected = busiest->second;
    const SteadyTime killed = std::chrono::steady_clock::now();
    (*cluster)->StopNode(victim);
    // Until every affected shard acknowledged a send that began after the crash.
    std::map<uint64_t, double> resumed;
    size_t scanned = 0;  // Acknowledgements already looked at.
    const bool all_back = writers.Pump(
        [&] {
          for (; scanned < writers.acked.size(); ++scanned) {
            const Acked& a = writers.acked[scanned];
            if (a.started < killed || resumed.count(a.shard_id)) continue;
            if (std::find(affected.begin(), affected.end(), a.shard_id) == affected.end()) continue;
            resumed[a.shard_id] =
                std::chrono::duration<double, std::milli>(a.answered - killed).count();
          }
          return resumed.size() == affected.size();
        },
        std::chrono::seconds(60));
    if (!all_back) {
      return Status::Unavailable("after kill " + std::to_string(kill + 1) + ", " +
                                 std::to_string(affected.size() - resumed.size()) +
                                 " shards took no write within 60 s");
    }
    for (const auto& [shard, ms] : resumed) result.unavailable_ms.push_back(ms);
    ++result.kills;
    Status restarted = writers.WhileSending([&] { return (*cluster)->RestartNode(victim); });
    if (!restarted.ok()) return restarted;
  }
  for (int k = 0; k < options.switchovers; ++k) {
    settle();
    const uint64_t shard_id = shard_of[k % shard_of.size()];
    const SteadyTime requested = std::chrono::steady_clock::now();
    Result<SwitchoverResult> moved =
        writers.WhileSending([&] { return (*cluster)->Switchover(shard_id); });
    if (!moved.ok()) return moved.status();
    result.switchover_pause_ms.push_back(static_cast<double>(moved->pause.count()));
    // What the shard's writer saw: the longest gap between two acknowledgements on that shard,
    // from the last one before the request until 300 ms after the switchover returned.
    writers.Pump([] { return false; }, std::chrono::milliseconds(300));
    std::optional<SteadyTime> previous;
    double longest = 0;
    for (const Acked& a : writers.acked) {
      if (a.shard_id != shard_id) continue;
      if (a.answered < requested) {
        previous = a.answered;
        continue;
      }
      if (previous) {
        longest = std::max(
            longest, std::chrono::duration<double, std::milli>(a.answered - *previous).count());
      }
      previous = a.answered;
    }
    const bool resumed = previous && *previous >= requested;
    result.switchover_resume_ms.push_back(longest);
    if (!resumed) return Status::Unavailable("no write after switchover " + std::to_string(k + 1));
  }
  settle();
  writers.Stop();
  result.run_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  result.acknowledged = writers.acked.size();
  result.failed_attempts = writers.failed_attempts;
  result.sends_per_s = result.acknowledged / std::max(result.run_s, 1e-9);

  // Every acknowledged send, looked for in its conversation's history.
  auto lost = writers.CountLost();
  if (!lost.ok()) return lost.status();
  result.lost = *lost;
  return result;
}

}  // namespace scrollback::ycsb
