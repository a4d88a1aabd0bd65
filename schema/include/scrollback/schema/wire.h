// Conversions between the plain C++ value types (types.h) and their Cap'n Proto structs
// (types.capnp). Used for both storage values (engine/value_codec) and RPC messages, so that
// every field mapping is written once. Include only from .cc files: it pulls in generated code.
#pragma once

#include <capnp/blob.h>

#include <string>
#include <string_view>

#include "scrollback/schema/status.h"
#include "scrollback/schema/types.capnp.h"
#include "scrollback/schema/types.h"

namespace scrollback::wire {

inline std::string_view View(capnp::Data::Reader data) {
  return {reinterpret_cast<const char*>(data.begin()), data.size()};
}
inline std::string_view View(capnp::Text::Reader text) { return {text.cStr(), text.size()}; }
inline capnp::Data::Reader AsData(std::string_view bytes) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(bytes.data()), bytes.size());
}
inline capnp::Text::Reader AsText(const std::string& text) {
  return capnp::Text::Reader(text.data(), text.size());
}

// A Cap'n Proto enum value read from the network as the C++ enum `E` (uint8_t-based): the raw
// value, saturated to 0xFF so that no unknown value wraps onto a known one. Values this build
// does not know stay unknown, for the engine to refuse naming the field.
template <typename E, typename WireEnum>
E RawEnum(WireEnum value) {
  const auto raw = static_cast<uint16_t>(value);
  return static_cast<E>(raw > 0xFF ? 0xFF : raw);
}

void ToWire(const Conversation& in, schema::Conversation::Builder out);
void FromWire(schema::Conversation::Reader in, Conversation* out);

void ToWire(const Message& in, schema::Message::Builder out);
void FromWire(schema::Message::Reader in, Message* out);

void ToWire(const InboxUpdate& in, schema::InboxUpdate::Builder out);
void FromWire(schema::InboxUpdate::Reader in, InboxUpdate* out);

void ToWire(const InboxEntry& in, schema::InboxEntry::Builder out);
void FromWire(schema::InboxEntry::Reader in, InboxEntry* out);

void ToWire(const HistoryPage& in, schema::HistoryPage::Builder out);
void FromWire(schema::HistoryPage::Reader in, HistoryPage* out);

// A fresh `T` read from `in`: `Decode<Message>(reply.getMessage())`.
template <typename T, typename Reader>
T Decode(Reader in) {
  T out;
  FromWire(in, &out);
  return out;
}

// An OK status writes nothing (callers leave the `error` field unset).
void ToWire(const Status& in, schema::Error::Builder out);
Status FromWire(schema::Error::Reader in);

}  // namespace scrollback::wire
