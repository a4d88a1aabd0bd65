// ShardLog: a shard's reached and acknowledged LSNs with their waiters, and replication
// progress on either side.
#include <algorithm>

#include "scrollback/replication/replication.h"

namespace scrollback::replication {

int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void LsnWatch::Raise(uint64_t lsn) {
  // Monotonic: two writers may raise out of order.
  uint64_t seen = value_.load(std::memory_order_relaxed);
  while (seen < lsn && !value_.compare_exchange_weak(seen, lsn, std::memory_order_acq_rel)) {
  }
  std::vector<kj::Own<kj::CrossThreadPromiseFulfiller<void>>> ready;
  {
    std::lock_guard lock(mu_);
    if (waiters_.empty()) return;
    const uint64_t now = value_.load(std::memory_order_acquire);
    auto keep = std::partition(waiters_.begin(), waiters_.end(), [now](const Waiter& w) {
      return w.lsn > now && w.fulfiller->isWaiting();
    });
    for (auto it = keep; it != waiters_.end(); ++it) ready.push_back(kj::mv(it->fulfiller));
    waiters_.erase(keep, waiters_.end());
  }
  for (auto& fulfiller : ready) fulfiller->fulfill();  // Safe from any thread.
}

kj::Promise<bool> LsnWatch::Wait(uint64_t lsn, kj::Timer& timer,
                                 std::chrono::milliseconds timeout) {
  if (value() >= lsn) return true;
  auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  {
    std::lock_guard lock(mu_);
    if (waiters_.size() >= 64) {  // Drop waiters that timed out while nothing was raised.
      std::erase_if(waiters_, [](const Waiter& w) { return !w.fulfiller->isWaiting(); });
    }
    waiters_.push_back(Waiter{lsn, kj::mv(paf.fulfiller)});
  }
  // Raised between the check and the registration: do not wait for the next raise.
  if (value() >= lsn) return true;
  return paf.promise.then([] { return true; })
      .exclusiveJoin(
          timer.afterDelay(timeout.count() * kj::MILLISECONDS).then([] { return false; }));
}

void ShardLog::RecordPrimaryState(uint64_t primary_latest_lsn, bool caught_up) {
  primary_latest_.store(primary_latest_lsn, std::memory_order_relaxed);
  if (caught_up) caught_up_at_ms_.store(SteadyMs(), std::memory_order_relaxed);
}

uint64_t ShardLog::lag_lsn() const {
  const uint64_t primary = primary_latest_lsn(), applied = lsn();
  return primary > applied ? primary - applied : 0;
}

uint64_t ShardLog::lag_ms() const {
  const int64_t since = caught_up_at_ms_.load(std::memory_order_relaxed);
  return static_cast<uint64_t>(std::max<int64_t>(0, SteadyMs() - since));
}

void ShardLog::StartedFollowing() {
  int64_t zero = 0;
  caught_up_at_ms_.compare_exchange_strong(zero, SteadyMs(), std::memory_order_relaxed);
}

void ShardLog::RecordPull(const std::string& replica_node, uint64_t applied_lsn, bool listed) {
  if (listed) acked_.Raise(applied_lsn);
  std::lock_guard lock(mu_);
  if (pulls_.size() >= kMaxReplicasTracked && pulls_.count(replica_node) == 0) {
    // Bounded whatever callers name themselves: the replica heard from longest ago goes.
    auto oldest = std::min_element(pulls_.begin(), pulls_.end(), [](const auto& a, const auto& b) {
      return a.second.at_ms < b.second.at_ms;
    });
    pulls_.erase(oldest);
  }
  ReplicaPull& pull = pulls_[replica_node];
  pull.node_id = replica_node;
  pull.applied_lsn = applied_lsn;
  pull.at_ms = SteadyMs();
}

std::vector<ReplicaPull> ShardLog::Pulls() const {
  std::lock_guard lock(mu_);
  std::vector<ReplicaPull> out;
  for (const auto& [node, pull] : pulls_) out.push_back(pull);
  return out;
}

}  // namespace scrollback::replication
