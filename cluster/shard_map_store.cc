#include "scrollback/cluster/shard_map_store.h"

#include <fmt/format.h>
#include <pthread.h>
#include <spdlog/logger.h>
#include <xxhash.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <set>

namespace scrollback {

std::string ShardRecordKey(uint64_t shard_id) {
  return fmt::format("{}{:016x}", kShardMapShardsPrefix, shard_id);
}

std::string NodeRecordKey(const std::string& node_id) { return kShardMapNodesPrefix + node_id; }

// The records under kShardMapPrefix, parsed.
struct ShardMapMirror::Records {
  std::map<uint64_t, ShardInfo> shards;
  std::map<std::string, NodeInfo> nodes;
  uint64_t map_version = 0;  // 0: no version key.
  int64_t version_key_store_version = 0;
  std::vector<std::string> keys;  // Every key read (LoadRecords only).
};

namespace {

using Records = ShardMapMirror::Records;
constexpr int kLoadAttempts = 20;

// Applies one key's value (nullopt: deleted) to `records`. Keys of other kinds under the prefix
// (the bootstrap digest) are not records.
Status ApplyRecord(Records& records, const std::string& key,
                   const std::optional<VersionedValue>& value) {
  if (key == kShardMapVersionKey) {
    if (!value) return Status::Corruption("the shard map's version key was deleted");
    char* end = nullptr;
    const unsigned long long version = std::strtoull(value->value.c_str(), &end, 10);
    if (value->value.empty() || *end != '\0' || version == 0) {
      return Status::Corruption("the shard map's version key holds '" + value->value + "'");
    }
    records.map_version = version;
    records.version_key_store_version = value->version;
  } else if (key.starts_with(kShardMapShardsPrefix)) {
    const std::string hex = key.substr(std::string_view(kShardMapShardsPrefix).size());
    char* end = nullptr;
    const uint64_t id = std::strtoull(hex.c_str(), &end, 16);
    if (hex.size() != 16 || *end != '\0') return Status::Corruption("bad shard record key " + key);
    if (!value) {
      records.shards.erase(id);
      return Status::Ok();
    }
    auto shard = ParseShardInfo(value->value);
    if (!shard.ok()) return shard.status();
    if (shard->shard_id != id) {
      return Status::Corruption("shard record " + key + " holds shard " +
                                std::to_string(shard->shard_id));
    }
    records.shards[id] = std::move(shard).value();
  } else if (key.starts_with(kShardMapNodesPrefix)) {
    const std::string id = key.substr(std::string_view(kShardMapNodesPrefix).size());
    if (!value) {
      records.nodes.erase(id);
      return Status::Ok();
    }
    auto node = ParseNodeInfo(value->value);
    if (!node.ok()) return node.status();
    if (node->node_id != id) {
      return Status::Corruption("node record " + key + " holds node " + node->node_id);
    }
    records.nodes[id] = std::move(node).value();
  }
  return Status::Ok();
}

Result<ShardMap> BuildMap(const Records& records) {
  std::vector<ShardInfo> shards;
  shards.reserve(records.shards.size());
  for (const auto& [id, shard] : records.shards) shards.push_back(shard);
  std::vector<NodeInfo> nodes;
  nodes.reserve(records.nodes.size());
  for (const auto& [id, node] : records.nodes) nodes.push_back(node);
  auto map = ShardMap::Make(records.map_version, std::move(shards), std::move(nodes));
  if (!map.ok())
    return Status::Corruption("the stored shard map is invalid: " + map.status().ToString());
  return map;
}

// Reads every key under kShardMapPrefix in pages, all at the store version of the first page.
// Returns the records and that store version.
Result<std::pair<Records, int64_t>> LoadRecords(MetadataStore& metadata) {
  Status last;
  for (int attempt = 0; attempt < kLoadAttempts; ++attempt) {
    Records records;
    std::string after;
    int64_t at = 0;
    for (;;) {
      auto page = metadata.ListPage(kShardMapPrefix, after, kShardMapPageSize, at);
      if (!page.ok()) {
        last = page.status();
        break;
      }
      if (at == 0) at = page->version;
      for (const KeyValue& kv : page->kvs) {
        SB_RETURN_IF_ERROR(ApplyRecord(records, kv.key, kv.value));
        records.keys.push_back(kv.key);
      }
      if (!page->more || page->kvs.empty()) return std::make_pair(std::move(records), at);
      after = page->kvs.back().key;
    }
    // The map changed while it was read, or the read version is gone: read it again.
    if (last.code() != ErrorCode::kFailedPrecondition) return last;
  }
  return Status::Unavailable("the shard map kept changing while it was read: " + last.ToString());
}

std::string Digest(const ShardMap& map) {
  const std::string bytes = map.Serialize();
  return fmt::format("{:016x}", XXH3_64bits(bytes.data(), bytes.size()));
}

std::vector<MetadataWrite> RecordWrites(const ShardMap& map) {
  std::vector<MetadataWrite> writes;
  writes.reserve(map.shards().size() + map.nodes().size());
  for (const NodeInfo& node : map.nodes()) {
    writes.push_back({NodeRecordKey(node.node_id), SerializeNodeInfo(node)});
  }
  for (const ShardInfo& shard : map.shards()) {
    writes.push_back({ShardRecordKey(shard.shard_id), SerializeShardInfo(shard)});
  }
  return writes;
}

// Writes `map` as the first map: its records (and deletes of `stale` keys) in commits of at most
// the store's size, each only while no version key exists, then the version key with
// `final_conditions` and `final_writes`. OK when another writer published a map first.
Status WriteFirstMap(MetadataStore& metadata, const ShardMap& map,
                     const std::vector<std::string>& stale,
                     std::vector<MetadataCondition> final_conditions,
                     std::vector<MetadataWrite> final_writes) {
  std::vector<MetadataWrite> records = RecordWrites(map);
  for (const std::string& key : stale) records.push_back({key, std::nullopt});
  final_conditions.push_back({kShardMapVersionKey, 0});
  final_writes.push_back({kShardMapVersionKey, std::to_string(map.version())});
  const size_t per_commit = metadata.max_writes_per_commit();
  auto published_first = [](const Result<int64_t>& r) {
    return r.status().code() == ErrorCode::kFailedPrecondition;
  };
  if (records.size() + final_writes.size() <= per_commit) {  // One commit.
    records.insert(records.end(), final_writes.begin(), final_writes.end());
    auto committed = metadata.Commit(final_conditions, records);
    return committed.ok() || published_first(committed) ? Status::Ok() : committed.status();
  }
  // Several commits: bootstrappers writing at once must write the same map.
  const std::string digest = Digest(map);
  auto claimed = metadata.Commit({{kShardMapVersionKey, 0}, {kShardMapBootstrapKey, 0}},
                                 {{kShardMapBootstrapKey, digest}});
  if (!claimed.ok()) {
    if (!published_first(claimed)) return claimed.status();
    auto version = metadata.Get(kShardMapVersionKey);
    if (!version.ok()) return version.status();
    if (*version) return Status::Ok();
    auto other = metadata.Get(kShardMapBootstrapKey);
    if (!other.ok()) return other.status();
    if (*other && (*other)->value != digest) {
      return Status::FailedPrecondition(
          "another writer is bootstrapping a different first shard map (digest " + (*other)->value +
          ", ours " + digest + ")");
    }
  }
  final_writes.push_back({kShardMapBootstrapKey, std::nullopt});
  for (size_t at = 0; at < records.size(); at += per_commit) {
    std::vector<MetadataWrite> chunk(records.begin() + at,
                                     records.begin() + std::min(records.size(), at + per_commit));
    auto committed = metadata.Commit({{kShardMapVersionKey, 0}}, chunk);
    if (published_first(committed)) return Status::Ok();
    if (!committed.ok()) return committed.status();
  }
  auto committed = metadata.Commit(final_conditions, final_writes);
  return committed.ok() || published_first(committed) ? Status::Ok() : committed.status();
}

// Converts a format-1 map (one value under kLegacyShardMapKey) to records, deleting the value in
// the commit that publishes the version key.
Status MigrateLegacyMap(MetadataStore& metadata, const VersionedValue& legacy,
                        const Records& existing) {
  auto map = ShardMap::Parse(legacy.value);
  if (!map.ok()) return map.status();
  std::vector<std::string> stale;  // Records left by an interrupted migration of another map.
  for (const std::string& key : existing.keys) {
    if (key == kShardMapBootstrapKey) continue;
    stale.push_back(key);
  }
  return WriteFirstMap(metadata, *map, stale, {{kLegacyShardMapKey, legacy.version}},
                       {{kLegacyShardMapKey, std::nullopt}});
}

}  // namespace

Result<StoredShardMap> LoadShardMap(MetadataStore& metadata) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto loaded = LoadRecords(metadata);
    if (!loaded.ok()) return loaded.status();
    Records& records = loaded->first;
    if (records.map_version != 0) {
      auto map = BuildMap(records);
      if (!map.ok()) return map.status();
      return StoredShardMap{std::move(map).value(), records.version_key_store_version};
    }
    auto legacy = metadata.Get(kLegacyShardMapKey);
    if (!legacy.ok()) return legacy.status();
    if (!*legacy || attempt > 0) break;
    SB_RETURN_IF_ERROR(MigrateLegacyMap(metadata, **legacy, records));
  }
  return Status::NotFound("no shard map published");
}

