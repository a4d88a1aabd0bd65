// ShardStoreImpl's outbox methods: the outbox queue (cf outbox), which conversation writes fill
// and the fan-out worker drains. Continuing the outbox sequence on open, reading final records
// in write order (one per target), deleting delivered ones (or shrinking a record to the
// targets still to deliver). Declared in shard_store_impl.h, which also holds
// OutboxSequencer (it keeps readers behind the batches still being written), all of it inline.
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <set>
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
//
// Positions (opaque to callers, docs/formats.md):
//   - a format-2 row: its key (17 bytes);
//   - one target of a record: the record's key | target user_id (8) | the record's target
//     count when read (4), so that DeleteOutbox can drop a record whose every target was
//     delivered without reading it back;
//   - a read cursor (OutboxBatch::next_position): a record's key | 0x00, the smallest key
//     beyond it.
// A target's position used as a read cursor starts at its record (which then holds only the
// targets not yet delivered).

namespace {

constexpr size_t kTargetPositionSize = keys::kOutboxKeySize + 8 + 4;

std::string TargetPosition(std::string_view record_key, uint64_t target, uint32_t count) {
  std::string position(record_key);
  position.resize(kTargetPositionSize);
  keys::PutBigEndian64(position.data() + keys::kOutboxKeySize, target);
  for (int i = 0; i < 4; ++i) {
    position[keys::kOutboxKeySize + 8 + i] = static_cast<char>((count >> (24 - 8 * i)) & 0xff);
  }
  return position;
}

uint32_t TargetCount(std::string_view position) {
  uint32_t count = 0;
  for (int i = 0; i < 4; ++i) {
    count = (count << 8) | static_cast<uint8_t>(position[keys::kOutboxKeySize + 8 + i]);
  }
  return count;
}

}  // namespace

Result<OutboxBatch> ShardStoreImpl::ReadOutbox(const std::string& from_position, uint32_t limit) {
  SB_RETURN_IF_ERROR(CheckLimit(limit, limits_.max_outbox_batch, "limit"));
  auto is_record_key = [](std::string_view key) { return IsOutboxKey(key) || IsOutboxV2Key(key); };
  const std::string_view from(from_position);
  std::string_view lower_bytes;
  if (from.size() == keys::kOutboxKeySize && is_record_key(from)) {
    lower_bytes = from;
  } else if (from.size() == keys::kOutboxKeySize + 1 && from.back() == '\0' &&
             is_record_key(from.substr(0, keys::kOutboxKeySize))) {
    lower_bytes = from;
  } else if (from.size() == kTargetPositionSize &&
             IsOutboxKey(from.substr(0, keys::kOutboxKeySize))) {
    lower_bytes = from.substr(0, keys::kOutboxKeySize);
  } else if (!from.empty()) {
    return Status::InvalidArgument("from_position", "malformed outbox position");
  }
  // Format-2 rows sort first (tag 0x41 < 0x42). Only final records: below the oldest sequence
  // still being written.
  Key lower = keys::OutboxV2Key(0, 0);
  if (!lower_bytes.empty()) {
    lower = Key();
    lower.AppendBytes(lower_bytes);
  }
  Key upper = keys::OutboxKey(outbox_.Watermark(), 0);
  OutboxBatch batch;
  batch.next_position = from_position;
  if (lower.view() >= upper.view()) return batch;
  BoundedIterator it(db_.get(), handles_[kOutboxCf], lower, upper);
  std::vector<uint64_t> targets;
  InboxUpdate update;
  std::string last_key_copy;
  for (it->Seek(ToSlice(lower)); it->Valid() && batch.records.size() < limit; it->Next()) {
    std::string_view key = ToView(it->key());
    if (IsOutboxV2Key(key)) {
      OutboxRecord& record = batch.records.emplace_back();
      record.position = std::string(key);
      SB_RETURN_IF_ERROR(codec::DecodeInboxUpdate(ToView(it->value()), &record.update));
      record.update.user_id = keys::GetBigEndian64(key.data() + key.size() - 8);
    } else if (IsOutboxKey(key)) {
      SB_RETURN_IF_ERROR(codec::DecodeOutboxEntry(ToView(it->value()), &update, &targets));
      if (targets.empty() || targets.size() > keys::kMaxOutboxTargets) {
        return Status::Corruption("outbox record with " + std::to_string(targets.size()) +
                                  " targets");
      }
      // Whole records only: stop before one that would pass the limit, unless it is the first.
      if (!batch.records.empty() && batch.records.size() + targets.size() > limit) break;
      const auto count = static_cast<uint32_t>(targets.size());
      for (uint64_t target : targets) {
        OutboxRecord& record = batch.records.emplace_back();
        record.position = TargetPosition(key, target, count);
        record.update = update;
        record.update.user_id = target;
      }
    } else {
      return Status::Corruption("malformed outbox key");
    }
    last_key_copy.assign(key);
  }
  SB_RETURN_IF_ERROR(FromRocksDb(it->status(), "read outbox"));
  // Just after the last record: keys have one size, so appending a zero byte gives the
  // smallest key beyond it.
  if (!batch.records.empty()) batch.next_position = last_key_copy + '\0';
  return batch;
}

