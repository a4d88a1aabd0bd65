#include <algorithm>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "scrollback/cluster/metadata_store.h"

namespace scrollback {
namespace {

// Every change (a put, a delete, a commit, the keys of an expired lease) is one version: one
// batch in `history_`, queued to each watcher whose prefix it touches. A watcher's queue is
// delivered before the call that made the change returns: by that thread, or, when another
// thread is delivering to that watcher already, by that one while the writer waits (as a writer
// waited for a running callback before). Expiries noticed during a read are delivered by the
// expiry thread. One callback at a time, in version order. A callback that writes to the store
// does not wait for its own watcher, but may for others: callbacks of two watches must not
// write to the store at once (none does: they set flags, apply maps, count).
class InMemoryMetadataStore final : public MetadataStore {
 public:
  explicit InMemoryMetadataStore(std::shared_ptr<Clock> clock) : clock_(std::move(clock)) {
    expirer_ = std::thread([this] { ExpireLoop(); });
  }
  ~InMemoryMetadataStore() override {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    stop_cv_.notify_all();
    expirer_.join();
  }

  Result<std::optional<VersionedValue>> Get(const std::string& key) override {
    std::lock_guard lock(mu_);
    ExpireLocked();
    auto it = data_.find(key);
    if (it == data_.end()) return std::optional<VersionedValue>();
    return std::optional<VersionedValue>(it->second.value);
  }

  Result<std::vector<KeyValue>> List(const std::string& prefix) override {
    std::lock_guard lock(mu_);
    ExpireLocked();  // Never lists a key whose lease has expired.
    std::vector<KeyValue> out;
    for (auto it = data_.lower_bound(prefix); it != data_.end() && it->first.starts_with(prefix);
         ++it) {
      out.push_back({it->first, it->second.value});
    }
    return out;
  }

  Result<MetadataPage> ListPage(const std::string& prefix, const std::string& start_after,
                                size_t limit, int64_t at_version) override {
    if (limit == 0) return Status::InvalidArgument("limit", "a page holds at least one key");
    std::lock_guard lock(mu_);
    ExpireLocked();
    if (at_version != 0 && ChangedSinceLocked(prefix, at_version)) {
      return Status::FailedPrecondition("keys under " + prefix + " changed after version " +
                                        std::to_string(at_version));
    }
    MetadataPage page;
    page.version = at_version != 0 ? at_version : revision_;
    auto it = start_after.empty() ? data_.lower_bound(prefix) : data_.upper_bound(start_after);
    if (it != data_.end() && it->first < prefix) it = data_.lower_bound(prefix);
    for (; it != data_.end() && it->first.starts_with(prefix); ++it) {
      if (page.kvs.size() == limit) {
        page.more = true;
        break;
      }
      page.kvs.push_back({it->first, it->second.value});
    }
    return page;
  }

  Result<int64_t> Put(const std::string& key, const std::string& value, int64_t lease_id) override {
    return Write(key, std::nullopt, value, lease_id);
  }

  Result<int64_t> CompareAndSwap(const std::string& key, int64_t expected_version,
                                 const std::string& value, int64_t lease_id) override {
    return Write(key, expected_version, value, lease_id);
  }

  Status Delete(const std::string& key) override {
    std::unique_lock lock(mu_);
    ExpireLocked();
    if (data_.erase(key)) {
      ChangeBatch batch;
      batch.changes.push_back({key, std::nullopt});
      PublishLocked(std::move(batch));
    }
    lock.unlock();
    DrainWatchers();
    return Status::Ok();
  }

  Result<int64_t> Commit(const std::vector<MetadataCondition>& conditions,
                         const std::vector<MetadataWrite>& writes) override {
    if (writes.size() > kMaxWrites || conditions.size() > kMaxWrites) {
      return Status::InvalidArgument(
          "writes",
          "a commit takes at most " + std::to_string(kMaxWrites) + " writes and conditions");
    }
    std::unique_lock lock(mu_);
    ExpireLocked();
    for (const MetadataCondition& condition : conditions) {
      auto it = data_.find(condition.key);
      const int64_t current = it == data_.end() ? 0 : it->second.value.version;
      if (current != condition.version) {
        lock.unlock();
        DrainWatchers();
        return Status::FailedPrecondition("version of " + condition.key + " is " +
                                          std::to_string(current) + ", expected " +
                                          std::to_string(condition.version));
      }
    }
    const int64_t version = revision_ + 1;
    ChangeBatch batch;
    for (const MetadataWrite& write : writes) {
      if (write.value) {
        data_[write.key] = Entry{{*write.value, version}, 0};
        batch.changes.push_back({write.key, VersionedValue{*write.value, version}});
      } else if (data_.erase(write.key)) {
        batch.changes.push_back({write.key, std::nullopt});
      }
    }
    if (!batch.changes.empty()) PublishLocked(std::move(batch));
    const int64_t committed = revision_;
    lock.unlock();
    DrainWatchers();
    return committed;
  }

  size_t max_writes_per_commit() const override { return kMaxWrites; }

