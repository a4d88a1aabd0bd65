// MeteredMetadataStore: a MetadataStore wrapper that counts what passes through it — writes and
// their bytes, reads and their bytes, watch batches and their bytes — for the resharding
// simulation (bench/reshard_sim.cc) and the tests that check a change costs what it changed.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "scrollback/cluster/metadata_store.h"

namespace scrollback {

struct MetadataTraffic {
  uint64_t commits = 0;        // Put, CompareAndSwap, Delete and Commit calls that succeeded.
  uint64_t keys_written = 0;   // Keys those wrote or deleted.
  uint64_t bytes_written = 0;  // Their keys and values.
  uint64_t reads = 0;          // Get, List and ListPage calls.
  uint64_t bytes_read = 0;     // Keys and values they returned.
  uint64_t watch_batches = 0;  // Batches delivered to watches made through this wrapper.
  uint64_t watch_keys = 0;
  uint64_t watch_bytes = 0;  // Keys and values of those batches.
};

class MeteredMetadataStore final : public MetadataStore {
 public:
  explicit MeteredMetadataStore(std::shared_ptr<MetadataStore> inner);

  MetadataTraffic traffic() const;

  Result<std::optional<VersionedValue>> Get(const std::string& key) override;
  Result<std::vector<KeyValue>> List(const std::string& prefix) override;
  Result<int64_t> Put(const std::string& key, const std::string& value, int64_t lease_id) override;
  Result<int64_t> CompareAndSwap(const std::string& key, int64_t expected_version,
                                 const std::string& value, int64_t lease_id) override;
  Status Delete(const std::string& key) override;
  Result<int64_t> Commit(const std::vector<MetadataCondition>& conditions,
                         const std::vector<MetadataWrite>& writes) override;
  size_t max_writes_per_commit() const override { return inner_->max_writes_per_commit(); }
  Result<MetadataPage> ListPage(const std::string& prefix, const std::string& start_after,
                                size_t limit, int64_t at_version) override;
  Result<int64_t> GrantLease(std::chrono::milliseconds ttl) override;
  Status KeepAlive(int64_t lease_id) override;
  Status RevokeLease(int64_t lease_id) override;
  std::unique_ptr<WatchHandle> WatchChanges(const std::string& prefix, int64_t after_version,
                                            ChangesCallback on_changes) override;

 private:
  void Wrote(uint64_t keys, uint64_t bytes);

  const std::shared_ptr<MetadataStore> inner_;
  std::atomic<uint64_t> commits_{0}, keys_written_{0}, bytes_written_{0}, reads_{0}, bytes_read_{0},
      watch_batches_{0}, watch_keys_{0}, watch_bytes_{0};
};

}  // namespace scrollback
