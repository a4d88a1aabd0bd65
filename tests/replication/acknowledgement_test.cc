// Acknowledgement modes (docs/replication.md, Acknowledgement): a semi-sync write is answered
// only once a replica that the map lists has applied it, and otherwise with notReplicated after
// its timeout, never as if it were async. Replicas are held at an LSN (ShardLog::SetPauseAt) so
// that "no replica has it" is a fact of the test, not a race; every check is made from what the
// client was told and from the replicas' applied LSNs.
#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <vector>

#include "cluster/cluster_test_util.h"
#include "replication/replication_test_util.h"
#include "scrollback/replication/replication.h"

namespace scrollback {
namespace {

using namespace replication_testing;  // NOLINT: the shared helpers of these tests.

constexpr uint64_t kConv = 77;

// The copies of the shard that owns kConv: its replicas' logs, caught up and identical.
struct HeldShard {
  explicit HeldShard(ClusterFixture& f) {
    CreateConversations(f, kConv, 1);
    auto map = f.cluster->shard_maps()->Current();
    info = map->ShardForKey(kConv);
    for (const std::string& id : info.replicas) {
      auto hosted = HostedOn(f, f.cluster->IndexOf(id), info.shard_id);
      REQUIRE(hosted);
      replica_logs.push_back(hosted->log);
    }
    REQUIRE(EventuallyIdentical(f, info.shard_id));
  }
  // Every replica stops applying where it is: no later write reaches any of them.
  void Hold() {
    for (auto& log : replica_logs) log->SetPauseAt(log->lsn());
  }
  void Release() {
    for (auto& log : replica_logs) log->SetPauseAt(0);
  }
  uint64_t MostAppliedByAReplica() const {
    uint64_t most = 0;
    for (const auto& log : replica_logs) most = std::max(most, log->lsn());
    return most;
  }

