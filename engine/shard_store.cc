// ShardStore on RocksDB. Layout: docs/formats.md; keys: scrollback/engine/keys.h.
#include "scrollback/engine/shard_store.h"

#include <rocksdb/cache.h>
#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/table_properties_collectors.h>
#include <rocksdb/write_batch.h>
#include <rocksdb/write_buffer_manager.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string_view>
#include <tuple>
#include <unordered_map>

#include "rocksdb_status.h"
#include "scrollback/engine/keys.h"
#include "value_codec.h"

namespace scrollback {
namespace {

using keys::Key;

// Set while a CacheOnlyReads scope lives on this thread.
thread_local bool cache_only_reads = false;

// The options of every read: memory only inside a CacheOnlyReads scope.
rocksdb::ReadOptions CurrentReadOptions() {
  rocksdb::ReadOptions options;
  if (cache_only_reads) options.read_tier = rocksdb::kBlockCacheTier;
  return options;
}
using keys::Tag;

// Layout version of keys and values (docs/formats.md). Bump only with a migration.
// 2: the outbox became a FIFO queue (tag 0x41).
constexpr uint32_t kFormatVersion = 2;

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
constexpr std::array<const char*, kNumCfs> kCfNames = {"default", "conversations", "messages",
                                                       "indexes", "inbox",         "outbox"};

class StorageResourcesImpl final : public StorageResources {
 public:
  explicit StorageResourcesImpl(const Options& options)
      : cache(rocksdb::NewLRUCache(options.block_cache_bytes)),
        write_buffers(
            std::make_shared<rocksdb::WriteBufferManager>(options.write_buffer_bytes, cache)) {}
  size_t BlockCacheUsage() const override { return cache->GetUsage(); }

