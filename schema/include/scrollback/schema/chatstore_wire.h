// Conversions for the request structs of the ChatStore API (chatstore.capnp), shared by the
// node's service, the router and the smart client. Include only from .cc files.
#pragma once

#include "scrollback/schema/chatstore.capnp.h"
#include "scrollback/schema/wire.h"

namespace scrollback::wire {

// Copies a list of user ids; invalid-argument naming `field` when it has more than `max`.
Status ReadIdList(capnp::List<uint64_t>::Reader in, uint32_t max, const char* field,
                  std::vector<uint64_t>* out);

void ToWire(const SendMessageRequest& in, schema::SendRequest::Builder out);
SendMessageRequest ReadSend(schema::SendRequest::Reader in);

void ToWire(const WriteToken& in, schema::WriteToken::Builder out);
WriteToken FromWire(schema::WriteToken::Reader in);

void ToWire(const HistoryQuery& in, schema::HistoryRequest::Builder out);
HistoryQuery ReadHistory(schema::HistoryRequest::Reader in);

void ToWire(const ReadOptions& in, schema::ReadOptions::Builder out);
ReadOptions FromWire(schema::ReadOptions::Reader in);

void ToWire(const WriteOptions& in, schema::WriteOptions::Builder out);
WriteOptions FromWire(schema::WriteOptions::Reader in);

}  // namespace scrollback::wire
