// HistoryTailCache: the newest messages of recently read conversations, as stored, shared by
// every shard of a node (StorageResources). A history page from the newest message (what a chat
// client opens a conversation with) is served from it without a RocksDB scan, and on a node's
// event loop without the two thread hops to the engine pool (decision 0014).
//
// Contract:
//   - A tail is the stored values of messages first_seq..last_seq of one conversation of one
//     store, dense (seqs are dense), and last_seq is the conversation's newest message.
//   - Tails change only *after* a RocksDB write committed, by the batch itself (ApplyBatch):
//     a message row put right after the tail's end is appended, a put inside the tail replaces
//     that message, anything else about the conversation's messages drops the tail. Every
//     write path of a store (its own writes and a replica's applied log) calls ApplyBatch with
//     the batch it committed, under the same serialization that orders its writes to the
//     conversation (the conversation's stripe lock, or the replica's apply lock).
//   - A reader that fills a tail from a scan takes a ticket (Epoch) *before* opening its
//     iterator and files the tail with it (Insert); the tail is kept only if no batch touched
//     that cache stripe in between. So a tail never holds less than a write committed before the
//     insert, and a write committed after it updates or drops it.
//   - Between a write's commit and its ApplyBatch (microseconds, before the write is
//     acknowledged) a reader may still be served the tail without it: the write is not
//     acknowledged yet, so no client can have been told of it.
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

  // The conversation's tail, or null. Counts a hit or a miss.
  std::shared_ptr<const Tail> Find(uint64_t owner, uint64_t conv_id);
  // The ticket to file a tail read from a scan that starts after this call.
  uint64_t Epoch(uint64_t owner, uint64_t conv_id);
  // Files `tail` unless a batch touched the stripe since `epoch` was taken.
  void Insert(uint64_t owner, uint64_t conv_id, std::shared_ptr<const Tail> tail, uint64_t epoch);

  // After `batch` committed to the store `owner`: updates or drops the tails of the
  // conversations whose message rows it changed. `messages_cf` is the messages column family's
  // id; message keys are keys::MessageKey. A tail grows to at most `max_messages` (the oldest
  // go). Returns false when the batch held a range delete of messages: the caller must then
  // give the store a new owner id (every tail it had is unreachable).
  bool ApplyBatch(uint64_t owner, uint32_t messages_cf, const rocksdb::WriteBatch& batch,
                  uint32_t max_messages);

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
    uint64_t epoch = 0;  // GUARDED_BY(mu): bumped by every change a batch made here.
    size_t bytes = 0;    // GUARDED_BY(mu)
    Lru lru;             // GUARDED_BY(mu): most recently used first.
    std::unordered_map<Id, Lru::iterator, IdHash> index;  // GUARDED_BY(mu)
  };
  static constexpr size_t kStripes = 64;

  Stripe& StripeOf(const Id& id) { return stripes_[IdHash()(id) % kStripes]; }
  // REQUIRES: stripe.mu held.
  void Put(Stripe& stripe, const Id& id, std::shared_ptr<const Tail> tail);
  void Erase(Stripe& stripe, Lru::iterator at);
  // One message row change of a committed batch. `value` null: the row was deleted.
  void ApplyRow(uint64_t owner, uint64_t conv_id, uint64_t seq, const std::string_view* value,
                uint32_t max_messages);

  const size_t stripe_capacity_;
  std::array<Stripe, kStripes> stripes_;
  std::atomic<uint64_t> hits_{0}, misses_{0}, inserts_{0}, evictions_{0};
  std::atomic<uint64_t> bytes_{0}, entries_{0};
};

}  // namespace scrollback::engine_internal
