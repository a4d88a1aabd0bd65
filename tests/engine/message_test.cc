#include <catch2/catch.hpp>

#include "test_util.h"

namespace scrollback {
namespace {

using testing::StoreFixture;

TEST_CASE("sends get dense seqs starting at 1") {
  StoreFixture f;
  f.Create(10, 1, {2});
  CHECK(f.Send(10, 1, "a", "one") == 1);
  CHECK(f.Send(10, 2, "a", "two") == 2);  // Same client id, other sender: a new message.
  CHECK(f.Send(10, 1, "b", "three") == 3);
  auto message = f.store->GetMessage(10, 2);
  REQUIRE(message.ok());
  CHECK(message->body == "two");
  CHECK(message->sender_id == 2);
  CHECK(message->client_msg_id == "a");
  CHECK(f.store->GetConversation(10)->last_seq == 3);
}

TEST_CASE("a retried send with the same client_msg_id returns the first seq and writes nothing") {
  StoreFixture f;
  f.Create(10, 1);
  auto first = f.store->SendMessage({10, 1, "retry-me", "hello"});
  REQUIRE(first.ok());
  CHECK_FALSE(first->duplicate);
  f.clock->Advance(1000);
  auto stats_before = f.store->GetStats();
  REQUIRE(stats_before.ok());
  auto retry = f.store->SendMessage({10, 1, "retry-me", "hello again"});
  REQUIRE(retry.ok());
  CHECK(retry->duplicate);
  CHECK(retry->seq == first->seq);
  CHECK(retry->sent_at_ms == first->sent_at_ms);
  CHECK(f.store->GetStats()->latest_sequence == stats_before->latest_sequence);
  CHECK(f.store->GetConversation(10)->last_seq == 1);
  CHECK(f.store->GetMessage(10, 1)->body == "hello");
}

TEST_CASE("send input is validated before anything is written") {
  ShardLimits limits;
  limits.max_body_bytes = 10;
  StoreFixture f(limits);
  f.Create(10, 1);
  CHECK(f.store->SendMessage({10, 1, "c", std::string(11, 'x')}).status().field() == "body");
  CHECK(f.store->SendMessage({10, 1, "c", ""}).status().field() == "body");
  CHECK(f.store->SendMessage({10, 1, "", "x"}).status().field() == "client_msg_id");
  CHECK(f.store->SendMessage({10, 1, std::string(65, 'c'), "x"}).status().field() ==
        "client_msg_id");
  CHECK(f.store->SendMessage({10, 0, "c", "x"}).status().field() == "sender_id");
  CHECK(f.store->SendMessage({10, 2, "c", "x"}).status().code() == ErrorCode::kPermissionDenied);
  CHECK(f.store->GetConversation(10)->last_seq == 0);
  CHECK(f.Send(10, 1, std::string(64, 'c'), std::string(10, 'x')) == 1);
}

TEST_CASE("sent_at never goes backwards even when the clock does") {
  StoreFixture f;
  f.Create(10, 1);
  const int64_t start = f.clock->NowMs();
  f.clock->Set(start + 5000);
  f.Send(10, 1, "a", "x");
  f.clock->Set(start + 4000);
  f.Send(10, 1, "b", "y");
  CHECK(f.store->GetMessage(10, 2)->sent_at_ms == start + 5000);
}

TEST_CASE("only the sender edits, and an edit replaces the body and marks it edited") {
  StoreFixture f;
  f.Create(10, 1, {2});
  f.Send(10, 1, "a", "typo");
  CHECK(f.store->EditMessage(10, 1, 2, "hijack").status().code() == ErrorCode::kPermissionDenied);
  f.clock->Advance(10);
  auto edited = f.store->EditMessage(10, 1, 1, "fixed");
  REQUIRE(edited.ok());
  CHECK(edited->edited);
  CHECK(edited->edited_at_ms == f.clock->NowMs());
  auto read = f.store->GetMessage(10, 1);
  CHECK(read->body == "fixed");
  CHECK(read->edited);
  CHECK(f.store->EditMessage(10, 1, 1, "").status().field() == "body");
  CHECK(f.store->EditMessage(10, 9, 1, "x").status().code() == ErrorCode::kNotFound);
}

TEST_CASE("a delete leaves a tombstone that cannot be edited") {
  StoreFixture f;
  f.Create(10, 1, {2});
  f.Send(10, 1, "a", "secret");
  CHECK(f.store->DeleteMessage(10, 1, 2).status().code() == ErrorCode::kPermissionDenied);
  auto deleted = f.store->DeleteMessage(10, 1, 1);
  REQUIRE(deleted.ok());
  CHECK(deleted->deleted);
  CHECK(deleted->body.empty());
  CHECK(f.store->DeleteMessage(10, 1, 1).ok());  // Deleting twice is fine.
  CHECK(f.store->EditMessage(10, 1, 1, "x").status().code() == ErrorCode::kFailedPrecondition);
  // The retry of the original send still finds its seq.
  auto retry = f.store->SendMessage({10, 1, "a", "secret"});
  REQUIRE(retry.ok());
  CHECK(retry->duplicate);
  CHECK(retry->seq == 1);
}

TEST_CASE("system messages cannot be edited or deleted") {
  StoreFixture f;
  f.Create(10, 1);
  uint64_t seq = *f.store->AddMembers(10, 1, {2});
  CHECK(f.store->DeleteMessage(10, seq, 1).status().code() == ErrorCode::kFailedPrecondition);
}

TEST_CASE("a send queues one inbox update per member in the same batch") {
  StoreFixture f;
  f.Create(10, 1, {2, 3});
  auto creation = f.store->ReadOutbox("", 100);
  REQUIRE(creation.ok());
  CHECK(creation->records.size() == 3);  // Three `joined` records.
  std::vector<std::string> positions;
  for (auto& r : creation->records) {
    CHECK(r.update.kind == InboxUpdateKind::kJoined);
    positions.push_back(r.position);
  }
  REQUIRE(f.store->DeleteOutbox(positions).ok());

  f.Send(10, 2, "a", std::string(500, 'z'));
  auto batch = f.store->ReadOutbox("", 100);
  REQUIRE(batch.ok());
  REQUIRE(batch->records.size() == 3);
  std::vector<uint64_t> targets;
  for (auto& r : batch->records) {
    targets.push_back(r.update.user_id);
    CHECK(r.update.conv_id == 10);
    CHECK(r.update.seq == 1);
    CHECK(r.update.sender_id == 2);
    CHECK(r.update.kind == InboxUpdateKind::kMessage);
    CHECK(r.update.preview == std::string(120, 'z'));  // Cut at preview_bytes.
  }
  std::sort(targets.begin(), targets.end());
  CHECK(targets == std::vector<uint64_t>{1, 2, 3});
}

TEST_CASE("conversations above the fan-out limit write no per-message outbox records") {
  ShardLimits limits;
  limits.fan_out_member_limit = 2;
  StoreFixture f(limits);
  f.Create(10, 1, {2, 3});
  auto created = f.store->ReadOutbox("", 100);
  REQUIRE(created->records.size() == 3);
  for (auto& r : created->records) CHECK_FALSE(r.update.fan_out);
  std::vector<std::string> positions;
  for (auto& r : created->records) positions.push_back(r.position);
  REQUIRE(f.store->DeleteOutbox(positions).ok());
  f.Send(10, 1, "a", "x");
  CHECK(f.store->ReadOutbox("", 100)->records.empty());
}

TEST_CASE("previews are cut at a UTF-8 character boundary") {
  ShardLimits limits;
  limits.preview_bytes = 4;
  StoreFixture f(limits);
  f.Create(10, 1);
  f.Send(10, 1, "a", "ab\xc3\xa9\xc3\xa9");  // "abéé": é is 2 bytes.
  auto batch = f.store->ReadOutbox("", 100);
  REQUIRE(batch.ok());
  CHECK(batch->records.back().update.preview == "ab\xc3\xa9");
  f.Send(10, 1, "b", "abc\xc3\xa9");
  batch = f.store->ReadOutbox("", 100);
  CHECK(batch->records.back().update.preview == "abc");
}

TEST_CASE("outbox reads page through records in write order and accept only valid positions") {
  StoreFixture f;
  f.Create(10, 1, {2, 3, 4});
  f.Create(5, 1, {2});  // A conversation with a smaller id, written later.
  for (int i = 0; i < 5; ++i) f.Send(i % 2 ? 10 : 5, 1, "m" + std::to_string(i), "x");
  std::vector<std::string> all;
  std::vector<uint64_t> convs;
  std::string position;
  for (int guard = 0; guard < 100; ++guard) {
    auto batch = f.store->ReadOutbox(position, 3);
    REQUIRE(batch.ok());
    if (batch->records.empty()) break;
    for (auto& r : batch->records) {
      all.push_back(r.position);
      convs.push_back(r.update.conv_id);
    }
    position = batch->next_position;
  }
  CHECK(all.size() == 4 + 2 + 3 * 2 + 2 * 4);
  CHECK(std::is_sorted(all.begin(), all.end()));
  // Write order, not conversation order: conversation 10's creation comes first.
  CHECK(convs.front() == 10);
  CHECK(convs[4] == 5);
  // Reading again from the end finds nothing new; a new send appears after the position.
  CHECK(f.store->ReadOutbox(position, 3)->records.empty());
  f.Send(5, 1, "later", "x");
  auto later = f.store->ReadOutbox(position, 10);
  REQUIRE(later.ok());
  CHECK(later->records.size() == 2);
  CHECK(f.store->ReadOutbox("junk", 3).status().field() == "from_position");
  CHECK(f.store->ReadOutbox("", 0).status().field() == "limit");
  CHECK(f.store->DeleteOutbox({"junk"}).field() == "positions");
}

TEST_CASE("the outbox sequence continues after a reopen") {
  StoreFixture f;
  f.Create(10, 1, {2});
  auto before = f.store->ReadOutbox("", 100);
  REQUIRE(before.ok());
  std::string last = before->records.back().position;
  f.Reopen();
  f.Send(10, 1, "a", "x");
  auto after = f.store->ReadOutbox("", 100);
  REQUIRE(after.ok());
  CHECK(after->records.back().position > last);
}

TEST_CASE("a batch of sends writes once, in order, and answers each send like SendMessage") {
  ShardLimits limits;
  limits.max_send_batch = 8;
  StoreFixture f(limits);
  f.Create(10, 1, {2});
  f.Create(20, 2, {3});
  CHECK(f.Send(10, 1, "early", "before the batch") == 1);
  std::vector<SendMessageRequest> batch = {
      {10, 1, "a", "one"},
      {20, 2, "a", "other conversation"},
      {10, 2, "a", "two"},
      {10, 9, "x", "not a member"},
      {10, 1, "early", "retry of a send before the batch"},
      {10, 1, "a", "repeat of the first send of this batch"},
      {10, 1, "", "no client id"},
      {10, 1, "b", "three"},
  };
  auto results = f.store->SendMessages(batch);
  REQUIRE(results.size() == batch.size());
  REQUIRE(results[0].ok());
  CHECK(results[0]->seq == 2);
  CHECK_FALSE(results[0]->duplicate);
  REQUIRE(results[1].ok());
  CHECK(results[1]->seq == 1);
  REQUIRE(results[2].ok());
  CHECK(results[2]->seq == 3);
  CHECK(results[3].status().code() == ErrorCode::kPermissionDenied);
  REQUIRE(results[4].ok());
  CHECK(results[4]->seq == 1);
  CHECK(results[4]->duplicate);
  REQUIRE(results[5].ok());
  CHECK(results[5]->seq == 2);
  CHECK(results[5]->duplicate);
  CHECK(results[6].status().field() == "client_msg_id");
  REQUIRE(results[7].ok());
  CHECK(results[7]->seq == 4);

  // Stored as sent, and the conversation continues after them (also after a reopen).
  auto two = f.store->GetMessage(10, 3);
  REQUIRE(two.ok());
  CHECK(two->body == "two");
  CHECK(two->sender_id == 2);
  CHECK(f.Send(10, 1, "c", "four") == 5);
  f.Reopen();
  CHECK(f.Send(10, 1, "d", "five") == 6);
  CHECK(f.Send(20, 2, "b", "second") == 2);
  // One outbox record per member and message: conversation 10 has 2 members, 20 has 2.
  auto outbox = f.store->ReadOutbox("", 1000);
  REQUIRE(outbox.ok());
  size_t message_records = 0;
  for (const auto& record : outbox->records) {
    message_records += record.update.kind == InboxUpdateKind::kMessage;
  }
  CHECK(message_records == 2 * 8);  // 6 sends to 10 and 2 to 20, two members each.

  std::vector<SendMessageRequest> too_many(9, SendMessageRequest{10, 1, "z", "x"});
  for (auto& result : f.store->SendMessages(too_many)) {
    CHECK(result.status().field() == "requests");
  }
}

TEST_CASE("cache-only reads answer point reads from memory or say would-block, and scans would-block unless the history tail cache holds the page") {
  StoreFixture f;
  f.Create(10, 1, {2});
  for (int i = 1; i <= 20; ++i) f.Send(10, 1, "m" + std::to_string(i), "body");
  {
    // Still in the memtable: served from memory.
    CacheOnlyReads memory_only;
    REQUIRE(f.store->GetMessage(10, 3).ok());
  }
  // On disk only, with a cold block cache.
  REQUIRE(f.store->CompactAll().ok());
  f.Reopen();
  HistoryQuery page{10, Direction::kNewestFirst, 0, std::nullopt, 10};
  {
    CacheOnlyReads memory_only;
    { CacheOnlyReads nested; }
    // Leaving the nested scope keeps the outer one in force.
    CHECK(f.store->GetMessage(10, 3).status().code() == ErrorCode::kWouldBlock);
    CHECK(f.store->ReadHistory(page).status().code() == ErrorCode::kWouldBlock);
  }
  // Outside every scope a read goes to the disk (and warms the cache); the same reads then come
  // from memory.
  REQUIRE(f.store->GetMessage(10, 3).ok());
  REQUIRE(f.store->ReadHistory(page).ok());
  REQUIRE(f.store->GetMessage(10, 99).status().code() == ErrorCode::kNotFound);
  {
    CacheOnlyReads memory_only;
    auto message = f.store->GetMessage(10, 3);
    REQUIRE(message.ok());
    CHECK(message->body == "body");
    // Scans are never memory-only, warm or not (decision 0011): RocksDB 7.8 can skip a file's
    // keys in a memory-only scan and still say OK. The page read above filled the history
    // tail cache (decision 0014): the same page, and any page inside it, comes from there;
    // pages beyond it, and oldest-first pages, would block.
    auto cached = f.store->ReadHistory(page);
    REQUIRE(cached.ok());
    REQUIRE(cached->messages.size() == 10);
    CHECK(cached->messages.front().seq == 20);
    CHECK(cached->messages.back().seq == 11);
    CHECK(cached->next_cursor_seq == 11);
    HistoryQuery inside{10, Direction::kNewestFirst, 16, std::nullopt, 5};
    auto inner = f.store->ReadHistory(inside);
    REQUIRE(inner.ok());
    CHECK(inner->messages.front().seq == 15);
    CHECK(inner->messages.back().seq == 11);
    HistoryQuery beyond{10, Direction::kNewestFirst, 16, std::nullopt, 6};
    CHECK(f.store->ReadHistory(beyond).status().code() == ErrorCode::kWouldBlock);
    HistoryQuery oldest{10, Direction::kOldestFirst, 0, std::nullopt, 5};
    CHECK(f.store->ReadHistory(oldest).status().code() == ErrorCode::kWouldBlock);
    InboxQuery inbox;
    inbox.user_id = 2;
    CHECK(f.store->ListInbox(inbox).status().code() == ErrorCode::kWouldBlock);
    // A miss is answered from memory too (Bloom filters, the conversation's cached row):
    // not-found, not would-block.
    CHECK(f.store->GetMessage(10, 99).status().code() == ErrorCode::kNotFound);
  }
}

}  // namespace
}  // namespace scrollback
