#include <arpa/inet.h>
#include <kj/vector.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <set>

#include "cluster_test_util.h"

namespace scrollback {
namespace {

using testing::ClusterFixture;
using testing::Inbox;
using testing::InboxSeq;
using testing::SharedDirectoryOptions;

HistoryQuery Newest(uint64_t conv, uint32_t limit = 50) {
  HistoryQuery q;
  q.conv_id = conv;
  q.limit = limit;
  return q;
}

TEST_CASE("every ChatStore call works over real RPC") {
  ClusterFixture f;
  auto& c = *f.client;
  auto conv = f.Wait(c.CreateConversation({1001, 1, {2, 3}, "rpc"}));
  INFO(conv.status().ToString());
  REQUIRE(conv.ok());
  CHECK(conv->value.member_count == 3);
  // Every write answers with where it landed.
  const ShardInfo& shard = f.cluster->shard_maps()->Current()->ShardForKey(1001);
  CHECK(conv->token.shard_id == shard.shard_id);
  CHECK(conv->token.epoch == shard.epoch);
  CHECK(conv->token.lsn > 0);
  CHECK(f.Wait(c.CreateConversation({1001, 1, {}, "again"})).status().code() ==
        ErrorCode::kAlreadyExists);

  auto sent = f.Wait(c.SendMessage({1001, 1, "m1", "hello over rpc"}));
  REQUIRE(sent.ok());
  CHECK(sent->seq == 1);
  CHECK(sent->token.shard_id == shard.shard_id);
  CHECK(sent->token.lsn > conv->token.lsn);
  auto retry = f.Wait(c.SendMessage({1001, 1, "m1", "hello over rpc"}));
  CHECK(retry->duplicate);
  CHECK(retry->seq == 1);

  auto batch = f.Wait(c.SendBatch(
      {{1001, 2, "b1", "one"}, {1001, 3, "b2", "two"}, {1001, 9, "b3", "not a member"}}));
  REQUIRE(batch.size() == 3);
  CHECK(batch[0]->seq == 2);
  CHECK(batch[1]->seq == 3);
  CHECK(batch[2].status().code() == ErrorCode::kPermissionDenied);

  CHECK(f.Wait(c.GetMessage(1001, 2))->body == "one");
  CHECK(f.Wait(c.GetConversation(1001))->last_seq == 3);
  auto added = f.Wait(c.AddMembers(1001, 1, {4}));
  REQUIRE(added.ok());
  CHECK(added->value == 4);
  CHECK(added->token.lsn > sent->token.lsn);
  CHECK(*f.Wait(c.ListMembers(1001, 0, 10)) == std::vector<uint64_t>{1, 2, 3, 4});
  auto removed = f.Wait(c.RemoveMembers(1001, 4, {4}));
  REQUIRE(removed.ok());
  CHECK(removed->value == 5);
  CHECK(removed->token.lsn > added->token.lsn);

  auto edited = f.Wait(c.EditMessage(1001, 1, 1, "hello, edited"));
  REQUIRE(edited.ok());
  CHECK(edited->value.edited);
  CHECK(edited->token.lsn > removed->token.lsn);
  CHECK(f.Wait(c.EditMessage(1001, 1, 2, "not mine")).status().code() ==
        ErrorCode::kPermissionDenied);
  auto deleted = f.Wait(c.DeleteMessage(1001, 2, 2));
  REQUIRE(deleted.ok());
  CHECK(deleted->value.deleted);
  CHECK(deleted->token.lsn > edited->token.lsn);

  auto page = f.Wait(c.ReadHistory(Newest(1001, 2)));
  REQUIRE(page.ok());
  REQUIRE(page->messages.size() == 2);
  CHECK(page->messages[0].seq == 5);
  CHECK(page->has_more);
  HistoryQuery oldest = Newest(1001, 10);
  oldest.direction = Direction::kOldestFirst;
  auto all = f.Wait(c.ReadHistory(oldest));
  REQUIRE(all->messages.size() == 5);
  CHECK(all->messages[0].body == "hello, edited");
  CHECK(all->messages[1].deleted);
  // The same pages read in place: every field as decoded.
  for (const HistoryQuery& query : {oldest, Newest(1001, 2)}) {
    auto decoded = f.Wait(c.ReadHistory(query));
    auto view = f.Wait(c.ReadHistoryView(query));
    REQUIRE(decoded.ok());
    REQUIRE(view.ok());
    REQUIRE(view->size() == decoded->messages.size());
    CHECK(view->has_more() == decoded->has_more);
    CHECK(view->next_cursor_seq() == decoded->next_cursor_seq);
    for (size_t i = 0; i < view->size(); ++i) {
      const Message& want = decoded->messages[i];
      const MessageView in_place = (*view)[i];
      CHECK(in_place.seq == want.seq);
      CHECK(in_place.body == want.body);
      CHECK(in_place.client_msg_id == want.client_msg_id);
      CHECK(in_place.kind == want.kind);
      CHECK(in_place.deleted == want.deleted);
      const Message got = view->Decode(i);
      CHECK(got.member_ids == want.member_ids);
      CHECK(got.seq == want.seq);
      CHECK(got.conv_id == want.conv_id);
      CHECK(got.sender_id == want.sender_id);
      CHECK(got.sent_at_ms == want.sent_at_ms);
      CHECK(got.client_msg_id == want.client_msg_id);
      CHECK(got.body == want.body);
      CHECK(got.kind == want.kind);
      CHECK(got.edited == want.edited);
      CHECK(got.deleted == want.deleted);
      CHECK(got.edited_at_ms == want.edited_at_ms);
      CHECK(got.revision == want.revision);
    }
    CHECK(view->ToPage().messages.size() == decoded->messages.size());
    // The view owns its page: it outlives the client, and reads the same from another thread.
    if (query.direction == Direction::kOldestFirst) {
      REQUIRE(decoded->messages[3].member_ids == std::vector<uint64_t>{4});  // membersAdded.
      HistoryPageView kept = *view;
      std::string body_elsewhere;
      std::thread([&] { body_elsewhere = std::string(kept[0].body); }).join();
      CHECK(body_elsewhere == decoded->messages[0].body);
    }
  }
  CHECK(f.Wait(c.ReadHistoryView(Newest(1001, 0))).status().field() == "limit");
  HistoryQuery by_time = oldest;
  by_time.from_time_ms = all->messages[2].sent_at_ms;
  CHECK(f.Wait(c.ReadHistory(by_time))->messages.front().sent_at_ms == all->messages[2].sent_at_ms);

  // The fan-out worker brings the conversation into every member's inbox.
  REQUIRE(f.Eventually([&] { return InboxSeq(f, 2, 1001) == 5; }));
  auto read = f.Wait(c.MarkRead(2, 1001, 4));
  REQUIRE(read.ok());
  CHECK(read->value.unread_count == 1);
  CHECK(read->token.shard_id == f.cluster->shard_maps()->Current()->ShardForKey(2).shard_id);
  CHECK(read->token.lsn > 0);
  CHECK(f.Wait(c.MarkRead(2, 999, 1)).status().code() == ErrorCode::kNotFound);

  // Errors name the field.
  auto bad = f.Wait(c.SendMessage({1001, 1, "", "x"}));
  CHECK(bad.status().code() == ErrorCode::kInvalidArgument);
  CHECK(bad.status().field() == "client_msg_id");
  CHECK(f.Wait(c.ReadHistory(Newest(1001, 0))).status().field() == "limit");
}

TEST_CASE("sends to many conversations spread over every shard") {
  ClusterFixture f;
  constexpr uint64_t kConvs = 160;
  std::set<uint64_t> shards_used;
  auto map = f.cluster->shard_maps()->Current();
  for (uint64_t conv = 1; conv <= kConvs; ++conv) {
    REQUIRE(f.Wait(f.client->CreateConversation({conv, 1, {2}, "c"})).ok());
    shards_used.insert(map->ShardForKey(conv).shard_id);
  }
  CHECK(shards_used.size() == map->shards().size());
  std::vector<SendMessageRequest> sends;
  for (uint64_t conv = 1; conv <= kConvs; ++conv) {
    for (int i = 0; i < 5; ++i) {
      sends.push_back({conv, 1 + (i % 2ull), "c" + std::to_string(i), "body " + std::to_string(i)});
    }
  }
  auto results = f.Wait(f.client->SendBatch(sends));
  for (auto& r : results) REQUIRE(r.ok());
  for (uint64_t conv = 1; conv <= kConvs; ++conv) {
    auto page = f.Wait(f.client->ReadHistory(Newest(conv)));
    REQUIRE(page.ok());
    REQUIRE(page->messages.size() == 5);
    CHECK(page->messages[0].body == "body 4");
  }
  // The reads were answered from memory on the event loops; the writes ran on the engine pools.
  auto counter = [](const std::string& metrics, const std::string& name) -> uint64_t {
    // The sample's line, not its HELP line.
    auto at = metrics.find("\n" + name + " ");
    return at == std::string::npos ? 0 : std::stoull(metrics.substr(at + name.size() + 2));
  };
  uint64_t on_loop = 0, on_pool = 0;
  for (size_t i = 0; i < f.cluster->node_count(); ++i) {
    const std::string metrics = f.cluster->node(i)->RenderMetrics();
    on_loop += counter(metrics, "scrollback_engine_calls_total{where=\"loop\"}");
    on_pool += counter(metrics, "scrollback_engine_calls_total{where=\"pool\"}");
  }
  CHECK(on_loop >= kConvs);
  CHECK(on_pool >= kConvs);
  // Each page above filled its conversation's history tail (decision 0014): read again, the
  // pages come from there, and the nodes count the hits.
  for (uint64_t conv = 1; conv <= kConvs; ++conv) {
    auto page = f.Wait(f.client->ReadHistory(Newest(conv)));
    REQUIRE(page.ok());
    CHECK(page->messages.front().body == "body 4");
  }
  uint64_t hits = 0;
  for (size_t i = 0; i < f.cluster->node_count(); ++i) {
    hits += counter(f.cluster->node(i)->RenderMetrics(), "scrollback_history_cache_hits_total");
  }
  CHECK(hits >= kConvs);
}

TEST_CASE("inbox fan-out reaches members on other shards") {
  ClusterFixture f;
  auto map = f.cluster->shard_maps()->Current();
  // Members whose inbox rows live on shards other than the conversation's.
  const uint64_t conv = 77;
  std::vector<uint64_t> members;
  for (uint64_t user = 100; members.size() < 6; ++user) {
    if (map->ShardForKey(user).shard_id != map->ShardForKey(conv).shard_id) members.push_back(user);
  }
  REQUIRE(f.Wait(f.client->CreateConversation({conv, members[0], members, "fan"})).ok());
  for (int i = 1; i <= 10; ++i) {
    REQUIRE(
        f.Wait(f.client->SendMessage({conv, members[i % 6], "m" + std::to_string(i), "x"})).ok());
  }
  for (uint64_t user : members) {
    INFO("user " << user);
    CHECK(f.Eventually([&] { return InboxSeq(f, user, conv) == 10; }));
  }
}

TEST_CASE("the fan-out worker delivers the sends that arrive during its linger in one round") {
  EmbeddedClusterOptions options;
  options.fan_out_options.linger = std::chrono::seconds(2);
  ClusterFixture f(options);
  auto rounds = [&] {
    uint64_t n = 0;
    for (size_t i = 0; i < f.cluster->node_count(); ++i)
      n += f.cluster->fan_out_worker(i)->rounds();
    return n;
  };
  REQUIRE(f.Wait(f.client->CreateConversation({501, 1, {2}, "linger"})).ok());
  REQUIRE(f.Wait(f.client->SendMessage({501, 1, "m1", "first"})).ok());
  // Delivered: the worker that delivered it now waits out its linger.
  REQUIRE(f.Eventually([&] { return InboxSeq(f, 2, 501) == 1; }));
  const uint64_t before = rounds();
  for (int i = 2; i <= 11; ++i) {
    REQUIRE(f.Wait(f.client->SendMessage({501, 1, "m" + std::to_string(i), "more"})).ok());
  }
  REQUIRE(f.Eventually([&] { return InboxSeq(f, 2, 501) == 11; }));
  INFO("delivery rounds for 10 sends: " << rounds() - before);
  CHECK(rounds() - before >= 1);
  CHECK(rounds() - before <= 2);  // Without the linger: a round per send, or close to it.
  // Every member's row converged to the newest message, the sender's too.
  CHECK(InboxSeq(f, 1, 501) == 11);
}

// A source that keeps handing out the map it first saw until a refresh is requested.
class LaggingSource final : public ShardMapSource {
 public:
  explicit LaggingSource(std::shared_ptr<ShardMapSource> real)
      : real_(std::move(real)), current_(real_->Current()) {}
  std::shared_ptr<const ShardMap> Current() override { return current_; }
  void RequestRefresh() override {
    ++refreshes;
    current_ = real_->Current();
  }
  std::atomic<int> refreshes = 0;

