// ShardStore: one shard replica's storage, on its own RocksDB instance.
//
// A shard owns a token range of the ring. It stores the conversations whose token lies in the
// range (with their members, messages, secondary indexes and outbox) and the inbox rows of the
// users whose token lies in the range. See docs/formats.md for the on-disk layout.
//
// Thread safety: every method may be called from many threads at once. Writes to one
// conversation are serialized inside the store, so seqs are dense and unique; writes to
// different conversations proceed in parallel (RocksDB groups their WAL writes).
//
// Durability: a method that returned OK has written the WAL. With sync_writes = false (default)
// that survives the process being killed; with sync_writes = true every write group is also
// fsync'ed, which survives power loss.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "scrollback/schema/clock.h"
#include "scrollback/schema/status.h"
#include "scrollback/schema/token.h"
#include "scrollback/schema/types.h"

namespace rocksdb {
class Env;
}  // namespace rocksdb

namespace scrollback {

// Process-wide storage resources shared by every shard of a node: one block cache and one
// write-buffer budget, so memory stays bounded however many shards the node hosts.
class StorageResources {
 public:
  struct Options {
    // Default: 256 MiB. LRU cache of uncompressed data, index and filter blocks of all shards.
    size_t block_cache_bytes = 256ull << 20;
    // Default: 256 MiB. Total memtable memory across all shards; a shard over its share flushes.
    size_t write_buffer_bytes = 256ull << 20;
    // Default: 64 MiB. The newest messages of recently read conversations, as stored, so that
    // a history page from the newest message needs no RocksDB scan (decision 0014). 0: none.
    size_t history_cache_bytes = 64ull << 20;
  };
  // The history tail cache's counters since the resources were created, and its size now.
  struct HistoryCacheStats {
    uint64_t hits = 0;       // Pages served from a cached tail.
    uint64_t misses = 0;     // Pages from the newest end whose tail was not cached.
    uint64_t inserts = 0;    // Tails filed after a scan.
    uint64_t evictions = 0;  // Tails dropped for space.
    uint64_t bytes = 0;
    uint64_t entries = 0;
  };
  // Inbox pages that stepped over ShardOptions::inbox_cleanup_tombstones deleted listing rows or
  // more, the compactions of their users' listing rows they started (counted when handed to
  // the shard's cleanup thread), and those that failed, across the node's shards.
  struct InboxCleanupStats {
    uint64_t tombstone_heavy_pages = 0;
    uint64_t compactions = 0;
    uint64_t compaction_failures = 0;
  };
  static std::shared_ptr<StorageResources> Create(const Options& options);
  static std::shared_ptr<StorageResources> Create() { return Create(Options{}); }
  virtual ~StorageResources() = default;

  // Block cache bytes in use now (for /metrics).
  virtual size_t BlockCacheUsage() const = 0;
  virtual HistoryCacheStats HistoryCache() const = 0;
  virtual InboxCleanupStats InboxCleanup() const = 0;
};

// A history page as stored: each message a flat Cap'n Proto `scrollback.schema.Message` in the
// standard stream format (docs/formats.md), word-aligned in `words`. Message i (in page order,
// as HistoryPage::messages) is words[spans[i].first, spans[i].first + spans[i].second).
struct EncodedHistoryPage {
  std::vector<uint64_t> words;
  std::vector<std::pair<uint32_t, uint32_t>> spans;  // (offset, size), in words.
  uint64_t next_cursor_seq = 0;                      // As HistoryPage.
  bool has_more = false;
};

// While an object of this class lives, reads made on the creating thread through any ShardStore
// are served from memory only (memtables and the block cache: RocksDB's kBlockCacheTier). A
// read that would need the disk fails with ErrorCode::kWouldBlock instead of waiting for it,
// and changes nothing. Storage nodes answer cached reads on their event loops this way and send
// the rest to the engine pool. Only read methods may run under it. Scopes nest.
class CacheOnlyReads {
 public:
  CacheOnlyReads();
  ~CacheOnlyReads();
  CacheOnlyReads(const CacheOnlyReads&) = delete;
  CacheOnlyReads& operator=(const CacheOnlyReads&) = delete;

