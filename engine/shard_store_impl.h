// ShardStoreImpl, the RocksDB implementation of ShardStore, and the small helpers its files
// share. Private to engine/. Layout: docs/formats.md; keys: scrollback/engine/keys.h; values:
// scrollback/engine/value_codec.h.
//
// One class, its methods defined in one file per table family:
//   shard_store.cc    the RocksDB core: StorageResources, column family options, Open and the
//                     shard meta row, administration (stats, flush, compaction), CacheOnlyReads.
//   conversations.cc  conversation and member rows, and the cache of conversation state.
//   messages.cc       message rows and their index rows: send, history, sender index, edit,
//                     delete.
//   inbox.cc          inbox rows: fan-out updates, listing, single entries, read cursors.
//   outbox.cc         the outbox queue: its tail on open, reading and deleting records.
//   history_tail_cache.{h,cc}  the node's cache of conversations' newest messages (its own
//                     class; ScanHistory reads it, WriteFollowedByTails keeps it current).
// The write path (Put, Delete, Write), the owned-range check and the other small helpers of the
// hot paths (send, history) are defined inline here, as they were when the class was one file.
//
// Locking:
//   - Every write to a conversation's rows (conversation, members, messages and their index
//     rows, and the outbox records a conversation write queues) holds the conversation's stripe
//     lock, Stripe::mu, from reading the conversation's state to the end of the RocksDB write:
//     that keeps seqs dense and unique. Stripe::mu also guards the stripe's ConvState cache.
//   - Every write to a user's inbox rows (state row and listing row) holds the user's stripe
//     lock, user_locks_[UserStripe(user)], from reading the inbox state to the end of the write.
//   - A call that needs several stripes (SendMessages, ApplyInboxUpdates) locks them in index
//     order. No call holds a conversation stripe and a user stripe at once.
//   - An outbox record is written by one batch, and readers see it only once that batch is
//     final (OutboxSequencer). After that only DeleteOutbox changes it (deletes it, or rewrites
//     it with fewer targets), under outbox_delete_mu_, a leaf.
//   - The inbox state cache of a user stripe (inbox_cache_) is guarded by that stripe's lock.
//   - OutboxSequencer::mu_ is a leaf: held only inside OutboxSequencer's own methods.
//   - The history tail cache's stripe mutexes (history_tail_cache.h) are leaves. A committed
//     batch updates the cache (WriteFollowedByTails) while its writer still holds the conversation
//     stripes (or apply_mu_ on a replica), so each conversation's tail changes in seq order.
//   - Reads take no lock. A read of several rows that one concurrent write may replace together
//     reads them from one view: one iterator (it reads at an implicit snapshot) or an explicit
//     snapshot (GetInboxEntry). Rows that are only ever added or rewritten under the same key
//     (conversations, messages, their index rows) may be read one after another.
//
// ODR: this header is included by several translation units, so nothing in it may live in an
// anonymous namespace: everything is in scrollback::engine_internal, and free functions and
// variables defined here are inline.
#pragma once

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/snapshot.h>
#include <rocksdb/transaction_log.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "history_tail_cache.h"
#include "rocksdb_status.h"
#include "scrollback/engine/keys.h"
#include "scrollback/engine/shard_store.h"
#include "scrollback/engine/value_codec.h"