 private:
  std::shared_ptr<ShardMapSource> real_;
  std::shared_ptr<const ShardMap> current_;
};

TEST_CASE("a client with a stale shard map refreshes on not-owner and retries") {
  ClusterFixture f(SharedDirectoryOptions());
  auto lagging = std::make_shared<LaggingSource>(f.cluster->shard_maps());
  auto stale_client = ChatClient::Create(*f.io.provider, lagging);
  const uint64_t conv = 5150;
  REQUIRE(f.Wait(stale_client->CreateConversation({conv, 1, {}, "moving"})).ok());
  REQUIRE(f.Wait(stale_client->SendMessage({conv, 1, "a", "before"})).ok());

  const ShardInfo& shard = lagging->Current()->ShardForKey(conv);
  size_t owner = 0;
  while (f.cluster->node_id(owner) != shard.primary) ++owner;
  const size_t target = (owner + 1) % f.cluster->node_count();
  REQUIRE(f.cluster->MoveShard(shard.shard_id, target).ok());

  // The old owner answers not-owner; the client refreshes and finds the data on the new one.
  auto sent = f.Wait(stale_client->SendMessage({conv, 1, "b", "after"}));
  INFO(sent.status().ToString());
  REQUIRE(sent.ok());
  CHECK(sent->seq == 2);
  CHECK(lagging->refreshes >= 1);
  CHECK(lagging->Current()->ShardForKey(conv).primary == f.cluster->node_id(target));
  CHECK(f.Wait(f.client->GetMessage(conv, 1))->body == "before");
}

TEST_CASE(
    "calls to a stopped node fail fast with unavailable, the rest succeed, and data returns") {
  // Without failover: the stopped node's shards stay unavailable until it returns. (With it,
  // they move once its lease lapses, 1 s on, which a slow sanitizer run of the sends below can
  // outlast; failover_test covers that path.)
  EmbeddedClusterOptions options;
  options.failover = false;
  ClusterFixture f(options);
  auto map = f.cluster->shard_maps()->Current();
  constexpr uint64_t kConvs = 60;
  for (uint64_t conv = 1; conv <= kConvs; ++conv) {
    REQUIRE(f.Wait(f.client->CreateConversation({conv, 1, {2, 3, 4}, "r"})).ok());
    REQUIRE(f.Wait(f.client->SendMessage({conv, 1, "first", "acknowledged"})).ok());
  }
  f.cluster->StopNode(0);
  const std::string down = f.cluster->node_id(0);
  int unavailable = 0, served = 0;
  for (uint64_t conv = 1; conv <= kConvs; ++conv) {
    auto sent = f.Wait(f.client->SendMessage({conv, 2, "second", "during outage"}));
    if (map->ShardForKey(conv).primary == down) {
      CHECK(sent.status().code() == ErrorCode::kUnavailable);
      // Marked down: later calls fail without waiting on the network (fail fast).
      CHECK(f.client->IsDown(down));
      ++unavailable;
    } else {
      CHECK(sent.ok());
      ++served;
    }
  }
  CHECK(unavailable > 0);
  CHECK(served > 0);
  CHECK(f.client->IsDown(down));

  REQUIRE(f.cluster->RestartNode(0).ok());
  for (uint64_t conv = 1; conv <= kConvs; ++conv) {
    // Every acknowledged message is back; the node takes writes again once marked up.
    REQUIRE(f.Eventually([&] { return f.Wait(f.client->GetMessage(conv, 1)).ok(); }));
    CHECK(f.Wait(f.client->GetMessage(conv, 1))->body == "acknowledged");
  }
  // Fan-out caught up with everything, including updates aimed at the restarted node.
  for (uint64_t user : {2, 3, 4}) {
    for (uint64_t conv = 1; conv <= kConvs; conv += 7) {
      uint64_t expected = f.Wait(f.client->GetConversation(conv))->last_seq;
      INFO("user " << user << " conv " << conv);
      CHECK(f.Eventually([&] { return InboxSeq(f, user, conv) == expected; }));
    }
  }
}

// Opens a plain TCP connection to `address` (host:port).
int ConnectTo(const std::string& address) {
  auto colon = address.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  inet_pton(AF_INET, address.substr(0, colon).c_str(), &addr.sin_addr);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  return fd;
}

TEST_CASE("malformed and oversized requests are refused while other clients are served") {
  EmbeddedClusterOptions options;
  options.node.max_message_bytes = 1 << 20;  // 1 MiB per RPC message.
  ClusterFixture f(options);
  auto created = f.Wait(f.client->CreateConversation({42, 1, {}, "x"}));
  INFO(created.status().ToString());
  REQUIRE(created.ok());
  const std::string address = f.cluster->node(0)->address();

  // Garbage bytes: the node drops that connection only.
  int fd = ConnectTo(address);
  std::string junk(4096, '\xff');
  REQUIRE(write(fd, junk.data(), junk.size()) == static_cast<ssize_t>(junk.size()));
  // The node may answer with an abort message; then it closes. Bounded by a receive timeout.
  timeval five_seconds{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &five_seconds, sizeof(five_seconds));
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) {
  }
  CHECK((n == 0 || errno == ECONNRESET));  // Closed by the node, not timed out.
  close(fd);

