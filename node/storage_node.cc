// StorageNode: the shard host and the Cap'n Proto service over it (served by RpcServer).
#include "scrollback/node/storage_node.h"

#include <spdlog/logger.h>

#include <filesystem>

#include "chat_service.h"
#include "node_core.h"
#include "scrollback/rpc/rpc_server.h"
#include "shard_host.h"

namespace scrollback {

const char* ShardRoleName(ShardRole role) {
  switch (role) {
    case ShardRole::kPrimary:
      return "primary";
    case ShardRole::kReplica:
      return "replica";
  }
  return "unknown";
}

const char* ShardStateName(ShardState state) {
  switch (state) {
    case ShardState::kOpening:
      return "opening";
    case ShardState::kServing:
      return "serving";
    case ShardState::kRefused:
      return "refused";
    case ShardState::kBootstrapping:
      return "bootstrapping";
  }
  return "unknown";
}

namespace {

class StorageNodeImpl final : public StorageNode {
 public:
  explicit StorageNodeImpl(std::shared_ptr<NodeCore> core)
      : core_(std::move(core)),
        resources_(StorageResources::Create({core_->options.budgets.block_cache_bytes,
                                             core_->options.budgets.write_buffer_bytes,
                                             core_->options.budgets.history_cache_bytes})),
        host_(*core_, resources_) {}
  ~StorageNodeImpl() override { Stop(std::chrono::milliseconds(0)); }

  // REQUIRES: called once, before the node is shared.
  Status Listen() {
    RpcServerOptions rpc;
    rpc.listen_address = core_->options.listen_address;
    rpc.event_loops = core_->options.event_loops;
    rpc.max_message_bytes = core_->options.max_message_bytes;
    rpc.flow_limit_bytes = core_->options.flow_limit_bytes;
    rpc.receive_budget_bytes = core_->options.receive_budget_bytes;
    rpc.partial_frame_timeout = core_->options.partial_frame_timeout;
    rpc.idle_timeout = core_->options.idle_timeout;
    rpc.max_connections = core_->options.max_connections;
    rpc.logger = core_->logger;
    auto core = core_;
    auto server =
        RpcServer::Start(rpc, [core](kj::AsyncIoProvider& io) -> capnp::Capability::Client {
          return NewChatService(core, io.getTimer());
        });
    if (!server.ok()) return server.status();
    server_ = std::move(server).value();
    core_->logger->info(
        "node {} serving ChatStore on {} ({} event loops, {} engine threads), "
        "data in {}",
        core_->options.node_id, server_->address(), core_->options.event_loops,
        core_->options.engine_threads, core_->options.data_dir);
    return Status::Ok();
  }

  std::string address() const override { return server_->address(); }

