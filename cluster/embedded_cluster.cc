#include "scrollback/cluster/embedded_cluster.h"

#include <spdlog/logger.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <random>
#include <thread>

namespace scrollback {

Result<std::unique_ptr<EmbeddedCluster>> EmbeddedCluster::Start(EmbeddedClusterOptions options) {
  if (options.nodes < 1 || options.shards < 1) {
    return Status::InvalidArgument("nodes", "a cluster needs at least one node and one shard");
  }
  std::unique_ptr<EmbeddedCluster> cluster(new EmbeddedCluster());
  cluster->options_ = options;
  cluster->log_ = OrNull(options.logger);
  cluster->data_dir_ = options.data_dir;
  if (cluster->data_dir_.empty()) {
    std::random_device rd;
    cluster->data_dir_ = (std::filesystem::temp_directory_path() /
                          ("scrollback-cluster-" + std::to_string(rd()) + std::to_string(rd())))
                             .string();
    cluster->owns_data_dir_ = true;
  }
  std::error_code ec;
  std::filesystem::create_directories(cluster->data_dir_, ec);
  if (ec) return Status::Internal("cannot create " + cluster->data_dir_ + ": " + ec.message());

  if (!cluster->options_.clock) cluster->options_.clock = SystemClock();
  cluster->metadata_ = NewInMemoryMetadataStore(cluster->options_.clock);
  // Room for AddNode without moving the members (their nodes' threads hold references).
  cluster->nodes_.reserve(std::max(options.nodes, 64));
  cluster->nodes_.resize(options.nodes);
  std::vector<NodeInfo> infos;
  for (int i = 0; i < options.nodes; ++i) {
    Member& member = cluster->nodes_[i];
    member.id = "node-" + std::to_string(i + 1);
    member.metadata = std::make_shared<CuttableMetadataStore>(cluster->metadata_, member.id);
    infos.push_back({member.id, "", ""});
  }
  // Nodes first (to learn their ports), then the map naming them, then followers and workers.
  for (size_t i = 0; i < cluster->nodes_.size(); ++i) {
    auto node = StorageNode::Start(cluster->OptionsOf(i));
    if (!node.ok()) return node.status();
    cluster->nodes_[i].node = std::move(node).value();
    infos[i].address = cluster->nodes_[i].node->address();
  }
  ShardMap map = ShardMap::Uniform(1, options.shards, infos, cluster->replication_factor());
  SB_RETURN_IF_ERROR(PublishFirstShardMap(*cluster->metadata_, map));
  auto source = MetadataShardMapSource::Create(cluster->metadata_, cluster->log_);
  if (!source.ok()) return source.status();
  cluster->maps_ = *source;
  for (size_t i = 0; i < cluster->nodes_.size(); ++i) {
    Member& member = cluster->nodes_[i];
    auto follower = ShardMapFollower::Start(member.metadata, *member.node, cluster->log_);
    if (!follower.ok()) return follower.status();
    member.follower = std::move(follower).value();
    SB_RETURN_IF_ERROR(cluster->StartFailover(member));
    cluster->StartWorker(member);
  }
  // With failover, the controller records every node's lease (epoch 2 for every shard) before
  // any node may write: wait for that map.
  SB_RETURN_IF_ERROR(cluster->WaitUntilServing(map.version()));
  return cluster;
}

EmbeddedCluster::~EmbeddedCluster() {
  for (size_t i = 0; i < nodes_.size(); ++i) StopNode(i);
  maps_.reset();
  metadata_.reset();
  if (owns_data_dir_) {
    std::error_code ec;
    std::filesystem::remove_all(data_dir_, ec);
  }
}

std::unique_ptr<ChatClient> EmbeddedCluster::NewClient(kj::AsyncIoProvider& io,
                                                       ClientOptions options) {
  if (!options.faults) options.faults = options_.faults;
  return ChatClient::Create(io, maps_, options);
}

void EmbeddedCluster::StopNode(size_t i) {
  Member& member = nodes_[i];
  member.worker.reset();
  // A leading controller hands over at once; the lease is left to expire, as after a crash.
  member.controller.reset();
  member.keeper.reset();
  member.follower.reset();
  if (member.node) member.node->Stop(std::chrono::milliseconds(0));
  member.node.reset();
  member.lease.reset();
}

void EmbeddedCluster::CutFromMetadata(size_t i, bool cut) {
  log_->warn("{} {} the metadata store (fault injected)", nodes_[i].id,
             cut ? "cut off from" : "reconnected to");
  nodes_[i].metadata->Cut(cut);
}

Status EmbeddedCluster::StartFailover(Member& member) {
  if (!options_.failover) return Status::Ok();
  LeaseKeeperOptions lease = options_.lease;
  lease.node_id = member.id;
  if (!lease.logger) lease.logger = log_;
  auto keeper = LeaseKeeper::Start(member.metadata, options_.clock, member.lease, lease);
  if (!keeper.ok()) return keeper.status();
  member.keeper = std::move(keeper).value();
  FailoverControllerOptions controller = options_.controller;
  controller.node_id = member.id;
  if (!controller.logger) controller.logger = log_;
  member.controller = FailoverController::Start(member.metadata, controller);
  return Status::Ok();
}

uint32_t EmbeddedCluster::replication_factor() const {
  return std::clamp<uint32_t>(options_.replication_factor, 1,
                              static_cast<uint32_t>(options_.nodes));
}

std::string EmbeddedCluster::node_data_dir(size_t i) const {
  if (replication_factor() == 1) return data_dir_;
  return (std::filesystem::path(data_dir_) / nodes_[i].id).string();
}

NodeOptions EmbeddedCluster::OptionsOf(size_t i) {
  NodeOptions node_options = options_.node;
  if (options_.failover) {
    // A new lease object per start: a restarted node holds no lease until its keeper grants one.
    nodes_[i].lease = std::make_shared<PrimaryLease>(nodes_[i].id, options_.clock, log_);
    node_options.primary_lease = nodes_[i].lease;
  }
  node_options.node_id = nodes_[i].id;
  node_options.data_dir = node_data_dir(i);
  node_options.listen_address = "127.0.0.1:0";
  node_options.event_loops = options_.event_loops_per_node;
  // Without replication, nodes share one directory per shard (MoveShard moves no data): a node
  // that drops a shard must leave its directory for the next owner (decision 0007).
  node_options.keep_dropped_directories = replication_factor() == 1;
  if (!node_options.logger) node_options.logger = log_;
  if (!node_options.replication.faults) node_options.replication.faults = options_.faults;
  if (options_.customize_node) options_.customize_node(i, node_options);
  return node_options;
}

void EmbeddedCluster::StartWorker(Member& member) {
  if (!options_.fan_out) return;
  FanOutOptions fan_out = options_.fan_out_options;
  if (!fan_out.logger) fan_out.logger = log_;
  if (!fan_out.client.faults) {
    fan_out.client.faults = options_.faults;
    fan_out.client.self = member.id;
  }
  member.worker = std::make_unique<FanOutWorker>(*member.node, maps_, fan_out);
}

Status EmbeddedCluster::WaitUntilServing(uint64_t version, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string waiting_for;
  while (std::chrono::steady_clock::now() < deadline) {
    waiting_for.clear();
    for (Member& member : nodes_) {
      if (!member.node) continue;
      if (member.node->map_version() < version) {
        waiting_for = member.id + " to take map version " + std::to_string(version);
        break;
      }
      if (member.lease && !member.lease->Writable()) {
        waiting_for = member.id + " to hold a primary lease the map records";
        break;
      }
      for (const ShardStatus& shard : member.node->ShardStatuses()) {
        if (shard.state == ShardState::kRefused) {
          return Status::FromCode(ErrorCode::kFailedPrecondition,
                                  member.id + " refuses shard " +
                                      std::to_string(shard.assignment.shard_id) + ": " +
                                      shard.last_error);
        }
        if (shard.state != ShardState::kServing) {
          waiting_for = member.id + " to open shard " + std::to_string(shard.assignment.shard_id) +
                        (shard.last_error.empty() ? "" : " (" + shard.last_error + ")");
        }
      }
      if (!waiting_for.empty()) break;
    }
    if (waiting_for.empty()) return Status::Ok();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return Status::Unavailable("timed out waiting for " + waiting_for);
}

Status EmbeddedCluster::StartNode(size_t i) {
  Member& member = nodes_[i];
  auto node = StorageNode::Start(OptionsOf(i));
  if (!node.ok()) return node.status();
  member.node = std::move(node).value();
  const std::string address = member.node->address();
  // The follower first (it opens this node's shards in the background), then the new address
  // in a new map version; done once every running node serves the newest map.
  auto follower = ShardMapFollower::Start(member.metadata, *member.node, log_);
  if (!follower.ok()) return follower.status();
  member.follower = std::move(follower).value();
  // The address first (retried if the controller changes the map meanwhile), then the lease:
  // the controller asks the node for its copies' LSNs at the address the map names.
  SB_RETURN_IF_ERROR(PublishNodeAddress(*metadata_, NodeInfo{member.id, address, "", 0}));
  SB_RETURN_IF_ERROR(StartFailover(member));
  StartWorker(member);
  auto map = ReadShardMap(*metadata_);
  if (!map.ok()) return map.status();
  return WaitUntilServing(map->version());
}

Status EmbeddedCluster::RestartNode(size_t i) {
  StopNode(i);
  return StartNode(i);
}

Status EmbeddedCluster::MoveShard(uint64_t shard_id, size_t to_node) {
  if (to_node >= nodes_.size()) return Status::InvalidArgument("to_node", "no such node");
  if (replication_factor() > 1) {
    return Status::FailedPrecondition(
        "MoveShard moves a shared directory: only with replication_factor 1 (a replicated "
        "shard changes primary by a switchover)");
  }
  return UpdateMap([&](std::vector<ShardInfo>& shards, std::vector<NodeInfo>&) {
    for (ShardInfo& shard : shards) {
      if (shard.shard_id == shard_id) {
        // The same copy (the shared directory) changes node: its placement stays.
        shard.primary = nodes_[to_node].id;
        ++shard.epoch;
      }
    }
  });
}

Result<SwitchoverResult> EmbeddedCluster::Switchover(uint64_t shard_id, const std::string& to) {
  auto done = scrollback::Switchover(*metadata_, shard_id, to, std::chrono::seconds(30));
  if (!done.ok()) return done;
  auto map = ReadShardMap(*metadata_);
  if (!map.ok()) return map.status();
  SB_RETURN_IF_ERROR(WaitUntilServing(map->version()));
  return done;
}

Result<SplitResult> EmbeddedCluster::Split(uint64_t shard_id, std::optional<uint64_t> at_token) {
  if (!options_.failover) {
    return Status::FailedPrecondition("splits are carried out by the failover controller");
  }
  auto done = SplitShard(*metadata_, shard_id, at_token, std::chrono::seconds(60));
  if (!done.ok()) return done;
  auto map = ReadShardMap(*metadata_);
  if (!map.ok()) return map.status();
  // A copy left behind by the split is bootstrapped: give a large shard's time.
  SB_RETURN_IF_ERROR(WaitUntilServing(map->version(), std::chrono::minutes(5)));
  return done;
}

Result<MergeResult> EmbeddedCluster::Merge(uint64_t left_id, uint64_t right_id) {
  if (!options_.failover) {
    return Status::FailedPrecondition("merges are carried out by the failover controller");
  }
  auto done = MergeShards(*metadata_, left_id, right_id, std::chrono::seconds(60));
  if (!done.ok()) return done;
  auto map = ReadShardMap(*metadata_);
  if (!map.ok()) return map.status();
  SB_RETURN_IF_ERROR(WaitUntilServing(map->version(), std::chrono::minutes(5)));
  return done;
}

Result<MoveResult> EmbeddedCluster::Move(uint64_t shard_id, const std::string& from,
                                         const std::string& to) {
  if (!options_.failover) {
    return Status::FailedPrecondition("moves are carried out by the failover controller");
  }
  auto done = MoveCopy(*metadata_, shard_id, from, to, std::chrono::minutes(10));
  if (!done.ok()) return done;
  auto map = ReadShardMap(*metadata_);
  if (!map.ok()) return map.status();
  SB_RETURN_IF_ERROR(WaitUntilServing(map->version()));
  return done;
}

Result<size_t> EmbeddedCluster::AddNode() {
  if (replication_factor() == 1) {
    return Status::FailedPrecondition("adding a node needs replication (directories per node)");
  }
  const size_t i = nodes_.size();
  if (i == nodes_.capacity()) return Status::FailedPrecondition("too many nodes");
  Member& member = nodes_.emplace_back();
  member.id = "node-" + std::to_string(i + 1);
  member.metadata = std::make_shared<CuttableMetadataStore>(metadata_, member.id);
  SB_RETURN_IF_ERROR(AddNodeToMap(*metadata_, member.id));
  SB_RETURN_IF_ERROR(StartNode(i));
  return i;
}

template <typename Change>
Status EmbeddedCluster::UpdateMap(Change&& change) {
  auto next =
      EditShardMap(*metadata_, [&](std::vector<ShardInfo>& shards, std::vector<NodeInfo>& nodes) {
        change(shards, nodes);
        return Status::Ok();
      });
  if (!next.ok()) return next.status();
  // Followers apply on the watch, and open new shards in the background: a node taking over a
  // shard may find it still open on the old primary for a moment (calls in flight and fan-out
  // passes hold it) and retries its open until it is free. Done when every running node serves
  // the new version with all of its shards open.
  log_->info("shard map version {} published", next->version());
  return WaitUntilServing(next->version());
}

}  // namespace scrollback
