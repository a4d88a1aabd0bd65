#include "shard_host.h"

#include <pthread.h>
#include <spdlog/logger.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "shard_directory.h"

namespace scrollback {
namespace {

namespace fs = std::filesystem;

constexpr auto kFirstRetry = std::chrono::milliseconds(50);
constexpr auto kMaxRetry = std::chrono::seconds(2);
constexpr auto kClosePoll = std::chrono::milliseconds(10);
// How often the shards' load counters fold their counts into decayed rates.
constexpr auto kLoadTick = std::chrono::seconds(1);

int64_t UnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::string Describe(const ShardAssignment& a) {
  return "shard " + std::to_string(a.shard_id) + " [" + std::to_string(a.range.first) + ", " +
         std::to_string(a.range.last) + "] epoch " + std::to_string(a.epoch) + " as " +
         ShardRoleName(a.role) + " (placed at map version " + std::to_string(a.placement_version) +
         ")";
}

ShardHost::ShardHost(NodeCore& core, std::shared_ptr<StorageResources> resources)
    : core_(core), resources_(std::move(resources)), log_(core.logger) {
  const ReplicationOptions& replication = core_.options.replication;
  replication::FollowerOptions follower;
  follower.node_id = core_.options.node_id;
  // A reply must fit the node's message limit (the follower reads with it), with room for the
  // batches' framing.
  follower.pull_max_bytes = static_cast<uint32_t>(
      std::min<uint64_t>(replication.pull_max_bytes, core_.options.max_message_bytes / 2));
  follower.pull_wait = replication.pull_wait;
  follower.pull_linger = replication.pull_linger;
  follower.bootstrap_mb_per_s = replication.bootstrap_mb_per_s;
  follower.bootstrap_chunk_bytes = static_cast<uint32_t>(
      std::min<uint64_t>(follower.bootstrap_chunk_bytes, core_.options.max_message_bytes / 2));
  follower.max_message_bytes = core_.options.max_message_bytes;
  follower.tamper_chunk = replication.tamper_chunk;
  follower.faults = replication.faults;
  follower.logger = core_.logger;
  follower_ = replication::ReplicaFollower::Start(
      follower, [this](uint64_t shard_id, const Status& why) { OnRebootstrap(shard_id, why); });
  const int threads = std::max(1, core_.options.shard_lifecycle_threads);
  for (int i = 0; i < threads; ++i) {
    threads_.emplace_back([this] {
      pthread_setname_np(pthread_self(), "sb-shards");
      Work();
    });
  }
}

ShardHost::~ShardHost() { Stop(std::chrono::milliseconds(0)); }

Status ShardHost::Assign(uint64_t map_version, const std::vector<ShardAssignment>& shards,
                         std::string shard_map) {
  std::vector<ShardAssignment> sorted = shards;
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.range.first < b.range.first; });
  std::set<uint64_t> ids;
  for (size_t i = 0; i < sorted.size(); ++i) {
    if (!ids.insert(sorted[i].shard_id).second) {
      return Status::InvalidArgument(
          "shards", "shard " + std::to_string(sorted[i].shard_id) + " is assigned twice");
    }
    if (i > 0 && sorted[i].range.first <= sorted[i - 1].range.last) {
      return Status::InvalidArgument(
          "shards", "the ranges of shards " + std::to_string(sorted[i - 1].shard_id) + " and " +
                        std::to_string(sorted[i].shard_id) + " overlap");
    }
  }

  std::set<uint64_t> touched;  // Shards whose following may change.
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, slot] : slots_) touched.insert(id);
    for (const ShardAssignment& a : sorted) touched.insert(a.shard_id);
    SB_RETURN_IF_ERROR(AssignLocked(map_version, sorted, std::move(shard_map)));
  }
  for (uint64_t id : touched) SyncFollow(id);
  return Status::Ok();
}