namespace scrollback::engine_internal {

// Short names for the key types, used by every file of the implementation (an internal
// namespace: they do not leak outside engine/).
using keys::Key;
using keys::Tag;

// Set while a CacheOnlyReads scope lives on this thread.
inline thread_local bool cache_only_reads = false;

// The options of every read: memory only inside a CacheOnlyReads scope.
inline rocksdb::ReadOptions CurrentReadOptions() {
  rocksdb::ReadOptions options;
  if (cache_only_reads) options.read_tier = rocksdb::kBlockCacheTier;
  return options;
}

// Column families, in the order they are opened. Persisted by name: never rename.
enum Cf : size_t {
  kMetaCf = 0,
  kConversationsCf,
  kMessagesCf,
  kIndexesCf,
  kInboxCf,
  kOutboxCf,
  kNumCfs
};
// "default" must stay first: RocksDB requires it. It holds the shard meta row.
inline constexpr std::array<const char*, kNumCfs> kCfNames = {
    "default", "conversations", "messages", "indexes", "inbox", "outbox"};

// The column families' options, in kCfNames order, on `resources`' cache and write budget
// (shard_store.cc). Every open of a shard's files uses them.
std::vector<rocksdb::ColumnFamilyDescriptor> ColumnFamilyDescriptors(
    const StorageResources& resources);
// The history tail cache `resources` holds for every store on it (shard_store.cc).
HistoryTailCache& TailCacheOf(StorageResources& resources);

// Node-wide counts of inbox pages heavy with deleted listing rows and of the compactions they
// started (ShardOptions::inbox_cleanup_tombstones), kept in StorageResources for /metrics.
struct InboxCleanupCounters {
  std::atomic<uint64_t> tombstone_heavy_pages{0};
  std::atomic<uint64_t> compactions{0};
  std::atomic<uint64_t> compaction_failures{0};
};
InboxCleanupCounters& InboxCleanupCountersOf(StorageResources& resources);

inline rocksdb::Slice ToSlice(const Key& key) { return rocksdb::Slice(key.data(), key.size()); }
inline std::string_view ToView(const rocksdb::Slice& s) {
  return std::string_view(s.data(), s.size());
}

// The first key after every key of `shard_key` with `tag`: an exclusive iteration bound.
inline Key TagEnd(uint64_t shard_key, Tag tag) {
  return Key(shard_key, static_cast<Tag>(static_cast<uint8_t>(tag) + 1));
}

inline Status CheckId(uint64_t id, const char* field) {
  if (id == 0) return Status::InvalidArgument(field, std::string(field) + " must be non-zero");
  return Status::Ok();
}

inline Status CheckLimit(uint32_t limit, uint32_t max, const char* field) {
  if (limit == 0 || limit > max) {
    return Status::InvalidArgument(field, std::string(field) + " must be in 1.." +
                                              std::to_string(max) + ", got " +
                                              std::to_string(limit));
  }
  return Status::Ok();
}

// An iterator over [lower, upper) of one column family. Owns the bound storage, which RocksDB
// only points to.
class BoundedIterator {
 public:
  BoundedIterator(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf, const Key& lower,
                  const Key& upper)
      : lower_(lower), upper_(upper), lower_slice_(ToSlice(lower_)), upper_slice_(ToSlice(upper_)) {
    if (cache_only_reads) {
      // RocksDB 7.8's merging iterator can lose a child's Incomplete status under
      // kBlockCacheTier and skip that file's keys with an OK status (decision 0011): a scan is
      // never memory-only. Would-block, as if the data needed the disk.
      it_.reset(
          rocksdb::NewErrorIterator(rocksdb::Status::Incomplete("scans are not memory-only")));
      return;
    }
    rocksdb::ReadOptions options = CurrentReadOptions();
    options.iterate_lower_bound = &lower_slice_;
    options.iterate_upper_bound = &upper_slice_;
    // Callers pass bounds inside one entity prefix, so an iteration never leaves the prefix
    // that the prefix Bloom filters cover (no per-step prefix_same_as_start check needed).
    it_.reset(db->NewIterator(options, cf));
  }
  rocksdb::Iterator* operator->() { return it_.get(); }
  rocksdb::Iterator& operator*() { return *it_; }

 private:
  Key lower_;
  Key upper_;
  rocksdb::Slice lower_slice_;
  rocksdb::Slice upper_slice_;
  std::unique_ptr<rocksdb::Iterator> it_;
};

// The inbox state rows (or their absence) of one user stripe, most recently used first, at most
// ShardOptions::inbox_cache_per_stripe of them. Read and written only under that stripe's lock, by
// the inbox's write paths (ApplyInboxUpdates, MarkRead): each reads the state rows it is about to
// change, and under load most are rows a moment-old fan-out batch wrote (a memtable search each,
// otherwise). Holds exactly what the database holds: entries are replaced after a write commits,
// never before. A store that applies its primary's log (a replica) never uses it (log_applied_).
class InboxStateCache {
 public:
  using State = std::optional<codec::InboxState>;
  // 0: caches nothing.
  void SetCapacity(size_t capacity) { capacity_ = capacity; }

  // The cached row (an empty optional: known absent), or nullptr.
  const State* Find(uint64_t user_id, uint64_t conv_id) {
    auto it = index_.find({user_id, conv_id});
    if (it == index_.end()) return nullptr;
    lru_.splice(lru_.begin(), lru_, it->second);
    return &it->second->second;
  }
  void Put(uint64_t user_id, uint64_t conv_id, const State& state) {
    const Ids ids{user_id, conv_id};
    auto it = index_.find(ids);
    if (it != index_.end()) {
      it->second->second = state;
      lru_.splice(lru_.begin(), lru_, it->second);
      return;
    }
    if (capacity_ == 0) return;
    if (index_.size() >= capacity_) {
      index_.erase(lru_.back().first);
      lru_.pop_back();
    }
    lru_.emplace_front(ids, state);
    index_.emplace(ids, lru_.begin());
  }
  void Erase(uint64_t user_id, uint64_t conv_id) {
    auto it = index_.find({user_id, conv_id});
    if (it == index_.end()) return;
    lru_.erase(it->second);
    index_.erase(it);
  }

