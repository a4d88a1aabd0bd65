# Scrollback's data types: what is stored in RocksDB and what is sent over the wire.
#
# This file is a public, persisted contract. Rules for changing it:
#   - never renumber, retype or reuse a field ordinal (@N) or an enumerant;
#   - add new fields at the end with the next ordinal; old readers ignore them, new readers see
#     the default value in old data;
#   - a field that is no longer used is renamed `obsoleteXxx`, never removed.
# Stored values are the standard (unpacked) Cap'n Proto serialization of one of these structs;
# docs/formats.md says which struct each key holds.
@0x91feaff077426c21;

$import "/capnp/c++.capnp".namespace("scrollback::schema");

struct Conversation {
  # A chat conversation (direct chat, group or channel). Its shard key is `convId`.
  convId @0 :UInt64;         # Chosen by the caller; unique cluster-wide; never 0.
  title @1 :Text;            # UTF-8, at most ShardLimits.max_title_bytes bytes; may be empty.
  creatorId @2 :UInt64;      # The user who created it.
  createdAtMs @3 :Int64;     # Server time of creation, milliseconds since the Unix epoch.
  memberCount @4 :UInt32;    # Current number of members.
  lastSeq @5 :UInt64;        # Seq of the newest message; 0 when there is none. Not persisted in
                             # the conversation row (derived from the message rows on read).
  lastActivityMs @6 :Int64;  # sentAtMs of the newest message, or createdAtMs. Derived like lastSeq.
}

struct Member {
  # One member of a conversation. Stored under the conversation's member key.
  userId @0 :UInt64;
  joinedAtMs @1 :Int64;      # Server time the member was added.
  joinedSeq @2 :UInt64;      # Seq of the system message that added them (0: a founding member).
}

enum MessageKind {
  text @0;            # A user's message; `body` holds its content.
  membersAdded @1;    # System message: `memberIds` were added by `senderId`.
  membersRemoved @2;  # System message: `memberIds` were removed by `senderId`.
}

struct Message {
  # One message of a conversation, identified by (convId, seq).
  convId @0 :UInt64;
  seq @1 :UInt64;            # Assigned by the conversation's primary: dense and increasing from 1.
  senderId @2 :UInt64;       # The user who sent it (or who changed membership).
  sentAtMs @3 :Int64;        # Server time; never decreases along seq within a conversation.
  clientMsgId @4 :Data;      # Idempotency key chosen by the sender (1 to 64 bytes; empty for
                             # system messages). A retry with the same (senderId, clientMsgId)
                             # returns the first seq and writes nothing.
  body @5 :Data;             # Opaque bytes, at most ShardLimits.max_body_bytes. Empty once deleted.
  kind @6 :MessageKind;
  edited @7 :Bool;           # True once the body has been replaced by an edit.
  deleted @8 :Bool;          # A tombstone: the row stays so that paging stays dense.
  editedAtMs @9 :Int64;      # Server time of the last edit or of the delete; 0 if neither.
  memberIds @10 :List(UInt64);  # For membersAdded / membersRemoved: the users concerned.
  revision @11 :UInt32;      # Edits and the delete so far (0: as sent); increases with each.
}

enum InboxUpdateKind {
  message @0;   # A new message in a conversation the user belongs to.
  joined @1;    # The user became a member (at conversation creation or by membersAdded).
  removed @2;   # The user stopped being a member; the conversation leaves their inbox.
  changed @3;   # Message `seq` was edited or deleted (`revision`): if it is the row's newest,
                # its preview replaces the row's (only a newer revision does); if the row has
                # not seen `seq` yet, it is applied as that message. Never moves the row.
}

struct InboxUpdate {
  # A change to one user's inbox, produced by the conversation's shard (as an outbox record, in
  # the same WriteBatch as the message) and applied on the user's shard. Applying is idempotent:
  # an update whose seq is not newer than the stored one is a no-op, so delivery may repeat.
  userId @0 :UInt64;         # Whose inbox; the shard key of the target row.
  convId @1 :UInt64;
  seq @2 :UInt64;            # The conversation's seq this update reflects.
  kind @3 :InboxUpdateKind;
  activityMs @4 :Int64;      # sentAtMs of that message: the inbox sort key.
  senderId @5 :UInt64;       # Sender of that message. Own messages advance the read cursor.
  preview @6 :Data;          # Prefix of the body, cut at a UTF-8 boundary.
  messageKind @7 :MessageKind;
  fanOut @8 :Bool;           # False for conversations above the fan-out member limit: their
                             # inbox row is not updated per message; readers take lastSeq from
                             # the conversation's shard instead.
  title @9 :Text;            # Conversation title, so the inbox row can show it.
  revision @10 :UInt32;      # Message.revision of `seq` (0 for a new message).
}

