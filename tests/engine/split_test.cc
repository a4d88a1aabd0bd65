// Splitting a shard in the engine: the seal fixes the last LSN; each child copy keeps exactly
// its half of every sharded row (and the whole outbox); two copies of the parent at the same LSN
// give identical children.
#include <catch2/catch.hpp>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace scrollback {
namespace {

using testing::StoreFixture;

constexpr uint64_t kConvs = 200;

// Every outbox record of `store`, oldest first.
std::vector<OutboxRecord> ReadWholeOutbox(ShardStore& store) {
  std::vector<OutboxRecord> all;
  std::string position;
  for (;;) {
    auto batch = store.ReadOutbox(position, 1000);
    INFO(batch.status().ToString());
    REQUIRE(batch.ok());
    if (batch->records.empty()) return all;
    for (auto& record : batch->records) all.push_back(std::move(record));
    position = batch->next_position;
  }
}

// Conversations 1..kConvs, each with members 1000+c and 2000+c and three messages, and inbox
// rows for its members (applied from the outbox, which is then left full for the copies).
void Load(StoreFixture& f) {
  for (uint64_t c = 1; c <= kConvs; ++c) {
    f.Create(c, 1000 + c, {2000 + c}, "c" + std::to_string(c));
    for (int i = 0; i < 3; ++i) f.Send(c, 1000 + c, "m" + std::to_string(i), "body");
  }
  std::vector<InboxUpdate> updates;
  for (auto& record : ReadWholeOutbox(*f.store)) updates.push_back(record.update);
  for (size_t at = 0; at < updates.size(); at += 1000) {
    std::vector<InboxUpdate> part(updates.begin() + at,
                                  updates.begin() + std::min(updates.size(), at + 1000));
    for (const Status& status : f.store->ApplyInboxUpdates(part)) REQUIRE(status.ok());
  }
}

std::unique_ptr<ShardStore> OpenChild(ShardOptions options, uint64_t id, TokenRange range,
                                      const std::string& dir) {
  options.shard_id = id;
  options.token_range = range;
  options.create_if_missing = false;
  auto opened = ShardStore::Open(options, dir);
  INFO(opened.status().ToString());
  REQUIRE(opened.ok());
  return std::move(opened).value();
}

TEST_CASE("a sealed store refuses its own writes as unavailable and reports its final lsn") {
  StoreFixture f;
  f.Create(1, 1, {2});
  f.Send(1, 1, "a", "before");
  auto sealed = f.store->Seal();
  REQUIRE(sealed.ok());
  CHECK(*sealed == f.store->LatestSequence());
  CHECK(f.store->sealed());
  auto refused = f.store->SendMessage({1, 1, "b", "after"});
  CHECK(refused.status().code() == ErrorCode::kUnavailable);
  auto pending = ReadWholeOutbox(*f.store);
  REQUIRE_FALSE(pending.empty());
  CHECK(f.store->ApplyInboxUpdates({pending[0].update}).front().code() == ErrorCode::kUnavailable);
  CHECK(f.store->LatestSequence() == *sealed);         // Nothing written.
  CHECK(f.store->GetMessage(1, 1)->body == "before");  // Reads go on.
  f.store->Unseal();
  CHECK(f.Send(1, 1, "b", "after") == 2);
}

TEST_CASE("a seal waits for writes in flight, and no write lands after the sealed lsn") {
  StoreFixture f;
  for (uint64_t c = 1; c <= 4; ++c) f.Create(c, 1);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> acked_after_seal{0};
  std::atomic<bool> is_sealed{false};
  std::vector<std::thread> writers;
  for (uint64_t c = 1; c <= 4; ++c) {
    writers.emplace_back([&, c] {
      for (int i = 0; !stop.load(); ++i) {
        const bool sealed_before = is_sealed.load();
        auto sent = f.store->SendMessage({c, 1, "w" + std::to_string(i), "x"});
        if (sent.ok() && sealed_before) acked_after_seal.fetch_add(1);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto sealed = f.store->Seal();
  is_sealed.store(true);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  stop.store(true);
  for (auto& w : writers) w.join();
  REQUIRE(sealed.ok());
  CHECK(f.store->LatestSequence() == *sealed);
  CHECK(acked_after_seal.load() == 0);
}

TEST_CASE("split copies keep exactly their half of every row, and the whole outbox") {
  StoreFixture f;
  Load(f);
  const uint64_t at = uint64_t{1} << 63;  // The right half starts here.
  auto lsn = f.store->Seal();
  REQUIRE(lsn.ok());
  auto parent_sum = f.store->Checksum();
  REQUIRE(parent_sum.ok());
  const auto left_dir = f.dir.Sub("left"), right_dir = f.dir.Sub("right");
  std::filesystem::remove_all(left_dir);
  std::filesystem::remove_all(right_dir);
  const TokenRange left_range{0, at - 1}, right_range{at, UINT64_MAX};
  auto left_lsn = f.store->CreateSplitCopy(left_dir, 11, left_range, *lsn);
  auto right_lsn = f.store->CreateSplitCopy(right_dir, 12, right_range, *lsn);
  INFO(left_lsn.status().ToString() << " / " << right_lsn.status().ToString());
  REQUIRE(left_lsn.ok());
  REQUIRE(right_lsn.ok());
  CHECK(*left_lsn > *lsn);
  CHECK(*left_lsn == *right_lsn);  // The same cut on either side: the same number of LSNs.

  auto left = OpenChild(f.options, 11, left_range, left_dir);
  auto right = OpenChild(f.options, 12, right_range, right_dir);
  int left_convs = 0, right_convs = 0;
  for (uint64_t c = 1; c <= kConvs; ++c) {
    const bool in_left = TokenOf(c) < at;
    ShardStore& owner = in_left ? *left : *right;
    ShardStore& other = in_left ? *right : *left;
    (in_left ? left_convs : right_convs)++;
    INFO("conv " << c);
    HistoryQuery newest;
    newest.conv_id = c;
    auto history = owner.ReadHistory(newest);
    REQUIRE(history.ok());
    CHECK(history->messages.size() == 3);
    // The other half has nothing of it (it would answer not-owner; the rows are gone too).
    CHECK(other.GetConversation(c).status().code() == ErrorCode::kNotOwner);
    for (uint64_t user : {1000 + c, 2000 + c}) {
      ShardStore& home = TokenOf(user) < at ? *left : *right;
      CHECK(home.GetInboxEntry(user, c).ok());
    }
  }
  CHECK(left_convs > 0);
  CHECK(right_convs > 0);

  // Sharded rows are split without loss or duplication; the outbox and the meta rows (meta,
  // epochs) are in both.
  auto left_sum = left->Checksum();
  auto right_sum = right->Checksum();
  REQUIRE(left_sum.ok());
  REQUIRE(right_sum.ok());
  const size_t outbox = ReadWholeOutbox(*f.store).size();
  REQUIRE(outbox > 0);
  CHECK(ReadWholeOutbox(*left).size() == outbox);
  CHECK(ReadWholeOutbox(*right).size() == outbox);
  const uint64_t unsharded = left_sum->keys + right_sum->keys - parent_sum->keys;
  // Each child repeats the unsharded rows (meta row, outbox records): what the two hold beyond
  // the parent is exactly one set of them.
  // One stored outbox row per operation (a create and three sends per conversation).
  CHECK(unsharded == 1 + kConvs * 4);
  // The children take writes where they own the key.
  uint64_t left_conv = 0;
  for (uint64_t c = 1; c <= kConvs && left_conv == 0; ++c) {
    if (TokenOf(c) < at) left_conv = c;
  }
  auto sent = left->SendMessage({left_conv, 1000 + left_conv, "after", "split"});
  INFO(sent.status().ToString());
  REQUIRE(sent.ok());
  CHECK(sent->seq == 4);
}

TEST_CASE("two copies of a shard at the same lsn give identical children") {
  StoreFixture f;
  Load(f);
  auto lsn = f.store->Seal();
  REQUIRE(lsn.ok());
  // A second copy of the parent, as a replica holds it: a checkpoint at the same lsn.
  const auto replica_dir = f.dir.Sub("replica");
  std::filesystem::remove_all(replica_dir);
  REQUIRE(f.store->CreateCheckpoint(replica_dir).ok());
  auto replica = OpenChild(f.options, f.options.shard_id, f.options.token_range, replica_dir);
  REQUIRE(replica->LatestSequence() == *lsn);
  const uint64_t at = TokenOf(77);  // A conversation's own token: it starts the right half.
  const TokenRange right_range{at, UINT64_MAX};
  std::vector<ShardChecksum> sums;
  for (ShardStore* copy : {f.store.get(), replica.get()}) {
    const std::string dir = f.dir.Sub("child-" + std::to_string(sums.size()));
    std::filesystem::remove_all(dir);
    auto child_lsn = copy->CreateSplitCopy(dir, 7, right_range, *lsn);
    REQUIRE(child_lsn.ok());
    auto child = OpenChild(f.options, 7, right_range, dir);
    CHECK(child->LatestSequence() == *child_lsn);
    auto sum = child->Checksum();
    REQUIRE(sum.ok());
    sums.push_back(*sum);
    CHECK(child->GetConversation(77).ok());
  }
  CHECK(sums[0].lsn == sums[1].lsn);
  CHECK(sums[0].keys == sums[1].keys);
  CHECK(sums[0].checksum == sums[1].checksum);
}

TEST_CASE("a merged copy holds both halves' rows and both outboxes, the same from any copies") {
  StoreFixture f;
  Load(f);
  const uint64_t at = uint64_t{1} << 63;
  const TokenRange left_range{0, at - 1}, right_range{at, UINT64_MAX};
  auto lsn = f.store->Seal();
  REQUIRE(lsn.ok());
  std::vector<std::unique_ptr<ShardStore>> halves;
  for (auto [id, range] :
       {std::pair{uint64_t{11}, left_range}, std::pair{uint64_t{12}, right_range}}) {
    const std::string dir = f.dir.Sub("half-" + std::to_string(id));
    std::filesystem::remove_all(dir);
    REQUIRE(f.store->CreateSplitCopy(dir, id, range, *lsn).ok());
    halves.push_back(OpenChild(f.options, id, range, dir));
  }
  // Each half moves on by itself: new conversations, sends, outbox records.
  for (uint64_t c = 1001; c <= 1040; ++c) {
    ShardStore& home = TokenOf(c) < at ? *halves[0] : *halves[1];
    REQUIRE(home.CreateConversation({c, 5000 + c, {6000 + c}, "later"}).ok());
    REQUIRE(home.SendMessage({c, 5000 + c, "x", "after the split"}).ok());
  }
  const size_t outbox = ReadWholeOutbox(*halves[0]).size() + ReadWholeOutbox(*halves[1]).size();
  // Second copies of both halves, as replicas hold them.
  std::vector<std::unique_ptr<ShardStore>> copies;
  for (size_t h = 0; h < 2; ++h) {
    const std::string dir = f.dir.Sub("copy-" + std::to_string(h));
    std::filesystem::remove_all(dir);
    REQUIRE(halves[h]->CreateCheckpoint(dir).ok());
    copies.push_back(OpenChild(f.options, halves[h]->shard_id(), halves[h]->token_range(), dir));
  }
  std::vector<ShardChecksum> sums;
  for (auto* pair : {&halves, &copies}) {
    ShardStore& left = *(*pair)[0];
    ShardStore& right = *(*pair)[1];
    const std::string dir = f.dir.Sub("merged-" + std::to_string(sums.size()));
    std::filesystem::remove_all(dir);
    auto merged_lsn =
        left.CreateMergedCopy(dir, 20, left.LatestSequence(), right, right.LatestSequence());
    INFO(merged_lsn.status().ToString());
    REQUIRE(merged_lsn.ok());
    auto merged = OpenChild(f.options, 20, TokenRange::Full(), dir);
    CHECK(merged->LatestSequence() == *merged_lsn);
    for (uint64_t c = 1; c <= kConvs; ++c) {
      INFO("conversation " << c);
      HistoryQuery newest;
      newest.conv_id = c;
      REQUIRE(merged->ReadHistory(newest)->messages.size() == 3);
    }
    for (uint64_t c = 1001; c <= 1040; ++c)
      CHECK(merged->GetMessage(c, 1)->body == "after the split");
    // Every record of both outboxes, none overwritten by the other's numbering.
    CHECK(ReadWholeOutbox(*merged).size() == outbox);
    // It takes writes anywhere in the union of the ranges.
    REQUIRE(merged->SendMessage({1, 1001, "merged", "hello"}).ok());
    auto sum = merged->Checksum();
    REQUIRE(sum.ok());
    sums.push_back(*sum);
  }
  CHECK(sums[0].checksum == sums[1].checksum);
  CHECK(sums[0].keys == sums[1].keys);
  CHECK(sums[0].lsn == sums[1].lsn);
  // Not adjacent, or not at the LSN asked for: refused, nothing left behind.
  const std::string dir = f.dir.Sub("refused");
  std::filesystem::remove_all(dir);
  CHECK(halves[1]
            ->CreateMergedCopy(dir, 21, halves[1]->LatestSequence(), *halves[0],
                               halves[0]->LatestSequence())
            .status()
            .code() == ErrorCode::kInvalidArgument);
  CHECK(halves[0]
            ->CreateMergedCopy(dir, 21, halves[0]->LatestSequence(), *halves[1],
                               halves[1]->LatestSequence() - 1)
            .status()
            .code() == ErrorCode::kFailedPrecondition);
  CHECK_FALSE(std::filesystem::exists(dir));
}

TEST_CASE("a split copy refuses a store not at the split lsn, and a range that is no split") {
  StoreFixture f;
  Load(f);
  const std::string dir = f.dir.Sub("child");
  std::filesystem::remove_all(dir);
  const uint64_t lsn = f.store->LatestSequence();
  auto wrong = f.store->CreateSplitCopy(dir, 5, TokenRange{0, 100}, lsn - 1);
  CHECK(wrong.status().code() == ErrorCode::kFailedPrecondition);
  CHECK_FALSE(std::filesystem::exists(dir));  // Nothing left behind.
  CHECK(f.store->CreateSplitCopy(dir, 5, TokenRange::Full(), lsn).status().code() ==
        ErrorCode::kInvalidArgument);
  CHECK(f.store->CreateSplitCopy(dir, 5, TokenRange{10, 5}, lsn).status().code() ==
        ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace scrollback
