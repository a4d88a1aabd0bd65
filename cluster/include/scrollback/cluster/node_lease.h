// LeaseKeeper: holds a storage node's primary lease in the metadata store and keeps its
// PrimaryLease (node/primary_lease.h) current (decision 0010).
//
// Key (persisted; never rename):
//   /scrollback/primary-leases/<node id>   the node's lease id (decimal), under that lease
//
// The safety margin. A renewal sent at local time s that succeeds keeps the lease in the store
// until at least s + ttl by the store's clock. The keeper lets the node write until
//     s + ttl * (1 - max_clock_drift) - commit_margin
// by the node's clock. While the node's clock runs at most max_clock_drift slower than the
// store's, that instant comes before the store can expire the lease, and so before the failover
// controller can give the node's shards to another copy; commit_margin covers a write that
// passed the check and is still committing (it is checked again before it is acknowledged).
//
// A lease that is found gone (expired while the store was unreachable, or revoked) is replaced by
// a new one: a new id, which the shard map does not record, so the node stays fenced until the
// controller has given its shards their next epoch.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "scrollback/cluster/metadata_store.h"
#include "scrollback/node/primary_lease.h"
#include "scrollback/schema/clock.h"
#include "scrollback/schema/log.h"

namespace scrollback {

inline constexpr const char* kPrimaryLeasesPrefix = "/scrollback/primary-leases/";

struct LeaseKeeperOptions {
  // Required: the node whose lease this is.
  std::string node_id;
  // Default: 1 s. Lease length in the store. Writes to a dead primary's shards resume after
  // about this long plus the controller's reaction (docs/replication.md, Failover).
  std::chrono::milliseconds ttl{1000};
  // Default: ttl / 3. Time between renewals.
  std::chrono::milliseconds renew_every{0};
  // Default: 1 %. Bound on how much slower the node's clock may run than the store's.
  double max_clock_drift = 0.01;
  // Default: 50 ms. Taken off the writable time for writes still committing.
  std::chrono::milliseconds commit_margin{50};
  // Default: true. Renew on a thread of the keeper's own; false: only RenewOnce() renews (tests
  // that drive time by hand).
  bool run_thread = true;
  Logger logger;
};

class LeaseKeeper {
 public:
  // Grants the first lease (or fails), then keeps it. `lease` receives every change.
  static Result<std::unique_ptr<LeaseKeeper>> Start(std::shared_ptr<MetadataStore> metadata,
                                                    std::shared_ptr<Clock> clock,
                                                    std::shared_ptr<PrimaryLease> lease,
                                                    LeaseKeeperOptions options);
  // Stops renewing (the lease then expires in the store by itself, as after a crash) and
  // withdraws the node's permission to write.
  ~LeaseKeeper();

  // One renewal now (a new lease if the held one is gone). Called by the keeper's thread.
  Status RenewOnce();
  // Stops renewing and withdraws the node's permission to write, leaving the lease in the
  // store (a graceful stop lets replicas catch up while the controller still waits). Idempotent.
  void StopRenewing();
  // Revokes the lease at once (a graceful stop): the controller fails the node's shards over
  // without waiting for the lease to expire. Stops renewing first.
  Status Release();

  int64_t lease_id() const { return lease_id_.load(); }
  // The writable-until time a renewal sent at `sent_ms` earns (the margin above).
  int64_t WritableUntil(int64_t sent_ms) const;

  // Prometheus text: renewals that failed, leases granted.
  void RenderMetrics(std::string* out) const;

 private:
  LeaseKeeper(std::shared_ptr<MetadataStore> metadata, std::shared_ptr<Clock> clock,
              std::shared_ptr<PrimaryLease> lease, LeaseKeeperOptions options);
  Status Grant();
  void Loop();

  const std::shared_ptr<MetadataStore> metadata_;
  const std::shared_ptr<Clock> clock_;
  const std::shared_ptr<PrimaryLease> lease_;
  const LeaseKeeperOptions options_;
  const Logger log_;
  std::atomic<int64_t> lease_id_{0};
  std::atomic<uint64_t> renewal_failures_{0};
  std::atomic<uint64_t> grants_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // GUARDED_BY(mu_)
  std::thread thread_;
};

}  // namespace scrollback