 private:
  using Ids = std::pair<uint64_t, uint64_t>;
  struct IdsHash {
    size_t operator()(const Ids& ids) const {
      return std::hash<uint64_t>()(ids.first * 0x9E3779B97F4A7C15ull ^ ids.second);
    }
  };
  size_t capacity_ = 0;
  std::list<std::pair<Ids, State>> lru_;
  std::unordered_map<Ids, std::list<std::pair<Ids, State>>::iterator, IdsHash> index_;
};

// Outbox sequence numbers: one per operation that writes outbox rows, in allocation order.
// Batches commit in any order, so a reader only sees records below the oldest sequence still
// being written (the watermark); then no record can appear behind a reader's position.
// Entirely inline, and has no out-of-line parts: Reserve() is on the send path.
class OutboxSequencer {
 public:
  // Keeps a sequence in flight until destroyed (after the batch's write returned).
  class Reservation {
   public:
    Reservation(OutboxSequencer* owner, uint64_t seq) : owner_(owner), seq_(seq) {}
    Reservation(Reservation&& other) noexcept : owner_(other.owner_), seq_(other.seq_) {
      other.owner_ = nullptr;
    }
    Reservation(const Reservation&) = delete;
    Reservation& operator=(const Reservation&) = delete;
    Reservation& operator=(Reservation&&) = delete;
    ~Reservation() {
      if (owner_ != nullptr) owner_->Release(seq_);
    }
    uint64_t seq() const { return seq_; }

   private:
    OutboxSequencer* owner_;
    uint64_t seq_;
  };

  void Init(uint64_t next) {
    std::lock_guard lock(mu_);
    next_ = next;
  }
  Reservation Reserve() {
    std::lock_guard lock(mu_);
    in_flight_.insert(next_);
    return Reservation(this, next_++);
  }
  // Every record with a smaller sequence is final.
  uint64_t Watermark() {
    std::lock_guard lock(mu_);
    return in_flight_.empty() ? next_ : *in_flight_.begin();
  }

 private:
  void Release(uint64_t seq) {
    std::lock_guard lock(mu_);
    in_flight_.erase(seq);
  }

  std::mutex mu_;
  uint64_t next_ = 1;             // GUARDED_BY(mu_)
  std::set<uint64_t> in_flight_;  // GUARDED_BY(mu_)
};

// ShardStore on one RocksDB instance: one column family per table family (Cf), keys from
// keys.h, values from value_codec.h. Thread safety and locking: see the top of this file.
class ShardStoreImpl final : public ShardStore {
 public:
  ShardStoreImpl(const ShardOptions& options, std::shared_ptr<StorageResources> resources,
                 std::unique_ptr<rocksdb::DB> db, std::vector<rocksdb::ColumnFamilyHandle*> handles)
      : options_(options),
        limits_(options.limits),
        clock_(options.clock ? options.clock : SystemClock()),
        resources_(std::move(resources)),
        tails_(TailCacheOf(*resources_)),
        env_(options.env),
        db_(std::move(db)),
        handles_(std::move(handles)) {
    write_options_.sync = options.sync_writes;
    for (InboxStateCache& cache : inbox_cache_) cache.SetCapacity(options.inbox_cache_per_stripe);
  }

  // REQUIRES: called once, before the store is shared. Continues the outbox sequence after
  // the newest record on disk. Defined in outbox.cc.
  Status InitOutbox();
  // REQUIRES: called once, before the store is shared. The shard is marked with an older
  // format version that this build upgrades in place (docs/formats.md): `meta` is its meta row.
  void SetFormatUpgradePending(const codec::ShardMetaRow& meta) {
    meta_ = meta;
    format_upgrade_pending_ = true;
  }

  ~ShardStoreImpl() override;

  // ---- Conversations (conversations.cc) -----------------------------------------------------

  Result<Conversation> CreateConversation(const CreateConversationRequest& request) override;
  Result<Conversation> GetConversation(uint64_t conv_id) override;
  Result<std::vector<uint64_t>> ListMembers(uint64_t conv_id, uint64_t after_user_id,
                                            uint32_t limit) override;
  Result<uint64_t> AddMembers(uint64_t conv_id, uint64_t actor_id,
                              const std::vector<uint64_t>& user_ids) override;
  Result<uint64_t> RemoveMembers(uint64_t conv_id, uint64_t actor_id,
                                 const std::vector<uint64_t>& user_ids) override;

  // ---- Messages (messages.cc) ---------------------------------------------------------------

