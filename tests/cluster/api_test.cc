// The ChatStore API as a client in another language meets it: raw Cap'n Proto calls (no smart
// client) through a router in front of an embedded cluster, checking edge cases of input and
// that replies pass through whole. Each test failed before its fix.
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/encoding.h>

#include <catch2/catch.hpp>
#include <optional>
#include <string>

#include "cluster_test_util.h"
#include "scrollback/router/router_server.h"
#include "scrollback/schema/chatstore.capnp.h"
#include "scrollback/schema/wire.h"

namespace scrollback {
namespace {

namespace s = ::scrollback::schema;
using testing::ClusterFixture;

// An embedded cluster, a router in front of it, and a plain ChatStore client of the router.
struct RouterFixture : ClusterFixture {
  RouterFixture() {
    RouterOptions options;
    options.rpc.event_loops = 1;
    auto started = RouterServer::Start(options, cluster->shard_maps());
    INFO(started.status().ToString());
    REQUIRE(started.ok());
    router = std::move(started).value();
    auto address = io.provider->getNetwork().parseAddress(router->address()).wait(io.waitScope);
    stream = address->connect().wait(io.waitScope);
    rpc = kj::heap<capnp::TwoPartyClient>(*stream);
    store = rpc->bootstrap().castAs<s::ChatStore>();
  }
  ~RouterFixture() {
    store = nullptr;
    rpc = nullptr;
    stream = nullptr;
    router->Stop(std::chrono::milliseconds(0));
  }

  // Creates conversation `conv` by user 1 with members 2 and 3; fails the test on error.
  void Create(uint64_t conv, kj::StringPtr title = "api") {
    auto call = store.createConversationRequest();
    call.setConvId(conv);
    call.setCreatorId(1);
    auto members = call.initMemberIds(2);
    members.set(0, 2);
    members.set(1, 3);
    call.setTitle(title);
    auto reply = call.send().wait(io.waitScope);
    INFO((reply.hasError() ? std::string(reply.getError().getMessage().cStr()) : ""));
    REQUIRE_FALSE(reply.hasError());
  }
  // Sends message `n` to `conv` as user 1; returns its seq.
  uint64_t Send(uint64_t conv, int n) {
    auto call = store.sendMessageRequest();
    auto request = call.initRequest();
    request.setConvId(conv);
    request.setSenderId(1);
    const std::string id = "m" + std::to_string(n);
    request.setClientMsgId(kj::arrayPtr(reinterpret_cast<const kj::byte*>(id.data()), id.size()));
    request.setBody(kj::arrayPtr(reinterpret_cast<const kj::byte*>(id.data()), id.size()));
    auto reply = call.send().wait(io.waitScope);
    REQUIRE_FALSE(reply.getResult().hasError());
    return reply.getResult().getSeq();
  }

  // `user`'s inbox row for `conv`, listed through the router; nullopt if there is none.
  std::optional<InboxEntry> RowOf(uint64_t user, uint64_t conv) {
    auto call = store.listInboxRequest();
    call.setUserId(user);
    call.setLimit(50);
    auto reply = call.send().wait(io.waitScope);
    for (auto entry : reply.getEntries()) {
      if (entry.getConvId() == conv) return wire::Decode<InboxEntry>(entry);
    }
    return std::nullopt;
  }

