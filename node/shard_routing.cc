// Which hosted shard serves a call, and with what refusal when none may (private to node/).
#include "shard_routing.h"

#include <algorithm>
#include <string>

#include "load_counters.h"
#include "scrollback/replication/replication.h"

namespace scrollback {

Status CheckAcknowledgeable(const NodeCore& core, const ShardTable& table,
                            const WriteToken& token) {
  PrimaryLease* lease = core.options.primary_lease.get();
  if (lease == nullptr) return Status::Ok();
  const HostedShard* shard = table.FindShard(token.shard_id);
  // A write of epoch e that committed after the shard moved on (a new epoch, a switchover's
  // pause, another role) is not acknowledged: the next primary may not have it.
  const bool same_term = shard != nullptr && shard->assignment.role == ShardRole::kPrimary &&
                         shard->assignment.epoch == token.epoch && !shard->assignment.writes_paused;
  if (same_term && lease->Writable()) return Status::Ok();
  lease->CountWithheldAck();
  return Status::Unavailable(
      "shard " + std::to_string(token.shard_id) + " lsn " + std::to_string(token.lsn) +
      " committed on node " + core.options.node_id + " at epoch " + std::to_string(token.epoch) +
      (same_term ? ", but the node's primary lease ran out before it could be acknowledged"
                 : ", but the shard changed epoch or role before it could be acknowledged") +
      ": not acknowledged (it may or may not survive; retrying is safe)");
}

Status AcceptPull(const NodeCore& core, const HostedShard& shard, const std::string& replica_node,
                  uint64_t from_lsn, uint64_t data_epoch, uint64_t* epoch_start) {
  const uint64_t applied = from_lsn - 1;
  const std::string shard_id = std::to_string(shard.assignment.shard_id);
  *epoch_start = 0;
  if (data_epoch < shard.assignment.epoch) {
    // A copy last written at an older epoch (a rejoining old primary, or a replica that
    // followed one): is it past where the next epoch began here? (docs/replication.md, Rejoin)
    auto history = shard.store->EpochHistory();
    if (!history.ok()) return history.status();
    for (const EpochRecord& record : *history) {
      if (record.epoch > data_epoch) {
        *epoch_start = record.start_lsn;
        break;
      }
    }
  }
  if (*epoch_start > 0 && applied > *epoch_start) {
    return Status::FailedPrecondition(
        "the replica's copy of shard " + shard_id + " is at lsn " + std::to_string(applied) +
        ", last written at epoch " + std::to_string(data_epoch) +
        "; here the next epoch began at lsn " + std::to_string(*epoch_start) + ": its " +
        std::to_string(applied - *epoch_start) +
        " later LSNs were never this primary's (diverged); bootstrap it again");
  }
  const uint64_t latest = shard.store->LatestSequence();
  if (applied > latest) {
    // The copy holds writes this primary never had (an old primary's): never merged.
    return Status::FailedPrecondition("the replica is at lsn " + std::to_string(applied) +
                                      ", past primary " + core.options.node_id + "'s lsn " +
                                      std::to_string(latest) + " of shard " + shard_id +
                                      ": its log diverged; bootstrap it again");
  }
  if (!replica_node.empty()) {
    const auto& listed = shard.assignment.replica_nodes;
    shard.log->RecordPull(replica_node, applied,
                          std::find(listed.begin(), listed.end(), replica_node) != listed.end());
  }
  return Status::Ok();
}

bool ValidNodeId(const std::string& id) {
  if (id.size() > kMaxNodeIdBytes) return false;
  for (char c : id) {
    const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       c == '.' || c == '_' || c == ':' || c == '-';
    if (!plain) return false;
  }
  return true;
}

Result<const HostedShard*> PrimaryFor(const NodeCore& core, const ShardTable& table,
                                      uint64_t shard_id, uint64_t epoch) {
  const HostedShard* h = table.FindShard(shard_id);
  if (h == nullptr) {
    for (const PendingShard& p : table.pending) {
      if (p.assignment.shard_id == shard_id) {
        return Status::Unavailable("shard " + std::to_string(shard_id) + " is still opening on " +
                                   core.options.node_id);
      }
    }
    return Status::NotOwner("node " + core.options.node_id + " does not host shard " +
                            std::to_string(shard_id) + " at shard-map version " +
                            std::to_string(table.map_version));
  }
  const ShardAssignment& a = h->assignment;
  if (a.role != ShardRole::kPrimary) {
    return Status::NotPrimary("node " + core.options.node_id + " holds a replica of shard " +
                                  std::to_string(shard_id) + "; its primary is " + a.primary_node,
                              a.primary_address);
  }
  if (epoch != a.epoch) {
    return Status::StaleEpoch("shard " + std::to_string(shard_id) + " is at epoch " +
                                  std::to_string(a.epoch) + " on node " + core.options.node_id +
                                  ", not " + std::to_string(epoch),
                              a.epoch);
  }
  return h;
}

Result<const HostedShard*> Route(const NodeCore& core, const ShardTable& table, uint64_t key,
                                 const char* field) {
  const uint64_t token = TokenOf(key);
  const HostedShard* shard = table.Find(token);
  if (shard != nullptr) return shard;
  if (const PendingShard* pending = table.FindPending(token)) {
    return Status::Unavailable(std::string(field) + " " + std::to_string(key) +
                               " belongs to shard " + std::to_string(pending->assignment.shard_id) +
                               ", which node " + core.options.node_id + " is " +
                               (pending->state == ShardState::kRefused ? "refusing to open"
                                : pending->state == ShardState::kBootstrapping
                                    ? "still bootstrapping"
                                    : "still opening") +
                               (pending->why.empty() ? std::string() : ": " + pending->why));
  }
  return Status::NotOwner(std::string(field) + " " + std::to_string(key) +
                          " is not hosted by node " + core.options.node_id +
                          " at shard-map version " + std::to_string(table.map_version));
}

Result<const HostedShard*> RouteWrite(const NodeCore& core, const ShardTable& table, uint64_t key,
                                      const char* field, uint64_t bytes) {
  auto shard = Route(core, table, key, field);
  if (shard.ok() && (*shard)->assignment.role != ShardRole::kPrimary) {
    const ShardAssignment& a = (*shard)->assignment;
    return Status::NotPrimary("shard " + std::to_string(a.shard_id) + " is a replica on node " +
                                  core.options.node_id + "; its primary is " + a.primary_node,
                              a.primary_address);
  }
  if (shard.ok() && (*shard)->assignment.writes_paused) {
    return Status::Unavailable("shard " + std::to_string((*shard)->assignment.shard_id) +
                               " is switching over to a new primary; retry");
  }
  if (shard.ok() && (*shard)->store->sealed()) {
    return Status::Unavailable("shard " + std::to_string((*shard)->assignment.shard_id) +
                               " is being split; retry");
  }
  if (shard.ok() && core.options.primary_lease) {
    SB_RETURN_IF_ERROR(core.options.primary_lease->CheckWritable());
  }
  if (shard.ok() && (*shard)->load) (*shard)->load->RecordWrite(TokenOf(key), bytes);
  return shard;
}

// Routes a read: a primary serves every consistency; a replica serves `replica` reads while
// its staleness is under the bound and `session` reads once it has applied the caller's
// token (WhenReadable waited for it). Otherwise notPrimary (the client reads from the
// primary) or, for a session read still behind after the wait, unavailable.
Result<const HostedShard*> RouteRead(NodeCore& core, const ShardTable& table, uint64_t key,
                                     const char* field, const ReadOptions& read) {
  auto shard = Route(core, table, key, field);
  if (!shard.ok() || (*shard)->assignment.role == ShardRole::kPrimary) return shard;
  const HostedShard& h = **shard;
  const ShardAssignment& a = h.assignment;
  auto to_primary = [&](const std::string& why) {
    return Status::NotPrimary("shard " + std::to_string(a.shard_id) + " on node " +
                                  core.options.node_id + " is a replica: " + why,
                              a.primary_address);
  };
  switch (read.consistency) {
    case Consistency::kStrong:
      return to_primary("strong reads go to the primary " + a.primary_node);
    case Consistency::kReplica: {
      const uint64_t bound =
          read.max_lag_ms != 0
              ? read.max_lag_ms
              : static_cast<uint64_t>(core.options.replication.default_max_lag.count());
      const uint64_t lag = h.log->lag_ms();
      if (lag > bound) {
        return to_primary("it is " + std::to_string(lag) + " ms stale, over the bound of " +
                          std::to_string(bound) + " ms");
      }
      return shard;
    }
    case Consistency::kSession: {
      const WriteToken& token = read.token;
      if (token.shard_id == 0 && token.lsn == 0) return shard;  // Nothing written yet.
      if (token.shard_id != a.shard_id || token.epoch != a.epoch) {
        return to_primary("the token is of shard " + std::to_string(token.shard_id) + " epoch " +
                          std::to_string(token.epoch) + ", not epoch " + std::to_string(a.epoch));
      }
      const uint64_t applied = h.log->lsn();
      if (applied < token.lsn) {
        return Status::Unavailable("shard " + std::to_string(a.shard_id) + " on node " +
                                   core.options.node_id + " has applied lsn " +
                                   std::to_string(applied) + ", not yet the token's " +
                                   std::to_string(token.lsn) + "; read from the primary");
      }
      return shard;
    }
  }
  return shard;
}

void CountRead(NodeCore& core, const HostedShard& shard, uint64_t key, const ReadOptions& read,
               uint64_t bytes) {
  if (shard.load) shard.load->RecordRead(TokenOf(key), bytes);
  if (shard.assignment.role != ShardRole::kPrimary) {
    core.metrics.RecordReplicaRead(read.consistency == Consistency::kReplica ? 1 : 2);
  }
}

}  // namespace scrollback
