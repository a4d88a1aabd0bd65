// Replication through a whole embedded cluster (replication factor 3): log shipping, bootstrap,
// re-bootstrap after a log gap, checkpoint verification, replica reads and their consistency
// levels, and the typed refusals of the replication protocol. Every check is made from what
// clients were told (acknowledged writes, tokens, replies) and from `verify` (checksums of every
// copy at one LSN), never from logs.
#include "scrollback/replication/replication.h"

#include <capnp/rpc-twoparty.h>
#include <kj/vector.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "cluster/cluster_test_util.h"
#include "replication/replication_test_util.h"
#include "scrollback/admin/verify.h"
#include "scrollback/schema/chatstore.capnp.h"
#include "scrollback/schema/chatstore_wire.h"
#include "scrollback/schema/wire.h"

namespace scrollback {
namespace {

namespace fs = std::filesystem;
namespace s = ::scrollback::schema;
using testing::ClusterFixture;
using namespace replication_testing;  // NOLINT: the shared helpers of these tests.

TEST_CASE("every copy of every shard is identical after a write load (verify at one LSN)") {
  ClusterFixture f;
  REQUIRE(f.cluster->replication_factor() == 3);
  CreateConversations(f, 100, 32);
  for (int i = 0; i < 400; ++i) {
    auto sent = f.Wait(f.client->SendMessage(
        Send(100 + i % 32, 1 + i % 3, "m" + std::to_string(i), "body " + std::to_string(i))));
    REQUIRE(sent.ok());
  }
  // Edits and deletes ship too.
  REQUIRE(f.Wait(f.client->EditMessage(100, 1, 1, "edited")).ok());
  REQUIRE(f.Wait(f.client->DeleteMessage(101, 1, 2)).ok());
  REQUIRE(EventuallyIdentical(f));
  RequireIdentical(f);
  // And the copies compared hold the data: most shards were compared past their writes.
  admin::VerifyOptions options;
  int with_data = 0;
  for (const auto& v : admin::VerifyShards(f.io, *f.cluster->shard_maps()->Current(), options)) {
    if (v.lsn > 100 && v.copies.front().keys > 10) ++with_data;
  }
  CHECK(with_data >= 10);
}

TEST_CASE("a replica answers writes and strong reads with notPrimary naming the primary") {
  ClusterFixture f;
  CreateConversations(f, 7, 1);
  auto map = f.cluster->shard_maps()->Current();
  const ShardInfo& shard = map->ShardForKey(7);
  REQUIRE(shard.replicas.size() == 2);
  const std::string primary_address = map->FindNode(shard.primary)->address;
  RawNode replica(f.io, map->FindNode(shard.replicas[0])->address);

  auto send = replica.node.sendMessageRequest();
  wire::ToWire(Send(7, 1, "x", "to a replica"), send.initRequest());
  auto sent = send.send().wait(f.io.waitScope);
  REQUIRE(CodeOf(sent) == ErrorCode::kNotPrimary);
  CHECK(std::string(sent.getError().getPrimaryHint().cStr()) == primary_address);
  CHECK(!sent.getResult().hasToken());

  auto strong = replica.node.getConversationRequest();
  strong.setConvId(7);
  auto strong_reply = strong.send().wait(f.io.waitScope);
  CHECK(CodeOf(strong_reply) == ErrorCode::kNotPrimary);
  CHECK(std::string(strong_reply.getError().getPrimaryHint().cStr()) == primary_address);

  // A `replica` read is served there once the conversation has been shipped.
  CHECK(f.Eventually([&] {
    auto read = replica.node.getConversationRequest();
    read.setConvId(7);
    read.initOptions().setConsistency(s::Consistency::REPLICA);
    auto reply = read.send().wait(f.io.waitScope);
    return CodeOf(reply) == ErrorCode::kOk && reply.getConversation().getConvId() == 7;
  }));
  // Through the smart client and the router alike, writes still land on the primary.
  auto through_client = f.Wait(f.client->SendMessage(Send(7, 1, "y", "via client")));
  REQUIRE(through_client.ok());
  CHECK(through_client->seq == 1);
}

TEST_CASE("a session read waits for the caller's token on a replica, and never reads stale") {
  ClusterFixture f;
  CreateConversations(f, 55, 1);
  auto map = f.cluster->shard_maps()->Current();
  const ShardInfo& shard = map->ShardForKey(55);
  std::vector<std::shared_ptr<replication::ShardLog>> replica_logs;
  for (const std::string& id : shard.replicas) {
    auto hosted = HostedOn(f, f.cluster->IndexOf(id), shard.shard_id);
    REQUIRE(hosted);
    replica_logs.push_back(hosted->log);
  }
  RawNode replica(f.io, map->FindNode(shard.replicas[0])->address);
  // Both replicas caught up, then held where they are: the next write does not reach them.
  REQUIRE(EventuallyIdentical(f, shard.shard_id));
  for (auto& log : replica_logs) log->SetPauseAt(log->lsn());

  auto sent = f.Wait(f.client->SendMessage(Send(55, 1, "s1", "mine")));
  REQUIRE(sent.ok());
  const WriteToken token = sent->token;
  REQUIRE(token.shard_id == shard.shard_id);

  auto session_read = [&] {
    auto read = replica.node.getMessageRequest();
    read.setConvId(55);
    read.setSeq(sent->seq);
    auto options = read.initOptions();
    options.setConsistency(s::Consistency::SESSION);
    wire::ToWire(token, options.initToken());
    return read.send().wait(f.io.waitScope);
  };
  // The held replica does not answer with what it has (no such message): it waits its session
  // wait for the token, then says unavailable.
  auto held = session_read();
  CHECK(CodeOf(held) == ErrorCode::kUnavailable);
  // The smart client then reads from the primary: the caller sees its write.
  ReadOptions session{Consistency::kSession, token, 0};
  auto through_client = f.Wait(f.client->GetMessage(55, sent->seq, session));
  REQUIRE(through_client.ok());
  CHECK(through_client->body == "mine");

  for (auto& log : replica_logs) log->SetPauseAt(0);
  CHECK(f.Eventually([&] {
    auto reply = session_read();
    return CodeOf(reply) == ErrorCode::kOk &&
           std::string(wire::View(reply.getMessage().getBody())) == "mine";
  }));
}

TEST_CASE("many writers reading back through replicas with their tokens always see their writes") {
  ClusterFixture f;
  CreateConversations(f, 300, 8);
  const uint32_t seed = std::random_device{}();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  int checked = 0;
  for (int round = 0; round < 40; ++round) {
    // Eight writers at once, each on its own conversation, each then reading its write back
    // with its token (session) and a page of history.
    kj::Vector<kj::Promise<void>> writers;
    for (uint64_t w = 0; w < 8; ++w) {
      const uint64_t conv = 300 + w;
      const std::string body = "w" + std::to_string(w) + "r" + std::to_string(round) + "x" +
                               std::to_string(rng() % 1000);
      writers.add(
          f.client->SendMessage(Send(conv, 1, "c" + std::to_string(round), body))
              .then([&f, &checked, conv, body](Result<SendMessageResult> sent) {
                REQUIRE(sent.ok());
                ReadOptions session{Consistency::kSession, sent->token, 0};
                HistoryQuery newest;
                newest.conv_id = conv;
                newest.limit = 1;
                return f.client->GetMessage(conv, sent->seq, session)
                    .then([&f, &checked, conv, body, sent, session, newest](Result<Message> got) {
                      REQUIRE(got.ok());
                      CHECK(got->body == body);
                      ++checked;
                      return f.client->ReadHistory(newest, session);
                    })
                    .then([&checked, body, sent](Result<HistoryPage> page) {
                      REQUIRE(page.ok());
                      REQUIRE(!page->messages.empty());
                      CHECK(page->messages.front().seq >= sent->seq);
                      ++checked;
                    });
              }));
    }
    f.Wait(kj::joinPromises(writers.releaseAsArray()));
  }
  CHECK(checked == 40 * 8 * 2);
  // Replicas did serve session reads (the client prefers them).
  uint64_t served = 0;
  for (size_t i = 0; i < f.cluster->node_count(); ++i) {
    served += MetricValue(f.cluster->node(i)->RenderMetrics(),
                          "scrollback_replica_reads_total{consistency=\"session\"}");
  }
  CHECK(served > 40 * 8 / 2);
}

TEST_CASE("replica reads under a write load only return messages the primary acknowledged") {
  ClusterFixture f;
  CreateConversations(f, 500, 4);
  std::map<std::pair<uint64_t, uint64_t>, std::string> acked;  // (conv, seq) -> body
  std::vector<std::tuple<uint64_t, uint64_t, std::string>> replica_reads;
  ReadOptions replica_read{Consistency::kReplica, {}, 5000};
  for (int round = 0; round < 60; ++round) {
    kj::Vector<kj::Promise<void>> calls;
    for (uint64_t c = 0; c < 4; ++c) {
      const uint64_t conv = 500 + c;
      const std::string body = "r" + std::to_string(round) + "c" + std::to_string(c);
      calls.add(f.client->SendMessage(Send(conv, 2, body, body))
                    .then([&acked, conv, body](Result<SendMessageResult> sent) {
                      REQUIRE(sent.ok());
                      acked[{conv, sent->seq}] = body;
                    }));
      // Reads racing the writes: the newest page and a message by seq, from replicas.
      HistoryQuery newest;
      newest.conv_id = conv;
      newest.limit = 5;
      calls.add(f.client->ReadHistory(newest, replica_read)
                    .then([&replica_reads, conv](Result<HistoryPage> page) {
                      // A replica within the staleness bound may not have the conversation
                      // yet (bounded staleness, not an error); anything else is.
                      INFO(page.status().ToString());
                      if (!page.ok()) {
                        REQUIRE(page.status().code() == ErrorCode::kNotFound);
                        return;
                      }
                      for (const Message& m : page->messages) {
                        if (m.kind == MessageKind::kText) {
                          replica_reads.emplace_back(conv, m.seq, m.body);
                        }
                      }
                    }));
    }
    f.Wait(kj::joinPromises(calls.releaseAsArray()));
  }
  REQUIRE(replica_reads.size() > 100);
  for (const auto& [conv, seq, body] : replica_reads) {
    auto it = acked.find({conv, seq});
    INFO("conv " << conv << " seq " << seq);
    REQUIRE(it != acked.end());
    CHECK(it->second == body);
  }
}

TEST_CASE("a replica node stopped under load restarts, catches up, and every copy is identical") {
  ClusterFixture f;
  CreateConversations(f, 700, 24);
  auto map = f.cluster->shard_maps()->Current();
  const std::string stopped_id = f.cluster->node_id(2);
  f.cluster->StopNode(2);
  int acked = 0;
  for (int i = 0; i < 600; ++i) {
    const uint64_t conv = 700 + i % 24;
    if (map->ShardForKey(conv).primary == stopped_id) continue;  // No failover yet (next issue).
    auto sent = f.Wait(f.client->SendMessage(Send(conv, 1, "k" + std::to_string(i), "while down")));
    INFO(sent.status().ToString());
    REQUIRE(sent.ok());
    ++acked;
  }
  CHECK(acked > 300);
  REQUIRE(f.cluster->RestartNode(2).ok());
  REQUIRE(EventuallyIdentical(f));
  RequireIdentical(f);
}

TEST_CASE("a replica whose log was purged on the primary bootstraps again and ends identical") {
  ClusterFixture f;
  CreateConversations(f, 900, 1);
  auto map = f.cluster->shard_maps()->Current();
  const ShardInfo& shard = map->ShardForKey(900);
  const size_t primary = f.cluster->IndexOf(shard.primary);
  const size_t lagging = f.cluster->IndexOf(shard.replicas[0]);
  REQUIRE(EventuallyIdentical(f, shard.shard_id));
  uint64_t lagging_lsn = 0;  // Where the stopped copy will ask the primary's log to go on.
  {
    auto copy = HostedOn(f, lagging, shard.shard_id);
    REQUIRE(copy);
    lagging_lsn = copy->store->LatestSequence();
  }
  f.cluster->StopNode(lagging);
  for (int i = 0; i < 200; ++i) {
    REQUIRE(f.Wait(f.client->SendMessage(Send(900, 1, "p" + std::to_string(i), "purged"))).ok());
  }
  // Flush (the WAL holding those writes becomes obsolete and is archived), then remove the
  // archive: the log the stopped replica needs is gone.
  auto hosted = HostedOn(f, primary, shard.shard_id);
  REQUIRE(hosted);
  REQUIRE(hosted->store->Flush().ok());
  const fs::path archive = fs::path(f.cluster->node_data_dir(primary)) /
                           ("shard-" + std::to_string(shard.shard_id)) / "archive";
  // RocksDB archives obsolete WAL files in the background, one after another: remove what is
  // there until the primary's log no longer reaches back to the stopped copy's next LSN (else
  // a file archived after one sweep would let the copy continue without a gap, and the test
  // would prove nothing).
  REQUIRE(f.Eventually([&] {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(archive, ec)) fs::remove(entry.path(), ec);
    return hosted->store->ReadLog(lagging_lsn + 1, 1024).status().code() == ErrorCode::kLogGap;
  }));
  REQUIRE(f.cluster->RestartNode(lagging).ok());
  REQUIRE(EventuallyIdentical(f, shard.shard_id));
  RequireIdentical(f, shard.shard_id);
  // The copy was rebuilt from a checkpoint, never continued across the gap: moved aside on the
  // gap (rebootstraps), or bootstrapped afresh by the restarted node. A restarted node that
  // kept its copy and skipped the gap counts neither. (Both earlier CI failures of this check
  // were the test's premise failing: a WAL file archived after the removal swept the archive.)
  const std::string metrics = f.cluster->node(lagging)->RenderMetrics();
  CHECK(MetricValue(metrics, "scrollback_shard_rebootstraps_total") +
            MetricValue(metrics, "scrollback_replica_bootstraps_total") >=
        1);
  // The writes it missed are there on the rebuilt copy.
  RawNode copy(f.io, f.cluster->node(lagging)->address());
  auto read = copy.node.getConversationRequest();
  read.setConvId(900);
  read.initOptions().setConsistency(s::Consistency::REPLICA);
  auto reply = read.send().wait(f.io.waitScope);
  REQUIRE(CodeOf(reply) == ErrorCode::kOk);
  CHECK(reply.getConversation().getLastSeq() == 200);
}

// Shared by a node's tamper hook and the test: what to do to checkpoint chunks on the wire.
struct Tamper {
  std::atomic<bool> corrupt_always{false};
  std::mutex mu;
  std::set<std::string> seen;  // Files tampered with once already (first-attempt faults).
  std::atomic<int> tampered{0};
};

TEST_CASE("corrupted or truncated checkpoint files are fetched again, never opened") {
  auto tamper = std::make_shared<Tamper>();
  EmbeddedClusterOptions options;
  options.customize_node = [tamper](size_t index, NodeOptions& node) {
    if (index != 2) return;
    node.replication.tamper_chunk = [tamper](const std::string& file, uint64_t offset,
                                             std::string* data) {
      if (offset != 0 || data->empty()) return;
      bool first;
      {
        std::lock_guard lock(tamper->mu);
        first = tamper->seen.insert(file).second;
      }
      if (tamper->corrupt_always || first) {
        // Alternate the two faults: a flipped byte, or a chunk cut short.
        if (tamper->tampered.fetch_add(1) % 2 == 0) {
          (*data)[0] ^= 0x5a;
        } else {
          data->resize(data->size() / 2);
        }
      }
    };
  };
  ClusterFixture f(options);
  // Every copy on node-3 was bootstrapped through faults on the first attempt of every file.
  CHECK(tamper->tampered > 0);
  CHECK(MetricValue(f.cluster->node(2)->RenderMetrics(),
                    "scrollback_replica_checkpoint_file_mismatches_total") > 0);
  RequireIdentical(f);

  // Now every attempt is corrupted: a copy that must bootstrap never opens.
  CreateConversations(f, 1200, 1);
  auto map = f.cluster->shard_maps()->Current();
  uint64_t shard_id = 0;
  for (const ShardInfo& shard : map->shards()) {
    if (shard.primary != f.cluster->node_id(2)) shard_id = shard.shard_id;
  }
  REQUIRE(shard_id != 0);
  f.cluster->StopNode(2);
  const fs::path dir =
      fs::path(f.cluster->node_data_dir(2)) / ("shard-" + std::to_string(shard_id));
  fs::remove_all(dir);
  tamper->corrupt_always = true;
  Status restarted;
  std::thread restart([&] { restarted = f.cluster->RestartNode(2); });
  bool refetching = f.Eventually([&] {
    StorageNode* node = f.cluster->node(2);
    if (node == nullptr) return false;
    for (const ShardStatus& st : node->ShardStatuses()) {
      if (st.assignment.shard_id == shard_id && st.state != ShardState::kServing &&
          st.last_error.find("xxh64") != std::string::npos) {
        return true;
      }
    }
    return false;
  });
  CHECK(refetching);
  CHECK(!fs::exists(dir / "CURRENT"));  // Never opened.
  tamper->corrupt_always = false;
  restart.join();
  INFO(restarted.ToString());
  REQUIRE(restarted.ok());
  REQUIRE(EventuallyIdentical(f));
}

TEST_CASE("the replication protocol refuses a wrong shard, a wrong epoch and an LSN out of order") {
  ClusterFixture f;
  CreateConversations(f, 42, 1);
  auto map = f.cluster->shard_maps()->Current();
  const ShardInfo& shard = map->ShardForKey(42);
  RawNode primary(f.io, map->FindNode(shard.primary)->address);
  RawNode replica(f.io, map->FindNode(shard.replicas[0])->address);
  auto pull = [&](RawNode& node, uint64_t shard_id, uint64_t epoch, uint64_t from) {
    auto request = node.node.pullLogRequest();
    request.setShardId(shard_id);
    request.setEpoch(epoch);
    request.setFromLsn(from);
    request.setMaxBytes(1 << 20);
    request.setReplicaNodeId("test");
    return request.send().wait(f.io.waitScope);
  };
  auto ok = pull(primary, shard.shard_id, shard.epoch, 1);
  REQUIRE(CodeOf(ok) == ErrorCode::kOk);
  CHECK(ok.getBatches().size() > 0);
  CHECK(ok.getBatches()[0].getFirstLsn() <= 1);
  const uint64_t latest = ok.getLatestLsn();

  auto stale = pull(primary, shard.shard_id, shard.epoch + 1, 1);
  CHECK(CodeOf(stale) == ErrorCode::kStaleEpoch);
  CHECK(stale.getError().getEpoch() == shard.epoch);
  CHECK(stale.getBatches().size() == 0);

  CHECK(CodeOf(pull(primary, 999, shard.epoch, 1)) == ErrorCode::kNotOwner);
  auto at_replica = pull(replica, shard.shard_id, shard.epoch, 1);
  CHECK(CodeOf(at_replica) == ErrorCode::kNotPrimary);
  CHECK(std::string(at_replica.getError().getPrimaryHint().cStr()) ==
        map->FindNode(shard.primary)->address);
  // A copy claiming to be past the primary has diverged: refused, nothing sent.
  auto ahead = pull(primary, shard.shard_id, shard.epoch, latest + 10);
  CHECK(CodeOf(ahead) == ErrorCode::kFailedPrecondition);
  CHECK(ahead.getBatches().size() == 0);
  CHECK(CodeOf(pull(primary, shard.shard_id, shard.epoch, 0)) == ErrorCode::kInvalidArgument);

  auto begin = primary.node.beginCheckpointRequest();
  begin.setShardId(shard.shard_id);
  begin.setEpoch(shard.epoch + 5);
  CHECK(CodeOf(begin.send().wait(f.io.waitScope)) == ErrorCode::kStaleEpoch);
  auto read = primary.node.readCheckpointRequest();
  read.setCheckpointId(12345);
  read.setMaxBytes(100);
  CHECK(CodeOf(read.send().wait(f.io.waitScope)) == ErrorCode::kNotFound);
  // A checkpoint file index or offset out of range is refused by name.
  auto good = primary.node.beginCheckpointRequest();
  good.setShardId(shard.shard_id);
  good.setEpoch(shard.epoch);
  auto checkpoint = good.send().wait(f.io.waitScope);
  REQUIRE(CodeOf(checkpoint) == ErrorCode::kOk);
  auto bad_file = primary.node.readCheckpointRequest();
  bad_file.setCheckpointId(checkpoint.getCheckpointId());
  bad_file.setFileIndex(checkpoint.getFiles().size());
  bad_file.setMaxBytes(100);
  auto bad_file_reply = bad_file.send().wait(f.io.waitScope);
  CHECK(CodeOf(bad_file_reply) == ErrorCode::kInvalidArgument);
  CHECK(std::string(bad_file_reply.getError().getField().cStr()) == "file_index");
  auto end = primary.node.endCheckpointRequest();
  end.setCheckpointId(checkpoint.getCheckpointId());
  CHECK(CodeOf(end.send().wait(f.io.waitScope)) == ErrorCode::kOk);

  // Bounded whatever a caller sends: node ids, and checkpoints held at once.
  auto long_name = primary.node.pullLogRequest();
  long_name.setShardId(shard.shard_id);
  long_name.setEpoch(shard.epoch);
  long_name.setFromLsn(1);
  long_name.setReplicaNodeId(std::string(200, 'n'));
  auto long_reply = long_name.send().wait(f.io.waitScope);
  CHECK(CodeOf(long_reply) == ErrorCode::kInvalidArgument);
  CHECK(std::string(long_reply.getError().getField().cStr()) == "replica_node_id");
  std::vector<uint64_t> held;
  ErrorCode last = ErrorCode::kOk;
  for (size_t i = 0; i <= replication::CheckpointSource::kMaxOpen && last == ErrorCode::kOk; ++i) {
    auto begin_one = primary.node.beginCheckpointRequest();
    begin_one.setShardId(shard.shard_id);
    begin_one.setEpoch(shard.epoch);
    auto reply = begin_one.send().wait(f.io.waitScope);
    last = CodeOf(reply);
    if (last == ErrorCode::kOk) held.push_back(reply.getCheckpointId());
  }
  CHECK(held.size() == replication::CheckpointSource::kMaxOpen);
  CHECK(last == ErrorCode::kOverloaded);
  for (uint64_t id : held) {
    auto release = primary.node.endCheckpointRequest();
    release.setCheckpointId(id);
    CHECK(CodeOf(release.send().wait(f.io.waitScope)) == ErrorCode::kOk);
  }

  // The replicas kept following through all of it.
  REQUIRE(f.Wait(f.client->SendMessage(Send(42, 1, "after", "still shipping"))).ok());
  REQUIRE(EventuallyIdentical(f, shard.shard_id));
}

TEST_CASE("replication factor 1 still works: no replicas, verify compares the one copy") {
  EmbeddedClusterOptions options;
  options.replication_factor = 1;
  ClusterFixture f(options);
  CreateConversations(f, 10, 4);
  for (const ShardInfo& shard : f.cluster->shard_maps()->Current()->shards()) {
    CHECK(shard.replicas.empty());
  }
  // Replica and session reads fall back to the primary.
  auto sent = f.Wait(f.client->SendMessage(Send(10, 1, "a", "only copy")));
  REQUIRE(sent.ok());
  auto got = f.Wait(f.client->GetMessage(10, sent->seq, {Consistency::kReplica, {}, 0}));
  REQUIRE(got.ok());
  CHECK(got->body == "only copy");
  RequireIdentical(f);
}

}  // namespace
}  // namespace scrollback
