// Resharding on the embedded cluster (docs/resharding.md): online splits under a send load from
// several writers. Checked from what clients were told (acknowledged sends, their seqs and
// tokens), from `verify` across every copy, and from the nodes' counters (children cut locally,
// no checkpoint copied). Randomized rounds print their seed (SCROLLBACK_SEED=... replays one;
// SCROLLBACK_SPLIT_ROUNDS sets how many).
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/cluster_test_util.h"
#include "replication/replication_test_util.h"
#include "replication/send_load.h"
#include "scrollback/admin/rebalance.h"
#include "scrollback/cluster/merge.h"
#include "scrollback/cluster/shard_map_store.h"
#include "scrollback/cluster/split.h"
#include "scrollback/router/router_server.h"
#include "scrollback/schema/chatstore.capnp.h"
#include "scrollback/schema/wire.h"
#include "test_util.h"

namespace scrollback {
namespace {

using namespace replication_testing;  // NOLINT: the shared helpers of these tests.

// The sum of `metric` over the running nodes.
uint64_t SumOverNodes(ClusterFixture& f, const std::string& metric) {
  uint64_t sum = 0;
  for (size_t i = 0; i < f.cluster->node_count(); ++i) {
    if (f.cluster->node(i)) sum += MetricValue(f.cluster->node(i)->RenderMetrics(), metric);
  }
  return sum;
}

// Runs a blocking split on a thread while the fixture's loop drives the load.
Result<SplitResult> SplitWhileSending(ClusterFixture& f, uint64_t shard_id,
                                      std::optional<uint64_t> at) {
  Result<SplitResult> split = Status::Unavailable("not run");
  std::atomic<bool> done{false};
  std::thread runner([&] {
    split = f.cluster->Split(shard_id, at);
    done = true;
  });
  REQUIRE(f.Eventually([&] { return done.load(); }, std::chrono::seconds(90)));
  runner.join();
  return split;
}

// Runs `work` (blocking) on a thread while the fixture's loop drives the load.
template <typename Work>
void WhileSending(ClusterFixture& f, Work&& work) {
  std::atomic<bool> done{false};
  std::thread runner([&] {
    work();
    done = true;
  });
  REQUIRE(f.Eventually([&] { return done.load(); }, std::chrono::seconds(120)));
  runner.join();
}

// The nodes holding a copy of `shard`.
std::set<std::string> Holders(const ShardInfo& shard) {
  std::set<std::string> holders(shard.replicas.begin(), shard.replicas.end());
  holders.insert(shard.primary);
  return holders;
}

// Conversations from `first` on, `per_shard` on every shard of the current map.
std::vector<uint64_t> ConversationsPerShard(ClusterFixture& f, uint64_t first, int per_shard) {
  auto map = f.cluster->shard_maps()->Current();
  std::map<uint64_t, int> count;
  std::vector<uint64_t> convs;
  for (uint64_t conv = first; convs.size() < map->shards().size() * per_shard; ++conv) {
    if (count[map->ShardForKey(conv).shard_id]++ < per_shard) convs.push_back(conv);
  }
  for (uint64_t conv : convs) CreateConversations(f, conv, 1);
  return convs;
}

TEST_CASE("a shard splits online under sends: nothing acknowledged is lost and no data moves") {
  ClusterFixture f(FailoverOptions(AckMode::kSemiSync));
  auto convs = ConversationsPerShard(f, kFirstConv, 4);
  SendLoad load(f, convs, {});
  load.Start();
  REQUIRE(load.EachGains(3));

  const ShardInfo parent = StoredMap(f).ShardForKey(convs[0]);
  const uint64_t bootstraps_before = SumOverNodes(f, "scrollback_replica_bootstraps_total");
  auto split = SplitWhileSending(f, parent.shard_id, std::nullopt);
  INFO(split.status().ToString());
  REQUIRE(split.ok());
  CHECK(split->at_token == MiddleToken(parent.range));
  CHECK(split->left == TokenRange{parent.range.first, split->at_token - 1});
  CHECK(split->right == TokenRange{split->at_token, parent.range.last});
  const ShardMap after = StoredMap(f);
  CHECK(after.FindShard(parent.shard_id) == nullptr);
  for (uint64_t child_id : {split->left_id, split->right_id}) {
    const ShardInfo* child = after.FindShard(child_id);
    REQUIRE(child);
    CHECK(child->split_from == parent.shard_id);
    CHECK(child->split_lsn == split->lsn);
    CHECK(child->primary == parent.primary);  // Same nodes: nothing to copy.
    CHECK(child->replicas == parent.replicas);
    CHECK(child->epoch == parent.epoch + 2);  // Sealed at + 1, the children at + 2.
  }
  CHECK(after.shards().size() == StoredMap(f).shards().size());
  // Writes go on, on both children and everywhere else.
  REQUIRE(load.EachGains(5));
  load.Stop();
  CheckAcknowledged(f, load.acked);
  REQUIRE(EventuallyIdentical(f));
  RequireIdentical(f);
  // Every copy of both children was cut from the node's own copy of the parent: no checkpoint
  // crossed the network.
  CHECK(SumOverNodes(f, "scrollback_split_cuts_total") == 2 * f.cluster->replication_factor());
  CHECK(SumOverNodes(f, "scrollback_replica_bootstraps_total") == bootstraps_before);
  // Acknowledged tokens of the parent lie at or before the sealed LSN.
  for (const AckedSend& a : load.acked) {
    if (a.token.shard_id == parent.shard_id) CHECK(a.token.lsn <= split->lsn);
  }
  // Inboxes converge: members see the newest seq of every conversation.
  for (uint64_t conv : convs) {
    const uint64_t last = f.Wait(f.client->GetConversation(conv))->last_seq;
    INFO("conversation " << conv);
    CHECK(f.Eventually([&] { return testing::InboxSeq(f, 2, conv) == last; }));
  }
}

TEST_CASE("a split shard merges back under sends: nothing lost, every copy made locally") {
  ClusterFixture f(FailoverOptions(AckMode::kSemiSync));
  auto convs = ConversationsPerShard(f, kFirstConv, 4);
  SendLoad load(f, convs, {});
  load.Start();
  REQUIRE(load.EachGains(2));
  const ShardInfo parent = StoredMap(f).ShardForKey(convs[0]);
  auto split = SplitWhileSending(f, parent.shard_id, std::nullopt);
  INFO(split.status().ToString());
  REQUIRE(split.ok());
  REQUIRE(load.EachGains(2));
  const uint64_t bootstraps_before = SumOverNodes(f, "scrollback_replica_bootstraps_total");
  const uint64_t cuts_before = SumOverNodes(f, "scrollback_split_cuts_total");

  // Impossible merges are refused first: not adjacent (the wrong way round), unknown.
  auto& metadata = *f.cluster->metadata();
  CHECK(MergeShards(metadata, split->right_id, split->left_id, std::chrono::seconds(5))
            .status()
            .code() == ErrorCode::kInvalidArgument);
  CHECK(MergeShards(metadata, split->left_id, 999, std::chrono::seconds(5)).status().code() ==
        ErrorCode::kInvalidArgument);

  Result<MergeResult> merged = Status::Unavailable("not run");
  WhileSending(f, [&] { merged = f.cluster->Merge(split->left_id, split->right_id); });
  INFO(merged.status().ToString());
  REQUIRE(merged.ok());
  CHECK(merged->range == parent.range);
  const ShardMap after = StoredMap(f);
  CHECK(after.FindShard(split->left_id) == nullptr);
  CHECK(after.FindShard(split->right_id) == nullptr);
  const ShardInfo* whole = after.FindShard(merged->merged_id);
  REQUIRE(whole);
  CHECK(whole->range == parent.range);
  CHECK(whole->merge_left == split->left_id);
  CHECK(whole->merge_right == split->right_id);
  CHECK(whole->shard_id > split->right_id);  // A new id, never one used before.
  REQUIRE(load.EachGains(3));
  load.Stop();
  CheckAcknowledged(f, load.acked);
  REQUIRE(EventuallyIdentical(f));
  RequireIdentical(f);
  // Every copy of the merged shard was made from the node's own copies of both halves.
  CHECK(SumOverNodes(f, "scrollback_split_cuts_total") - cuts_before ==
        f.cluster->replication_factor());
  CHECK(SumOverNodes(f, "scrollback_replica_bootstraps_total") == bootstraps_before);
}

TEST_CASE("impossible splits are refused before anything pauses") {
  ClusterFixture f(FailoverOptions(AckMode::kAsync));
  const ShardInfo shard = StoredMap(f).shards()[1];
  auto& metadata = *f.cluster->metadata();
  const auto timeout = std::chrono::seconds(5);
  CHECK(SplitShard(metadata, 999, std::nullopt, timeout).status().code() ==
        ErrorCode::kInvalidArgument);
  CHECK(SplitShard(metadata, shard.shard_id, shard.range.first, timeout).status().code() ==
        ErrorCode::kInvalidArgument);  // The left child would be empty.
  CHECK(SplitShard(metadata, shard.shard_id, shard.range.last + 1, timeout).status().code() ==
        ErrorCode::kInvalidArgument);  // Outside the shard.
  const uint64_t version = StoredMap(f).version();
  CHECK(StoredMap(f).version() == version);  // Nothing changed.
  CHECK(f.Wait(f.client->CreateConversation({77, 1, {2}, "still writable"})).ok());
}

TEST_CASE(
    "seeded rounds of splits and merges under sends, some with a replica down, lose nothing") {
  const uint64_t seed = testing::TestSeed();
  INFO("SCROLLBACK_SEED=" << seed);
  std::mt19937_64 rng(seed);
  int rounds = 10;
  if (const char* env = std::getenv("SCROLLBACK_SPLIT_ROUNDS")) rounds = std::atoi(env);
  EmbeddedClusterOptions options = FailoverOptions(AckMode::kSemiSync);
  options.shards = 3;
  ClusterFixture f(options);
  auto convs = ConversationsPerShard(f, kFirstConv, 6);
  SendLoad load(f, convs, {});
  load.Start();
  REQUIRE(load.EachGains(2));
  int with_replica_down = 0;
  size_t splits = 0, merges = 0;
  for (int round = 0; round < rounds; ++round) {
    const ShardMap map = StoredMap(f);
    if (round % 3 == 1) {
      // A merge of two neighbours held alike (siblings of an earlier split are).
      std::vector<std::pair<uint64_t, uint64_t>> pairs;
      for (size_t k = 0; k + 1 < map.shards().size(); ++k) {
        const ShardInfo& l = map.shards()[k];
        const ShardInfo& r = map.shards()[k + 1];
        if (l.primary == r.primary && Holders(l) == Holders(r)) {
          pairs.emplace_back(l.shard_id, r.shard_id);
        }
      }
      if (!pairs.empty()) {
        const auto [left_id, right_id] = pairs[rng() % pairs.size()];
        INFO("round " << round << ": merging shards " << left_id << " and " << right_id);
        Result<MergeResult> merged = Status::Unavailable("not run");
        WhileSending(f, [&] { merged = f.cluster->Merge(left_id, right_id); });
        INFO(merged.status().ToString());
        REQUIRE(merged.ok());
        ++merges;
        REQUIRE(load.EachGains(2));
        continue;
      }
    }
    const ShardInfo shard = map.shards()[rng() % map.shards().size()];
    if (shard.range.first == shard.range.last) continue;
    // A token anywhere inside; sometimes exactly a conversation's own token.
    uint64_t at = shard.range.first + 1 + rng() % (shard.range.last - shard.range.first);
    for (uint64_t conv : convs) {
      if (rng() % 4 == 0 && shard.range.Contains(TokenOf(conv)) &&
          TokenOf(conv) > shard.range.first) {
        at = TokenOf(conv);
        break;
      }
    }
    // Every third round a replica of the shard is down during the split: it comes back to
    // children it never had and bootstraps them from their primary.
    const bool replica_down = round % 3 == 2 && !shard.replicas.empty();
    size_t down = 0;
    if (replica_down) {
      down = f.cluster->IndexOf(shard.replicas[rng() % shard.replicas.size()]);
      f.cluster->StopNode(down);
      ++with_replica_down;
    }
    INFO("round " << round << ": shard " << shard.shard_id << " at token " << at
                  << (replica_down ? " with " + f.cluster->node_id(down) + " down" : ""));
    auto split = SplitWhileSending(f, shard.shard_id, at);
    INFO(split.status().ToString());
    REQUIRE(split.ok());
    CHECK(split->right.first == at);
    ++splits;
    if (replica_down) REQUIRE(f.cluster->RestartNode(down).ok());
    REQUIRE(load.EachGains(2));
  }
  load.Stop();
  CHECK(with_replica_down > 0);
  CHECK(StoredMap(f).shards().size() == 3 + splits - merges);
  if (rounds >= 6) CHECK(merges > 0);
  CheckAcknowledged(f, load.acked);
  REQUIRE(EventuallyIdentical(f));
  RequireIdentical(f);
}

TEST_CASE("a hot conversation shows in its shard's load and a rebalance isolates it") {
  ClusterFixture f(FailoverOptions(AckMode::kAsync));
  auto convs = ConversationsPerShard(f, kFirstConv, 3);
  for (uint64_t conv : convs) {
    REQUIRE(f.Wait(f.client->SendMessage(Send(conv, 1, "first", "hello"))).ok());
  }
  const uint64_t hot = convs[1];
  const ShardInfo home = StoredMap(f).ShardForKey(hot);
  // Two seconds of reads, nine in ten of them of the hot conversation.
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(2500);
  for (int i = 0; std::chrono::steady_clock::now() < until; ++i) {
    const uint64_t conv = i % 10 == 0 ? convs[(i / 10) % convs.size()] : hot;
    REQUIRE(f.Wait(f.client->GetMessage(conv, 1)).ok());
  }
  auto loads = admin::CollectShardLoads(f.io, StoredMap(f), std::chrono::seconds(5));
  INFO(loads.status().ToString());
  REQUIRE(loads.ok());
  const ShardLoad* hot_load = nullptr;
  double elsewhere = 0;
  for (const ShardLoad& load : *loads) {
    if (load.shard_id == home.shard_id) {
      hot_load = &load;
    } else {
      elsewhere = std::max(elsewhere, load.ops_per_s);
    }
  }
  REQUIRE(hot_load);
  CHECK(hot_load->ops_per_s > 5 * elsewhere);
  CHECK(hot_load->bytes_per_s > 0);  // Bytes are counted beside the calls...
  CHECK(SumOverNodes(f, "scrollback_shard_load_bytes_per_second") > 0);  // ... and exported.
  REQUIRE_FALSE(hot_load->hot_tokens.empty());
  CHECK(hot_load->hot_tokens[0].token == TokenOf(hot));
  CHECK(hot_load->hot_tokens[0].share > 0.6);

  PlannerOptions planner;
  planner.min_ops_to_split = 1;  // Rates are decayed over a minute: 2 s of load reads low.
  const RebalancePlan plan = PlanRebalance(StoredMap(f), *loads, planner);
  REQUIRE_FALSE(plan.splits.empty());
  for (const PlannedSplit& split : plan.splits) CHECK(split.shard_id == home.shard_id);
  Result<admin::AppliedPlan> applied = Status::Unavailable("not run");
  {
    std::atomic<bool> done{false};
    std::thread runner([&] {
      applied = admin::ApplyRebalancePlan(*f.cluster->metadata(), plan, std::chrono::seconds(30));
      done = true;
    });
    REQUIRE(f.Eventually([&] { return done.load(); }, std::chrono::seconds(90)));
    runner.join();
  }
  for (const std::string& e : applied->errors) FAIL_CHECK(e);
  CHECK(applied->splits.size() == plan.splits.size());
  const ShardInfo isolated = StoredMap(f).ShardForKey(hot);
  CHECK(isolated.range.first == TokenOf(hot));
  CHECK(isolated.range.last == TokenOf(hot));
  REQUIRE(f.cluster->WaitUntilServing(StoredMap(f).version()).ok());
  CHECK(f.Wait(f.client->GetMessage(hot, 1))->body == "hello");
  CHECK(f.Wait(f.client->SendMessage(Send(hot, 1, "second", "still here"))).ok());

  // Its reads spread over the isolated shard's replicas (replica consistency: the smart client
  // picks copies by least outstanding requests).
  auto replica_reads = [&](const std::string& node) {
    return MetricValue(f.cluster->node(f.cluster->IndexOf(node))->RenderMetrics(),
                       "scrollback_replica_reads_total");
  };
  std::map<std::string, uint64_t> before;
  for (const std::string& node : isolated.replicas) before[node] = replica_reads(node);
  ReadOptions spread;
  spread.consistency = Consistency::kReplica;
  spread.max_lag_ms = 60'000;
  for (int i = 0; i < 200; ++i) REQUIRE(f.Wait(f.client->GetMessage(hot, 1, spread)).ok());
  uint64_t served_by_replicas = 0;
  for (const std::string& node : isolated.replicas) {
    served_by_replicas += replica_reads(node) - before[node];
  }
  INFO(served_by_replicas << " replica reads counted during 200 reads");
  CHECK(served_by_replicas > 0);
}

TEST_CASE("with the rebalancer on, the controller isolates a hot conversation by itself") {
  EmbeddedClusterOptions options = FailoverOptions(AckMode::kAsync);
  options.controller.rebalance_interval = std::chrono::milliseconds(300);
  options.controller.planner.min_ops_to_split = 1;  // Rates decay over a minute: 2 s reads low.
  ClusterFixture f(options);
  auto convs = ConversationsPerShard(f, kFirstConv, 3);
  for (uint64_t conv : convs) {
    REQUIRE(f.Wait(f.client->SendMessage(Send(conv, 1, "first", "hello"))).ok());
  }
  const uint64_t hot = convs[1];
  // Reads, nine in ten of the hot conversation, until its shard holds nothing else.
  int i = 0;
  const bool isolated = f.Eventually(
      [&] {
        for (int k = 0; k < 200; ++k, ++i) {
          const uint64_t conv = i % 10 == 0 ? convs[(i / 10) % convs.size()] : hot;
          (void)f.Wait(f.client->GetMessage(conv, 1));  // Unavailable while it splits.
        }
        const ShardInfo shard = StoredMap(f).ShardForKey(hot);
        return shard.range.first == TokenOf(hot) && shard.range.last == TokenOf(hot);
      },
      std::chrono::seconds(60));
  CHECK(isolated);
  uint64_t requests = 0;
  for (size_t n = 0; n < f.cluster->node_count(); ++n) {
    if (f.cluster->controller(n) == nullptr) continue;
    std::string metrics;
    f.cluster->controller(n)->RenderMetrics(&metrics);
    requests += MetricValue(metrics, "scrollback_controller_rebalance_requests_total");
  }
  CHECK(requests >= 2);  // Two splits at least, filed by the controller, not by this test.
  REQUIRE(f.cluster->WaitUntilServing(StoredMap(f).version()).ok());
  CHECK(f.Wait(f.client->GetMessage(hot, 1))->body == "hello");
}

// ---- Moves -------------------------------------------------------------------------------------

// A node of the map that holds no copy of `shard`.
std::string NonHolder(ClusterFixture& f, const ShardInfo& shard) {
  const ShardMap map = StoredMap(f);
  for (const NodeInfo& node : map.nodes()) {
    if (!Holders(shard).count(node.node_id)) return node.node_id;
  }
  FAIL("every node holds shard " << shard.shard_id);
  return "";
}

EmbeddedClusterOptions FourNodes() {
  EmbeddedClusterOptions options = FailoverOptions(AckMode::kSemiSync);
  options.nodes = 4;
  options.shards = 4;
  return options;
}

// Sends through a router from a thread of its own (its own event loop and connection), one
// conversation after another, each send retried with its client_msg_id until acknowledged.
class RouterSender {
 public:
  RouterSender(std::string router_address, std::vector<uint64_t> convs)
      : address_(std::move(router_address)), convs_(std::move(convs)) {
    thread_ = std::thread([this] { Run(); });
  }
  // Lets the send in progress finish; returns what was acknowledged.
  std::vector<AckedSend> Stop() {
    stop_ = true;
    thread_.join();
    return acked_;
  }
  uint64_t retries() const { return retries_; }

