#include <catch2/catch.hpp>

#include "test_util.h"

namespace scrollback {
namespace {

using testing::StoreFixture;

TEST_CASE("a created conversation can be read back with its members") {
  StoreFixture f;
  Conversation created = f.Create(10, 1, {3, 2, 3}, "team");
  CHECK(created.member_count == 3);  // Duplicates merged, creator included.
  auto conv = f.store->GetConversation(10);
  REQUIRE(conv.ok());
  CHECK(conv->title == "team");
  CHECK(conv->creator_id == 1);
  CHECK(conv->member_count == 3);
  CHECK(conv->last_seq == 0);
  CHECK(conv->created_at_ms == f.clock->NowMs());
  auto members = f.store->ListMembers(10, 0, 100);
  REQUIRE(members.ok());
  CHECK(*members == std::vector<uint64_t>{1, 2, 3});
  auto after_one = f.store->ListMembers(10, 1, 1);
  REQUIRE(after_one.ok());
  CHECK(*after_one == std::vector<uint64_t>{2});
}

TEST_CASE("creating a conversation twice fails with already-exists") {
  StoreFixture f;
  f.Create(10, 1);
  auto again = f.store->CreateConversation({10, 2, {}, "other"});
  CHECK(again.status().code() == ErrorCode::kAlreadyExists);
  CHECK(f.store->GetConversation(10)->title == "t");
}

TEST_CASE("bad conversation input is rejected with invalid-argument naming the field") {
  ShardLimits limits;
  limits.max_title_bytes = 8;
  limits.max_members_per_change = 4;
  StoreFixture f(limits);
  auto zero = f.store->CreateConversation({0, 1, {}, ""});
  CHECK(zero.status().code() == ErrorCode::kInvalidArgument);
  CHECK(zero.status().field() == "conv_id");
  CHECK(f.store->CreateConversation({1, 0, {}, ""}).status().field() == "creator_id");
  CHECK(f.store->CreateConversation({1, 1, {}, "123456789"}).status().field() == "title");
  CHECK(f.store->CreateConversation({1, 1, {2, 3, 4, 5, 6}, ""}).status().field() == "member_ids");
  CHECK(f.store->CreateConversation({1, 1, {0}, ""}).status().field() == "member_ids");
  CHECK(f.store->GetConversation(1).status().code() == ErrorCode::kNotFound);
}

TEST_CASE("a missing conversation is not-found for every read") {
  StoreFixture f;
  CHECK(f.store->GetConversation(5).status().code() == ErrorCode::kNotFound);
  CHECK(f.store->ListMembers(5, 0, 10).status().code() == ErrorCode::kNotFound);
  HistoryQuery history;
  history.conv_id = 5;
  CHECK(f.store->ReadHistory(history).status().code() == ErrorCode::kNotFound);
  CHECK(f.store->GetMessage(5, 1).status().code() == ErrorCode::kNotFound);
  CHECK(f.store->SendMessage({5, 1, "c", "b"}).status().code() == ErrorCode::kNotFound);
}

TEST_CASE("adding members records a system message with the next seq") {
  StoreFixture f;
  f.Create(10, 1, {2});
  f.Send(10, 1, "a", "hello");
  auto seq = f.store->AddMembers(10, 2, {3, 4, 2});
  REQUIRE(seq.ok());
  CHECK(*seq == 2);
  auto message = f.store->GetMessage(10, 2);
  REQUIRE(message.ok());
  CHECK(message->kind == MessageKind::kMembersAdded);
  CHECK(message->sender_id == 2);
  CHECK(message->member_ids == std::vector<uint64_t>{3, 4});  // 2 was already a member.
  CHECK(f.store->GetConversation(10)->member_count == 4);
  // The new members can send.
  CHECK(f.Send(10, 4, "b", "hi") == 3);
  // Adding only existing members changes nothing.
  CHECK(*f.store->AddMembers(10, 1, {3}) == 3);
}

TEST_CASE("only members change membership, but anyone may leave") {
  StoreFixture f;
  f.Create(10, 1, {2});
  CHECK(f.store->AddMembers(10, 9, {8}).status().code() == ErrorCode::kPermissionDenied);
  auto left = f.store->RemoveMembers(10, 2, {2});
  REQUIRE(left.ok());
  CHECK(f.store->GetMessage(10, *left)->kind == MessageKind::kMembersRemoved);
  CHECK(*f.store->ListMembers(10, 0, 10) == std::vector<uint64_t>{1});
  CHECK(f.store->SendMessage({10, 2, "x", "y"}).status().code() == ErrorCode::kPermissionDenied);
  CHECK(f.store->RemoveMembers(10, 2, {1}).status().code() == ErrorCode::kPermissionDenied);
}

TEST_CASE("membership changes are bounded by max_members and max_members_per_change") {
  ShardLimits limits;
  limits.max_members = 3;
  limits.max_members_per_change = 2;
  StoreFixture f(limits);
  f.Create(10, 1, {2});
  CHECK(f.store->AddMembers(10, 1, {3, 4, 5}).status().field() == "user_ids");
  CHECK(f.store->AddMembers(10, 1, {}).status().field() == "user_ids");
  CHECK(f.store->AddMembers(10, 1, {3, 4}).status().code() == ErrorCode::kInvalidArgument);
  CHECK(f.store->AddMembers(10, 1, {3}).ok());
}

TEST_CASE("a key outside the shard's token range gets not-owner") {
  StoreFixture f;
  f.store.reset();
  f.options.token_range = TokenRange{0, UINT64_MAX / 2};
  // A fresh directory, since the range is persisted.
  testing::TempDir dir;
  auto opened = ShardStore::Open(f.options, dir.Sub("half"));
  REQUIRE(opened.ok());
  auto& store = *opened;
  uint64_t inside = 0, outside = 0;
  for (uint64_t id = 1; inside == 0 || outside == 0; ++id) {
    (f.options.token_range.Contains(TokenOf(id)) ? inside : outside) = id;
  }
  CHECK(store->CreateConversation({inside, 1, {}, ""}).ok());
  CHECK(store->CreateConversation({outside, 1, {}, ""}).status().code() == ErrorCode::kNotOwner);
  CHECK(store->GetConversation(outside).status().code() == ErrorCode::kNotOwner);
  InboxQuery inbox;
  inbox.user_id = outside;
  CHECK(store->ListInbox(inbox).status().code() == ErrorCode::kNotOwner);
}

TEST_CASE("a shard reopened with another shard id or range is refused") {
  StoreFixture f;
  f.store.reset();
  f.options.shard_id = 7;
  CHECK(ShardStore::Open(f.options, f.dir.Sub("shard")).status().field() == "shard_id");
  f.options.shard_id = 0;
  f.options.token_range = TokenRange{0, 5};
  CHECK(ShardStore::Open(f.options, f.dir.Sub("shard")).status().field() == "token_range");
}

}  // namespace
}  // namespace scrollback