 private:
  bool previous_;
};

// Input bounds. Every request is checked against them before anything is read or written.
struct ShardLimits {
  // Default: 64 KiB. Chat messages are small; large media belongs in a blob store.
  uint32_t max_body_bytes = 64 * 1024;
  // Default: 256 bytes.
  uint32_t max_title_bytes = 256;
  // Default: 200. Bounds the work and the reply size of one history or inbox page.
  uint32_t max_page_size = 200;
  // Default: 100,000. Upper bound on a conversation's members.
  uint32_t max_members = 100'000;
  // Default: 1,000. Most user ids one add/remove-members call may name (bounds one WriteBatch).
  uint32_t max_members_per_change = 1'000;
  // Default: 256. Conversations with more members skip per-message inbox fan-out (DESIGN.md):
  // a send to them queues no inbox update.
  uint32_t fan_out_member_limit = 256;
  // Default: 120 bytes. The inbox preview is the body's prefix, cut at a UTF-8 boundary.
  uint32_t preview_bytes = 120;
  // Default: 1,000; at least 256 (keys::kMaxOutboxTargets: one stored group of targets is read
  // and delivered whole). Most outbox records one ReadOutbox call returns, and most inbox
  // updates one ApplyInboxUpdates call takes.
  uint32_t max_outbox_batch = 1'000;
  // Default: 1,000. Most sends one SendMessages call may carry (bounds one WriteBatch).
  uint32_t max_send_batch = 1'000;
};

struct ShardOptions {
  // Default: 0. The shard's id in the shard map (persisted at creation; checked on reopen).
  uint64_t shard_id = 0;
  // Default: the whole ring. Keys outside the range are refused with not-owner.
  TokenRange token_range = TokenRange::Full();
  // Default: true. Create the shard if `path` holds none.
  bool create_if_missing = true;
  // Default: false (WAL written, not fsync'ed: survives a process kill, not a power loss).
  // true: fsync every write group before acknowledging.
  bool sync_writes = false;
  // Default: a private set of default-sized resources. Share one across a node's shards.
  std::shared_ptr<StorageResources> resources;
  // Default: SystemClock(). Assigns sent_at_ms and the other server times.
  std::shared_ptr<Clock> clock;
  ShardLimits limits;
  // Default: 64. Most conversations whose state (last seq, members) is cached per lock stripe;
  // the cache holds stripes x this many (64 x 64 = 4096 by default).
  uint32_t conversation_cache_per_stripe = 64;
  // Default: 256. Inbox state rows cached per user lock stripe for the inbox's write paths
  // (64 stripes: 16,384 rows, about 1.5 MiB per shard); 0 turns the cache off.
  uint32_t inbox_cache_per_stripe = 256;
  // Default: 256. An inbox page whose scan steps over at least this many deleted listing rows
  // (each inbox update moves its conversation's listing row and leaves a tombstone where it was;
  // a busy member's list wades through them until compactions reach the bottom level) starts a
  // compaction of that user's listing rows in the background, down to the bottom level, which
  // drops them; at most one per shard per 5 s of `clock`, on a thread of the shard's own started
  // by the first and kept until the shard closes. 0: never.
  uint32_t inbox_cleanup_tombstones = 256;
  // Default: 0 (RocksDB's own default). Background flush/compaction threads for this shard.
  int background_jobs = 0;
  // Default: 6 hours / 1 GiB. WAL archive kept for replica catch-up (DESIGN.md, Replication).
  // A storage node sets wal_size_limit_mb to its share of the node's WAL budget (NodeBudgets).
  uint64_t wal_ttl_seconds = 6 * 3600;
  uint64_t wal_size_limit_mb = 1024;
  // Default: 512. SST files this shard keeps open (RocksDB max_open_files; -1: all). A storage
  // node sets it to its share of the node's budget (NodeBudgets::max_open_files).
  int max_open_files = 512;
  // Default: null (RocksDB's Env::Default()). The environment every file of the shard is
  // created, written and synced through. The seam for tests: a fault-injecting Env, or one that
  // counts WAL syncs to check sync_writes. The store keeps it alive until its DB is closed.
  std::shared_ptr<rocksdb::Env> env;
  // Default: none. Called after every write the shard commits (its own writes and ApplyLog)
  // with the shard's latest LSN, on the writing thread. Must be quick and must not call into
  // the store: the seam that log shipping waits on (a primary's long polls, a replica's
  // session reads).
  std::function<void(uint64_t lsn)> on_commit;
};

// One write group of a primary as its WAL holds it: `data` is a RocksDB WriteBatch of `count`
// operations with sequence numbers first_lsn .. first_lsn + count - 1. Applying the batches in
// order on a replica reproduces the primary's data and its sequence numbers (DESIGN.md,
// Replication).
struct LogBatch {
  uint64_t first_lsn = 0;
  uint32_t count = 0;
  std::string data;
};

// One primary term recorded in a shard's data (ShardStore::BeginEpoch).
struct EpochRecord {
  uint64_t epoch = 0;
  // The shard's LSN just before the epoch's first write: everything up to it was written in
  // earlier epochs; every later LSN in this epoch or after.
  uint64_t start_lsn = 0;
  friend bool operator==(const EpochRecord&, const EpochRecord&) = default;
};

struct LogChunk {
  std::vector<LogBatch> batches;  // In log order, contiguous.
  uint64_t next_lsn = 0;          // Where the next ReadLog starts (one past the last batch).
};

// A digest of every key and value of every column family at one log position: two copies of a
// shard at the same LSN are identical exactly when their checksums are (scrollbackctl verify).
struct ShardChecksum {
  uint64_t lsn = 0;
  uint64_t checksum = 0;  // XXH3 over (column family, key, value) in key order.
  uint64_t keys = 0;
};

// Approximate on-disk and in-memory sizes (for status and /metrics).
struct ShardStats {
  uint64_t live_data_bytes = 0;  // Estimated live SST bytes.
  uint64_t memtable_bytes = 0;
  uint64_t estimated_keys = 0;
  uint64_t latest_sequence = 0;  // RocksDB's last sequence number (the log position).
};

class ShardStore {
 public:
  // Opens (or creates) the shard at `path`. Fails with invalid-argument when the stored shard id
  // differs from options.shard_id or the stored format version is unknown.
  static Result<std::unique_ptr<ShardStore>> Open(const ShardOptions& options,
                                                  const std::string& path);
  virtual ~ShardStore() = default;