  std::shared_ptr<rocksdb::Cache> cache;
  // Charges memtable memory to the block cache, so one budget bounds both.
  std::shared_ptr<rocksdb::WriteBufferManager> write_buffers;
};

rocksdb::Slice ToSlice(const Key& key) { return rocksdb::Slice(key.data(), key.size()); }
std::string_view ToView(const rocksdb::Slice& s) { return std::string_view(s.data(), s.size()); }

// The first key after every key of `shard_key` with `tag`: an exclusive iteration bound.
Key TagEnd(uint64_t shard_key, Tag tag) {
  return Key(shard_key, static_cast<Tag>(static_cast<uint8_t>(tag) + 1));
}

// The seq in a message key (its last 8 bytes).
uint64_t SeqOfMessageKey(const rocksdb::Slice& key) {
  return keys::GetBigEndian64(key.data() + key.size() - 8);
}

std::string EncodeSeqValue(uint64_t seq) {
  std::string out(8, '\0');
  keys::PutBigEndian64(out.data(), seq);
  return out;
}

// The body's first `max_bytes` bytes, shortened so as not to end inside a UTF-8 sequence.
std::string MakePreview(const std::string& body, uint32_t max_bytes) {
  if (body.size() <= max_bytes) return body;
  size_t cut = max_bytes;
  while (cut > 0 && (static_cast<uint8_t>(body[cut]) & 0xC0) == 0x80) --cut;
  return body.substr(0, cut);
}

Status CheckId(uint64_t id, const char* field) {
  if (id == 0) return Status::InvalidArgument(field, std::string(field) + " must be non-zero");
  return Status::Ok();
}

Status CheckLimit(uint32_t limit, uint32_t max, const char* field) {
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

// Outbox sequence numbers: one per operation that writes outbox rows, in allocation order.
// Batches commit in any order, so a reader only sees records below the oldest sequence still
// being written (the watermark); then no record can appear behind a reader's position.
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

class ShardStoreImpl final : public ShardStore {
 public:
  ShardStoreImpl(const ShardOptions& options, std::shared_ptr<StorageResources> resources,
                 std::unique_ptr<rocksdb::DB> db, std::vector<rocksdb::ColumnFamilyHandle*> handles)
      : options_(options),
        limits_(options.limits),
        clock_(options.clock ? options.clock : SystemClock()),
        resources_(std::move(resources)),
        db_(std::move(db)),
        handles_(std::move(handles)) {
    write_options_.sync = options.sync_writes;
  }

  // REQUIRES: called once, before the store is shared. Continues the outbox sequence after
  // the newest record on disk.
  Status InitOutbox() {
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

  ~ShardStoreImpl() override {
    for (auto* handle : handles_) {
      // Dropping the status is deliberate: nothing can be done about a failing destroy here.
      (void)db_->DestroyColumnFamilyHandle(handle);
    }
    (void)db_->Close();
  }

  // ---- Conversations ------------------------------------------------------------------------

  Result<Conversation> CreateConversation(const CreateConversationRequest& request) override {
    SB_RETURN_IF_ERROR(CheckId(request.conv_id, "conv_id"));
    SB_RETURN_IF_ERROR(CheckId(request.creator_id, "creator_id"));
    SB_RETURN_IF_ERROR(CheckOwned(request.conv_id, "conv_id"));
    if (request.title.size() > limits_.max_title_bytes) {
      return Status::InvalidArgument("title", "title is " + std::to_string(request.title.size()) +
                                                  " bytes, limit " +
                                                  std::to_string(limits_.max_title_bytes));
    }
    if (request.member_ids.size() > limits_.max_members_per_change) {
      return Status::InvalidArgument("member_ids",
                                     "at most " + std::to_string(limits_.max_members_per_change) +
                                         " founding members per call, got " +
                                         std::to_string(request.member_ids.size()));
    }
    std::vector<uint64_t> members = request.member_ids;
    members.push_back(request.creator_id);
    for (uint64_t id : members) SB_RETURN_IF_ERROR(CheckId(id, "member_ids"));
    std::sort(members.begin(), members.end());
    members.erase(std::unique(members.begin(), members.end()), members.end());
    if (members.size() > limits_.max_members) {
      return Status::InvalidArgument("member_ids", "more than max_members members");
    }

    Stripe& stripe = ConvStripe(request.conv_id);
    std::lock_guard lock(stripe.mu);
    Key conv_key = keys::ConversationKey(request.conv_id);
    std::string existing;
    rocksdb::Status s = PointGet(handles_[kConversationsCf], ToSlice(conv_key), &existing);
    if (s.ok()) {
      return Status::AlreadyExists("conversation " + std::to_string(request.conv_id) +
                                   " already exists");
    }
    if (!s.IsNotFound()) return FromRocksDb(s, "read conversation");

    Conversation conv;
    conv.conv_id = request.conv_id;
    conv.title = request.title;
    conv.creator_id = request.creator_id;
    conv.created_at_ms = clock_->NowMs();
    conv.member_count = static_cast<uint32_t>(members.size());
    conv.last_activity_ms = conv.created_at_ms;

    rocksdb::WriteBatch batch;
    SB_RETURN_IF_ERROR(Put(batch, kConversationsCf, conv_key, codec::EncodeConversation(conv)));
    for (uint64_t user : members) {
      SB_RETURN_IF_ERROR(Put(batch, kConversationsCf, keys::MemberKey(conv.conv_id, user),
                             codec::EncodeMember({user, conv.created_at_ms, 0})));
    }
    InboxUpdate joined;
    joined.conv_id = conv.conv_id;
    joined.seq = 0;
    joined.kind = InboxUpdateKind::kJoined;
    joined.activity_ms = conv.created_at_ms;
    joined.sender_id = conv.creator_id;
    joined.fan_out = members.size() <= limits_.fan_out_member_limit;
    joined.title = conv.title;
    auto reservation = outbox_.Reserve();
    SB_RETURN_IF_ERROR(PutOutbox(batch, reservation.seq(), members, joined));
    SB_RETURN_IF_ERROR(Write(batch, "create conversation"));

    stripe.convs.erase(conv.conv_id);
    return conv;
  }

  Result<Conversation> GetConversation(uint64_t conv_id) override {
    SB_RETURN_IF_ERROR(CheckId(conv_id, "conv_id"));
    SB_RETURN_IF_ERROR(CheckOwned(conv_id, "conv_id"));
    Stripe& stripe = ConvStripe(conv_id);
    std::lock_guard lock(stripe.mu);
    auto state = LoadState(stripe, conv_id);
    if (!state.ok()) return state.status();
    return (*state)->ToConversation();
  }

  Result<std::vector<uint64_t>> ListMembers(uint64_t conv_id, uint64_t after_user_id,
                                            uint32_t limit) override {
    SB_RETURN_IF_ERROR(CheckId(conv_id, "conv_id"));
    SB_RETURN_IF_ERROR(CheckOwned(conv_id, "conv_id"));
    SB_RETURN_IF_ERROR(CheckLimit(limit, limits_.max_page_size, "limit"));
    std::vector<uint64_t> members;
    SB_RETURN_IF_ERROR(ScanMembers(conv_id, after_user_id, limit, &members));
    if (members.empty()) SB_RETURN_IF_ERROR(CheckConversationExists(conv_id));
    return members;
  }

  Result<uint64_t> AddMembers(uint64_t conv_id, uint64_t actor_id,
                              const std::vector<uint64_t>& user_ids) override {
    return ChangeMembers(conv_id, actor_id, user_ids, MessageKind::kMembersAdded);
  }

  Result<uint64_t> RemoveMembers(uint64_t conv_id, uint64_t actor_id,
                                 const std::vector<uint64_t>& user_ids) override {
    return ChangeMembers(conv_id, actor_id, user_ids, MessageKind::kMembersRemoved);
  }

  // ---- Messages -----------------------------------------------------------------------------

  Result<SendMessageResult> SendMessage(const SendMessageRequest& request) override {
    SB_RETURN_IF_ERROR(CheckSend(request));
    Stripe& stripe = ConvStripe(request.conv_id);
    std::lock_guard lock(stripe.mu);
    auto loaded = LoadState(stripe, request.conv_id);
    if (!loaded.ok()) return loaded.status();
    ConvState& state = **loaded;
    SB_RETURN_IF_ERROR(CheckSender(state, request));
    auto duplicate = FindDuplicate(request);
    if (!duplicate.ok()) return duplicate.status();
    if (duplicate->has_value()) return **duplicate;

    rocksdb::WriteBatch batch;
    std::vector<OutboxSequencer::Reservation> reservations;
    const uint64_t last_seq = state.last_seq;
    const int64_t last_activity_ms = state.last_activity_ms;
    auto staged = StageSend(batch, state, request, reservations);
    Status written = staged.ok() ? Write(batch, "write message") : staged.status();
    if (!written.ok()) {
      state.last_seq = last_seq;  // Nothing was written: the state stays as it was.
      state.last_activity_ms = last_activity_ms;
      return written;
    }
    return staged;
  }

  std::vector<Result<SendMessageResult>> SendMessages(
      const std::vector<SendMessageRequest>& requests) override {
    // Every slot is assigned below; `invalid` marks the sends refused before any state is read.
    std::vector<Result<SendMessageResult>> results(requests.size(),
                                                   Status::Internal("send not processed"));
    std::vector<bool> invalid(requests.size(), false);
    if (requests.size() > limits_.max_send_batch) {
      Status too_many = Status::InvalidArgument(
          "requests", "at most " + std::to_string(limits_.max_send_batch) + " sends per batch");
      std::fill(results.begin(), results.end(), too_many);
      return results;
    }
    // Lock every conversation stripe involved, in index order (no deadlock with other batches).
    std::vector<size_t> stripes;
    for (size_t i = 0; i < requests.size(); ++i) {
      Status valid = CheckSend(requests[i]);
      if (!valid.ok()) {
        results[i] = valid;
        invalid[i] = true;
      } else {
        stripes.push_back(ConvStripeIndex(requests[i].conv_id));
      }
    }
    std::sort(stripes.begin(), stripes.end());
    stripes.erase(std::unique(stripes.begin(), stripes.end()), stripes.end());
    std::vector<std::unique_lock<std::mutex>> locks;
    locks.reserve(stripes.size());
    for (size_t stripe : stripes) locks.emplace_back(conv_stripes_[stripe].mu);

    // One WriteBatch for all. `states` are this batch's copies of the conversations it touches
    // (the cache may evict while others load); they go back to the cache only once written.
    rocksdb::WriteBatch batch;
    std::vector<OutboxSequencer::Reservation> reservations;
    std::map<uint64_t, ConvState> states;
    // (conv, sender, client_msg_id) -> index of its first send in this batch.
    std::map<std::tuple<uint64_t, uint64_t, std::string_view>, size_t> first_send;
    std::vector<std::pair<size_t, size_t>> repeats;  // (index, index of the first send)
    std::vector<size_t> staged;
    for (size_t i = 0; i < requests.size(); ++i) {
      if (invalid[i]) continue;
      const SendMessageRequest& request = requests[i];
      auto state = states.find(request.conv_id);
      if (state == states.end()) {
        auto loaded = LoadState(ConvStripe(request.conv_id), request.conv_id);
        if (!loaded.ok()) {
          results[i] = loaded.status();
          continue;
        }
        state = states.emplace(request.conv_id, **loaded).first;
      }
      Status sender = CheckSender(state->second, request);
      if (!sender.ok()) {
        results[i] = sender;
        continue;
      }
      auto [first, inserted] =
          first_send.emplace(std::make_tuple(request.conv_id, request.sender_id,
                                             std::string_view(request.client_msg_id)),
                             i);
      if (!inserted) {
        repeats.emplace_back(i, first->second);
        continue;
      }
      auto duplicate = FindDuplicate(request);
      if (!duplicate.ok() || duplicate->has_value()) {
        results[i] = duplicate.ok() ? Result<SendMessageResult>(**duplicate)
                                    : Result<SendMessageResult>(duplicate.status());
        continue;
      }
      // A send that fails while staging leaves nothing behind: its rows and its outbox
      // reservation are rolled back (StageSend advances the state only once it succeeded).
      batch.SetSavePoint();
      const size_t reserved = reservations.size();
      results[i] = StageSend(batch, state->second, request, reservations);
      if (results[i].ok()) {
        (void)batch.PopSavePoint();
        staged.push_back(i);
      } else {
        (void)batch.RollbackToSavePoint();
        while (reservations.size() > reserved) reservations.pop_back();
      }
    }

    Status written = batch.Count() == 0 ? Status::Ok() : Write(batch, "write messages");
    if (written.ok()) {
      for (auto& [conv_id, state] : states) {
        auto cached = ConvStripe(conv_id).convs.find(conv_id);
        if (cached == ConvStripe(conv_id).convs.end()) continue;  // Evicted: reloads from disk.
        cached->second.last_seq = state.last_seq;
        cached->second.last_activity_ms = state.last_activity_ms;
      }
    } else {
      for (size_t i : staged) results[i] = written;
    }
    // A repeat of a send earlier in the same batch answers like a retry of it.
    for (auto [i, first] : repeats) {
      results[i] = results[first];
      if (results[i].ok()) results[i]->duplicate = true;
    }
    return results;
  }

  Result<Message> GetMessage(uint64_t conv_id, uint64_t seq) override {
    SB_RETURN_IF_ERROR(CheckId(conv_id, "conv_id"));
    SB_RETURN_IF_ERROR(CheckId(seq, "seq"));
    SB_RETURN_IF_ERROR(CheckOwned(conv_id, "conv_id"));
    return ReadMessage(conv_id, seq);
  }

  Result<HistoryPage> ReadHistory(const HistoryQuery& query) override {
    HistoryPage page;
    page.messages.reserve(std::min(query.limit, limits_.max_page_size));
    auto add = [&page](uint64_t, std::string_view value) {
      return codec::DecodeMessage(value, &page.messages.emplace_back());
    };
    auto scanned = ScanHistory(query, add);
    if (!scanned.ok()) return scanned.status();
    if (scanned->newest_first) std::reverse(page.messages.begin(), page.messages.end());
    page.has_more = scanned->has_more;
    page.next_cursor_seq = scanned->next_cursor_seq;
    return page;
  }

  Result<EncodedHistoryPage> ReadHistoryEncoded(const HistoryQuery& query) override {
    EncodedHistoryPage page;
    auto add = [&page](uint64_t, std::string_view value) -> Status {
      if (value.empty() || value.size() % sizeof(uint64_t) != 0) {
        return Status::Corruption("stored message is not a whole number of words");
      }
      const size_t offset = page.words.size();
      page.words.resize(offset + value.size() / sizeof(uint64_t));
      std::memcpy(page.words.data() + offset, value.data(), value.size());
      page.spans.emplace_back(offset, value.size() / sizeof(uint64_t));
      return Status::Ok();
    };
    auto scanned = ScanHistory(query, add);
    if (!scanned.ok()) return scanned.status();
    if (scanned->newest_first) std::reverse(page.spans.begin(), page.spans.end());
    page.has_more = scanned->has_more;
    page.next_cursor_seq = scanned->next_cursor_seq;
    return page;
  }

  Result<std::vector<uint64_t>> ListSenderMessages(uint64_t conv_id, uint64_t sender_id,
                                                   uint64_t before_seq, uint32_t limit) override {
    SB_RETURN_IF_ERROR(CheckId(conv_id, "conv_id"));
    SB_RETURN_IF_ERROR(CheckId(sender_id, "sender_id"));
    SB_RETURN_IF_ERROR(CheckOwned(conv_id, "conv_id"));
    SB_RETURN_IF_ERROR(CheckLimit(limit, limits_.max_page_size, "limit"));
    std::vector<uint64_t> seqs;
    if (before_seq == 1) return seqs;
    BoundedIterator it(db_.get(), handles_[kIndexesCf], keys::SenderIndexKey(conv_id, sender_id, 0),
                       TagEnd(conv_id, Tag::kSenderIndex));
    it->SeekForPrev(ToSlice(
        keys::SenderIndexKey(conv_id, sender_id, before_seq == 0 ? UINT64_MAX : before_seq - 1)));
    for (; it->Valid() && seqs.size() < limit; it->Prev()) {
      rocksdb::Slice key = it->key();
      seqs.push_back(keys::GetBigEndian64(key.data() + key.size() - 8));
    }
    SB_RETURN_IF_ERROR(FromRocksDb(it->status(), "read sender index"));
    if (seqs.empty()) SB_RETURN_IF_ERROR(CheckConversationExists(conv_id));
    return seqs;
  }

  Result<Message> EditMessage(uint64_t conv_id, uint64_t seq, uint64_t editor_id,
                              const std::string& new_body) override {
    SB_RETURN_IF_ERROR(CheckBody(new_body));
    return RewriteMessage(conv_id, seq, editor_id, [&](Message& message) -> Result<bool> {
      if (message.deleted) {
        return Status::FailedPrecondition("message " + std::to_string(seq) + " is deleted");
      }
      message.body = new_body;
      message.edited = true;
      return true;
    });
  }

  Result<Message> DeleteMessage(uint64_t conv_id, uint64_t seq, uint64_t actor_id) override {
    return RewriteMessage(conv_id, seq, actor_id, [](Message& message) -> Result<bool> {
      if (message.deleted) return false;  // Deleting twice changes nothing.
      message.body.clear();
      message.deleted = true;
      return true;
    });
  }

  // ---- Inbox --------------------------------------------------------------------------------

  Status ApplyInboxUpdate(const InboxUpdate& update) override {
    return ApplyInboxUpdates({update}).front();
  }

  std::vector<Status> ApplyInboxUpdates(const std::vector<InboxUpdate>& updates) override {
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

    // One WriteBatch for all; `overlay` holds the states this batch has already changed, so a
    // later update of the same (user, conversation) builds on an earlier one.
    rocksdb::WriteBatch batch;
    std::map<std::pair<uint64_t, uint64_t>, std::optional<codec::InboxState>> overlay;
    for (size_t i = 0; i < updates.size(); ++i) {
      if (!statuses[i].ok()) continue;
      const InboxUpdate& update = updates[i];
      auto slot = overlay.find({update.user_id, update.conv_id});
      if (slot == overlay.end()) {
        std::optional<codec::InboxState> stored;
        statuses[i] = ReadInboxState(update.user_id, update.conv_id, &stored);
        if (!statuses[i].ok()) continue;
        slot = overlay.emplace(std::make_pair(update.user_id, update.conv_id), stored).first;
      }
      statuses[i] = StageInboxUpdate(batch, update, &slot->second);
    }
    Status written = batch.Count() == 0 ? Status::Ok() : Write(batch, "apply inbox updates");
    if (!written.ok()) {
      for (Status& status : statuses) {
        if (status.ok()) status = written;
      }
    }
    return statuses;
  }

  Result<InboxPage> ListInbox(const InboxQuery& query) override {
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
    BoundedIterator it(db_.get(), handles_[kInboxCf], Key(query.user_id, Tag::kInboxByActivity),
                       TagEnd(query.user_id, Tag::kInboxByActivity));
    it->Seek(ToSlice(start));
    if (!query.cursor.empty() && it->Valid() && ToView(it->key()) == start.view()) it->Next();

    InboxPage page;
    page.entries.reserve(query.limit);
    while (it->Valid() && page.entries.size() < query.limit) {
      SB_RETURN_IF_ERROR(
          codec::DecodeInboxEntry(ToView(it->value()), &page.entries.emplace_back()));
      it->Next();
    }
    SB_RETURN_IF_ERROR(FromRocksDb(it->status(), "list inbox"));
    page.has_more = it->Valid();
    if (page.has_more) {
      Key last = keys::InboxByActivityKey(query.user_id, page.entries.back().last_activity_ms,
                                          page.entries.back().conv_id);
      page.next_cursor = std::string(last.view().substr(keys::kPrefixSize + 1));
    }
    return page;
  }

  Result<InboxEntry> GetInboxEntry(uint64_t user_id, uint64_t conv_id) override {
    SB_RETURN_IF_ERROR(CheckId(user_id, "user_id"));
    SB_RETURN_IF_ERROR(CheckId(conv_id, "conv_id"));
    SB_RETURN_IF_ERROR(CheckOwned(user_id, "user_id"));
    std::optional<codec::InboxState> state;
    SB_RETURN_IF_ERROR(ReadInboxState(user_id, conv_id, &state));
    if (!state || state->removed) return InboxNotFound(user_id, conv_id);
    return ReadInboxEntry(user_id, conv_id, *state);
  }

  Result<InboxEntry> MarkRead(uint64_t user_id, uint64_t conv_id, uint64_t seq) override {
    SB_RETURN_IF_ERROR(CheckId(user_id, "user_id"));
    SB_RETURN_IF_ERROR(CheckId(conv_id, "conv_id"));
    SB_RETURN_IF_ERROR(CheckOwned(user_id, "user_id"));
    std::lock_guard lock(UserLock(user_id));
    std::optional<codec::InboxState> state;
    SB_RETURN_IF_ERROR(ReadInboxState(user_id, conv_id, &state));
    if (!state || state->removed) return InboxNotFound(user_id, conv_id);
    auto entry = ReadInboxEntry(user_id, conv_id, *state);
    if (!entry.ok() || seq <= state->read_seq) return entry;

    // Not clamped to last_seq: with fan-out in flight the reader may be ahead of this row.
    state->read_seq = seq;
    entry->read_seq = seq;
    entry->unread_count = entry->last_seq > seq ? entry->last_seq - seq : 0;
    rocksdb::WriteBatch batch;
    SB_RETURN_IF_ERROR(Put(batch, kInboxCf, keys::InboxStateKey(user_id, conv_id),
                           codec::EncodeInboxState(*state)));
    SB_RETURN_IF_ERROR(Put(batch, kInboxCf,
                           keys::InboxByActivityKey(user_id, state->last_activity_ms, conv_id),
                           codec::EncodeInboxEntry(*entry)));
    SB_RETURN_IF_ERROR(Write(batch, "mark read"));
    return entry;
  }

  // ---- Outbox -------------------------------------------------------------------------------

  Result<OutboxBatch> ReadOutbox(const std::string& from_position, uint32_t limit) override {
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

  Status DeleteOutbox(const std::vector<std::string>& positions) override {
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

  // ---- Administration -----------------------------------------------------------------------

  uint64_t shard_id() const override { return options_.shard_id; }
  TokenRange token_range() const override { return options_.token_range; }

  Result<ShardStats> GetStats() override {
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

  uint64_t LatestSequence() const override { return db_->GetLatestSequenceNumber(); }

  Status Flush() override {
    rocksdb::FlushOptions options;
    options.wait = true;
    return FromRocksDb(db_->Flush(options, handles_), "flush");
  }

  Status CompactAll() override {
    SB_RETURN_IF_ERROR(Flush());
    rocksdb::CompactRangeOptions options;
    options.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    for (auto* handle : handles_) {
      SB_RETURN_IF_ERROR(
          FromRocksDb(db_->CompactRange(options, handle, nullptr, nullptr), "compact"));
    }
    return Status::Ok();
  }

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

  // Hands the stored messages of one history page to `add(seq, stored_value)`, always in
  // ascending seq order (reading a newest-first page forward is much cheaper than walking back
  // with Prev(); seqs are dense, so the page below the cursor is exactly [first, cursor - 1]).
  template <typename Add>
  Result<HistoryScan> ScanHistory(const HistoryQuery& query, Add& add) {
    SB_RETURN_IF_ERROR(CheckId(query.conv_id, "conv_id"));
    SB_RETURN_IF_ERROR(CheckOwned(query.conv_id, "conv_id"));
    SB_RETURN_IF_ERROR(CheckLimit(query.limit, limits_.max_page_size, "limit"));
    if (query.direction != Direction::kNewestFirst && query.direction != Direction::kOldestFirst) {
      return Status::InvalidArgument("direction", "unknown direction");
    }
    HistoryScan scan;
    scan.newest_first = query.direction == Direction::kNewestFirst;
    // The exclusive cursor to start from; 0 means "from the end in this direction".
    uint64_t cursor = query.cursor_seq;
    if (query.from_time_ms) {
      auto start = SeqAtTime(query.conv_id, *query.from_time_ms, scan.newest_first);
      if (!start.ok()) return start.status();
      if (*start == 0) {
        SB_RETURN_IF_ERROR(CheckConversationExists(query.conv_id));
        return scan;  // No message at or beyond that time in this direction.
      }
      cursor = scan.newest_first ? *start + 1 : *start - 1;
    }
    if (scan.newest_first && cursor == 1) return scan;  // Nothing below seq 1.

    BoundedIterator it(db_.get(), handles_[kMessagesCf], Key(query.conv_id, Tag::kMessage),
                       TagEnd(query.conv_id, Tag::kMessage));
    uint32_t count = 0;
    uint64_t first_seq = 0, last_seq = 0;  // Of the messages handed over.
    if (scan.newest_first) {
      if (cursor == 0) {  // From the newest: find it, then read up to it.
        it->SeekForPrev(ToSlice(keys::MessageKey(query.conv_id, UINT64_MAX)));
        SB_RETURN_IF_ERROR(FromRocksDb(it->status(), "read history"));
        if (!it->Valid()) {
          SB_RETURN_IF_ERROR(CheckConversationExists(query.conv_id));
          return scan;
        }
        cursor = SeqOfMessageKey(it->key()) + 1;
      }
      const uint64_t first = cursor > query.limit ? cursor - query.limit : 1;
      for (it->Seek(ToSlice(keys::MessageKey(query.conv_id, first)));
           it->Valid() && SeqOfMessageKey(it->key()) < cursor; it->Next()) {
        const uint64_t seq = SeqOfMessageKey(it->key());
        SB_RETURN_IF_ERROR(add(seq, ToView(it->value())));
        if (count++ == 0) first_seq = seq;
      }
      scan.has_more = first > 1 && count > 0;
      if (scan.has_more) scan.next_cursor_seq = first_seq;  // The oldest: last of the page.
    } else {
      for (it->Seek(ToSlice(keys::MessageKey(query.conv_id, cursor + 1)));
           it->Valid() && count < query.limit; it->Next()) {
        last_seq = SeqOfMessageKey(it->key());
        SB_RETURN_IF_ERROR(add(last_seq, ToView(it->value())));
        ++count;
      }
      scan.has_more = it->Valid();
      if (scan.has_more) scan.next_cursor_seq = last_seq;
    }
    SB_RETURN_IF_ERROR(FromRocksDb(it->status(), "read history"));
    if (count == 0) SB_RETURN_IF_ERROR(CheckConversationExists(query.conv_id));
    return scan;
  }

  // A point read with this thread's read options. Under CacheOnlyReads, RocksDB 7.8 answers a
  // key whose table file is not open with OK and an empty value (TableCache::Get marks it "may
  // exist" instead of saying Incomplete; fixed upstream in 2024). No row Scrollback point-reads
  // from memory is empty, so that answer becomes Incomplete (would-block): the caller retries
  // on the engine pool, where the read may touch the disk.
  template <typename Value>
  rocksdb::Status PointGet(rocksdb::ColumnFamilyHandle* cf, const rocksdb::Slice& key,
                           Value* value) {
    rocksdb::Status s = db_->Get(CurrentReadOptions(), cf, key, value);
    if (cache_only_reads && s.ok() && value->size() == 0) {
      return rocksdb::Status::Incomplete("not in memory");
    }
    return s;
  }

  size_t ConvStripeIndex(uint64_t conv_id) const { return TokenOf(conv_id) % kStripes; }
  Stripe& ConvStripe(uint64_t conv_id) { return conv_stripes_[ConvStripeIndex(conv_id)]; }

  // A send's own fields (before any state is read).
  Status CheckSend(const SendMessageRequest& request) const {
    SB_RETURN_IF_ERROR(CheckId(request.conv_id, "conv_id"));
    SB_RETURN_IF_ERROR(CheckId(request.sender_id, "sender_id"));
    SB_RETURN_IF_ERROR(CheckOwned(request.conv_id, "conv_id"));
    if (request.client_msg_id.empty() ||
        request.client_msg_id.size() > keys::kMaxClientMsgIdBytes) {
      return Status::InvalidArgument(
          "client_msg_id",
          "client_msg_id must be 1.." + std::to_string(keys::kMaxClientMsgIdBytes) + " bytes");
    }
    return CheckBody(request.body);
  }

  Status CheckSender(const ConvState& state, const SendMessageRequest& request) {
    auto member = IsMember(state, request.conv_id, request.sender_id);
    if (!member.ok()) return member.status();
    if (*member) return Status::Ok();
    return Status::PermissionDenied("user " + std::to_string(request.sender_id) +
                                    " is not a member of conversation " +
                                    std::to_string(request.conv_id));
  }

  // Idempotency: a retry finds the index row of its first attempt, and answers with it.
  Result<std::optional<SendMessageResult>> FindDuplicate(const SendMessageRequest& request) {
    std::string seq_value;
    rocksdb::Status s = PointGet(
        handles_[kIndexesCf],
        ToSlice(keys::ClientMsgIdKey(request.conv_id, request.sender_id, request.client_msg_id)),
        &seq_value);
    if (s.IsNotFound()) return std::optional<SendMessageResult>();
    SB_RETURN_IF_ERROR(FromRocksDb(s, "read client_msg_id index"));
    if (seq_value.size() != 8) return Status::Corruption("client_msg_id index value");
    uint64_t seq = keys::GetBigEndian64(seq_value.data());
    auto original = ReadMessage(request.conv_id, seq);
    if (!original.ok()) return original.status();
    return std::optional<SendMessageResult>(
        SendMessageResult{seq, original->sent_at_ms, /*duplicate=*/true});
  }

  // Adds a new message's rows (message, indexes, one outbox record per member unless above the
  // fan-out limit) to `batch` and advances `state` past it. REQUIRES: the conversation's stripe
  // lock held; the send checked and not a duplicate.
  Result<SendMessageResult> StageSend(rocksdb::WriteBatch& batch, ConvState& state,
                                      const SendMessageRequest& request,
                                      std::vector<OutboxSequencer::Reservation>& reservations) {
    Message message;
    message.conv_id = request.conv_id;
    message.seq = state.last_seq + 1;
    message.sender_id = request.sender_id;
    message.sent_at_ms = std::max(clock_->NowMs(), state.last_activity_ms);
    message.client_msg_id = request.client_msg_id;
    message.body = request.body;
    SB_RETURN_IF_ERROR(PutMessageRows(batch, message));
    SB_RETURN_IF_ERROR(
        Put(batch, kIndexesCf,
            keys::ClientMsgIdKey(message.conv_id, message.sender_id, message.client_msg_id),
            EncodeSeqValue(message.seq)));
    if (state.fan_out(limits_)) {
      reservations.push_back(outbox_.Reserve());
      InboxUpdate update = MessageUpdate(state, message);
      SB_RETURN_IF_ERROR(PutOutbox(batch, reservations.back().seq(), state.members, update));
    }
    state.last_seq = message.seq;
    state.last_activity_ms = message.sent_at_ms;
    return SendMessageResult{message.seq, message.sent_at_ms, /*duplicate=*/false};
  }
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

  Status Put(rocksdb::WriteBatch& batch, Cf cf, const Key& key, const std::string& value) {
    return FromRocksDb(batch.Put(handles_[cf], ToSlice(key), value), "batch put");
  }
  Status Delete(rocksdb::WriteBatch& batch, Cf cf, const Key& key) {
    return FromRocksDb(batch.Delete(handles_[cf], ToSlice(key)), "batch delete");
  }
  Status Write(rocksdb::WriteBatch& batch, const char* what) {
    return FromRocksDb(db_->Write(write_options_, &batch), what);
  }

  // One outbox record per target user, all with the same value (the target is in the key).
  // REQUIRES: `outbox_seq` stays reserved until the batch's write returned.
  Status PutOutbox(rocksdb::WriteBatch& batch, uint64_t outbox_seq,
                   const std::vector<uint64_t>& targets, const InboxUpdate& update) {
    std::string value = codec::EncodeInboxUpdate(update);
    for (uint64_t user : targets) {
      SB_RETURN_IF_ERROR(Put(batch, kOutboxCf, keys::OutboxKey(outbox_seq, user), value));
    }
    return Status::Ok();
  }

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

  InboxUpdate MessageUpdate(const ConvState& state, const Message& message) const {
    InboxUpdate update;
    update.conv_id = message.conv_id;
    update.seq = message.seq;
    update.kind = InboxUpdateKind::kMessage;
    update.activity_ms = message.sent_at_ms;
    update.sender_id = message.sender_id;
    update.preview = MakePreview(message.body, limits_.preview_bytes);
    update.message_kind = message.kind;
    update.fan_out = state.fan_out(limits_);
    update.title = state.conv.title;
    return update;
  }

  // REQUIRES: stripe.mu held. The cached state of `conv_id`, loading it from RocksDB on a miss.
  Result<ConvState*> LoadState(Stripe& stripe, uint64_t conv_id) {
    if (auto it = stripe.convs.find(conv_id); it != stripe.convs.end()) return &it->second;

    ConvState state;
    std::string value;
    rocksdb::Status s =
        PointGet(handles_[kConversationsCf], ToSlice(keys::ConversationKey(conv_id)), &value);
    if (s.IsNotFound()) return ConversationNotFound(conv_id);
    SB_RETURN_IF_ERROR(FromRocksDb(s, "read conversation"));
    SB_RETURN_IF_ERROR(codec::DecodeConversation(value, &state.conv));
    state.last_activity_ms = state.conv.created_at_ms;

    BoundedIterator it(db_.get(), handles_[kMessagesCf], Key(conv_id, Tag::kMessage),
                       TagEnd(conv_id, Tag::kMessage));
    it->SeekForPrev(ToSlice(keys::MessageKey(conv_id, UINT64_MAX)));
    if (it->Valid()) {
      Message last;
      SB_RETURN_IF_ERROR(codec::DecodeMessage(ToView(it->value()), &last));
      state.last_seq = last.seq;
      state.last_activity_ms = last.sent_at_ms;
    }
    SB_RETURN_IF_ERROR(FromRocksDb(it->status(), "read last message"));

    if (state.fan_out(limits_)) {
      SB_RETURN_IF_ERROR(ScanMembers(conv_id, 0, limits_.fan_out_member_limit, &state.members));
      state.members_cached = true;
    }
    if (stripe.convs.size() >= options_.conversation_cache_per_stripe) {
      stripe.convs.erase(stripe.convs.begin());  // Crude eviction; state is cheap to reload.
    }
    return &stripe.convs.emplace(conv_id, std::move(state)).first->second;
  }

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
                     std::vector<uint64_t>* out) {
    BoundedIterator it(db_.get(), handles_[kConversationsCf], Key(conv_id, Tag::kMember),
                       TagEnd(conv_id, Tag::kMember));
    if (after_user_id == UINT64_MAX) return Status::Ok();
    it->Seek(ToSlice(keys::MemberKey(conv_id, after_user_id + 1)));
    for (uint32_t n = 0; it->Valid() && n < limit; ++n, it->Next()) {
      rocksdb::Slice key = it->key();
      out->push_back(keys::GetBigEndian64(key.data() + key.size() - 8));
    }
    return FromRocksDb(it->status(), "read members");
  }

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
  static Status InboxNotFound(uint64_t user_id, uint64_t conv_id) {
    return Status::NotFound("user " + std::to_string(user_id) + " has no inbox row for " +
                            "conversation " + std::to_string(conv_id));
  }

  Result<Message> ReadMessage(uint64_t conv_id, uint64_t seq) {
    rocksdb::PinnableSlice value;
    rocksdb::Status s =
        PointGet(handles_[kMessagesCf], ToSlice(keys::MessageKey(conv_id, seq)), &value);
    if (s.IsNotFound()) {
      SB_RETURN_IF_ERROR(CheckConversationExists(conv_id));
      return Status::NotFound("message " + std::to_string(seq) + " of conversation " +
                              std::to_string(conv_id) + " does not exist");
    }
    SB_RETURN_IF_ERROR(FromRocksDb(s, "read message"));
    Message message;
    SB_RETURN_IF_ERROR(codec::DecodeMessage(ToView(value), &message));
    return message;
  }

  // Seq of the first message at or after `time_ms` (oldest-first), or of the last message at or
  // before it (newest-first); 0 when there is none.
  Result<uint64_t> SeqAtTime(uint64_t conv_id, int64_t time_ms, bool newest_first) {
    BoundedIterator it(db_.get(), handles_[kIndexesCf], Key(conv_id, Tag::kTimeIndex),
                       TagEnd(conv_id, Tag::kTimeIndex));
    if (newest_first) {
      it->SeekForPrev(ToSlice(keys::TimeIndexKey(conv_id, time_ms, UINT64_MAX)));
    } else {
      it->Seek(ToSlice(keys::TimeIndexKey(conv_id, time_ms, 0)));
    }
    SB_RETURN_IF_ERROR(FromRocksDb(it->status(), "read time index"));
    if (!it->Valid()) return uint64_t{0};
    auto decoded = keys::DecodeTimeIndexKey(ToView(it->key()));
    if (!decoded) return Status::Corruption("malformed time index key");
    return decoded->seq;
  }

  // Edit and delete: read the message under the conversation's lock, let `change` modify it
  // (returning whether it did), and write it back. Only the sender may change a message.
  template <typename Change>
  Result<Message> RewriteMessage(uint64_t conv_id, uint64_t seq, uint64_t actor_id,
                                 Change&& change) {
    SB_RETURN_IF_ERROR(CheckId(conv_id, "conv_id"));
    SB_RETURN_IF_ERROR(CheckId(seq, "seq"));
    SB_RETURN_IF_ERROR(CheckId(actor_id, "actor_id"));
    SB_RETURN_IF_ERROR(CheckOwned(conv_id, "conv_id"));
    Stripe& stripe = ConvStripe(conv_id);
    std::lock_guard lock(stripe.mu);
    auto message = ReadMessage(conv_id, seq);
    if (!message.ok()) return message;
    if (message->kind != MessageKind::kText) {
      return Status::FailedPrecondition("system messages cannot be changed");
    }
    if (message->sender_id != actor_id) {
      return Status::PermissionDenied("only the sender may change message " + std::to_string(seq));
    }
    Result<bool> changed = change(*message);
    if (!changed.ok()) return changed.status();
    if (!*changed) return message;
    message->edited_at_ms = clock_->NowMs();
    rocksdb::WriteBatch batch;
    SB_RETURN_IF_ERROR(
        Put(batch, kMessagesCf, keys::MessageKey(conv_id, seq), codec::EncodeMessage(*message)));
    SB_RETURN_IF_ERROR(Write(batch, "rewrite message"));
    return message;
  }

  Result<uint64_t> ChangeMembers(uint64_t conv_id, uint64_t actor_id,
                                 const std::vector<uint64_t>& user_ids, MessageKind kind) {
    const bool adding = kind == MessageKind::kMembersAdded;
    SB_RETURN_IF_ERROR(CheckId(conv_id, "conv_id"));
    SB_RETURN_IF_ERROR(CheckId(actor_id, "actor_id"));
    SB_RETURN_IF_ERROR(CheckOwned(conv_id, "conv_id"));
    if (user_ids.empty() || user_ids.size() > limits_.max_members_per_change) {
      return Status::InvalidArgument(
          "user_ids",
          "user_ids must name 1.." + std::to_string(limits_.max_members_per_change) + " users");
    }
    for (uint64_t id : user_ids) SB_RETURN_IF_ERROR(CheckId(id, "user_ids"));

    Stripe& stripe = ConvStripe(conv_id);
    std::lock_guard lock(stripe.mu);
    auto loaded = LoadState(stripe, conv_id);
    if (!loaded.ok()) return loaded.status();
    ConvState& state = **loaded;

    auto actor_is_member = IsMember(state, conv_id, actor_id);
    if (!actor_is_member.ok()) return actor_is_member.status();
    const bool leaving_alone = !adding && user_ids.size() == 1 && user_ids[0] == actor_id;
    if (!*actor_is_member && !leaving_alone) {
      return Status::PermissionDenied("user " + std::to_string(actor_id) +
                                      " is not a member of conversation " +
                                      std::to_string(conv_id));
    }

    // The users whose membership actually changes.
    std::vector<uint64_t> changed;
    std::vector<uint64_t> sorted = user_ids;
    std::sort(sorted.begin(), sorted.end());
    sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
    for (uint64_t user : sorted) {
      auto member = IsMember(state, conv_id, user);
      if (!member.ok()) return member.status();
      if (*member != adding) changed.push_back(user);
    }
    if (changed.empty()) return state.last_seq;

    const uint32_t before = state.conv.member_count;
    const uint64_t after_wide =
        adding ? uint64_t{before} + changed.size() : before - changed.size();
    if (after_wide > limits_.max_members) {
      return Status::InvalidArgument("user_ids", "conversation would exceed max_members (" +
                                                     std::to_string(limits_.max_members) + ")");
    }
    const auto after = static_cast<uint32_t>(after_wide);

    Message message;
    message.conv_id = conv_id;
    message.seq = state.last_seq + 1;
    message.sender_id = actor_id;
    message.sent_at_ms = std::max(clock_->NowMs(), state.last_activity_ms);
    message.kind = kind;
    message.member_ids = changed;

    Conversation conv = state.conv;
    conv.member_count = after;
    rocksdb::WriteBatch batch;
    SB_RETURN_IF_ERROR(Put(batch, kConversationsCf, keys::ConversationKey(conv_id),
                           codec::EncodeConversation(conv)));
    for (uint64_t user : changed) {
      Key member_key = keys::MemberKey(conv_id, user);
      if (adding) {
        SB_RETURN_IF_ERROR(Put(batch, kConversationsCf, member_key,
                               codec::EncodeMember({user, message.sent_at_ms, message.seq})));
      } else {
        SB_RETURN_IF_ERROR(Delete(batch, kConversationsCf, member_key));
      }
    }
    SB_RETURN_IF_ERROR(PutMessageRows(batch, message));

    // Inbox updates. The changed users always get one (joined / removed). The others get the
    // system message when the conversation fans out before or after the change, so that rows
    // also learn when a conversation crosses the fan-out limit either way.
    ConvState after_state = state;
    after_state.conv.member_count = after;
    InboxUpdate update = MessageUpdate(after_state, message);
    InboxUpdate membership = update;
    auto reservation = outbox_.Reserve();
    membership.kind = adding ? InboxUpdateKind::kJoined : InboxUpdateKind::kRemoved;
    SB_RETURN_IF_ERROR(PutOutbox(batch, reservation.seq(), changed, membership));
    const uint32_t limit = limits_.fan_out_member_limit;
    if (before <= limit || after <= limit) {
      std::vector<uint64_t> others;
      if (state.members_cached) {
        others = state.members;
      } else {
        SB_RETURN_IF_ERROR(
            ScanMembers(conv_id, 0, limit + limits_.max_members_per_change, &others));
      }
      std::vector<uint64_t> remaining;  // Members before the change, minus the changed users.
      std::set_difference(others.begin(), others.end(), changed.begin(), changed.end(),
                          std::back_inserter(remaining));
      SB_RETURN_IF_ERROR(PutOutbox(batch, reservation.seq(), remaining, update));
    }
    SB_RETURN_IF_ERROR(Write(batch, adding ? "add members" : "remove members"));
    stripe.convs.erase(conv_id);  // Reloaded on next use, with the new member list.
    return message.seq;
  }

  Status CheckInboxUpdate(const InboxUpdate& update) const {
    SB_RETURN_IF_ERROR(CheckId(update.user_id, "user_id"));
    SB_RETURN_IF_ERROR(CheckId(update.conv_id, "conv_id"));
    SB_RETURN_IF_ERROR(CheckOwned(update.user_id, "user_id"));
    if (update.preview.size() > limits_.preview_bytes) {
      return Status::InvalidArgument("preview", "preview longer than preview_bytes");
    }
    if (update.title.size() > limits_.max_title_bytes) {
      return Status::InvalidArgument("title", "title longer than max_title_bytes");
    }
    if (update.kind > InboxUpdateKind::kRemoved) {
      return Status::InvalidArgument("kind", "unknown inbox update kind");
    }
    return Status::Ok();
  }

  // Adds to `batch` what applying `update` writes, given the current `state` (nullopt: no
  // row), and updates `state` to the result. An update not newer than the state is a no-op.
  // REQUIRES: the user's stripe lock held.
  Status StageInboxUpdate(rocksdb::WriteBatch& batch, const InboxUpdate& update,
                          std::optional<codec::InboxState>* state) {
    if (*state && update.seq <= (*state)->last_seq) return Status::Ok();  // Already applied.
    codec::InboxState next;
    next.last_seq = update.seq;
    next.read_seq = *state ? (*state)->read_seq : 0;
    // Your own message (or your own membership change) is read by definition.
    if (update.sender_id == update.user_id) next.read_seq = std::max(next.read_seq, update.seq);
    if (*state && !(*state)->removed) {
      SB_RETURN_IF_ERROR(Delete(
          batch, kInboxCf,
          keys::InboxByActivityKey(update.user_id, (*state)->last_activity_ms, update.conv_id)));
    }
    if (update.kind == InboxUpdateKind::kRemoved) {
      next.removed = true;
    } else {
      next.last_activity_ms = update.activity_ms;
      InboxEntry entry;
      entry.user_id = update.user_id;
      entry.conv_id = update.conv_id;
      entry.last_seq = update.seq;
      entry.last_activity_ms = update.activity_ms;
      entry.last_sender_id = update.sender_id;
      entry.preview = update.preview;
      entry.preview_kind = update.message_kind;
      entry.read_seq = next.read_seq;
      entry.fan_out = update.fan_out;
      entry.title = update.title;
      SB_RETURN_IF_ERROR(
          Put(batch, kInboxCf,
              keys::InboxByActivityKey(update.user_id, update.activity_ms, update.conv_id),
              codec::EncodeInboxEntry(entry)));
    }
    SB_RETURN_IF_ERROR(Put(batch, kInboxCf, keys::InboxStateKey(update.user_id, update.conv_id),
                           codec::EncodeInboxState(next)));
    *state = next;
    return Status::Ok();
  }

  Status ReadInboxState(uint64_t user_id, uint64_t conv_id, std::optional<codec::InboxState>* out) {
    rocksdb::PinnableSlice value;
    rocksdb::Status s =
        PointGet(handles_[kInboxCf], ToSlice(keys::InboxStateKey(user_id, conv_id)), &value);
    if (s.IsNotFound()) {
      out->reset();
      return Status::Ok();
    }
    SB_RETURN_IF_ERROR(FromRocksDb(s, "read inbox state"));
    return codec::DecodeInboxState(ToView(value), &out->emplace());
  }

  Result<InboxEntry> ReadInboxEntry(uint64_t user_id, uint64_t conv_id,
                                    const codec::InboxState& state) {
    rocksdb::PinnableSlice value;
    rocksdb::Status s = PointGet(
        handles_[kInboxCf],
        ToSlice(keys::InboxByActivityKey(user_id, state.last_activity_ms, conv_id)), &value);
    if (s.IsNotFound()) return Status::Corruption("inbox state without its listing row");
    SB_RETURN_IF_ERROR(FromRocksDb(s, "read inbox entry"));
    InboxEntry entry;
    SB_RETURN_IF_ERROR(codec::DecodeInboxEntry(ToView(value), &entry));
    return entry;
  }

  const ShardOptions options_;
  const ShardLimits limits_;
  const std::shared_ptr<Clock> clock_;
  const std::shared_ptr<StorageResources> resources_;  // Outlives db_ (declared first).
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // Indexed by Cf.
  rocksdb::WriteOptions write_options_;
  std::array<Stripe, kStripes> conv_stripes_;
  std::array<std::mutex, kStripes> user_locks_;
  OutboxSequencer outbox_;
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
    // conversation (or user) went, so the next one skips most of the skiplist search.
    options.memtable_insert_with_hint_prefix_extractor.reset(
        rocksdb::NewFixedPrefixTransform(keys::kPrefixSize));
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

CacheOnlyReads::CacheOnlyReads() : previous_(cache_only_reads) { cache_only_reads = true; }
CacheOnlyReads::~CacheOnlyReads() { cache_only_reads = previous_; }

std::shared_ptr<StorageResources> StorageResources::Create(const Options& options) {
  return std::make_shared<StorageResourcesImpl>(options);
}

Result<std::unique_ptr<ShardStore>> ShardStore::Open(const ShardOptions& options,
                                                     const std::string& path) {
  if (options.token_range.first > options.token_range.last) {
    return Status::InvalidArgument("token_range", "token_range.first > token_range.last");
  }
  auto resources = options.resources ? options.resources : StorageResources::Create();
  auto& impl = static_cast<StorageResourcesImpl&>(*resources);

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = options.create_if_missing;
  db_options.create_missing_column_families = true;
  db_options.write_buffer_manager = impl.write_buffers;
  if (options.background_jobs > 0) db_options.max_background_jobs = options.background_jobs;
  // Bounded file descriptors per shard: a node hosts many shards.
  db_options.max_open_files = 512;
  db_options.keep_log_file_num = 4;
  // WAL archive for replica catch-up (DESIGN.md, Replication).
  db_options.WAL_ttl_seconds = options.wal_ttl_seconds;
  db_options.WAL_size_limit_MB = options.wal_size_limit_mb;

  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (size_t cf = 0; cf < kNumCfs; ++cf) {
    descriptors.emplace_back(kCfNames[cf], MakeCfOptions(static_cast<Cf>(cf), impl));
  }
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
    if (meta.format_version != kFormatVersion) {
      return fail(Status::FailedPrecondition(
          "shard at " + path + " has format version " + std::to_string(meta.format_version) +
          ", this build reads " + std::to_string(kFormatVersion)));
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
  }
  auto store = std::make_unique<ShardStoreImpl>(options, std::move(resources), std::move(db),
                                                std::move(handles));
  SB_RETURN_IF_ERROR(store->InitOutbox());
  return std::unique_ptr<ShardStore>(std::move(store));
}

}  // namespace scrollback