Status ShardHost::AssignLocked(uint64_t map_version, const std::vector<ShardAssignment>& sorted,
                               std::string shard_map) {
  if (stopping_) return Status::Unavailable("node " + core_.options.node_id + " is stopping");
  if (map_version < map_version_) return Status::Ok();  // Older than what is served.
  if (map_version != map_version_) {
    log_->info("shard map version {} -> {}: {} shards assigned", map_version_, map_version,
               sorted.size());
  }
  map_version_ = map_version;
  shard_map_ = std::move(shard_map);

  std::map<uint64_t, const ShardAssignment*> wanted;
  for (const ShardAssignment& a : sorted) wanted[a.shard_id] = &a;
  std::vector<uint64_t> new_epochs;  // Open primaries whose epoch grows in place.

  // Dropped, or changed in range or placement (another copy): close what is open. A dropped
  // shard that a new one splits from stays open until the children are cut from it.
  std::map<uint64_t, std::shared_ptr<ShardStore>> split_parents;  // Of splits and merges.
  for (const ShardAssignment& a : sorted) {
    if (slots_.count(a.shard_id)) continue;
    for (uint64_t parent : {a.split_from, a.merge_left, a.merge_right}) {
      if (parent != 0) split_parents[parent] = nullptr;
    }
  }
  for (auto it = slots_.begin(); it != slots_.end();) {
    auto next = wanted.find(it->first);
    const bool keep = next != wanted.end() && next->second->range == it->second.assignment.range &&
                      next->second->placement_version == it->second.assignment.placement_version;
    if (keep) {
      ++it;
      continue;
    }
    log_->info("dropping {}", Describe(it->second.assignment));
    if (auto parent = split_parents.find(it->first); parent != split_parents.end()) {
      parent->second = it->second.store;
    }
    if (it->second.store) {
      ++closing_;
      ++closing_ids_[it->first];
      Schedule(Task{std::chrono::steady_clock::now(), it->first, 0, std::move(it->second.store),
                    it->second.assignment});
    }
    it = slots_.erase(it);
  }
  for (const ShardAssignment& a : sorted) {
    auto it = slots_.find(a.shard_id);
    if (it != slots_.end()) {
      Slot& slot = it->second;
      if (slot.assignment == a) continue;  // Nothing changed for this shard.
      ShardAssignment next = a;
      if (next.epoch < slot.assignment.epoch) {
        // The map went back: never let the recorded epoch (a fence) go back with it.
        log_->error(
            "shard map version {} gives shard {} epoch {}, older than its epoch {}: "
            "keeping {}",
            map_version, a.shard_id, a.epoch, slot.assignment.epoch, slot.assignment.epoch);
        next.epoch = slot.assignment.epoch;
        if (slot.assignment == next) continue;
      }
      log_->info("now {}", Describe(next));
      const bool new_epoch = next.epoch > slot.assignment.epoch;
      const bool split_starts = next.reshard_pending && !slot.assignment.reshard_pending;
      const bool promoted = slot.assignment.role == ShardRole::kReplica &&
                            next.role == ShardRole::kPrimary && slot.store != nullptr;
      const bool demoted = slot.assignment.role == ShardRole::kPrimary &&
                           next.role == ShardRole::kReplica && slot.store != nullptr;
      slot.assignment = next;  // Epoch, primary or role changed: the open store stays, unless
      if (demoted) {
        // A primary becoming a replica (calls in flight may still write): closed, then
        // reopened as a replica. It may hold writes its new primary never had; its first pull
        // compares its log with the primary's epoch history, and a copy past the new epoch's
        // start is rebuilt from a checkpoint, never merged (the follower counts what it drops).
        log_->warn("{} was primary here: reopening it as a replica of {}", Describe(next),
                   next.primary_node);
        slot.log = std::make_shared<replication::ShardLog>();
        ReopenLocked(a.shard_id, slot);
        continue;
      }
      if (promoted) {
        // a replica becomes primary: reopened, so that the engine's in-memory state (outbox
        // positions, caches), which the log's writes bypassed, is rebuilt from its data.
        ReopenLocked(a.shard_id, slot);
        continue;
      }
      if (slot.store && slot.store->sealed() && !next.sealed_for_reshard) {
        // A split abandoned (or overtaken by a failover): the shard takes writes again.
        slot.store->Unseal();
        log_->warn("{}: split abandoned, writes resume", Describe(next));
      }
      if (split_starts && slot.store &&
          (next.role == ShardRole::kReplica || next.sealed_for_reshard)) {
        // Off this thread (the map follower's; a flush takes a while): the epoch's record
        // (below) is written first, so the children inherit it.
        Task start{std::chrono::steady_clock::now(), a.shard_id, 0, nullptr, {}};
        start.split_start = slot.store;
        start.seal = next.role == ShardRole::kPrimary;
        Schedule(std::move(start));
      }
      if (new_epoch && next.role == ShardRole::kPrimary && slot.store) {
        // Still primary here, at a newer epoch (a re-granted lease, a switchover's pause): the
        // epoch's record is written once the table at the new epoch is published (below).
        new_epochs.push_back(a.shard_id);
        continue;
      }
      if (slot.state == ShardState::kRefused) {  // Its assignment changed: try again.
        slot.state = ShardState::kOpening;
        slot.generation = next_generation_++;
        Schedule(Task{std::chrono::steady_clock::now(), a.shard_id, slot.generation, nullptr, {}});
      }
      continue;
    }
    Slot slot;
    slot.assignment = a;
    slot.load = std::make_shared<LoadCounters>(a.range);
    slot.generation = next_generation_++;
    log_->info("opening {}", Describe(a));
    Task open{std::chrono::steady_clock::now(), a.shard_id, slot.generation, nullptr, {}};
    const uint64_t left_parent = a.split_from != 0 ? a.split_from : a.merge_left;
    if (auto parent = split_parents.find(left_parent); parent != split_parents.end()) {
      open.split_source = parent->second;
    }
    if (auto parent = split_parents.find(a.merge_right); parent != split_parents.end()) {
      open.merge_right_source = parent->second;
    }
    Schedule(std::move(open));
    slots_.emplace(a.shard_id, std::move(slot));
  }
  PublishLocked();
  // The epoch record of a primary that stays primary goes after the new table: a write of the
  // old epoch that commits after the record is then never acknowledged (its epoch is no longer
  // the table's), so every acknowledged write of an epoch lies before the next one's start.
  bool reopened = false;
  for (uint64_t shard_id : new_epochs) {
    Slot& slot = slots_.at(shard_id);
    auto begun = slot.store->BeginEpoch(slot.assignment.epoch);
    if (begun.ok()) {
      log_->info("shard {} epoch {} begins at lsn {}", shard_id, begun->epoch, begun->start_lsn);
      continue;
    }
    lifecycle_errors_.fetch_add(1, std::memory_order_relaxed);
    log_->error("recording epoch {} of shard {} failed ({}): reopening it", slot.assignment.epoch,
                shard_id, begun.status().ToString());
    ReopenLocked(shard_id, slot);
    reopened = true;
  }
  if (reopened) PublishLocked();
  return Status::Ok();
}