  // A body over the engine limit: a typed invalid-argument, the connection stays usable.
  auto big = f.Wait(f.client->SendMessage({42, 1, "big", std::string(100 * 1024, 'b')}));
  CHECK(big.status().code() == ErrorCode::kInvalidArgument);
  CHECK(big.status().field() == "body");

  // A message over the node's RPC size limit: that connection fails, the node lives on.
  ClientOptions one_shot;
  one_shot.call_timeout = std::chrono::seconds(10);
  auto reckless = f.cluster->NewClient(*f.io.provider, one_shot);
  // 30 sends of 60 KB (each within the body limit) to one node: 1.8 MB in one call.
  auto map = f.cluster->shard_maps()->Current();
  std::vector<SendMessageRequest> huge;
  for (uint64_t conv = 1; huge.size() < 30; ++conv) {
    if (map->ShardForKey(conv).primary == map->ShardForKey(42).primary) {
      huge.push_back({conv, 1, "h", std::string(60000, 'h')});
    }
  }
  auto refused = f.Wait(reckless->SendBatch(huge));
  for (auto& r : refused) CHECK(r.status().code() == ErrorCode::kUnavailable);

  // Everyone else is still served, by every node.
  for (uint64_t conv = 100; conv < 130; ++conv) {
    REQUIRE(f.Wait(f.client->CreateConversation({conv, 1, {}, "after"})).ok());
    REQUIRE(f.Wait(f.client->SendMessage({conv, 1, "ok", "still here"})).ok());
  }
}

}  // namespace
}  // namespace scrollback

