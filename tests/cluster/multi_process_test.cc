// The whole system as separate processes: etcd, three scrollbackd and a scrollback-router on
// free loopback ports. Every process is stopped by the fixtures, also when a check fails.
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "process_util.h"
#include "scrollback/admin/verify.h"
#include "scrollback/cluster/etcd_metadata_store.h"
#include "scrollback/cluster/failover_controller.h"
#include "scrollback/cluster/shard_map_store.h"
#include "scrollback/schema/chatstore.capnp.h"
#include "scrollback/schema/wire.h"

namespace scrollback {
namespace {

using testing::ChildProcess;
using testing::EtcdFixture;
using testing::FreePort;

struct Node {
  std::string id;
  int port = 0;
  int http_port = 0;
  std::unique_ptr<ChildProcess> process;
};

class MultiProcessCluster {
 public:
  MultiProcessCluster() {
    EtcdOptions options;
    options.endpoint = etcd.endpoint();
    options.wait_for_etcd = std::chrono::seconds(30);
    options.watch_retry_interval = std::chrono::milliseconds(50);
    auto store = NewEtcdMetadataStore(options);
    REQUIRE(store.ok());
    metadata = *store;
    for (int i = 1; i <= 3; ++i) {
      nodes.push_back({"node-" + std::to_string(i), FreePort(), FreePort(), nullptr});
    }
    for (size_t i = 0; i < nodes.size(); ++i) StartNode(i);
    router_port = FreePort();
    router = std::make_unique<ChildProcess>(
        std::vector<std::string>{SCROLLBACK_ROUTER, "--listen", Address(router_port), "--etcd",
                                 etcd.endpoint()},
        etcd.dir.Sub("router.log"));
    SB_REQUIRE_LISTENING(*router, router_port, std::chrono::seconds(30));
    // Every node has published its address (map version 1 + 3 address updates).
    for (int i = 0; i < 300; ++i) {
      auto map = ReadShardMap(*metadata);
      if (map.ok() && map->version() >= 4) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    auto source = MetadataShardMapSource::Create(metadata);
    REQUIRE(source.ok());
    maps = *source;
    REQUIRE(maps->Current()->version() >= 4);
    for (size_t i = 0; i < nodes.size(); ++i) WaitServing(i);
    // The failover controller has recorded every node's primary lease: writes are allowed.
    bool leased = false;
    for (int i = 0; i < 600 && !leased; ++i) {
      auto map = ReadShardMap(*metadata);
      leased = map.ok();
      for (const NodeInfo& node : map.ok() ? map->nodes() : std::vector<NodeInfo>{}) {
        leased = leased && node.lease_id != 0;
      }
      if (!leased) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    REQUIRE(leased);
    for (size_t i = 0; i < nodes.size(); ++i) WaitServing(i);
  }

  // Waits until node `i` serves the current shard map (it has opened its shards).
  void WaitServing(size_t i) {
    const uint64_t version = ReadShardMap(*metadata)->version();
    for (int attempt = 0; attempt < 300; ++attempt) {
      try {
        auto addr =
            io.provider->getNetwork().parseAddress(Address(nodes[i].port)).wait(io.waitScope);
        auto stream = addr->connect().wait(io.waitScope);
        capnp::TwoPartyClient rpc(*stream);
        auto node = rpc.bootstrap().castAs<schema::Node>();
        auto health = node.healthRequest().send().wait(io.waitScope);
        if (health.getMapVersion() >= version && health.getServing()) return;
      } catch (const kj::Exception&) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    FAIL("node " << nodes[i].id << " never served shard map version " << version
                 << ". The end of its log:\n"
                 << nodes[i].process->LogTail());
  }

  static std::string Address(int port) { return "127.0.0.1:" + std::to_string(port); }

  void StartNode(size_t i, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv{SCROLLBACKD,
                                  "--node-id",
                                  nodes[i].id,
                                  "--data-dir",
                                  etcd.dir.Sub(nodes[i].id),
                                  "--listen",
                                  Address(nodes[i].port),
                                  "--etcd",
                                  etcd.endpoint(),
                                  "--event-loops",
                                  "1",
                                  "--http",
                                  Address(nodes[i].http_port),
                                  "--bootstrap-shards",
                                  "8",
                                  "--bootstrap-nodes",
                                  "node-1,node-2,node-3"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    nodes[i].process = std::make_unique<ChildProcess>(argv, etcd.dir.Sub(nodes[i].id + ".log"));
    SB_REQUIRE_LISTENING(*nodes[i].process, nodes[i].port, std::chrono::seconds(30));
  }

  kj::AsyncIoContext io = kj::setupAsyncIo();  // The test thread's event loop.
  EtcdFixture etcd;                            // Destroyed after every process that talks to it.
  std::shared_ptr<MetadataStore> metadata;
  std::vector<Node> nodes;
  int router_port = 0;
  std::unique_ptr<ChildProcess> router;
  std::shared_ptr<MetadataShardMapSource> maps;
};

// Polls `verify` over the map `current()` returns (every 100 ms, up to 10 s) until every copy of
// every shard is identical; returns what still differed ("" when all are identical).
template <typename CurrentMap>
std::string EventuallyIdenticalProblems(kj::AsyncIoContext& io, CurrentMap&& current) {
  std::string problems = "never verified";
  for (int attempt = 0; attempt < 100 && !problems.empty(); ++attempt) {
    if (attempt > 0) io.provider->getTimer().afterDelay(100 * kj::MILLISECONDS).wait(io.waitScope);
    problems.clear();
    for (const auto& v : admin::VerifyShards(io, *current())) {
      if (!v.identical) problems += "shard " + std::to_string(v.shard_id) + ": " + v.problem + "\n";
    }
  }
  return problems;
}

// A plain HTTP/1.0 GET on loopback; returns the whole response (status line included).
std::string HttpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  std::string request = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  if (write(fd, request.data(), request.size()) < 0) {
    close(fd);
    return "";
  }
  std::string response;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) response.append(buf, n);
  close(fd);
  return response;
}

TEST_CASE(
    "processes: a SIGKILLed primary fails over under semi-sync sends and nothing acknowledged is "
    "lost") {
  MultiProcessCluster cluster;
  auto& io = cluster.io;
  ClientOptions client_options;
  client_options.call_timeout = std::chrono::seconds(10);
  auto smart = ChatClient::Create(*io.provider, cluster.maps, client_options);

  // A plain Cap'n Proto ChatStore client of the router (what a non-C++ service would do).
  auto address = io.provider->getNetwork()
                     .parseAddress(MultiProcessCluster::Address(cluster.router_port))
                     .wait(io.waitScope);
  auto stream = address->connect().wait(io.waitScope);
  capnp::TwoPartyClient rpc(*stream);
  auto router = rpc.bootstrap().castAs<schema::ChatStore>();

  constexpr uint64_t kConvs = 40;
  std::map<uint64_t, uint64_t> acked;  // conv -> last acknowledged seq.
  for (uint64_t conv = 1; conv <= kConvs; ++conv) {
    auto create = router.createConversationRequest();
    create.setConvId(conv);
    create.setCreatorId(1);
    create.initMemberIds(1).set(0, 2);
    create.setTitle("mp");
    auto created = create.send().wait(io.waitScope);
    INFO((created.hasError() ? std::string(created.getError().getMessage().cStr()) : ""));
    REQUIRE_FALSE(created.hasError());
    auto send = router.sendMessageRequest();
    auto request = send.initRequest();
    request.setConvId(conv);
    request.setSenderId(1);
    request.setClientMsgId(wire::AsData("r1"));
    request.setBody(wire::AsData("via router"));
    auto sent = send.send().wait(io.waitScope);
    REQUIRE_FALSE(sent.getResult().hasError());
    CHECK(sent.getResult().getSeq() == 1);
    auto smart_sent = smart->SendMessage({conv, 2, "s1", "via smart client"}).wait(io.waitScope);
    REQUIRE(smart_sent.ok());
    acked[conv] = smart_sent->seq;
  }

  // SIGKILL the node holding the most primaries. Its lease expires, the failover controller
  // (running in the surviving nodes) promotes their replicas, and semi-sync sends to every
  // conversation resume (decision 0010): the smart client follows the new map.
  auto map = cluster.maps->Current();
  std::map<std::string, int> primaries;
  for (const ShardInfo& shard : map->shards()) ++primaries[shard.primary];
  size_t victim = 0;
  for (size_t i = 0; i < cluster.nodes.size(); ++i) {
    if (primaries[cluster.nodes[i].id] > primaries[cluster.nodes[victim].id]) victim = i;
  }
  const std::string victim_id = cluster.nodes[victim].id;
  cluster.nodes[victim].process->Stop(SIGKILL, std::chrono::milliseconds(0));
  const auto killed_at = std::chrono::steady_clock::now();
  int64_t slowest_resume_ms = 0;
  for (uint64_t conv = 1; conv <= kConvs; ++conv) {
    Result<SendMessageResult> sent = Status::Unavailable("not sent");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      sent = smart->SendMessage({conv, 1, "s2", "after the kill"}, {AckMode::kSemiSync, 0})
                 .wait(io.waitScope);
      if (sent.ok()) break;
      // While the shard fails over: typed, retryable answers only.
      INFO("conv " << conv << ": " << sent.status().ToString());
      CHECK((sent.status().code() == ErrorCode::kUnavailable ||
             sent.status().code() == ErrorCode::kNotReplicated));
      io.provider->getTimer().afterDelay(20 * kj::MILLISECONDS).wait(io.waitScope);
    }
    INFO("conv " << conv << ": " << sent.status().ToString());
    REQUIRE(sent.ok());
    acked[conv] = sent->seq;
    if (map->ShardForKey(conv).primary == victim_id) {
      slowest_resume_ms = std::max<int64_t>(slowest_resume_ms,
                                            std::chrono::duration_cast<std::chrono::milliseconds>(
                                                std::chrono::steady_clock::now() - killed_at)
                                                .count());
    }
  }
  // Measured, not asserted (scrollback-bench --workload failover reports the distribution).
  WARN("sends to " << victim_id << "'s " << primaries[victim_id] << " shards resumed within "
                   << slowest_resume_ms << " ms of the SIGKILL");
  const auto moved = ReadShardMap(*cluster.metadata);
  REQUIRE(moved.ok());
  for (const ShardInfo& shard : moved->shards()) CHECK(shard.primary != victim_id);
  // The router serves every conversation again, through the new map.
  for (uint64_t conv = 1; conv <= kConvs; ++conv) {
    auto get = router.getConversationRequest();
    get.setConvId(conv);
    auto reply = get.send().wait(io.waitScope);
    INFO("conv " << conv << (reply.hasError() ? reply.getError().getMessage().cStr() : ""));
    CHECK_FALSE(reply.hasError());
  }

  // Restart it on its data: every acknowledged message is there.
  cluster.StartNode(victim);
  cluster.WaitServing(victim);
  for (auto [conv, last] : acked) {
    bool back = false;
    for (int i = 0; i < 200 && !back; ++i) {
      back = smart->GetMessage(conv, last).wait(io.waitScope).ok();
      if (!back) io.provider->getTimer().afterDelay(25 * kj::MILLISECONDS).wait(io.waitScope);
    }
    INFO("conv " << conv << " seq " << last);
    REQUIRE(back);
    auto page =
        smart->ReadHistory({conv, Direction::kOldestFirst, 0, std::nullopt, 10}).wait(io.waitScope);
    REQUIRE(page.ok());
    REQUIRE(page->messages.size() == last);
    CHECK(page->messages[0].body == "via router");
  }
  // Operational endpoints of a live node.
  const size_t live = (victim + 1) % cluster.nodes.size();
  std::string health = HttpGet(cluster.nodes[live].http_port, "/health");
  CHECK(health.find("200 OK") != std::string::npos);
  std::string metrics = HttpGet(cluster.nodes[live].http_port, "/metrics");
  CHECK(metrics.find("scrollback_requests_total{method=\"sendMessage\"}") != std::string::npos);
  CHECK(metrics.find("scrollback_shard_live_bytes{shard=") != std::string::npos);
  CHECK(HttpGet(cluster.nodes[live].http_port, "/nope").find("404") != std::string::npos);

  // A graceful stop exits 0.
  int status = cluster.nodes[live].process->Stop(SIGTERM, std::chrono::seconds(10));
  INFO(cluster.nodes[live].process->LogTail());
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("processes: with replication factor 3, a SIGKILLed node catches up and verify passes") {
  MultiProcessCluster cluster;
  auto& io = cluster.io;
  auto map = cluster.maps->Current();
  for (const ShardInfo& shard : map->shards()) REQUIRE(shard.replicas.size() == 2);

  // Load through the router.
  auto address = io.provider->getNetwork()
                     .parseAddress(MultiProcessCluster::Address(cluster.router_port))
                     .wait(io.waitScope);
  auto stream = address->connect().wait(io.waitScope);
  capnp::TwoPartyClient rpc(*stream);
  auto router = rpc.bootstrap().castAs<schema::ChatStore>();
  constexpr uint64_t kConvs = 24;
  const std::string victim = "node-3";
  int next = 0, errors = 0, sends = 0;
  // Sends to every conversation whose primary is alive at the start (node-3's move to their
  // replicas once its lease expires); counts every write that failed.
  auto load = [&](int rounds) {
    for (int r = 0; r < rounds; ++r) {
      for (uint64_t conv = 1; conv <= kConvs; ++conv) {
        if (map->ShardForKey(conv).primary == victim) continue;
        auto send = router.sendMessageRequest();
        auto request = send.initRequest();
        request.setConvId(conv);
        request.setSenderId(1);
        const std::string id = "m" + std::to_string(next++);
        request.setClientMsgId(wire::AsData(id));
        request.setBody(wire::AsData("replicated " + id));
        auto sent = send.send().wait(io.waitScope);
        ++sends;
        if (sent.hasError()) {
          ++errors;
          UNSCOPED_INFO(sent.getError().getMessage().cStr());
        }
      }
    }
  };
  for (uint64_t conv = 1; conv <= kConvs; ++conv) {
    auto create = router.createConversationRequest();
    create.setConvId(conv);
    create.setCreatorId(1);
    create.setTitle("rf3");
    REQUIRE_FALSE(create.send().wait(io.waitScope).hasError());
  }
  load(10);
  cluster.nodes[2].process->Stop(SIGKILL, std::chrono::milliseconds(0));  // Mid-stream.
  load(10);
  cluster.StartNode(2);
  cluster.WaitServing(2);
  load(5);
  CHECK(errors == 0);
  CHECK(sends > 300);

  // Every copy, the restarted node's included, is identical at one LSN.
  const std::string problems =
      EventuallyIdenticalProblems(io, [&] { return cluster.maps->Current(); });
  INFO(problems);
  CHECK(problems.empty());
  // The restarted node reports its replicas current.
  std::string metrics = HttpGet(cluster.nodes[2].http_port, "/metrics");
  CHECK(metrics.find("scrollback_replica_lag_lsn{shard=") != std::string::npos);

  // scrollbackctl drain moves every primary off a node; failover moves one back.
  const std::string drained = cluster.nodes[0].id;
  {
    ChildProcess ctl(
        {SCROLLBACKCTL, "drain", "--etcd", cluster.etcd.endpoint(), "--node-id", drained, "--json"},
        cluster.etcd.dir.Sub("drain.log"));
    int status = ctl.Stop(0, std::chrono::seconds(120));
    INFO(ctl.LogTail());
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
    CHECK(ctl.LogTail().find("pause_ms") != std::string::npos);
  }
  auto drained_map = ReadShardMap(*cluster.metadata);
  REQUIRE(drained_map.ok());
  for (const ShardInfo& shard : drained_map->shards()) CHECK(shard.primary != drained);
  const ShardInfo& first = drained_map->shards().front();
  {
    ChildProcess ctl({SCROLLBACKCTL, "failover", "--etcd", cluster.etcd.endpoint(), "--shard",
                      std::to_string(first.shard_id), "--to", drained},
                     cluster.etcd.dir.Sub("failover.log"));
    int status = ctl.Stop(0, std::chrono::seconds(60));
    INFO(ctl.LogTail());
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
  }
  auto back = ReadShardMap(*cluster.metadata);
  REQUIRE(back.ok());
  CHECK(back->FindShard(first.shard_id)->primary == drained);
  load(3);  // Writes go on through the router, to the new primaries.
  CHECK(errors == 0);
  // An impossible request is a clear error, exit 1.
  {
    ChildProcess ctl(
        {SCROLLBACKCTL, "failover", "--etcd", cluster.etcd.endpoint(), "--shard", "9999"},
        cluster.etcd.dir.Sub("failover-bad.log"));
    int status = ctl.Stop(0, std::chrono::seconds(60));
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 1);
    CHECK(ctl.LogTail().find("no shard 9999") != std::string::npos);
  }
}

// Sends through the router to conversations 1..convs, one round at a time, each send retried
// with its client_msg_id until acknowledged (a split's or switchover's pause, or a failover,
// can outlast the router's own retries; a retry of a send that did commit answers with its
// first seq). Every acknowledged seq must be the next of its conversation.
struct RetriedSends {
  RetriedSends(kj::AsyncIoContext& io, schema::ChatStore::Client& router, uint64_t convs)
      : io(io), router(router), convs(convs) {}