  // ---- Conversations ------------------------------------------------------------------------

  // Creates a conversation with the creator and member_ids as founding members, and queues a
  // `joined` inbox update for each. alreadyExists if conv_id is taken.
  virtual Result<Conversation> CreateConversation(const CreateConversationRequest& request) = 0;
  virtual Result<Conversation> GetConversation(uint64_t conv_id) = 0;
  // Member ids in ascending order, at most `limit`, greater than `after_user_id`.
  virtual Result<std::vector<uint64_t>> ListMembers(uint64_t conv_id, uint64_t after_user_id,
                                                    uint32_t limit) = 0;
  // Adds users (ignoring those already members) and records a membersAdded system message;
  // returns that message's seq, or the last seq when nobody was new. `actor_id` must be a member.
  virtual Result<uint64_t> AddMembers(uint64_t conv_id, uint64_t actor_id,
                                      const std::vector<uint64_t>& user_ids) = 0;
  // Removes users (ignoring non-members) and records a membersRemoved system message. A member
  // may remove themselves; otherwise `actor_id` must be a member.
  virtual Result<uint64_t> RemoveMembers(uint64_t conv_id, uint64_t actor_id,
                                         const std::vector<uint64_t>& user_ids) = 0;

  // ---- Messages -----------------------------------------------------------------------------

  // Appends a message with the next seq. Idempotent on (conv_id, sender_id, client_msg_id): a
  // retry returns the first send's seq with duplicate = true and writes nothing. The message,
  // its index rows and its outbox record, which queues one inbox update per member (unless the
  // conversation is above the fan-out limit), are written in one atomic WriteBatch.
  virtual Result<SendMessageResult> SendMessage(const SendMessageRequest& request) = 0;
  // Many sends (any conversations of this shard) in one atomic WriteBatch: one WAL write for
  // all. Results in input order, each as SendMessage would answer it; a send repeating an
  // earlier one of the same batch (same conversation, sender and client_msg_id) answers as its
  // duplicate. If the write fails, every send it carried fails. At most max_send_batch sends.
  virtual std::vector<Result<SendMessageResult>> SendMessages(
      const std::vector<SendMessageRequest>& requests) = 0;
  virtual Result<Message> GetMessage(uint64_t conv_id, uint64_t seq) = 0;
  virtual Result<HistoryPage> ReadHistory(const HistoryQuery& query) = 0;
  // The same page as ReadHistory, as the stored encodings, for callers that forward messages
  // to the wire without decoding them (storage nodes).
  virtual Result<EncodedHistoryPage> ReadHistoryEncoded(const HistoryQuery& query) = 0;
  // Seqs of `sender_id`'s messages in the conversation, newest first, below `before_seq`
  // (0: from the newest).
  virtual Result<std::vector<uint64_t>> ListSenderMessages(uint64_t conv_id, uint64_t sender_id,
                                                           uint64_t before_seq, uint32_t limit) = 0;
  // Replaces the body; only the sender may edit; a deleted message cannot be edited.
  virtual Result<Message> EditMessage(uint64_t conv_id, uint64_t seq, uint64_t editor_id,
                                      const std::string& new_body) = 0;
  // Turns the message into a tombstone (body cleared, deleted = true); only the sender may
  // delete. Deleting a tombstone again is OK and changes nothing.
  virtual Result<Message> DeleteMessage(uint64_t conv_id, uint64_t seq, uint64_t actor_id) = 0;

