#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace scrollback {
namespace {

using testing::StoreFixture;

// Delivers every pending outbox record to the inbox (the whole ring is one shard here), as the
// fan-out worker does, and returns how many were delivered.
size_t Deliver(ShardStore& store) {
  size_t delivered = 0;
  for (;;) {
    auto batch = store.ReadOutbox("", 100);
    REQUIRE(batch.ok());
    if (batch->records.empty()) return delivered;
    std::vector<std::string> positions;
    for (auto& record : batch->records) {
      REQUIRE(store.ApplyInboxUpdate(record.update).ok());
      positions.push_back(record.position);
    }
    REQUIRE(store.DeleteOutbox(positions).ok());
    delivered += positions.size();
  }
}

std::vector<uint64_t> InboxConvs(ShardStore& store, uint64_t user) {
  auto page = store.ListInbox({user, "", 100});
  REQUIRE(page.ok());
  std::vector<uint64_t> convs;
  for (auto& e : page->entries) convs.push_back(e.conv_id);
  return convs;
}

TEST_CASE("the inbox lists conversations by last activity with preview and unread count") {
  StoreFixture f;
  f.Create(10, 1, {2}, "ten");
  f.clock->Advance(1);
  f.Create(20, 1, {2}, "twenty");
  Deliver(*f.store);
  CHECK(InboxConvs(*f.store, 2) == std::vector<uint64_t>{20, 10});

  f.clock->Advance(1000);
  f.Send(10, 1, "a", "hello from ten");
  f.clock->Advance(1000);
  f.Send(10, 1, "b", "again");
  Deliver(*f.store);
  auto page = f.store->ListInbox({2, "", 10});
  REQUIRE(page.ok());
  REQUIRE(page->entries.size() == 2);
  const InboxEntry& top = page->entries[0];
  CHECK(top.conv_id == 10);
  CHECK(top.title == "ten");
  CHECK(top.preview == "again");
  CHECK(top.last_sender_id == 1);
  CHECK(top.last_seq == 2);
  CHECK(top.unread_count == 2);
  CHECK(page->entries[1].conv_id == 20);
  CHECK(page->entries[1].unread_count == 0);
  // The sender has read their own messages.
  auto sender_view = f.store->GetInboxEntry(1, 10);
  REQUIRE(sender_view.ok());
  CHECK(sender_view->unread_count == 0);
}

TEST_CASE("marking read lowers the unread count and never moves the cursor back") {
  StoreFixture f;
  f.Create(10, 1, {2});
  for (int i = 0; i < 5; ++i) f.Send(10, 1, std::to_string(i), "x");
  Deliver(*f.store);
  CHECK(f.store->GetInboxEntry(2, 10)->unread_count == 5);
  auto read = f.store->MarkRead(2, 10, 3);
  REQUIRE(read.ok());
  CHECK(read->unread_count == 2);
  CHECK(f.store->MarkRead(2, 10, 1)->read_seq == 3);
  auto listed = f.store->ListInbox({2, "", 10});
  CHECK(listed->entries[0].unread_count == 2);
  CHECK(f.store->MarkRead(2, 99, 1).status().code() == ErrorCode::kNotFound);
}

TEST_CASE("an inbox update not newer than the stored one is a no-op") {
  StoreFixture f;
  InboxUpdate update;
  update.user_id = 2;
  update.conv_id = 10;
  update.seq = 5;
  update.activity_ms = 5000;
  update.sender_id = 1;
  update.preview = "five";
  REQUIRE(f.store->ApplyInboxUpdate(update).ok());
  InboxUpdate stale = update;
  stale.seq = 4;
  stale.activity_ms = 9000;
  stale.preview = "four";
  REQUIRE(f.store->ApplyInboxUpdate(stale).ok());
  REQUIRE(f.store->ApplyInboxUpdate(update).ok());  // A repeat is a no-op too.
  auto page = f.store->ListInbox({2, "", 10});
  REQUIRE(page->entries.size() == 1);  // No duplicate listing row.
  CHECK(page->entries[0].preview == "five");
  CHECK(page->entries[0].last_activity_ms == 5000);
}

TEST_CASE("a removed member loses the conversation and late updates do not bring it back") {
  StoreFixture f;
  f.Create(10, 1, {2, 3});
  f.Send(10, 1, "a", "x");
  auto removed_at = f.store->RemoveMembers(10, 1, {3});
  REQUIRE(removed_at.ok());
  Deliver(*f.store);
  CHECK(InboxConvs(*f.store, 3).empty());
  CHECK(f.store->GetInboxEntry(3, 10).status().code() == ErrorCode::kNotFound);
  // A duplicate delivery of the older message update is ignored.
  InboxUpdate late;
  late.user_id = 3;
  late.conv_id = 10;
  late.seq = 1;
  late.activity_ms = 1;
  REQUIRE(f.store->ApplyInboxUpdate(late).ok());
  CHECK(InboxConvs(*f.store, 3).empty());
  // Re-adding brings it back; the others saw the system messages.
  REQUIRE(f.store->AddMembers(10, 1, {3}).ok());
  Deliver(*f.store);
  CHECK(InboxConvs(*f.store, 3) == std::vector<uint64_t>{10});
  CHECK(f.store->GetInboxEntry(2, 10)->last_seq == 3);
}

TEST_CASE("inbox pages continue from the cursor without gaps or repeats") {
  StoreFixture f;
  for (uint64_t conv = 1; conv <= 45; ++conv) {
    f.clock->Advance(10);
    f.Create(conv, 7);
  }
  Deliver(*f.store);
  std::vector<uint64_t> convs;
  std::string cursor;
  for (int guard = 0; guard < 10; ++guard) {
    auto page = f.store->ListInbox({7, cursor, 20});
    REQUIRE(page.ok());
    for (auto& e : page->entries) convs.push_back(e.conv_id);
    if (!page->has_more) break;
    cursor = page->next_cursor;
  }
  REQUIRE(convs.size() == 45);
  for (size_t i = 0; i < convs.size(); ++i) CHECK(convs[i] == 45 - i);
  CHECK(f.store->ListInbox({7, "bad", 20}).status().field() == "cursor");
  CHECK(f.store->ListInbox({7, "", 0}).status().field() == "limit");
}

TEST_CASE("conversations crossing the fan-out limit tell every member") {
  ShardLimits limits;
  limits.fan_out_member_limit = 3;
  StoreFixture f(limits);
  f.Create(10, 1, {2});
  Deliver(*f.store);
  REQUIRE(f.store->AddMembers(10, 1, {3, 4}).ok());  // 4 members: above the limit.
  Deliver(*f.store);
  CHECK_FALSE(f.store->GetInboxEntry(2, 10)->fan_out);
  CHECK_FALSE(f.store->GetInboxEntry(4, 10)->fan_out);
  f.Send(10, 1, "a", "quiet");
  CHECK(Deliver(*f.store) == 0);
  REQUIRE(f.store->RemoveMembers(10, 1, {4}).ok());  // Back to 3: fan-out resumes.
  Deliver(*f.store);
  auto entry = f.store->GetInboxEntry(2, 10);
  CHECK(entry->fan_out);
  CHECK(entry->last_seq == 3);
}

}  // namespace
}  // namespace scrollback

