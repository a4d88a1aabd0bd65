// The outbox's stored form (format 3, docs/formats.md): one record per operation and group of
// targets, shrunk as targets are delivered; and the in-place upgrade of a format-2 shard.
#include <rocksdb/db.h>
#include <rocksdb/options.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <vector>

#include "scrollback/engine/keys.h"
#include "scrollback/engine/value_codec.h"
#include "test_util.h"

namespace scrollback {
namespace {

using testing::StoreFixture;

uint64_t StoredKeys(ShardStore& store) {
  auto checksum = store.Checksum();
  REQUIRE(checksum.ok());
  return checksum->keys;
}

std::vector<uint64_t> Targets(const OutboxBatch& batch) {
  std::vector<uint64_t> users;
  for (const OutboxRecord& record : batch.records) users.push_back(record.update.user_id);
  std::sort(users.begin(), users.end());
  return users;
}

TEST_CASE("a send stores one outbox record for all members, read as one update per member") {
  StoreFixture f;
  f.Create(10, 1, {2, 3, 4, 5});
  const uint64_t before = StoredKeys(*f.store);
  f.Send(10, 2, "a", "hello");
  // The message row, its three index rows and one outbox record (format 2 stored five).
  CHECK(StoredKeys(*f.store) - before == 5);
  auto batch = f.store->ReadOutbox("", 100);
  REQUIRE(batch.ok());
  CHECK(batch->records.size() == 5 + 5);  // The creation's `joined` updates, then the send's.
}

TEST_CASE("a partly delivered outbox record keeps the targets still to deliver") {
  StoreFixture f;
  f.Create(10, 1, {2, 3});
  auto created = f.store->ReadOutbox("", 100);
  REQUIRE(created.ok());
  REQUIRE(created->records.size() == 3);
  // Users 1 and 3 got theirs; user 2's delivery failed.
  std::vector<std::string> delivered;
  for (const OutboxRecord& record : created->records) {
    if (record.update.user_id != 2) delivered.push_back(record.position);
  }
  REQUIRE(f.store->DeleteOutbox(delivered).ok());
  auto left = f.store->ReadOutbox("", 100);
  REQUIRE(left.ok());
  REQUIRE(left->records.size() == 1);
  CHECK(left->records[0].update.user_id == 2);
  CHECK(left->records[0].update.kind == InboxUpdateKind::kJoined);
  CHECK(left->records[0].update.conv_id == 10);
  // A retry that starts from the failed target's position reads the same record.
  auto retry = f.store->ReadOutbox(created->records[1].position, 100);
  REQUIRE(retry.ok());
  CHECK(Targets(*retry) == std::vector<uint64_t>{2});
  // Stale positions (of targets already delivered) change nothing.
  REQUIRE(f.store->DeleteOutbox(delivered).ok());
  CHECK(Targets(*f.store->ReadOutbox("", 100)) == std::vector<uint64_t>{2});
  REQUIRE(f.store->DeleteOutbox({left->records[0].position}).ok());
  CHECK(f.store->ReadOutbox("", 100)->records.empty());
}

TEST_CASE("positions from reads before and after a record shrank delete only what was delivered") {
  StoreFixture f;
  f.Create(10, 1, {2, 3});  // One record: `joined` for users 1, 2, 3.
  auto first = f.store->ReadOutbox("", 100);
  REQUIRE(first.ok());
  REQUIRE(first->records.size() == 3);
  auto position_of = [](const OutboxBatch& batch, uint64_t user) {
    for (const OutboxRecord& r : batch.records) {
      if (r.update.user_id == user) return r.position;
    }
    FAIL("no record for user " << user);
    return std::string();
  };
  // User 1 delivered: the record shrinks to {2, 3}.
  REQUIRE(f.store->DeleteOutbox({position_of(*first, 1)}).ok());
  auto second = f.store->ReadOutbox("", 100);
  REQUIRE(second.ok());
  REQUIRE(Targets(*second) == std::vector<uint64_t>{2, 3});
  // User 2 delivered, named with a position of the second read, together with user 1's
  // position of the first read: two targets, as many as the second read counted, yet user 3
  // still waits.
  REQUIRE(f.store->DeleteOutbox({position_of(*first, 1), position_of(*second, 2)}).ok());
  CHECK(Targets(*f.store->ReadOutbox("", 100)) == std::vector<uint64_t>{3});
}

TEST_CASE("a store whose outbox batch could not carry one stored group is refused at open") {
  ShardLimits limits;
  limits.max_outbox_batch = keys::kMaxOutboxTargets - 1;
  testing::TempDir dir;
  ShardOptions options;
  options.limits = limits;
  auto opened = ShardStore::Open(options, dir.Sub("shard"));
  CHECK(opened.status().field() == "max_outbox_batch");
}

TEST_CASE("an operation with more targets than one record holds is stored in parts, read whole") {
  StoreFixture f;
  std::vector<uint64_t> members;
  for (uint64_t user = 2; user <= 300; ++user) members.push_back(user);
  f.Create(10, 1, members);  // 300 `joined` updates: records of 256 and 44.
  auto first = f.store->ReadOutbox("", 100);
  REQUIRE(first.ok());
  CHECK(first->records.size() == keys::kMaxOutboxTargets);  // A record is never split.
  auto second = f.store->ReadOutbox(first->next_position, 100);
  REQUIRE(second.ok());
  CHECK(second->records.size() == 300 - keys::kMaxOutboxTargets);
  std::vector<uint64_t> users = Targets(*first);
  for (uint64_t user : Targets(*second)) users.push_back(user);
  std::sort(users.begin(), users.end());
  CHECK(users.size() == 300);
  CHECK(std::adjacent_find(users.begin(), users.end()) == users.end());
  CHECK(f.store->ReadOutbox(second->next_position, 100)->records.empty());
  // Whole records are added until the next one would pass the limit (256 + 44 > 299).
  auto small = f.store->ReadOutbox("", 299);
  REQUIRE(small.ok());
  CHECK(small->records.size() == keys::kMaxOutboxTargets);
}

// Opens the shard's RocksDB directly (the store closed): the meta row and raw outbox rows.
class RawShard {
 public:
  explicit RawShard(const std::string& path) {
    std::vector<rocksdb::ColumnFamilyDescriptor> families;
    for (const char* name :
         {"default", "conversations", "messages", "indexes", "inbox", "outbox"}) {
      families.emplace_back(name, rocksdb::ColumnFamilyOptions());
    }
    rocksdb::DB* db = nullptr;
    REQUIRE(rocksdb::DB::Open(rocksdb::DBOptions(), path, families, &handles_, &db).ok());
    db_.reset(db);
  }
  ~RawShard() {
    for (auto* handle : handles_) (void)db_->DestroyColumnFamilyHandle(handle);
  }
  codec::ShardMetaRow Meta() {
    std::string value;
    REQUIRE(db_->Get({}, handles_[0], std::string(keys::kShardMetaKey), &value).ok());
    codec::ShardMetaRow meta;
    REQUIRE(codec::DecodeShardMeta(value, &meta).ok());
    return meta;
  }
  void SetFormatVersion(uint32_t version) {
    codec::ShardMetaRow meta = Meta();
    meta.format_version = version;
    REQUIRE(
        db_->Put({}, handles_[0], std::string(keys::kShardMetaKey), codec::EncodeShardMeta(meta))
            .ok());
  }
  void PutOutboxV2(uint64_t outbox_seq, uint64_t user, const InboxUpdate& update) {
    REQUIRE(db_->Put({}, handles_[5], keys::OutboxV2Key(outbox_seq, user).str(),
                     codec::EncodeInboxUpdate(update))
                .ok());
  }

