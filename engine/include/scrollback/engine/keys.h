// Key encoding: the one place that owns the byte layout of every RocksDB key Scrollback writes.
// docs/formats.md describes the same layout for humans; keep the two in step.
//
// Invariants:
//   - Integers are big-endian, so byte order is numeric order.
//   - Every key of a sharded table begins with the 16-byte *entity prefix*
//       token(shard key) (8) | shard key (8)
//     where the shard key is a conversation id or a user id and token = TokenOf(shard key).
//     A token range is therefore one contiguous key range in every column family, which is what
//     lets a shard be split with DeleteRange and moved by range scan.
//   - The byte after the prefix is a row tag, unique across all column families.
//     Persisted: never renumber or reuse a tag.
//   - The one exception to the prefix rule is the outbox, a per-replica FIFO queue keyed by
//     an increasing outbox sequence (see OutboxKey).
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "scrollback/schema/token.h"

namespace scrollback::keys {

// Row tags. Persisted in every key: never renumber or reuse.
enum class Tag : uint8_t {
  kConversation = 0x01,  // cf conversations: prefix(conv) | tag
  kMember = 0x02,        // cf conversations: prefix(conv) | tag | user_id
  kMessage = 0x10,       // cf messages:      prefix(conv) | tag | seq
  kClientMsgId = 0x20,   // cf indexes:       prefix(conv) | tag | sender_id | client_msg_id
  kTimeIndex = 0x21,     // cf indexes:       prefix(conv) | tag | ordered(sent_at_ms) | seq
  kSenderIndex = 0x22,   // cf indexes:       prefix(conv) | tag | sender_id | seq
  kInboxState = 0x30,    // cf inbox:         prefix(user) | tag | conv_id
  kInboxByActivity =
      0x31,               // cf inbox:         prefix(user) | tag | ~ordered(activity_ms) | conv_id
  kRetiredOutbox = 0x40,  // format 1 only (prefix(conv) | tag | seq | user): never reuse.
  kOutboxV2 = 0x41,       // format 2 (read and deleted, never written): tag | outbox_seq | user_id
  kOutbox = 0x42,         // cf outbox:        tag | outbox_seq | part (no prefix)
};

inline constexpr size_t kPrefixSize = 16;
inline constexpr size_t kMaxClientMsgIdBytes = 64;
// Longest key: prefix + tag + sender + client_msg_id.
inline constexpr size_t kMaxKeySize = kPrefixSize + 1 + 8 + kMaxClientMsgIdBytes;

// Key of the shard's metadata row in the default column family. Not token-prefixed: it belongs
// to the shard replica, not to a shard key. The literal starts with NUL, so the string_view is
// empty: the row's key is the empty key. Persisted that way since format 1; never change it.
inline constexpr std::string_view kShardMetaKey = "\x00scrollback/shard-meta";
// Epoch records in the default column family: kEpochKeyPrefix | epoch (big-endian 64) ->
// the LSN before the epoch's first write (big-endian 64). See ShardStore::BeginEpoch.
inline constexpr std::string_view kEpochKeyPrefix = "epoch/";

inline void PutBigEndian64(char* out, uint64_t v) {
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
}

inline uint64_t GetBigEndian64(const char* in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(in[i]);
  return v;
}

// Maps a signed time to an unsigned value with the same order (flips the sign bit).
inline uint64_t OrderedFromSigned(int64_t v) {
  return static_cast<uint64_t>(v) ^ (uint64_t{1} << 63);
}
inline int64_t SignedFromOrdered(uint64_t v) {
  return static_cast<int64_t>(v ^ (uint64_t{1} << 63));
}

// A key built in place, without heap allocation (keys are short and on every hot path).
class Key {
 public:
  Key() = default;
  // Starts a key with the entity prefix of `shard_key`.
  explicit Key(uint64_t shard_key) { AppendPrefix(shard_key); }
  Key(uint64_t shard_key, Tag tag) : Key(shard_key) { AppendTag(tag); }

  Key& AppendPrefix(uint64_t shard_key) {
    AppendU64(TokenOf(shard_key));
    return AppendU64(shard_key);
  }
  Key& AppendTag(Tag tag) {
    data_[size_++] = static_cast<char>(tag);
    return *this;
  }
  Key& AppendU64(uint64_t v) {
    PutBigEndian64(data_ + size_, v);
    size_ += 8;
    return *this;
  }
  // REQUIRES: size() + bytes.size() <= kMaxKeySize.
  Key& AppendBytes(std::string_view bytes) {
    std::memcpy(data_ + size_, bytes.data(), bytes.size());
    size_ += bytes.size();
    return *this;
  }