namespace scrollback {
namespace {

TEST_CASE("a node with a full engine queue answers overloaded and recovers") {
  EmbeddedClusterOptions options;
  options.nodes = 1;
  options.shards = 4;
  options.node.engine_threads = 1;
  options.node.max_queued_calls = 2;
  testing::ClusterFixture f(options);
  REQUIRE(f.Wait(f.client->CreateConversation({9, 1, {}, "busy"})).ok());
  // 300 sends pipelined on one connection, without waiting for replies.
  kj::Vector<kj::Promise<Result<SendMessageResult>>> calls;
  for (int i = 0; i < 300; ++i) {
    calls.add(f.client->SendMessage({9, 1, "p" + std::to_string(i), "x"}));
  }
  auto results = f.Wait(kj::joinPromises(calls.releaseAsArray()));
  int ok = 0, overloaded = 0;
  for (auto& r : results) {
    if (r.ok())
      ++ok;
    else if (r.status().code() == ErrorCode::kOverloaded)
      ++overloaded;
    else
      FAIL(r.status().ToString());
  }
  CHECK(ok > 0);
  CHECK(overloaded > 0);
  // Seqs stayed dense: exactly the accepted sends were written.
  CHECK(f.Wait(f.client->GetConversation(9))->last_seq == static_cast<uint64_t>(ok));
  // Once the queue drains, calls succeed again.
  CHECK(f.Wait(f.client->SendMessage({9, 1, "later", "x"})).ok());
}

}  // namespace
}  // namespace scrollback

