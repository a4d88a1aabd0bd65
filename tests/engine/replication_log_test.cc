// The shard's log for replication: a replica made from a checkpoint and fed the primary's log
// ends identical to the primary; out-of-order batches are refused; a log that is gone is a
// log-gap, never a silent skip.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "test_util.h"

namespace scrollback {
namespace {

using testing::StoreFixture;

// Opens the shard copy in `dir` (a checkpoint) with the primary's options.
std::unique_ptr<ShardStore> OpenCopy(const ShardOptions& options, const std::string& dir) {
  auto opened = ShardStore::Open(options, dir);
  INFO(opened.status().ToString());
  REQUIRE(opened.ok());
  return std::move(opened).value();
}

// Feeds `replica` the primary's log from its next lsn until it has caught up; returns the
// number of batches applied.
size_t CatchUp(ShardStore& primary, ShardStore& replica, size_t max_bytes = 4096) {
  size_t applied = 0;
  for (int rounds = 0; rounds < 10'000; ++rounds) {
    if (replica.LatestSequence() == primary.LatestSequence()) return applied;
    auto chunk = primary.ReadLog(replica.LatestSequence() + 1, max_bytes);
    INFO(chunk.status().ToString());
    REQUIRE(chunk.ok());
    REQUIRE_FALSE(chunk->batches.empty());
    for (const LogBatch& batch : chunk->batches) {
      Status status = replica.ApplyLog(batch);
      INFO(status.ToString());
      REQUIRE(status.ok());
      ++applied;
    }
  }
  FAIL("the replica never caught up");
  return applied;
}

// A mixed workload: conversations, messages, an edit, a delete, inbox updates and reads.
void Work(StoreFixture& f, uint64_t base) {
  f.Create(base, 1, {2, 3}, "conv " + std::to_string(base));
  for (int i = 0; i < 20; ++i) f.Send(base, 1 + i % 3, "m" + std::to_string(i), "hello");
  REQUIRE(f.store->EditMessage(base, 2, 2, "edited").ok());
  REQUIRE(f.store->DeleteMessage(base, 3, 3).ok());
  auto outbox = f.store->ReadOutbox("", 1000);
  REQUIRE(outbox.ok());
  std::vector<InboxUpdate> updates;
  std::vector<std::string> done;
  for (auto& record : outbox->records) {
    updates.push_back(record.update);
    done.push_back(record.position);
  }
  for (const Status& status : f.store->ApplyInboxUpdates(updates)) REQUIRE(status.ok());
  REQUIRE(f.store->DeleteOutbox(done).ok());
}

TEST_CASE("a replica from a checkpoint fed the primary's log is identical to it") {
  StoreFixture f;
  Work(f, 10);
  auto lsn = f.store->CreateCheckpoint(f.dir.Sub("replica"));
  INFO(lsn.status().ToString());
  REQUIRE(lsn.ok());
  CHECK(*lsn == f.store->LatestSequence());
  auto replica = OpenCopy(f.options, f.dir.Sub("replica"));
  CHECK(replica->LatestSequence() == *lsn);

  Work(f, 20);
  Work(f, 30);
  const size_t applied = CatchUp(*f.store, *replica);
  CHECK(applied > 10);
  auto primary_sum = f.store->Checksum();
  auto replica_sum = replica->Checksum();
  REQUIRE(primary_sum.ok());
  REQUIRE(replica_sum.ok());
  CHECK(replica_sum->lsn == primary_sum->lsn);
  CHECK(replica_sum->keys == primary_sum->keys);
  CHECK(replica_sum->checksum == primary_sum->checksum);

  // Reads on the replica see what was applied, including conversation state it had cached.
  auto conv = replica->GetConversation(10);
  REQUIRE(conv.ok());
  const uint64_t before = conv->last_seq;
  f.Send(10, 1, "late", "after the catch-up");
  CatchUp(*f.store, *replica);
  auto later = replica->GetConversation(10);
  REQUIRE(later.ok());
  CHECK(later->last_seq == before + 1);
  auto message = replica->GetMessage(10, before + 1);
  REQUIRE(message.ok());
  CHECK(message->body == "after the catch-up");
}

TEST_CASE("checksums differ when one copy lacks a write") {
  StoreFixture f;
  Work(f, 10);
  REQUIRE(f.store->CreateCheckpoint(f.dir.Sub("replica")).ok());
  auto replica = OpenCopy(f.options, f.dir.Sub("replica"));
  f.Send(10, 1, "extra", "only on the primary");
  CHECK(f.store->Checksum()->checksum != replica->Checksum()->checksum);
  CatchUp(*f.store, *replica);
  CHECK(f.store->Checksum()->checksum == replica->Checksum()->checksum);
}

TEST_CASE("a log batch out of order is refused and nothing is applied") {
  StoreFixture f;
  Work(f, 10);
  REQUIRE(f.store->CreateCheckpoint(f.dir.Sub("replica")).ok());
  auto replica = OpenCopy(f.options, f.dir.Sub("replica"));
  const uint64_t start = replica->LatestSequence();
  f.Send(10, 1, "a", "one");
  f.Send(10, 1, "b", "two");
  auto chunk = f.store->ReadLog(start + 1, 1 << 20);
  REQUIRE(chunk.ok());
  REQUIRE(chunk->batches.size() == 2);
  const auto before = replica->Checksum();

  Status skipped_ahead = replica->ApplyLog(chunk->batches[1]);
  CHECK(skipped_ahead.code() == ErrorCode::kFailedPrecondition);
  LogBatch lying = chunk->batches[0];
  lying.count += 1;  // Claims more operations than its data holds.
  CHECK(replica->ApplyLog(lying).code() == ErrorCode::kInvalidArgument);
  CHECK(replica->LatestSequence() == start);
  CHECK(replica->Checksum()->checksum == before->checksum);

  // In order it applies; a repeat is skipped.
  REQUIRE(replica->ApplyLog(chunk->batches[0]).ok());
  REQUIRE(replica->ApplyLog(chunk->batches[0]).ok());
  REQUIRE(replica->ApplyLog(chunk->batches[1]).ok());
  CHECK(replica->Checksum()->checksum == f.store->Checksum()->checksum);
}

TEST_CASE("reading the log from a position whose WAL is gone is a log gap") {
  StoreFixture f;
  // A store that never kept a WAL archive: a flushed WAL is deleted at once.
  f.options.wal_ttl_seconds = 0;
  f.options.wal_size_limit_mb = 0;
  f.store = OpenCopy(f.options, f.dir.Sub("no-archive"));
  Work(f, 10);
  const uint64_t early = 1;
  REQUIRE(f.store->Flush().ok());
  Work(f, 20);
  REQUIRE(f.store->Flush().ok());
  auto chunk = f.store->ReadLog(early, 1 << 20);
  INFO(chunk.status().ToString());
  REQUIRE_FALSE(chunk.ok());
  CHECK(chunk.status().code() == ErrorCode::kLogGap);
  // Past the end: nothing, not an error.
  auto beyond = f.store->ReadLog(f.store->LatestSequence() + 1, 1 << 20);
  REQUIRE(beyond.ok());
  CHECK(beyond->batches.empty());
}

TEST_CASE("reading the log returns whole batches within the byte bound, at least one") {
  StoreFixture f;
  Work(f, 10);
  auto all = f.store->ReadLog(1, 1 << 30);
  REQUIRE(all.ok());
  REQUIRE(all->batches.size() > 5);
  CHECK(all->next_lsn == f.store->LatestSequence() + 1);
  for (size_t i = 1; i < all->batches.size(); ++i) {
    CHECK(all->batches[i].first_lsn == all->batches[i - 1].first_lsn + all->batches[i - 1].count);
  }
  auto one = f.store->ReadLog(1, 1);
  REQUIRE(one.ok());
  CHECK(one->batches.size() == 1);
  // From the middle of a batch: the batch holding the position comes back whole.
  const LogBatch& second = all->batches[1];
  if (second.count > 1) {
    auto middle = f.store->ReadLog(second.first_lsn + 1, 1);
    REQUIRE(middle.ok());
    REQUIRE(middle->batches.size() == 1);
    CHECK(middle->batches[0].first_lsn == second.first_lsn);
  }
}

TEST_CASE("a reader that keeps pulling from where it stopped tails the log as it grows") {
  StoreFixture primary;
  primary.Create(1, 1, {2}, "tail");
  uint64_t next = 1;
  std::vector<LogBatch> seen;
  // Pull, write, pull again: each pull continues the reader's iterator (the engine keeps it),
  // including across small chunks that end in the middle of what is written.
  for (int round = 0; round < 20; ++round) {
    for (int i = 0; i < 5; ++i) primary.Send(1, 1, "r" + std::to_string(round * 5 + i), "grow");
    while (next <= primary.store->LatestSequence()) {
      auto chunk = primary.store->ReadLog(next, round % 2 == 0 ? 1 : 1 << 20);
      INFO(chunk.status().ToString());
      REQUIRE(chunk.ok());
      REQUIRE_FALSE(chunk->batches.empty());
      REQUIRE(chunk->batches.front().first_lsn <= next);
      for (const LogBatch& batch : chunk->batches) {
        REQUIRE(batch.first_lsn + batch.count > next);
        next = batch.first_lsn + batch.count;
        seen.push_back(batch);
      }
      REQUIRE(chunk->next_lsn == next);
    }
    auto empty = primary.store->ReadLog(next, 1 << 20);
    REQUIRE(empty.ok());
    CHECK(empty->batches.empty());
  }
  CHECK(next == primary.store->LatestSequence() + 1);
  // What was read, applied in order to a copy from before the first message, reproduces it.
  for (size_t i = 1; i < seen.size(); ++i) {
    CHECK(seen[i].first_lsn == seen[i - 1].first_lsn + seen[i - 1].count);
  }
}

TEST_CASE("a copy whose LSN falls inside a write group applies the rest of the group") {
  // A copy that followed one primary (groups B1, B2) and then follows another whose WAL holds
  // B1 + B2 as one group (it applied them in one write): its LSN is inside that group.
  StoreFixture f;
  Work(f, 10);
  REQUIRE(f.store->CreateCheckpoint(f.dir.Sub("r1")).ok());
  REQUIRE(f.store->CreateCheckpoint(f.dir.Sub("r2")).ok());
  auto r1 = OpenCopy(f.options, f.dir.Sub("r1"));
  auto r2 = OpenCopy(f.options, f.dir.Sub("r2"));
  const uint64_t start = r1->LatestSequence();
  f.Send(10, 1, "a", "one");
  f.Send(10, 2, "b", "two");
  auto chunk = f.store->ReadLog(start + 1, 1 << 20);
  REQUIRE(chunk.ok());
  REQUIRE(chunk->batches.size() == 2);
  REQUIRE(r1->ApplyLogBatches(chunk->batches).ok());  // One write: one group in r1's WAL.
  REQUIRE(r2->ApplyLog(chunk->batches[0]).ok());      // r2 stops after B1.

  auto from_r1 = r1->ReadLog(r2->LatestSequence() + 1, 1 << 20);
  REQUIRE(from_r1.ok());
  REQUIRE(from_r1->batches.size() == 1);
  REQUIRE(from_r1->batches[0].first_lsn < r2->LatestSequence() + 1);  // Straddles r2's LSN.
  Status applied = r2->ApplyLogBatches(from_r1->batches);
  INFO(applied.ToString());
  REQUIRE(applied.ok());
  CHECK(r2->LatestSequence() == r1->LatestSequence());
  CHECK(r2->Checksum()->checksum == r1->Checksum()->checksum);
  CHECK(r2->Checksum()->checksum == f.store->Checksum()->checksum);
  auto second = r2->GetMessage(10, r2->GetConversation(10)->last_seq);
  REQUIRE(second.ok());
  CHECK(second->body == "two");
}

}  // namespace
}  // namespace scrollback