void ShardHost::ReopenLocked(uint64_t shard_id, Slot& slot) {
  ++closing_;
  ++closing_ids_[shard_id];
  Schedule(
      Task{std::chrono::steady_clock::now(), shard_id, 0, std::move(slot.store), slot.assignment});
  slot.state = ShardState::kOpening;
  slot.generation = next_generation_++;
  Schedule(Task{std::chrono::steady_clock::now(), shard_id, slot.generation, nullptr, {}});
}

std::vector<ShardStatus> ShardHost::Statuses() const {
  std::lock_guard lock(mu_);
  std::vector<ShardStatus> out;
  for (const auto& [id, slot] : slots_) {
    out.push_back(ShardStatus{slot.assignment, slot.state, slot.attempts, slot.last_error});
  }
  return out;
}

void ShardHost::Stop(std::chrono::milliseconds grace) {
  {
    std::unique_lock lock(mu_);
    if (!stopping_) {
      stopping_ = true;
      stop_deadline_ = std::chrono::steady_clock::now() + grace;
      // Queued opens and their retries will not run: drop them now.
      for (auto it = tasks_.begin(); it != tasks_.end();) {
        it = it->second.closing ? std::next(it) : tasks_.erase(it);
      }
      for (auto& [id, slot] : slots_) {
        if (!slot.store) continue;
        ++closing_;
        ++closing_ids_[id];
        Schedule(
            Task{std::chrono::steady_clock::now(), id, 0, std::move(slot.store), slot.assignment});
      }
      slots_.clear();
      PublishLocked();
      cv_.notify_all();
    }
  }
  // The follower holds the replica stores that are closing: let go of them (and of any
  // bootstrap in progress) first.
  follower_->Stop();
  for (auto& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
}

void ShardHost::Work() {
  std::unique_lock lock(mu_);
  for (;;) {
    const TimePoint now = std::chrono::steady_clock::now();
    if (now >= next_load_tick_) {
      next_load_tick_ = now + kLoadTick;
      const int64_t now_ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
      for (auto& [id, slot] : slots_) slot.load->Tick(now_ms);
    }
    if (tasks_.empty()) {
      if (stopping_) return;
      cv_.wait_until(lock, next_load_tick_);
      continue;
    }
    auto first = tasks_.begin();
    // A copy: another thread may take (and free) this task while we wait.
    const TimePoint due = first->first;
    if (due > now) {
      cv_.wait_until(lock, std::min(due, next_load_tick_));
      continue;
    }
    Task task = std::move(first->second);
    tasks_.erase(first);
    lock.unlock();
    if (task.split_start) {
      StartSplit(task);
    } else if (task.closing) {
      Close(std::move(task));
    } else {
      Open(task);
    }
    lock.lock();
  }
}

void ShardHost::Schedule(Task task) {
  tasks_.emplace(task.not_before, std::move(task));
  cv_.notify_one();
}

std::string ShardHost::DirectoryOf(uint64_t shard_id) const {
  return (fs::path(core_.options.data_dir) / ("shard-" + std::to_string(shard_id))).string();
}

ShardOptions ShardHost::OptionsFor(const ShardAssignment& assignment,
                                   const std::shared_ptr<replication::ShardLog>& log) const {
  ShardOptions options = core_.options.shard_options;
  options.on_commit = [log](uint64_t lsn) { log->Publish(lsn); };
  // A replica's database comes from its primary's checkpoint, never from an empty create (its
  // own first write would take LSNs that belong to the primary's log).
  if (assignment.role == ShardRole::kReplica) options.create_if_missing = false;
  options.shard_id = assignment.shard_id;
  options.token_range = assignment.range;
  if (!options.resources) options.resources = resources_;
  // Equal shares of the node's budgets for the shards assigned now.
  const NodeBudgets& budgets = core_.options.budgets;
  const uint64_t shards = std::max<uint64_t>(1, slots_.size());
  options.max_open_files =
      budgets.max_open_files < 0
          ? -1
          : std::max<int>(64, static_cast<int>(budgets.max_open_files / shards));
  options.wal_size_limit_mb = std::max<uint64_t>(64, (budgets.wal_archive_bytes / shards) >> 20);
  return options;
}

void ShardHost::Open(const Task& task) {
  ShardAssignment assignment;
  std::shared_ptr<replication::ShardLog> shard_log;
  ShardOptions options;
  uint32_t attempt = 0;
  bool may_cut = true;
  {
    std::lock_guard lock(mu_);
    auto it = slots_.find(task.shard_id);
    if (stopping_ || it == slots_.end() || it->second.generation != task.generation) return;
    if (closing_ids_.count(task.shard_id) > 0 || opening_ids_.count(task.shard_id) > 0) {
      // An earlier copy of this shard is still closing (its directory may be moved aside), or
      // an open of an earlier assignment is still running (a bootstrap into the same
      // directory): wait for it, without counting an attempt.
      Task later = task;
      later.not_before = std::chrono::steady_clock::now() + kClosePoll;
      Schedule(std::move(later));
      return;
    }
    assignment = it->second.assignment;
    shard_log = it->second.log;
    options = OptionsFor(assignment, shard_log);
    attempt = ++it->second.attempts;
    may_cut = !it->second.bootstrap_only;
    opening_ids_.insert(task.shard_id);
  }
  // One open per shard id at a time; released (under mu_) whichever way this returns. REQUIRES:
  // mu_ not held when the function returns.
  struct OpeningGuard {
    ShardHost* host;
    uint64_t id;
    ~OpeningGuard() {
      std::lock_guard lock(host->mu_);
      host->opening_ids_.erase(id);
    }
  } opening_guard{this, task.shard_id};
  const std::string dir = DirectoryOf(assignment.shard_id);

  // Refuses (not retried until the map changes) or retries after a backoff.
  auto give_up = [&](ShardState state, const Status& why) {
    std::lock_guard lock(mu_);
    auto it = slots_.find(task.shard_id);
    if (it == slots_.end() || it->second.generation != task.generation) return;
    Slot& slot = it->second;
    slot.last_error = why.ToString();
    if (state == ShardState::kRefused) {
      refusals_.fetch_add(1, std::memory_order_relaxed);
      log_->error("refusing {} from {}: {}", Describe(assignment), dir, slot.last_error);
      slot.state = ShardState::kRefused;
    } else {
      open_failures_.fetch_add(1, std::memory_order_relaxed);
      auto wait = std::min<std::chrono::milliseconds>(
          kMaxRetry, kFirstRetry * (1u << std::min<uint32_t>(attempt - 1, 10)));
      // A replica whose primary is not serving yet (a cluster starting, a map still spreading)
      // is expected to wait a little: only a wait that goes on is worth a warning.
      const ErrorCode code = why.code();
      const bool primary_not_ready =
          assignment.role == ShardRole::kReplica &&
          (code == ErrorCode::kUnavailable || code == ErrorCode::kNotOwner ||
           code == ErrorCode::kNotPrimary || code == ErrorCode::kStaleEpoch);
      log_->log(primary_not_ready && attempt <= 5 ? spdlog::level::info : spdlog::level::warn,
                "opening {} failed (attempt {}), retrying in {} ms: {}", Describe(assignment),
                attempt, wait.count(), slot.last_error);
      Task retry{
          std::chrono::steady_clock::now() + wait, task.shard_id, task.generation, nullptr, {}};
      retry.split_source = task.split_source;
      retry.merge_right_source = task.merge_right_source;
      Schedule(std::move(retry));
    }
    PublishLocked();
  };

  std::error_code ec;
  if ((assignment.split_from != 0 || assignment.merge_left != 0) && may_cut &&
      !fs::exists(fs::path(dir) / "CURRENT", ec)) {
    // A split child or merged shard without a copy yet: made from the parents' copies here, if
    // they are at the right LSNs; else a replica bootstraps (below) and a primary waits.
    Status cut = assignment.split_from != 0
                     ? CutSplitChild(assignment, task.split_source, dir)
                     : MakeMergedCopy(assignment, task.split_source, task.merge_right_source, dir);
    if (!cut.ok()) {
      split_cut_failures_.fetch_add(1, std::memory_order_relaxed);
      if (assignment.role == ShardRole::kPrimary) return give_up(ShardState::kOpening, cut);
      log_->warn("{}: no local copy to cut ({}): bootstrapping it from {}", Describe(assignment),
                 cut.ToString(), assignment.primary_node);
    }
  }
  auto identity = ReadShardIdentity(dir);
  if (!identity.ok()) return give_up(ShardState::kRefused, identity.status());
  if (*identity) {
    if (Status fits = CheckShardIdentity(**identity, assignment); !fits.ok()) {
      return give_up(ShardState::kRefused, fits);
    }
  } else if (fs::exists(fs::path(dir) / "CURRENT", ec)) {
    log_->warn("{} holds a database but no {}: adopting it as {} (written before identity files)",
               dir, kShardIdentityFile, Describe(assignment));
  }
  const bool has_database = fs::exists(fs::path(dir) / "CURRENT", ec);
  if (has_database) {
    // Opened below as it is.
  } else if (assignment.role == ShardRole::kReplica) {
    // A new replica copy: a checkpoint of the primary, copied and checked, then opened.
    bool current = false;
    {
      std::lock_guard lock(mu_);
      auto it = slots_.find(task.shard_id);
      current = it != slots_.end() && it->second.generation == task.generation;
      if (current) {
        it->second.state = ShardState::kBootstrapping;
        PublishLocked();
      }
    }
    if (!current) return;
    fs::create_directories(core_.options.data_dir, ec);
    fs::remove_all(dir, ec);  // An identity file alone, or an empty directory, is no copy.
    replication::FollowTarget target{assignment.shard_id, assignment.epoch, assignment.primary_node,
                                     assignment.primary_address};
    auto copied = follower_->Bootstrap(target, dir, *shard_log);
    if (!copied.ok()) return give_up(ShardState::kOpening, copied.status());
    bool still_current = false;
    {
      std::lock_guard lock(mu_);
      auto it = slots_.find(task.shard_id);
      still_current = !stopping_ && it != slots_.end() && it->second.generation == task.generation;
    }
    // Reassigned meanwhile: the next open finds this copy in place.
    if (!still_current) return;
  } else if (!*identity) {
    // A new copy. Say so loudly if an earlier copy of this shard was moved aside here: a copy
    // that had data is not served empty without a trace in the log.
    std::string earlier;
    const std::string prefix = "shard-" + std::to_string(assignment.shard_id) + ".";
    for (const auto& entry :
         fs::directory_iterator(fs::path(core_.options.data_dir) / "dropped", ec)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind(prefix, 0) == 0) earlier = entry.path().string();
    }
    if (!earlier.empty()) {
      log_->warn("creating an empty {} in {}; an earlier copy of it is in {}", Describe(assignment),
                 dir, earlier);
    } else {
      log_->info("creating {} in {}", Describe(assignment), dir);
    }
  }

  fs::create_directories(core_.options.data_dir, ec);
  auto opened = ShardStore::Open(options, dir);
  if (!opened.ok()) {
    // invalid-argument: the database itself says it is another shard or an unknown format.
    const bool permanent = opened.status().code() == ErrorCode::kInvalidArgument;
    return give_up(permanent ? ShardState::kRefused : ShardState::kOpening, opened.status());
  }
  std::shared_ptr<ShardStore> store = std::move(opened).value();
  if (assignment.role == ShardRole::kPrimary) {
    // Before the first write at this epoch: its record, and so its start LSN, in the data
    // (the log replicas check their copies against; docs/replication.md, Rejoin).
    auto begun = store->BeginEpoch(assignment.epoch);
    if (!begun.ok()) return give_up(ShardState::kOpening, begun.status());
    log_->info("shard {} epoch {} began at lsn {} (now {})", assignment.shard_id, begun->epoch,
               begun->start_lsn, store->LatestSequence());
    if (assignment.sealed_for_reshard) {
      // A split in progress (this node restarted, or its copy was promoted): sealed as it opens.
      auto sealed = store->Seal();
      if (!sealed.ok()) return give_up(ShardState::kOpening, sealed.status());
      log_->warn("{}: sealed for a split at lsn {}", Describe(assignment), *sealed);
    }
  }

  ShardIdentity written{1,
                        assignment.shard_id,
                        assignment.range,
                        assignment.placement_version,
                        assignment.epoch,
                        assignment.role,
                        store->LatestSequence(),
                        /*clean_close=*/false,
                        core_.options.node_id};
  if (Status saved = WriteShardIdentity(dir, written); !saved.ok()) {
    lifecycle_errors_.fetch_add(1, std::memory_order_relaxed);
    log_->error("writing the identity of {} failed (serving it anyway): {}", dir, saved.ToString());
  }

  {
    std::lock_guard lock(mu_);
    auto it = slots_.find(task.shard_id);
    if (stopping_ || it == slots_.end() || it->second.generation != task.generation) {
      // Dropped while opening: close it again (nobody else has seen it).
      ++closing_;
      ++closing_ids_[task.shard_id];
      Schedule(
          Task{std::chrono::steady_clock::now(), task.shard_id, 0, std::move(store), assignment});
      return;
    }
    Slot& slot = it->second;
    // The assignment may have changed while the shard opened (same copy, new epoch or a split
    // that started): a primary records the newer epoch and seals as AssignLocked would have.
    if (slot.assignment.role == ShardRole::kPrimary && assignment.role == ShardRole::kPrimary) {
      if (slot.assignment.epoch > assignment.epoch) {
        auto begun = store->BeginEpoch(slot.assignment.epoch);
        if (!begun.ok()) {
          lifecycle_errors_.fetch_add(1, std::memory_order_relaxed);
          log_->error("recording epoch {} of shard {} failed ({}): reopening it",
                      slot.assignment.epoch, task.shard_id, begun.status().ToString());
          ++closing_;
          ++closing_ids_[task.shard_id];
          Schedule(Task{std::chrono::steady_clock::now(), task.shard_id, 0, std::move(store),
                        assignment});
          slot.generation = next_generation_++;
          Schedule(
              Task{std::chrono::steady_clock::now(), task.shard_id, slot.generation, nullptr, {}});
          return;
        }
      }
      if (slot.assignment.sealed_for_reshard && !store->sealed()) {
        auto sealed = store->Seal();
        if (sealed.ok()) {
          log_->warn("{}: sealed for a split at lsn {}", Describe(slot.assignment), *sealed);
        }
      } else if (!slot.assignment.sealed_for_reshard && store->sealed()) {
        store->Unseal();  // Sealed as it opened for a split abandoned meanwhile.
        log_->warn("{}: split or merge abandoned while it opened: writes resume",
                   Describe(slot.assignment));
      }
    }
    slot.log->Publish(store->LatestSequence());
    slot.store = std::move(store);
    slot.state = ShardState::kServing;
    slot.last_error.clear();
    opens_.fetch_add(1, std::memory_order_relaxed);
    log_->info("serving {} from {} at lsn {} (attempt {})", Describe(assignment), dir, written.lsn,
               attempt);
    PublishLocked();
  }
  SyncFollow(task.shard_id);  // A replica starts pulling its primary's log.
}