Result<ShardMap> ReadShardMap(MetadataStore& metadata) {
  auto stored = LoadShardMap(metadata);
  if (!stored.ok()) return stored.status();
  return std::move(stored->map);
}

Result<int64_t> PublishShardMap(MetadataStore& metadata, const StoredShardMap& base,
                                const ShardMap& next) {
  if (next.version() <= base.map.version()) {
    return Status::InvalidArgument("version", "a published map's version must grow (" +
                                                  std::to_string(base.map.version()) + " -> " +
                                                  std::to_string(next.version()) + ")");
  }
  std::vector<MetadataWrite> writes;
  for (const ShardInfo& shard : next.shards()) {
    const ShardInfo* before = base.map.FindShard(shard.shard_id);
    if (before == nullptr || !(*before == shard)) {
      writes.push_back({ShardRecordKey(shard.shard_id), SerializeShardInfo(shard)});
    }
  }
  for (const ShardInfo& shard : base.map.shards()) {
    if (next.FindShard(shard.shard_id) == nullptr) {
      writes.push_back({ShardRecordKey(shard.shard_id), std::nullopt});
    }
  }
  for (const NodeInfo& node : next.nodes()) {
    const NodeInfo* before = base.map.FindNode(node.node_id);
    if (before == nullptr || !(*before == node)) {
      writes.push_back({NodeRecordKey(node.node_id), SerializeNodeInfo(node)});
    }
  }
  for (const NodeInfo& node : base.map.nodes()) {
    if (next.FindNode(node.node_id) == nullptr) {
      writes.push_back({NodeRecordKey(node.node_id), std::nullopt});
    }
  }
  writes.push_back({kShardMapVersionKey, std::to_string(next.version())});
  if (writes.size() > metadata.max_writes_per_commit()) {
    return Status::InvalidArgument("shards",
                                   "the change rewrites " + std::to_string(writes.size()) +
                                       " records; one commit of the metadata store takes at most " +
                                       std::to_string(metadata.max_writes_per_commit()));
  }
  return metadata.Commit({{kShardMapVersionKey, base.store_version}}, writes);
}

