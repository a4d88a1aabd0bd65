#include "scrollback/cluster/metadata_faults.h"

namespace scrollback {

// One watch: batches pass through, or merge into `held` (latest per key, newest version) while
// the store is cut.
struct CuttableMetadataStore::Watcher {
  MetadataStore::ChangesCallback on_changes;
  std::mutex mu;  // Serializes deliveries and guards `held`.
  std::map<std::string, std::optional<VersionedValue>> held;
  int64_t held_version = 0;  // 0: nothing held.
  std::unique_ptr<WatchHandle> inner;

  // REQUIRES: mu held.
  void DeliverHeld() {
    if (held_version == 0) return;
    ChangeBatch batch;
    batch.version = held_version;
    for (auto& [key, value] : held) batch.changes.emplace_back(key, std::move(value));
    held.clear();
    held_version = 0;
    on_changes(batch);
  }
};

namespace {
class CutWatchHandle final : public WatchHandle {
 public:
  explicit CutWatchHandle(std::shared_ptr<void> watcher) : watcher_(std::move(watcher)) {}
  ~CutWatchHandle() override = default;

 private:
  std::shared_ptr<void> watcher_;
};
}  // namespace

CuttableMetadataStore::CuttableMetadataStore(std::shared_ptr<MetadataStore> inner, std::string name)
    : inner_(std::move(inner)), name_(std::move(name)) {}

CuttableMetadataStore::~CuttableMetadataStore() = default;

Status CuttableMetadataStore::Refused() const {
  return Status::Unavailable("the metadata store is cut off from " + name_ + " (fault injected)");
}

void CuttableMetadataStore::Cut(bool cut) {
  if (cut_.exchange(cut) == cut || cut) return;
  // Healed: each watch hears what it missed.
  std::vector<std::shared_ptr<Watcher>> live;
  {
    std::lock_guard lock(mu_);
    for (auto& weak : watchers_) {
      if (auto w = weak.lock()) live.push_back(std::move(w));
    }
  }
  for (auto& w : live) {
    std::lock_guard lock(w->mu);
    w->DeliverHeld();
  }
}

Result<std::optional<VersionedValue>> CuttableMetadataStore::Get(const std::string& key) {
  if (cut_) return Refused();
  return inner_->Get(key);
}
Result<std::vector<KeyValue>> CuttableMetadataStore::List(const std::string& prefix) {
  if (cut_) return Refused();
  return inner_->List(prefix);
}
Result<int64_t> CuttableMetadataStore::Put(const std::string& key, const std::string& value,
                                           int64_t lease_id) {
  if (cut_) return Refused();
  return inner_->Put(key, value, lease_id);
}
Result<int64_t> CuttableMetadataStore::CompareAndSwap(const std::string& key,
                                                      int64_t expected_version,
                                                      const std::string& value, int64_t lease_id) {
  if (cut_) return Refused();
  return inner_->CompareAndSwap(key, expected_version, value, lease_id);
}
Status CuttableMetadataStore::Delete(const std::string& key) {
  if (cut_) return Refused();
  return inner_->Delete(key);
}
Result<int64_t> CuttableMetadataStore::GrantLease(std::chrono::milliseconds ttl) {
  if (cut_) return Refused();
  return inner_->GrantLease(ttl);
}
Status CuttableMetadataStore::KeepAlive(int64_t lease_id) {
  if (cut_) return Refused();
  return inner_->KeepAlive(lease_id);
}
Status CuttableMetadataStore::RevokeLease(int64_t lease_id) {
  if (cut_) return Refused();
  return inner_->RevokeLease(lease_id);
}

Result<int64_t> CuttableMetadataStore::Commit(const std::vector<MetadataCondition>& conditions,
                                              const std::vector<MetadataWrite>& writes) {
  if (cut_) return Refused();
  return inner_->Commit(conditions, writes);
}
size_t CuttableMetadataStore::max_writes_per_commit() const {
  return inner_->max_writes_per_commit();
}
Result<MetadataPage> CuttableMetadataStore::ListPage(const std::string& prefix,
                                                     const std::string& start_after, size_t limit,
                                                     int64_t at_version) {
  if (cut_) return Refused();
  return inner_->ListPage(prefix, start_after, limit, at_version);
}

std::unique_ptr<WatchHandle> CuttableMetadataStore::WatchChanges(const std::string& prefix,
                                                                 int64_t after_version,
                                                                 ChangesCallback on_changes) {
  auto watcher = std::make_shared<Watcher>();
  watcher->on_changes = std::move(on_changes);
  Watcher* raw = watcher.get();
  watcher->inner =
      inner_->WatchChanges(prefix, after_version, [this, raw](const ChangeBatch& batch) {
        std::lock_guard lock(raw->mu);
        if (cut_ && !batch.history_lost) {
          for (const auto& [key, value] : batch.changes) raw->held[key] = value;
          raw->held_version = batch.version;
          return;
        }
        raw->DeliverHeld();
        raw->on_changes(batch);
      });
  {
    std::lock_guard lock(mu_);
    watchers_.push_back(watcher);
  }
  return std::make_unique<CutWatchHandle>(std::move(watcher));
}

}  // namespace scrollback