void ShardHost::SyncFollow(uint64_t shard_id) {
  std::lock_guard follow(follow_mu_);
  std::shared_ptr<ShardStore> store;
  std::shared_ptr<replication::ShardLog> shard_log;
  replication::FollowTarget target;
  {
    std::lock_guard lock(mu_);
    auto it = slots_.find(shard_id);
    if (!stopping_ && it != slots_.end() && it->second.state == ShardState::kServing &&
        it->second.assignment.role == ShardRole::kReplica) {
      const ShardAssignment& a = it->second.assignment;
      store = it->second.store;
      shard_log = it->second.log;
      target = {a.shard_id, a.epoch, a.primary_node, a.primary_address};
    }
  }
  if (store) {
    follower_->Follow(target, std::move(store), std::move(shard_log));
  } else {
    follower_->Unfollow(shard_id);
  }
}

void ShardHost::OnRebootstrap(uint64_t shard_id, const Status& why) {
  std::lock_guard lock(mu_);
  auto it = slots_.find(shard_id);
  if (stopping_ || it == slots_.end() || it->second.state != ShardState::kServing ||
      it->second.assignment.role != ShardRole::kReplica) {
    return;
  }
  Slot& slot = it->second;
  slot.bootstrap_only = true;
  rebootstraps_.fetch_add(1, std::memory_order_relaxed);
  log_->warn("replica {} cannot continue from its log ({}): moving it aside to bootstrap again",
             Describe(slot.assignment), why.ToString());
  ++closing_;
  ++closing_ids_[shard_id];
  Task close{std::chrono::steady_clock::now(), shard_id, 0, std::move(slot.store), slot.assignment};
  close.discard = true;
  Schedule(std::move(close));
  slot.state = ShardState::kOpening;
  slot.last_error = why.ToString();
  slot.log = std::make_shared<replication::ShardLog>();  // The new copy starts from nothing.
  slot.generation = next_generation_++;
  Schedule(Task{std::chrono::steady_clock::now(), shard_id, slot.generation, nullptr, {}});
  PublishLocked();
}