Result<ShardMap> FirstStepOfChange(const ShardMap& base, const ShardMap& next, size_t max_writes) {
  // Every changed record belongs to one unit of records published together: a shard changed in
  // place; a split or merge (parents removed, children added); and a node whose record changed
  // together with every shard unit involving a shard it was primary of (the failover
  // controller records a node's new lease with all of its primaries' new epochs at once).
  struct Unit {
    std::vector<uint64_t> removed, put;  // Shard ids.
    std::vector<std::string> nodes;      // Node records from `next` (or deleted).
    size_t writes() const { return removed.size() + put.size() + nodes.size(); }
  };
  std::map<std::string, Unit> units;  // In key order: nodes ("n:"), then shards ("s:").
  std::set<std::string> changed_nodes;
  for (const NodeInfo& node : next.nodes()) {
    const NodeInfo* before = base.FindNode(node.node_id);
    if (before == nullptr || !(*before == node)) changed_nodes.insert(node.node_id);
  }
  for (const NodeInfo& node : base.nodes()) {
    if (next.FindNode(node.node_id) == nullptr) changed_nodes.insert(node.node_id);
  }
  for (const std::string& node : changed_nodes) units["n:" + node].nodes.push_back(node);
  // The unit a change of base shard `id` belongs to.
  auto unit_of_base = [&](uint64_t id, uint64_t group) -> Unit& {
    const ShardInfo* shard = base.FindShard(id);
    if (shard != nullptr && changed_nodes.count(shard->primary)) {
      return units["n:" + shard->primary];
    }
    return units[fmt::format("s:{:016x}", group)];
  };
  std::map<uint64_t, uint64_t> group_of_parent;  // A split's or merge's parents: smallest id.
  for (const ShardInfo& shard : next.shards()) {
    if (base.FindShard(shard.shard_id) != nullptr) continue;
    std::vector<uint64_t> parents;
    for (uint64_t parent : {shard.split_from, shard.merge_left, shard.merge_right}) {
      if (parent != 0 && base.FindShard(parent) != nullptr) parents.push_back(parent);
    }
    const uint64_t group =
        parents.empty() ? shard.shard_id : *std::min_element(parents.begin(), parents.end());
    for (uint64_t parent : parents) group_of_parent[parent] = group;
    unit_of_base(group, group).put.push_back(shard.shard_id);
  }
  for (const ShardInfo& shard : base.shards()) {
    const ShardInfo* now = next.FindShard(shard.shard_id);
    if (now == nullptr) {
      auto group = group_of_parent.find(shard.shard_id);
      const uint64_t g = group == group_of_parent.end() ? shard.shard_id : group->second;
      unit_of_base(g, g).removed.push_back(shard.shard_id);
    } else if (!(*now == shard)) {
      unit_of_base(shard.shard_id, shard.shard_id).put.push_back(shard.shard_id);
    }
  }
  size_t total = 1;  // The version key.
  for (const auto& [key, unit] : units) total += unit.writes();
  if (total <= max_writes) return next;

  // Take whole units while they fit.
  size_t budget = max_writes - 1;
  std::vector<const Unit*> taken;
  for (const auto& [key, unit] : units) {
    if (unit.writes() > budget) continue;
    budget -= unit.writes();
    taken.push_back(&unit);
  }
  if (taken.empty()) {
    return Status::InvalidArgument(
        "shards", "every part of this shard map change needs more writes than one commit takes (" +
                      std::to_string(max_writes) + "; etcd --max-txn-ops)");
  }
  std::map<uint64_t, ShardInfo> shards;  // By id: base, then the taken units applied.
  for (const ShardInfo& shard : base.shards()) shards[shard.shard_id] = shard;
  std::map<std::string, NodeInfo> nodes;
  for (const NodeInfo& node : base.nodes()) nodes[node.node_id] = node;
  for (const Unit* unit : taken) {
    for (uint64_t id : unit->removed) shards.erase(id);
    for (uint64_t id : unit->put) shards[id] = *next.FindShard(id);
    for (const std::string& id : unit->nodes) {
      const NodeInfo* node = next.FindNode(id);
      if (node == nullptr) {
        nodes.erase(id);
      } else {
        nodes[id] = *node;
      }
    }
  }
  std::vector<ShardInfo> shard_list;
  shard_list.reserve(shards.size());
  for (auto& [id, shard] : shards) shard_list.push_back(std::move(shard));
  std::vector<NodeInfo> node_list;
  for (auto& [id, node] : nodes) node_list.push_back(std::move(node));
  return ShardMap::Make(next.version(), std::move(shard_list), std::move(node_list));
}