  // ---- Inbox (rows keyed by the user's token) ------------------------------------------------

  // Applies one update to update.user_id's inbox. Idempotent: an update whose seq is not newer
  // than the stored one changes nothing (returns OK).
  virtual Status ApplyInboxUpdate(const InboxUpdate& update) = 0;
  // Applies many updates (any users of this shard) in one WriteBatch, in order; statuses in
  // input order. At most max_outbox_batch updates. What the fan-out delivery path calls.
  virtual std::vector<Status> ApplyInboxUpdates(const std::vector<InboxUpdate>& updates) = 0;
  virtual Result<InboxPage> ListInbox(const InboxQuery& query) = 0;
  virtual Result<InboxEntry> GetInboxEntry(uint64_t user_id, uint64_t conv_id) = 0;
  // Advances the read cursor to `seq` (a lower seq changes nothing). notFound if the user has no
  // inbox row for the conversation.
  virtual Result<InboxEntry> MarkRead(uint64_t user_id, uint64_t conv_id, uint64_t seq) = 0;

  // ---- Outbox (consumed by the fan-out worker) -----------------------------------------------

  // Pending inbox updates (one record per target user) in write order, starting at
  // `from_position` (inclusive; empty: the oldest). Only records whose batches are final are
  // returned: a record never appears behind a position a reader has passed, so a reader keeps
  // its position instead of rescanning from the oldest (and past the tombstones of delivered
  // records). Up to `limit` records, except that an operation's stored group of targets (at
  // most keys::kMaxOutboxTargets, 256) is never split: the first group comes whole.
  virtual Result<OutboxBatch> ReadOutbox(const std::string& from_position, uint32_t limit) = 0;
  // Deletes delivered records by position (positions from any earlier reads). A stored group
  // keeps the targets not named until they are. Unknown positions are ignored.
  virtual Status DeleteOutbox(const std::vector<std::string>& positions) = 0;

  // ---- Replication: the log --------------------------------------------------------------------

  // The write groups from `from_lsn` on (the first returned batch contains it; a batch may
  // start before it), at most about `max_bytes` of batch data but at least one batch. Empty
  // when `from_lsn` is past the latest LSN. log-gap when the WAL that holds `from_lsn` is gone
  // (the reader must re-bootstrap from a checkpoint), never a silent skip. A reader that asks
  // next for where it stopped continues the iterator the store kept for it (up to 8 readers),
  // tailing the live WAL; under CacheOnlyReads only that is done (else would-block).
  virtual Result<LogChunk> ReadLog(uint64_t from_lsn, size_t max_bytes) = 0;
  // Replica side: applies consecutive batches of the primary's log as one write. Batches this
  // store already holds (ending at or before LatestSequence()) are skipped; of the first one it
  // does not fully hold, only the operations after its LSN are applied (the copy's own write
  // groups may have been cut differently, e.g. it followed another primary before); each next
  // one must start right after the one before (failed-precondition otherwise: out of order;
  // nothing applied). Corruption if the resulting
  // sequence differs from the primary's (the copy must re-bootstrap). Nothing else may write to
  // a replica's store: its sequence numbers must stay the primary's.
  virtual Status ApplyLogBatches(const std::vector<LogBatch>& batches) = 0;
  Status ApplyLog(const LogBatch& batch) { return ApplyLogBatches({batch}); }
  // A consistent copy of the shard in `dir` (which must not exist), made of hard links where
  // the filesystem allows. Returns the LSN it holds: a replica opened on it catches up from
  // there with ReadLog(lsn + 1).
  virtual Result<uint64_t> CreateCheckpoint(const std::string& dir) = 0;
  // See ShardChecksum. Reads the whole shard: for verification, not for serving paths.
  virtual Result<ShardChecksum> Checksum() = 0;