void ShardHost::Close(Task task) {
  const std::string dir = DirectoryOf(task.shard_id);
  if (!task.unfollowed) {
    SyncFollow(task.shard_id);  // The follower lets go of a copy that is no longer serving.
    task.unfollowed = true;
  }
  if (task.closing.use_count() > 1) {
    // Calls in flight or a fan-out pass still hold it. Wait for them (past the stop deadline,
    // leave it to the last holder).
    std::lock_guard lock(mu_);
    if (!stopping_ || std::chrono::steady_clock::now() < stop_deadline_) {
      task.not_before = std::chrono::steady_clock::now() + kClosePoll;
      Schedule(std::move(task));
      return;
    }
    log_->warn("stopping with shard {} still in use: its last user closes it", task.shard_id);
    task.closing.reset();
    --closing_;
    if (--closing_ids_[task.shard_id] == 0) closing_ids_.erase(task.shard_id);
    cv_.notify_all();
    return;
  }
  // The only holder: nothing writes any more, so this is the final log position.
  ShardIdentity closed{1,
                       task.shard_id,
                       task.closing_assignment.range,
                       task.closing_assignment.placement_version,
                       task.closing_assignment.epoch,
                       task.closing_assignment.role,
                       task.closing->LatestSequence(),
                       /*clean_close=*/true,
                       core_.options.node_id};
  // Written before the database closes: no new holder can open it until then (RocksDB LOCK).
  if (Status saved = WriteShardIdentity(dir, closed); !saved.ok()) {
    lifecycle_errors_.fetch_add(1, std::memory_order_relaxed);
    log_->error("writing the identity of {} at close failed: {}", dir, saved.ToString());
  }
  task.closing.reset();  // Closes the database.
  closes_.fetch_add(1, std::memory_order_relaxed);
  log_->info("closed shard {} at lsn {}", task.shard_id, closed.lsn);

  std::lock_guard lock(mu_);
  --closing_;
  if (--closing_ids_[task.shard_id] == 0) closing_ids_.erase(task.shard_id);
  // The same copy assigned again (same range and placement) reopens this directory; anything
  // else (dropped, or another placement of the shard) leaves it to be moved aside.
  auto again = slots_.find(task.shard_id);
  const bool same_copy =
      again != slots_.end() && again->second.assignment.range == task.closing_assignment.range &&
      again->second.assignment.placement_version == task.closing_assignment.placement_version;
  if (task.discard || (!same_copy && !stopping_ && !core_.options.keep_dropped_directories)) {
    auto moved = MoveShardDirectoryAside(core_.options.data_dir, dir, "dropped",
                                         task.closing_assignment.placement_version, UnixMs());
    if (moved.ok()) {
      moved_aside_.fetch_add(1, std::memory_order_relaxed);
      log_->info("moved the directory of dropped shard {} to {}", task.shard_id, *moved);
    } else {
      lifecycle_errors_.fetch_add(1, std::memory_order_relaxed);
      log_->error("moving the directory of dropped shard {} aside failed: {}", task.shard_id,
                  moved.status().ToString());
    }
  }
  cv_.notify_all();
}

