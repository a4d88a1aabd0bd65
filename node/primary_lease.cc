#include "scrollback/node/primary_lease.h"

#include <spdlog/logger.h>

namespace scrollback {

PrimaryLease::PrimaryLease(std::string node_id, std::shared_ptr<Clock> clock, Logger logger)
    : node_id_(std::move(node_id)), clock_(std::move(clock)), log_(OrNull(std::move(logger))) {}

void PrimaryLease::Held(int64_t lease_id, int64_t writable_until_ms) {
  // The lease first, then its time: a reader that sees the new lease with the old time only
  // finds writes allowed for less long.
  held_.store(lease_id, std::memory_order_release);
  until_ms_.store(writable_until_ms, std::memory_order_release);
  Writable();
}

void PrimaryLease::Lost(const std::string& why) {
  until_ms_.store(0, std::memory_order_release);
  held_.store(0, std::memory_order_release);
  log_->warn("node {}: primary lease lost ({}): fenced, no writes until a new map", node_id_, why);
  Writable();
}

void PrimaryLease::RecordedInMap(int64_t lease_id) {
  recorded_.store(lease_id, std::memory_order_release);
  Writable();
}

bool PrimaryLease::Writable() const {
  const int64_t held = held_.load(std::memory_order_acquire);
  const bool writable = held != 0 && held == recorded_.load(std::memory_order_acquire) &&
                        clock_->NowMs() < until_ms_.load(std::memory_order_acquire);
  // One log line per change (a lapse is noticed by the first write after it).
  // A plain load first: every write calls this, and an exchange on one shared line per write
  // would make the writers' cores contend for it.
  if (was_writable_.load(std::memory_order_relaxed) != writable &&
      was_writable_.exchange(writable, std::memory_order_acq_rel) != writable) {
    if (writable) {
      log_->info("node {}: primary lease {} held and recorded in the map: accepting writes",
                 node_id_, held);
    } else {
      log_->warn("node {}: fenced (lease held {}, recorded {}, writable until {} ms, now {} ms)",
                 node_id_, held, recorded_.load(), until_ms_.load(), clock_->NowMs());
    }
  }
  return writable;
}

Status PrimaryLease::CheckWritable() {
  if (Writable()) return Status::Ok();
  refused_.fetch_add(1, std::memory_order_relaxed);
  const int64_t held = held_.load(std::memory_order_acquire);
  const int64_t recorded = recorded_.load(std::memory_order_acquire);
  std::string why = held == 0 ? "it holds no primary lease"
                    : held != recorded
                        ? "the shard map does not record its lease yet (a failover is deciding "
                          "its shards' next epoch)"
                        : "its primary lease may have expired (renewals failed)";
  return Status::Unavailable("node " + node_id_ + " may not accept writes: " + why +
                             "; retry (the shard map will name the primary)");
}

void PrimaryLease::RenderMetrics(std::string* out) const {
  *out +=
      "# HELP scrollback_primary_lease_writable 1 while this node may accept writes as a "
      "primary (lease held and recorded in the map).\n"
      "# TYPE scrollback_primary_lease_writable gauge\n"
      "scrollback_primary_lease_writable " +
      std::string(Writable() ? "1" : "0") +
      "\n"
      "# HELP scrollback_fenced_writes_total Writes refused because the node's primary lease "
      "was not valid (answered unavailable).\n"
      "# TYPE scrollback_fenced_writes_total counter\n"
      "scrollback_fenced_writes_total " +
      std::to_string(refused_.load()) +
      "\n"
      "# HELP scrollback_withheld_acks_total Writes that committed but were answered "
      "unavailable, not acknowledged: the lease ran out or the shard changed epoch meanwhile.\n"
      "# TYPE scrollback_withheld_acks_total counter\n"
      "scrollback_withheld_acks_total " +
      std::to_string(withheld_acks_.load()) + "\n";
}

}  // namespace scrollback