Status PublishFirstShardMap(MetadataStore& metadata, const ShardMap& map) {
  auto existing = metadata.Get(kShardMapVersionKey);
  if (!existing.ok()) return existing.status();
  if (*existing) return Status::Ok();
  return WriteFirstMap(metadata, map, {}, {}, {});
}

Result<ShardMap> EditShardMap(MetadataStore& metadata, const ShardMapEdit& edit) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    auto stored = LoadShardMap(metadata);
    if (!stored.ok()) return stored.status();
    std::vector<ShardInfo> shards = stored->map.shards();
    std::vector<NodeInfo> nodes = stored->map.nodes();
    SB_RETURN_IF_ERROR(edit(shards, nodes));
    if (shards == stored->map.shards() && nodes == stored->map.nodes()) return stored->map;
    auto next = ShardMap::Make(stored->map.version() + 1, std::move(shards), std::move(nodes));
    if (!next.ok()) return next.status();
    auto published = PublishShardMap(metadata, *stored, *next);
    if (published.ok()) return std::move(next).value();
    if (published.status().code() != ErrorCode::kFailedPrecondition) return published.status();
  }
  return Status::Unavailable("the shard map kept changing under us");
}

Status BootstrapShardMap(MetadataStore& metadata, uint32_t shards,
                         const std::vector<std::string>& node_ids, uint32_t replication_factor) {
  if (shards == 0 || node_ids.empty()) {
    return Status::InvalidArgument("shards", "need at least one shard and one node");
  }
  std::vector<NodeInfo> nodes;
  for (const std::string& id : node_ids) nodes.push_back({id, "", ""});
  return PublishFirstShardMap(metadata, ShardMap::Uniform(1, shards, nodes, replication_factor));
}

