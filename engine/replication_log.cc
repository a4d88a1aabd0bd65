// ShardStoreImpl: the shard's log for replication — reading write groups from the WAL (primary),
// applying them (replica), checkpoints and checksums (DESIGN.md, Replication).
#include <rocksdb/db.h>
#include <rocksdb/transaction_log.h>
#include <rocksdb/utilities/checkpoint.h>
#include <rocksdb/write_batch.h>
#include <xxhash.h>

#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "rocksdb_status.h"
#include "shard_store_impl.h"

namespace scrollback::engine_internal {

namespace {

// Little-endian fixed32, as in a WriteBatch header (RocksDB's own helpers are not public).
uint32_t LoadFixed32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
void StoreFixed32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

Status LogGap(uint64_t wanted, const std::string& why) {
  return Status::FromCode(ErrorCode::kLogGap, "the log from lsn " + std::to_string(wanted) +
                                                  " is no longer available (" + why +
                                                  "): re-bootstrap from a checkpoint");
}

}  // namespace

Result<LogChunk> ShardStoreImpl::ReadLog(uint64_t from_lsn, size_t max_bytes) {
  if (from_lsn == 0) return Status::InvalidArgument("from_lsn", "log positions start at 1");
  LogChunk chunk;
  chunk.next_lsn = from_lsn;
  if (from_lsn > db_->GetLatestSequenceNumber()) return chunk;  // Nothing new.

  // A reader usually asks next for where it stopped: continue the iterator left there instead
  // of opening a new one (GetUpdatesSince lists and searches the WAL files: costly per pull).
  LogCursor cursor = TakeLogCursor(from_lsn);
  // Under CacheOnlyReads (a node's event loop) only a reader's iterator is continued: it reads
  // the live WAL's tail, just written and in the page cache. Opening the log searches the WAL
  // files: that is for the engine pool.
  if (cache_only_reads && !cursor.it) {
    return Status::FromCode(ErrorCode::kWouldBlock, "opening the log reads the WAL directory");
  }
  size_t bytes = 0;
  // Takes one batch into the chunk; false when the chunk is full (the batch is kept in the
  // cursor for the next reader) or the log is broken (`*error`).
  auto take = [&](rocksdb::BatchResult&& result, Status* error) {
    const uint64_t first = result.sequence;
    const uint32_t count = static_cast<uint32_t>(result.writeBatchPtr->Count());
    // The first batch must contain `from_lsn`; after that, batches must follow each other.
    // A batch that starts later is a hole in the log (RocksDB answers OK there).
    if (first > chunk.next_lsn) {
      *error = chunk.batches.empty()
                   ? LogGap(from_lsn, "the oldest log starts later")
                   : Status::Corruption("the log skips from lsn " + std::to_string(chunk.next_lsn) +
                                        " to " + std::to_string(first));
      return false;
    }
    if (count == 0 || first + count <= chunk.next_lsn) return true;  // Before what was asked.
    const std::string& data = result.writeBatchPtr->Data();
    if (!chunk.batches.empty() && bytes + data.size() > max_bytes) {
      cursor.unread = std::move(result);  // The next reader's first batch.
      return false;
    }
    bytes += data.size();
    chunk.batches.push_back(LogBatch{first, count, data});
    chunk.next_lsn = first + count;
    return true;
  };
  auto keep = [&] {
    cursor.next_lsn = chunk.next_lsn;
    PutLogCursor(std::move(cursor));
  };

  // TryAgain: the WAL rotated under the iterator; open a new one (a few times at most).
  for (int attempt = 0; attempt < 3; ++attempt) {
    Status error;
    if (cursor.it) {
      if (cursor.unread.writeBatchPtr) {
        rocksdb::BatchResult unread = std::move(cursor.unread);
        cursor.unread = rocksdb::BatchResult{};
        if (!take(std::move(unread), &error)) {
          if (!error.ok()) return error;
          keep();
          return chunk;
        }
      }
      cursor.it->Next();  // Past the last batch returned; tails the live WAL.
    } else {
      rocksdb::Status opened = db_->GetUpdatesSince(chunk.next_lsn, &cursor.it);
      if (opened.IsNotFound()) return LogGap(from_lsn, opened.ToString());
      SB_RETURN_IF_ERROR(FromRocksDb(opened, "open the log"));
    }
    for (; cursor.it->Valid(); cursor.it->Next()) {
      if (!take(cursor.it->GetBatch(), &error)) {
        if (!error.ok()) return error;
        keep();
        return chunk;
      }
    }
    rocksdb::Status status = cursor.it->status();
    if (status.ok()) {
      if (!chunk.batches.empty()) {  // At the end of what is written: kept for the next pull.
        keep();
        return chunk;
      }
      cursor = LogCursor{};  // Nothing, although there should be: try a fresh iterator once.
      if (cache_only_reads) {
        return Status::FromCode(ErrorCode::kWouldBlock, "the log must be reopened");
      }
      if (attempt == 0) continue;
      // Nothing readable although `from_lsn` is at or below the latest LSN: its WAL is gone.
      return LogGap(from_lsn, "no log holds it");
    }
    cursor = LogCursor{};
    if (!chunk.batches.empty()) return chunk;  // The caller continues from next_lsn.
    if (status.IsTryAgain() && cache_only_reads) {
      return Status::FromCode(ErrorCode::kWouldBlock, "the WAL rotated: the log must be reopened");
    }
    if (status.IsTryAgain()) continue;
    if (!status.IsNotFound()) return FromRocksDb(status, "read the log");
    return LogGap(from_lsn, status.ToString());
  }
  return chunk;
}

ShardStoreImpl::LogCursor ShardStoreImpl::TakeLogCursor(uint64_t next_lsn) {
  std::lock_guard lock(log_cursors_mu_);
  for (auto it = log_cursors_.begin(); it != log_cursors_.end(); ++it) {
    if (it->next_lsn == next_lsn) {
      LogCursor found = std::move(*it);
      log_cursors_.erase(it);
      return found;
    }
  }
  return LogCursor{};
}

void ShardStoreImpl::PutLogCursor(LogCursor cursor) {
  std::lock_guard lock(log_cursors_mu_);
  log_cursors_.push_front(std::move(cursor));
  if (log_cursors_.size() > kMaxLogCursors) log_cursors_.pop_back();  // The least recent.
}

namespace {

// Rebuilds the operations of a WriteBatch after its first `skip` into a new batch (same column
// families by id): a copy whose LSN falls inside one of its primary's write groups (its own
// groups were cut differently, e.g. it followed another primary before) applies the rest.
class SuffixBuilder : public rocksdb::WriteBatch::Handler {
 public:
  SuffixBuilder(uint64_t skip, const std::vector<rocksdb::ColumnFamilyHandle*>& handles)
      : skip_(skip), handles_(handles) {}

