// HistoryTailCache: the newest messages of recently read conversations, as stored, shared by
// every shard of a node (StorageResources). A history page from the newest message (what a chat
// client opens a conversation with) is served from it without a RocksDB scan, and on a node's
// event loop without the two thread hops to the engine pool (decision 0014).
//
// Contract:
//   - A tail is the stored values of messages first_seq..last_seq of one conversation of one
//     store, dense (seqs are dense), and last_seq is the conversation's newest message.
//   - Every write path of a store (its own writes and a replica's applied log) brackets its
//     RocksDB write with the batch's message rows: BeginBatch reads them before the write,
//     EndBatch follows them after it (with whether it committed), under the same serialization that
//     orders its writes to the conversation (the conversation's stripe lock, or the replica's apply
//     lock).
//   - From BeginBatch to EndBatch the conversations whose message rows the batch holds are
//     *being written*: their tails are not served and not filled. So no reader is served a
//     tail without a write that committed before the read (another reader may already have
//     seen it: a point read, an inbox the fan-out updated, a replica).
//   - EndBatch of a committed batch changes the tails by the batch's rows: a message row put
//     right after the tail's end is appended, a put inside the tail replaces that message, a
//     put below it changes nothing, anything else drops the tail. A batch that did not commit
//     drops the tails it touched.
//   - A reader that fills a tail from a scan takes a ticket (Epoch) *before* opening its
//     iterator and files the tail with it (Insert); the tail is kept only if no batch of that
//     conversation (or of one that shares its ticket slot) began or ended in between and none
//     is being written. So a tail never holds
//     less than a write committed before the insert, and a write committed after it updates or
//     drops it.
//
// Bounded by bytes (LRU per stripe). Thread-safe; every method is short and takes one stripe's
// mutex (a leaf lock).
#pragma once

#include <rocksdb/write_batch.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace scrollback::engine_internal {

class HistoryTailCache {
 public:
  // Immutable once filed: readers hold it by shared_ptr while they copy from it.
  struct Tail {
    uint64_t first_seq = 0;
    uint64_t last_seq = 0;
    std::vector<uint64_t> words;                       // The stored values, word-aligned.
    std::vector<std::pair<uint32_t, uint32_t>> spans;  // Seq first_seq + i: (offset, size), words.

    std::string_view Value(uint64_t seq) const {
      auto [offset, size] = spans[seq - first_seq];
      return {reinterpret_cast<const char*>(words.data() + offset), size * sizeof(uint64_t)};
    }
    size_t Bytes() const {
      return sizeof(Tail) + words.size() * sizeof(uint64_t) + spans.size() * sizeof(spans[0]);
    }
    // Appends a stored message value (a whole number of words; callers check).
    void Add(std::string_view value) {
      const size_t offset = words.size();
      words.resize(offset + value.size() / sizeof(uint64_t));
      std::memcpy(words.data() + offset, value.data(), value.size());
      spans.emplace_back(static_cast<uint32_t>(offset),
                         static_cast<uint32_t>(value.size() / sizeof(uint64_t)));
    }
  };

  struct Stats {
    uint64_t hits = 0;
    uint64_t misses = 0;
    uint64_t inserts = 0;
    uint64_t evictions = 0;
    uint64_t bytes = 0;
    uint64_t entries = 0;
  };

  // 0 bytes: caches nothing (every Find misses, Insert keeps nothing).
  explicit HistoryTailCache(size_t capacity_bytes);

  bool enabled() const { return stripe_capacity_ > 0; }

  // A fresh owner id for a store: tails are filed under (owner, conversation). Never reused.
  static uint64_t NewOwner();

  // The conversation's tail, or null (none, or the conversation is being written).
  std::shared_ptr<const Tail> Find(uint64_t owner, uint64_t conv_id);
  // What a reader did with a Find: served a page from the tail, or read RocksDB instead.
  void CountHit() { hits_.fetch_add(1, std::memory_order_relaxed); }
  void CountMiss() { misses_.fetch_add(1, std::memory_order_relaxed); }
  // The ticket to file a tail read from a scan that starts after this call.
  uint64_t Epoch(uint64_t owner, uint64_t conv_id);
  // Files `tail` unless a batch touched the stripe since `epoch` was taken.
  void Insert(uint64_t owner, uint64_t conv_id, std::shared_ptr<const Tail> tail, uint64_t epoch);

