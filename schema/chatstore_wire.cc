#include "scrollback/schema/chatstore_wire.h"

namespace scrollback::wire {

Status ReadIdList(capnp::List<uint64_t>::Reader in, uint32_t max, const char* field,
                  std::vector<uint64_t>* out) {
  if (in.size() > max) {
    return Status::InvalidArgument(
        field, std::string(field) + " lists more than " + std::to_string(max) + " users");
  }
  out->clear();
  out->reserve(in.size());
  for (uint64_t id : in) out->push_back(id);
  return Status::Ok();
}

void ToWire(const SendMessageRequest& in, schema::SendRequest::Builder out) {
  out.setConvId(in.conv_id);
  out.setSenderId(in.sender_id);
  out.setClientMsgId(AsData(in.client_msg_id));
  out.setBody(AsData(in.body));
}

SendMessageRequest ReadSend(schema::SendRequest::Reader in) {
  SendMessageRequest out;
  out.conv_id = in.getConvId();
  out.sender_id = in.getSenderId();
  out.client_msg_id = View(in.getClientMsgId());
  out.body = View(in.getBody());
  return out;
}

void ToWire(const HistoryQuery& in, schema::HistoryRequest::Builder out) {
  out.setConvId(in.conv_id);
  out.setDirection(in.direction == Direction::kOldestFirst ? schema::Direction::OLDEST_FIRST
                                                           : schema::Direction::NEWEST_FIRST);
  out.setCursorSeq(in.cursor_seq);
  if (in.from_time_ms) {
    out.setHasFromTime(true);
    out.setFromTimeMs(*in.from_time_ms);
  }
  out.setLimit(in.limit);
}

HistoryQuery ReadHistory(schema::HistoryRequest::Reader in) {
  HistoryQuery out;
  out.conv_id = in.getConvId();
  out.direction = in.getDirection() == schema::Direction::OLDEST_FIRST ? Direction::kOldestFirst
                                                                       : Direction::kNewestFirst;
  out.cursor_seq = in.getCursorSeq();
  if (in.getHasFromTime()) out.from_time_ms = in.getFromTimeMs();
  out.limit = in.getLimit();
  return out;
}

}  // namespace scrollback::wire
