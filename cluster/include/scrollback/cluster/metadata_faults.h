// Fault seam for the metadata store: a MetadataStore wrapper that a test can cut off from the
// store, as a network partition between one node and etcd would. Each node of an embedded
// cluster reaches the shared store through one of these (EmbeddedCluster::CutFromMetadata).
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "scrollback/cluster/metadata_store.h"

namespace scrollback {

// While cut: every call fails `unavailable` without reaching the store (a lease the node does
// not renew expires there), and watch events are held back; when the cut heals, each watch
// hears the latest value of every key that changed meanwhile, in one batch at the newest
// version (as an etcd watch resuming from its revision would, compacted). Thread-safe.
class CuttableMetadataStore final : public MetadataStore {
 public:
  CuttableMetadataStore(std::shared_ptr<MetadataStore> inner, std::string name);
  ~CuttableMetadataStore() override;

  void Cut(bool cut);
  bool cut() const { return cut_.load(); }

  Result<std::optional<VersionedValue>> Get(const std::string& key) override;
  Result<std::vector<KeyValue>> List(const std::string& prefix) override;
  Result<int64_t> Put(const std::string& key, const std::string& value, int64_t lease_id) override;
  Result<int64_t> CompareAndSwap(const std::string& key, int64_t expected_version,
                                 const std::string& value, int64_t lease_id) override;
  Status Delete(const std::string& key) override;
  Result<int64_t> GrantLease(std::chrono::milliseconds ttl) override;
  Status KeepAlive(int64_t lease_id) override;
  Status RevokeLease(int64_t lease_id) override;
  Result<int64_t> Commit(const std::vector<MetadataCondition>& conditions,
                         const std::vector<MetadataWrite>& writes) override;
  size_t max_writes_per_commit() const override;
  Result<MetadataPage> ListPage(const std::string& prefix, const std::string& start_after,
                                size_t limit, int64_t at_version) override;
  std::unique_ptr<WatchHandle> WatchChanges(const std::string& prefix, int64_t after_version,
                                            ChangesCallback on_changes) override;

 private:
  struct Watcher;
  Status Refused() const;

  const std::shared_ptr<MetadataStore> inner_;
  const std::string name_;
  std::atomic<bool> cut_{false};
  std::mutex mu_;
  std::vector<std::weak_ptr<Watcher>> watchers_;  // GUARDED_BY(mu_)
};

}  // namespace scrollback