  const char* data() const { return data_; }
  size_t size() const { return size_; }
  std::string_view view() const { return {data_, size_}; }
  std::string str() const { return std::string(view()); }

 private:
  char data_[kMaxKeySize];
  size_t size_ = 0;
};

// ---- Row keys -------------------------------------------------------------------------------

inline Key ConversationKey(uint64_t conv_id) { return Key(conv_id, Tag::kConversation); }
inline Key MemberKey(uint64_t conv_id, uint64_t user_id) {
  Key k(conv_id, Tag::kMember);
  k.AppendU64(user_id);
  return k;
}
inline Key MessageKey(uint64_t conv_id, uint64_t seq) {
  Key k(conv_id, Tag::kMessage);
  k.AppendU64(seq);
  return k;
}
// REQUIRES: client_msg_id.size() <= kMaxClientMsgIdBytes.
inline Key ClientMsgIdKey(uint64_t conv_id, uint64_t sender_id, std::string_view client_msg_id) {
  Key k(conv_id, Tag::kClientMsgId);
  k.AppendU64(sender_id).AppendBytes(client_msg_id);
  return k;
}
inline Key TimeIndexKey(uint64_t conv_id, int64_t sent_at_ms, uint64_t seq) {
  Key k(conv_id, Tag::kTimeIndex);
  k.AppendU64(OrderedFromSigned(sent_at_ms)).AppendU64(seq);
  return k;
}
inline Key SenderIndexKey(uint64_t conv_id, uint64_t sender_id, uint64_t seq) {
  Key k(conv_id, Tag::kSenderIndex);
  k.AppendU64(sender_id).AppendU64(seq);
  return k;
}
inline Key InboxStateKey(uint64_t user_id, uint64_t conv_id) {
  Key k(user_id, Tag::kInboxState);
  k.AppendU64(conv_id);
  return k;
}
// Newest activity sorts first: the time is stored inverted.
inline Key InboxByActivityKey(uint64_t user_id, int64_t activity_ms, uint64_t conv_id) {
  Key k(user_id, Tag::kInboxByActivity);
  k.AppendU64(~OrderedFromSigned(activity_ms)).AppendU64(conv_id);
  return k;
}
// The outbox is a queue in write order: one outbox_seq per operation, and per operation one
// record for each group of at most kMaxOutboxTargets users that get the same update (`part`
// numbers the groups, from 0). Not token-prefixed: after a split both halves keep the queue,
// and delivering a record twice is harmless (inbox updates are idempotent).
inline Key OutboxKey(uint64_t outbox_seq, uint64_t part) {
  Key k;
  k.AppendTag(Tag::kOutbox).AppendU64(outbox_seq).AppendU64(part);
  return k;
}
inline constexpr size_t kMaxOutboxTargets = 256;
// Format 2's outbox rows: one per operation and target user. A format-2 shard opened by this
// build delivers and deletes them before any record of its own (their tag sorts first).
inline Key OutboxV2Key(uint64_t outbox_seq, uint64_t target_user_id) {
  Key k;
  k.AppendTag(Tag::kOutboxV2).AppendU64(outbox_seq).AppendU64(target_user_id);
  return k;
}
inline constexpr size_t kOutboxKeySize = 1 + 8 + 8;

// The smallest key strictly greater than every key that starts with `prefix` (used as an
// exclusive upper bound). Returns nullopt when no such key exists (prefix is all 0xff).
std::optional<std::string> PrefixSuccessor(std::string_view prefix);

// ---- Decoding ---------------------------------------------------------------------------------

struct EntityPrefix {
  uint64_t token = 0;
  uint64_t shard_key = 0;
};
// nullopt when `key` is shorter than a prefix.
std::optional<EntityPrefix> DecodePrefix(std::string_view key);

struct DecodedMessageKey {
  uint64_t conv_id = 0;
  uint64_t seq = 0;
};
std::optional<DecodedMessageKey> DecodeMessageKey(std::string_view key);

struct DecodedTimeIndexKey {
  uint64_t conv_id = 0;
  int64_t sent_at_ms = 0;
  uint64_t seq = 0;
};
std::optional<DecodedTimeIndexKey> DecodeTimeIndexKey(std::string_view key);

// ---- Token ranges -----------------------------------------------------------------------------

// The key range [begin, end) holding every sharded key whose token lies in `range`. `end` is
// empty when the range reaches the top of the ring (no upper bound).
struct KeyRange {
  std::string begin;
  std::string end;
};
KeyRange KeyRangeOf(TokenRange range);

}  // namespace scrollback::keys
