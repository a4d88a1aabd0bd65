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
#include <utility>
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

// A condition of a Commit: `key`'s version is `version` (0: the key is absent).
struct MetadataCondition {
  std::string key;
  int64_t version = 0;
};

// A write of a Commit: puts `value`, or deletes the key when `value` is nullopt.
struct MetadataWrite {
  std::string key;
  std::optional<std::string> value;
};

// Up to `limit` keys of a prefix after a given key, and the store's version when they were read.
struct MetadataPage {
  std::vector<KeyValue> kvs;
  bool more = false;    // Keys after the last one listed remain.
  int64_t version = 0;  // The store's version (etcd: header revision) at the read.
};

// The changes of one store version, as a watch delivers them: every key a Commit wrote arrives
// in the same batch. `history_lost` instead says the store no longer has the changes after the
// version asked for (etcd compacted them): the watch has ended and the watcher must reload.
struct ChangeBatch {
  int64_t version = 0;
  std::vector<std::pair<std::string, std::optional<VersionedValue>>> changes;  // nullopt: deleted.
  bool history_lost = false;
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

  // Atomically: if every condition holds, applies every write at one new version (returned);
  // otherwise nothing (failed-precondition). At most max_writes_per_commit() writes (etcd's
  // --max-txn-ops, 128 by default, counts the conditions' keys too); more is invalid-argument.
  virtual Result<int64_t> Commit(const std::vector<MetadataCondition>& conditions,
                                 const std::vector<MetadataWrite>& writes) = 0;
  virtual size_t max_writes_per_commit() const = 0;
  // The keys of `prefix` after `start_after` (empty: from the first), in key order, at most
  // `limit` (>= 1). With `at_version` != 0, as of that store version: etcd reads its MVCC
  // history; the in-memory store keeps none and answers failed-precondition once anything was
  // written after it (the caller starts over).
  virtual Result<MetadataPage> ListPage(const std::string& prefix, const std::string& start_after,
                                        size_t limit, int64_t at_version = 0) = 0;

  // A lease lives `ttl` after its grant or last keep-alive; then its keys are deleted.
  virtual Result<int64_t> GrantLease(std::chrono::milliseconds ttl) = 0;
  // not-found if the lease already expired.
  virtual Status KeepAlive(int64_t lease_id) = 0;
  virtual Status RevokeLease(int64_t lease_id) = 0;

  // Calls `on_changes` with every version after `after_version` that changed a key under
  // `prefix`, in version order, one batch per version, on a thread of the store's choosing, one
  // call at a time per watch; with after_version 0, from the next change on. A watch survives a
  // lost connection (it resumes after the last version it delivered); only a batch with
  // history_lost ends it. Do not destroy the handle from inside the callback.
  using ChangesCallback = std::function<void(const ChangeBatch& batch)>;
  virtual std::unique_ptr<WatchHandle> WatchChanges(const std::string& prefix,
                                                    int64_t after_version,
                                                    ChangesCallback on_changes) = 0;

  // WatchChanges from now, one call per changed key: `on_change(key, value or nullopt if
  // deleted)`.
  using WatchCallback =
      std::function<void(const std::string& key, const std::optional<VersionedValue>& value)>;
  std::unique_ptr<WatchHandle> Watch(const std::string& prefix, WatchCallback on_change) {
    return WatchChanges(prefix, 0, [on_change = std::move(on_change)](const ChangeBatch& batch) {
      for (const auto& [key, value] : batch.changes) on_change(key, value);
    });
  }
};

// In-memory store. Leases expire by `clock`; expiry is checked on every call and by a
// background thread every 50 ms so that watchers hear of it. It keeps the changes of its last
// `kInMemoryHistoryVersions` versions for watches that start in the past.
inline constexpr size_t kInMemoryHistoryVersions = 100'000;
std::shared_ptr<MetadataStore> NewInMemoryMetadataStore(std::shared_ptr<Clock> clock);

}  // namespace scrollback
