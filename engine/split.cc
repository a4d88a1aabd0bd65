// Splitting and merging shards (docs/resharding.md): the seal that fixes a shard's last LSN, the
// copy each split child starts from (a checkpoint cut to the child's range by one deterministic
// write), and the copy a merged shard starts from (the left's checkpoint plus the right's rows).
#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/utilities/checkpoint.h>
#include <rocksdb/write_batch.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "shard_store_impl.h"

namespace scrollback::engine_internal {
namespace {

// The first key of token `token` in a sharded column family: keys begin with the big-endian
// token (docs/formats.md, Conventions).
std::string TokenKey(uint64_t token) {
  std::string key(8, '\0');
  keys::PutBigEndian64(key.data(), token);
  return key;
}

// A key above every sharded key: 8 bytes of token, 8 of id and one row tag, all 0xff. Real keys
// with token 2^64-1 carry a tag below 0xff at byte 17, so they sort before it.
std::string AboveEveryKey() { return std::string(keys::kPrefixSize + 1, '\xff'); }

// The meta row of `copy` (the source shard's) with `shard_id` and `range`, staged in `batch`.
Status StageMetaRow(rocksdb::DB& db, rocksdb::ColumnFamilyHandle* meta_cf, uint64_t shard_id,
                    TokenRange range, rocksdb::WriteBatch& batch) {
  std::string value;
  const rocksdb::Slice key(keys::kShardMetaKey.data(), keys::kShardMetaKey.size());
  SB_RETURN_IF_ERROR(FromRocksDb(db.Get(rocksdb::ReadOptions(), meta_cf, key, &value),
                                 "read the copy's meta row"));
  codec::ShardMetaRow meta;
  SB_RETURN_IF_ERROR(codec::DecodeShardMeta(value, &meta));
  meta.shard_id = shard_id;
  meta.token_first = range.first;
  meta.token_last = range.last;
  return FromRocksDb(batch.Put(meta_cf, key, codec::EncodeShardMeta(meta)), "stage meta row");
}

}  // namespace

struct ShardStoreImpl::CopyDb {
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  ~CopyDb() {
    if (!db) return;
    for (auto* handle : handles) (void)db->DestroyColumnFamilyHandle(handle);
  }
};

Result<std::unique_ptr<ShardStoreImpl::CopyDb>> ShardStoreImpl::OpenCheckpointCopy(
    const std::string& dir, uint64_t expected_lsn, const char* what) {
  std::error_code ec;
  auto fail = [&](Status status) -> Result<std::unique_ptr<CopyDb>> {
    std::filesystem::remove_all(dir, ec);
    return status;
  };
  auto checkpoint_lsn = CreateCheckpoint(dir);
  if (!checkpoint_lsn.ok()) return fail(checkpoint_lsn.status());
  if (*checkpoint_lsn != expected_lsn) {
    return fail(Status::FailedPrecondition("shard " + std::to_string(options_.shard_id) +
                                           " is at lsn " + std::to_string(*checkpoint_lsn) +
                                           ", the " + what + " is at lsn " +
                                           std::to_string(expected_lsn)));
  }
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = false;
  db_options.max_open_files = 64;
  if (env_) db_options.env = env_.get();
  auto copy = std::make_unique<CopyDb>();
  rocksdb::DB* raw_db = nullptr;
  Status opened =
      FromRocksDb(rocksdb::DB::Open(db_options, dir, ColumnFamilyDescriptors(*resources_),
                                    &copy->handles, &raw_db),
                  std::string("open the ") + what + " copy at " + dir);
  if (!opened.ok()) return fail(opened);
  copy->db.reset(raw_db);
  return copy;
}

Result<uint64_t> ShardStoreImpl::Seal() {
  sealed_.store(true);
  // Writes that passed the gate before the seal commit (or fail) in microseconds: wait for them.
  while (writes_in_flight_.load() != 0) std::this_thread::yield();
  const uint64_t final_lsn = db_->GetLatestSequenceNumber();
  seal_complete_.store(true);
  return final_lsn;
}

Result<uint64_t> ShardStoreImpl::CreateSplitCopy(const std::string& dir, uint64_t child_shard_id,
                                                 TokenRange child_range, uint64_t expected_lsn) {
  const TokenRange parent = options_.token_range;
  if (child_range.first > child_range.last || child_range.first < parent.first ||
      child_range.last > parent.last || child_range == parent) {
    return Status::InvalidArgument(
        "child_range", "a split child's range must be a strict part of [" +
                           std::to_string(parent.first) + ", " + std::to_string(parent.last) + "]");
  }
  std::error_code ec;
  auto cleanup = [&] { std::filesystem::remove_all(dir, ec); };
  auto opened = OpenCheckpointCopy(dir, expected_lsn, "split");
  if (!opened.ok()) return opened.status();
  std::unique_ptr<CopyDb> copy = std::move(opened).value();
  rocksdb::DB* db = copy->db.get();
  const auto& handles = copy->handles;

  // The cut: the parts of the parent's range outside the child's, in every sharded column
  // family, and the child's meta row (the parent's, with the child's id and range).
  rocksdb::WriteBatch cut;
  Status staged = Status::Ok();
  for (Cf cf : {kConversationsCf, kMessagesCf, kIndexesCf, kInboxCf}) {
    if (child_range.first > parent.first) {
      staged = FromRocksDb(
          cut.DeleteRange(handles[cf], TokenKey(parent.first), TokenKey(child_range.first)),
          "stage split cut");
      if (!staged.ok()) break;
    }
    if (child_range.last < parent.last) {
      const std::string end =
          parent.last == UINT64_MAX ? AboveEveryKey() : TokenKey(parent.last + 1);
      staged = FromRocksDb(cut.DeleteRange(handles[cf], TokenKey(child_range.last + 1), end),
                           "stage split cut");
      if (!staged.ok()) break;
    }
  }
  if (staged.ok()) staged = StageMetaRow(*db, handles[kMetaCf], child_shard_id, child_range, cut);
  if (staged.ok()) {
    rocksdb::WriteOptions write_options;
    write_options.sync = true;
    staged = FromRocksDb(db->Write(write_options, &cut), "write split cut");
  }
  // The copy shares the parent's SST files (hard links): drop the ones that hold only keys the
  // cut removed, so the child neither stores nor, moved later, ships them. Visible data and
  // sequence numbers stay as the cut left them (those keys are deleted already), so every copy
  // stays identical; files straddling a boundary go at the next compaction.
  for (Cf cf : {kConversationsCf, kMessagesCf, kIndexesCf, kInboxCf}) {
    if (!staged.ok()) break;
    std::vector<std::pair<std::string, std::string>> removed;
    if (child_range.first > parent.first) {
      removed.emplace_back(TokenKey(parent.first), TokenKey(child_range.first));
    }
    if (child_range.last < parent.last) {
      removed.emplace_back(TokenKey(child_range.last + 1),
                           parent.last == UINT64_MAX ? AboveEveryKey() : TokenKey(parent.last + 1));
    }
    for (const auto& [begin, end] : removed) {
      const rocksdb::Slice b(begin), e(end);
      staged = FromRocksDb(rocksdb::DeleteFilesInRange(db, handles[cf], &b, &e,
                                                       /*include_end=*/false),
                           "drop the split copy's files of the other half");
      if (!staged.ok()) break;
    }
  }
  const uint64_t lsn = db->GetLatestSequenceNumber();
  copy.reset();
  if (!staged.ok()) {
    cleanup();
    return staged;
  }
  return lsn;
}

Result<uint64_t> ShardStoreImpl::CreateMergedCopy(const std::string& dir, uint64_t merged_shard_id,
                                                  uint64_t expected_lsn, ShardStore& right_store,
                                                  uint64_t right_expected_lsn) {
  auto& right = static_cast<ShardStoreImpl&>(right_store);
  const TokenRange left_range = options_.token_range;
  const TokenRange right_range = right.options_.token_range;
  if (left_range.last == UINT64_MAX || left_range.last + 1 != right_range.first) {
    return Status::InvalidArgument("right", "shard " + std::to_string(right.options_.shard_id) +
                                                " does not start right after shard " +
                                                std::to_string(options_.shard_id));
  }
  if (right.db_->GetLatestSequenceNumber() != right_expected_lsn) {
    return Status::FailedPrecondition(
        "shard " + std::to_string(right.options_.shard_id) + " is at lsn " +
        std::to_string(right.db_->GetLatestSequenceNumber()) + ", the merge is at lsn " +
        std::to_string(right_expected_lsn));
  }
  std::error_code ec;
  auto cleanup = [&] { std::filesystem::remove_all(dir, ec); };
  auto opened = OpenCheckpointCopy(dir, expected_lsn, "merge");
  if (!opened.ok()) return opened.status();
  std::unique_ptr<CopyDb> copy = std::move(opened).value();
  rocksdb::DB* db = copy->db.get();
  const auto& handles = copy->handles;
  Status status = Status::Ok();

  // Batches of a fixed number of operations: the same rows give the same batches, so every
  // copy consumes the same sequence numbers.
  constexpr size_t kOpsPerBatch = 1000;
  rocksdb::WriteBatch batch;
  auto flush_batch = [&]() -> Status {
    if (batch.Count() == 0) return Status::Ok();
    Status written = FromRocksDb(db->Write(rocksdb::WriteOptions(), &batch), "write merged rows");
    batch.Clear();
    return written;
  };
  rocksdb::ReadOptions read;
  read.total_order_seek = true;
  read.fill_cache = false;
  // The right shard's sharded rows, as they are.
  for (Cf cf : {kConversationsCf, kMessagesCf, kIndexesCf, kInboxCf}) {
    if (!status.ok()) break;
    std::unique_ptr<rocksdb::Iterator> it(right.db_->NewIterator(read, right.handles_[cf]));
    for (it->SeekToFirst(); it->Valid() && status.ok(); it->Next()) {
      status = FromRocksDb(batch.Put(handles[cf], it->key(), it->value()), "stage merged row");
      if (status.ok() && batch.Count() >= kOpsPerBatch) status = flush_batch();
    }
    if (status.ok()) status = FromRocksDb(it->status(), "read the right shard");
  }
  // Its outbox records, renumbered after the left's newest of the same tag: tag | seq | rest.
  if (status.ok()) {
    std::map<char, uint64_t> newest;  // Per outbox tag, in the left copy.
    std::unique_ptr<rocksdb::Iterator> left_it(db->NewIterator(read, handles[kOutboxCf]));
    for (left_it->SeekToFirst(); left_it->Valid(); left_it->Next()) {
      const rocksdb::Slice key = left_it->key();
      if (key.size() < 9) continue;
      uint64_t& seq = newest[key[0]];
      seq = std::max(seq, keys::GetBigEndian64(key.data() + 1));
    }
    status = FromRocksDb(left_it->status(), "read the left outbox");
    std::unique_ptr<rocksdb::Iterator> it(right.db_->NewIterator(read, right.handles_[kOutboxCf]));
    for (it->SeekToFirst(); it->Valid() && status.ok(); it->Next()) {
      std::string key = it->key().ToString();
      if (key.size() >= 9) {
        keys::PutBigEndian64(key.data() + 1, newest[key[0]] + keys::GetBigEndian64(key.data() + 1));
      }
      status = FromRocksDb(batch.Put(handles[kOutboxCf], key, it->value()), "stage merged outbox");
      if (status.ok() && batch.Count() >= kOpsPerBatch) status = flush_batch();
    }
    if (status.ok()) status = FromRocksDb(it->status(), "read the right outbox");
  }
  // The meta row: the left's, with the merged id and range.
  if (status.ok()) {
    status = StageMetaRow(*db, handles[kMetaCf], merged_shard_id,
                          TokenRange{left_range.first, right_range.last}, batch);
  }
  if (status.ok()) status = flush_batch();
  if (status.ok()) status = FromRocksDb(db->FlushWAL(/*sync=*/true), "sync the merged copy");
  const uint64_t lsn = db->GetLatestSequenceNumber();
  copy.reset();
  if (!status.ok()) {
    cleanup();
    return status;
  }
  return lsn;
}

}  // namespace scrollback::engine_internal
