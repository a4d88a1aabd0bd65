// ShardStoreImpl's message methods: the message rows (cf messages) and their index rows (cf
// indexes: client_msg_id, time and sender indexes). Sends, single and batched, with their
// idempotency and their outbox records; point reads; history pages, decoded and as stored
// encodings; the sender index; edits and deletes. Declared in shard_store_impl.h.
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "rocksdb_status.h"
#include "scrollback/engine/keys.h"
#include "scrollback/engine/value_codec.h"
#include "shard_store_impl.h"

namespace scrollback::engine_internal {
namespace {

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

}  // namespace

// ---- Templates (defined before their callers, which are all in this file) -------------------

template <typename Add>
Result<ShardStoreImpl::HistoryScan> ShardStoreImpl::ScanHistory(const HistoryQuery& query,
                                                                Add& add) {
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

  // Newest-first pages within the conversation's cached tail are served from it (decision
  // 0014); a page from the newest that is read from RocksDB fills it.
  const bool from_tail = scan.newest_first && !query.from_time_ms && tails_.enabled();
  uint64_t tail_epoch = 0, tail_owner = 0;
  if (from_tail) {
    const uint64_t owner = tail_owner = tail_owner_.load(std::memory_order_acquire);
    if (auto tail = tails_.Find(owner, query.conv_id)) {
      // Exclusive upper end: the cursor, clamped to the newest message like the scan below.
      const uint64_t upper =
          cursor == 0 || cursor > tail->last_seq + 1 ? tail->last_seq + 1 : cursor;
      const uint64_t first = upper > query.limit ? upper - query.limit : 1;
      if (first >= tail->first_seq) {
        for (uint64_t seq = first; seq < upper; ++seq) {
          SB_RETURN_IF_ERROR(add(seq, tail->Value(seq)));
        }
        scan.has_more = first > 1;
        if (scan.has_more) scan.next_cursor_seq = first;
        tails_.CountHit();
        return scan;
      }
    }
    // Scans never run memory-only (decision 0011): a miss on the event loop goes to the pool,
    // which counts it.
    if (cache_only_reads) {
      return Status::FromCode(ErrorCode::kWouldBlock, "history tail not cached");
    }
    tails_.CountMiss();
    tail_epoch = tails_.Epoch(owner, query.conv_id);
  }

  BoundedIterator it(db_.get(), handles_[kMessagesCf], Key(query.conv_id, Tag::kMessage),
                     TagEnd(query.conv_id, Tag::kMessage));
  uint32_t count = 0;
  uint64_t first_seq = 0, last_seq = 0;  // Of the messages handed over.
  if (scan.newest_first) {
    // From the newest (cursor 0), or from a cursor past the end: clamped to the newest message,
    // so that a cursor beyond the last seq still reads a full page rather than a short or empty
    // one that makes the history look empty. (Seqs are dense: the message just below the
    // cursor exists unless the cursor is past the end.)
    // cursor >= 2 or 0 here.
    it->SeekForPrev(
        ToSlice(keys::MessageKey(query.conv_id, cursor == 0 ? UINT64_MAX : cursor - 1)));
    SB_RETURN_IF_ERROR(FromRocksDb(it->status(), "read history"));
    if (!it->Valid()) {
      SB_RETURN_IF_ERROR(CheckConversationExists(query.conv_id));
      return scan;
    }
    const uint64_t found = SeqOfMessageKey(it->key());
    // A page from the newest message (no cursor, or one past the end: seqs are dense, so only
    // then is `found` below it) is the conversation's tail, worth caching.
    std::shared_ptr<HistoryTailCache::Tail> tail;
    if (from_tail && (cursor == 0 || cursor > found + 1)) {
      tail = std::make_shared<HistoryTailCache::Tail>();
    }
    cursor = found + 1;
    const uint64_t first = cursor > query.limit ? cursor - query.limit : 1;
    for (it->Seek(ToSlice(keys::MessageKey(query.conv_id, first)));
         it->Valid() && SeqOfMessageKey(it->key()) < cursor; it->Next()) {
      const uint64_t seq = SeqOfMessageKey(it->key());
      const std::string_view value = ToView(it->value());
      SB_RETURN_IF_ERROR(add(seq, value));
      if (count++ == 0) first_seq = seq;
      if (tail && (seq != first + tail->spans.size() || value.empty() ||
                   value.size() % sizeof(uint64_t) != 0)) {
        tail.reset();  // Not dense, or not a stored message: leave it to the scan.
      }
      if (tail) tail->Add(value);
    }
    scan.has_more = first > 1 && count > 0;
    if (scan.has_more) scan.next_cursor_seq = first_seq;  // The oldest: last of the page.
    SB_RETURN_IF_ERROR(FromRocksDb(it->status(), "read history"));
    if (tail && count == cursor - first) {
      tail->first_seq = first;
      tail->last_seq = found;
      tails_.Insert(tail_owner, query.conv_id, std::move(tail), tail_epoch);
    }
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

template <typename Change>
Result<Message> ShardStoreImpl::RewriteMessage(uint64_t conv_id, uint64_t seq, uint64_t actor_id,
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
  ++message->revision;
  rocksdb::WriteBatch batch;
  SB_RETURN_IF_ERROR(
      Put(batch, kMessagesCf, keys::MessageKey(conv_id, seq), codec::EncodeMessage(*message)));
  // Inbox previews show the newest message: when that is the one changed, every member's
  // preview follows (the edited text, or nothing once deleted), through the outbox like the
  // message itself. Older messages are in no preview.
  std::optional<OutboxSequencer::Reservation> reservation;
  auto loaded = LoadState(stripe, conv_id);
  if (!loaded.ok()) return loaded.status();
  const ConvState& state = **loaded;
  if (seq == state.last_seq && state.fan_out(limits_)) {
    InboxUpdate update = MessageUpdate(state, *message);
    update.kind = InboxUpdateKind::kChanged;
    update.revision = message->revision;
    reservation.emplace(outbox_.Reserve());
    SB_RETURN_IF_ERROR(PutOutbox(batch, reservation->seq(), state.members, update));
  }
  SB_RETURN_IF_ERROR(Write(batch, "rewrite message"));
  return message;
}

// ---- Messages -------------------------------------------------------------------------------

Result<SendMessageResult> ShardStoreImpl::SendMessage(const SendMessageRequest& request) {
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

std::vector<Result<SendMessageResult>> ShardStoreImpl::SendMessages(
    const std::vector<SendMessageRequest>& requests) {
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

Result<Message> ShardStoreImpl::GetMessage(uint64_t conv_id, uint64_t seq) {
  SB_RETURN_IF_ERROR(CheckId(conv_id, "conv_id"));
  SB_RETURN_IF_ERROR(CheckId(seq, "seq"));
  SB_RETURN_IF_ERROR(CheckOwned(conv_id, "conv_id"));
  return ReadMessage(conv_id, seq);
}

Result<HistoryPage> ShardStoreImpl::ReadHistory(const HistoryQuery& query) {
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

Result<EncodedHistoryPage> ShardStoreImpl::ReadHistoryEncoded(const HistoryQuery& query) {
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

Result<std::vector<uint64_t>> ShardStoreImpl::ListSenderMessages(uint64_t conv_id,
                                                                 uint64_t sender_id,
                                                                 uint64_t before_seq,
                                                                 uint32_t limit) {
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

Result<Message> ShardStoreImpl::EditMessage(uint64_t conv_id, uint64_t seq, uint64_t editor_id,
                                            const std::string& new_body) {
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

Result<Message> ShardStoreImpl::DeleteMessage(uint64_t conv_id, uint64_t seq, uint64_t actor_id) {
  return RewriteMessage(conv_id, seq, actor_id, [](Message& message) -> Result<bool> {
    if (message.deleted) return false;  // Deleting twice changes nothing.
    message.body.clear();
    message.deleted = true;
    return true;
  });
}

// ---- Helpers --------------------------------------------------------------------------------

Status ShardStoreImpl::CheckSend(const SendMessageRequest& request) const {
  SB_RETURN_IF_ERROR(CheckId(request.conv_id, "conv_id"));
  SB_RETURN_IF_ERROR(CheckId(request.sender_id, "sender_id"));
  SB_RETURN_IF_ERROR(CheckOwned(request.conv_id, "conv_id"));
  if (request.client_msg_id.empty() || request.client_msg_id.size() > keys::kMaxClientMsgIdBytes) {
    return Status::InvalidArgument(
        "client_msg_id",
        "client_msg_id must be 1.." + std::to_string(keys::kMaxClientMsgIdBytes) + " bytes");
  }
  return CheckBody(request.body);
}

Status ShardStoreImpl::CheckSender(const ConvState& state, const SendMessageRequest& request) {
  auto member = IsMember(state, request.conv_id, request.sender_id);
  if (!member.ok()) return member.status();
  if (*member) return Status::Ok();
  return Status::PermissionDenied("user " + std::to_string(request.sender_id) +
                                  " is not a member of conversation " +
                                  std::to_string(request.conv_id));
}

Result<std::optional<SendMessageResult>> ShardStoreImpl::FindDuplicate(
    const SendMessageRequest& request) {
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
      SendMessageResult{seq, original->sent_at_ms, /*duplicate=*/true, WriteToken{}});
}

Result<SendMessageResult> ShardStoreImpl::StageSend(
    rocksdb::WriteBatch& batch, ConvState& state, const SendMessageRequest& request,
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
  return SendMessageResult{message.seq, message.sent_at_ms, /*duplicate=*/false, WriteToken{}};
}

InboxUpdate ShardStoreImpl::MessageUpdate(const ConvState& state, const Message& message) const {
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

Result<Message> ShardStoreImpl::ReadMessage(uint64_t conv_id, uint64_t seq) {
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

Result<uint64_t> ShardStoreImpl::SeqAtTime(uint64_t conv_id, int64_t time_ms, bool newest_first) {
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

}  // namespace scrollback::engine_internal
