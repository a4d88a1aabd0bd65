# The network API: what chat services call (ChatStore), what nodes call on each other (Node),
# and the shard map that routers and smart clients cache.
#
# One error shape (API version 2): every call's results have `error` at the top level; absent
# (or code `ok`) means the call succeeded and the other fields hold the answer. A batch call
# (sendBatch, applyInboxUpdates) that succeeds as a whole reports each item's own outcome in
# its list (`results[i].error`, `errors[i]`); when its top-level `error` is set, the call failed
# as a whole and every item carries the same error. sendMessage also mirrors its error into
# `result.error` for clients of API version 1 (obsolete; read the top-level `error`).
# Errors are values, never RPC exceptions; an RPC exception means the connection or the server
# failed (treat as `unavailable`).
# Input bounds are enforced by the node (see ShardLimits in engine/shard_store.h) and answered
# with `invalidArgument` naming the field.
@0xc3f1a712a078d26a;

using Types = import "types.capnp";
using Replication = import "replication.capnp";
$import "/capnp/c++.capnp".namespace("scrollback::schema");

const apiVersion :UInt32 = 4;
# 1: errors of sendMessage only in result.error, whole-batch failures only per item.
# 2: every call's outcome in a top-level `error` (see above). Node.health reports it.
# 3: reads take ReadOptions (consistency); Node serves the Replication interface. Additive: a
#    client of version 2 reads strongly, as before.
# 4: writes take WriteOptions (acknowledgement mode); error code notReplicated. Additive: a
#    client of version 3 gets the node's default acknowledgement.

struct WriteToken {
  # Returned by writes; a later read may pass it to ask for read-your-writes (used once
  # replication lands: a replica serves the read only after applying this far).
  shardId @0 :UInt64;
  epoch @1 :UInt64;
  lsn @2 :UInt64;      # The shard's RocksDB sequence number after the write.
}

enum Consistency {
  strong @0;    # The primary answers (the default).
  replica @1;   # Any replica whose lag is under maxLagMs may answer; else the primary.
  session @2;   # Read-your-writes: a replica answers once it has applied `token` (same shard and
                # epoch); it waits up to the node's session wait, then answers unavailable.
}

enum AckMode {
  default @0;   # The node's default (scrollbackd --default-ack; async unless configured).
  async @1;     # Acknowledged once the primary committed it (its WAL). A failover may lose it.
  semiSync @2;  # Acknowledged once the primary committed it and at least one replica of the
                # shard applied it (the replica's WAL); else notReplicated after the timeout,
                # never a silent downgrade to async.
}

struct WriteOptions {
  # How a write is acknowledged (docs/replication.md, Acknowledgement). Absent: the default.
  ack @0 :AckMode;
  timeoutMs @1 :UInt32;     # semiSync: how long to wait for a replica; 0 = the node's default.
}

struct ReadOptions {
  # Where a read may be served (docs/replication.md, Reads). Absent: strong.
  consistency @0 :Consistency;
  token @1 :WriteToken;     # session: the token the caller's last write to this key returned.
  maxLagMs @2 :UInt32;      # replica: the staleness bound; 0 = the node's default (1 s).
}

struct SendRequest {
  convId @0 :UInt64;
  senderId @1 :UInt64;
  clientMsgId @2 :Data;   # 1..64 bytes; retries reuse it.
  body @3 :Data;
}

struct SendResult {
  error @0 :Types.Error;  # In sendBatch: this send's outcome. In sendMessage: a mirror of the
                          # call's top-level error (API version 1).
  seq @1 :UInt64;
  sentAtMs @2 :Int64;
  duplicate @3 :Bool;     # A retry: nothing was written, seq is the first send's.
  token @4 :WriteToken;
}

enum Direction {
  newestFirst @0;
  oldestFirst @1;
}

struct HistoryRequest {
  convId @0 :UInt64;
  direction @1 :Direction;
  cursorSeq @2 :UInt64;     # Exclusive; 0 = from the end in `direction`.
  fromTimeMs @3 :Int64;     # Used when `hasFromTime`; replaces cursorSeq.
  hasFromTime @4 :Bool;
  limit @5 :UInt32;         # 1..max page size (default node limit 200).
}

