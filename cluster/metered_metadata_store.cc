#include "scrollback/cluster/metered_metadata_store.h"

namespace scrollback {

MeteredMetadataStore::MeteredMetadataStore(std::shared_ptr<MetadataStore> inner)
    : inner_(std::move(inner)) {}

MetadataTraffic MeteredMetadataStore::traffic() const {
  return {commits_.load(),    keys_written_.load(),  bytes_written_.load(), reads_.load(),
          bytes_read_.load(), watch_batches_.load(), watch_keys_.load(),    watch_bytes_.load()};
}

void MeteredMetadataStore::Wrote(uint64_t keys, uint64_t bytes) {
  commits_.fetch_add(1, std::memory_order_relaxed);
  keys_written_.fetch_add(keys, std::memory_order_relaxed);
  bytes_written_.fetch_add(bytes, std::memory_order_relaxed);
}

Result<std::optional<VersionedValue>> MeteredMetadataStore::Get(const std::string& key) {
  auto got = inner_->Get(key);
  reads_.fetch_add(1, std::memory_order_relaxed);
  if (got.ok() && *got) bytes_read_.fetch_add(key.size() + (*got)->value.size());
  return got;
}

Result<std::vector<KeyValue>> MeteredMetadataStore::List(const std::string& prefix) {
  auto listed = inner_->List(prefix);
  reads_.fetch_add(1, std::memory_order_relaxed);
  if (listed.ok()) {
    for (const KeyValue& kv : *listed) bytes_read_.fetch_add(kv.key.size() + kv.value.value.size());
  }
  return listed;
}

Result<int64_t> MeteredMetadataStore::Put(const std::string& key, const std::string& value,
                                          int64_t lease_id) {
  auto put = inner_->Put(key, value, lease_id);
  if (put.ok()) Wrote(1, key.size() + value.size());
  return put;
}

Result<int64_t> MeteredMetadataStore::CompareAndSwap(const std::string& key,
                                                     int64_t expected_version,
                                                     const std::string& value, int64_t lease_id) {
  auto swapped = inner_->CompareAndSwap(key, expected_version, value, lease_id);
  if (swapped.ok()) Wrote(1, key.size() + value.size());
  return swapped;
}

Status MeteredMetadataStore::Delete(const std::string& key) {
  Status deleted = inner_->Delete(key);
  if (deleted.ok()) Wrote(1, key.size());
  return deleted;
}

Result<int64_t> MeteredMetadataStore::Commit(const std::vector<MetadataCondition>& conditions,
                                             const std::vector<MetadataWrite>& writes) {
  auto committed = inner_->Commit(conditions, writes);
  if (committed.ok()) {
    uint64_t bytes = 0;
    for (const MetadataWrite& write : writes) {
      bytes += write.key.size() + (write.value ? write.value->size() : 0);
    }
    Wrote(writes.size(), bytes);
  }
  return committed;
}

Result<MetadataPage> MeteredMetadataStore::ListPage(const std::string& prefix,
                                                    const std::string& start_after, size_t limit,
                                                    int64_t at_version) {
  auto page = inner_->ListPage(prefix, start_after, limit, at_version);
  reads_.fetch_add(1, std::memory_order_relaxed);
  if (page.ok()) {
    for (const KeyValue& kv : page->kvs) {
      bytes_read_.fetch_add(kv.key.size() + kv.value.value.size());
    }
  }
  return page;
}

Result<int64_t> MeteredMetadataStore::GrantLease(std::chrono::milliseconds ttl) {
  return inner_->GrantLease(ttl);
}
Status MeteredMetadataStore::KeepAlive(int64_t lease_id) { return inner_->KeepAlive(lease_id); }
Status MeteredMetadataStore::RevokeLease(int64_t lease_id) { return inner_->RevokeLease(lease_id); }

std::unique_ptr<WatchHandle> MeteredMetadataStore::WatchChanges(const std::string& prefix,
                                                                int64_t after_version,
                                                                ChangesCallback on_changes) {
  return inner_->WatchChanges(
      prefix, after_version, [this, on_changes = std::move(on_changes)](const ChangeBatch& batch) {
        uint64_t bytes = 0;
        for (const auto& [key, value] : batch.changes) {
          bytes += key.size() + (value ? value->value.size() : 0);
        }
        watch_batches_.fetch_add(1, std::memory_order_relaxed);
        watch_keys_.fetch_add(batch.changes.size(), std::memory_order_relaxed);
        watch_bytes_.fetch_add(bytes, std::memory_order_relaxed);
        on_changes(batch);
      });
}

}  // namespace scrollback