  Result<SendMessageResult> SendMessage(const SendMessageRequest& request) override;
  std::vector<Result<SendMessageResult>> SendMessages(
      const std::vector<SendMessageRequest>& requests) override;
  Result<Message> GetMessage(uint64_t conv_id, uint64_t seq) override;
  Result<HistoryPage> ReadHistory(const HistoryQuery& query) override;
  Result<EncodedHistoryPage> ReadHistoryEncoded(const HistoryQuery& query) override;
  Result<std::vector<uint64_t>> ListSenderMessages(uint64_t conv_id, uint64_t sender_id,
                                                   uint64_t before_seq, uint32_t limit) override;
  Result<Message> EditMessage(uint64_t conv_id, uint64_t seq, uint64_t editor_id,
                              const std::string& new_body) override;
  Result<Message> DeleteMessage(uint64_t conv_id, uint64_t seq, uint64_t actor_id) override;

  // ---- Inbox (inbox.cc) ---------------------------------------------------------------------

  Status ApplyInboxUpdate(const InboxUpdate& update) override;
  std::vector<Status> ApplyInboxUpdates(const std::vector<InboxUpdate>& updates) override;
  Result<InboxPage> ListInbox(const InboxQuery& query) override;
  // User `user_id`'s inbox page stepped over `tombstones` deleted listing rows: at or past
  // ShardOptions::inbox_cleanup_tombstones, counts it and hands the user's listing range to the
  // cleanup thread (started here the first time; at most one cleanup per
  // kInboxCleanupIntervalMs). Defined in inbox.cc.
  void CleanUpInboxTombstones(uint64_t user_id, uint64_t tombstones);
  // The cleanup thread: compacts each user's listing range it is handed, down to the bottom
  // level (flushing the memtable first when it overlaps), until the destructor stops it.
  void InboxCleanupLoop();
  Result<InboxEntry> GetInboxEntry(uint64_t user_id, uint64_t conv_id) override;
  Result<InboxEntry> MarkRead(uint64_t user_id, uint64_t conv_id, uint64_t seq) override;

  // ---- Outbox (outbox.cc) -------------------------------------------------------------------

  Result<OutboxBatch> ReadOutbox(const std::string& from_position, uint32_t limit) override;
  Status DeleteOutbox(const std::vector<std::string>& positions) override;

  // ---- Administration (shard_store.cc) ------------------------------------------------------

  uint64_t shard_id() const override { return options_.shard_id; }
  TokenRange token_range() const override { return options_.token_range; }
  Result<ShardStats> GetStats() override;
  uint64_t LatestSequence() const override;
  Status Flush() override;
  // Replication (replication_log.cc).
  Result<LogChunk> ReadLog(uint64_t from_lsn, size_t max_bytes) override;
  Status ApplyLogBatches(const std::vector<LogBatch>& batches) override;
  Result<uint64_t> CreateCheckpoint(const std::string& dir) override;
  Result<EpochRecord> BeginEpoch(uint64_t epoch) override;
  Result<std::vector<EpochRecord>> EpochHistory() override;
  Result<ShardChecksum> Checksum() override;
  Status CompactAll() override;
  // Splitting and merging (split.cc).
  Result<uint64_t> Seal() override;
  void Unseal() override {
    seal_complete_.store(false);
    sealed_.store(false);
  }
  bool sealed() const override { return seal_complete_.load(); }
  Result<uint64_t> CreateSplitCopy(const std::string& dir, uint64_t child_shard_id,
                                   TokenRange child_range, uint64_t expected_lsn) override;
  Result<uint64_t> CreateMergedCopy(const std::string& dir, uint64_t merged_shard_id,
                                    uint64_t expected_lsn, ShardStore& right,
                                    uint64_t right_expected_lsn) override;
  // A checkpoint of this store in `dir`, which must hold exactly `expected_lsn`, opened raw to be
  // rewritten into another shard's first copy (`what`: "split" or "merge"; split.cc). `dir` is
  // removed when this fails.
  struct CopyDb;
  Result<std::unique_ptr<CopyDb>> OpenCheckpointCopy(const std::string& dir, uint64_t expected_lsn,
                                                     const char* what);

 private:
  // What the store keeps in memory about a conversation between writes. Derived entirely from
  // the stored rows (LoadState), so it can be dropped at any time.
  struct ConvState {
    Conversation conv;  // Title, creator, creation time, member_count.
    uint64_t last_seq = 0;
    int64_t last_activity_ms = 0;
    // Sorted member ids; filled only while member_count <= fan_out_member_limit.
    bool members_cached = false;
    std::vector<uint64_t> members;

    bool fan_out(const ShardLimits& limits) const {
      return conv.member_count <= limits.fan_out_member_limit;
    }
    Conversation ToConversation() const {
      Conversation out = conv;
      out.last_seq = last_seq;
      out.last_activity_ms = last_activity_ms;
      return out;
    }
  };