  ShardInfo info;
  std::vector<std::shared_ptr<replication::ShardLog>> replica_logs;
};

WriteOptions SemiSync(uint32_t timeout_ms = 0) { return {AckMode::kSemiSync, timeout_ms}; }

TEST_CASE("a semi-sync send is acknowledged only once a replica has applied it") {
  ClusterFixture f;
  HeldShard shard(f);
  for (int i = 0; i < 20; ++i) {
    auto sent = f.Wait(
        f.client->SendMessage(Send(kConv, 1, "m" + std::to_string(i), "x"), SemiSync(10'000)));
    INFO(sent.status().ToString());
    REQUIRE(sent.ok());
    // When the client hears success, some replica already holds the write.
    CHECK(shard.MostAppliedByAReplica() >= sent->token.lsn);
  }
}

TEST_CASE("with every replica held, a semi-sync write answers notReplicated and stays committed") {
  ClusterFixture f;
  HeldShard shard(f);
  shard.Hold();
  auto sent =
      f.Wait(f.client->SendMessage(Send(kConv, 1, "held", "on the primary only"), SemiSync(300)));
  CHECK(sent.status().code() == ErrorCode::kNotReplicated);
  // Never a silent downgrade: an async write is acknowledged meanwhile, a semi-sync one is not.
  auto async = f.Wait(f.client->SendMessage(Send(kConv, 1, "async", "x"), {AckMode::kAsync, 0}));
  REQUIRE(async.ok());
  CHECK(shard.MostAppliedByAReplica() < async->token.lsn);
  // The timed-out write is committed on the primary, and a retry (the same client_msg_id) is
  // safe: once a replica has it, the retry is acknowledged with the first send's seq.
  auto history = f.Wait(f.client->ReadHistory({kConv, Direction::kNewestFirst, 0, {}, 10}));
  REQUIRE(history.ok());
  bool committed = false;
  for (const Message& m : history->messages) committed |= m.client_msg_id == "held";
  CHECK(committed);
  shard.Release();
  auto retried = f.Wait(
      f.client->SendMessage(Send(kConv, 1, "held", "on the primary only"), SemiSync(10'000)));
  REQUIRE(retried.ok());
  CHECK(retried->duplicate);
  CHECK(shard.MostAppliedByAReplica() >= retried->token.lsn);

  // Every write takes the mode, not only sends.
  shard.Hold();
  auto edited = f.Wait(f.client->EditMessage(kConv, async->seq, 1, "edited", SemiSync(200)));
  CHECK(edited.status().code() == ErrorCode::kNotReplicated);
  auto added = f.Wait(f.client->AddMembers(kConv, 1, {9}, SemiSync(200)));
  CHECK(added.status().code() == ErrorCode::kNotReplicated);
  auto batch = f.Wait(
      f.client->SendBatch({Send(kConv, 1, "b1", "x"), Send(kConv, 2, "b2", "y")}, SemiSync(200)));
  REQUIRE(batch.size() == 2);
  for (const auto& result : batch) CHECK(result.status().code() == ErrorCode::kNotReplicated);
  shard.Release();
  auto batch_again = f.Wait(f.client->SendBatch(
      {Send(kConv, 1, "b1", "x"), Send(kConv, 2, "b2", "y")}, SemiSync(10'000)));
  for (const auto& result : batch_again) {
    REQUIRE(result.ok());
    CHECK(shard.MostAppliedByAReplica() >= result->token.lsn);
  }
  // Counted in /metrics: the held send, the edit, the member change and the batch (one wait).
  const size_t primary = f.cluster->IndexOf(shard.info.primary);
  const std::string metrics = f.cluster->node(primary)->RenderMetrics();
  CHECK(metrics.find("\nscrollback_semi_sync_writes_total{outcome=\"not_replicated\"} 4\n") !=
        std::string::npos);
}

TEST_CASE("a pull from a node the map does not list as a replica acknowledges nothing") {
  ClusterFixture f;
  HeldShard shard(f);
  shard.Hold();
  auto map = f.cluster->shard_maps()->Current();
  const size_t primary_index = f.cluster->IndexOf(shard.info.primary);
  auto primary_log = HostedOn(f, primary_index, shard.info.shard_id)->log;
  RawNode primary(f.io, map->FindNode(shard.info.primary)->address);
  auto pending = f.client->SendMessage(Send(kConv, 1, "b", "y"), SemiSync(5000));
  // Wait until the write is committed (a strong read sees it) while its reply is held.
  REQUIRE(f.Eventually([&] {
    auto page = f.Wait(f.client->ReadHistory({kConv, Direction::kNewestFirst, 0, {}, 5}));
    if (!page.ok()) return false;
    for (const Message& m : page->messages) {
      if (m.client_msg_id == "b") return true;
    }
    return false;
  }));
  // An impostor claims to have applied all of it (a pull from the primary's newest LSN + 1,
  // past the write's, which the primary answers).
  auto claim = primary.node.pullLogRequest();
  claim.setShardId(shard.info.shard_id);
  claim.setEpoch(shard.info.epoch);
  claim.setFromLsn(primary_log->lsn() + 1);
  claim.setMaxBytes(1 << 16);
  claim.setWaitMs(0);
  claim.setReplicaNodeId("impostor");
  claim.setDataEpoch(shard.info.epoch);  // Claims a copy current at this epoch.
  REQUIRE(CodeOf(claim.send().wait(f.io.waitScope)) == ErrorCode::kOk);
  // The claim acknowledges nothing: the write waits for a listed replica, which is held.
  auto sent = pending.wait(f.io.waitScope);
  CHECK(sent.status().code() == ErrorCode::kNotReplicated);
  shard.Release();
}

TEST_CASE("the node's default acknowledgement applies to writes that do not choose") {
  EmbeddedClusterOptions options;
  options.node.replication.default_ack = AckMode::kSemiSync;
  options.node.replication.semi_sync_timeout = std::chrono::milliseconds(300);
  ClusterFixture f(options);
  HeldShard shard(f);
  shard.Hold();
  auto sent = f.Wait(f.client->SendMessage(Send(kConv, 1, "d", "default")));
  CHECK(sent.status().code() == ErrorCode::kNotReplicated);
  auto async = f.Wait(f.client->SendMessage(Send(kConv, 1, "e", "x"), {AckMode::kAsync, 0}));
  CHECK(async.ok());
  shard.Release();
  // The default mode with a long timeout of its own (the node's 300 ms is for the held case).
  auto later =
      f.Wait(f.client->SendMessage(Send(kConv, 1, "f", "default"), {AckMode::kDefault, 10'000}));
  REQUIRE(later.ok());
  CHECK(shard.MostAppliedByAReplica() >= later->token.lsn);
}

TEST_CASE("with replication factor 1, a semi-sync write answers notReplicated at once") {
  EmbeddedClusterOptions options;
  options.replication_factor = 1;
  ClusterFixture f(options);
  CreateConversations(f, kConv, 1);
  auto sent = f.Wait(f.client->SendMessage(Send(kConv, 1, "a", "x"), SemiSync(60'000)));
  CHECK(sent.status().code() == ErrorCode::kNotReplicated);  // Long before the timeout.
  CHECK(f.Wait(f.client->SendMessage(Send(kConv, 1, "b", "x"))).ok());
}

}  // namespace
}  // namespace scrollback