 private:
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::unique_ptr<rocksdb::DB> db_;
};

TEST_CASE("a format-2 shard is upgraded in place: its outbox rows are delivered first") {
  StoreFixture f;
  f.Create(10, 1, {2});
  auto created = f.store->ReadOutbox("", 100);
  REQUIRE(created.ok());
  std::vector<std::string> positions;
  for (const OutboxRecord& record : created->records) positions.push_back(record.position);
  REQUIRE(f.store->DeleteOutbox(positions).ok());
  const std::string path = f.dir.Sub("shard");
  f.store.reset();
  {
    // What a format-2 build left: its meta row and two per-target outbox rows.
    RawShard raw(path);
    raw.SetFormatVersion(2);
    InboxUpdate update;
    update.conv_id = 10;
    update.seq = 7;
    update.activity_ms = 1234;
    update.sender_id = 1;
    update.preview = "from format 2";
    raw.PutOutboxV2(900, 1, update);
    raw.PutOutboxV2(900, 2, update);
  }
  f.Reopen();
  auto pending = f.store->ReadOutbox("", 100);
  REQUIRE(pending.ok());
  REQUIRE(pending->records.size() == 2);
  CHECK(Targets(*pending) == std::vector<uint64_t>{1, 2});
  CHECK(pending->records[0].update.preview == "from format 2");
  CHECK(pending->records[0].update.seq == 7);
  // New records queue behind them, whatever their outbox sequence was.
  f.Send(10, 1, "a", "from format 3");
  auto all = f.store->ReadOutbox("", 100);
  REQUIRE(all.ok());
  REQUIRE(all->records.size() == 4);
  CHECK(all->records[0].update.preview == "from format 2");
  CHECK(all->records[3].update.preview == "from format 3");
  positions.clear();
  for (const OutboxRecord& record : all->records) positions.push_back(record.position);
  REQUIRE(f.store->DeleteOutbox(positions).ok());
  CHECK(f.store->ReadOutbox("", 100)->records.empty());
  // The first write marked the shard format 3, so that a format-2 build refuses it.
  f.store.reset();
  {
    RawShard raw(path);
    CHECK(raw.Meta().format_version == 3);
  }
  f.Reopen();
}

TEST_CASE("a shard of an unknown format version is refused at open") {
  StoreFixture f;
  const std::string path = f.dir.Sub("shard");
  f.store.reset();
  for (uint32_t version : {1u, 4u}) {
    {
      RawShard raw(path);
      raw.SetFormatVersion(version);
    }
    auto opened = ShardStore::Open(f.options, path);
    INFO("format version " << version);
    CHECK(opened.status().code() == ErrorCode::kFailedPrecondition);
  }
}

}  // namespace
}  // namespace scrollback
