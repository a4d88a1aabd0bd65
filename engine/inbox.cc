// ShardStoreImpl's inbox methods: the inbox rows of the users this shard owns (cf inbox: one
// state row and one listing row per user and conversation). Fan-out updates, single and
// batched; listing by activity; single entries; read cursors. Declared in shard_store_impl.h.
#include <pthread.h>
#include <rocksdb/perf_context.h>
#include <rocksdb/perf_level.h>
#include <rocksdb/snapshot.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "rocksdb_status.h"
#include "scrollback/engine/keys.h"
#include "scrollback/engine/value_codec.h"
#include "shard_store_impl.h"
#include "utf8.h"

namespace scrollback::engine_internal {

// ---- Inbox ----------------------------------------------------------------------------------

Status ShardStoreImpl::ApplyInboxUpdate(const InboxUpdate& update) {
  return ApplyInboxUpdates({update}).front();
}

std::vector<Status> ShardStoreImpl::ApplyInboxUpdates(const std::vector<InboxUpdate>& updates) {
  std::vector<Status> statuses(updates.size());
  if (updates.size() > limits_.max_outbox_batch) {
    Status too_many = Status::InvalidArgument("updates", "more updates than max_outbox_batch");
    std::fill(statuses.begin(), statuses.end(), too_many);
    return statuses;
  }
  // Lock every user stripe involved, in index order (no deadlock with other batches).
  std::vector<size_t> stripes;
  for (size_t i = 0; i < updates.size(); ++i) {
    statuses[i] = CheckInboxUpdate(updates[i]);
    if (statuses[i].ok()) stripes.push_back(UserStripe(updates[i].user_id));
  }
  std::sort(stripes.begin(), stripes.end());
  stripes.erase(std::unique(stripes.begin(), stripes.end()), stripes.end());
  std::vector<std::unique_lock<std::mutex>> locks;
  locks.reserve(stripes.size());
  for (size_t stripe : stripes) locks.emplace_back(user_locks_[stripe]);

  // One WriteBatch for all, one row pair per (user, conversation): `slots` holds each pair as
  // the updates so far left it, so a later update of the same pair builds on an earlier one.
  std::map<std::pair<uint64_t, uint64_t>, InboxSlot> slots;
  for (size_t i = 0; i < updates.size(); ++i) {
    if (!statuses[i].ok()) continue;
    const InboxUpdate& update = updates[i];
    auto slot = slots.find({update.user_id, update.conv_id});
    if (slot == slots.end()) {
      InboxSlot read;
      // Newest data, no snapshot: the user's stripe lock keeps other writers out.
      statuses[i] = ReadInboxStateLocked(update.user_id, update.conv_id, &read.stored);
      if (!statuses[i].ok()) continue;
      read.state = read.stored;
      slot = slots.emplace(std::make_pair(update.user_id, update.conv_id), std::move(read)).first;
    }
    statuses[i] = StageInboxUpdate(update, &slot->second);
  }
  rocksdb::WriteBatch batch;
  Status staged;
  for (const auto& [ids, slot] : slots) {
    if (!slot.changed) continue;
    staged = WriteInboxSlot(batch, ids.first, ids.second, slot);
    if (!staged.ok()) break;
  }
  if (!staged.ok()) {
    for (Status& status : statuses) {
      if (status.ok()) status = staged;
    }
    return statuses;
  }
  Status written = batch.Count() == 0 ? Status::Ok() : Write(batch, "apply inbox updates");
  for (const auto& [ids, slot] : slots) {
    if (slot.changed) CacheInboxState(ids.first, ids.second, written.ok() ? &slot.state : nullptr);
  }
  if (!written.ok()) {
    for (Status& status : statuses) {
      if (status.ok()) status = written;
    }
  }
  return statuses;
}

namespace {

// While it lives, RocksDB counts (at least) on this thread; Count(): the tombstones iterators
// stepped over since it was made.
class TombstonesSkipped {
 public:
  TombstonesSkipped() : level_(rocksdb::GetPerfLevel()) {
    if (level_ < rocksdb::PerfLevel::kEnableCount) {
      rocksdb::SetPerfLevel(rocksdb::PerfLevel::kEnableCount);
    }
    before_ = rocksdb::get_perf_context()->internal_delete_skipped_count;
  }
  ~TombstonesSkipped() { rocksdb::SetPerfLevel(level_); }
  TombstonesSkipped(const TombstonesSkipped&) = delete;
  TombstonesSkipped& operator=(const TombstonesSkipped&) = delete;

