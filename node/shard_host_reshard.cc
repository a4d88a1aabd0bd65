// ShardHost's part in splits and merges (docs/resharding.md): flushing and sealing a copy as a
// split or merge starts, and making a split child's or merged shard's first copy from this
// node's copies of its parents. Private to node/; the lifecycle is in shard_host.cc.
#include <spdlog/logger.h>

#include <filesystem>
#include <functional>

#include "shard_directory.h"
#include "shard_host.h"

namespace scrollback {
namespace {

namespace fs = std::filesystem;

}  // namespace

void ShardHost::StartSplit(const Task& task) {
  ShardStore& store = *task.split_start;
  if (store.sealed()) return;
  const auto started = std::chrono::steady_clock::now();
  if (Status flushed = store.Flush(); !flushed.ok()) {
    lifecycle_errors_.fetch_add(1, std::memory_order_relaxed);
    log_->error("flushing shard {} as its split starts failed{}: {}", task.shard_id,
                task.seal ? " (sealing anyway)" : "", flushed.ToString());
  }
  if (!task.seal) return;  // A replica: it applies its primary's log up to the seal.
  // Sealed only while the assignment still asks for it: checked before, and again after (the
  // seal waits for writes in flight, outside mu_; an abandoned split meanwhile unseals here,
  // since AssignLocked may have looked before the seal was complete).
  auto still_wanted = [&] {
    auto it = slots_.find(task.shard_id);
    return it != slots_.end() && it->second.store == task.split_start &&
           it->second.assignment.sealed_for_reshard;
  };
  {
    std::lock_guard lock(mu_);
    if (!still_wanted()) return;
  }
  auto sealed = store.Seal();
  std::lock_guard lock(mu_);
  if (!sealed.ok()) {
    lifecycle_errors_.fetch_add(1, std::memory_order_relaxed);
    log_->error("sealing shard {} failed: {}", task.shard_id, sealed.status().ToString());
    return;
  }
  if (!still_wanted()) {
    store.Unseal();
    log_->warn("shard {}: its split or merge was abandoned while it sealed: writes resume",
               task.shard_id);
    return;
  }
  log_->warn("{}: sealed for a split or merge at lsn {} (flushed first: {} ms)",
             Describe(slots_.at(task.shard_id).assignment), *sealed,
             std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::steady_clock::now() - started)
                 .count());
}

Result<std::shared_ptr<ShardStore>> ShardHost::ParentCopy(
    uint64_t parent_id, const std::shared_ptr<ShardStore>& source) {
  if (source) return source;
  // After a restart: the parent's directory, if this node still has it.
  const std::string parent_dir = DirectoryOf(parent_id);
  auto identity = ReadShardIdentity(parent_dir);
  if (!identity.ok()) return identity.status();
  if (!*identity) {
    return Status::FailedPrecondition("no copy of parent shard " + std::to_string(parent_id) +
                                      " on this node");
  }
  ShardOptions options = core_.options.shard_options;
  options.shard_id = parent_id;
  options.token_range = (*identity)->range;
  options.create_if_missing = false;
  if (!options.resources) options.resources = resources_;
  auto opened = ShardStore::Open(options, parent_dir);
  if (!opened.ok()) return opened.status();
  return std::shared_ptr<ShardStore>(std::move(opened).value());
}

Status ShardHost::MakeMergedCopy(const ShardAssignment& merged,
                                 const std::shared_ptr<ShardStore>& left_source,
                                 const std::shared_ptr<ShardStore>& right_source,
                                 const std::string& dir) {
  auto left = ParentCopy(merged.merge_left, left_source);
  if (!left.ok()) return left.status();
  auto right = ParentCopy(merged.merge_right, right_source);
  if (!right.ok()) return right.status();
  const auto started = std::chrono::steady_clock::now();
  auto lsn = PlaceFirstCopy(merged, dir, [&](const std::string& aside) {
    return (*left)->CreateMergedCopy(aside, merged.shard_id, merged.merge_left_lsn, **right,
                                     merged.merge_right_lsn);
  });
  if (!lsn.ok()) return lsn.status();
  log_->warn("{}: merged from shards {} (lsn {}) and {} (lsn {}) in {} ms (now at lsn {})",
             Describe(merged), merged.merge_left, merged.merge_left_lsn, merged.merge_right,
             merged.merge_right_lsn,
             std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::steady_clock::now() - started)
                 .count(),
             *lsn);
  return Status::Ok();
}

Result<uint64_t> ShardHost::PlaceFirstCopy(
    const ShardAssignment& shard, const std::string& dir,
    const std::function<Result<uint64_t>(const std::string& aside)>& make) {
  const std::string aside = dir + ".cutting";
  std::error_code ec;
  fs::remove_all(aside, ec);  // Left by a crash during an earlier attempt.
  auto lsn = make(aside);
  if (!lsn.ok()) return lsn.status();
  fs::remove_all(dir, ec);  // An identity file alone, or an empty directory, is no copy.
  SB_RETURN_IF_ERROR(RenameDurably(aside, dir));
  ShardIdentity identity{
      1,          shard.shard_id, shard.range,          shard.placement_version, shard.epoch,
      shard.role, *lsn,           /*clean_close=*/true, core_.options.node_id};
  SB_RETURN_IF_ERROR(WriteShardIdentity(dir, identity));
  split_cuts_.fetch_add(1, std::memory_order_relaxed);
  return lsn;
}

Status ShardHost::CutSplitChild(const ShardAssignment& child,
                                const std::shared_ptr<ShardStore>& source, const std::string& dir) {
  auto parent_copy = ParentCopy(child.split_from, source);
  if (!parent_copy.ok()) return parent_copy.status();
  std::shared_ptr<ShardStore> parent = std::move(parent_copy).value();
  const auto started = std::chrono::steady_clock::now();
  auto lsn = PlaceFirstCopy(child, dir, [&](const std::string& aside) {
    return parent->CreateSplitCopy(aside, child.shard_id, child.range, child.split_lsn);
  });
  if (!lsn.ok()) return lsn.status();
  log_->warn("{}: cut from shard {} at lsn {} in {} ms (now at lsn {})", Describe(child),
             child.split_from, child.split_lsn,
             std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::steady_clock::now() - started)
                 .count(),
             *lsn);
  return Status::Ok();
}

}  // namespace scrollback