  Result<int64_t> GrantLease(std::chrono::milliseconds ttl) override {
    if (ttl.count() <= 0) return Status::InvalidArgument("ttl", "lease ttl must be positive");
    std::lock_guard lock(mu_);
    int64_t id = next_lease_++;
    leases_[id] = Lease{ttl, clock_->NowMs() + ttl.count()};
    return id;
  }

  Status KeepAlive(int64_t lease_id) override {
    Status status;
    {
      std::lock_guard lock(mu_);
      ExpireLocked();
      auto it = leases_.find(lease_id);
      if (it == leases_.end()) {
        status = Status::NotFound("lease " + std::to_string(lease_id) + " expired");
      } else {
        it->second.deadline_ms = clock_->NowMs() + it->second.ttl.count();
      }
    }
    DrainWatchers();
    return status;
  }

  Status RevokeLease(int64_t lease_id) override {
    {
      std::lock_guard lock(mu_);
      DropLeaseLocked(lease_id);
    }
    DrainWatchers();
    return Status::Ok();
  }

  std::unique_ptr<WatchHandle> WatchChanges(const std::string& prefix, int64_t after_version,
                                            ChangesCallback on_changes) override {
    auto watch = std::make_shared<Watcher>(prefix, std::move(on_changes));
    {
      std::lock_guard lock(mu_);
      ExpireLocked();
      if (after_version != 0 && after_version < revision_) {
        if (after_version < history_floor_) {
          ChangeBatch lost;
          lost.version = revision_;
          lost.history_lost = true;
          watch->Enqueue(std::move(lost));
        } else {
          for (const ChangeBatch& batch : history_) {
            if (batch.version > after_version) watch->EnqueueFiltered(batch);
          }
        }
      }
      watchers_.push_back(watch);
    }
    DrainWatchers();
    return std::make_unique<Handle>(this, watch);
  }

 private:
  static constexpr size_t kMaxWrites = 128;  // As etcd's default --max-txn-ops.

  struct Entry {
    VersionedValue value;
    int64_t lease_id = 0;
  };
  struct Lease {
    std::chrono::milliseconds ttl;
    int64_t deadline_ms = 0;
  };
  struct Watcher {
    Watcher(std::string p, ChangesCallback cb) : prefix(std::move(p)), callback(std::move(cb)) {}
    void Enqueue(ChangeBatch batch) {
      std::lock_guard lock(queue_mu);
      queue.push_back(std::move(batch));
    }
    void EnqueueFiltered(const ChangeBatch& batch) {
      ChangeBatch mine;
      mine.version = batch.version;
      for (const auto& change : batch.changes) {
        if (change.first.starts_with(prefix)) mine.changes.push_back(change);
      }
      if (!mine.changes.empty()) Enqueue(std::move(mine));
    }
    // Delivers what is queued, in order, one callback at a time. While another thread is
    // delivering, waits until that one has delivered `version` (0: does not wait); while this
    // thread is (a write from inside a callback), returns at once: the running delivery checks
    // the queue again before it ends, under the same lock.
    void Drain(int64_t version) {
      {
        std::unique_lock lock(queue_mu);
        if (draining && drainer == std::this_thread::get_id()) return;
        drained.wait(
            lock, [&] { return !draining || cancelled || version == 0 || delivered >= version; });
        if (draining || cancelled) return;
        draining = true;
        drainer = std::this_thread::get_id();
      }
      for (;;) {
        ChangeBatch batch;
        {
          std::lock_guard lock(queue_mu);
          if (queue.empty() || cancelled) {
            draining = false;
            drainer = {};
            drained.notify_all();
            return;
          }
          batch = std::move(queue.front());
          queue.pop_front();
        }
        callback(batch);
        std::lock_guard lock(queue_mu);
        delivered = batch.version;
        if (batch.history_lost) cancelled = true;  // A lost history ends the watch.
        drained.notify_all();
      }
    }
    // Stops deliveries, waiting for a running callback.
    void Cancel() {
      std::unique_lock lock(queue_mu);
      cancelled = true;
      drained.wait(lock, [this] { return !draining; });
    }
    const std::string prefix;
    const ChangesCallback callback;
    std::mutex queue_mu;
    std::condition_variable drained;
    std::deque<ChangeBatch> queue;  // GUARDED_BY(queue_mu)
    bool draining = false;          // GUARDED_BY(queue_mu); a thread is delivering.
    std::thread::id drainer;        // GUARDED_BY(queue_mu); that thread.
    int64_t delivered = 0;          // GUARDED_BY(queue_mu); the last version delivered.
    bool cancelled = false;         // GUARDED_BY(queue_mu)
  };
  class Handle final : public WatchHandle {
   public:
    Handle(InMemoryMetadataStore* store, std::shared_ptr<Watcher> watch)
        : store_(store), watch_(std::move(watch)) {}
    ~Handle() override {
      {
        std::lock_guard lock(store_->mu_);
        auto& w = store_->watchers_;
        w.erase(std::remove(w.begin(), w.end(), watch_), w.end());
      }
      watch_->Cancel();
    }