Status PublishNodeAddress(MetadataStore& metadata, const NodeInfo& node) {
  return EditShardMap(metadata,
                      [&](std::vector<ShardInfo>&, std::vector<NodeInfo>& nodes) {
                        for (NodeInfo& info : nodes) {
                          if (info.node_id != node.node_id) continue;
                          info.address =
                              node.address;  // The recorded lease is the controller's to change.
                          info.http_address = node.http_address;
                          return Status::Ok();
                        }
                        return Status::NotFound("the shard map has no node " + node.node_id);
                      })
      .status();
}

// ---- ShardMapMirror ---------------------------------------------------------------------------

ShardMapMirror::ShardMapMirror() : records_(std::make_unique<Records>()) {}
ShardMapMirror::ShardMapMirror(ShardMapMirror&&) noexcept = default;
ShardMapMirror& ShardMapMirror::operator=(ShardMapMirror&&) noexcept = default;
ShardMapMirror::~ShardMapMirror() = default;

Result<ShardMapMirror> ShardMapMirror::Load(MetadataStore& metadata) {
  auto loaded = LoadRecords(metadata);
  if (!loaded.ok()) return loaded.status();
  if (loaded->first.map_version == 0) {
    // None yet, or still in format 1: LoadShardMap says not-found or migrates it.
    SB_RETURN_IF_ERROR(LoadShardMap(metadata).status());
    loaded = LoadRecords(metadata);
    if (!loaded.ok()) return loaded.status();
    if (loaded->first.map_version == 0) return Status::NotFound("no shard map published");
  }
  ShardMapMirror mirror;
  *mirror.records_ = std::move(loaded->first);
  mirror.records_->keys.clear();
  mirror.applied_version_ = loaded->second;
  SB_RETURN_IF_ERROR(mirror.Rebuild());
  return mirror;
}

Result<bool> ShardMapMirror::Apply(const ChangeBatch& batch) {
  if (batch.history_lost) return Status::FailedPrecondition("the watch lost its history");
  if (batch.version <= applied_version_) return false;  // Already in the load.
  const uint64_t before = records_->map_version;
  for (const auto& [key, value] : batch.changes) {
    SB_RETURN_IF_ERROR(ApplyRecord(*records_, key, value));
  }
  applied_version_ = batch.version;
  if (records_->map_version == before) return false;
  SB_RETURN_IF_ERROR(Rebuild());
  return true;
}