  // Writes to one conversation hold its stripe's mutex from reading its state to the end of
  // the RocksDB write, which is what keeps seqs dense. The stripe also caches ConvState.
  struct Stripe {
    std::mutex mu;
    std::unordered_map<uint64_t, ConvState> convs;  // GUARDED_BY(mu)
  };
  static constexpr size_t kStripes = 64;

  struct HistoryScan {
    bool newest_first = false;  // Messages were handed over oldest first: the caller reverses.
    bool has_more = false;
    uint64_t next_cursor_seq = 0;
  };

  // ---- Shared by every family (inline: the hot paths call them) -----------------------------

  // A point read with this thread's read options, at `snapshot` (nullptr: the newest data).
  // Under CacheOnlyReads, RocksDB 7.8 answers a key whose table file is not open with OK and an
  // empty value (TableCache::Get marks it "may exist" instead of saying Incomplete; fixed
  // upstream in 2024). No row Scrollback point-reads from memory is empty, so that answer
  // becomes Incomplete (would-block): the caller retries on the engine pool, where the read may
  // touch the disk.
  template <typename Value>
  rocksdb::Status PointGet(rocksdb::ColumnFamilyHandle* cf, const rocksdb::Slice& key, Value* value,
                           const rocksdb::Snapshot* snapshot = nullptr) {
    rocksdb::ReadOptions options = CurrentReadOptions();
    options.snapshot = snapshot;
    rocksdb::Status s = db_->Get(options, cf, key, value);
    if (cache_only_reads && s.ok() && value->size() == 0) {
      return rocksdb::Status::Incomplete("not in memory");
    }
    return s;
  }

  size_t ConvStripeIndex(uint64_t conv_id) const { return TokenOf(conv_id) % kStripes; }
  Stripe& ConvStripe(uint64_t conv_id) { return conv_stripes_[ConvStripeIndex(conv_id)]; }
  size_t UserStripe(uint64_t user_id) const { return TokenOf(user_id) % kStripes; }
  std::mutex& UserLock(uint64_t user_id) { return user_locks_[UserStripe(user_id)]; }

  Status CheckOwned(uint64_t shard_key, const char* field) const {
    if (options_.token_range.Contains(TokenOf(shard_key))) return Status::Ok();
    return Status::NotOwner(std::string(field) + " " + std::to_string(shard_key) +
                            " is outside shard " + std::to_string(options_.shard_id) +
                            "'s token range");
  }

  Status CheckBody(const std::string& body) const {
    if (body.empty() || body.size() > limits_.max_body_bytes) {
      return Status::InvalidArgument("body", "body is " + std::to_string(body.size()) +
                                                 " bytes, must be 1.." +
                                                 std::to_string(limits_.max_body_bytes));
    }
    return Status::Ok();
  }

  static bool IsOutboxKey(std::string_view key) {
    return key.size() == keys::kOutboxKeySize && key[0] == static_cast<char>(Tag::kOutbox);
  }
  static bool IsOutboxV2Key(std::string_view key) {
    return key.size() == keys::kOutboxKeySize && key[0] == static_cast<char>(Tag::kOutboxV2);
  }

  Status Put(rocksdb::WriteBatch& batch, Cf cf, const Key& key, const std::string& value) {
    return FromRocksDb(batch.Put(handles_[cf], ToSlice(key), value), "batch put");
  }
  Status Delete(rocksdb::WriteBatch& batch, Cf cf, const Key& key) {
    return FromRocksDb(batch.Delete(handles_[cf], ToSlice(key)), "batch delete");
  }
  // Every write of the store's own operations (not ApplyLog's). In a shard still marked with
  // an older format, it also marks the shard with this build's version, so that the first
  // record in the new format is never written without the mark (and an older build refuses
  // the shard instead of misreading it). Replicas get the mark through the log.
  Status Write(rocksdb::WriteBatch& batch, const char* what) {
    // The seal gate (Seal): announce the write, then look at the seal; Seal sets the seal, then
    // waits for the announced writes. Both sides sequentially consistent, so either this write
    // sees the seal or Seal sees this write.
    writes_in_flight_.fetch_add(1);
    struct Leave {
      std::atomic<int64_t>& in_flight;
      ~Leave() { in_flight.fetch_sub(1); }
    } leave{writes_in_flight_};
    if (sealed_.load()) {
      return Status::Unavailable("shard " + std::to_string(options_.shard_id) +
                                 " is being split: writes resume on its new shards");
    }
    const bool upgrading = format_upgrade_pending_.load(std::memory_order_acquire);
    if (upgrading) SB_RETURN_IF_ERROR(PutCurrentMeta(batch));
    SB_RETURN_IF_ERROR(WriteFollowedByTails(batch, what));
    if (upgrading) format_upgrade_pending_.store(false, std::memory_order_release);
    Committed();
    return Status::Ok();
  }
  // Writes `batch` (the store's own write or an applied log batch) bracketed for the history
  // tail cache (history_tail_cache.h: no tail of a conversation the batch writes is served
  // from before the write until the cache follows it). REQUIRES: the lock that orders writes
  // to the batch's conversations is held.
  Status WriteFollowedByTails(rocksdb::WriteBatch& batch, const char* what) {
    const uint64_t owner = tail_owner_.load(std::memory_order_relaxed);
    const uint32_t messages_cf = handles_[kMessagesCf]->GetID();
    const HistoryTailCache::BatchRows rows = tails_.BeginBatch(owner, messages_cf, batch);
    Status written = FromRocksDb(db_->Write(write_options_, &batch), what);
    if (!tails_.EndBatch(rows, limits_.max_page_size, written.ok())) {
      tail_owner_.store(HistoryTailCache::NewOwner(), std::memory_order_release);
    }
    return written;
  }
  // Tells ShardOptions::on_commit (if any) the shard's new latest LSN.
  void Committed() {
    if (options_.on_commit) options_.on_commit(db_->GetLatestSequenceNumber());
  }