   private:
    InMemoryMetadataStore* store_;
    std::shared_ptr<Watcher> watch_;
  };

  Result<int64_t> Write(const std::string& key, std::optional<int64_t> expected_version,
                        const std::string& value, int64_t lease_id) {
    int64_t version = 0;
    {
      std::unique_lock lock(mu_);
      ExpireLocked();
      Status refused;
      if (lease_id != 0 && !leases_.count(lease_id)) {
        refused = Status::NotFound("lease " + std::to_string(lease_id) + " does not exist");
      } else if (expected_version) {
        auto it = data_.find(key);
        int64_t current = it == data_.end() ? 0 : it->second.value.version;
        if (current != *expected_version) {
          refused =
              Status::FailedPrecondition("version of " + key + " is " + std::to_string(current) +
                                         ", expected " + std::to_string(*expected_version));
        }
      }
      if (!refused.ok()) {
        lock.unlock();
        DrainWatchers();
        return refused;
      }
      version = revision_ + 1;
      data_[key] = Entry{{value, version}, lease_id};
      ChangeBatch batch;
      batch.changes.push_back({key, VersionedValue{value, version}});
      PublishLocked(std::move(batch));
    }
    DrainWatchers();
    return version;
  }

  // Gives `batch` the next version, keeps it in the history and queues it to the watchers.
  // REQUIRES: mu_ held.
  void PublishLocked(ChangeBatch batch) {
    batch.version = ++revision_;
    for (const auto& watch : watchers_) watch->EnqueueFiltered(batch);
    history_.push_back(std::move(batch));
    while (history_.size() > kInMemoryHistoryVersions) {
      history_floor_ = history_.front().version;
      history_.pop_front();
    }
  }

  // Whether a key under `prefix` changed after `version` (or that cannot be told any more).
  // REQUIRES: mu_ held.
  bool ChangedSinceLocked(const std::string& prefix, int64_t version) const {
    if (version < history_floor_) return true;
    for (auto it = history_.rbegin(); it != history_.rend() && it->version > version; ++it) {
      for (const auto& change : it->changes) {
        if (change.first.starts_with(prefix)) return true;
      }
    }
    return false;
  }

  // REQUIRES: mu_ held.
  void ExpireLocked() {
    const int64_t now = clock_->NowMs();
    std::vector<int64_t> expired;
    for (auto& [id, lease] : leases_) {
      if (lease.deadline_ms <= now) expired.push_back(id);
    }
    for (int64_t id : expired) DropLeaseLocked(id);
  }

  // REQUIRES: mu_ held.
  void DropLeaseLocked(int64_t lease_id) {
    if (!leases_.erase(lease_id)) return;
    ChangeBatch batch;
    for (auto it = data_.begin(); it != data_.end();) {
      if (it->second.lease_id == lease_id) {
        batch.changes.push_back({it->first, std::nullopt});
        it = data_.erase(it);
      } else {
        ++it;
      }
    }
    if (!batch.changes.empty()) {
      PublishLocked(std::move(batch));
      stop_cv_.notify_all();  // Reads that expire leases leave the delivery to the expirer.
    }
  }

  // Delivers every queued batch, outside mu_. Called by a writer, it returns once every watcher
  // has had the versions written so far (waiting for a delivery another thread is making); by
  // the expirer, without waiting.
  void DrainWatchers(bool wait = true) {
    std::vector<std::shared_ptr<Watcher>> watchers;
    int64_t version = 0;
    {
      std::lock_guard lock(mu_);
      watchers = watchers_;
      version = wait ? revision_ : 0;
    }
    for (const auto& watch : watchers) watch->Drain(version);
  }

  void ExpireLoop() {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      stop_cv_.wait_for(lock, std::chrono::milliseconds(50));
      ExpireLocked();
      lock.unlock();
      DrainWatchers(/*wait=*/false);
      lock.lock();
    }
  }

  const std::shared_ptr<Clock> clock_;
  std::mutex mu_;
  std::map<std::string, Entry> data_;               // GUARDED_BY(mu_)
  std::map<int64_t, Lease> leases_;                 // GUARDED_BY(mu_)
  std::vector<std::shared_ptr<Watcher>> watchers_;  // GUARDED_BY(mu_)
  std::deque<ChangeBatch> history_;                 // GUARDED_BY(mu_); the newest versions.
  int64_t history_floor_ = 0;  // GUARDED_BY(mu_); changes up to this version are forgotten.
  int64_t revision_ = 0;       // GUARDED_BY(mu_)
  int64_t next_lease_ = 1;     // GUARDED_BY(mu_)
  bool stopping_ = false;      // GUARDED_BY(mu_)
  std::condition_variable stop_cv_;
  std::thread expirer_;
};

}  // namespace

std::shared_ptr<MetadataStore> NewInMemoryMetadataStore(std::shared_ptr<Clock> clock) {
  return std::make_shared<InMemoryMetadataStore>(clock ? std::move(clock) : SystemClock());
}

}  // namespace scrollback