  rocksdb::Status PutCF(uint32_t cf, const rocksdb::Slice& key,
                        const rocksdb::Slice& value) override {
    return Next(cf, [&](rocksdb::ColumnFamilyHandle* h) { return out.Put(h, key, value); });
  }
  rocksdb::Status DeleteCF(uint32_t cf, const rocksdb::Slice& key) override {
    return Next(cf, [&](rocksdb::ColumnFamilyHandle* h) { return out.Delete(h, key); });
  }
  rocksdb::Status SingleDeleteCF(uint32_t cf, const rocksdb::Slice& key) override {
    return Next(cf, [&](rocksdb::ColumnFamilyHandle* h) { return out.SingleDelete(h, key); });
  }
  rocksdb::Status DeleteRangeCF(uint32_t cf, const rocksdb::Slice& begin,
                                const rocksdb::Slice& end) override {
    return Next(cf, [&](rocksdb::ColumnFamilyHandle* h) { return out.DeleteRange(h, begin, end); });
  }
  rocksdb::Status MergeCF(uint32_t cf, const rocksdb::Slice& key,
                          const rocksdb::Slice& value) override {
    return Next(cf, [&](rocksdb::ColumnFamilyHandle* h) { return out.Merge(h, key, value); });
  }
  // Any other record (blob indexes, wide columns, transaction markers) is refused by the
  // Handler's defaults: the engine never writes them, and the caller then rebuilds the copy.