  // ---- Epochs (docs/replication.md, Failover) ------------------------------------------------

  // A primary calls this before its first write at `epoch`: records {epoch, LatestSequence()}
  // in the shard's data, a write like any other, so every copy that applies the log holds the
  // same history. A copy whose last record is an older epoch and whose LSN is past the start of
  // the next epoch in its primary's history holds writes that primary never had (an old
  // primary's unacknowledged tail): it is rebuilt, never merged. Returns the epoch's record; an
  // epoch at or below the last recorded one records nothing and returns the last record.
  virtual Result<EpochRecord> BeginEpoch(uint64_t epoch) = 0;
  // Every epoch record in this copy, oldest first (empty for a shard written before epochs
  // were recorded).
  virtual Result<std::vector<EpochRecord>> EpochHistory() = 0;

  // ---- Splitting and merging (docs/resharding.md) -----------------------------------------------

  // Stops the store's own writes: from now on every write method answers unavailable (retryable:
  // the shard is being split) until Unseal(). Waits for writes already past the check to commit,
  // then returns the final LSN: nothing the store writes itself lands after it (ApplyLogBatches,
  // a replica's only writer, is not gated). Cheap: one atomic exchange, then a short wait.
  virtual Result<uint64_t> Seal() = 0;
  // Takes writes again (an abandoned split).
  virtual void Unseal() = 0;
  // True once a Seal has finished (its writes in flight committed): LatestSequence() is final.
  // While Seal still waits, writes are already refused but this is false.
  virtual bool sealed() const = 0;
  // The copy a split child starts from, made in `dir` (which must not exist): a checkpoint of
  // this store (hard links), which must hold exactly `expected_lsn` (failed-precondition and
  // nothing left behind otherwise), then cut to `child_range` by one deterministic write: a
  // DeleteRange of the rest of this shard's range in every sharded column family, and the meta
  // row naming `child_shard_id` and `child_range`. The outbox and the epoch records are kept
  // (the outbox is a per-copy queue; docs/formats.md). Every copy of a shard that holds the same
  // LSN makes the same write, so the children's copies are identical, LSN for LSN, without any
  // data crossing the network. Returns the child's LSN (after the cut). Takes no lock on this
  // store's writers: call it on a sealed store or a replica that is no longer applying.
  virtual Result<uint64_t> CreateSplitCopy(const std::string& dir, uint64_t child_shard_id,
                                           TokenRange child_range, uint64_t expected_lsn) = 0;
  // The copy a merged shard starts from, made in `dir` (which must not exist): a checkpoint of
  // this store (the left of two adjacent shards), which must hold exactly `expected_lsn`, then
  // every sharded row of `right` (the shard right after it, holding exactly
  // `right_expected_lsn`) written in key order in batches of a fixed number of operations, its
  // outbox records renumbered after this store's newest, and the meta row naming
  // `merged_shard_id` and the union of the two ranges. The epoch records are this store's.
  // Deterministic: copies of the two shards at the same LSNs give identical merged copies, LSN
  // for LSN. The work is proportional to `right`'s size: merging is for small shards. Returns
  // the merged copy's LSN. Call it on sealed stores or replicas that are no longer applying.
  virtual Result<uint64_t> CreateMergedCopy(const std::string& dir, uint64_t merged_shard_id,
                                            uint64_t expected_lsn, ShardStore& right,
                                            uint64_t right_expected_lsn) = 0;

  // ---- Administration -----------------------------------------------------------------------

  virtual uint64_t shard_id() const = 0;
  virtual TokenRange token_range() const = 0;
  virtual Result<ShardStats> GetStats() = 0;
  // RocksDB's last sequence number: the shard's log position (cheap; returned in write tokens).
  virtual uint64_t LatestSequence() const = 0;
  // Flushes memtables to SST files (tests and shutdown).
  virtual Status Flush() = 0;
  // Flushes, then compacts every column family down to its last level and waits. Heavy: for
  // operators after bulk loads or deletes, and for benchmarks that need a settled store.
  virtual Status CompactAll() = 0;
};

}  // namespace scrollback
