#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "scrollback/cluster/metadata_store.h"

namespace scrollback {
namespace {

class InMemoryMetadataStore final : public MetadataStore,
                                    public std::enable_shared_from_this<InMemoryMetadataStore> {
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
    Notifications notes;
    std::lock_guard lock(mu_);
    ExpireLocked(&notes);
    auto it = data_.find(key);
    DispatchLater(std::move(notes));
    if (it == data_.end()) return std::optional<VersionedValue>();
    return std::optional<VersionedValue>(it->second.value);
  }

  Result<std::vector<KeyValue>> List(const std::string& prefix) override {
    Notifications notes;
    std::lock_guard lock(mu_);
    ExpireLocked(&notes);  // Never lists a key whose lease has expired.
    std::vector<KeyValue> out;
    for (auto it = data_.lower_bound(prefix); it != data_.end() && it->first.starts_with(prefix);
         ++it) {
      out.push_back({it->first, it->second.value});
    }
    DispatchLater(std::move(notes));
    return out;
  }

  Result<int64_t> Put(const std::string& key, const std::string& value, int64_t lease_id) override {
    return Write(key, std::nullopt, value, lease_id);
  }

  Result<int64_t> CompareAndSwap(const std::string& key, int64_t expected_version,
                                 const std::string& value, int64_t lease_id) override {
    return Write(key, expected_version, value, lease_id);
  }

  Status Delete(const std::string& key) override {
    Notifications notes;
    {
      std::lock_guard lock(mu_);
      ExpireLocked(&notes);
      if (data_.erase(key)) notes.push_back({key, std::nullopt});
    }
    Dispatch(notes);
    return Status::Ok();
  }

  Result<int64_t> GrantLease(std::chrono::milliseconds ttl) override {
    if (ttl.count() <= 0) return Status::InvalidArgument("ttl", "lease ttl must be positive");
    std::lock_guard lock(mu_);
    int64_t id = next_lease_++;
    leases_[id] = Lease{ttl, clock_->NowMs() + ttl.count()};
    return id;
  }

  Status KeepAlive(int64_t lease_id) override {
    Notifications notes;
    Status status;
    {
      std::lock_guard lock(mu_);
      ExpireLocked(&notes);
      auto it = leases_.find(lease_id);
      if (it == leases_.end()) {
        status = Status::NotFound("lease " + std::to_string(lease_id) + " expired");
      } else {
        it->second.deadline_ms = clock_->NowMs() + it->second.ttl.count();
      }
    }
    Dispatch(notes);
    return status;
  }

  Status RevokeLease(int64_t lease_id) override {
    Notifications notes;
    {
      std::lock_guard lock(mu_);
      DropLeaseLocked(lease_id, &notes);
    }
    Dispatch(notes);
    return Status::Ok();
  }

  std::unique_ptr<WatchHandle> Watch(const std::string& prefix, WatchCallback on_change) override {
    auto watch = std::make_shared<Watcher>(prefix, std::move(on_change));
    {
      std::lock_guard lock(mu_);
      watchers_.push_back(watch);
    }
    return std::make_unique<Handle>(this, watch);
  }

 private:
  struct Entry {
    VersionedValue value;
    int64_t lease_id = 0;
  };
  struct Lease {
    std::chrono::milliseconds ttl;
    int64_t deadline_ms = 0;
  };
  struct Watcher {
    Watcher(std::string p, WatchCallback cb) : prefix(std::move(p)), callback(std::move(cb)) {}
    std::string prefix;
    WatchCallback callback;
    std::mutex call_mu;      // One callback at a time; held while calling.
    bool cancelled = false;  // GUARDED_BY(call_mu)
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
      std::lock_guard call(watch_->call_mu);  // Waits for a running callback.
      watch_->cancelled = true;
    }

   private:
    InMemoryMetadataStore* store_;
    std::shared_ptr<Watcher> watch_;
  };
  using Notifications = std::vector<std::pair<std::string, std::optional<VersionedValue>>>;

