#include "scrollback/schema/wire.h"

namespace scrollback::wire {

void ToWire(const Conversation& in, schema::Conversation::Builder out) {
  out.setConvId(in.conv_id);
  out.setTitle(AsText(in.title));
  out.setCreatorId(in.creator_id);
  out.setCreatedAtMs(in.created_at_ms);
  out.setMemberCount(in.member_count);
  out.setLastSeq(in.last_seq);
  out.setLastActivityMs(in.last_activity_ms);
}

void FromWire(schema::Conversation::Reader in, Conversation* out) {
  out->conv_id = in.getConvId();
  out->title = View(in.getTitle());
  out->creator_id = in.getCreatorId();
  out->created_at_ms = in.getCreatedAtMs();
  out->member_count = in.getMemberCount();
  out->last_seq = in.getLastSeq();
  out->last_activity_ms = in.getLastActivityMs();
}

void ToWire(const Message& in, schema::Message::Builder out) {
  out.setConvId(in.conv_id);
  out.setSeq(in.seq);
  out.setSenderId(in.sender_id);
  out.setSentAtMs(in.sent_at_ms);
  if (!in.client_msg_id.empty()) out.setClientMsgId(AsData(in.client_msg_id));
  if (!in.body.empty()) out.setBody(AsData(in.body));
  out.setKind(static_cast<schema::MessageKind>(in.kind));
  out.setEdited(in.edited);
  out.setDeleted(in.deleted);
  out.setEditedAtMs(in.edited_at_ms);
  out.setRevision(in.revision);
  if (!in.member_ids.empty()) {
    auto ids = out.initMemberIds(static_cast<unsigned>(in.member_ids.size()));
    for (unsigned i = 0; i < in.member_ids.size(); ++i) ids.set(i, in.member_ids[i]);
  }
}

void FromWire(schema::Message::Reader in, Message* out) {
  out->conv_id = in.getConvId();
  out->seq = in.getSeq();
  out->sender_id = in.getSenderId();
  out->sent_at_ms = in.getSentAtMs();
  out->client_msg_id = View(in.getClientMsgId());
  out->body = View(in.getBody());
  out->kind = static_cast<MessageKind>(in.getKind());
  out->edited = in.getEdited();
  out->deleted = in.getDeleted();
  out->edited_at_ms = in.getEditedAtMs();
  out->revision = in.getRevision();
  out->member_ids.clear();
  if (in.hasMemberIds()) {
    for (uint64_t id : in.getMemberIds()) out->member_ids.push_back(id);
  }
}

void ToWire(const InboxUpdate& in, schema::InboxUpdate::Builder out) {
  out.setUserId(in.user_id);
  out.setConvId(in.conv_id);
  out.setSeq(in.seq);
  out.setKind(static_cast<schema::InboxUpdateKind>(in.kind));
  out.setActivityMs(in.activity_ms);
  out.setSenderId(in.sender_id);
  if (!in.preview.empty()) out.setPreview(AsData(in.preview));
  out.setMessageKind(static_cast<schema::MessageKind>(in.message_kind));
  out.setFanOut(in.fan_out);
  if (!in.title.empty()) out.setTitle(AsText(in.title));
  out.setRevision(in.revision);
}

void FromWire(schema::InboxUpdate::Reader in, InboxUpdate* out) {
  out->user_id = in.getUserId();
  out->conv_id = in.getConvId();
  out->seq = in.getSeq();
  out->kind = RawEnum<InboxUpdateKind>(in.getKind());
  out->activity_ms = in.getActivityMs();
  out->sender_id = in.getSenderId();
  out->preview = View(in.getPreview());
  out->message_kind = RawEnum<MessageKind>(in.getMessageKind());
  out->fan_out = in.getFanOut();
  out->title = View(in.getTitle());
  out->revision = in.getRevision();
}

void ToWire(const InboxEntry& in, schema::InboxEntry::Builder out) {
  out.setUserId(in.user_id);
  out.setConvId(in.conv_id);
  out.setLastSeq(in.last_seq);
  out.setLastActivityMs(in.last_activity_ms);
  out.setLastSenderId(in.last_sender_id);
  if (!in.preview.empty()) out.setPreview(AsData(in.preview));
  out.setPreviewKind(static_cast<schema::MessageKind>(in.preview_kind));
  out.setReadSeq(in.read_seq);
  out.setUnreadCount(in.unread_count);
  out.setFanOut(in.fan_out);
  if (!in.title.empty()) out.setTitle(AsText(in.title));
}

void FromWire(schema::InboxEntry::Reader in, InboxEntry* out) {
  out->user_id = in.getUserId();
  out->conv_id = in.getConvId();
  out->last_seq = in.getLastSeq();
  out->last_activity_ms = in.getLastActivityMs();
  out->last_sender_id = in.getLastSenderId();
  out->preview = View(in.getPreview());
  out->preview_kind = static_cast<MessageKind>(in.getPreviewKind());
  out->read_seq = in.getReadSeq();
  // Derived, never trusted from the bytes: stored rows hold 0 here.
  out->unread_count = out->last_seq > out->read_seq ? out->last_seq - out->read_seq : 0;
  out->fan_out = in.getFanOut();
  out->title = View(in.getTitle());
}

void ToWire(const HistoryPage& in, schema::HistoryPage::Builder out) {
  auto messages = out.initMessages(static_cast<unsigned>(in.messages.size()));
  for (unsigned i = 0; i < in.messages.size(); ++i) ToWire(in.messages[i], messages[i]);
  out.setNextCursorSeq(in.next_cursor_seq);
  out.setHasMore(in.has_more);
}

void FromWire(schema::HistoryPage::Reader in, HistoryPage* out) {
  out->messages.clear();
  out->messages.reserve(in.getMessages().size());
  for (auto m : in.getMessages()) FromWire(m, &out->messages.emplace_back());
  out->next_cursor_seq = in.getNextCursorSeq();
  out->has_more = in.getHasMore();
}

void ToWire(const Status& in, schema::Error::Builder out) {
  if (in.ok()) return;
  // kWouldBlock is engine-internal; should one ever escape, the peer sees a retryable
  // unavailable.
  out.setCode(in.code() == ErrorCode::kWouldBlock ? schema::ErrorCode::UNAVAILABLE
                                                  : static_cast<schema::ErrorCode>(in.code()));
  out.setMessage(AsText(in.message()));
  if (!in.field().empty()) out.setField(AsText(in.field()));
  if (!in.primary_hint().empty()) out.setPrimaryHint(AsText(in.primary_hint()));
  if (in.epoch() != 0) out.setEpoch(in.epoch());
}

Status FromWire(schema::Error::Reader in) {
  auto code = static_cast<uint16_t>(in.getCode());
  if (code == 0) return Status::Ok();
  if (code > static_cast<uint16_t>(ErrorCode::kNotReplicated) ||
      code == static_cast<uint16_t>(ErrorCode::kWouldBlock)) {
    return Status::Internal("unknown error code " + std::to_string(code) + ": " +
                            std::string(View(in.getMessage())));
  }
  if (code == static_cast<uint16_t>(ErrorCode::kInvalidArgument)) {
    return Status::InvalidArgument(std::string(View(in.getField())),
                                   std::string(View(in.getMessage())));
  }
  if (code == static_cast<uint16_t>(ErrorCode::kNotPrimary)) {
    return Status::NotPrimary(std::string(View(in.getMessage())),
                              std::string(View(in.getPrimaryHint())));
  }
  if (code == static_cast<uint16_t>(ErrorCode::kStaleEpoch)) {
    return Status::StaleEpoch(std::string(View(in.getMessage())), in.getEpoch());
  }
  return Status::FromCode(static_cast<ErrorCode>(code), std::string(View(in.getMessage())));
}

}  // namespace scrollback::wire
