// HistoryTailCache: see history_tail_cache.h.
#include "history_tail_cache.h"

#include "scrollback/engine/keys.h"

namespace scrollback::engine_internal {

namespace {

constexpr size_t kMessageKeySize = keys::kPrefixSize + 1 + 8;

// Collects the message rows of a batch into `out` (HistoryTailCache::BatchRows).
class MessageRows : public rocksdb::WriteBatch::Handler {
 public:
  MessageRows(uint32_t messages_cf, HistoryTailCache::BatchRows& out)
      : messages_cf_(messages_cf), out_(out) {}

  rocksdb::Status PutCF(uint32_t cf, const rocksdb::Slice& key,
                        const rocksdb::Slice& value) override {
    if (cf == messages_cf_) Add(key, std::string_view(value.data(), value.size()));
    return rocksdb::Status::OK();
  }
  rocksdb::Status DeleteCF(uint32_t cf, const rocksdb::Slice& key) override {
    if (cf == messages_cf_) Add(key, std::nullopt);
    return rocksdb::Status::OK();
  }
  rocksdb::Status SingleDeleteCF(uint32_t cf, const rocksdb::Slice& key) override {
    return DeleteCF(cf, key);
  }
  rocksdb::Status DeleteRangeCF(uint32_t cf, const rocksdb::Slice&,
                                const rocksdb::Slice&) override {
    if (cf == messages_cf_) out_.unfollowable = true;
    return rocksdb::Status::OK();
  }
  rocksdb::Status MergeCF(uint32_t cf, const rocksdb::Slice& key, const rocksdb::Slice&) override {
    if (cf == messages_cf_) Add(key, std::nullopt);  // Never written; treated as a change.
    return rocksdb::Status::OK();
  }
  // Other records (log data, markers) change no message row.
  void LogData(const rocksdb::Slice&) override {}

 private:
  void Add(const rocksdb::Slice& key, std::optional<std::string_view> value) {
    if (key.size() != kMessageKeySize ||
        static_cast<uint8_t>(key[keys::kPrefixSize]) != static_cast<uint8_t>(keys::Tag::kMessage)) {
      out_.unfollowable = true;  // Not a message key in the messages family: trust nothing.
      return;
    }
    out_.rows.push_back(
        {keys::GetBigEndian64(key.data() + 8), keys::GetBigEndian64(key.data() + 17), value});
  }

  const uint32_t messages_cf_;
  HistoryTailCache::BatchRows& out_;
};

}  // namespace

HistoryTailCache::HistoryTailCache(size_t capacity_bytes)
    : stripe_capacity_(capacity_bytes / kStripes) {}

uint64_t HistoryTailCache::NewOwner() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1);
}

std::shared_ptr<const HistoryTailCache::Tail> HistoryTailCache::Find(uint64_t owner,
                                                                     uint64_t conv_id) {
  if (!enabled()) return nullptr;
  const Id id{owner, conv_id};
  Stripe& stripe = StripeOf(id);
  std::lock_guard lock(stripe.mu);
  auto it = stripe.index.find(id);
  if (it == stripe.index.end() || stripe.writing.count(id) != 0) return nullptr;
  stripe.lru.splice(stripe.lru.begin(), stripe.lru, it->second);
  return it->second->second;
}

uint64_t HistoryTailCache::Epoch(uint64_t owner, uint64_t conv_id) {
  Stripe& stripe = StripeOf({owner, conv_id});
  std::lock_guard lock(stripe.mu);
  return EpochOf({owner, conv_id});
}

void HistoryTailCache::Insert(uint64_t owner, uint64_t conv_id, std::shared_ptr<const Tail> tail,
                              uint64_t epoch) {
  if (!enabled() || tail->Bytes() > stripe_capacity_) return;
  const Id id{owner, conv_id};
  Stripe& stripe = StripeOf(id);
  std::lock_guard lock(stripe.mu);
  // A batch may have changed what the scan read, or is changing it now.
  if (EpochOf(id) != epoch || stripe.writing.count(id) != 0) return;
  Put(stripe, id, std::move(tail));
  inserts_.fetch_add(1, std::memory_order_relaxed);
}

HistoryTailCache::BatchRows HistoryTailCache::BeginBatch(uint64_t owner, uint32_t messages_cf,
                                                         const rocksdb::WriteBatch& batch) {
  BatchRows out;
  out.owner = owner;
  if (!enabled()) return out;
  MessageRows rows(messages_cf, out);
  if (!batch.Iterate(&rows).ok()) out.unfollowable = true;
  for (const BatchRows::Row& row : out.rows) BeginRow(owner, row.conv_id);
  return out;
}