Status ShardMapMirror::Rebuild() {
  auto map = BuildMap(*records_);
  if (!map.ok()) return map.status();
  current_ = std::make_shared<const StoredShardMap>(
      StoredShardMap{std::move(map).value(), records_->version_key_store_version});
  return Status::Ok();
}

// ---- ShardMapWatcher --------------------------------------------------------------------------

Result<std::unique_ptr<ShardMapWatcher>> ShardMapWatcher::Start(
    std::shared_ptr<MetadataStore> metadata, Logger logger, MapCallback on_map,
    bool wait_for_first) {
  std::unique_ptr<ShardMapWatcher> watcher(
      new ShardMapWatcher(std::move(metadata), OrNull(std::move(logger)), std::move(on_map)));
  ShardMapWatcher* raw = watcher.get();
  Status loaded = watcher->Reload();
  if (!loaded.ok()) {
    if (loaded.code() != ErrorCode::kNotFound || !wait_for_first) return loaded;
    // The first map's version key appearing starts a load (on the refresher thread).
    auto request_load = [raw] {
      {
        std::lock_guard lock(raw->mu_);
        if (raw->mirror_) return;
        raw->reload_requested_ = true;
      }
      raw->cv_.notify_all();
    };
    watcher->first_map_watch_ = watcher->metadata_->Watch(
        kShardMapVersionKey,
        [request_load](const std::string&, const std::optional<VersionedValue>& value) {
          if (value) request_load();
        });
    auto published = watcher->metadata_->Get(kShardMapVersionKey);  // Before the watch began?
    if (published.ok() && *published) request_load();
  }
  watcher->refresher_ = std::thread([raw] { raw->RefreshLoop(); });
  return watcher;
}

ShardMapWatcher::ShardMapWatcher(std::shared_ptr<MetadataStore> metadata, Logger logger,
                                 MapCallback on_map)
    : metadata_(std::move(metadata)), log_(std::move(logger)), on_map_(std::move(on_map)) {}

ShardMapWatcher::~ShardMapWatcher() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  first_map_watch_.reset();
  if (refresher_.joinable()) refresher_.join();
  std::lock_guard reload(reload_mu_);
  watch_.reset();
}

std::shared_ptr<const StoredShardMap> ShardMapWatcher::Current() {
  std::lock_guard lock(mu_);
  return current_;
}

Status ShardMapWatcher::Reload() {
  std::lock_guard reload(reload_mu_);
  watch_.reset();  // Outside mu_: waits for a running callback, which takes mu_.
  auto mirror = ShardMapMirror::Load(*metadata_);
  if (!mirror.ok()) return mirror.status();
  const int64_t from = mirror->applied_version();
  std::shared_ptr<const StoredShardMap> newer;
  uint64_t generation = 0;
  {
    std::lock_guard lock(mu_);
    if (!current_ || mirror->current()->map.version() > current_->map.version()) {
      current_ = mirror->current();
      newer = current_;
    }
    mirror_ = std::move(mirror).value();
    generation = ++watch_generation_;
    reload_requested_ = false;
  }
  reloads_.fetch_add(1, std::memory_order_relaxed);
  watch_ = metadata_->WatchChanges(
      kShardMapPrefix, from, [this, generation](const ChangeBatch& b) { OnBatch(b, generation); });
  if (newer) Publish(newer);
  return Status::Ok();
}

void ShardMapWatcher::OnBatch(const ChangeBatch& batch, uint64_t generation) {
  const auto started = std::chrono::steady_clock::now();
  std::shared_ptr<const StoredShardMap> newer;
  {
    std::lock_guard lock(mu_);
    if (generation != watch_generation_ || !mirror_) return;
    auto applied =
        batch.history_lost
            ? Result<bool>(Status::FailedPrecondition("the watch lost its history (compacted)"))
            : mirror_->Apply(batch);
    if (!applied.ok()) {
      log_->error("following the shard map failed at store version {} (loading it afresh): {}",
                  batch.version, applied.status().ToString());
      mirror_.reset();
      reload_requested_ = true;
      cv_.notify_all();
      return;
    }
    batches_.fetch_add(1, std::memory_order_relaxed);
    if (*applied && mirror_->current()->map.version() > current_->map.version()) {
      current_ = mirror_->current();
      newer = current_;
    }
  }
  apply_nanos_.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::steady_clock::now() - started)
                             .count(),
                         std::memory_order_relaxed);
  if (newer) Publish(newer);
}

