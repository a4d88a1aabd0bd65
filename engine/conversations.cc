// ShardStoreImpl's conversation methods: the conversation and member rows (cf conversations).
// Create, get, list members, add and remove members (with their system messages and inbox
// updates), and the per-stripe cache of conversation state (ConvState) that sends and membership
// changes read first. Declared in shard_store_impl.h.
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <iterator>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "rocksdb_status.h"
#include "scrollback/engine/keys.h"
#include "scrollback/engine/value_codec.h"
#include "shard_store_impl.h"
#include "utf8.h"

namespace scrollback::engine_internal {

// ---- Conversations --------------------------------------------------------------------------

Result<Conversation> ShardStoreImpl::CreateConversation(const CreateConversationRequest& request) {
  SB_RETURN_IF_ERROR(CheckId(request.conv_id, "conv_id"));
  SB_RETURN_IF_ERROR(CheckId(request.creator_id, "creator_id"));
  SB_RETURN_IF_ERROR(CheckOwned(request.conv_id, "conv_id"));
  if (request.title.size() > limits_.max_title_bytes) {
    return Status::InvalidArgument("title", "title is " + std::to_string(request.title.size()) +
                                                " bytes, limit " +
                                                std::to_string(limits_.max_title_bytes));
  }
  if (!IsValidUtf8(request.title)) {
    return Status::InvalidArgument("title", "title is not valid UTF-8");
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

Result<Conversation> ShardStoreImpl::GetConversation(uint64_t conv_id) {
  SB_RETURN_IF_ERROR(CheckId(conv_id, "conv_id"));
  SB_RETURN_IF_ERROR(CheckOwned(conv_id, "conv_id"));
  Stripe& stripe = ConvStripe(conv_id);
  std::lock_guard lock(stripe.mu);
  auto state = LoadState(stripe, conv_id);
  if (!state.ok()) return state.status();
  return (*state)->ToConversation();
}

Result<std::vector<uint64_t>> ShardStoreImpl::ListMembers(uint64_t conv_id, uint64_t after_user_id,
                                                          uint32_t limit) {
  SB_RETURN_IF_ERROR(CheckId(conv_id, "conv_id"));
  SB_RETURN_IF_ERROR(CheckOwned(conv_id, "conv_id"));
  SB_RETURN_IF_ERROR(CheckLimit(limit, limits_.max_page_size, "limit"));
  std::vector<uint64_t> members;
  SB_RETURN_IF_ERROR(ScanMembers(conv_id, after_user_id, limit, &members));
  if (members.empty()) SB_RETURN_IF_ERROR(CheckConversationExists(conv_id));
  return members;
}

Result<uint64_t> ShardStoreImpl::AddMembers(uint64_t conv_id, uint64_t actor_id,
                                            const std::vector<uint64_t>& user_ids) {
  return ChangeMembers(conv_id, actor_id, user_ids, MessageKind::kMembersAdded);
}

Result<uint64_t> ShardStoreImpl::RemoveMembers(uint64_t conv_id, uint64_t actor_id,
                                               const std::vector<uint64_t>& user_ids) {
  return ChangeMembers(conv_id, actor_id, user_ids, MessageKind::kMembersRemoved);
}

// ---- Helpers --------------------------------------------------------------------------------

Result<ShardStoreImpl::ConvState*> ShardStoreImpl::LoadState(Stripe& stripe, uint64_t conv_id) {
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

Status ShardStoreImpl::ScanMembers(uint64_t conv_id, uint64_t after_user_id, uint32_t limit,
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

Result<uint64_t> ShardStoreImpl::ChangeMembers(uint64_t conv_id, uint64_t actor_id,
                                               const std::vector<uint64_t>& user_ids,
                                               MessageKind kind) {
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
                                    " is not a member of conversation " + std::to_string(conv_id));
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
  const uint64_t after_wide = adding ? uint64_t{before} + changed.size() : before - changed.size();
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
  uint64_t part = 0;  // Both groups' records go under the one outbox_seq.
  SB_RETURN_IF_ERROR(PutOutbox(batch, reservation.seq(), changed, membership, &part));
  const uint32_t limit = limits_.fan_out_member_limit;
  if (before <= limit || after <= limit) {
    std::vector<uint64_t> others;
    if (state.members_cached) {
      others = state.members;
    } else {
      SB_RETURN_IF_ERROR(ScanMembers(conv_id, 0, limit + limits_.max_members_per_change, &others));
    }
    std::vector<uint64_t> remaining;  // Members before the change, minus the changed users.
    std::set_difference(others.begin(), others.end(), changed.begin(), changed.end(),
                        std::back_inserter(remaining));
    SB_RETURN_IF_ERROR(PutOutbox(batch, reservation.seq(), remaining, update, &part));
  }
  SB_RETURN_IF_ERROR(Write(batch, adding ? "add members" : "remove members"));
  stripe.convs.erase(conv_id);  // Reloaded on next use, with the new member list.
  return message.seq;
}

}  // namespace scrollback::engine_internal
