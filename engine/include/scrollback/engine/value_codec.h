// Encodes the engine's value types as stored RocksDB values and decodes them back.
//
// Format: every value (except the client-msg-id index, which holds an 8-byte big-endian seq,
// and the time / sender index rows, which are empty) is the standard unpacked Cap'n Proto
// serialization of one struct of schema/types.capnp: a segment table, then the segments.
// Decoding validates the bytes (Cap'n Proto bounds checks); bad bytes give a corruption Status.
// Persisted: this is the one place that owns the byte format of every stored value, as keys.h
// owns the keys. docs/formats.md describes the same format for humans; keep the two in step.
// Public so tools and benchmarks can read and write the very same bytes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "scrollback/schema/status.h"
#include "scrollback/schema/types.h"

namespace scrollback::codec {

// Conversation row: title, creator, created_at, member_count. last_seq / last_activity_ms are
// derived from the message rows and not stored.
std::string EncodeConversation(const Conversation& conv);
Status DecodeConversation(std::string_view bytes, Conversation* out);

struct MemberRow {
  uint64_t user_id = 0;
  int64_t joined_at_ms = 0;
  uint64_t joined_seq = 0;
};
std::string EncodeMember(const MemberRow& member);

std::string EncodeMessage(const Message& message);
Status DecodeMessage(std::string_view bytes, Message* out);

// The outbox value leaves userId at 0: the target user is in the key, so one encoding serves
// every member of a send.
std::string EncodeInboxUpdate(const InboxUpdate& update);
Status DecodeInboxUpdate(std::string_view bytes, InboxUpdate* out);
// An outbox record (OutboxEntry): `update` (its user_id is not stored) and its targets.
std::string EncodeOutboxEntry(const InboxUpdate& update, const uint64_t* targets, size_t count);
Status DecodeOutboxEntry(std::string_view bytes, InboxUpdate* update,
                         std::vector<uint64_t>* targets);

std::string EncodeInboxEntry(const InboxEntry& entry);
Status DecodeInboxEntry(std::string_view bytes, InboxEntry* out);

struct InboxState {
  uint64_t last_seq = 0;
  int64_t last_activity_ms = 0;
  uint64_t read_seq = 0;
  bool removed = false;
  uint32_t preview_revision = 0;  // Revision of message last_seq that the listing row shows.
};
std::string EncodeInboxState(const InboxState& state);
Status DecodeInboxState(std::string_view bytes, InboxState* out);

struct ShardMetaRow {
  uint32_t format_version = 0;
  uint64_t shard_id = 0;
  uint64_t token_first = 0;
  uint64_t token_last = 0;
};
std::string EncodeShardMeta(const ShardMetaRow& meta);
Status DecodeShardMeta(std::string_view bytes, ShardMetaRow* out);

}  // namespace scrollback::codec