  rocksdb::WriteBatch out;

 private:
  template <typename Add>
  rocksdb::Status Next(uint32_t cf, Add&& add) {
    if (seen_++ < skip_) return rocksdb::Status::OK();  // Already in this copy.
    for (auto* handle : handles_) {
      if (handle->GetID() == cf) return add(handle);
    }
    return rocksdb::Status::InvalidArgument("unknown column family " + std::to_string(cf));
  }

  const uint64_t skip_;
  const std::vector<rocksdb::ColumnFamilyHandle*>& handles_;
  uint64_t seen_ = 0;
};

}  // namespace

Status ShardStoreImpl::ApplyLogBatches(const std::vector<LogBatch>& batches) {
  // A WriteBatch's representation: fixed64 sequence, fixed32 count, then the records. Batches
  // that follow each other are one batch of their records in order: applied as one write, they
  // take the same sequence numbers as applied one by one.
  constexpr size_t kHeader = 12;
  // The log writes inbox rows behind the inbox state cache: this store never uses it again.
  log_applied_.store(true, std::memory_order_relaxed);
  std::lock_guard apply(apply_mu_);
  const uint64_t latest = db_->GetLatestSequenceNumber();
  size_t first = 0;
  while (first < batches.size() && batches[first].count > 0 &&
         batches[first].first_lsn + batches[first].count - 1 <= latest) {
    ++first;  // Already applied.
  }
  if (first == batches.size()) return Status::Ok();
  std::string rep;
  uint64_t expected = latest + 1;
  uint64_t total = 0;
  for (size_t i = first; i < batches.size(); ++i) {
    const LogBatch& batch = batches[i];
    if (batch.count == 0) return Status::InvalidArgument("count", "an empty log batch");
    if (i == first && batch.first_lsn < expected && batch.data.size() >= kHeader &&
        LoadFixed32(batch.data.data() + 8) == batch.count) {
      // This copy's LSN is inside the batch: apply the operations after it.
      SuffixBuilder suffix(expected - batch.first_lsn, handles_);
      rocksdb::WriteBatch whole(batch.data);
      SB_RETURN_IF_ERROR(FromRocksDb(whole.Iterate(&suffix), "split a log batch"));
      const uint64_t rest = batch.first_lsn + batch.count - expected;
      if (suffix.out.Count() != rest) {
        return Status::FailedPrecondition("the log batch at lsn " +
                                          std::to_string(batch.first_lsn) +
                                          " cannot be split at lsn " + std::to_string(expected));
      }
      rep = suffix.out.Data();
      total += rest;
      expected += rest;
      continue;
    }
    if (batch.first_lsn != expected) {
      return Status::FailedPrecondition("log batch at lsn " + std::to_string(batch.first_lsn) +
                                        " does not follow lsn " + std::to_string(expected - 1) +
                                        (i == first ? " (this copy's)" : " (the batch before)"));
    }
    if (batch.data.size() < kHeader || LoadFixed32(batch.data.data() + 8) != batch.count) {
      return Status::InvalidArgument("data", "the batch at lsn " + std::to_string(batch.first_lsn) +
                                                 " does not hold " + std::to_string(batch.count) +
                                                 " operations");
    }
    if (rep.empty()) {
      rep = batch.data;
    } else {
      rep.append(batch.data, kHeader, std::string::npos);
    }
    total += batch.count;
    expected += batch.count;
  }
  if (total > UINT32_MAX) return Status::InvalidArgument("batches", "too many operations at once");
  StoreFixed32(rep.data() + 8, static_cast<uint32_t>(total));
  rocksdb::WriteBatch write(std::move(rep));
  if (write.Count() != total) {
    return Status::InvalidArgument("data", "the batches hold " + std::to_string(write.Count()) +
                                               " operations, not " + std::to_string(total));
  }
  SB_RETURN_IF_ERROR(WriteFollowedByTails(write, "apply log batches"));
  const uint64_t now = db_->GetLatestSequenceNumber();
  if (now != expected - 1) {
    return Status::Corruption("after applying lsn " + std::to_string(latest + 1) + " .. " +
                              std::to_string(expected - 1) + " this copy is at lsn " +
                              std::to_string(now) + ": its log diverged from the primary's");
  }
  // Conversation states cached for reads may predate the batch: forget them all (a replica's
  // cache refills from its data; writers never run on a replica).
  for (Stripe& stripe : conv_stripes_) {
    std::lock_guard lock(stripe.mu);
    stripe.convs.clear();
  }
  Committed();
  return Status::Ok();
}

Result<uint64_t> ShardStoreImpl::CreateCheckpoint(const std::string& dir) {
  rocksdb::Checkpoint* raw = nullptr;
  SB_RETURN_IF_ERROR(FromRocksDb(rocksdb::Checkpoint::Create(db_.get(), &raw), "checkpoint"));
  std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
  uint64_t lsn = 0;
  // log_size_for_flush 0: memtables are flushed, so the copy holds SST files only.
  SB_RETURN_IF_ERROR(
      FromRocksDb(checkpoint->CreateCheckpoint(dir, /*log_size_for_flush=*/0, &lsn), "checkpoint"));
  return lsn;
}

Result<std::vector<EpochRecord>> ShardStoreImpl::EpochHistory() {
  std::vector<EpochRecord> out;
  rocksdb::ReadOptions options;
  options.total_order_seek = true;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(options, handles_[kMetaCf]));
  const rocksdb::Slice prefix(keys::kEpochKeyPrefix.data(), keys::kEpochKeyPrefix.size());
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    if (it->key().size() != prefix.size() + 8 || it->value().size() != 8) {
      return Status::Corruption("epoch record of " + std::to_string(it->key().size()) +
                                " key bytes and " + std::to_string(it->value().size()) +
                                " value bytes");
    }
    out.push_back(EpochRecord{keys::GetBigEndian64(it->key().data() + prefix.size()),
                              keys::GetBigEndian64(it->value().data())});
  }
  SB_RETURN_IF_ERROR(FromRocksDb(it->status(), "read epoch records"));
  return out;
}

