// ShardStoreImpl's outbox methods: the outbox queue (cf outbox), which conversation writes fill
// and the fan-out worker drains. Continuing the outbox sequence on open, reading final records
// in write order, deleting delivered ones. Declared in shard_store_impl.h, which also holds
// OutboxSequencer (it keeps readers behind the batches still being written), all of it inline.
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "rocksdb_status.h"
#include "scrollback/engine/keys.h"
#include "scrollback/engine/value_codec.h"
#include "shard_store_impl.h"

namespace scrollback::engine_internal {

Status ShardStoreImpl::InitOutbox() {
  rocksdb::ReadOptions options;
  options.total_order_seek = true;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(options, handles_[kOutboxCf]));
  it->SeekForPrev(ToSlice(keys::OutboxKey(UINT64_MAX, UINT64_MAX)));
  uint64_t next = 1;
  if (it->Valid() && IsOutboxKey(ToView(it->key()))) {
    next = keys::GetBigEndian64(it->key().data() + 1) + 1;
  }
  outbox_.Init(next);
  return FromRocksDb(it->status(), "read outbox tail");
}

// ---- Outbox ---------------------------------------------------------------------------------

Result<OutboxBatch> ShardStoreImpl::ReadOutbox(const std::string& from_position, uint32_t limit) {
  SB_RETURN_IF_ERROR(CheckLimit(limit, limits_.max_outbox_batch, "limit"));
  // A position is a record's key, or one plus a zero byte (what next_position returns).
  const bool is_position =
      IsOutboxKey(from_position) ||
      (from_position.size() == keys::kOutboxKeySize + 1 && from_position.back() == '\0' &&
       IsOutboxKey(std::string_view(from_position).substr(0, keys::kOutboxKeySize)));
  if (!from_position.empty() && !is_position) {
    return Status::InvalidArgument("from_position", "malformed outbox position");
  }
  // Only final records: below the oldest sequence still being written.
  Key lower = keys::OutboxKey(0, 0);
  if (!from_position.empty()) {
    lower = Key();
    lower.AppendBytes(from_position);
  }
  Key upper = keys::OutboxKey(outbox_.Watermark(), 0);
  OutboxBatch batch;
  batch.next_position = from_position;
  if (lower.view() >= upper.view()) return batch;
  BoundedIterator it(db_.get(), handles_[kOutboxCf], lower, upper);
  for (it->Seek(ToSlice(lower)); it->Valid() && batch.records.size() < limit; it->Next()) {
    std::string_view key = ToView(it->key());
    if (!IsOutboxKey(key)) return Status::Corruption("malformed outbox key");
    OutboxRecord& record = batch.records.emplace_back();
    record.position = std::string(key);
    SB_RETURN_IF_ERROR(codec::DecodeInboxUpdate(ToView(it->value()), &record.update));
    record.update.user_id = keys::GetBigEndian64(key.data() + key.size() - 8);
  }
  SB_RETURN_IF_ERROR(FromRocksDb(it->status(), "read outbox"));
  // Just after the last record: keys have one size, so appending a zero byte gives the
  // smallest key beyond it.
  if (!batch.records.empty()) batch.next_position = batch.records.back().position + '\0';
  return batch;
}

Status ShardStoreImpl::DeleteOutbox(const std::vector<std::string>& positions) {
  if (positions.size() > limits_.max_outbox_batch) {
    return Status::InvalidArgument("positions", "more positions than max_outbox_batch");
  }
  rocksdb::WriteBatch batch;
  for (const std::string& position : positions) {
    if (!IsOutboxKey(position)) {
      return Status::InvalidArgument("positions", "malformed outbox position");
    }
    SB_RETURN_IF_ERROR(FromRocksDb(batch.Delete(handles_[kOutboxCf], position), "batch"));
  }
  return Write(batch, "delete outbox records");
}

}  // namespace scrollback::engine_internal
