// scrollbackd: a storage node process. Hosts the shards the shard map (in etcd) gives it,
// serves ChatStore / Node over Cap'n Proto, /health and /metrics over HTTP, and runs the inbox
// fan-out worker. SIGTERM or SIGINT: stop accepting, finish calls in flight, flush, exit 0.
#include <fmt/format.h>
#include <spdlog/logger.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstring>
#include <mutex>
#include <thread>

#include "scrollback/cluster/etcd_metadata_store.h"
#include "scrollback/cluster/failover_controller.h"
#include "scrollback/cluster/node_lease.h"
#include "scrollback/cluster/shard_map_follower.h"
#include "scrollback/cluster/shard_map_store.h"
#include "scrollback/cluster/stop_signals.h"
#include "scrollback/node/fanout_worker.h"
#include "scrollback/node/http_server.h"
#include "scrollback/replication/replication.h"

namespace scrollback {
namespace {

int Fail(const Logger& log, const std::string& what, const Status& status) {
  log->critical("{}: {}", what, status.ToString());
  return 1;
}

std::vector<std::string> Split(const std::string& list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string::npos) comma = list.size();
    if (comma > start) out.push_back(list.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

int Run(int argc, char** argv) {
  CLI::App app{"scrollbackd: a Scrollback storage node."};
  NodeOptions options;
  std::string etcd = "127.0.0.1:2379";
  std::string http_address = "127.0.0.1:0";
  uint32_t bootstrap_shards = 16;
  uint32_t bootstrap_replication_factor = 3;
  std::string bootstrap_nodes;
  int lease_seconds = 5;
  std::string log_level = "info";
  app.add_option("--node-id", options.node_id, "Unique node id (as named in the shard map)")
      ->required();
  app.add_option("--data-dir", options.data_dir, "Directory of this node's shards")->required();
  app.add_option("--listen", options.listen_address, "host:port for Cap'n Proto (port 0: any)");
  app.add_option("--http", http_address, "host:port for /health and /metrics (port 0: any)");
  app.add_option("--etcd", etcd, "host:port of etcd's client URL");
  app.add_option("--event-loops", options.event_loops, "RPC event-loop threads")
      ->check(CLI::Range(1, 64));
  app.add_flag("--sync", options.shard_options.sync_writes, "fsync every write group");
  app.add_option("--bootstrap-shards", bootstrap_shards,
                 "Shards of the first map, if none exists yet")
      ->check(CLI::Range(1u, 4096u));
  app.add_option("--bootstrap-nodes", bootstrap_nodes,
                 "Comma-separated node ids of the first map, if none exists yet");
  app.add_option("--bootstrap-replication-factor", bootstrap_replication_factor,
                 "Copies of each shard in the first map (capped at the node count; default 3)")
      ->check(CLI::Range(1u, 32u));
  app.add_option("--bootstrap-mb-per-s", options.replication.bootstrap_mb_per_s,
                 "Checkpoint copy rate of a bootstrapping replica, MB/s (default 0: unlimited)")
      ->check(CLI::Range(0.0, 1e6));
  std::string default_ack = "async";
  app.add_option("--default-ack", default_ack,
                 "How writes that do not choose are acknowledged: async (the primary committed) "
                 "or semi-sync (a replica applied it too)")
      ->check(CLI::IsMember({"async", "semi-sync"}));
  uint32_t semi_sync_timeout_ms = 1000;
  app.add_option("--semi-sync-timeout-ms", semi_sync_timeout_ms,
                 "How long a semi-sync write waits for a replica before notReplicated (default "
                 "1000; at most 4000, below clients' 5 s call timeout)")
      ->check(CLI::Range(1u, 4'000u));
  uint64_t wal_archive_mb = options.budgets.wal_archive_bytes >> 20;
  app.add_option("--wal-archive-mb", wal_archive_mb,
                 "WAL kept for replica catch-up, all shards of the node together (default 4096)")
      ->check(CLI::Range(uint64_t{64}, uint64_t{1} << 30));
  uint32_t fanout_linger_ms = 20;
  app.add_option("--fanout-linger-ms", fanout_linger_ms,
                 "After delivering inbox updates, wait this long to gather the next ones, so that "
                 "updates of one inbox row collapse (default 20; 0: deliver at once)")
      ->check(CLI::Range(0u, 1'000u));
  uint64_t history_cache_mb = options.budgets.history_cache_bytes >> 20;
  app.add_option("--history-cache-mb", history_cache_mb,
                 "Newest messages of recently read conversations kept in memory, all shards of "
                 "the node together (default 64; 0: off)")
      ->check(CLI::Range(uint64_t{0}, uint64_t{1} << 20));
  app.add_option("--inbox-cleanup-tombstones", options.shard_options.inbox_cleanup_tombstones,
                 "An inbox page that steps over this many deleted listing rows starts a "
                 "compaction of that user's listing rows, which drops them (default 256; 0: "
                 "never)")
      ->check(CLI::Range(0u, 100'000'000u));
  app.add_option("--wal-ttl-seconds", options.shard_options.wal_ttl_seconds,
                 "How long archived WAL is kept for replica catch-up (default 21600)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{30} * 24 * 3600));
  app.add_option("--lease-seconds", lease_seconds, "TTL of the node's registration")
      ->check(CLI::Range(2, 600));
  bool failover = true;
  app.add_option("--failover", failover,
                 "Primary leases, fencing and automatic failover (default true; false: fixed "
                 "primaries, writes need no lease)");
  uint32_t primary_lease_ms = 1000;
  app.add_option("--primary-lease-ms", primary_lease_ms,
                 "Primary lease length: a dead primary's shards move after about this long "
                 "(default 1000)")
      ->check(CLI::Range(300u, 60'000u));
  uint32_t rebalance_interval_ms = 0;
  app.add_option("--rebalance-interval-ms", rebalance_interval_ms,
                 "When this node's controller leads, plan and file splits and primary moves from "
                 "the measured load this often (default 0: only on `scrollbackctl rebalance`)")
      ->check(CLI::Range(0u, 86'400'000u));
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off (stderr)");
  CLI11_PARSE(app, argc, argv);
  options.budgets.wal_archive_bytes = wal_archive_mb << 20;
  options.budgets.history_cache_bytes = history_cache_mb << 20;
  options.replication.default_ack =
      default_ack == "semi-sync" ? AckMode::kSemiSync : AckMode::kAsync;
  options.replication.semi_sync_timeout = std::chrono::milliseconds(semi_sync_timeout_ms);
  const Logger log = MakeProcessLogger("scrollbackd[" + options.node_id + "]", log_level);
  options.logger = log;
  if (failover) {
    options.primary_lease = std::make_shared<PrimaryLease>(options.node_id, SystemClock(), log);
  }

  StopSignals stop_signals;  // Before any thread starts.

  EtcdOptions etcd_options;
  etcd_options.endpoint = etcd;
  etcd_options.wait_for_etcd = std::chrono::seconds(30);
  etcd_options.logger = log;
  auto metadata = NewEtcdMetadataStore(etcd_options);
  if (!metadata.ok()) return Fail(log, "etcd", metadata.status());

  auto node = StorageNode::Start(options);
  if (!node.ok()) return Fail(log, "start", node.status());
  std::atomic<bool> serving{true};
  // What /metrics renders besides the node; set once they exist, cleared before they go.
  std::mutex metrics_mu;
  ShardMapFollower* follower_metrics = nullptr;      // GUARDED_BY(metrics_mu)
  FanOutWorker* worker_metrics = nullptr;            // GUARDED_BY(metrics_mu)
  LeaseKeeper* keeper_metrics = nullptr;             // GUARDED_BY(metrics_mu)
  FailoverController* controller_metrics = nullptr;  // GUARDED_BY(metrics_mu)
  std::atomic<uint64_t> lease_failures{0};
  auto http = HttpServer::Start(
      http_address,
      [&](const std::string& method, const std::string& target) -> HttpResponse {
        if (method != "GET") return {405, "text/plain", "GET only\n"};
        if (target == "/health") {
          return serving ? HttpResponse{200, "text/plain", "ok\n"}
                         : HttpResponse{503, "text/plain", "stopping\n"};
        }
        if (target == "/metrics") {
          std::string text = (*node)->RenderMetrics();
          {
            std::lock_guard lock(metrics_mu);
            if (follower_metrics) follower_metrics->RenderMetrics(&text);
            if (worker_metrics) worker_metrics->RenderMetrics(&text);
            if (keeper_metrics) keeper_metrics->RenderMetrics(&text);
            if (controller_metrics) controller_metrics->RenderMetrics(&text);
          }
          text +=
              "# HELP scrollback_lease_renewal_failures_total Registration lease renewals "
              "that failed (logged).\n# TYPE scrollback_lease_renewal_failures_total counter\n"
              "scrollback_lease_renewal_failures_total " +
              std::to_string(lease_failures.load()) + "\n";
          return {200, "text/plain; version=0.0.4", text};
        }
        return {404, "text/plain", "not found\n"};
      },
      log);
  if (!http.ok()) return Fail(log, "http", http.status());

  if (!bootstrap_nodes.empty()) {
    Status boot = BootstrapShardMap(**metadata, bootstrap_shards, Split(bootstrap_nodes),
                                    bootstrap_replication_factor);
    if (!boot.ok()) return Fail(log, "bootstrap shard map", boot);
  }
  // Registration under a lease (liveness for operators), and our address in the shard map.
  auto lease = (*metadata)->GrantLease(std::chrono::seconds(lease_seconds));
  if (!lease.ok()) return Fail(log, "lease", lease.status());
  const NodeInfo self{options.node_id, (*node)->address(), (*http)->address()};
  if (auto put = (*metadata)->Put(kNodesPrefix + options.node_id, self.address, *lease);
      !put.ok()) {
    return Fail(log, "register", put.status());
  }
  if (Status published = PublishNodeAddress(**metadata, self); !published.ok()) {
    return Fail(log, "publish address", published);
  }
  auto follower = ShardMapFollower::Start(*metadata, **node, log);
  if (!follower.ok()) return Fail(log, "follow shard map", follower.status());
  // Failover (decision 0010): the primary lease, after the address is in the map (the
  // controller asks nodes for their copies' LSNs there), and a controller candidate.
  std::unique_ptr<LeaseKeeper> keeper;
  std::unique_ptr<FailoverController> controller;
  if (failover) {
    LeaseKeeperOptions lease;
    lease.node_id = options.node_id;
    lease.ttl = std::chrono::milliseconds(primary_lease_ms);
    lease.logger = log;
    auto started = LeaseKeeper::Start(*metadata, SystemClock(), options.primary_lease, lease);
    if (!started.ok()) return Fail(log, "primary lease", started.status());
    keeper = std::move(started).value();
    FailoverControllerOptions candidate;
    candidate.node_id = options.node_id;
    candidate.leader_ttl = std::chrono::milliseconds(primary_lease_ms);
    candidate.rebalance_interval = std::chrono::milliseconds(rebalance_interval_ms);
    candidate.logger = log;
    controller = FailoverController::Start(*metadata, candidate);
  }
  {
    std::lock_guard lock(metrics_mu);
    follower_metrics = follower->get();
  }
  auto maps = MetadataShardMapSource::Create(*metadata, log);
  if (!maps.ok()) return Fail(log, "shard map", maps.status());
  FanOutOptions fan_out;
  fan_out.logger = log;
  fan_out.linger = std::chrono::milliseconds(fanout_linger_ms);
  auto worker = std::make_unique<FanOutWorker>(**node, *maps, fan_out);
  {
    std::lock_guard lock(metrics_mu);
    worker_metrics = worker.get();
    keeper_metrics = keeper.get();
    controller_metrics = controller.get();
  }

  std::atomic<bool> stopping{false};
  std::thread keepalive([&] {
    while (!stopping) {
      for (int i = 0; i < 10 && !stopping; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(lease_seconds * 1000 / 30));
      }
      if (stopping) break;
      Status kept = (*metadata)->KeepAlive(*lease);
      if (kept.ok()) continue;
      // The lease lapsed (etcd was unreachable too long): register afresh.
      lease_failures.fetch_add(1);
      log->warn("renewing the registration lease failed: {}; registering afresh", kept.ToString());
      auto renewed = (*metadata)->GrantLease(std::chrono::seconds(lease_seconds));
      if (!renewed.ok()) {
        log->error("granting a new registration lease failed: {}", renewed.status().ToString());
        continue;
      }
      *lease = *renewed;
      if (auto put = (*metadata)->Put(kNodesPrefix + options.node_id, self.address, *lease);
          !put.ok()) {
        log->error("re-registering failed: {}", put.status().ToString());
      }
    }
  });

  log->info("started: ChatStore on {}, HTTP on {}, etcd {}, data in {}", self.address,
            self.http_address, etcd, options.data_dir);
  // The line process supervisors and tests read to learn the addresses (stdout).
  fmt::print("scrollbackd {}: ChatStore on {}, HTTP on {}, etcd {}\n", options.node_id,
             self.address, self.http_address, etcd);
  std::fflush(stdout);

  const std::string received = stop_signals.Wait();
  log->info("{} received, stopping", received);
  serving = false;
  stopping = true;
  keepalive.join();
  {
    std::lock_guard lock(metrics_mu);
    worker_metrics = nullptr;
    follower_metrics = nullptr;
    keeper_metrics = nullptr;
    controller_metrics = nullptr;
  }
  worker.reset();
  // A graceful stop hands over at once, losing nothing even of async writes: writes here stop
  // (fenced), the replicas get up to 3 s to apply every primary's last LSN, then the revoked
  // lease lets the controller move this node's primaries without waiting for it to expire.
  controller.reset();
  if (keeper) {
    keeper->StopRenewing();  // Fenced here; the lease stays in the store until revoked.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    for (;;) {
      size_t behind = 0;
      for (const HostedShard& shard : (*node)->Shards()) {
        const bool has_replicas = !shard.assignment.replica_nodes.empty();
        if (shard.assignment.role == ShardRole::kPrimary && has_replicas &&
            shard.log->acked_lsn() < shard.store->LatestSequence()) {
          ++behind;
        }
      }
      if (behind == 0) break;
      if (std::chrono::steady_clock::now() >= deadline) {
        log->warn(
            "stopping with {} primaries whose replicas have not applied all of them: "
            "their last async writes may be lost in the failover",
            behind);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (Status released = keeper->Release(); !released.ok()) {
      log->warn("revoking the primary lease failed (it expires by itself): {}",
                released.ToString());
    }
    keeper.reset();
  }
  follower->reset();
  // Stop accepting, let calls in flight finish, close the shards (RocksDB flushes on close).
  (*node)->Stop(std::chrono::seconds(5));
  (*http)->Stop();
  if (Status revoked = (*metadata)->RevokeLease(*lease); !revoked.ok()) {
    log->warn("revoking the registration lease failed (it expires by itself): {}",
              revoked.ToString());
  }
  log->info("stopped");
  return 0;
}

}  // namespace
}  // namespace scrollback

int main(int argc, char** argv) { return scrollback::Run(argc, argv); }