Result<EpochRecord> ShardStoreImpl::BeginEpoch(uint64_t epoch) {
  auto history = EpochHistory();
  if (!history.ok()) return history.status();
  if (!history->empty() && history->back().epoch >= epoch) return history->back();
  const EpochRecord record{epoch, db_->GetLatestSequenceNumber()};
  std::string key(keys::kEpochKeyPrefix);
  key.resize(key.size() + 8);
  keys::PutBigEndian64(key.data() + keys::kEpochKeyPrefix.size(), epoch);
  std::string value(8, '\0');
  keys::PutBigEndian64(value.data(), record.start_lsn);
  rocksdb::WriteBatch batch;
  SB_RETURN_IF_ERROR(FromRocksDb(batch.Put(handles_[kMetaCf], key, value), "batch put"));
  SB_RETURN_IF_ERROR(Write(batch, "begin epoch"));
  return record;
}

Result<ShardChecksum> ShardStoreImpl::Checksum() {
  ShardChecksum out;
  const rocksdb::Snapshot* snapshot = db_->GetSnapshot();
  out.lsn = snapshot->GetSequenceNumber();
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  Status status = Status::Ok();
  for (size_t cf = 0; cf < handles_.size() && status.ok(); ++cf) {
    rocksdb::ReadOptions options;
    options.snapshot = snapshot;
    options.total_order_seek = true;
    options.fill_cache = false;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(options, handles_[cf]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      // (column family, key length, key, value length, value): unambiguous concatenation.
      const uint32_t header[3] = {static_cast<uint32_t>(cf),
                                  static_cast<uint32_t>(it->key().size()),
                                  static_cast<uint32_t>(it->value().size())};
      XXH3_64bits_update(state, header, sizeof(header));
      XXH3_64bits_update(state, it->key().data(), it->key().size());
      XXH3_64bits_update(state, it->value().data(), it->value().size());
      ++out.keys;
    }
    status = FromRocksDb(it->status(), "checksum");
  }
  out.checksum = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  db_->ReleaseSnapshot(snapshot);
  if (!status.ok()) return status;
  return out;
}

}  // namespace scrollback::engine_internal