  // Queues `update` for `targets`: one record per kMaxOutboxTargets of them, numbered from
  // `*next_part` (0 when null), which is advanced (an operation that queues two different
  // updates under one outbox_seq passes the same counter to both calls).
  // REQUIRES: `outbox_seq` stays reserved until the batch's write returned.
  Status PutOutbox(rocksdb::WriteBatch& batch, uint64_t outbox_seq,
                   const std::vector<uint64_t>& targets, const InboxUpdate& update,
                   uint64_t* next_part = nullptr) {
    uint64_t part = next_part ? *next_part : 0;
    for (size_t at = 0; at < targets.size(); at += keys::kMaxOutboxTargets) {
      const size_t count = std::min(keys::kMaxOutboxTargets, targets.size() - at);
      SB_RETURN_IF_ERROR(Put(batch, kOutboxCf, keys::OutboxKey(outbox_seq, part++),
                             codec::EncodeOutboxEntry(update, targets.data() + at, count)));
    }
    if (next_part) *next_part = part;
    return Status::Ok();
  }
  // The meta row with this build's format version (the format-2 upgrade). Defined in
  // shard_store.cc.
  Status PutCurrentMeta(rocksdb::WriteBatch& batch);

  // The message row with its time and sender index rows.
  Status PutMessageRows(rocksdb::WriteBatch& batch, const Message& message) {
    SB_RETURN_IF_ERROR(Put(batch, kMessagesCf, keys::MessageKey(message.conv_id, message.seq),
                           codec::EncodeMessage(message)));
    SB_RETURN_IF_ERROR(Put(batch, kIndexesCf,
                           keys::TimeIndexKey(message.conv_id, message.sent_at_ms, message.seq),
                           std::string()));
    return Put(batch, kIndexesCf,
               keys::SenderIndexKey(message.conv_id, message.sender_id, message.seq),
               std::string());
  }

  // ---- Conversations (conversations.cc, the small ones inline) ------------------------------

  // REQUIRES: stripe.mu held. The cached state of `conv_id`, loading it from RocksDB on a miss.
  Result<ConvState*> LoadState(Stripe& stripe, uint64_t conv_id);

  Result<bool> IsMember(const ConvState& state, uint64_t conv_id, uint64_t user_id) {
    if (state.members_cached) {
      return std::binary_search(state.members.begin(), state.members.end(), user_id);
    }
    std::string value;
    rocksdb::Status s =
        PointGet(handles_[kConversationsCf], ToSlice(keys::MemberKey(conv_id, user_id)), &value);
    if (s.IsNotFound()) return false;
    SB_RETURN_IF_ERROR(FromRocksDb(s, "read member"));
    return true;
  }

  // Appends up to `limit` member ids greater than `after_user_id`, ascending.
  Status ScanMembers(uint64_t conv_id, uint64_t after_user_id, uint32_t limit,
                     std::vector<uint64_t>* out);

  Status CheckConversationExists(uint64_t conv_id) {
    std::string value;
    rocksdb::Status s =
        PointGet(handles_[kConversationsCf], ToSlice(keys::ConversationKey(conv_id)), &value);
    if (s.IsNotFound()) return ConversationNotFound(conv_id);
    return FromRocksDb(s, "read conversation");
  }

  static Status ConversationNotFound(uint64_t conv_id) {
    return Status::NotFound("conversation " + std::to_string(conv_id) + " does not exist");
  }

  Result<uint64_t> ChangeMembers(uint64_t conv_id, uint64_t actor_id,
                                 const std::vector<uint64_t>& user_ids, MessageKind kind);

  // ---- Messages (messages.cc) ---------------------------------------------------------------

