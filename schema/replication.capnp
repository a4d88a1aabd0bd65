# The replication protocol: what a replica calls on its shard's primary (docs/replication.md).
#
# A replica pulls; the primary never pushes. Every call names the shard and the epoch the caller
# believes the primary has; a node that is not that shard's primary answers notPrimary (with the
# primary's address in primaryHint when it knows it), a different epoch answers staleEpoch (with
# the current epoch). Errors are values in `error` (types.capnp), never RPC exceptions.
#
# Log shipping: pullLog(fromLsn) returns the primary's WAL write groups from fromLsn on, in order
# and contiguous, up to maxBytes (at least one batch); when there is nothing new it waits up to
# waitMs for a write first (a long poll: one call per burst of writes, not per write). A log the
# primary no longer holds is `logGap`: never skipped, the replica re-bootstraps.
#
# Bootstrap: beginCheckpoint makes a RocksDB checkpoint of the shard (hard links on the primary)
# and lists its files with sizes and XXH64 checksums; readCheckpoint streams a file in chunks;
# endCheckpoint releases it (an abandoned checkpoint is released after an idle timeout). The
# replica checks every file's size and checksum before it opens the copy, then pulls the log
# from the checkpoint's lsn + 1.
@0xd0a4f4e2b3c81f57;

using Types = import "types.capnp";
$import "/capnp/c++.capnp".namespace("scrollback::schema");

struct LogBatch {
  # One write group of the primary's WAL: a RocksDB WriteBatch of `count` operations with
  # sequence numbers firstLsn .. firstLsn + count - 1.
  firstLsn @0 :UInt64;
  count @1 :UInt32;
  data @2 :Data;
}

struct CheckpointFile {
  name @0 :Text;            # A plain file name (no directory part).
  size @1 :UInt64;
  xxh64 @2 :UInt64;         # XXH64 (seed 0) of the whole file.
}

interface Replication {
  pullLog @0 (shardId :UInt64, epoch :UInt64, fromLsn :UInt64, maxBytes :UInt32, waitMs :UInt32,
              replicaNodeId :Text, dataEpoch :UInt64)
      -> (error :Types.Error, batches :List(LogBatch), latestLsn :UInt64, primaryTimeMs :Int64,
          epochStartLsn :UInt64);
  # batches start with the one holding fromLsn (it may start before it) and follow each other.
  # latestLsn: the primary's last LSN when it answered. replicaNodeId and fromLsn - 1 tell the
  # primary how far that replica has applied (its /metrics show it; semi-sync acknowledgement).
  # dataEpoch: the last epoch recorded in the replica's copy (ShardStore::EpochHistory), or the
  # pull's epoch once the replica has been accepted at it. When the primary's history has a
  # later epoch, epochStartLsn is that epoch's start LSN; a copy past it holds writes this
  # primary never had (an old primary's unacknowledged tail): the pull is refused with
  # failedPrecondition (nothing counts as acknowledged) and the replica is rebuilt from a
  # checkpoint, the discarded LSNs counted (docs/replication.md, Rejoin).

  beginCheckpoint @1 (shardId :UInt64, epoch :UInt64, replicaNodeId :Text)
      -> (error :Types.Error, checkpointId :UInt64, lsn :UInt64, files :List(CheckpointFile));
  readCheckpoint @2 (checkpointId :UInt64, fileIndex :UInt32, offset :UInt64, maxBytes :UInt32)
      -> (error :Types.Error, data :Data);
  # At most maxBytes (capped by the primary at 4 MiB) from `offset`; fewer only at the file's end.
  endCheckpoint @3 (checkpointId :UInt64) -> (error :Types.Error);

  checksumShard @4 (shardId :UInt64, atLsn :UInt64)
      -> (error :Types.Error, lsn :UInt64, checksum :UInt64, keys :UInt64);
  # A digest of every column family of this node's copy (ShardChecksum). atLsn 0: now. Otherwise
  # a replica stops applying exactly at atLsn, digests, and resumes (waiting up to 30 s to get
  # there); a copy already past atLsn answers failedPrecondition (ask again at a newer LSN).
}