  std::string RenderMetrics() override {
    std::string out;
    core_->metrics.Render(&out);
    host_.RenderMetrics(&out);
    if (core_->options.primary_lease) core_->options.primary_lease->RenderMetrics(&out);
    server_->RenderMetrics(&out);
    auto table = core_->Table();
    out +=
        "# HELP scrollback_map_version Shard-map version this node serves.\n"
        "# TYPE scrollback_map_version gauge\n"
        "scrollback_map_version " +
        std::to_string(table->map_version) + "\n";
    out +=
        "# HELP scrollback_shard_live_bytes Estimated live SST bytes per shard.\n"
        "# TYPE scrollback_shard_live_bytes gauge\n";
    std::string memtables =
        "# HELP scrollback_shard_memtable_bytes Memtable bytes per shard.\n"
        "# TYPE scrollback_shard_memtable_bytes gauge\n";
    std::string keys =
        "# HELP scrollback_shard_keys Estimated keys per shard.\n"
        "# TYPE scrollback_shard_keys gauge\n";
    std::string sequences =
        "# HELP scrollback_shard_lsn Latest RocksDB sequence (log position) per shard.\n"
        "# TYPE scrollback_shard_lsn gauge\n";
    std::string lag_lsn =
        "# HELP scrollback_replica_lag_lsn How far a replica is behind its primary's last known "
        "LSN.\n"
        "# TYPE scrollback_replica_lag_lsn gauge\n";
    std::string lag_ms =
        "# HELP scrollback_replica_lag_ms Milliseconds since a replica last held everything its "
        "primary had (staleness).\n"
        "# TYPE scrollback_replica_lag_ms gauge\n";
    std::string replica_applied =
        "# HELP scrollback_primary_replica_applied_lsn A primary's view of each replica: the LSN "
        "its last pull said it had applied.\n"
        "# TYPE scrollback_primary_replica_applied_lsn gauge\n";
    std::string bootstrap =
        "# HELP scrollback_replica_bootstrap_bytes A bootstrapping replica's progress: bytes "
        "copied (done) of the checkpoint's total.\n"
        "# TYPE scrollback_replica_bootstrap_bytes gauge\n";
    for (const PendingShard& pending : table->pending) {
      if (pending.state != ShardState::kBootstrapping || !pending.log) continue;
      const std::string shard = "shard=\"" + std::to_string(pending.assignment.shard_id) + "\"";
      bootstrap += "scrollback_replica_bootstrap_bytes{" + shard + ",of=\"done\"} " +
                   std::to_string(pending.log->bootstrap_done.load()) + "\n";
      bootstrap += "scrollback_replica_bootstrap_bytes{" + shard + ",of=\"total\"} " +
                   std::to_string(pending.log->bootstrap_total.load()) + "\n";
    }
    for (const HostedShard& shard : table->shards) {
      const std::string label = "{shard=\"" + std::to_string(shard.assignment.shard_id) +
                                "\",role=\"" + ShardRoleName(shard.assignment.role) + "\"} ";
      const std::string id = "shard=\"" + std::to_string(shard.assignment.shard_id) + "\"";
      if (shard.assignment.role == ShardRole::kReplica) {
        lag_lsn +=
            "scrollback_replica_lag_lsn{" + id + "} " + std::to_string(shard.log->lag_lsn()) + "\n";
        lag_ms +=
            "scrollback_replica_lag_ms{" + id + "} " + std::to_string(shard.log->lag_ms()) + "\n";
      } else {
        for (const replication::ReplicaPull& pull : shard.log->Pulls()) {
          replica_applied += "scrollback_primary_replica_applied_lsn{" + id + ",replica=\"" +
                             pull.node_id + "\"} " + std::to_string(pull.applied_lsn) + "\n";
        }
      }
      sequences +=
          "scrollback_shard_lsn" + label + std::to_string(shard.store->LatestSequence()) + "\n";
      auto stats = shard.store->GetStats();
      if (!stats.ok()) {
        core_->logger->warn("stats of shard {} failed: {}", shard.assignment.shard_id,
                            stats.status().ToString());
        continue;
      }
      out += "scrollback_shard_live_bytes" + label + std::to_string(stats->live_data_bytes) + "\n";
      memtables +=
          "scrollback_shard_memtable_bytes" + label + std::to_string(stats->memtable_bytes) + "\n";
      keys += "scrollback_shard_keys" + label + std::to_string(stats->estimated_keys) + "\n";
    }
    out += memtables + keys + sequences + lag_lsn + lag_ms + replica_applied + bootstrap;
    out +=
        "# HELP scrollback_checkpoints_open Checkpoints kept for bootstrapping replicas.\n"
        "# TYPE scrollback_checkpoints_open gauge\n"
        "scrollback_checkpoints_open " +
        std::to_string(core_->checkpoints.open_checkpoints()) +
        "\n"
        "# HELP scrollback_checkpoint_bytes_served_total Checkpoint bytes sent to replicas.\n"
        "# TYPE scrollback_checkpoint_bytes_served_total counter\n"
        "scrollback_checkpoint_bytes_served_total " +
        std::to_string(core_->checkpoints.bytes_served()) + "\n";
    out +=
        "# HELP scrollback_block_cache_bytes Shared block cache in use.\n"
        "# TYPE scrollback_block_cache_bytes gauge\n"
        "scrollback_block_cache_bytes " +
        std::to_string(resources_->BlockCacheUsage()) + "\n";
    const StorageResources::InboxCleanupStats cleanup = resources_->InboxCleanup();
    out +=
        "# HELP scrollback_inbox_tombstone_heavy_pages_total Inbox pages that stepped over "
        "--inbox-cleanup-tombstones deleted listing rows or more.\n"
        "# TYPE scrollback_inbox_tombstone_heavy_pages_total counter\n"
        "scrollback_inbox_tombstone_heavy_pages_total " +
        std::to_string(cleanup.tombstone_heavy_pages) +
        "\n"
        "# HELP scrollback_inbox_cleanup_compactions_total Compactions of a user's listing rows "
        "those pages started (at most one per shard per 5 s).\n"
        "# TYPE scrollback_inbox_cleanup_compactions_total counter\n"
        "scrollback_inbox_cleanup_compactions_total " +
        std::to_string(cleanup.compactions) +
        "\n"
        "# HELP scrollback_inbox_cleanup_failures_total Those compactions that failed or could "
        "not start (the tombstones stay until a later one).\n"
        "# TYPE scrollback_inbox_cleanup_failures_total counter\n"
        "scrollback_inbox_cleanup_failures_total " +
        std::to_string(cleanup.compaction_failures) + "\n";
    const StorageResources::HistoryCacheStats tails = resources_->HistoryCache();
    out +=
        "# HELP scrollback_history_cache_hits_total History pages served from the tail cache.\n"
        "# TYPE scrollback_history_cache_hits_total counter\n"
        "scrollback_history_cache_hits_total " +
        std::to_string(tails.hits) +
        "\n"
        "# HELP scrollback_history_cache_misses_total History pages from the newest message whose "
        "tail was not cached.\n"
        "# TYPE scrollback_history_cache_misses_total counter\n"
        "scrollback_history_cache_misses_total " +
        std::to_string(tails.misses) +
        "\n"
        "# HELP scrollback_history_cache_inserts_total Tails cached after a scan.\n"
        "# TYPE scrollback_history_cache_inserts_total counter\n"
        "scrollback_history_cache_inserts_total " +
        std::to_string(tails.inserts) +
        "\n"
        "# HELP scrollback_history_cache_evictions_total Tails dropped for space.\n"
        "# TYPE scrollback_history_cache_evictions_total counter\n"
        "scrollback_history_cache_evictions_total " +
        std::to_string(tails.evictions) +
        "\n"
        "# HELP scrollback_history_cache_bytes History tail cache in use.\n"
        "# TYPE scrollback_history_cache_bytes gauge\n"
        "scrollback_history_cache_bytes " +
        std::to_string(tails.bytes) +
        "\n"
        "# HELP scrollback_history_cache_entries Conversations with a cached tail.\n"
        "# TYPE scrollback_history_cache_entries gauge\n"
        "scrollback_history_cache_entries " +
        std::to_string(tails.entries) + "\n";
    return out;
  }
  const std::string& node_id() const override { return core_->options.node_id; }
  PrimaryLease* primary_lease() const override { return core_->options.primary_lease.get(); }
  uint64_t map_version() const override { return core_->Table()->map_version; }
  OutboxSignal& outbox_signal() override { return core_->signal; }