 private:
  void Run() {
    auto io = kj::setupAsyncIo();
    auto address = io.provider->getNetwork().parseAddress(address_).wait(io.waitScope);
    auto stream = address->connect().wait(io.waitScope);
    capnp::TwoPartyClient rpc(*stream);
    auto store = rpc.bootstrap().castAs<schema::ChatStore>();
    for (int n = 0; !stop_; ++n) {
      const uint64_t conv = convs_[n % convs_.size()];
      const std::string id = "router-" + std::to_string(n);
      for (int attempt = 0; attempt < 1000; ++attempt) {
        auto call = store.sendMessageRequest();
        auto request = call.initRequest();
        request.setConvId(conv);
        request.setSenderId(1);
        request.setClientMsgId(wire::AsData(id));
        request.setBody(wire::AsData(id));
        auto reply = call.send().wait(io.waitScope);
        auto result = reply.getResult();
        if (!result.hasError()) {
          auto token = result.getToken();
          acked_.push_back({conv, id, result.getSeq(),
                            WriteToken{token.getShardId(), token.getEpoch(), token.getLsn()}});
          break;
        }
        ++retries_;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  }

  const std::string address_;
  const std::vector<uint64_t> convs_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> retries_{0};
  std::vector<AckedSend> acked_;  // The thread's until Stop.
  std::thread thread_;
};

TEST_CASE(
    "clients, a router and the fan-out worker keep working while the map changes many times a "
    "second") {
  ClusterFixture f(FailoverOptions(AckMode::kAsync));
  auto convs = ConversationsPerShard(f, kFirstConv, 2);
  auto router_convs = ConversationsPerShard(f, kFirstConv + 10'000, 1);
  // A router following the map on its own (its own watcher), as scrollback-router does.
  auto router_maps = MetadataShardMapSource::Create(f.cluster->metadata());
  REQUIRE(router_maps.ok());
  RouterOptions router_options;
  router_options.rpc.event_loops = 1;
  auto router = RouterServer::Start(router_options, *router_maps);
  INFO(router.status().ToString());
  REQUIRE(router.ok());
  SendLoad load(f, convs, {});
  load.Start();
  REQUIRE(load.EachGains(2));
  RouterSender via_router((*router)->address(), router_convs);
  const uint64_t version_before = StoredMap(f).version();
  const uint64_t seed = std::random_device{}();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  int switchovers = 0;
  constexpr int kVersions = 150;
  constexpr int kSwitchovers = 4;
  int versions_published = 0;
  WhileSending(f, [&] {
    // The churn: 150 map versions ~10 ms apart that move nothing (a node's HTTP address), and
    // meanwhile switchovers of random shards to one of their replicas, which do. Counted, not
    // timed: a slow (sanitized) build churns longer.
    std::thread versions([&] {
      for (int i = 0; i < kVersions; ++i) {
        auto edited =
            EditShardMap(*f.cluster->metadata(), [&](auto&, std::vector<NodeInfo>& nodes) {
              nodes[i % nodes.size()].http_address = "127.0.0.1:" + std::to_string(20000 + i);
              return Status::Ok();
            });
        CHECK(edited.ok());
        versions_published += edited.ok();
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    });
    for (int attempt = 0; attempt < 100 && switchovers < kSwitchovers; ++attempt) {
      const ShardMap map = StoredMap(f);
      const ShardInfo& shard = map.shards()[rng() % map.shards().size()];
      const std::string to = shard.replicas[rng() % shard.replicas.size()];
      if (f.cluster->Switchover(shard.shard_id, to).ok()) ++switchovers;  // Refusals are fine.
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    versions.join();
  });
  CHECK(versions_published == kVersions);
  CHECK(StoredMap(f).version() - version_before >= kVersions);
  CHECK(switchovers == kSwitchovers);
  REQUIRE(load.EachGains(2));  // Sends go on after the churn, to every shard.
  load.Stop();
  std::vector<AckedSend> acked = via_router.Stop();
  INFO("through the router: " << acked.size() << " acknowledged, " << via_router.retries()
                              << " retried");
  CHECK(acked.size() >= router_convs.size());
  (*router)->Stop(std::chrono::milliseconds(0));
  acked.insert(acked.end(), load.acked.begin(), load.acked.end());
  CheckAcknowledged(f, acked);
  // Every member's inbox converges on the last acknowledged send of each conversation.
  std::map<uint64_t, uint64_t> last_seq;
  for (const AckedSend& a : acked) last_seq[a.conv] = std::max(last_seq[a.conv], a.seq);
  for (uint64_t user : {2, 3}) {
    CHECK(f.Eventually(
        [&] {
          auto page = f.Wait(f.client->ListInbox({user, "", 100}));
          if (!page.ok()) return false;
          size_t current = 0;
          for (const InboxEntry& e : page->entries) {
            current += last_seq.count(e.conv_id) && e.last_seq == last_seq[e.conv_id];
          }
          return current == last_seq.size();
        },
        std::chrono::seconds(30)));
  }
}

TEST_CASE("copies move between nodes under sends, a primary's too, and nothing is lost") {
  ClusterFixture f(FourNodes());
  auto convs = ConversationsPerShard(f, kFirstConv, 3);
  SendLoad load(f, convs, {});
  load.Start();
  REQUIRE(load.EachGains(3));
  const ShardInfo shard = StoredMap(f).ShardForKey(convs[0]);

  // A replica's copy, then the primary's.
  for (const std::string& from : {shard.replicas.front(), shard.primary}) {
    const ShardInfo before = *StoredMap(f).FindShard(shard.shard_id);
    const std::string to = NonHolder(f, before);
    INFO("moving shard " << shard.shard_id << " from " << from << " to " << to);
    Result<MoveResult> moved = Status::Unavailable("not run");
    WhileSending(f, [&] { moved = f.cluster->Move(shard.shard_id, from, to); });
    INFO(moved.status().ToString());
    REQUIRE(moved.ok());
    CHECK(moved->was_primary == (from == before.primary));
    const ShardInfo after = *StoredMap(f).FindShard(shard.shard_id);
    std::set<std::string> expected = Holders(before);
    expected.erase(from);
    expected.insert(to);
    CHECK(Holders(after) == expected);
    CHECK(after.move_from.empty());
    CHECK(after.move_to.empty());
    if (moved->was_primary) CHECK(after.primary == to);
    REQUIRE(load.EachGains(3));
  }
  load.Stop();
  CheckAcknowledged(f, load.acked);
  REQUIRE(EventuallyIdentical(f));
  RequireIdentical(f);
}

TEST_CASE("a move aborted before its switchover leaves the old placement serving") {
  ClusterFixture f(FourNodes());
  auto convs = ConversationsPerShard(f, kFirstConv, 2);
  const ShardInfo shard = StoredMap(f).ShardForKey(convs[0]);
  const std::string to = NonHolder(f, shard);
  const size_t target = f.cluster->IndexOf(to);
  Result<MoveResult> moved = Status::Unavailable("not run");
  std::thread mover([&] {
    moved = MoveCopy(*f.cluster->metadata(), shard.shard_id, shard.primary, to,
                     std::chrono::seconds(60));
  });
  // The target joins, then dies before it could catch up and take over.
  REQUIRE(f.Eventually([&] { return StoredMap(f).FindShard(shard.shard_id)->move_to == to; }));
  f.cluster->StopNode(target);
  Status aborted = AbortMove(*f.cluster->metadata(), shard.shard_id, std::chrono::seconds(30));
  mover.join();
  INFO(aborted.ToString() << " / " << moved.status().ToString());
  REQUIRE(aborted.ok());
  CHECK(moved.status().code() == ErrorCode::kFailedPrecondition);
  const ShardInfo after = *StoredMap(f).FindShard(shard.shard_id);
  CHECK(Holders(after) == Holders(shard));
  CHECK(after.primary == shard.primary);
  CHECK(after.move_to.empty());
  // Writable, and the returning target drops what it had of the shard.
  CHECK(f.Wait(f.client->SendMessage(Send(convs[0], 1, "after", "abort"))).ok());
  REQUIRE(f.cluster->RestartNode(target).ok());
  CHECK_FALSE(HostedOn(f, target, shard.shard_id).has_value());
  // Aborting what is not moving is refused.
  CHECK(AbortMove(*f.cluster->metadata(), shard.shard_id, std::chrono::seconds(5)).code() ==
        ErrorCode::kFailedPrecondition);
  // Impossible moves are refused before anything changes.
  auto& metadata = *f.cluster->metadata();
  CHECK(MoveCopy(metadata, shard.shard_id, shard.primary, shard.replicas[0],
                 std::chrono::seconds(5))
            .status()
            .code() == ErrorCode::kInvalidArgument);  // The target holds a copy already.
  CHECK(MoveCopy(metadata, shard.shard_id, to, shard.primary, std::chrono::seconds(5))
            .status()
            .code() == ErrorCode::kInvalidArgument);  // The source holds none.
  CHECK(MoveCopy(metadata, shard.shard_id, shard.primary, "node-99", std::chrono::seconds(5))
            .status()
            .code() == ErrorCode::kInvalidArgument);  // No such node.
}

TEST_CASE("a move goes on through its target's crash mid-copy") {
  // Until the target's first crash, its bootstraps crawl (10 KB/s): it is stopped mid-copy.
  auto slow = std::make_shared<std::atomic<bool>>(true);
  EmbeddedClusterOptions options = FourNodes();
  options.customize_node = [slow](size_t, NodeOptions& node) {
    if (slow->load()) node.replication.bootstrap_mb_per_s = 0.01;
  };
  ClusterFixture f(options);
  auto convs = ConversationsPerShard(f, kFirstConv, 2);
  SendLoad load(f, convs, {});
  load.Start();
  REQUIRE(load.EachGains(2));
  const ShardInfo shard = StoredMap(f).ShardForKey(convs[0]);
  const std::string to = NonHolder(f, shard);
  const size_t target = f.cluster->IndexOf(to);
  slow->store(false);  // Applies to the target's restart below.
  Result<MoveResult> moved = Status::Unavailable("not run");
  std::thread mover([&] {
    moved = MoveCopy(*f.cluster->metadata(), shard.shard_id, shard.replicas[0], to,
                     std::chrono::seconds(60));
  });
  REQUIRE(f.Eventually([&] { return StoredMap(f).FindShard(shard.shard_id)->move_to == to; }));
  f.cluster->StopNode(target);
  CHECK(StoredMap(f).FindShard(shard.shard_id)->move_to == to);  // Stopped mid-move.
  REQUIRE(load.EachGains(2));
  REQUIRE(f.cluster->RestartNode(target).ok());
  REQUIRE(
      f.Eventually([&] { return moved.ok() || moved.status().code() != ErrorCode::kUnavailable; },
                   std::chrono::seconds(60)));
  mover.join();
  INFO(moved.status().ToString());
  REQUIRE(moved.ok());
  load.Stop();
  CheckAcknowledged(f, load.acked);
  REQUIRE(EventuallyIdentical(f));
  RequireIdentical(f);
}

TEST_CASE("a new node takes copies, and a drained node gives all of its copies away") {
  ClusterFixture f(FailoverOptions(AckMode::kSemiSync));
  auto convs = ConversationsPerShard(f, kFirstConv, 2);
  SendLoad load(f, convs, {});
  load.Start();
  REQUIRE(load.EachGains(2));
  Result<size_t> added = Status::Unavailable("not run");
  WhileSending(f, [&] { added = f.cluster->AddNode(); });
  INFO(added.status().ToString());
  REQUIRE(added.ok());
  const std::string fresh = f.cluster->node_id(*added);
  CHECK(StoredMap(f).FindNode(fresh) != nullptr);

  // Drain node-1: its copies (primaries too) go to the only node without them, the new one.
  const std::string drained = f.cluster->node_id(0);
  Result<std::vector<MoveResult>> drain = Status::Unavailable("not run");
  WhileSending(
      f, [&] { drain = DrainCopies(*f.cluster->metadata(), drained, std::chrono::seconds(60)); });
  INFO(drain.status().ToString());
  REQUIRE(drain.ok());
  CHECK(drain->size() == StoredMap(f).shards().size());
  const ShardMap after = StoredMap(f);
  for (const ShardInfo& s : after.shards()) {
    CHECK_FALSE(Holders(s).count(drained));
    CHECK(Holders(s).count(fresh));
    CHECK(Holders(s).size() == 3);
  }
  // Now it can leave the map, and be stopped without anyone noticing.
  Status removed = Status::Unavailable("not run");
  WhileSending(f, [&] { removed = RemoveNodeFromMap(*f.cluster->metadata(), drained); });
  INFO(removed.ToString());
  REQUIRE(removed.ok());
  CHECK(StoredMap(f).FindNode(drained) == nullptr);
  f.cluster->StopNode(0);
  REQUIRE(load.EachGains(2));
  load.Stop();
  CheckAcknowledged(f, load.acked);
  REQUIRE(EventuallyIdentical(f));
  // A node that holds copies cannot leave the map.
  CHECK(RemoveNodeFromMap(*f.cluster->metadata(), fresh).code() == ErrorCode::kFailedPrecondition);
}

}  // namespace
}  // namespace scrollback