  std::unique_ptr<RouterServer> router;
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> rpc;
  s::ChatStore::Client store = nullptr;
};

TEST_CASE("writes through the router answer with their write token") {
  RouterFixture f;
  const uint64_t conv = 8101;
  const ShardInfo& shard = f.cluster->shard_maps()->Current()->ShardForKey(conv);

  auto create = f.store.createConversationRequest();
  create.setConvId(conv);
  create.setCreatorId(1);
  create.initMemberIds(1).set(0, 2);
  create.setTitle("tokens");
  auto created = create.send().wait(f.io.waitScope);
  REQUIRE_FALSE(created.hasError());
  REQUIRE(created.hasToken());
  CHECK(created.getToken().getShardId() == shard.shard_id);
  CHECK(created.getToken().getEpoch() == shard.epoch);
  const uint64_t created_lsn = created.getToken().getLsn();
  CHECK(created_lsn > 0);

  auto send = f.store.sendMessageRequest();
  auto request = send.initRequest();
  request.setConvId(conv);
  request.setSenderId(1);
  request.setClientMsgId(kj::StringPtr("t1").asBytes());
  request.setBody(kj::StringPtr("hello").asBytes());
  auto sent = send.send().wait(f.io.waitScope);
  REQUIRE_FALSE(sent.getResult().hasError());
  REQUIRE(sent.getResult().hasToken());
  CHECK(sent.getResult().getToken().getShardId() == shard.shard_id);
  CHECK(sent.getResult().getToken().getLsn() > created_lsn);

  auto edit = f.store.editMessageRequest();
  edit.setConvId(conv);
  edit.setSeq(sent.getResult().getSeq());
  edit.setEditorId(1);
  edit.setBody(kj::StringPtr("hello, edited").asBytes());
  auto edited = edit.send().wait(f.io.waitScope);
  REQUIRE_FALSE(edited.hasError());
  CHECK(edited.getToken().getLsn() > sent.getResult().getToken().getLsn());

  auto add = f.store.addMembersRequest();
  add.setConvId(conv);
  add.setActorId(1);
  add.initUserIds(1).set(0, 4);
  auto added = add.send().wait(f.io.waitScope);
  REQUIRE_FALSE(added.hasError());
  CHECK(added.getToken().getLsn() > edited.getToken().getLsn());
}

TEST_CASE("a newest-first history cursor past the end reads from the newest message") {
  RouterFixture f;
  const uint64_t conv = 8201;
  f.Create(conv);
  uint64_t last = 0;
  for (int i = 1; i <= 10; ++i) last = f.Send(conv, i);
  REQUIRE(last == 10);

  for (uint64_t cursor : {last + 1, last + 5, last + 1000, UINT64_MAX}) {
    INFO("cursor " << cursor);
    auto call = f.store.readHistoryRequest();
    auto request = call.initRequest();
    request.setConvId(conv);
    request.setDirection(s::Direction::NEWEST_FIRST);
    request.setCursorSeq(cursor);
    request.setLimit(4);
    auto reply = call.send().wait(f.io.waitScope);
    REQUIRE_FALSE(reply.hasError());
    auto messages = reply.getPage().getMessages();
    REQUIRE(messages.size() == 4);
    CHECK(messages[0].getSeq() == last);
    CHECK(messages[3].getSeq() == last - 3);
    CHECK(reply.getPage().getHasMore());
    CHECK(reply.getPage().getNextCursorSeq() == last - 3);
  }
}

TEST_CASE("markRead beyond the last seq is clamped, so new messages still count as unread") {
  RouterFixture f;
  const uint64_t conv = 8301;
  f.Create(conv);
  for (int i = 1; i <= 3; ++i) f.Send(conv, i);
  // Wait until member 2's inbox row shows seq 3.
  REQUIRE(f.Eventually([&] {
    auto row = f.RowOf(2, conv);
    return row && row->last_seq == 3;
  }));

  auto mark = f.store.markReadRequest();
  mark.setUserId(2);
  mark.setConvId(conv);
  mark.setSeq(1000);
  auto marked = mark.send().wait(f.io.waitScope);
  REQUIRE_FALSE(marked.hasError());
  CHECK(marked.getEntry().getReadSeq() == 3);
  CHECK(marked.getEntry().getUnreadCount() == 0);
  REQUIRE(marked.hasToken());
  CHECK(marked.getToken().getLsn() > 0);

  f.Send(conv, 4);
  CHECK(f.Eventually([&] {
    auto row = f.RowOf(2, conv);
    return row && row->unread_count == 1;
  }));
}

TEST_CASE("a title that is not UTF-8 is refused naming the field, and stored nowhere") {
  RouterFixture f;
  const uint64_t conv = 8401;
  for (const char* bad : {"\xff\xfe", "ok \xc3", "\xed\xa0\x80", "\xc0\xaf", "\xf4\x90\x80\x80"}) {
    INFO("title bytes " << kj::encodeHex(kj::StringPtr(bad).asBytes()).cStr());
    auto call = f.store.createConversationRequest();
    call.setConvId(conv);
    call.setCreatorId(1);
    call.setTitle(bad);
    auto reply = call.send().wait(f.io.waitScope);
    REQUIRE(reply.hasError());
    CHECK(reply.getError().getCode() == s::ErrorCode::INVALID_ARGUMENT);
    CHECK(std::string(reply.getError().getField().cStr()) == "title");
  }
  auto get = f.store.getConversationRequest();
  get.setConvId(conv);
  auto got = get.send().wait(f.io.waitScope);
  REQUIRE(got.hasError());
  CHECK(got.getError().getCode() == s::ErrorCode::NOT_FOUND);
  // Valid multi-byte titles are fine.
  f.Create(conv, "caf\xc3\xa9 \xf0\x9f\x92\xac");
}

TEST_CASE("an unknown history direction is refused naming the field") {
  RouterFixture f;
  const uint64_t conv = 8501;
  f.Create(conv);
  f.Send(conv, 1);
  for (uint16_t direction : {2, 7, 256, 65535}) {
    INFO("direction " << direction);
    auto call = f.store.readHistoryRequest();
    auto request = call.initRequest();
    request.setConvId(conv);
    request.setDirection(static_cast<s::Direction>(direction));
    request.setLimit(10);
    auto reply = call.send().wait(f.io.waitScope);
    REQUIRE(reply.hasError());
    CHECK(reply.getError().getCode() == s::ErrorCode::INVALID_ARGUMENT);
    CHECK(std::string(reply.getError().getField().cStr()) == "direction");
  }
}

TEST_CASE("edited and deleted text leaves every member's inbox preview") {
  RouterFixture f;
  const uint64_t conv = 8601;
  f.Create(conv);
  f.Send(conv, 1);
  const uint64_t last = f.Send(conv, 2);
  // The preview of member `user` for `conv`, once it shows seq `last`.
  auto preview_of = [&](uint64_t user) -> std::optional<std::string> {
    auto row = f.RowOf(user, conv);
    if (!row || row->last_seq != last) return std::nullopt;
    return row->preview;
  };
  for (uint64_t user : {2, 3}) {
    REQUIRE(f.Eventually([&] { return preview_of(user) == std::optional<std::string>("m2"); }));
  }

  auto edit = f.store.editMessageRequest();
  edit.setConvId(conv);
  edit.setSeq(last);
  edit.setEditorId(1);
  edit.setBody(kj::StringPtr("never mind").asBytes());
  REQUIRE_FALSE(edit.send().wait(f.io.waitScope).hasError());
  for (uint64_t user : {2, 3}) {
    INFO("user " << user);
    CHECK(
        f.Eventually([&] { return preview_of(user) == std::optional<std::string>("never mind"); }));
  }

  auto remove = f.store.deleteMessageRequest();
  remove.setConvId(conv);
  remove.setSeq(last);
  remove.setActorId(1);
  REQUIRE_FALSE(remove.send().wait(f.io.waitScope).hasError());
  for (uint64_t user : {2, 3}) {
    INFO("user " << user);
    CHECK(f.Eventually([&] { return preview_of(user) == std::optional<std::string>(""); }));
  }
}

TEST_CASE("a call with malformed parameters fails alone, and its error carries no stack") {
  RouterFixture f;
  const uint64_t conv = 8701;
  f.Create(conv);
  // sendMessage (method 5) whose `request` pointer holds text where a struct belongs.
  for (bool through_router : {true, false}) {
    INFO((through_router ? "through the router" : "on a node"));
    capnp::Capability::Client target = f.store;
    kj::Own<kj::AsyncIoStream> stream;
    kj::Own<capnp::TwoPartyClient> rpc;
    if (!through_router) {
      auto address = f.io.provider->getNetwork()
                         .parseAddress(f.cluster->node(0)->address())
                         .wait(f.io.waitScope);
      stream = address->connect().wait(f.io.waitScope);
      rpc = kj::heap<capnp::TwoPartyClient>(*stream);
      target = rpc->bootstrap();
    }
    auto call = target.typelessRequest(capnp::typeId<s::ChatStore>(), 5, nullptr);
    auto params = call.initAsAnyStruct(0, 1);
    params.getPointerSection()[0].template setAs<capnp::Text>("not a struct");
    std::string what;
    try {
      call.send().wait(f.io.waitScope);
    } catch (const kj::Exception& e) {
      what = e.getDescription();
    }
    INFO(what);
    CHECK_FALSE(what.empty());
    CHECK(what.find("stack") == std::string::npos);
    CHECK(what.find("0x") == std::string::npos);
    // The connection and the server keep serving.
    CHECK(f.Send(conv, 100) > 0);
  }
}

TEST_CASE("a malformed frame aborts its own connection with a reason and no stack") {
  RouterFixture f;
  const uint64_t conv = 8801;
  f.Create(conv);
  int probe = 200;
  for (std::string address : {f.router->address(), f.cluster->node(0)->address()}) {
    INFO(address);
    auto parsed = f.io.provider->getNetwork().parseAddress(address).wait(f.io.waitScope);
    auto raw = parsed->connect().wait(f.io.waitScope);
    // One segment of 2 words whose root pointer is garbage (a far pointer to nowhere).
    const uint8_t frame[] = {0,    0,    0,    0,    2,    0,    0,    0,
                             0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                             0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    raw->write(frame, sizeof(frame)).wait(f.io.waitScope);
    std::string reply;
    kj::byte buffer[4096];
    for (;;) {
      auto timed = f.io.provider->getTimer().timeoutAfter(5 * kj::SECONDS,
                                                          raw->tryRead(buffer, 1, sizeof(buffer)));
      size_t n = 0;
      try {
        n = timed.wait(f.io.waitScope);
      } catch (const kj::Exception&) {
        break;  // Reset or timed out: what arrived so far is the reply.
      }
      if (n == 0) break;
      reply.append(reinterpret_cast<const char*>(buffer), n);
    }
    INFO("reply bytes: " << reply.size());
    CHECK(reply.find("expected") != std::string::npos);  // The reason, as text.
    CHECK(reply.find("stack") == std::string::npos);
    CHECK(f.Send(conv, probe++) > 0);  // Others are served.
  }
}

TEST_CASE("every call reports its failure in a top-level error, batches too") {
  RouterFixture f;
  const uint64_t conv = 8901;
  f.Create(conv);
  // Through the router and straight to the conversation's node.
  auto address =
      f.io.provider->getNetwork()
          .parseAddress(f.cluster
                            ->node(f.cluster->IndexOf(
                                f.cluster->shard_maps()->Current()->ShardForKey(conv).primary))
                            ->address())
          .wait(f.io.waitScope);
  auto stream = address->connect().wait(f.io.waitScope);
  capnp::TwoPartyClient rpc(*stream);
  auto node = rpc.bootstrap().castAs<s::Node>();
  CHECK(node.healthRequest().send().wait(f.io.waitScope).getApiVersion() == s::API_VERSION);

  for (int target = 0; target < 2; ++target) {
    s::ChatStore::Client store = target == 0 ? f.store : node;
    INFO((target == 0 ? "through the router" : "on the node"));
    auto send = store.sendMessageRequest();
    auto request = send.initRequest();
    request.setConvId(conv);
    request.setSenderId(1);
    request.setBody(kj::StringPtr("no client id").asBytes());
    auto sent = send.send().wait(f.io.waitScope);
    REQUIRE(sent.hasError());
    CHECK(sent.getError().getCode() == s::ErrorCode::INVALID_ARGUMENT);
    CHECK(std::string(sent.getError().getField().cStr()) == "client_msg_id");
    // Mirrored for clients of API version 1.
    CHECK(sent.getResult().getError().getCode() == s::ErrorCode::INVALID_ARGUMENT);

    auto batch = store.sendBatchRequest();
    auto requests = batch.initRequests(1001);
    for (unsigned i = 0; i < requests.size(); ++i) {
      requests[i].setConvId(conv);
      requests[i].setSenderId(1);
      requests[i].setClientMsgId(kj::StringPtr("b").asBytes());
      requests[i].setBody(kj::StringPtr("x").asBytes());
    }
    auto batched = batch.send().wait(f.io.waitScope);
    REQUIRE(batched.hasError());
    CHECK(batched.getError().getCode() == s::ErrorCode::INVALID_ARGUMENT);
    CHECK(std::string(batched.getError().getField().cStr()) == "requests");
    for (auto result : batched.getResults()) {
      CHECK(result.getError().getCode() == s::ErrorCode::INVALID_ARGUMENT);
    }
  }

  auto apply = node.applyInboxUpdatesRequest();
  apply.initUpdates(1001);
  auto applied = apply.send().wait(f.io.waitScope);
  REQUIRE(applied.hasError());
  CHECK(applied.getError().getCode() == s::ErrorCode::INVALID_ARGUMENT);
  CHECK(std::string(applied.getError().getField().cStr()) == "updates");

  // A batch that succeeds as a whole has no top-level error; its items say each outcome.
  auto mixed = f.store.sendBatchRequest();
  auto two = mixed.initRequests(2);
  for (unsigned i = 0; i < 2; ++i) {
    two[i].setConvId(conv);
    two[i].setSenderId(i == 0 ? 1 : 99);  // 99 is not a member.
    two[i].setClientMsgId(kj::StringPtr("mixed").asBytes());
    two[i].setBody(kj::StringPtr("x").asBytes());
  }
  auto outcome = mixed.send().wait(f.io.waitScope);
  CHECK_FALSE(outcome.hasError());
  REQUIRE(outcome.getResults().size() == 2);
  CHECK_FALSE(outcome.getResults()[0].hasError());
  CHECK(outcome.getResults()[1].getError().getCode() == s::ErrorCode::PERMISSION_DENIED);
}

}  // namespace
}  // namespace scrollback