  // Hands the stored messages of one history page to `add(seq, stored_value)`, always in
  // ascending seq order (reading a newest-first page forward is much cheaper than walking back
  // with Prev(); seqs are dense, so the page below the cursor is exactly [first, cursor - 1]).
  // Defined in messages.cc, which holds all of its callers.
  template <typename Add>
  Result<HistoryScan> ScanHistory(const HistoryQuery& query, Add& add);

  // A send's own fields (before any state is read).
  Status CheckSend(const SendMessageRequest& request) const;

  Status CheckSender(const ConvState& state, const SendMessageRequest& request);

  // Idempotency: a retry finds the index row of its first attempt, and answers with it.
  Result<std::optional<SendMessageResult>> FindDuplicate(const SendMessageRequest& request);

  // Adds a new message's rows (message, indexes, one outbox record per member unless above the
  // fan-out limit) to `batch` and advances `state` past it. REQUIRES: the conversation's stripe
  // lock held; the send checked and not a duplicate.
  Result<SendMessageResult> StageSend(rocksdb::WriteBatch& batch, ConvState& state,
                                      const SendMessageRequest& request,
                                      std::vector<OutboxSequencer::Reservation>& reservations);

  InboxUpdate MessageUpdate(const ConvState& state, const Message& message) const;

  Result<Message> ReadMessage(uint64_t conv_id, uint64_t seq);

  // Seq of the first message at or after `time_ms` (oldest-first), or of the last message at or
  // before it (newest-first); 0 when there is none.
  Result<uint64_t> SeqAtTime(uint64_t conv_id, int64_t time_ms, bool newest_first);

  // Edit and delete: read the message under the conversation's lock, let `change` modify it
  // (returning whether it did), and write it back. Only the sender may change a message.
  // Defined in messages.cc, which holds all of its callers.
  template <typename Change>
  Result<Message> RewriteMessage(uint64_t conv_id, uint64_t seq, uint64_t actor_id,
                                 Change&& change);

  // ---- Inbox (inbox.cc, the small ones inline) ----------------------------------------------

  static Status InboxNotFound(uint64_t user_id, uint64_t conv_id) {
    return Status::NotFound("user " + std::to_string(user_id) + " has no inbox row for " +
                            "conversation " + std::to_string(conv_id));
  }

  Status CheckInboxUpdate(const InboxUpdate& update) const;

  // One (user, conversation) inbox row pair while a batch of updates is applied: what is stored,
  // and what the updates applied so far make of it. Updates change it in memory only; the batch
  // writes each changed pair once, its final form (WriteInboxSlot), however many updates of it
  // the batch held (under load, fan-out rounds carry many messages of one conversation).
  struct InboxSlot {
    std::optional<codec::InboxState> stored;  // As read (nullopt: no row).
    std::optional<codec::InboxState> state;   // After the updates applied so far.
    std::optional<InboxEntry> listing;        // The listing row `state` shows, once rebuilt.
    bool changed = false;
  };

  // Applies `update` to `slot` in memory. An update not newer than the state is a no-op.
  // REQUIRES: the user's stripe lock held.
  Status StageInboxUpdate(const InboxUpdate& update, InboxSlot* slot);
  // The listing row that `update` (of message update.seq) shows, at `state`'s activity time
  // and read position.
  static InboxEntry ListingRow(const InboxUpdate& update, const codec::InboxState& state);
  // A kChanged update of the row's newest message: replaces the preview if the revision is
  // newer. REQUIRES: the user's stripe lock held; `slot->state` holds a row with last_seq ==
  // update.seq.
  Status StagePreviewChange(const InboxUpdate& update, InboxSlot* slot);
  // Adds the rows of a changed slot to `batch`: the state row, the listing row at the final
  // activity time, and the delete of the stored listing row if it moved or went away.
  Status WriteInboxSlot(rocksdb::WriteBatch& batch, uint64_t user_id, uint64_t conv_id,
                        const InboxSlot& slot);

  // The user's state row for the conversation (nullopt: none), read at `snapshot` (nullptr:
  // the newest data).
  Status ReadInboxState(uint64_t user_id, uint64_t conv_id, const rocksdb::Snapshot* snapshot,
                        std::optional<codec::InboxState>* out);
  // The newest state row, through the stripe's InboxStateCache.
  // REQUIRES: the user's stripe lock held (until the row is written back, if it is).
  Status ReadInboxStateLocked(uint64_t user_id, uint64_t conv_id,
                              std::optional<codec::InboxState>* out);
  // After a write of the row committed (or failed: `state` nullptr forgets it).
  // REQUIRES: the user's stripe lock held since the row was read.
  void CacheInboxState(uint64_t user_id, uint64_t conv_id,
                       const std::optional<codec::InboxState>* state) {
    if (log_applied_.load(std::memory_order_relaxed)) return;
    InboxStateCache& cache = inbox_cache_[UserStripe(user_id)];
    if (state == nullptr) {
      cache.Erase(user_id, conv_id);
    } else {
      cache.Put(user_id, conv_id, *state);
    }
  }