namespace scrollback {
namespace {

TEST_CASE("inbox rows of conversations above the fan-out limit show the conversation's last seq") {
  EmbeddedClusterOptions options;
  options.node.shard_options.limits.fan_out_member_limit = 3;
  testing::ClusterFixture f(options);
  REQUIRE(f.Wait(f.client->CreateConversation({31, 1, {2, 3, 4, 5}, "big"})).ok());
  for (int i = 0; i < 3; ++i) {
    REQUIRE(f.Wait(f.client->SendMessage({31, 1, "b" + std::to_string(i), "hi all"})).ok());
  }
  // The `joined` row arrives by fan-out; messages do not (5 members > 3).
  InboxEntry entry;
  REQUIRE(f.Eventually([&] {
    auto page = f.Wait(f.client->ListInbox({4, "", 10}));
    if (!page.ok() || page->entries.empty()) return false;
    entry = page->entries[0];
    return true;
  }));
  CHECK_FALSE(entry.fan_out);
  CHECK(entry.last_seq == 3);  // Completed from the conversation's shard.
  CHECK(entry.unread_count == 3);
  auto read = f.Wait(f.client->MarkRead(4, 31, 2));
  REQUIRE(read.ok());
  CHECK(read->value.unread_count == 1);
  auto after = f.Wait(f.client->ListInbox({4, "", 10}));
  REQUIRE(after.ok());
  CHECK(after->entries[0].unread_count == 1);
  // Past the end: clamped to the conversation's last seq, so a new message is unread again.
  auto past = f.Wait(f.client->MarkRead(4, 31, 1000));
  REQUIRE(past.ok());
  CHECK(past->value.read_seq == 3);
  REQUIRE(f.Wait(f.client->SendMessage({31, 1, "b-next", "one more"})).ok());
  auto later = f.Wait(f.client->ListInbox({4, "", 10}));
  REQUIRE(later.ok());
  CHECK(later->entries[0].unread_count == 1);
}

}  // namespace
}  // namespace scrollback
