// Routing a call to the shard this node hosts for it, with the typed refusal when it may not
// serve it: not hosted (notOwner), still opening (unavailable), a replica asked to write or to
// read strongly (notPrimary with the primary's address), a replica too stale or behind a session
// token, a replication call at another epoch (staleEpoch). Private to node/; used by the
// ChatStore / Node service on event loops and engine-pool threads alike (all functions are
// pure over the table they are given, except the replica-read counter in `core.metrics`).
#pragma once

#include <cstdint>
#include <string>

#include "node_core.h"

namespace scrollback {

// Node ids from the network end up in log lines and metric labels: at most kMaxNodeIdBytes of
// letters, digits, '.', '_', ':' and '-'.
constexpr size_t kMaxNodeIdBytes = 128;
bool ValidNodeId(const std::string& id);

// The shard `shard_id` held here as primary at `epoch`: notPrimary (with the primary's address)
// if this node holds a replica, staleEpoch if the epochs differ, unavailable while it opens,
// notOwner if the node does not host it.
Result<const HostedShard*> PrimaryFor(const NodeCore& core, const ShardTable& table,
                                      uint64_t shard_id, uint64_t epoch);

// The serving shard owning `key` (any role); `field` names the key in errors.
Result<const HostedShard*> Route(const NodeCore& core, const ShardTable& table, uint64_t key,
                                 const char* field);

// Routes a write: the shard must be held here as primary. Counts it, with `bytes` (the request's
// payload), in the shard's load.
Result<const HostedShard*> RouteWrite(const NodeCore& core, const ShardTable& table, uint64_t key,
                                      const char* field, uint64_t bytes = 0);

// After a write committed and before it is acknowledged: OK while the node may still write as
// the primary of the token's shard at the token's epoch (its lease valid, the shard primary
// here at that epoch); else `unavailable` (counted): the write is never acknowledged once a
// newer primary may exist.
Status CheckAcknowledgeable(const NodeCore& core, const ShardTable& table, const WriteToken& token);

// Whether a replica's pull of `shard` (held here as primary) from `from_lsn` continues this
// primary's log. `data_epoch` is the last epoch the copy's data records: when this primary's
// history has a later one, `*epoch_start` is its start LSN, and a copy past it diverged (an old
// primary's unacknowledged tail). A copy past this primary's latest LSN diverged too. Both are
// failed-precondition (the replica rebuilds itself). Otherwise records the pull, which
// acknowledges semi-sync writes up to from_lsn - 1 when the map lists `replica_node`.
Status AcceptPull(const NodeCore& core, const HostedShard& shard, const std::string& replica_node,
                  uint64_t from_lsn, uint64_t data_epoch, uint64_t* epoch_start);

// Routes a read by its consistency (docs/replication.md, Reads). Counts nothing: CountRead
// does, once the read is answered.
Result<const HostedShard*> RouteRead(NodeCore& core, const ShardTable& table, uint64_t key,
                                     const char* field, const ReadOptions& read);
// Counts a read `shard` answered (`bytes`: its reply's size): the shard's load and, on a
// replica, core.metrics' replica reads. Called once per read, not for an attempt on the event
// loop that would block and is retried on the pool.
void CountRead(NodeCore& core, const HostedShard& shard, uint64_t key, const ReadOptions& read,
               uint64_t bytes);

}  // namespace scrollback
