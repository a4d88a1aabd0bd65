// ShardStore on RocksDB. Layout: docs/formats.md; keys: scrollback/engine/keys.h; values:
// scrollback/engine/value_codec.h.
//
// This file holds the RocksDB core of ShardStoreImpl (shard_store_impl.h): the shared storage
// resources, the column family options, Open (with the shard meta row), administration (stats,
// flush, compaction) and CacheOnlyReads. The methods of each table family are in
// conversations.cc, messages.cc, inbox.cc and outbox.cc.
#include "scrollback/engine/shard_store.h"

#include <rocksdb/cache.h>
#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/table_properties_collectors.h>
#include <rocksdb/write_buffer_manager.h>

#include <algorithm>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "rocksdb_status.h"
#include "scrollback/engine/keys.h"
#include "scrollback/engine/value_codec.h"
#include "shard_store_impl.h"

namespace scrollback {
namespace engine_internal {

// ---- Administration -------------------------------------------------------------------------

ShardStoreImpl::~ShardStoreImpl() {
  {
    std::lock_guard lock(cleanup_mu_);
    cleanup_stop_ = true;
  }
  cleanup_cv_.notify_all();
  if (cleanup_thread_.joinable()) {
    db_->DisableManualCompaction();  // A cleanup in progress returns at once.
    cleanup_thread_.join();
  }
  {
    std::lock_guard lock(log_cursors_mu_);
    log_cursors_.clear();  // Log iterators read the DB's files: gone before it closes.
  }
  for (auto* handle : handles_) {
    // Dropping the status is deliberate: nothing can be done about a failing destroy here.
    (void)db_->DestroyColumnFamilyHandle(handle);
  }
  (void)db_->Close();
}

Result<ShardStats> ShardStoreImpl::GetStats() {
  ShardStats stats;
  for (auto* handle : handles_) {
    uint64_t value = 0;
    if (db_->GetIntProperty(handle, "rocksdb.estimate-live-data-size", &value)) {
      stats.live_data_bytes += value;
    }
    if (db_->GetIntProperty(handle, "rocksdb.cur-size-all-mem-tables", &value)) {
      stats.memtable_bytes += value;
    }
    if (db_->GetIntProperty(handle, "rocksdb.estimate-num-keys", &value)) {
      stats.estimated_keys += value;
    }
  }
  stats.latest_sequence = db_->GetLatestSequenceNumber();
  return stats;
}

uint64_t ShardStoreImpl::LatestSequence() const { return db_->GetLatestSequenceNumber(); }

Status ShardStoreImpl::Flush() {
  rocksdb::FlushOptions options;
  options.wait = true;
  return FromRocksDb(db_->Flush(options, handles_), "flush");
}

Status ShardStoreImpl::CompactAll() {
  SB_RETURN_IF_ERROR(Flush());
  rocksdb::CompactRangeOptions options;
  options.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  for (auto* handle : handles_) {
    SB_RETURN_IF_ERROR(
        FromRocksDb(db_->CompactRange(options, handle, nullptr, nullptr), "compact"));
  }
  return Status::Ok();
}

}  // namespace engine_internal

namespace {

using engine_internal::Cf;
using engine_internal::CurrentReadOptions;
using engine_internal::HistoryTailCache;
using engine_internal::kCfNames;
using engine_internal::kIndexesCf;
using engine_internal::kMetaCf;
using engine_internal::kNumCfs;
using engine_internal::kOutboxCf;
using engine_internal::ShardStoreImpl;

// Layout version of keys and values (docs/formats.md). Bump only with a migration.
// 2: the outbox became a FIFO queue (tag 0x41).
// 3: one outbox record per operation and group of targets (tag 0x42). Format 2 is upgraded in
//    place: its 0x41 rows are delivered first, and the first write marks the shard format 3.
constexpr uint32_t kFormatVersion = 3;
constexpr uint32_t kOldestUpgradableFormat = 2;

class StorageResourcesImpl final : public StorageResources {
 public:
  explicit StorageResourcesImpl(const Options& options)
      : cache(rocksdb::NewLRUCache(options.block_cache_bytes)),
        write_buffers(
            std::make_shared<rocksdb::WriteBufferManager>(options.write_buffer_bytes, cache)),
        tails(options.history_cache_bytes) {}
  size_t BlockCacheUsage() const override { return cache->GetUsage(); }
  HistoryCacheStats HistoryCache() const override {
    const HistoryTailCache::Stats stats = tails.stats();
    return {stats.hits, stats.misses, stats.inserts, stats.evictions, stats.bytes, stats.entries};
  }
  InboxCleanupStats InboxCleanup() const override {
    return {inbox_cleanup.tombstone_heavy_pages.load(std::memory_order_relaxed),
            inbox_cleanup.compactions.load(std::memory_order_relaxed),
            inbox_cleanup.compaction_failures.load(std::memory_order_relaxed)};
  }