  void Rounds(int rounds) {
    for (int r = 0; r < rounds; ++r) {
      for (uint64_t conv = 1; conv <= convs; ++conv) {
        const std::string id = "m" + std::to_string(acked[conv]);
        bool done = false;
        for (int attempt = 0; attempt < 600 && !done; ++attempt) {
          auto send = router.sendMessageRequest();
          auto request = send.initRequest();
          request.setConvId(conv);
          request.setSenderId(1);
          request.setClientMsgId(wire::AsData(id));
          request.setBody(wire::AsData("body " + id));
          auto sent = send.send().wait(io.waitScope);
          done = !sent.hasError() && !sent.getResult().hasError();
          if (done) {
            CHECK(sent.getResult().getSeq() == acked[conv] + 1);
            ++acked[conv];
          } else {
            ++failed;
            failures +=
                std::string((sent.hasError() ? sent.getError() : sent.getResult().getError())
                                .getMessage()
                                .cStr()) +
                "\n";
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
          }
        }
        INFO(failures);
        REQUIRE(done);
      }
    }
  }

  kj::AsyncIoContext& io;
  schema::ChatStore::Client& router;
  const uint64_t convs;
  std::map<uint64_t, uint64_t> acked;  // Conversation -> sends acknowledged (seqs 1..n).
  uint64_t failed = 0;                 // Attempts that failed, and what they were told.
  std::string failures;
};

// Runs scrollbackctl with `args` to its end (up to `limit`); returns its exit code and output.
std::pair<int, std::string> RunCtl(MultiProcessCluster& cluster, std::vector<std::string> args,
                                   const std::string& log,
                                   std::chrono::seconds limit = std::chrono::seconds(120)) {
  args.insert(args.begin(), SCROLLBACKCTL);
  ChildProcess ctl(args, cluster.etcd.dir.Sub(log));
  int status = ctl.Stop(0, limit);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ctl.LogTail()};
}

// A ChatStore connection to the cluster's router, conversations 1..convs created through it,
// and a RetriedSends load over them.
struct RouterLoad {
  RouterLoad(MultiProcessCluster& cluster, uint64_t convs, const std::string& title)
      : stream(cluster.io.provider->getNetwork()
                   .parseAddress(MultiProcessCluster::Address(cluster.router_port))
                   .wait(cluster.io.waitScope)
                   ->connect()
                   .wait(cluster.io.waitScope)),
        rpc(*stream),
        router(rpc.bootstrap().castAs<schema::ChatStore>()),
        sends(cluster.io, router, convs) {
    for (uint64_t conv = 1; conv <= convs; ++conv) {
      auto create = router.createConversationRequest();
      create.setConvId(conv);
      create.setCreatorId(1);
      create.setTitle(title);
      REQUIRE_FALSE(create.send().wait(cluster.io.waitScope).hasError());
    }
  }

  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyClient rpc;
  schema::ChatStore::Client router;
  RetriedSends sends;
};

// Registers node-4 with `scrollbackctl add-node`, starts it with its bootstraps throttled to
// 10 KB/s (so that a copy moving to it stays in progress) and waits until the controller has
// recorded its lease: the controller refuses a move to a node without one.
void AddCrawlingNode4(MultiProcessCluster& cluster) {
  cluster.nodes.push_back({"node-4", FreePort(), FreePort(), nullptr});
  auto [add_code, add_out] =
      RunCtl(cluster, {"add-node", "--etcd", cluster.etcd.endpoint(), "--node-id", "node-4"},
             "add-node.log");
  INFO(add_out);
  REQUIRE(add_code == 0);
  cluster.StartNode(3, {"--bootstrap-mb-per-s", "0.01"});
  auto leased = [&] {
    auto map = ReadShardMap(*cluster.metadata);
    const NodeInfo* node = map.ok() ? map->FindNode("node-4") : nullptr;
    return node != nullptr && node->lease_id != 0;
  };
  for (int i = 0; i < 600 && !leased(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  INFO(testing::FileTail(cluster.etcd.dir.Sub("node-4.log")));
  REQUIRE(leased());
}

// Whether the shard map shows shard `shard_id` moving a copy to `node`.
bool Moving(MultiProcessCluster& cluster, uint64_t shard_id, const std::string& node) {
  auto map = ReadShardMap(*cluster.metadata);
  return map.ok() && map->FindShard(shard_id) != nullptr &&
         map->FindShard(shard_id)->move_to == node;
}

// Waits (up to 10 s) until Moving; if it never is, prints what the mover (`scrollbackctl move`,
// logging to move.log) said.
bool WaitMoving(MultiProcessCluster& cluster, uint64_t shard_id, const std::string& node) {
  for (int i = 0; i < 400; ++i) {
    if (Moving(cluster, shard_id, node)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  UNSCOPED_INFO("scrollbackctl move: " << testing::FileTail(cluster.etcd.dir.Sub("move.log")));
  return false;
}

// Every send `load` had acknowledged is in its conversation's history, once; and once every
// node serves, every copy of every shard is identical.
void CheckSendsKeptAndCopiesIdentical(MultiProcessCluster& cluster, RouterLoad& load) {
  auto& io = cluster.io;
  for (uint64_t conv = 1; conv <= load.sends.convs; ++conv) {
    auto read = load.router.readHistoryRequest();
    auto query = read.initRequest();
    query.setConvId(conv);
    query.setLimit(200);
    auto page = read.send().wait(io.waitScope);
    REQUIRE_FALSE(page.hasError());
    CHECK(page.getPage().getMessages().size() == load.sends.acked[conv]);
  }
  for (size_t i = 0; i < cluster.nodes.size(); ++i) cluster.WaitServing(i);
  auto fresh = MetadataShardMapSource::Create(cluster.metadata);
  REQUIRE(fresh.ok());
  const std::string problems =
      EventuallyIdenticalProblems(io, [&] { return (*fresh)->RefreshNow(); });
  INFO(problems);
  CHECK(problems.empty());
}

TEST_CASE("processes: scrollbackctl splits and moves under load, through a SIGKILLed target") {
  MultiProcessCluster cluster;
  RouterLoad traffic(cluster, 16, "reshard");
  RetriedSends& sends = traffic.sends;
  auto load = [&](int rounds) { sends.Rounds(rounds); };
  load(5);

  // A split, printed as JSON.
  const ShardInfo parent = ReadShardMap(*cluster.metadata)->ShardForKey(1);
  auto [split_code, split_out] = RunCtl(cluster,
                                        {"split", "--etcd", cluster.etcd.endpoint(), "--shard",
                                         std::to_string(parent.shard_id), "--json"},
                                        "split.log");
  INFO(split_out);
  REQUIRE(split_code == 0);
  CHECK(split_out.find("pause_ms") != std::string::npos);
  CHECK(ReadShardMap(*cluster.metadata)->FindShard(parent.shard_id) == nullptr);
  load(3);
  // The two halves merge back, and split again.
  {
    auto map = ReadShardMap(*cluster.metadata);
    REQUIRE(map.ok());
    const ShardInfo& left = map->ShardForToken(parent.range.first);
    const ShardInfo& right = map->ShardForToken(parent.range.last);
    auto [merge_code, merge_out] =
        RunCtl(cluster,
               {"merge", "--etcd", cluster.etcd.endpoint(), "--shard",
                std::to_string(left.shard_id), "--with", std::to_string(right.shard_id), "--json"},
               "merge.log");
    INFO(merge_out);
    REQUIRE(merge_code == 0);
    CHECK(merge_out.find("\"merged\"") != std::string::npos);
    const ShardInfo whole = ReadShardMap(*cluster.metadata)->ShardForToken(parent.range.first);
    CHECK(whole.range == parent.range);
    load(3);
    auto [again_code, again_out] = RunCtl(
        cluster,
        {"split", "--etcd", cluster.etcd.endpoint(), "--shard", std::to_string(whole.shard_id)},
        "split-again.log");
    INFO(again_out);
    REQUIRE(again_code == 0);
    load(3);
  }

  // A fourth node joins; a copy moves to it while its first bootstrap crawls, and it is
  // SIGKILLed mid-copy: restarted, it copies again and the move completes.
  AddCrawlingNode4(cluster);
  const ShardInfo moving = ReadShardMap(*cluster.metadata)->ShardForKey(2);
  ChildProcess mover({SCROLLBACKCTL, "move", "--etcd", cluster.etcd.endpoint(), "--shard",
                      std::to_string(moving.shard_id), "--from", moving.primary, "--to", "node-4"},
                     cluster.etcd.dir.Sub("move.log"));
  REQUIRE(WaitMoving(cluster, moving.shard_id, "node-4"));
  cluster.nodes[3].process->Stop(SIGKILL, std::chrono::milliseconds(0));
  CHECK(ReadShardMap(*cluster.metadata)->FindShard(moving.shard_id)->move_to == "node-4");
  const uint64_t failed_before_window = sends.failed;
  load(3);  // The old placement serves meanwhile: nothing pauses it.
  INFO(sends.failures);
  CHECK(sends.failed == failed_before_window);
  cluster.StartNode(3);
  int status = mover.Stop(0, std::chrono::seconds(120));
  INFO(mover.LogTail());
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  const ShardInfo moved = *ReadShardMap(*cluster.metadata)->FindShard(moving.shard_id);
  CHECK(moved.primary == "node-4");
  CHECK(std::find(moved.replicas.begin(), moved.replicas.end(), moving.primary) ==
        moved.replicas.end());
  load(3);
  INFO(sends.failed << " send attempts failed and were retried:\n" << sends.failures);

  // Impossible requests: clear errors, exit 1.
  auto [bad_code, bad_out] =
      RunCtl(cluster,
             {"move", "--etcd", cluster.etcd.endpoint(), "--shard", std::to_string(moved.shard_id),
              "--from", "node-4", "--to", moved.replicas[0]},
             "move-bad.log");
  CHECK(bad_code == 1);
  CHECK(bad_out.find("already holds a copy") != std::string::npos);

  // Every acknowledged send is there, and every copy of every shard is identical.
  CheckSendsKeptAndCopiesIdentical(cluster, traffic);
}

}  // namespace
}  // namespace scrollback

namespace scrollback {
namespace {

TEST_CASE(
    "processes: a move goes on through SIGKILLs of scrollbackctl, the source and the controller's "
    "leader") {
  MultiProcessCluster cluster;
  RouterLoad traffic(cluster, 12, "move");
  RetriedSends& sends = traffic.sends;
  auto load = [&](int rounds) { sends.Rounds(rounds); };
  load(5);

  AddCrawlingNode4(cluster);
  const ShardInfo moving = ReadShardMap(*cluster.metadata)->ShardForKey(2);
  const std::string source = moving.primary;
  auto index_of = [&](const std::string& id) {
    for (size_t i = 0; i < cluster.nodes.size(); ++i) {
      if (cluster.nodes[i].id == id) return i;
    }
    FAIL("no node " << id);
    return size_t{0};
  };
  auto in_progress = [&] { return Moving(cluster, moving.shard_id, "node-4"); };
  ChildProcess mover({SCROLLBACKCTL, "move", "--etcd", cluster.etcd.endpoint(), "--shard",
                      std::to_string(moving.shard_id), "--from", source, "--to", "node-4"},
                     cluster.etcd.dir.Sub("move.log"));
  REQUIRE(WaitMoving(cluster, moving.shard_id, "node-4"));

  // The mover dies: the move lives in the map, not in the command.
  mover.Stop(SIGKILL, std::chrono::milliseconds(0));
  load(2);
  REQUIRE(in_progress());

  // The source (the moved copy's node, primary of the shard) dies mid-copy: a replica takes
  // over, and the move goes on from the new primary.
  cluster.nodes[index_of(source)].process->Stop(SIGKILL, std::chrono::milliseconds(0));
  load(3);
  cluster.StartNode(index_of(source));
  load(2);

  // The controller's leader dies (whichever node leads now; node-4 never does here).
  auto leader = cluster.metadata->Get(kControllerKey);
  REQUIRE(leader.ok());
  REQUIRE(leader->has_value());
  const std::string leading = (*leader)->value;
  INFO("source " << source << ", leader " << leading);
  REQUIRE(in_progress());
  if (leading != "node-4") {
    cluster.nodes[index_of(leading)].process->Stop(SIGKILL, std::chrono::milliseconds(0));
    load(3);
    cluster.StartNode(index_of(leading));
  }

  // Unthrottled, the target finishes its copy (if it has not yet) and the move completes.
  cluster.nodes[3].process->Stop(SIGTERM, std::chrono::seconds(10));
  cluster.StartNode(3);
  bool finished = false;
  for (int i = 0; i < 1200 && !finished; ++i) {
    auto map = ReadShardMap(*cluster.metadata);
    const ShardInfo* now = map.ok() ? map->FindShard(moving.shard_id) : nullptr;
    finished = now != nullptr && now->move_to.empty() &&
               (now->primary == "node-4" ||
                std::count(now->replicas.begin(), now->replicas.end(), "node-4") == 1) &&
               now->primary != source &&
               std::count(now->replicas.begin(), now->replicas.end(), source) == 0;
    if (!finished) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  REQUIRE(finished);
  load(3);
  INFO(sends.failed << " send attempts failed and were retried");

  // scrollbackctl status --json: every copy of the moved shard, node-4's among them, with its
  // role and load.
  cluster.WaitServing(3);
  auto [status_code, status_out] = RunCtl(
      cluster, {"status", "--node", MultiProcessCluster::Address(cluster.nodes[3].port), "--json"},
      "status.log");
  INFO(status_out);
  REQUIRE(status_code == 0);
  std::ifstream status_file(cluster.etcd.dir.Sub("status.log"));
  const std::string status_text((std::istreambuf_iterator<char>(status_file)),
                                std::istreambuf_iterator<char>());
  const auto status = nlohmann::json::parse(status_text, nullptr, /*allow_exceptions=*/false);
  REQUIRE(status.is_object());
  bool listed = false;
  for (const auto& shard : status["shards"]) {
    if (shard["shard"] != moving.shard_id) continue;
    for (const auto& copy : shard["copies"]) {
      CHECK(copy.contains("bytes_per_s"));
      CHECK(copy.contains("write_ops_per_s"));
      if (copy["node"] == "node-4") listed = copy["state"] == "serving";
    }
  }
  CHECK(listed);

  // Every acknowledged send is there once, and every copy of every shard is identical.
  CheckSendsKeptAndCopiesIdentical(cluster, traffic);
}

}  // namespace
}  // namespace scrollback