interface ChatStore {
  # Reads take `options` (ReadOptions): which copy may answer; writes take `options`
  # (WriteOptions): when they are acknowledged. A replica answers writes with notPrimary
  # (primaryHint: the primary's address) and strong reads likewise.
  createConversation @0 (convId :UInt64, creatorId :UInt64, memberIds :List(UInt64), title :Text,
                         options :WriteOptions)
      -> (error :Types.Error, conversation :Types.Conversation, token :WriteToken);
  getConversation @1 (convId :UInt64, options :ReadOptions) -> (error :Types.Error, conversation :Types.Conversation);
  addMembers @2 (convId :UInt64, actorId :UInt64, userIds :List(UInt64), options :WriteOptions)
      -> (error :Types.Error, seq :UInt64, token :WriteToken);
  removeMembers @3 (convId :UInt64, actorId :UInt64, userIds :List(UInt64), options :WriteOptions)
      -> (error :Types.Error, seq :UInt64, token :WriteToken);
  listMembers @4 (convId :UInt64, afterUserId :UInt64, limit :UInt32, options :ReadOptions)
      -> (error :Types.Error, userIds :List(UInt64));

  sendMessage @5 (request :SendRequest, options :WriteOptions) -> (result :SendResult, error :Types.Error);
  sendBatch @6 (requests :List(SendRequest), options :WriteOptions)
      -> (results :List(SendResult), error :Types.Error);
  # Up to 1,000 sends, to any conversations of this node; results in request order. Each send
  # is independent (one may fail while others succeed).
  getMessage @7 (convId :UInt64, seq :UInt64, options :ReadOptions) -> (error :Types.Error, message :Types.Message);
  readHistory @8 (request :HistoryRequest, options :ReadOptions) -> (error :Types.Error, page :Types.HistoryPage);
  editMessage @9 (convId :UInt64, seq :UInt64, editorId :UInt64, body :Data, options :WriteOptions)
      -> (error :Types.Error, message :Types.Message, token :WriteToken);
  deleteMessage @10 (convId :UInt64, seq :UInt64, actorId :UInt64, options :WriteOptions)
      -> (error :Types.Error, message :Types.Message, token :WriteToken);

  listInbox @11 (userId :UInt64, cursor :Data, limit :UInt32, options :ReadOptions)
      -> (error :Types.Error, entries :List(Types.InboxEntry), nextCursor :Data, hasMore :Bool);
  markRead @12 (userId :UInt64, convId :UInt64, seq :UInt64, options :WriteOptions)
      -> (error :Types.Error, entry :Types.InboxEntry, token :WriteToken);
}

struct ShardInfo {
  shardId @0 :UInt64;
  tokenFirst @1 :UInt64;    # Inclusive range [tokenFirst, tokenLast] of the ring.
  tokenLast @2 :UInt64;
  primary @3 :Text;         # Node id of the primary.
  replicas @4 :List(Text);  # Node ids of the other copies (read-only, kept current by the log);
                            # never the primary's node, no node twice.
  epoch @5 :UInt64;
  placementVersion @6 :UInt64;
  # The map version at which the primary's copy of the shard was placed. A node's shard
  # directory records it; a directory from another placement is refused, never served as current.
  switchTo @7 :Text;
  # A planned switchover in progress (docs/replication.md, Switchover): the node id of the
  # replica that becomes primary once it has applied everything; meanwhile the primary takes no
  # writes (answered unavailable, retryable). Empty: none.
  splitAt @8 :UInt64;
  # A split in progress (docs/resharding.md): the right child starts at this token
  # (tokenFirst < splitAt <= tokenLast). Every copy's primary seals the shard (writes answered
  # unavailable, retryable) until the map replaces it with its children. 0: none.
  splitLeftId @9 :UInt64;   # With splitAt: the children's shard ids, chosen when the split
  splitRightId @10 :UInt64; # starts (never an id the map used before).
  splitFrom @11 :UInt64;
  # A split child: the parent's shard id, and the parent's sealed LSN the child was cut at.
  # A node holding the parent's copy at exactly that LSN makes the child's copy locally
  # (checkpoint + cut); any other copy is bootstrapped from the child's primary. 0: none.
  splitLsn @12 :UInt64;
  moveFrom @13 :Text;
  # A move of one copy in progress (docs/resharding.md, Move): moveTo was added as a replica
  # (it bootstraps and catches up); once it has caught up (and, if moveFrom is the primary,
  # after a switchover to it), moveFrom's copy is removed. Empty: none.
  moveTo @14 :Text;
  mergeInto @15 :UInt64;
  # A merge in progress (docs/resharding.md, Merge), on both shards: the merged shard's id.
  # Both primaries seal until the map replaces the two by the merged shard. 0: none.
  mergeLeft @16 :UInt64;
  # A merged shard: its two parents (left, right) and their sealed LSNs. A node holding copies
  # of both at exactly those LSNs makes the merged copy locally; any other copy is bootstrapped
  # from the merged shard's primary. 0: none.
  mergeRight @17 :UInt64;
  mergeLeftLsn @18 :UInt64;
  mergeRightLsn @19 :UInt64;
}