namespace scrollback {
namespace {

TEST_CASE("a batch of inbox updates applies in order, including several for one row") {
  testing::StoreFixture f;
  auto update = [](uint64_t user, uint64_t conv, uint64_t seq, int64_t at) {
    InboxUpdate u;
    u.user_id = user;
    u.conv_id = conv;
    u.seq = seq;
    u.activity_ms = at;
    u.sender_id = 99;
    u.preview = "seq " + std::to_string(seq);
    return u;
  };
  InboxUpdate bad = update(0, 1, 1, 1);  // user 0 is invalid.
  auto statuses = f.store->ApplyInboxUpdates({update(2, 10, 1, 100), update(2, 10, 3, 300),
                                              update(2, 10, 2, 200),  // Older: a no-op.
                                              bad, update(3, 10, 1, 100), update(2, 20, 1, 150)});
  REQUIRE(statuses.size() == 6);
  CHECK(statuses[0].ok());
  CHECK(statuses[2].ok());
  CHECK(statuses[3].field() == "user_id");
  auto page = f.store->ListInbox({2, "", 10});
  REQUIRE(page.ok());
  REQUIRE(page->entries.size() == 2);  // One listing row per conversation, no leftovers.
  CHECK(page->entries[0].conv_id == 10);
  CHECK(page->entries[0].last_seq == 3);
  CHECK(page->entries[0].preview == "seq 3");
  CHECK(page->entries[1].conv_id == 20);
  CHECK(f.store->GetInboxEntry(3, 10)->last_seq == 1);
  std::vector<InboxUpdate> too_many(1001, update(2, 10, 9, 900));
  CHECK(f.store->ApplyInboxUpdates(too_many)[0].field() == "updates");
}

TEST_CASE("updates applied in batches leave exactly the rows one-at-a-time application leaves") {
  // A batch writes each (user, conversation) row pair once, in its final form; the result must
  // not depend on how the updates were grouped. Random streams of messages (some the user's
  // own, which count as read), edits of the newest message, removals and re-joins, in order and
  // with duplicates and stragglers; compared row for row through the shard checksum.
  const uint64_t seed = testing::TestSeed();
  INFO("seed " << seed);
  std::mt19937_64 random(seed);
  for (int round = 0; round < 20; ++round) {
    std::vector<InboxUpdate> updates;
    std::map<std::pair<uint64_t, uint64_t>, uint64_t> next_seq;
    for (int i = 0; i < 300; ++i) {
      InboxUpdate u;
      u.user_id = 1 + random() % 3;
      u.conv_id = 10 + random() % 3;
      uint64_t& seq = next_seq[{u.user_id, u.conv_id}];
      const int what = static_cast<int>(random() % 10);
      if (what < 6 || seq == 0) {
        u.seq = ++seq;
        u.kind = seq == 1 ? InboxUpdateKind::kJoined : InboxUpdateKind::kMessage;
      } else if (what < 8) {
        u.seq = seq;  // An edit of the newest message, or a stale one.
        u.kind = InboxUpdateKind::kChanged;
        u.revision = 1 + static_cast<uint32_t>(random() % 4);
      } else if (what < 9) {
        u.seq = ++seq;
        u.kind = InboxUpdateKind::kRemoved;
      } else {
        u.seq = 1 + random() % seq;  // A duplicate or a straggler: a no-op unless newest.
        u.kind = InboxUpdateKind::kMessage;
      }
      u.sender_id = 1 + random() % 4;  // Sometimes the user's own message.
      // Mostly later with the seq; sometimes the same time as the previous update of the row
      // (a listing row that stays at its key), sometimes earlier (a clock that went back).
      const int64_t usual = 1000 + static_cast<int64_t>(u.seq) * 10;
      const int when = static_cast<int>(random() % 8);
      u.activity_ms = when == 0 ? usual - 10 : when == 1 ? usual - 30 : usual;
      u.preview = "p" + std::to_string(u.seq) + "." + std::to_string(u.revision);
      u.title = "conv " + std::to_string(u.conv_id);
      updates.push_back(u);
    }
    testing::StoreFixture one_by_one, batched;
    for (const InboxUpdate& u : updates) REQUIRE(one_by_one.store->ApplyInboxUpdate(u).ok());
    for (size_t at = 0; at < updates.size();) {
      const size_t n = std::min<size_t>(1 + random() % 60, updates.size() - at);
      std::vector<InboxUpdate> group(updates.begin() + at, updates.begin() + at + n);
      for (const Status& status : batched.store->ApplyInboxUpdates(group)) REQUIRE(status.ok());
      at += n;
    }
    auto expected = one_by_one.store->Checksum();
    auto got = batched.store->Checksum();
    REQUIRE(expected.ok());
    REQUIRE(got.ok());
    INFO("round " << round);
    CHECK(got->keys == expected->keys);
    CHECK(got->checksum == expected->checksum);
    for (uint64_t user = 1; user <= 3; ++user) {
      auto a = one_by_one.store->ListInbox({user, "", 10});
      auto b = batched.store->ListInbox({user, "", 10});
      REQUIRE(a.ok());
      REQUIRE(b.ok());
      REQUIRE(a->entries.size() == b->entries.size());
      for (size_t i = 0; i < a->entries.size(); ++i) {
        CHECK(a->entries[i].conv_id == b->entries[i].conv_id);
        CHECK(a->entries[i].unread_count == b->entries[i].unread_count);
        CHECK(a->entries[i].preview == b->entries[i].preview);
      }
      // The inbox pair invariant (docs/formats.md), in the batched store: one listing row per
      // listed conversation, the one its state row names.
      std::set<uint64_t> listed;
      for (const InboxEntry& e : b->entries) {
        CHECK(listed.insert(e.conv_id).second);
        auto entry = batched.store->GetInboxEntry(user, e.conv_id);
        REQUIRE(entry.ok());
        CHECK(entry->last_seq == e.last_seq);
        CHECK(entry->last_activity_ms == e.last_activity_ms);
      }
    }
  }
}

TEST_CASE("the inbox state cache never changes what is stored, however small") {
  // The same random stream of fan-out batches and mark-reads, applied to a store without the
  // cache and to one whose cache holds 2 rows per stripe (constant eviction), must leave
  // identical shards.
  const uint64_t seed = testing::TestSeed();
  INFO("seed " << seed);
  std::mt19937_64 random(seed);
  testing::StoreFixture uncached, cached;
  for (auto* f : {&uncached, &cached}) {
    f->options.inbox_cache_per_stripe = f == &cached ? 2 : 0;
    f->Reopen();
  }
  std::map<std::pair<uint64_t, uint64_t>, uint64_t> seqs;
  for (int round = 0; round < 200; ++round) {
    std::vector<InboxUpdate> batch;
    const int n = 1 + static_cast<int>(random() % 40);
    for (int i = 0; i < n; ++i) {
      InboxUpdate u;
      u.user_id = 1 + random() % 300;
      u.conv_id = 1 + random() % 4;
      u.seq = ++seqs[{u.user_id, u.conv_id}];
      u.kind = u.seq == 1 ? InboxUpdateKind::kJoined : InboxUpdateKind::kMessage;
      u.sender_id = 1 + random() % 300;
      u.activity_ms = static_cast<int64_t>(1000 * round + i);
      u.preview = "r" + std::to_string(round);
      batch.push_back(u);
    }
    for (auto* f : {&uncached, &cached}) {
      for (const Status& status : f->store->ApplyInboxUpdates(batch)) REQUIRE(status.ok());
    }
    // A few readers catch up: the read position lives in the same state rows.
    for (int r = 0; r < 5; ++r) {
      const uint64_t user = 1 + random() % 300, conv = 1 + random() % 4;
      const uint64_t seq = random() % 10;
      auto a = uncached.store->MarkRead(user, conv, seq);
      auto b = cached.store->MarkRead(user, conv, seq);
      REQUIRE(a.status().code() == b.status().code());
    }
  }
  auto expected = uncached.store->Checksum();
  auto got = cached.store->Checksum();
  REQUIRE(expected.ok());
  REQUIRE(got.ok());
  CHECK(got->keys == expected->keys);
  CHECK(got->checksum == expected->checksum);
}

TEST_CASE("reading an inbox entry while newer fan-out updates land never fails or goes back") {
  testing::StoreFixture f;
  constexpr uint64_t kUser = 2;
  constexpr uint64_t kConv = 10;
  constexpr uint64_t kUpdates = 20'000;
  // Every update moves the listing row (its key holds the activity time) and rewrites the state
  // row that names it: a reader that saw the old state row then looked for the old listing row
  // used to find it deleted and answer corruption.
  auto update = [](uint64_t seq) {
    InboxUpdate u;
    u.user_id = kUser;
    u.conv_id = kConv;
    u.seq = seq;
    u.activity_ms = 1000 + static_cast<int64_t>(seq);
    u.sender_id = 1;
    u.preview = "seq " + std::to_string(seq);
    return u;
  };
  REQUIRE(f.store->ApplyInboxUpdate(update(1)).ok());

  // Catch2 2.x assertions are not thread-safe: each thread only records what it saw, in
  // variables no other thread touches until join(), and this thread asserts afterwards.
  std::atomic<bool> reading{false};
  std::atomic<bool> writing_done{false};
  uint64_t reads = 0;                  // Reader only.
  uint64_t read_failures = 0;          // Reader only.
  std::string first_read_failures;     // Reader only: the first few, for the report.
  uint64_t applied = 1;                // Writer only: the newest seq applied.
  Status write_status = Status::Ok();  // Writer only.

  std::thread reader([&] {
    uint64_t last_seen = 0;
    do {  // At least one read after the last update.
      auto entry = f.store->GetInboxEntry(kUser, kConv);
      ++reads;
      reading.store(true);
      std::string failure;
      if (!entry.ok()) {
        failure = entry.status().ToString();
      } else if (entry->last_seq < last_seen) {
        failure = "last_seq went back from " + std::to_string(last_seen) + " to " +
                  std::to_string(entry->last_seq);
      } else {
        last_seen = entry->last_seq;
      }
      if (!failure.empty() && ++read_failures <= 5) first_read_failures += failure + "; ";
    } while (!writing_done.load());
  });
  std::thread writer([&] {
    while (!reading.load()) std::this_thread::yield();  // Overlap the reads from the start.
    // Bounded by count and, for slow (sanitizer) builds, by time.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    for (uint64_t seq = 2; seq <= kUpdates && std::chrono::steady_clock::now() < deadline; ++seq) {
      Status status = f.store->ApplyInboxUpdates({update(seq)}).front();
      if (!status.ok()) {
        write_status = status;
        break;
      }
      applied = seq;
    }
    writing_done.store(true);
  });
  writer.join();
  reader.join();

