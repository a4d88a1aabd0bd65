// Failover (decision 0010, docs/replication.md "Failover"): leases with a clock-drift margin,
// fenced epochs, the controller promoting the most advanced live copy, and rejoin. Faults come
// through seams (StopNode as a crash, CutFromMetadata as a partition from the store, injected
// clocks for the lease margin); every check is made from what clients were told (acknowledged
// sends, their seqs and write tokens), never from logs. Randomized tests print their seed
// (SCROLLBACK_SEED=... replays one).
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/cluster_test_util.h"
#include "replication/replication_test_util.h"
#include "replication/send_load.h"
#include "scrollback/cluster/metadata_faults.h"
#include "scrollback/cluster/node_lease.h"
#include "scrollback/replication/replication.h"
#include "scrollback/rpc/network_faults.h"
#include "test_util.h"

namespace scrollback {
namespace {

using namespace replication_testing;  // NOLINT: the shared helpers of these tests.

// ---- The lease margin, with injected clocks -------------------------------------------------

bool KeyInStore(MetadataStore& store, const std::string& key) {
  auto listed = store.List(key);
  REQUIRE(listed.ok());
  return !listed->empty();
}

TEST_CASE(
    "a node's primary lease stops writes before the store can expire it, even on a slow clock") {
  constexpr int64_t kTtl = 1000;
  constexpr double kDrift = 0.01;
  auto store_clock = std::make_shared<ManualClock>(1'000'000);
  auto node_clock = std::make_shared<ManualClock>(5'000'000);  // Unrelated origin.
  auto store = NewInMemoryMetadataStore(store_clock);
  auto link = std::make_shared<CuttableMetadataStore>(store, "node-a");
  auto lease = std::make_shared<PrimaryLease>("node-a", node_clock);
  LeaseKeeperOptions options;
  options.node_id = "node-a";
  options.ttl = std::chrono::milliseconds(kTtl);
  options.max_clock_drift = kDrift;
  options.commit_margin = std::chrono::milliseconds(50);
  options.run_thread = false;  // Time is driven here.
  auto keeper = LeaseKeeper::Start(link, node_clock, lease, options);
  REQUIRE(keeper.ok());
  const std::string key = std::string(kPrimaryLeasesPrefix) + "node-a";

  // Held, but not yet recorded in the map: fenced.
  CHECK_FALSE(lease->Writable());
  lease->RecordedInMap((*keeper)->lease_id());
  CHECK(lease->Writable());

  // A renewal at node time n0 (store time s0), then the node is cut off from the store.
  const int64_t n0 = node_clock->NowMs(), s0 = store_clock->NowMs();
  REQUIRE((*keeper)->RenewOnce().ok());
  link->Cut(true);
  const int64_t until = (*keeper)->WritableUntil(n0);
  CHECK(until == n0 + static_cast<int64_t>(kTtl * (1 - kDrift)) - 50);
  // The node's clock runs kDrift slower than the store's: node time n is store time
  // s0 + (n - n0) / (1 - kDrift).
  auto set_node_time = [&](int64_t n) {
    node_clock->Set(n);
    store_clock->Set(s0 + static_cast<int64_t>(std::ceil((n - n0) / (1 - kDrift))));
  };
  set_node_time(until - 1);
  CHECK(lease->Writable());
  CHECK_FALSE((*keeper)->RenewOnce().ok());  // Unreachable: nothing earned.
  CHECK(lease->Writable());
  set_node_time(until);
  CHECK_FALSE(lease->Writable());
  CHECK(lease->CheckWritable().code() == ErrorCode::kUnavailable);
  // When the node stopped, the store still held its lease: nobody else could be primary yet.
  CHECK(store_clock->NowMs() < s0 + kTtl);
  CHECK(KeyInStore(*store, key));
  store_clock->Set(s0 + kTtl + 1);
  CHECK_FALSE(KeyInStore(*store, key));

  // Healed: the old lease is gone, a new one is granted, and the node stays fenced until the
  // map records the new lease (the controller's decision), not merely because it has one.
  const int64_t old_lease = (*keeper)->lease_id();
  link->Cut(false);
  node_clock->Advance(10);
  REQUIRE((*keeper)->RenewOnce().ok());
  CHECK((*keeper)->lease_id() != old_lease);
  CHECK(KeyInStore(*store, key));
  CHECK_FALSE(lease->Writable());
  lease->RecordedInMap((*keeper)->lease_id());
  CHECK(lease->Writable());
}

// The node holding the most primaries in the stored map.
size_t BusiestPrimary(ClusterFixture& f) {
  std::map<std::string, int> count;
  const ShardMap map = StoredMap(f);  // Named: a range-for over a temporary's member dangles.
  for (const ShardInfo& s : map.shards()) ++count[s.primary];
  auto most = std::max_element(count.begin(), count.end(),
                               [](const auto& a, const auto& b) { return a.second < b.second; });
  return f.cluster->IndexOf(most->first);
}

// Waits until no shard of the stored map has `node` as primary (and every other node may
// write again), i.e. the controller has moved all of the node's primaries.
bool PrimariesMovedOff(ClusterFixture& f, const std::string& node) {
  return f.Eventually(
      [&] {
        const ShardMap map = StoredMap(f);
        for (const ShardInfo& s : map.shards()) {
          if (s.primary == node) return false;
        }
        return true;
      },
      std::chrono::seconds(20));
}

TEST_CASE(
    "a killed primary's shards fail over to their most advanced replica and semi-sync sends lose "
    "nothing") {
  ClusterFixture f(FailoverOptions(AckMode::kSemiSync));
  auto convs = ConversationsOnEveryShard(f);
  SendLoad load(f, convs, {});
  load.Start();
  REQUIRE(load.EachGains(5));

  const size_t victim = BusiestPrimary(f);
  const std::string victim_id = f.cluster->node_id(victim);
  const ShardMap before = StoredMap(f);
  f.cluster->StopNode(victim);  // A crash: the lease is left to expire.
  REQUIRE(PrimariesMovedOff(f, victim_id));
  REQUIRE(load.EachGains(10));  // Every shard takes writes again.

  const ShardMap after = StoredMap(f);
  for (const ShardInfo& s : before.shards()) {
    if (s.primary != victim_id) continue;
    const ShardInfo* now = after.FindShard(s.shard_id);
    CHECK(now->epoch > s.epoch);
    CHECK(now->primary != victim_id);
    // The old primary stays a copy (a replica), to catch up when it is back.
    CHECK(std::find(now->replicas.begin(), now->replicas.end(), victim_id) != now->replicas.end());
  }

  REQUIRE(f.cluster->RestartNode(victim).ok());
  REQUIRE(load.EachGains(5));
  load.Stop();
  CheckAcknowledged(f, load.acked);
  REQUIRE(EventuallyIdentical(f));
}

TEST_CASE(
    "a primary cut off from the metadata store fences itself: nothing it acknowledges postdates "
    "the new primary") {
  ClusterFixture f(FailoverOptions(AckMode::kSemiSync));
  auto convs = ConversationsOnEveryShard(f);
  const ShardInfo shard = StoredMap(f).ShardForKey(convs[0]);
  const size_t cut = f.cluster->IndexOf(shard.primary);
  RawNode direct(f.io, StoredMap(f).FindNode(shard.primary)->address);

  // Direct semi-sync sends to the cut primary, as a client that never refreshes its map would.
  struct Outcome {
    bool ok = false;
    ErrorCode code = ErrorCode::kOk;
    WriteToken token;
    uint64_t seq = 0;
    std::string id;
    uint64_t map_version_at_reply = 0;  // The stored map's version when the reply arrived.
  };
  std::vector<Outcome> outcomes;
  auto send_direct = [&](int k) {
    auto request = direct.node.sendMessageRequest();
    auto r = request.initRequest();
    r.setConvId(convs[0]);
    r.setSenderId(1);
    const std::string id = "direct-" + std::to_string(k);
    r.setClientMsgId(kj::heapString(id).asBytes());
    r.setBody(kj::StringPtr("to the old primary").asBytes());
    request.initOptions().setAck(s::AckMode::SEMI_SYNC);
    // Bounded: a node that never answered would fail the test here, not hang it.
    auto reply = f.io.provider->getTimer()
                     .timeoutAfter(15 * kj::SECONDS, request.send())
                     .wait(f.io.waitScope);
    Outcome o;
    o.id = id;
    o.code = CodeOf(reply);
    o.ok = o.code == ErrorCode::kOk;
    if (o.ok) {
      o.seq = reply.getResult().getSeq();
      auto t = reply.getResult().getToken();
      o.token = {t.getShardId(), t.getEpoch(), t.getLsn()};
    }
    o.map_version_at_reply = StoredMap(f).version();
    outcomes.push_back(o);
  };
  for (int k = 0; k < 5; ++k) send_direct(k);
  for (const Outcome& o : outcomes) REQUIRE(o.ok);

  SendLoad load(f, convs, {});
  load.Start();
  REQUIRE(load.EachGains(3));
  const uint64_t version_before_cut = StoredMap(f).version();
  f.cluster->CutFromMetadata(cut, true);
  // Keep writing to the cut node directly until the controller has replaced it.
  int k = 5;
  uint64_t replaced_at_version = 0;
  REQUIRE(f.Eventually(
      [&] {
        send_direct(k++);
        const ShardMap now = StoredMap(f);
        if (now.FindShard(shard.shard_id)->primary != shard.primary) {
          replaced_at_version = now.version();
          return true;
        }
        return false;
      },
      std::chrono::seconds(20)));
  // And for a while after: the cut node must refuse every one.
  const size_t after_replacement = outcomes.size();
  for (int extra = 0; extra < 10; ++extra) send_direct(k++);
  REQUIRE(load.EachGains(5));  // The shard took writes on its new primary meanwhile.

  bool fenced_seen = false;
  for (size_t i = 0; i < outcomes.size(); ++i) {
    const Outcome& o = outcomes[i];
    INFO("direct send " << o.id << " answered " << static_cast<int>(o.code) << " at map version "
                        << o.map_version_at_reply);
    if (i >= after_replacement) CHECK_FALSE(o.ok);
    if (o.ok) {
      CHECK(o.token.epoch == shard.epoch);
      CHECK_FALSE(fenced_seen);  // Once fenced, fenced until the map changes (it is cut).
    } else {
      // Fenced (unavailable), or committed while the lease held but no replica confirmed it
      // in time (notReplicated): never acknowledged either way.
      CHECK((o.code == ErrorCode::kUnavailable || o.code == ErrorCode::kNotReplicated));
      fenced_seen = fenced_seen || o.code == ErrorCode::kUnavailable;
    }
  }
  CHECK(fenced_seen);
  CHECK(replaced_at_version > version_before_cut);

  f.cluster->CutFromMetadata(cut, false);
  REQUIRE(load.EachGains(5));
  load.Stop();
  std::vector<AckedSend> acked = load.acked;
  for (const Outcome& o : outcomes) {
    if (o.ok) acked.push_back({convs[0], o.id, o.seq, o.token});
  }
  CheckAcknowledged(f, acked);
  REQUIRE(EventuallyIdentical(f));
  // The node got a new lease after the cut healed, and the map records it.
  REQUIRE(f.Eventually([&] { return f.cluster->node(cut)->primary_lease()->Writable(); }));
}

TEST_CASE(
    "an old primary holding async writes no replica has rejoins rebuilt: the loss is counted") {
  EmbeddedClusterOptions options = FailoverOptions(AckMode::kAsync);
  options.fan_out = false;  // Only the sends below write to the shard: its LSN is theirs.
  ClusterFixture f(options);
  auto convs = ConversationsOnEveryShard(f);
  const ShardInfo shard = StoredMap(f).ShardForKey(convs[0]);
  const size_t old_primary = f.cluster->IndexOf(shard.primary);
  REQUIRE(EventuallyIdentical(f, shard.shard_id));
  // The replicas stop applying: the next async sends live on the primary only.
  std::vector<std::shared_ptr<replication::ShardLog>> replica_logs;
  for (const std::string& id : shard.replicas) {
    auto hosted = HostedOn(f, f.cluster->IndexOf(id), shard.shard_id);
    REQUIRE(hosted);
    replica_logs.push_back(hosted->log);
    hosted->log->SetPauseAt(hosted->log->lsn());
  }
  std::vector<std::string> unreplicated;
  for (int k = 0; k < 7; ++k) {
    const std::string id = "lost-" + std::to_string(k);
    auto sent = f.Wait(f.client->SendMessage(Send(convs[0], 1, id, "x"), {AckMode::kAsync, 0}));
    REQUIRE(sent.ok());  // Acknowledged: async asks no replica.
    unreplicated.push_back(id);
  }
  const uint64_t primary_lsn = HostedOn(f, old_primary, shard.shard_id)->store->LatestSequence();
  f.cluster->StopNode(old_primary);
  for (auto& log : replica_logs) log->SetPauseAt(0);
  REQUIRE(PrimariesMovedOff(f, shard.primary));
  // The new primary takes writes (from its own epoch on): more LSNs than the old primary's
  // tail, so that only the epoch history can tell the old copy diverged (it is not "ahead").
  auto after = f.Wait(f.client->SendMessage(Send(convs[0], 1, "after", "y")));
  REQUIRE(after.ok());
  for (int k = 0; k < 40; ++k) {
    REQUIRE(
        f.Wait(f.client->SendMessage(Send(convs[0], 1, "later-" + std::to_string(k), "z"))).ok());
  }

  REQUIRE(f.cluster->RestartNode(old_primary).ok());
  REQUIRE(EventuallyIdentical(f, shard.shard_id));
  // Counted, not hidden: the old primary discarded what it held past the new epoch's start.
  const std::string metrics = f.cluster->node(old_primary)->RenderMetrics();
  const ShardMap map = StoredMap(f);
  auto new_primary =
      HostedOn(f, f.cluster->IndexOf(map.FindShard(shard.shard_id)->primary), shard.shard_id);
  REQUIRE(new_primary);
  auto epochs = new_primary->store->EpochHistory();
  REQUIRE(epochs.ok());
  uint64_t new_start = 0;  // Where the first epoch after the old primary's began.
  for (const EpochRecord& e : *epochs) {
    if (e.epoch > shard.epoch) {
      new_start = e.start_lsn;
      break;
    }
  }
  REQUIRE(new_start > 0);
  CHECK(MetricValue(metrics, "scrollback_rejoin_rebuilds_total") >= 1);
  CHECK(MetricValue(metrics, "scrollback_rejoin_discarded_lsns_total") == primary_lsn - new_start);
  // And the acknowledged writes async mode lost are exactly those the replicas never had.
  std::set<std::string> present;
  for (const Message& m : History(f, convs[0])) present.insert(m.client_msg_id);
  size_t lost = 0;
  for (const std::string& id : unreplicated) lost += present.count(id) == 0;
  CHECK(lost == unreplicated.size());
  CHECK(present.count("after") == 1);
  CHECK(present.count("later-39") == 1);
}

// The partition the issue names: a primary cut off from the metadata store and from its
// replicas (network seam: cut, or a black hole that drops every byte), while its clients still
// reach it. Its semi-sync writes cannot be acknowledged (no replica can pull), it fences itself
// when its lease runs out, the controller promotes a replica, and nothing acknowledged is lost.
TEST_CASE("a primary partitioned from the store and its replicas loses no acknowledged send") {
  for (const bool black_hole : {false, true}) {
    INFO((black_hole ? "links drop every byte" : "links cut"));
    EmbeddedClusterOptions options = FailoverOptions(AckMode::kSemiSync);
    options.faults = std::make_shared<NetworkFaults>();
    ClusterFixture f(options);
    auto convs = ConversationsOnEveryShard(f);
    SendLoad load(f, convs, {});
    load.Start();
    REQUIRE(load.EachGains(3));
    const ShardInfo shard = StoredMap(f).ShardForKey(convs[0]);
    const size_t isolated = f.cluster->IndexOf(shard.primary);
    for (size_t i = 0; i < f.cluster->node_count(); ++i) {
      if (i == isolated) continue;
      if (black_hole) {
        options.faults->Drop(shard.primary, f.cluster->node_id(i));
      } else {
        options.faults->Cut(shard.primary, f.cluster->node_id(i));
      }
    }
    f.cluster->CutFromMetadata(isolated, true);
    REQUIRE(PrimariesMovedOff(f, shard.primary));
    REQUIRE(load.EachGains(5));  // Every shard, the isolated node's included, takes writes.
    options.faults->HealAll();
    f.cluster->CutFromMetadata(isolated, false);
    REQUIRE(f.Eventually([&] { return f.cluster->node(isolated)->primary_lease()->Writable(); },
                         std::chrono::seconds(20)));
    REQUIRE(load.EachGains(3));
    load.Stop();
    CheckAcknowledged(f, load.acked);
    REQUIRE(EventuallyIdentical(f));
  }
}

// Rounds of faults under a semi-sync load: kill a random node (a crash) or partition it from
// the metadata store and from the other nodes, wait until its primaries have moved and every
// shard takes writes, then bring it back. SCROLLBACK_FAILOVER_ROUNDS sets the number of rounds
// (scripts/soak-replication.sh runs more).
TEST_CASE(
    "seeded failover rounds: crashes and partitions under semi-sync load lose no acknowledged "
    "send") {
  const uint64_t seed = testing::TestSeed();
  const char* env = std::getenv("SCROLLBACK_FAILOVER_ROUNDS");
  const int rounds = env ? std::atoi(env) : 20;
  INFO("seed " << seed << " (SCROLLBACK_SEED=" << seed << " replays it), " << rounds << " rounds");
  std::mt19937_64 rng(seed);
  EmbeddedClusterOptions options = FailoverOptions(AckMode::kSemiSync);
  options.faults = std::make_shared<NetworkFaults>();
  ClusterFixture f(options);
  auto convs = ConversationsOnEveryShard(f);
  SendLoad load(f, convs, {});
  load.Start();
  REQUIRE(load.EachGains(3));
  std::vector<std::string> node_ids;
  for (size_t i = 0; i < f.cluster->node_count(); ++i) node_ids.push_back(f.cluster->node_id(i));
  for (int round = 0; round < rounds; ++round) {
    const size_t victim = rng() % f.cluster->node_count();
    const bool crash = rng() % 2 == 0;
    const std::string victim_id = f.cluster->node_id(victim);
    INFO("round " << round << ": " << (crash ? "crash " : "partition from the store and peers ")
                  << victim_id);
    if (crash) {
      f.cluster->StopNode(victim);
    } else {
      // Cut off from the metadata store and from every other node (its clients still reach it).
      f.cluster->CutFromMetadata(victim, true);
      options.faults->Isolate(victim_id, node_ids);
    }
    REQUIRE(PrimariesMovedOff(f, victim_id));
    REQUIRE(load.EachGains(3));
    if (crash) {
      REQUIRE(f.cluster->RestartNode(victim).ok());
    } else {
      options.faults->HealAll();
      f.cluster->CutFromMetadata(victim, false);
    }
    REQUIRE(f.Eventually([&] { return f.cluster->node(victim)->primary_lease()->Writable(); },
                         std::chrono::seconds(20)));
    REQUIRE(load.EachGains(2));
  }
  load.Stop();
  CheckAcknowledged(f, load.acked);
  REQUIRE(EventuallyIdentical(f));
}

TEST_CASE("a planned switchover and a drain under async sends lose nothing") {
  ClusterFixture f(FailoverOptions(AckMode::kAsync));
  auto convs = ConversationsOnEveryShard(f);
  SendLoad load(f, convs, {});
  load.Start();
  REQUIRE(load.EachGains(5));

  // One shard to a named replica.
  const ShardInfo shard = StoredMap(f).ShardForKey(convs[0]);
  const std::string target = shard.replicas.back();
  // The target stops applying for a while: the acknowledged async sends it lacks must reach it
  // before it becomes primary (promoting it at once would lose them).
  std::shared_ptr<replication::ShardLog> target_log;
  {
    auto target_copy = HostedOn(f, f.cluster->IndexOf(target), shard.shard_id);
    REQUIRE(target_copy);
    target_log = target_copy->log;  // Not the store: holding it would keep it from reopening.
  }
  target_log->SetPauseAt(target_log->lsn());
  REQUIRE(load.EachGains(3));
  Result<SwitchoverResult> moved = Status::Unavailable("not run");
  {
    // Switchover() blocks: run it on a thread while this loop drives the load.
    std::atomic<bool> done{false};
    std::thread runner([&] {
      moved = f.cluster->Switchover(shard.shard_id, target);
      done = true;
    });
    const auto held_until = std::chrono::steady_clock::now() + std::chrono::milliseconds(400);
    REQUIRE(f.Eventually(
        [&] {
          if (std::chrono::steady_clock::now() >= held_until) target_log->SetPauseAt(0);
          return done.load();
        },
        std::chrono::seconds(60)));
    runner.join();
  }
  INFO(moved.status().ToString());
  REQUIRE(moved.ok());
  CHECK(moved->from == shard.primary);
  CHECK(moved->to == target);
  CHECK(moved->epoch == shard.epoch + 2);  // Paused at + 1, the new primary at + 2.
  const ShardInfo after = *StoredMap(f).FindShard(shard.shard_id);
  CHECK(after.primary == target);
  CHECK(after.switch_to.empty());
  CHECK(std::find(after.replicas.begin(), after.replicas.end(), shard.primary) !=
        after.replicas.end());
  REQUIRE(load.EachGains(5));

  // Drain a node: every primary it has moves, one after another.
  const std::string drained = f.cluster->node_id(0);
  Result<std::vector<SwitchoverResult>> drain = Status::Unavailable("not run");
  {
    std::atomic<bool> done{false};
    std::thread runner([&] {
      drain = DrainPrimaries(*f.cluster->metadata(), drained, std::chrono::seconds(30));
      done = true;
    });
    REQUIRE(f.Eventually([&] { return done.load(); }, std::chrono::seconds(120)));
    runner.join();
  }
  INFO(drain.status().ToString());
  REQUIRE(drain.ok());
  const ShardMap drained_map = StoredMap(f);
  for (const ShardInfo& s : drained_map.shards()) CHECK(s.primary != drained);
  REQUIRE(load.EachGains(5));
  load.Stop();
  // Async sends, yet nothing acknowledged is lost: each move waited for its target.
  CheckAcknowledged(f, load.acked);
  REQUIRE(EventuallyIdentical(f));

  // Requests that cannot be met are refused before anything pauses.
  auto to_primary =
      Switchover(*f.cluster->metadata(), after.shard_id, after.primary, std::chrono::seconds(5));
  CHECK(to_primary.status().code() == ErrorCode::kInvalidArgument);
  auto unknown = Switchover(*f.cluster->metadata(), 999, "", std::chrono::seconds(5));
  CHECK(unknown.status().code() == ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace scrollback
