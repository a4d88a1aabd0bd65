// PrimaryLease: whether this node may accept writes for the shards it is primary of, now
// (decision 0010, docs/replication.md "Failover").
//
// Two conditions, both required:
//  1. The node holds a lease in the metadata store, and its clock says the lease cannot have
//     expired in the store yet: a renewal sent at local time s keeps the node writable until
//     s + ttl * (1 - max_clock_drift) - commit_margin (set by the lease keeper, cluster/).
//  2. The shard map records exactly that lease for the node (NodeInfo.lease_id). The failover
//     controller records a node's lease only when it gives the node's primaries a new epoch. A
//     node whose lease lapsed and was granted anew therefore stays fenced until the controller
//     has decided, with every copy's LSN in hand, who is primary at the next epoch.
// Writes check before they run (RouteWrite) and again after they commit, before they are
// acknowledged: a write that committed after the lease ran out is answered `unavailable`
// (retryable, idempotent), never acknowledged.
//
// A node run without a metadata store (StorageNode alone, in tests) has no PrimaryLease and
// accepts writes whenever its shard table says it is primary. Thread-safe; lock-free reads.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "scrollback/schema/clock.h"
#include "scrollback/schema/log.h"
#include "scrollback/schema/status.h"

namespace scrollback {

class PrimaryLease {
 public:
  PrimaryLease(std::string node_id, std::shared_ptr<Clock> clock, Logger logger = nullptr);

  // The lease keeper: `lease_id` is held, and writes are allowed until `writable_until_ms`
  // (on this lease's clock) unless renewed again.
  void Held(int64_t lease_id, int64_t writable_until_ms);
  // The lease keeper: the lease is gone (expired, revoked, or the node is stopping).
  void Lost(const std::string& why);
  // The shard map follower, after the map's shards are applied: the lease the map records for
  // this node (0: none).
  void RecordedInMap(int64_t lease_id);

  // OK, or `unavailable` saying which condition fails. Counts refusals.
  Status CheckWritable();
  // Whether writes are allowed (no counting, no message).
  bool Writable() const;

  int64_t held_lease() const { return held_.load(std::memory_order_acquire); }
  int64_t recorded_lease() const { return recorded_.load(std::memory_order_acquire); }
  int64_t writable_until_ms() const { return until_ms_.load(std::memory_order_acquire); }
  Clock& clock() const { return *clock_; }

  // Counters for /metrics: writes refused before they ran, and writes that committed but were
  // not acknowledged because the lease ran out meanwhile.
  void CountWithheldAck() { withheld_acks_.fetch_add(1, std::memory_order_relaxed); }
  void RenderMetrics(std::string* out) const;

 private:
  const std::string node_id_;
  const std::shared_ptr<Clock> clock_;
  const Logger log_;
  std::atomic<int64_t> held_{0};
  std::atomic<int64_t> recorded_{0};
  std::atomic<int64_t> until_ms_{0};
  mutable std::atomic<bool> was_writable_{false};  // For one log line per change.
  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> withheld_acks_{0};
};

}  // namespace scrollback
