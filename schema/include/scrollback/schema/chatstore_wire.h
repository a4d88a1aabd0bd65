// Conversions for the request structs of the ChatStore API (chatstore.capnp), shared by the
// node's service, the router and the smart client. Include only from .cc files.
#pragma once

#include "scrollback/schema/chatstore.capnp.h"
#include "scrollback/schema/wire.h"

namespace scrollback::wire {

void ToWire(const SendMessageRequest& in, schema::SendRequest::Builder out);
SendMessageRequest ReadSend(schema::SendRequest::Reader in);

void ToWire(const HistoryQuery& in, schema::HistoryRequest::Builder out);
HistoryQuery ReadHistory(schema::HistoryRequest::Reader in);

}  // namespace scrollback::wire