  INFO("reads: " << reads << ", updates applied: " << applied);
  INFO("first read failures: " << first_read_failures);
  CHECK(read_failures == 0);
  REQUIRE(write_status.ok());
  CHECK(applied > 1);
  CHECK(reads > 1);
  auto last = f.store->GetInboxEntry(kUser, kConv);
  REQUIRE(last.ok());
  CHECK(last->last_seq == applied);
}

// The inbox row `user` has for `conv`; fails the test if there is none.
InboxEntry RowOf(ShardStore& store, uint64_t user, uint64_t conv) {
  auto entry = store.GetInboxEntry(user, conv);
  INFO(entry.status().ToString());
  REQUIRE(entry.ok());
  return *entry;
}

TEST_CASE("previews follow edits and deletes of the newest message, and only of it") {
  StoreFixture f;
  f.Create(10, 1, {2, 3}, "ten");
  f.Send(10, 1, "a", "first");
  f.Send(10, 1, "b", "a secret");
  Deliver(*f.store);
  CHECK(RowOf(*f.store, 2, 10).preview == "a secret");

  REQUIRE(f.store->EditMessage(10, 2, 1, "a correction").ok());
  Deliver(*f.store);
  for (uint64_t user : {2, 3}) {
    INFO("user " << user);
    InboxEntry row = RowOf(*f.store, user, 10);
    CHECK(row.preview == "a correction");
    CHECK(row.last_seq == 2);
  }
  REQUIRE(f.store->DeleteMessage(10, 2, 1).ok());
  Deliver(*f.store);
  for (uint64_t user : {2, 3}) {
    INFO("user " << user);
    CHECK(RowOf(*f.store, user, 10).preview.empty());
  }
  // An older message is in no preview: editing it queues nothing.
  REQUIRE(f.store->EditMessage(10, 1, 1, "first, edited").ok());
  CHECK(Deliver(*f.store) == 0);
  CHECK(RowOf(*f.store, 2, 10).preview.empty());
}

TEST_CASE("preview changes apply once, in revision order, whatever the delivery order") {
  StoreFixture f;
  f.Create(10, 1, {2}, "ten");
  Deliver(*f.store);
  InboxUpdate message;
  message.user_id = 2;
  message.conv_id = 10;
  message.seq = 5;
  message.kind = InboxUpdateKind::kMessage;
  message.activity_ms = f.clock->NowMs() + 10;
  message.sender_id = 1;
  message.preview = "original";
  message.title = "ten";
  InboxUpdate edited = message;
  edited.kind = InboxUpdateKind::kChanged;
  edited.revision = 1;
  edited.preview = "edited";
  InboxUpdate deleted = edited;
  deleted.revision = 2;
  deleted.preview = "";

  SECTION("in order, with repeats") {
    for (const InboxUpdate& u : {message, edited, edited, deleted, edited, message}) {
      REQUIRE(f.store->ApplyInboxUpdate(u).ok());
    }
    InboxEntry row = RowOf(*f.store, 2, 10);
    CHECK(row.preview.empty());
    CHECK(row.last_seq == 5);
  }
  SECTION("the change before the message it changes") {
    REQUIRE(f.store->ApplyInboxUpdate(edited).ok());
    REQUIRE(f.store->ApplyInboxUpdate(message).ok());  // Late: a no-op.
    InboxEntry row = RowOf(*f.store, 2, 10);
    CHECK(row.preview == "edited");
    CHECK(row.last_seq == 5);
    CHECK(row.unread_count == 5);
  }
  SECTION("message and change in one batch") {
    auto statuses = f.store->ApplyInboxUpdates({message, edited});
    for (const Status& status : statuses) CHECK(status.ok());
    CHECK(RowOf(*f.store, 2, 10).preview == "edited");
  }
  SECTION("a change of a message that is no longer the newest changes nothing") {
    InboxUpdate newer = message;
    newer.seq = 6;
    newer.preview = "newer";
    REQUIRE(f.store->ApplyInboxUpdates({message, newer, edited})[2].ok());
    CHECK(RowOf(*f.store, 2, 10).preview == "newer");
  }
  // The row is listed exactly once, where the message put it.
  auto page = f.store->ListInbox({2, "", 10});
  REQUIRE(page.ok());
  CHECK(page->entries.size() == 1);
}

// A member of a few busy conversations: every update moves a listing row and leaves a
// tombstone where it was. A page that wades through many of them starts a compaction of the
// user's listing rows (at most one per 5 s of the store's clock), and later pages step over
// none. Checked from the node-wide counters (a page past the threshold counts as heavy) and
// from the pages themselves.
TEST_CASE("an inbox page heavy with deleted listing rows gets them cleaned up") {
  for (const uint32_t threshold : {256u, 0u}) {
    DYNAMIC_SECTION("inbox_cleanup_tombstones " << threshold) {
      StoreFixture fx;
      fx.options.resources = StorageResources::Create();
      fx.options.inbox_cleanup_tombstones = threshold;
      fx.Reopen();
      const uint64_t user = 7;
      int64_t activity = 1'700'000'000'000;
      uint64_t seq = 1;
      auto apply = [&](uint64_t conv) {
        InboxUpdate update;
        update.user_id = user;
        update.conv_id = conv;
        update.seq = ++seq;
        update.activity_ms = ++activity;
        update.sender_id = 2;
        update.preview = "m" + std::to_string(seq);
        update.title = "t";
        REQUIRE(fx.store->ApplyInboxUpdate(update).ok());
      };
      for (uint64_t conv = 1; conv <= 50; ++conv) apply(conv);
      auto busy = [&] {  // 2,000 updates of conversations 1..5, 5 last.
        for (uint64_t i = 0; i < 2000; ++i) apply(1 + i % 5);
      };
      auto stats = [&] { return fx.options.resources->InboxCleanup(); };
      // Newest first: 5, 4, .., 1 (the busy ones), then 50, 49, ...
      auto check_page = [&] {
        auto page = fx.store->ListInbox({user, "", 20});
        REQUIRE(page.ok());
        REQUIRE(page->entries.size() == 20);
        for (size_t i = 0; i < 5; ++i) CHECK(page->entries[i].conv_id == 5 - i);
        for (size_t i = 5; i < 20; ++i) CHECK(page->entries[i].conv_id == 50 - (i - 5));
        CHECK(page->entries[0].preview == "m" + std::to_string(seq));
      };
      // Pages until one is not heavy (the compaction runs in the background; bounded wait).
      auto wait_clean = [&] {
        for (int i = 0; i < 400; ++i) {
          const uint64_t heavy = stats().tombstone_heavy_pages;
          check_page();
          if (stats().tombstone_heavy_pages == heavy) return true;
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        return false;
      };
      busy();
      check_page();
      if (threshold == 0) {
        CHECK(stats().tombstone_heavy_pages == 0);
        CHECK(stats().compactions == 0);
        continue;
      }
      CHECK(stats().tombstone_heavy_pages == 1);
      CHECK(stats().compactions == 1);
      CHECK(wait_clean());
      // Busy again within 5 s: heavy pages, no second cleanup yet.
      busy();
      const uint64_t heavy = stats().tombstone_heavy_pages;
      check_page();
      CHECK(stats().tombstone_heavy_pages == heavy + 1);
      CHECK(stats().compactions == 1);
      // 5 s later: the next heavy page cleans up again.
      fx.clock->Advance(5'000);
      check_page();
      CHECK(stats().compactions == 2);
      CHECK(wait_clean());
      CHECK(stats().compaction_failures == 0);
    }
  }
}

}  // namespace
}  // namespace scrollback