  std::vector<HostedShard> Shards() const override { return core_->Table()->shards; }
  std::vector<ShardStatus> ShardStatuses() const override { return host_.Statuses(); }

  Status AssignShards(uint64_t map_version, const std::vector<ShardAssignment>& shards,
                      std::string shard_map) override {
    return host_.Assign(map_version, shards, std::move(shard_map));
  }

  void Stop(std::chrono::milliseconds grace) override {
    std::lock_guard lock(stop_mu_);
    if (stopped_) return;
    stopped_ = true;
    if (server_) server_->Stop(grace);
    // Calls the loops left unanswered may still run on the pool: let them finish here, so that
    // no pool thread ends up holding the last reference to the node's core.
    if (core_->pool) core_->pool->Shutdown();
    host_.Stop(grace);  // Closes every shard (RocksDB flushes on close).
    core_->logger->info("node {} stopped", core_->options.node_id);
  }

 private:
  std::shared_ptr<NodeCore> core_;
  std::shared_ptr<StorageResources> resources_;
  ShardHost host_;
  std::unique_ptr<RpcServer> server_;
  std::mutex stop_mu_;
  bool stopped_ = false;  // GUARDED_BY(stop_mu_)
};

}  // namespace

Result<std::unique_ptr<StorageNode>> StorageNode::Start(const NodeOptions& options) {
  if (options.data_dir.empty()) return Status::InvalidArgument("data_dir", "data_dir is required");
  auto node = std::make_unique<StorageNodeImpl>(std::make_shared<NodeCore>(options));
  SB_RETURN_IF_ERROR(node->Listen());
  return std::unique_ptr<StorageNode>(std::move(node));
}

}  // namespace scrollback
