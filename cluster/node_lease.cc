#include "scrollback/cluster/node_lease.h"

#include <pthread.h>
#include <spdlog/logger.h>

#include <cmath>

namespace scrollback {

Result<std::unique_ptr<LeaseKeeper>> LeaseKeeper::Start(std::shared_ptr<MetadataStore> metadata,
                                                        std::shared_ptr<Clock> clock,
                                                        std::shared_ptr<PrimaryLease> lease,
                                                        LeaseKeeperOptions options) {
  if (options.node_id.empty()) return Status::InvalidArgument("node_id", "required");
  if (options.ttl.count() < 100) {
    return Status::InvalidArgument("ttl", "a primary lease lasts at least 100 ms");
  }
  if (options.max_clock_drift < 0 || options.max_clock_drift >= 0.5) {
    return Status::InvalidArgument("max_clock_drift", "between 0 and 0.5");
  }
  if (options.renew_every.count() <= 0) options.renew_every = options.ttl / 3;
  if (options.renew_every >= options.ttl) {
    return Status::InvalidArgument("renew_every", "must be shorter than the lease");
  }
  std::unique_ptr<LeaseKeeper> keeper(
      new LeaseKeeper(std::move(metadata), std::move(clock), std::move(lease), std::move(options)));
  SB_RETURN_IF_ERROR(keeper->Grant());
  if (keeper->options_.run_thread) keeper->thread_ = std::thread([k = keeper.get()] { k->Loop(); });
  return keeper;
}

LeaseKeeper::LeaseKeeper(std::shared_ptr<MetadataStore> metadata, std::shared_ptr<Clock> clock,
                         std::shared_ptr<PrimaryLease> lease, LeaseKeeperOptions options)
    : metadata_(std::move(metadata)),
      clock_(std::move(clock)),
      lease_(std::move(lease)),
      options_(std::move(options)),
      log_(OrNull(options_.logger)) {}

LeaseKeeper::~LeaseKeeper() { StopRenewing(); }

void LeaseKeeper::StopRenewing() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  lease_->Lost("the lease keeper stopped");
}

int64_t LeaseKeeper::WritableUntil(int64_t sent_ms) const {
  const double usable =
      static_cast<double>(options_.ttl.count()) * (1.0 - options_.max_clock_drift);
  return sent_ms + static_cast<int64_t>(std::floor(usable)) - options_.commit_margin.count();
}

Status LeaseKeeper::Grant() {
  const int64_t sent = clock_->NowMs();
  auto granted = metadata_->GrantLease(options_.ttl);
  if (!granted.ok()) return granted.status();
  auto put =
      metadata_->Put(kPrimaryLeasesPrefix + options_.node_id, std::to_string(*granted), *granted);
  if (!put.ok()) {
    (void)metadata_->RevokeLease(*granted);  // Best effort; it expires by itself anyway.
    return put.status();
  }
  grants_.fetch_add(1, std::memory_order_relaxed);
  lease_id_.store(*granted);
  lease_->Held(*granted, WritableUntil(sent));
  log_->info("node {}: primary lease {} granted ({} ms)", options_.node_id, *granted,
             options_.ttl.count());
  return Status::Ok();
}

Status LeaseKeeper::RenewOnce() {
  const int64_t id = lease_id_.load();
  const int64_t sent = clock_->NowMs();
  Status kept = id == 0 ? Status::NotFound("no lease") : metadata_->KeepAlive(id);
  if (kept.ok()) {
    lease_->Held(id, WritableUntil(sent));
    return kept;
  }
  renewal_failures_.fetch_add(1, std::memory_order_relaxed);
  if (kept.code() != ErrorCode::kNotFound) {
    // The store did not answer: the lease may still be alive there, and the writable time
    // earned by the last renewal runs out by itself.
    log_->warn("node {}: renewing primary lease {} failed: {}", options_.node_id, id,
               kept.ToString());
    return kept;
  }
  // Expired in the store: another copy may be primary by now. A new lease, which the map does
  // not record: fenced until the controller gives this node's shards their next epoch.
  lease_id_.store(0);
  lease_->Lost("lease " + std::to_string(id) + " expired in the metadata store");
  Status granted = Grant();
  if (!granted.ok()) {
    log_->warn("node {}: granting a new primary lease failed: {}", options_.node_id,
               granted.ToString());
  }
  return granted;
}

Status LeaseKeeper::Release() {
  StopRenewing();
  const int64_t id = lease_id_.exchange(0);
  if (id == 0) return Status::Ok();
  return metadata_->RevokeLease(id);
}

void LeaseKeeper::Loop() {
  pthread_setname_np(pthread_self(), "sb-lease");
  std::unique_lock lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, options_.renew_every, [this] { return stopping_; });
    if (stopping_) break;
    lock.unlock();
    (void)RenewOnce();  // Logged and counted inside.
    lock.lock();
  }
}

void LeaseKeeper::RenderMetrics(std::string* out) const {
  *out +=
      "# HELP scrollback_primary_lease_renewal_failures_total Primary lease renewals that "
      "failed (logged).\n"
      "# TYPE scrollback_primary_lease_renewal_failures_total counter\n"
      "scrollback_primary_lease_renewal_failures_total " +
      std::to_string(renewal_failures_.load()) +
      "\n"
      "# HELP scrollback_primary_leases_granted_total Primary leases granted to this node "
      "(more than one: a lease expired and the node was fenced meanwhile).\n"
      "# TYPE scrollback_primary_leases_granted_total counter\n"
      "scrollback_primary_leases_granted_total " +
      std::to_string(grants_.load()) + "\n";
}

}  // namespace scrollback