  // The listing row that `state` names (its key holds state.last_activity_ms); corruption if it
  // is missing. A fan-out update replaces the state row and the listing row together, so
  // REQUIRES: `state` was read at `snapshot` too, or the user's stripe lock is held across both
  // reads.
  Result<InboxEntry> ReadInboxEntry(uint64_t user_id, uint64_t conv_id,
                                    const codec::InboxState& state,
                                    const rocksdb::Snapshot* snapshot);

  // ---- State --------------------------------------------------------------------------------

  const ShardOptions options_;
  const ShardLimits limits_;
  const std::shared_ptr<Clock> clock_;
  const std::shared_ptr<StorageResources> resources_;  // Outlives db_ (declared first).
  // The node's history tail cache (in resources_), and this store's id in it: a new one once
  // a batch changed messages in ways the cache cannot follow (WriteFollowedByTails).
  HistoryTailCache& tails_;
  std::atomic<uint64_t> tail_owner_{HistoryTailCache::NewOwner()};
  // ShardOptions::env (null: Env::Default()). The DB uses it until closed: outlives db_
  // (declared first).
  const std::shared_ptr<rocksdb::Env> env_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // Indexed by Cf.
  rocksdb::WriteOptions write_options_;
  // Conversation stripes (see Stripe): each guards the writes to its conversations' rows and
  // its ConvState cache.
  std::array<Stripe, kStripes> conv_stripes_;
  // User stripes: user_locks_[UserStripe(user)] guards the writes to the user's inbox rows,
  // held from reading the inbox state to the end of the write.
  std::array<std::mutex, kStripes> user_locks_;
  // inbox_cache_[i] is guarded by user_locks_[i].
  std::array<InboxStateCache, kStripes> inbox_cache_;
  // Set by ApplyLogBatches: the log writes inbox rows behind the cache's back, so a store that
  // applies a log (a replica, reopened before it serves as a primary) never caches them.
  std::atomic<bool> log_applied_{false};
  // The time (clock_, ms) of the last cleanup an inbox page heavy with tombstones started
  // (CleanUpInboxTombstones): at most one per kInboxCleanupIntervalMs.
  std::atomic<int64_t> inbox_cleanup_ms_{INT64_MIN / 2};
  // The cleanup thread and its one pending request (the user whose listing rows to compact).
  // Joined by the destructor before the DB closes.
  std::mutex cleanup_mu_;
  std::condition_variable cleanup_cv_;
  std::optional<uint64_t> cleanup_user_;  // GUARDED_BY(cleanup_mu_)
  bool cleanup_stop_ = false;             // GUARDED_BY(cleanup_mu_)
  std::thread cleanup_thread_;            // Started under cleanup_mu_.
  // Serializes ApplyLog: a replica applies its primary's batches one at a time, in order.
  std::mutex apply_mu_;

  // ReadLog's iterators, left where a reader stopped (most recent first): one per replica
  // following the shard, so each pull continues where the last ended.
  struct LogCursor {
    uint64_t next_lsn = 0;  // The LSN the reader asks for next.
    std::unique_ptr<rocksdb::TransactionLogIterator> it;
    // A batch taken from `it` that did not fit the last chunk: the next reader's first.
    rocksdb::BatchResult unread;
  };
  static constexpr size_t kMaxLogCursors = 8;
  LogCursor TakeLogCursor(uint64_t next_lsn);
  void PutLogCursor(LogCursor cursor);
  std::mutex log_cursors_mu_;
  std::list<LogCursor> log_cursors_;  // GUARDED_BY(log_cursors_mu_)
  OutboxSequencer outbox_;
  // Format upgrade (SetFormatUpgradePending): the stored meta row, and whether the shard is
  // still marked with the older version. Cleared once a write that re-marks it committed.
  codec::ShardMetaRow meta_;
  std::atomic<bool> format_upgrade_pending_{false};
  // The seal gate (Seal, Write): whether the store's own writes are refused (from the start of
  // Seal), and how many are past the check and not yet committed.
  std::atomic<bool> sealed_{false};
  std::atomic<int64_t> writes_in_flight_{0};
  // Set by Seal once the writes in flight have finished: only then is the last LSN final, and
  // only then does sealed() say so (a probe must never take an earlier LSN for the final one).
  std::atomic<bool> seal_complete_{false};
  // Serializes the read-modify-write of partly delivered outbox records (DeleteOutbox).
  std::mutex outbox_delete_mu_;
};

}  // namespace scrollback::engine_internal