  std::shared_ptr<rocksdb::Cache> cache;
  // Charges memtable memory to the block cache, so one budget bounds both.
  std::shared_ptr<rocksdb::WriteBufferManager> write_buffers;
  HistoryTailCache tails;
  engine_internal::InboxCleanupCounters inbox_cleanup;
};

rocksdb::CompressionType FastestSupported(std::initializer_list<rocksdb::CompressionType> wanted) {
  auto supported = rocksdb::GetSupportedCompressions();
  for (auto type : wanted) {
    if (std::find(supported.begin(), supported.end(), type) != supported.end()) return type;
  }
  return rocksdb::kNoCompression;
}

rocksdb::ColumnFamilyOptions MakeCfOptions(Cf cf, const StorageResourcesImpl& resources) {
  rocksdb::ColumnFamilyOptions options;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = resources.cache;
  // Bloom filters for point reads (client_msg_id dedup, inbox state) and, via the prefix
  // extractor below, for seeks inside one conversation or user.
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  table.whole_key_filtering = true;
  // Index and filter blocks are charged to the shared cache (so memory stays bounded however
  // many shards a node hosts) but pinned by their table readers, so reads do not pay a cache
  // lookup for them.
  table.cache_index_and_filter_blocks = true;
  table.metadata_cache_options.unpartitioned_pinning = rocksdb::PinningTier::kAll;
  table.format_version = 5;
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  // LZ4 where data is hot, ZSTD at the bottom level where most bytes live.
  options.compression = FastestSupported({rocksdb::kLZ4Compression, rocksdb::kSnappyCompression});
  options.bottommost_compression = FastestSupported({rocksdb::kZSTD, rocksdb::kLZ4Compression});
  if (cf != kMetaCf && cf != kOutboxCf) {
    // Every sharded key starts with token | shard key: that is the prefix.
    options.prefix_extractor.reset(rocksdb::NewFixedPrefixTransform(keys::kPrefixSize));
    options.memtable_prefix_bloom_size_ratio = 0.05;
    // A conversation's rows are appended in seq order: remember where the last insert of each
    // conversation (or user) went, per row tag, so the next one skips most of the skiplist
    // search. Per tag, because one send writes three index rows under one prefix, in three
    // different places (one hint for all three would send each insert back to the top).
    options.memtable_insert_with_hint_prefix_extractor.reset(
        rocksdb::NewFixedPrefixTransform(keys::kPrefixSize + 1));
  }
  if (cf == kIndexesCf) {
    // Every new send looks up its client_msg_id row, which almost never exists: a whole-key
    // Bloom filter in the memtable answers those misses without a skiplist search.
    options.memtable_whole_key_filtering = true;
  }
  if (cf == kOutboxCf) {
    // Outbox keys grow monotonically (tag | outbox seq | user): every insert goes at the end.
    options.memtable_insert_with_hint_prefix_extractor.reset(rocksdb::NewFixedPrefixTransform(1));
  }
  if (cf == kOutboxCf) {
    // The outbox is a queue: records are written once and deleted soon after. Compact files
    // dense with tombstones so reads from the head do not wade through them.
    options.table_properties_collector_factories.emplace_back(
        rocksdb::NewCompactOnDeletionCollectorFactory(/*sliding_window_size=*/128,
                                                      /*deletion_trigger=*/64));
  }
  return options;
}

}  // namespace

CacheOnlyReads::CacheOnlyReads() : previous_(engine_internal::cache_only_reads) {
  engine_internal::cache_only_reads = true;
}
CacheOnlyReads::~CacheOnlyReads() { engine_internal::cache_only_reads = previous_; }

std::shared_ptr<StorageResources> StorageResources::Create(const Options& options) {
  return std::make_shared<StorageResourcesImpl>(options);
}

engine_internal::InboxCleanupCounters& engine_internal::InboxCleanupCountersOf(
    StorageResources& resources) {
  return static_cast<StorageResourcesImpl&>(resources).inbox_cleanup;
}

engine_internal::HistoryTailCache& engine_internal::TailCacheOf(StorageResources& resources) {
  return static_cast<StorageResourcesImpl&>(resources).tails;
}

Result<std::unique_ptr<ShardStore>> ShardStore::Open(const ShardOptions& options,
                                                     const std::string& path) {
  if (options.token_range.first > options.token_range.last) {
    return Status::InvalidArgument("token_range", "token_range.first > token_range.last");
  }
  if (options.limits.max_outbox_batch < keys::kMaxOutboxTargets) {
    return Status::InvalidArgument("max_outbox_batch", "max_outbox_batch must be at least " +
                                                           std::to_string(keys::kMaxOutboxTargets) +
                                                           " (one stored group of outbox targets)");
  }
  auto resources = options.resources ? options.resources : StorageResources::Create();
  auto& impl = static_cast<StorageResourcesImpl&>(*resources);

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = options.create_if_missing;
  db_options.create_missing_column_families = true;
  db_options.write_buffer_manager = impl.write_buffers;
  if (options.background_jobs > 0) db_options.max_background_jobs = options.background_jobs;
  // Bounded file descriptors per shard: a node hosts many shards.
  db_options.max_open_files = options.max_open_files;
  db_options.keep_log_file_num = 4;
  // WAL archive for replica catch-up (DESIGN.md, Replication).
  db_options.WAL_ttl_seconds = options.wal_ttl_seconds;
  db_options.WAL_size_limit_MB = options.wal_size_limit_mb;
  // The store keeps options.env (ShardStoreImpl::env_) until the DB is closed; on the failure
  // paths below the DB is closed before Open returns, while the caller's options still hold it.
  if (options.env) db_options.env = options.env.get();

  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors =
      engine_internal::ColumnFamilyDescriptors(impl);
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw_db = nullptr;
  SB_RETURN_IF_ERROR(
      FromRocksDb(rocksdb::DB::Open(db_options, path, descriptors, &handles, &raw_db),
                  "open shard at " + path));
  std::unique_ptr<rocksdb::DB> db(raw_db);

  // First open writes the shard's identity; later opens check it.
  auto fail = [&](Status status) -> Result<std::unique_ptr<ShardStore>> {
    for (auto* handle : handles) (void)db->DestroyColumnFamilyHandle(handle);
    return status;
  };
  std::string meta_value;
  std::optional<codec::ShardMetaRow> upgrade;  // The meta row of a shard in an older format.
  rocksdb::Status s =
      db->Get(CurrentReadOptions(), handles[kMetaCf],
              rocksdb::Slice(keys::kShardMetaKey.data(), keys::kShardMetaKey.size()), &meta_value);
  if (s.IsNotFound()) {
    codec::ShardMetaRow meta{kFormatVersion, options.shard_id, options.token_range.first,
                             options.token_range.last};
    rocksdb::WriteOptions write_options;
    write_options.sync = true;
    s = db->Put(write_options, handles[kMetaCf],
                rocksdb::Slice(keys::kShardMetaKey.data(), keys::kShardMetaKey.size()),
                codec::EncodeShardMeta(meta));
    if (!s.ok()) return fail(FromRocksDb(s, "write shard meta"));
  } else if (!s.ok()) {
    return fail(FromRocksDb(s, "read shard meta"));
  } else {
    codec::ShardMetaRow meta;
    Status decoded = codec::DecodeShardMeta(meta_value, &meta);
    if (!decoded.ok()) return fail(decoded);
    if (meta.format_version < kOldestUpgradableFormat || meta.format_version > kFormatVersion) {
      return fail(Status::FailedPrecondition(
          "shard at " + path + " has format version " + std::to_string(meta.format_version) +
          ", this build reads " + std::to_string(kOldestUpgradableFormat) + " to " +
          std::to_string(kFormatVersion)));
    }
    if (meta.shard_id != options.shard_id) {
      return fail(Status::InvalidArgument("shard_id", "shard at " + path + " is shard " +
                                                          std::to_string(meta.shard_id) + ", not " +
                                                          std::to_string(options.shard_id)));
    }
    if (meta.token_first != options.token_range.first ||
        meta.token_last != options.token_range.last) {
      return fail(Status::InvalidArgument("token_range",
                                          "shard at " + path + " owns a different token range"));
    }
    if (meta.format_version < kFormatVersion) upgrade = meta;
  }
  auto store = std::make_unique<ShardStoreImpl>(options, std::move(resources), std::move(db),
                                                std::move(handles));
  SB_RETURN_IF_ERROR(store->InitOutbox());
  if (upgrade) store->SetFormatUpgradePending(*upgrade);
  return std::unique_ptr<ShardStore>(std::move(store));
}

namespace engine_internal {

std::vector<rocksdb::ColumnFamilyDescriptor> ColumnFamilyDescriptors(
    const StorageResources& resources) {
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (size_t cf = 0; cf < kNumCfs; ++cf) {
    descriptors.emplace_back(
        kCfNames[cf],
        MakeCfOptions(static_cast<Cf>(cf), static_cast<const StorageResourcesImpl&>(resources)));
  }
  return descriptors;
}

Status ShardStoreImpl::PutCurrentMeta(rocksdb::WriteBatch& batch) {
  codec::ShardMetaRow meta = meta_;
  meta.format_version = kFormatVersion;
  return FromRocksDb(
      batch.Put(handles_[kMetaCf],
                rocksdb::Slice(keys::kShardMetaKey.data(), keys::kShardMetaKey.size()),
                codec::EncodeShardMeta(meta)),
      "batch put");
}

}  // namespace engine_internal

}  // namespace scrollback