  uint64_t Count() const {
    return rocksdb::get_perf_context()->internal_delete_skipped_count - before_;
  }

 private:
  const rocksdb::PerfLevel level_;
  uint64_t before_ = 0;
};

// At most one cleanup per store in this time, however many heavy pages are read.
constexpr int64_t kInboxCleanupIntervalMs = 5'000;

}  // namespace

void ShardStoreImpl::CleanUpInboxTombstones(uint64_t user_id, uint64_t tombstones) {
  if (options_.inbox_cleanup_tombstones == 0 || tombstones < options_.inbox_cleanup_tombstones) {
    return;
  }
  InboxCleanupCounters& counters = InboxCleanupCountersOf(*resources_);
  counters.tombstone_heavy_pages.fetch_add(1, std::memory_order_relaxed);
  // The store's clock (injected; a wall clock that may step back: a step back counts as the
  // interval having passed, so cleanups never stop).
  const int64_t now_ms = clock_->NowMs();
  int64_t last_ms = inbox_cleanup_ms_.load(std::memory_order_relaxed);
  if ((now_ms >= last_ms && now_ms - last_ms < kInboxCleanupIntervalMs) ||
      !inbox_cleanup_ms_.compare_exchange_strong(last_ms, now_ms)) {
    return;  // A cleanup started recently (or is starting on another thread).
  }
  std::lock_guard lock(cleanup_mu_);
  if (cleanup_stop_) return;
  if (!cleanup_thread_.joinable()) {
    try {
      cleanup_thread_ = std::thread([this] { InboxCleanupLoop(); });
    } catch (const std::system_error&) {
      // No thread to be had now: this page is answered anyway; a later heavy page tries again.
      counters.compaction_failures.fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }
  cleanup_user_ = user_id;
  counters.compactions.fetch_add(1, std::memory_order_relaxed);
  cleanup_cv_.notify_one();
}

void ShardStoreImpl::InboxCleanupLoop() {
  pthread_setname_np(pthread_self(), "sb-inbox-clean");
  std::unique_lock lock(cleanup_mu_);
  for (;;) {
    cleanup_cv_.wait(lock, [this] { return cleanup_stop_ || cleanup_user_.has_value(); });
    if (cleanup_stop_) return;
    const uint64_t user_id = *cleanup_user_;
    cleanup_user_.reset();
    lock.unlock();
    const Key begin(user_id, Tag::kInboxByActivity);
    const Key end = TagEnd(user_id, Tag::kInboxByActivity);
    const rocksdb::Slice begin_slice = ToSlice(begin), end_slice = ToSlice(end);
    rocksdb::CompactRangeOptions options;
    options.exclusive_manual_compaction = false;  // Automatic compactions go on meanwhile.
    // Flush and compact at once, even if the flush's new L0 file brings the shard to RocksDB's
    // write slowdown: waiting for the load to drop could wait behind the very writes that made
    // the tombstones, and the cleanup is rare (one per shard per 5 s at most).
    options.allow_write_stall = true;
    // The bottom level too: a tombstone is dropped only by a compaction into the last level
    // that holds its key range.
    options.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForceOptimized;
    const rocksdb::Status compacted =
        db_->CompactRange(options, handles_[kInboxCf], &begin_slice, &end_slice);
    // A failed cleanup is harmless (the tombstones stay until a later one) but counted; one
    // the destructor paused (DisableManualCompaction) is not a failure.
    if (!compacted.ok() && !compacted.IsManualCompactionPaused()) {
      InboxCleanupCountersOf(*resources_)
          .compaction_failures.fetch_add(1, std::memory_order_relaxed);
    }
    lock.lock();
  }
}

Result<InboxPage> ShardStoreImpl::ListInbox(const InboxQuery& query) {
  SB_RETURN_IF_ERROR(CheckId(query.user_id, "user_id"));
  SB_RETURN_IF_ERROR(CheckOwned(query.user_id, "user_id"));
  SB_RETURN_IF_ERROR(CheckLimit(query.limit, limits_.max_page_size, "limit"));
  // The cursor is the suffix of the last listed row's key: ~ordered(activity) | conv_id.
  constexpr size_t kCursorBytes = 16;
  if (!query.cursor.empty() && query.cursor.size() != kCursorBytes) {
    return Status::InvalidArgument("cursor", "malformed inbox cursor");
  }
  Key start(query.user_id, Tag::kInboxByActivity);
  start.AppendBytes(query.cursor);
  // Counts the deleted listing rows the scan steps over (RocksDB's per-thread perf counters,
  // counts only, for this scan).
  TombstonesSkipped skipped;
  BoundedIterator it(db_.get(), handles_[kInboxCf], Key(query.user_id, Tag::kInboxByActivity),
                     TagEnd(query.user_id, Tag::kInboxByActivity));
  it->Seek(ToSlice(start));
  if (!query.cursor.empty() && it->Valid() && ToView(it->key()) == start.view()) it->Next();

  InboxPage page;
  page.entries.reserve(query.limit);
  while (it->Valid() && page.entries.size() < query.limit) {
    SB_RETURN_IF_ERROR(codec::DecodeInboxEntry(ToView(it->value()), &page.entries.emplace_back()));
    it->Next();
  }
  SB_RETURN_IF_ERROR(FromRocksDb(it->status(), "list inbox"));
  CleanUpInboxTombstones(query.user_id, skipped.Count());
  page.has_more = it->Valid();
  if (page.has_more) {
    Key last = keys::InboxByActivityKey(query.user_id, page.entries.back().last_activity_ms,
                                        page.entries.back().conv_id);
    page.next_cursor = std::string(last.view().substr(keys::kPrefixSize + 1));
  }
  return page;
}

Result<InboxEntry> ShardStoreImpl::GetInboxEntry(uint64_t user_id, uint64_t conv_id) {
  SB_RETURN_IF_ERROR(CheckId(user_id, "user_id"));
  SB_RETURN_IF_ERROR(CheckId(conv_id, "conv_id"));
  SB_RETURN_IF_ERROR(CheckOwned(user_id, "user_id"));
  // The state row names the listing row (by last_activity_ms), and a concurrent update replaces
  // both in one batch: read them at one snapshot, or the listing row the state names may be gone
  // by the second read. A snapshot, not the user's lock: this read must not wait behind a
  // writer's WAL write (storage nodes call it on their event loops, under CacheOnlyReads, whose
  // read tier PointGet keeps).
  rocksdb::ManagedSnapshot snapshot(db_.get());
  std::optional<codec::InboxState> state;
  SB_RETURN_IF_ERROR(ReadInboxState(user_id, conv_id, snapshot.snapshot(), &state));
  if (!state || state->removed) return InboxNotFound(user_id, conv_id);
  return ReadInboxEntry(user_id, conv_id, *state, snapshot.snapshot());
}

Result<InboxEntry> ShardStoreImpl::MarkRead(uint64_t user_id, uint64_t conv_id, uint64_t seq) {
  SB_RETURN_IF_ERROR(CheckId(user_id, "user_id"));
  SB_RETURN_IF_ERROR(CheckId(conv_id, "conv_id"));
  SB_RETURN_IF_ERROR(CheckOwned(user_id, "user_id"));
  std::lock_guard lock(UserLock(user_id));
  // Newest data, no snapshot: the user's stripe lock keeps every other inbox writer out from
  // the first read to the write.
  std::optional<codec::InboxState> state;
  SB_RETURN_IF_ERROR(ReadInboxStateLocked(user_id, conv_id, &state));
  if (!state || state->removed) return InboxNotFound(user_id, conv_id);
  auto entry = ReadInboxEntry(user_id, conv_id, *state, nullptr);
  if (!entry.ok()) return entry;
  // Clamped to the newest message this row knows of: the read position never moves back, so a
  // seq past the end would mute the conversation's unread count for good. (A reader ahead of
  // fan-out in flight is clamped too, and marks read again once the row catches up.)
  // Rows of conversations above the fan-out limit are not updated per message, so this shard
  // cannot know their last seq: the smart client (and so the router) clamps to the
  // conversation's last seq before calling (ChatClient::MarkRead).
  if (entry->fan_out) seq = std::min(seq, entry->last_seq);
  if (seq <= state->read_seq) return entry;

  state->read_seq = seq;
  entry->read_seq = seq;
  entry->unread_count = entry->last_seq > seq ? entry->last_seq - seq : 0;
  rocksdb::WriteBatch batch;
  SB_RETURN_IF_ERROR(
      Put(batch, kInboxCf, keys::InboxStateKey(user_id, conv_id), codec::EncodeInboxState(*state)));
  SB_RETURN_IF_ERROR(Put(batch, kInboxCf,
                         keys::InboxByActivityKey(user_id, state->last_activity_ms, conv_id),
                         codec::EncodeInboxEntry(*entry)));
  Status written = Write(batch, "mark read");
  CacheInboxState(user_id, conv_id, written.ok() ? &state : nullptr);
  SB_RETURN_IF_ERROR(written);
  return entry;
}

// ---- Helpers --------------------------------------------------------------------------------

Status ShardStoreImpl::CheckInboxUpdate(const InboxUpdate& update) const {
  SB_RETURN_IF_ERROR(CheckId(update.user_id, "user_id"));
  SB_RETURN_IF_ERROR(CheckId(update.conv_id, "conv_id"));
  SB_RETURN_IF_ERROR(CheckOwned(update.user_id, "user_id"));
  if (update.preview.size() > limits_.preview_bytes) {
    return Status::InvalidArgument("preview", "preview longer than preview_bytes");
  }
  if (update.title.size() > limits_.max_title_bytes) {
    return Status::InvalidArgument("title", "title longer than max_title_bytes");
  }
  if (!IsValidUtf8(update.title)) {
    return Status::InvalidArgument("title", "title is not valid UTF-8");
  }
  if (update.kind > InboxUpdateKind::kChanged) {
    return Status::InvalidArgument("kind", "unknown inbox update kind");
  }
  if (update.message_kind > MessageKind::kMembersRemoved) {
    return Status::InvalidArgument("message_kind", "unknown message kind");
  }
  return Status::Ok();
}

Status ShardStoreImpl::StageInboxUpdate(const InboxUpdate& update, InboxSlot* slot) {
  std::optional<codec::InboxState>& state = slot->state;
  if (update.kind == InboxUpdateKind::kChanged && state && update.seq == state->last_seq) {
    return StagePreviewChange(update, slot);
  }
  if (state && update.seq <= state->last_seq) return Status::Ok();  // Already applied.
  // A change of a message the row has not seen yet stands for that message (with its newest
  // text): the message's own update, if it comes later, is then a no-op.
  codec::InboxState next;
  next.last_seq = update.seq;
  next.preview_revision = update.revision;
  next.read_seq = state ? state->read_seq : 0;
  // Your own message (or your own membership change) is read by definition.
  if (update.sender_id == update.user_id) next.read_seq = std::max(next.read_seq, update.seq);
  if (update.kind == InboxUpdateKind::kRemoved) {
    next.removed = true;
    slot->listing.reset();
  } else {
    next.last_activity_ms = update.activity_ms;
    slot->listing = ListingRow(update, next);
  }
  state = next;
  slot->changed = true;
  return Status::Ok();
}

InboxEntry ShardStoreImpl::ListingRow(const InboxUpdate& update, const codec::InboxState& state) {
  InboxEntry entry;
  entry.user_id = update.user_id;
  entry.conv_id = update.conv_id;
  entry.last_seq = update.seq;
  entry.last_activity_ms = state.last_activity_ms;
  entry.last_sender_id = update.sender_id;
  entry.preview = update.preview;
  entry.preview_kind = update.message_kind;
  entry.read_seq = state.read_seq;
  entry.fan_out = update.fan_out;
  entry.title = update.title;
  return entry;
}

Status ShardStoreImpl::StagePreviewChange(const InboxUpdate& update, InboxSlot* slot) {
  codec::InboxState& current = *slot->state;
  // Idempotent and order-proof: only a newer revision of the row's newest message counts.
  if (current.removed || update.revision <= current.preview_revision) return Status::Ok();
  // The update carries everything the listing row shows (it is built like the message's own
  // update), so the row is rebuilt without reading it: it may exist only in this batch so far.
  // It stays where it is (current.last_activity_ms); a deleted message's preview is empty.
  current.preview_revision = update.revision;
  slot->listing = ListingRow(update, current);
  slot->changed = true;
  return Status::Ok();
}

Status ShardStoreImpl::WriteInboxSlot(rocksdb::WriteBatch& batch, uint64_t user_id,
                                      uint64_t conv_id, const InboxSlot& slot) {
  const codec::InboxState& state = *slot.state;
  const bool listed = !state.removed;
  if (slot.stored && !slot.stored->removed &&
      (!listed || slot.stored->last_activity_ms != state.last_activity_ms)) {
    SB_RETURN_IF_ERROR(
        Delete(batch, kInboxCf,
               keys::InboxByActivityKey(user_id, slot.stored->last_activity_ms, conv_id)));
  }
  if (listed) {
    if (!slot.listing) return Status::Internal("inbox update staged without its listing row");
    SB_RETURN_IF_ERROR(Put(batch, kInboxCf,
                           keys::InboxByActivityKey(user_id, state.last_activity_ms, conv_id),
                           codec::EncodeInboxEntry(*slot.listing)));
  }
  return Put(batch, kInboxCf, keys::InboxStateKey(user_id, conv_id),
             codec::EncodeInboxState(state));
}

Status ShardStoreImpl::ReadInboxState(uint64_t user_id, uint64_t conv_id,
                                      const rocksdb::Snapshot* snapshot,
                                      std::optional<codec::InboxState>* out) {
  rocksdb::PinnableSlice value;
  rocksdb::Status s = PointGet(handles_[kInboxCf], ToSlice(keys::InboxStateKey(user_id, conv_id)),
                               &value, snapshot);
  if (s.IsNotFound()) {
    out->reset();
    return Status::Ok();
  }
  SB_RETURN_IF_ERROR(FromRocksDb(s, "read inbox state"));
  return codec::DecodeInboxState(ToView(value), &out->emplace());
}

Status ShardStoreImpl::ReadInboxStateLocked(uint64_t user_id, uint64_t conv_id,
                                            std::optional<codec::InboxState>* out) {
  if (log_applied_.load(std::memory_order_relaxed)) {
    return ReadInboxState(user_id, conv_id, nullptr, out);
  }
  InboxStateCache& cache = inbox_cache_[UserStripe(user_id)];
  if (const InboxStateCache::State* cached = cache.Find(user_id, conv_id)) {
    *out = *cached;
    return Status::Ok();
  }
  SB_RETURN_IF_ERROR(ReadInboxState(user_id, conv_id, nullptr, out));
  cache.Put(user_id, conv_id, *out);
  return Status::Ok();
}

Result<InboxEntry> ShardStoreImpl::ReadInboxEntry(uint64_t user_id, uint64_t conv_id,
                                                  const codec::InboxState& state,
                                                  const rocksdb::Snapshot* snapshot) {
  rocksdb::PinnableSlice value;
  rocksdb::Status s =
      PointGet(handles_[kInboxCf],
               ToSlice(keys::InboxByActivityKey(user_id, state.last_activity_ms, conv_id)), &value,
               snapshot);
  if (s.IsNotFound()) return Status::Corruption("inbox state without its listing row");
  SB_RETURN_IF_ERROR(FromRocksDb(s, "read inbox entry"));
  InboxEntry entry;
  SB_RETURN_IF_ERROR(codec::DecodeInboxEntry(ToView(value), &entry));
  return entry;
}

}  // namespace scrollback::engine_internal