  // The message rows of one batch, read once, before its write (BeginBatch), and followed after
  // it (EndBatch). The values are views into the batch, which must outlive this and stay
  // unchanged (RocksDB's write only stamps its sequence number).
  struct BatchRows {
    struct Row {
      uint64_t conv_id;
      uint64_t seq;
      std::optional<std::string_view> value;  // None: the row was deleted.
    };
    uint64_t owner = 0;
    std::vector<Row> rows;
    // The batch held a range delete of messages, a key that is not a message key in the
    // messages family, or could not be read: no tail of the store can be trusted after it.
    bool unfollowable = false;
  };

  // Before `batch` is written to the store `owner`: marks the conversations whose message rows
  // it holds as being written, and returns those rows. `messages_cf` is the messages column
  // family's id; message keys are keys::MessageKey.
  BatchRows BeginBatch(uint64_t owner, uint32_t messages_cf, const rocksdb::WriteBatch& batch);
  // After the write of the batch BeginBatch read: if it `committed`, updates or drops the tails
  // of the conversations whose message rows it changed (a tail grows to at most
  // `max_messages`, the oldest go); if not, drops them. Ends their being written. Returns false
  // when the batch was unfollowable: the caller must then give the store a new owner id (every
  // tail it had becomes unreachable).
  bool EndBatch(const BatchRows& batch, uint32_t max_messages, bool committed);

  Stats stats() const;

 private:
  struct Id {
    uint64_t owner;
    uint64_t conv_id;
    bool operator==(const Id&) const = default;
  };
  struct IdHash {
    size_t operator()(const Id& id) const {
      return std::hash<uint64_t>()(id.owner * 0x9E3779B97F4A7C15ull ^ id.conv_id);
    }
  };
  using Lru = std::list<std::pair<Id, std::shared_ptr<const Tail>>>;
  struct Stripe {
    std::mutex mu;
    size_t bytes = 0;  // GUARDED_BY(mu)
    // GUARDED_BY(mu): conversations being written (BeginBatch to EndBatch), with the number of
    // their message rows in the batches in flight.
    std::unordered_map<Id, uint32_t, IdHash> writing;
    Lru lru;  // GUARDED_BY(mu): most recently used first.
    std::unordered_map<Id, Lru::iterator, IdHash> index;  // GUARDED_BY(mu)
  };
  static constexpr size_t kStripes = 64;
  // Fill tickets: a counter per slot, bumped by every batch's begin and end of a conversation
  // hashed to it (a fill is refused only by writes of its own slot's conversations, one in
  // 65,536, not by all the writes of its stripe). Slot s belongs to stripe s % kStripes, whose
  // mutex guards it.
  static constexpr size_t kEpochSlots = size_t{1} << 16;
  static_assert(kEpochSlots % kStripes == 0);

  Stripe& StripeOf(const Id& id) { return stripes_[IdHash()(id) % kStripes]; }
  uint64_t& EpochOf(const Id& id) { return epochs_[IdHash()(id) % kEpochSlots]; }
  // REQUIRES: stripe.mu held.
  void Put(Stripe& stripe, const Id& id, std::shared_ptr<const Tail> tail);
  void Erase(Stripe& stripe, Lru::iterator at);
  // One message row of a batch: BeginRow before its write; EndRow after it, with the row's
  // change if the batch committed (`committed` false: the tail is dropped).
  void BeginRow(uint64_t owner, uint64_t conv_id);
  void EndRow(uint64_t owner, const BatchRows::Row& row, uint32_t max_messages, bool committed);

  const size_t stripe_capacity_;
  std::array<Stripe, kStripes> stripes_;
  std::vector<uint64_t> epochs_ = std::vector<uint64_t>(kEpochSlots, 0);
  std::atomic<uint64_t> hits_{0}, misses_{0}, inserts_{0}, evictions_{0};
  std::atomic<uint64_t> bytes_{0}, entries_{0};
};

}  // namespace scrollback::engine_internal
