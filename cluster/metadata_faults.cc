#include "scrollback/cluster/metadata_faults.h"

namespace scrollback {

// One watch: events pass through, or wait in `held` (latest per key) while the store is cut.
struct CuttableMetadataStore::Watcher {
  MetadataStore::WatchCallback on_change;
  std::mutex mu;  // Serializes deliveries and guards `held`.
  std::map<std::string, std::optional<VersionedValue>> held;
  std::unique_ptr<WatchHandle> inner;
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
    auto held = std::move(w->held);
    w->held.clear();
    for (auto& [key, value] : held) w->on_change(key, value);
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

std::unique_ptr<WatchHandle> CuttableMetadataStore::Watch(const std::string& prefix,
                                                          WatchCallback on_change) {
  auto watcher = std::make_shared<Watcher>();
  watcher->on_change = std::move(on_change);
  Watcher* raw = watcher.get();
  watcher->inner = inner_->Watch(
      prefix, [this, raw](const std::string& key, const std::optional<VersionedValue>& value) {
        std::lock_guard lock(raw->mu);
        if (cut_) {
          raw->held[key] = value;
          return;
        }
        raw->on_change(key, value);
      });
  {
    std::lock_guard lock(mu_);
    watchers_.push_back(watcher);
  }
  return std::make_unique<CutWatchHandle>(std::move(watcher));
}

}  // namespace scrollback