  Result<int64_t> Write(const std::string& key, std::optional<int64_t> expected_version,
                        const std::string& value, int64_t lease_id) {
    Notifications notes;
    int64_t version = 0;
    {
      std::lock_guard lock(mu_);
      ExpireLocked(&notes);
      if (lease_id != 0 && !leases_.count(lease_id)) {
        Dispatch(notes);
        return Status::NotFound("lease " + std::to_string(lease_id) + " does not exist");
      }
      if (expected_version) {
        auto it = data_.find(key);
        int64_t current = it == data_.end() ? 0 : it->second.value.version;
        if (current != *expected_version) {
          Dispatch(notes);
          return Status::FailedPrecondition("version of " + key + " is " + std::to_string(current) +
                                            ", expected " + std::to_string(*expected_version));
        }
      }
      version = ++revision_;
      data_[key] = Entry{{value, version}, lease_id};
      notes.push_back({key, VersionedValue{value, version}});
    }
    Dispatch(notes);
    return version;
  }

  // REQUIRES: mu_ held.
  void ExpireLocked(Notifications* notes) {
    const int64_t now = clock_->NowMs();
    std::vector<int64_t> expired;
    for (auto& [id, lease] : leases_) {
      if (lease.deadline_ms <= now) expired.push_back(id);
    }
    for (int64_t id : expired) DropLeaseLocked(id, notes);
  }

  // REQUIRES: mu_ held.
  void DropLeaseLocked(int64_t lease_id, Notifications* notes) {
    if (!leases_.erase(lease_id)) return;
    for (auto it = data_.begin(); it != data_.end();) {
      if (it->second.lease_id == lease_id) {
        notes->push_back({it->first, std::nullopt});
        it = data_.erase(it);
      } else {
        ++it;
      }
    }
  }

  // Calls the watchers for `notes`, outside mu_.
  void Dispatch(const Notifications& notes) {
    if (notes.empty()) return;
    std::vector<std::shared_ptr<Watcher>> watchers;
    {
      std::lock_guard lock(mu_);
      watchers = watchers_;
    }
    for (const auto& [key, value] : notes) {
      for (const auto& watch : watchers) {
        if (!key.starts_with(watch->prefix)) continue;
        std::lock_guard call(watch->call_mu);
        if (!watch->cancelled) watch->callback(key, value);
      }
    }
  }
  // For paths that hold mu_ when they learn of expiries: the background thread reports them.
  void DispatchLater(Notifications notes) {
    if (notes.empty()) return;
    pending_.insert(pending_.end(), notes.begin(), notes.end());
    stop_cv_.notify_all();
  }

  void ExpireLoop() {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      stop_cv_.wait_for(lock, std::chrono::milliseconds(50));
      Notifications notes = std::move(pending_);
      pending_.clear();
      ExpireLocked(&notes);
      lock.unlock();
      Dispatch(notes);
      lock.lock();
    }
  }

  const std::shared_ptr<Clock> clock_;
  std::mutex mu_;
  std::map<std::string, Entry> data_;               // GUARDED_BY(mu_)
  std::map<int64_t, Lease> leases_;                 // GUARDED_BY(mu_)
  std::vector<std::shared_ptr<Watcher>> watchers_;  // GUARDED_BY(mu_)
  Notifications pending_;                           // GUARDED_BY(mu_)
  int64_t revision_ = 0;                            // GUARDED_BY(mu_)
  int64_t next_lease_ = 1;                          // GUARDED_BY(mu_)
  bool stopping_ = false;                           // GUARDED_BY(mu_)
  std::condition_variable stop_cv_;
  std::thread expirer_;
};

}  // namespace

std::shared_ptr<MetadataStore> NewInMemoryMetadataStore(std::shared_ptr<Clock> clock) {
  return std::make_shared<InMemoryMetadataStore>(clock ? std::move(clock) : SystemClock());
}

}  // namespace scrollback