struct NodeInfo {
  nodeId @0 :Text;
  address @1 :Text;         # host:port of the node's RPC listener.
  httpAddress @2 :Text;     # host:port of /health and /metrics; empty if none.
  leaseId @3 :Int64;
  # The node's primary lease (metadata store lease id) under which the failover controller last
  # gave its primaries a new epoch; 0 when none. A node accepts writes only while it holds
  # exactly this lease (decision 0010): a node whose lease lapsed and was granted anew stays
  # fenced until the controller has bumped its shards' epochs and recorded the new lease here.
}

struct ShardMap {
  # Persisted in the metadata store under /scrollback/shardmap. Shards cover the ring exactly:
  # sorted by tokenFirst, no gap, no overlap.
  version @0 :UInt64;       # Increases with every change.
  shards @1 :List(ShardInfo);
  nodes @2 :List(NodeInfo);
}

struct ShardStats {
  shardId @0 :UInt64;
  liveDataBytes @1 :UInt64;
  memtableBytes @2 :UInt64;
  estimatedKeys @3 :UInt64;
  latestSequence @4 :UInt64;
  outboxPending @5 :UInt64; # Outbox records not yet delivered (estimate).
  role @6 :ShardRole;
  state @7 :ShardState;
  lastError @8 :Text;       # Why the shard is not serving, if it is not.
  epoch @9 :UInt64;
  # Replicas: how far this copy has applied its primary's log, and how far behind it is.
  appliedLsn @10 :UInt64;   # Equals latestSequence.
  lagLsn @11 :UInt64;       # Primary's latest LSN (as of the last pull) - appliedLsn.
  lagMs @12 :UInt64;        # How long the copy has not been caught up (0 when it is).
  primaryNode @13 :Text;
  bootstrapBytesDone @14 :UInt64;   # While bootstrapping: bytes copied so far, of
  bootstrapBytesTotal @15 :UInt64;  # the checkpoint's total.
  replicasOnPrimary @16 :List(ReplicaProgress);  # Primaries: each replica's last pull.
  sealed @17 :Bool;         # Primaries: sealed for a split; latestSequence is final.
  # The copy's load (docs/resharding.md, Hot spots): decayed rates (half-life 60 s, folded
  # every second) of the calls it served.
  readOpsPerS @18 :Float64;
  writeOpsPerS @19 :Float64;
  loadBuckets @20 :List(Float64);   # Reads + writes per second in each of 64 equal token
                                    # sub-ranges of the shard's range, in order.
  hotTokens @21 :List(HotToken);    # The hottest tokens sampled, hottest first (at most 8).
  bytesPerS @22 :Float64;           # Bytes of the calls served (requests and replies), decayed.
  # The same 64 sub-ranges as loadBuckets, each split into reads, writes and bytes per second.
  bucketReadOpsPerS @23 :List(Float64);
  bucketWriteOpsPerS @24 :List(Float64);
  bucketBytesPerS @25 :List(Float64);
}

struct HotToken {
  token @0 :UInt64;
  share @1 :Float64;        # Of the copy's sampled calls, in [0, 1] (a lower bound).
}

struct ReplicaProgress {
  nodeId @0 :Text;
  appliedLsn @1 :UInt64;
  lastPullAgeMs @2 :UInt64;
}

enum ShardRole {
  unknown @0;
  primary @1;
  replica @2;
}

enum ShardState {
  opening @0;               # Assigned; being opened (or retried after a failed open).
  serving @1;
  refused @2;               # Its directory belongs to another placement, shard or range.
  bootstrapping @3;         # A replica copying a checkpoint of its primary.
}

interface Node extends(ChatStore, Replication.Replication) {
  # A storage node: the client API plus node-to-node and admin calls.
  applyInboxUpdates @0 (updates :List(Types.InboxUpdate))
      -> (errors :List(Types.Error), error :Types.Error);
  # Fan-out delivery. errors[i] is the outcome of updates[i] (absent: applied or already
  # applied). At most 1,000 updates per call.
  health @1 () -> (nodeId :Text, mapVersion :UInt64, shards :UInt32, serving :Bool,
                   apiVersion :UInt32);
  # serving: every shard assigned to the node is open (none still opening or refused).
  shardStats @2 () -> (stats :List(ShardStats));
  shardMap @3 () -> (map :Data);
  # The serialized ShardMap this node last applied (empty before the first): lets an operator
  # tool that knows one node's address find the whole cluster.
}
