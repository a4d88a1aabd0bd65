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
  // As it is: an unknown value travels on for the node to refuse.
  out.setDirection(static_cast<schema::Direction>(static_cast<uint16_t>(in.direction)));
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
  // The raw value: an enumerant this build does not know stays unknown (the engine answers
  // invalid-argument naming `direction`), never silently read as newest-first.
  out.direction = RawEnum<Direction>(in.getDirection());
  out.cursor_seq = in.getCursorSeq();
  if (in.getHasFromTime()) out.from_time_ms = in.getFromTimeMs();
  out.limit = in.getLimit();
  return out;
}

void ToWire(const WriteToken& in, schema::WriteToken::Builder out) {
  out.setShardId(in.shard_id);
  out.setEpoch(in.epoch);
  out.setLsn(in.lsn);
}

WriteToken FromWire(schema::WriteToken::Reader in) {
  return WriteToken{in.getShardId(), in.getEpoch(), in.getLsn()};
}

void ToWire(const ReadOptions& in, schema::ReadOptions::Builder out) {
  out.setConsistency(static_cast<schema::Consistency>(in.consistency));
  if (in.consistency == Consistency::kSession) ToWire(in.token, out.initToken());
  out.setMaxLagMs(in.max_lag_ms);
}

ReadOptions FromWire(schema::ReadOptions::Reader in) {
  ReadOptions out;
  // An unknown level (a newer client) reads strongly: the one answer that is never stale.
  const auto level = RawEnum<Consistency>(in.getConsistency());
  out.consistency = level == Consistency::kReplica || level == Consistency::kSession
                        ? level
                        : Consistency::kStrong;
  if (in.hasToken()) out.token = FromWire(in.getToken());
  out.max_lag_ms = in.getMaxLagMs();
  return out;
}

void ToWire(const WriteOptions& in, schema::WriteOptions::Builder out) {
  out.setAck(static_cast<schema::AckMode>(in.ack));
  out.setTimeoutMs(in.timeout_ms);
}

WriteOptions FromWire(schema::WriteOptions::Reader in) {
  WriteOptions out;
  // An unknown mode (a newer client) gets the strongest this node knows: never a silent
  // downgrade.
  const auto mode = RawEnum<AckMode>(in.getAck());
  out.ack = mode == AckMode::kDefault || mode == AckMode::kAsync ? mode : AckMode::kSemiSync;
  out.timeout_ms = in.getTimeoutMs();
  return out;
}

}  // namespace scrollback::wire