bool HistoryTailCache::EndBatch(const BatchRows& batch, uint32_t max_messages, bool committed) {
  for (const BatchRows::Row& row : batch.rows) EndRow(batch.owner, row, max_messages, committed);
  return !batch.unfollowable;
}

void HistoryTailCache::BeginRow(uint64_t owner, uint64_t conv_id) {
  const Id id{owner, conv_id};
  Stripe& stripe = StripeOf(id);
  std::lock_guard lock(stripe.mu);
  ++EpochOf(id);
  ++stripe.writing[id];
}

void HistoryTailCache::EndRow(uint64_t owner, const BatchRows::Row& row, uint32_t max_messages,
                              bool committed) {
  const uint64_t seq = row.seq;
  const std::optional<std::string_view>& value = row.value;
  const Id id{owner, row.conv_id};
  Stripe& stripe = StripeOf(id);
  std::lock_guard lock(stripe.mu);
  ++EpochOf(id);
  if (auto writing = stripe.writing.find(id); writing != stripe.writing.end()) {
    if (--writing->second == 0) stripe.writing.erase(writing);
  }
  auto it = stripe.index.find(id);
  if (it == stripe.index.end()) return;
  if (!committed) {
    Erase(stripe, it->second);
    return;
  }
  const Tail& old = *it->second->second;
  const bool appended = seq == old.last_seq + 1;
  const bool replaced = seq >= old.first_seq && seq <= old.last_seq;
  if (value && seq < old.first_seq) return;  // Older than the tail: not in it.
  if (!value || (!appended && !replaced) || value->empty() ||
      value->size() % sizeof(uint64_t) != 0) {
    Erase(stripe, it->second);
    return;
  }
  // A new tail: copy-on-write, readers may hold the old one.
  auto next = std::make_shared<Tail>();
  const uint64_t last = appended ? seq : old.last_seq;
  const uint64_t first = appended && max_messages > 0 && last - old.first_seq + 1 > max_messages
                             ? last - max_messages + 1
                             : old.first_seq;
  next->first_seq = first;
  next->last_seq = last;
  next->spans.reserve(last - first + 1);
  for (uint64_t s = first; s <= last; ++s) next->Add(s == seq ? *value : old.Value(s));
  Erase(stripe, it->second);
  if (next->Bytes() > stripe_capacity_) {
    evictions_.fetch_add(1, std::memory_order_relaxed);  // Grew past its stripe: dropped.
    return;
  }
  Put(stripe, id, std::move(next));
}

void HistoryTailCache::Put(Stripe& stripe, const Id& id, std::shared_ptr<const Tail> tail) {
  auto existing = stripe.index.find(id);
  if (existing != stripe.index.end()) Erase(stripe, existing->second);
  const size_t bytes = tail->Bytes();
  while (!stripe.lru.empty() && stripe.bytes + bytes > stripe_capacity_) {
    Erase(stripe, std::prev(stripe.lru.end()));
    evictions_.fetch_add(1, std::memory_order_relaxed);
  }
  stripe.lru.emplace_front(id, std::move(tail));
  stripe.index.emplace(id, stripe.lru.begin());
  stripe.bytes += bytes;
  bytes_.fetch_add(bytes, std::memory_order_relaxed);
  entries_.fetch_add(1, std::memory_order_relaxed);
}

void HistoryTailCache::Erase(Stripe& stripe, Lru::iterator at) {
  const size_t bytes = at->second->Bytes();
  stripe.bytes -= bytes;
  bytes_.fetch_sub(bytes, std::memory_order_relaxed);
  entries_.fetch_sub(1, std::memory_order_relaxed);
  stripe.index.erase(at->first);
  stripe.lru.erase(at);
}

HistoryTailCache::Stats HistoryTailCache::stats() const {
  Stats out;
  out.hits = hits_.load(std::memory_order_relaxed);
  out.misses = misses_.load(std::memory_order_relaxed);
  out.inserts = inserts_.load(std::memory_order_relaxed);
  out.evictions = evictions_.load(std::memory_order_relaxed);
  out.bytes = bytes_.load(std::memory_order_relaxed);
  out.entries = entries_.load(std::memory_order_relaxed);
  return out;
}

}  // namespace scrollback::engine_internal