Status ShardStoreImpl::DeleteOutbox(const std::vector<std::string>& positions) {
  if (positions.size() > limits_.max_outbox_batch) {
    return Status::InvalidArgument("positions", "more positions than max_outbox_batch");
  }
  rocksdb::WriteBatch batch;
  // Per record: the targets delivered, and the record's target count when they were read (0
  // when positions from reads with different counts are mixed: the record was rewritten in
  // between, and only reading it tells what is left).
  std::map<std::string, std::pair<std::set<uint64_t>, uint32_t>> delivered;
  for (const std::string& position : positions) {
    const std::string_view view(position);
    if (view.size() == keys::kOutboxKeySize && IsOutboxV2Key(view)) {
      SB_RETURN_IF_ERROR(FromRocksDb(batch.Delete(handles_[kOutboxCf], position), "batch"));
    } else if (view.size() == kTargetPositionSize &&
               IsOutboxKey(view.substr(0, keys::kOutboxKeySize))) {
      auto [it, first] = delivered.try_emplace(position.substr(0, keys::kOutboxKeySize));
      auto& [targets, count] = it->second;
      targets.insert(keys::GetBigEndian64(position.data() + keys::kOutboxKeySize));
      const uint32_t read_count = TargetCount(view);
      count = first || count == read_count ? read_count : 0;
    } else {
      return Status::InvalidArgument("positions", "malformed outbox position");
    }
  }
  // Records are only ever shrunk, by this method: one caller at a time reads and rewrites.
  std::lock_guard lock(outbox_delete_mu_);
  InboxUpdate update;
  std::vector<uint64_t> targets;
  for (const auto& [key, record] : delivered) {
    const auto& [done, count] = record;
    if (count > 0 && done.size() >= count) {
      // Every target the record held when read is delivered (it only shrinks, by this method).
      SB_RETURN_IF_ERROR(FromRocksDb(batch.Delete(handles_[kOutboxCf], key), "batch"));
      continue;
    }
    // Partly delivered: keep the record with the targets still to deliver.
    rocksdb::PinnableSlice value;
    rocksdb::Status s = db_->Get(CurrentReadOptions(), handles_[kOutboxCf], key, &value);
    if (s.IsNotFound()) continue;  // Already deleted.
    SB_RETURN_IF_ERROR(FromRocksDb(s, "read outbox record"));
    SB_RETURN_IF_ERROR(codec::DecodeOutboxEntry(ToView(value), &update, &targets));
    std::erase_if(targets, [&done = done](uint64_t user) { return done.count(user) > 0; });
    if (targets.empty()) {
      SB_RETURN_IF_ERROR(FromRocksDb(batch.Delete(handles_[kOutboxCf], key), "batch"));
    } else {
      SB_RETURN_IF_ERROR(
          FromRocksDb(batch.Put(handles_[kOutboxCf], key,
                                codec::EncodeOutboxEntry(update, targets.data(), targets.size())),
                      "batch"));
    }
  }
  if (batch.Count() == 0) return Status::Ok();
  return Write(batch, "delete outbox records");
}

}  // namespace scrollback::engine_internal