void ShardMapWatcher::Publish(const std::shared_ptr<const StoredShardMap>& map) {
  std::lock_guard publish(publish_mu_);
  if (map->map.version() <= published_version_) return;
  log_->info("shard map version {} -> {} ({} shards, {} nodes)", published_version_,
             map->map.version(), map->map.shards().size(), map->map.nodes().size());
  published_version_ = map->map.version();
  if (on_map_) on_map_(map);
}

void ShardMapWatcher::RequestRefresh() {
  {
    std::lock_guard lock(mu_);
    refresh_requested_ = true;
  }
  cv_.notify_all();
}

std::shared_ptr<const StoredShardMap> ShardMapWatcher::RefreshNow() {
  auto stored = metadata_->Get(kShardMapVersionKey);
  if (!stored.ok() || !*stored) {
    // A failed read keeps the map we have: better stale than none.
    auto current = Current();
    log_->warn("reading the shard map's version failed (keeping version {}): {}",
               current ? current->map.version() : 0,
               stored.ok() ? "no version key" : stored.status().ToString());
    return current;
  }
  const int64_t store_version = (*stored)->version;
  auto behind = [&] {
    std::lock_guard lock(mu_);
    return !current_ || current_->store_version < store_version;
  };
  // The watch is usually a moment behind at most: give it that moment before loading afresh.
  for (int i = 0; i < 20 && behind(); ++i) {
    std::unique_lock lock(mu_);
    if (cv_.wait_for(lock, std::chrono::milliseconds(10), [this] { return stopping_; })) break;
  }
  if (behind()) {
    Status reloaded = Reload();
    if (!reloaded.ok()) {
      auto current = Current();
      log_->warn("loading the shard map afresh failed (keeping version {}): {}",
                 current ? current->map.version() : 0, reloaded.ToString());
    }
  }
  return Current();
}

void ShardMapWatcher::RefreshLoop() {
  pthread_setname_np(pthread_self(), "sb-map-refresh");
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stopping_ || refresh_requested_ || reload_requested_; });
    if (stopping_) return;
    const bool reload = reload_requested_;
    refresh_requested_ = false;  // Requests made while this runs get a run of their own.
    lock.unlock();
    if (reload) {
      Status reloaded = Reload();
      if (!reloaded.ok()) {
        log_->warn("loading the shard map afresh failed (retrying): {}", reloaded.ToString());
        lock.lock();
        reload_requested_ = true;
        cv_.wait_for(lock, std::chrono::milliseconds(100), [this] { return stopping_; });
        continue;
      }
    } else {
      RefreshNow();
    }
    refreshes_.fetch_add(1, std::memory_order_relaxed);
    lock.lock();
  }
}

// ---- MetadataShardMapSource -------------------------------------------------------------------

Result<std::shared_ptr<MetadataShardMapSource>> MetadataShardMapSource::Create(
    std::shared_ptr<MetadataStore> metadata, Logger logger) {
  auto watcher = ShardMapWatcher::Start(std::move(metadata), std::move(logger));
  if (!watcher.ok()) return watcher.status();
  return std::shared_ptr<MetadataShardMapSource>(
      new MetadataShardMapSource(std::move(watcher).value()));
}

std::shared_ptr<const ShardMap> MetadataShardMapSource::Current() {
  std::shared_ptr<const StoredShardMap> stored = watcher_->Current();
  return std::shared_ptr<const ShardMap>(stored, &stored->map);
}

std::shared_ptr<const ShardMap> MetadataShardMapSource::RefreshNow() {
  std::shared_ptr<const StoredShardMap> stored = watcher_->RefreshNow();
  return std::shared_ptr<const ShardMap>(stored, &stored->map);
}

}  // namespace scrollback
