// Scrollback's value types: plain C++ mirrors of the schema structs (schema/types.capnp), so
// that callers need not touch generated Cap'n Proto code. Field meanings are documented there;
// wire.h converts. Shared by the engine, the router and the clients.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace scrollback {

enum class MessageKind : uint8_t { kText = 0, kMembersAdded = 1, kMembersRemoved = 2 };
// kChanged: message `seq` was edited or deleted; the preview follows it (types.capnp).
enum class InboxUpdateKind : uint8_t { kMessage = 0, kJoined = 1, kRemoved = 2, kChanged = 3 };

struct Conversation {
  uint64_t conv_id = 0;
  std::string title;
  uint64_t creator_id = 0;
  int64_t created_at_ms = 0;
  uint32_t member_count = 0;
  uint64_t last_seq = 0;         // 0: no message yet.
  int64_t last_activity_ms = 0;  // sent_at_ms of the newest message, or created_at_ms.
};

struct Message {
  uint64_t conv_id = 0;
  uint64_t seq = 0;
  uint64_t sender_id = 0;
  int64_t sent_at_ms = 0;
  std::string client_msg_id;
  std::string body;
  MessageKind kind = MessageKind::kText;
  bool edited = false;
  bool deleted = false;
  int64_t edited_at_ms = 0;
  std::vector<uint64_t> member_ids;  // membersAdded / membersRemoved only.
  uint32_t revision = 0;             // Edits and the delete so far; 0 as sent.
};

struct InboxUpdate {
  uint64_t user_id = 0;
  uint64_t conv_id = 0;
  uint64_t seq = 0;
  InboxUpdateKind kind = InboxUpdateKind::kMessage;
  int64_t activity_ms = 0;
  uint64_t sender_id = 0;
  std::string preview;
  MessageKind message_kind = MessageKind::kText;
  bool fan_out = true;
  std::string title;
  uint32_t revision = 0;  // Of message `seq` (kChanged); 0 for a new message.
};

struct InboxEntry {
  uint64_t user_id = 0;
  uint64_t conv_id = 0;
  uint64_t last_seq = 0;
  int64_t last_activity_ms = 0;
  uint64_t last_sender_id = 0;
  std::string preview;
  MessageKind preview_kind = MessageKind::kText;
  uint64_t read_seq = 0;
  uint64_t unread_count = 0;  // last_seq - read_seq, floored at 0.
  bool fan_out = true;
  std::string title;
};

// ---- Requests and replies -------------------------------------------------------------------

struct CreateConversationRequest {
  uint64_t conv_id = 0;              // Non-zero, chosen by the caller.
  uint64_t creator_id = 0;           // Non-zero; becomes a member.
  std::vector<uint64_t> member_ids;  // Other founding members (duplicates are merged).
  std::string title;
};

struct SendMessageRequest {
  uint64_t conv_id = 0;
  uint64_t sender_id = 0;     // Must be a member.
  std::string client_msg_id;  // 1..64 bytes, unique per (conversation, sender).
  std::string body;           // 1..max_body_bytes bytes.
};

// Where a write landed: the shard, its primary's epoch, and the shard's log position (RocksDB
// sequence) after the write. Returned with every write so that a later read can ask for
// read-your-writes. `lsn` may include later writes: a lower bound, never compared for equality.
// All zero when not known (the engine alone, which has no epochs).
struct WriteToken {
  uint64_t shard_id = 0;
  uint64_t epoch = 0;
  uint64_t lsn = 0;
  friend bool operator==(const WriteToken&, const WriteToken&) = default;
};

// Which copy of a shard may answer a read (chatstore.capnp Consistency; same numbers).
enum class Consistency : uint8_t {
  kStrong = 0,   // The primary.
  kReplica = 1,  // Any replica whose lag is under max_lag_ms, else the primary.
  kSession = 2,  // Read-your-writes: a replica that has applied `token`, else the primary.
};

// Per-read options (chatstore.capnp ReadOptions). The default reads strongly.
struct ReadOptions {
  Consistency consistency = Consistency::kStrong;
  WriteToken token;         // kSession: what the caller's last write to this key returned.
  uint32_t max_lag_ms = 0;  // kReplica: the staleness bound; 0 = the node's default.
};

// When a write is acknowledged (chatstore.capnp AckMode; docs/replication.md).
enum class AckMode : uint8_t {
  kDefault = 0,   // The node's default.
  kAsync = 1,     // The primary committed it.
  kSemiSync = 2,  // The primary committed it and at least one replica applied it.
};

// Per-write options (chatstore.capnp WriteOptions). The default takes the node's default.
struct WriteOptions {
  AckMode ack = AckMode::kDefault;
  uint32_t timeout_ms = 0;  // kSemiSync: the wait for a replica; 0 = the node's default.
};

// A write's result with its token.
template <typename T>
struct Written {
  T value;
  WriteToken token;
};

struct SendMessageResult {
  uint64_t seq = 0;
  int64_t sent_at_ms = 0;
  bool duplicate = false;  // True when a retry matched an earlier send; nothing was written.
  WriteToken token;        // Set by storage nodes (the engine leaves it empty).
};

enum class Direction : uint8_t {
  kNewestFirst = 0,  // Descending seq: the usual "scroll up" in a chat.
  kOldestFirst = 1,  // Ascending seq: sync "everything after seq N".
};

struct HistoryQuery {
  uint64_t conv_id = 0;
  Direction direction = Direction::kNewestFirst;
  // Exclusive cursor. Newest-first returns seqs < cursor_seq (0: start at the newest);
  // oldest-first returns seqs > cursor_seq (0: start at seq 1).
  uint64_t cursor_seq = 0;
  // When set, replaces cursor_seq: oldest-first starts at the first message sent at or after
  // this time; newest-first starts at the last message sent at or before it.
  std::optional<int64_t> from_time_ms;
  uint32_t limit = 50;  // 1..max_page_size.
};

struct HistoryPage {
  std::vector<Message> messages;  // In the requested direction; deleted ones are tombstones.
  uint64_t next_cursor_seq = 0;   // Pass as cursor_seq to continue; 0 when has_more is false.
  bool has_more = false;
};

struct InboxQuery {
  uint64_t user_id = 0;
  // Continue after this entry: pass the previous page's next_cursor (empty: from the newest).
  std::string cursor;
  uint32_t limit = 20;  // 1..max_page_size.
};

struct InboxPage {
  std::vector<InboxEntry> entries;  // Newest activity first.
  std::string next_cursor;          // Opaque; empty when has_more is false.
  bool has_more = false;
};

// One pending inbox delivery, as read from the outbox.
struct OutboxRecord {
  std::string position;  // Opaque; pass to DeleteOutbox once delivered, or as a read cursor.
  InboxUpdate update;
};

struct OutboxBatch {
  std::vector<OutboxRecord> records;  // In write order.
  std::string next_position;          // Where the next read starts (just after the last record).
};

}  // namespace scrollback