void ShardHost::PublishLocked() {
  auto table = std::make_shared<ShardTable>();
  table->map_version = map_version_;
  table->shard_map = shard_map_;
  for (const auto& [id, slot] : slots_) {
    if (slot.state == ShardState::kServing) {
      table->shards.push_back(HostedShard{slot.assignment, slot.store, slot.log, slot.load});
    } else {
      table->pending.push_back(
          PendingShard{slot.assignment, slot.state, slot.last_error, slot.log});
    }
  }
  std::sort(table->shards.begin(), table->shards.end(), [](const auto& a, const auto& b) {
    return a.assignment.range.first < b.assignment.range.first;
  });
  core_.Publish(std::move(table));
}

void ShardHost::RenderMetrics(std::string* out) const {
  size_t by_state[4] = {0, 0, 0, 0};
  std::vector<std::pair<uint64_t, LoadSnapshot>> loads;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, slot] : slots_) {
      ++by_state[static_cast<size_t>(slot.state)];
      if (slot.state == ShardState::kServing) loads.emplace_back(id, slot.load->Snapshot());
    }
  }
  *out +=
      "# HELP scrollback_shard_load_ops_per_second Calls served by each hosted copy (decayed "
      "rate, half-life 60 s).\n# TYPE scrollback_shard_load_ops_per_second gauge\n";
  for (const auto& [id, load] : loads) {
    const std::string shard = "shard=\"" + std::to_string(id) + "\"";
    *out += "scrollback_shard_load_ops_per_second{" + shard + ",kind=\"read\"} " +
            std::to_string(load.read_ops_per_s) + "\n";
    *out += "scrollback_shard_load_ops_per_second{" + shard + ",kind=\"write\"} " +
            std::to_string(load.write_ops_per_s) + "\n";
  }
  *out +=
      "# HELP scrollback_shard_load_bytes_per_second Bytes of the calls served by each hosted "
      "copy, requests and replies (decayed rate, half-life 60 s).\n"
      "# TYPE scrollback_shard_load_bytes_per_second gauge\n";
  for (const auto& [id, load] : loads) {
    *out += "scrollback_shard_load_bytes_per_second{shard=\"" + std::to_string(id) + "\"} " +
            std::to_string(load.bytes_per_s) + "\n";
  }
  *out +=
      "# HELP scrollback_shards Shards assigned to this node, by lifecycle state.\n"
      "# TYPE scrollback_shards gauge\n";
  for (ShardState state : {ShardState::kOpening, ShardState::kServing, ShardState::kRefused,
                           ShardState::kBootstrapping}) {
    *out += "scrollback_shards{state=\"" + std::string(ShardStateName(state)) + "\"} " +
            std::to_string(by_state[static_cast<size_t>(state)]) + "\n";
  }
  auto counter = [out](const char* name, const char* help, uint64_t value) {
    *out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n" + name +
            " " + std::to_string(value) + "\n";
  };
  counter("scrollback_shard_opens_total", "Shards opened and served.", opens_.load());
  counter("scrollback_shard_open_failures_total",
          "Shard opens that failed and were retried (logged).", open_failures_.load());
  counter("scrollback_shard_refusals_total",
          "Shard directories refused: another placement, shard or range (logged).",
          refusals_.load());
  counter("scrollback_shard_closes_total", "Shards closed.", closes_.load());
  counter("scrollback_shard_directories_moved_aside_total",
          "Directories of dropped shards moved to data_dir/dropped.", moved_aside_.load());
  counter("scrollback_shard_lifecycle_errors_total",
          "Identity writes or directory moves that failed (logged).", lifecycle_errors_.load());
  counter("scrollback_shard_rebootstraps_total",
          "Replica copies moved aside to bootstrap again (log gap or divergence; logged).",
          rebootstraps_.load());
  counter("scrollback_split_cuts_total",
          "Split children cut locally from their parent's copy (no data over the network).",
          split_cuts_.load());
  counter("scrollback_split_cut_failures_total",
          "Split children that could not be cut here (a replica bootstraps instead; logged).",
          split_cut_failures_.load());
  follower_->RenderMetrics(out);
}

}  // namespace scrollback
