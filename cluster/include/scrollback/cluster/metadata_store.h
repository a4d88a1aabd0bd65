// MetadataStore: the small, strongly consistent key-value store that coordinates a cluster (the
// shard map, node registrations, leases). Two implementations: in memory (embedded mode and
// tests) and etcd (multi-process and multi-machine deployments).
//
// Versions: every key carries the version of its last write (etcd's mod_revision); versions
// grow with every write to the store, so a larger version is a newer write. Version 0 means
// "absent".
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "scrollback/schema/clock.h"
#include "scrollback/schema/status.h"

namespace scrollback {

struct VersionedValue {
  std::string value;
  int64_t version = 0;
};

struct KeyValue {
  std::string key;
  VersionedValue value;
};

// Keeps a watch registered; destroying it stops the callbacks (and waits for a running one).
class WatchHandle {
 public:
  virtual ~WatchHandle() = default;
};

class MetadataStore {
 public:
  virtual ~MetadataStore() = default;

  // nullopt when the key does not exist.
  virtual Result<std::optional<VersionedValue>> Get(const std::string& key) = 0;
  // Every key starting with `prefix`, in key order.
  virtual Result<std::vector<KeyValue>> List(const std::string& prefix) = 0;
  // Writes unconditionally; with a non-zero lease the key vanishes when the lease expires.
  // Returns the new version.
  virtual Result<int64_t> Put(const std::string& key, const std::string& value,
                              int64_t lease_id = 0) = 0;
  // Writes only if the key's current version is `expected_version` (0: only if absent).
  // failed-precondition when it is not. Returns the new version.
  virtual Result<int64_t> CompareAndSwap(const std::string& key, int64_t expected_version,
                                         const std::string& value, int64_t lease_id = 0) = 0;
  virtual Status Delete(const std::string& key) = 0;

  // A lease lives `ttl` after its grant or last keep-alive; then its keys are deleted.
  virtual Result<int64_t> GrantLease(std::chrono::milliseconds ttl) = 0;
  // not-found if the lease already expired.
  virtual Status KeepAlive(int64_t lease_id) = 0;
  virtual Status RevokeLease(int64_t lease_id) = 0;

  // Calls `on_change(key, value or nullopt if deleted)` after each change under `prefix`, on a
  // thread of the store's choosing, one call at a time per watch. Do not destroy the handle from
  // inside the callback.
  using WatchCallback =
      std::function<void(const std::string& key, const std::optional<VersionedValue>& value)>;
  virtual std::unique_ptr<WatchHandle> Watch(const std::string& prefix,
                                             WatchCallback on_change) = 0;
};

// In-memory store. Leases expire by `clock`; expiry is checked on every call and by a
// background thread every 50 ms so that watchers hear of it.
std::shared_ptr<MetadataStore> NewInMemoryMetadataStore(std::shared_ptr<Clock> clock);

}  // namespace scrollback