struct InboxEntry {
  # One row of a user's inbox: a conversation with its last activity. Listed newest first.
  userId @0 :UInt64;
  convId @1 :UInt64;
  lastSeq @2 :UInt64;        # Newest seq applied to this row.
  lastActivityMs @3 :Int64;  # Sort key (descending).
  lastSenderId @4 :UInt64;
  preview @5 :Data;
  previewKind @6 :MessageKind;
  readSeq @7 :UInt64;        # The user's read cursor: every seq <= readSeq is read.
  unreadCount @8 :UInt64;    # lastSeq - readSeq (0 if negative); computed when read, stored as 0.
  fanOut @9 :Bool;           # See InboxUpdate.fanOut.
  title @10 :Text;
}

struct InboxState {
  # Per (user, conversation) bookkeeping row, read on every inbox update. Kept apart from the
  # listing row so that an update needs one point read.
  lastSeq @0 :UInt64;        # Newest seq applied (also for a removal, so late updates stay no-ops).
  lastActivityMs @1 :Int64;  # Locates the listing row; meaningless when `removed`.
  readSeq @2 :UInt64;
  removed @3 :Bool;          # The user left; no listing row exists.
  previewRevision @4 :UInt32;  # Revision of message lastSeq that the preview shows.
}

struct HistoryPage {
  # One page of a conversation's history.
  messages @0 :List(Message);  # In the requested direction.
  nextCursorSeq @1 :UInt64;    # Pass back as the cursor to continue; 0 when there is no more.
  hasMore @2 :Bool;
}

struct OutboxEntry {
  # One outbox record (format 3, docs/formats.md): the inbox update an operation queued for a
  # group of users, stored once for all of them.
  update @0 :InboxUpdate;    # userId is 0: the targets are below.
  targets @1 :List(UInt64);  # User ids still to deliver to; at most 256.
}

struct ShardMeta {
  # The shard's identity, stored once under the meta key (docs/formats.md).
  formatVersion @0 :UInt32;  # Layout version of keys and values; see docs/formats.md.
  shardId @1 :UInt64;
  tokenBegin @2 :UInt64;     # The shard owns tokens in [tokenBegin, tokenEnd]; both inclusive so
  tokenEnd @3 :UInt64;       # that the full range [0, 2^64-1] is expressible.
}

enum ErrorCode {
  # Stable across versions; clients branch on it. Retryable: notOwner (after refreshing the
  # shard map), notPrimary, staleEpoch, overloaded, unavailable.
  ok @0;
  notFound @1;            # The conversation / message / inbox row does not exist.
  invalidArgument @2;     # A field is out of bounds or malformed; `field` names it.
  alreadyExists @3;       # E.g. creating a conversation whose id is taken.
  permissionDenied @4;    # E.g. a non-member sends, or someone edits another's message.
  failedPrecondition @5;  # The target is in the wrong state (e.g. editing a deleted message).
  notOwner @6;            # This node does not own the key; `mapVersion` is the current map.
  notPrimary @7;          # Writes go to the primary; `primaryHint` names it.
  staleEpoch @8;          # The request carries an epoch older than the shard's.
  overloaded @9;          # Back off and retry.
  unavailable @10;        # The shard or node cannot serve now (down, shutting down).
  internal @11;           # A bug or an I/O failure; the message says which.
  corruption @12;         # Stored data failed validation.
  wouldBlock @13;         # Never sent (engine-internal); reserved so that numbers match.
  logGap @14;             # Replication: the log asked for is gone; the replica re-bootstraps.
  notReplicated @15;      # A semiSync write committed on the primary, but no replica confirmed
                          # it within the timeout: it may or may not survive a failover.
                          # Retrying is safe (writes are idempotent) and waits again.
}

struct Error {
  code @0 :ErrorCode;
  message @1 :Text;          # Human-readable; not for branching.
  field @2 :Text;            # invalidArgument: the offending field's name.
  mapVersion @3 :UInt64;     # notOwner: the node's current shard-map version.
  primaryHint @4 :Text;      # notPrimary: address of the current primary, if known.
  epoch @5 :UInt64;          # staleEpoch: the shard's current epoch.
}
