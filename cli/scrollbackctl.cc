// scrollbackctl: the admin CLI.
//
//   scrollbackctl status --node HOST:PORT [--json]   nodes, and every copy of every shard (role,
//                                                     state, LSN, replica lag, bootstrap progress,
//                                                     sizes) of the cluster that node belongs to
//   scrollbackctl verify --node HOST:PORT [--shard N] [--json]
//                                                     compares the checksums of every copy of
//                                                     each shard at one LSN; exit 1 on a mismatch
//   scrollbackctl failover --etcd HOST:PORT --shard N [--to NODE] [--json]
//                                                     planned switchover of one shard's primary
//                                                     (no loss, writes paused meanwhile)
//   scrollbackctl drain --etcd HOST:PORT --node-id NODE [--json]
//                                                     moves every primary off NODE
//   scrollbackctl split --etcd HOST:PORT --shard N [--at TOKEN] [--json]
//                                                     online split (writes pause while the copies
//                                                     are cut; the pause is printed)
//   scrollbackctl merge --etcd HOST:PORT --shard N --with M [--json]
//                                                     merges shard N with the next one, M
//   scrollbackctl move --etcd HOST:PORT --shard N (--from NODE --to NODE | --abort) [--json]
//                                                     moves one copy (progress on stderr)
//   scrollbackctl drain --etcd HOST:PORT --node-id NODE --all-copies [--json]
//                                                     moves every copy off NODE
//   scrollbackctl add-node | remove-node --etcd HOST:PORT --node-id NODE
//                                                     node membership of the shard map
//   scrollbackctl rebalance --etcd HOST:PORT (--plan | --apply) [--json]
//                                                     plans (and carries out) one round of splits
//                                                     and primary moves from the measured load
#include <capnp/rpc-twoparty.h>
#include <fmt/format.h>
#include <kj/async-io.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <map>
#include <nlohmann/json.hpp>

#include "scrollback/admin/rebalance.h"
#include "scrollback/admin/verify.h"
#include "scrollback/cluster/etcd_metadata_store.h"
#include "scrollback/cluster/merge.h"
#include "scrollback/cluster/move.h"
#include "scrollback/cluster/shard_map_store.h"
#include "scrollback/cluster/split.h"
#include "scrollback/cluster/switchover.h"
#include "scrollback/router/shard_map.h"
#include "scrollback/schema/chatstore.capnp.h"
#include "scrollback/schema/wire.h"

namespace scrollback {
namespace {

namespace s = ::scrollback::schema;

std::string Bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", n) : fmt::format("{:.1f} {}", v, units[u]);
}

// A connection to one node, or the reason there is none.
struct NodeSession {
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> rpc;
  s::Node::Client node = nullptr;
};

Result<NodeSession> Connect(kj::AsyncIoContext& io, const std::string& address,
                            kj::Duration timeout) {
  try {
    NodeSession session;
    auto addr = io.provider->getNetwork().parseAddress(address).wait(io.waitScope);
    session.stream =
        io.provider->getTimer().timeoutAfter(timeout, addr->connect()).wait(io.waitScope);
    session.rpc = kj::heap<capnp::TwoPartyClient>(*session.stream);
    session.node = session.rpc->bootstrap().castAs<s::Node>();
    return session;
  } catch (const kj::Exception& e) {
    return Status::Unavailable(address + ": " + e.getDescription().cStr());
  }
}

// The shard map as `node_address` serves it.
Result<ShardMap> FetchMap(kj::AsyncIoContext& io, const std::string& node_address,
                          kj::Duration timeout) {
  auto first = Connect(io, node_address, timeout);
  if (!first.ok()) return first.status();
  std::string map_bytes;
  try {
    auto reply = io.provider->getTimer()
                     .timeoutAfter(timeout, first->node.shardMapRequest().send())
                     .wait(io.waitScope);
    map_bytes = std::string(wire::View(reply.getMap()));
  } catch (const kj::Exception& e) {
    return Status::Unavailable(node_address + ": " + e.getDescription().cStr());
  }
  if (map_bytes.empty()) return Status::Unavailable(node_address + " has no shard map yet");
  return ShardMap::Parse(map_bytes);
}

const char* RoleName(s::ShardRole role) {
  switch (role) {
    case s::ShardRole::PRIMARY:
      return "primary";
    case s::ShardRole::REPLICA:
      return "replica";
    default:
      return "?";
  }
}
const char* StateName(s::ShardState state) {
  switch (state) {
    case s::ShardState::OPENING:
      return "opening";
    case s::ShardState::SERVING:
      return "serving";
    case s::ShardState::REFUSED:
      return "refused";
    case s::ShardState::BOOTSTRAPPING:
      return "bootstrapping";
    default:
      return "?";
  }
}

int Status_(const std::string& node_address, int timeout_ms, bool json) {
  auto io = kj::setupAsyncIo();
  const auto timeout = timeout_ms * kj::MILLISECONDS;
  auto& timer = io.provider->getTimer();
  auto map = FetchMap(io, node_address, timeout);
  if (!map.ok()) {
    fmt::print(stderr, "scrollbackctl: {}\n", map.status().ToString());
    return 1;
  }

  // One row per copy of a shard, as the node holding it reports it.
  struct Copy {
    std::string node, role, state, primary, error;
    uint64_t epoch = 0, keys = 0, live = 0, memtable = 0, lsn = 0, lag_lsn = 0, lag_ms = 0;
    uint64_t bootstrap_done = 0, bootstrap_total = 0;
    double read_ops = 0, write_ops = 0, bytes = 0;  // Per second, decayed.
  };
  std::map<uint64_t, std::vector<Copy>> copies;
  nlohmann::json out = {{"map_version", map->version()},
                        {"nodes", nlohmann::json::array()},
                        {"shards", nlohmann::json::array()}};
  if (!json) {
    fmt::print("shard map version {}: {} shards on {} nodes\n\n", map->version(),
               map->shards().size(), map->nodes().size());
    fmt::print("{:<12} {:<22} {:<8} {:>6} {:>6}\n", "NODE", "ADDRESS", "STATE", "SHARDS", "MAP");
  }
  for (const NodeInfo& info : map->nodes()) {
    auto session = Connect(io, info.address, timeout);
    std::string state = "down";
    uint32_t shards = 0;
    uint64_t version = 0;
    if (session.ok()) {
      try {
        auto health =
            timer.timeoutAfter(timeout, session->node.healthRequest().send()).wait(io.waitScope);
        state = health.getServing() ? "up" : "starting";
        shards = health.getShards();
        version = health.getMapVersion();
        auto stats = timer.timeoutAfter(timeout, session->node.shardStatsRequest().send())
                         .wait(io.waitScope);
        for (auto st : stats.getStats()) {
          Copy c;
          c.node = info.node_id;
          c.role = RoleName(st.getRole());
          c.state = StateName(st.getState());
          c.primary = std::string(wire::View(st.getPrimaryNode()));
          c.error = std::string(wire::View(st.getLastError()));
          c.epoch = st.getEpoch();
          c.keys = st.getEstimatedKeys();
          c.live = st.getLiveDataBytes();
          c.memtable = st.getMemtableBytes();
          c.lsn = st.getLatestSequence();
          c.lag_lsn = st.getLagLsn();
          c.lag_ms = st.getLagMs();
          c.bootstrap_done = st.getBootstrapBytesDone();
          c.bootstrap_total = st.getBootstrapBytesTotal();
          c.read_ops = st.getReadOpsPerS();
          c.write_ops = st.getWriteOpsPerS();
          c.bytes = st.getBytesPerS();
          copies[st.getShardId()].push_back(std::move(c));
        }
      } catch (const kj::Exception&) {
        state = "down";
      }
    }
    if (json) {
      out["nodes"].push_back({{"node", info.node_id},
                              {"address", info.address},
                              {"state", state},
                              {"shards", shards},
                              {"map_version", version}});
    } else {
      fmt::print("{:<12} {:<22} {:<8} {:>6} {:>6}\n", info.node_id, info.address, state, shards,
                 version);
    }
  }
  if (!json) {
    fmt::print(
        "\n{:<6} {:<33} {:<10} {:<8} {:<13} {:>5} {:>9} {:>8} {:>8} {:>9} {:>10} {:>9} {:>10}  "
        "{}\n",
        "SHARD", "TOKENS", "NODE", "ROLE", "STATE", "EPOCH", "LSN", "LAG", "LAG_MS", "KEYS~", "SST",
        "OPS/S", "BYTES/S", "NOTE");
  }
  for (const ShardInfo& shard : map->shards()) {
    std::vector<std::string> holders = {shard.primary};
    holders.insert(holders.end(), shard.replicas.begin(), shard.replicas.end());
    nlohmann::json shard_json = {
        {"shard", shard.shard_id},          {"token_first", shard.range.first},
        {"token_last", shard.range.last},   {"epoch", shard.epoch},
        {"primary", shard.primary},         {"replicas", shard.replicas},
        {"copies", nlohmann::json::array()}};
    for (const std::string& holder : holders) {
      const Copy* found = nullptr;
      for (const Copy& c : copies[shard.shard_id]) {
        if (c.node == holder) found = &c;
      }
      Copy missing;
      missing.node = holder;
      missing.role = holder == shard.primary ? "primary" : "replica";
      missing.state = "unknown";
      const Copy& c = found ? *found : missing;
      std::string note = c.error;
      if (c.state == "bootstrapping") {
        note = fmt::format("bootstrap {} of {}", Bytes(c.bootstrap_done), Bytes(c.bootstrap_total));
      }
      if (json) {
        shard_json["copies"].push_back({{"node", c.node},
                                        {"role", c.role},
                                        {"state", c.state},
                                        {"epoch", c.epoch},
                                        {"lsn", c.lsn},
                                        {"lag_lsn", c.lag_lsn},
                                        {"lag_ms", c.lag_ms},
                                        {"keys", c.keys},
                                        {"sst_bytes", c.live},
                                        {"memtable_bytes", c.memtable},
                                        {"bootstrap_done", c.bootstrap_done},
                                        {"bootstrap_total", c.bootstrap_total},
                                        {"read_ops_per_s", c.read_ops},
                                        {"write_ops_per_s", c.write_ops},
                                        {"bytes_per_s", c.bytes},
                                        {"error", c.error}});
      } else {
        const bool replica = c.role == "replica";
        fmt::print(
            "{:<6} {:016x}-{:016x} {:<10} {:<8} {:<13} {:>5} {:>9} {:>8} {:>8} {:>9} {:>10} "
            "{:>9.1f} {:>10}  {}\n",
            shard.shard_id, shard.range.first, shard.range.last, c.node, c.role, c.state, c.epoch,
            c.lsn, replica ? std::to_string(c.lag_lsn) : "-",
            replica ? std::to_string(c.lag_ms) : "-", c.keys, Bytes(c.live),
            c.read_ops + c.write_ops, Bytes(static_cast<uint64_t>(c.bytes)), note);
      }
    }
    out["shards"].push_back(std::move(shard_json));
  }
  if (json) fmt::print("{}\n", out.dump(2));
  return 0;
}

int Verify(const std::string& node_address, int timeout_ms, uint64_t shard, bool json) {
  auto io = kj::setupAsyncIo();
  auto map = FetchMap(io, node_address, timeout_ms * kj::MILLISECONDS);
  if (!map.ok()) {
    fmt::print(stderr, "scrollbackctl: {}\n", map.status().ToString());
    return 1;
  }
  admin::VerifyOptions options;
  options.call_timeout = std::chrono::milliseconds(std::max(timeout_ms, 35000));
  options.only_shard = shard;
  auto verdicts = admin::VerifyShards(io, *map, options);
  int bad = 0;
  nlohmann::json out = nlohmann::json::array();
  for (const auto& v : verdicts) {
    bad += v.identical ? 0 : 1;
    if (json) {
      nlohmann::json copies = nlohmann::json::array();
      for (const auto& c : v.copies) {
        copies.push_back({{"node", c.node_id},
                          {"primary", c.primary},
                          {"lsn", c.lsn},
                          {"checksum", fmt::format("{:016x}", c.checksum)},
                          {"keys", c.keys},
                          {"error", c.error.ok() ? "" : c.error.ToString()}});
      }
      out.push_back({{"shard", v.shard_id},
                     {"identical", v.identical},
                     {"lsn", v.lsn},
                     {"copies", copies},
                     {"problem", v.problem}});
    } else if (v.identical) {
      fmt::print("shard {:<5} identical: {} copies at lsn {}, {} keys, checksum {:016x}\n",
                 v.shard_id, v.copies.size(), v.lsn, v.copies.front().keys,
                 v.copies.front().checksum);
    } else {
      fmt::print("shard {:<5} DIFFERS: {}\n", v.shard_id, v.problem);
    }
  }
  if (json) {
    fmt::print("{}\n", out.dump(2));
  } else {
    fmt::print("{} of {} shards identical on every copy\n", verdicts.size() - bad, verdicts.size());
  }
  if (verdicts.empty()) {
    fmt::print(stderr, "scrollbackctl: no such shard\n");
    return 1;
  }
  return bad == 0 ? 0 : 1;
}

Result<std::shared_ptr<MetadataStore>> OpenEtcd(const std::string& etcd, int timeout_ms) {
  EtcdOptions options;
  options.endpoint = etcd;
  options.wait_for_etcd = std::chrono::milliseconds(timeout_ms);
  return NewEtcdMetadataStore(options);
}

// Progress of a long operation: a bar redrawn in place on a terminal, plain lines otherwise
// (one per phase change and per tenth of the bytes).
class Progress {
 public:
  explicit Progress(std::string what) : what_(std::move(what)), tty_(isatty(fileno(stderr))) {}
  ~Progress() {
    if (tty_ && drawn_) fmt::print(stderr, "\n");
  }
  void Update(const std::string& phase, uint64_t done, uint64_t total) {
    const int tenth = total == 0 ? -1 : static_cast<int>(10 * done / std::max<uint64_t>(1, total));
    if (tty_) {
      const int width = 30;
      const int filled =
          total == 0 ? 0 : static_cast<int>(width * done / std::max<uint64_t>(1, total));
      fmt::print(stderr, "\r{} [{}{}] {}{}\x1b[K", what_, std::string(filled, '#'),
                 std::string(width - filled, '.'), phase,
                 total == 0 ? "" : fmt::format(" {} of {}", Bytes(done), Bytes(total)));
      drawn_ = true;
    } else if (phase != phase_ || tenth != tenth_) {
      fmt::print(stderr, "{}: {}{}\n", what_, phase,
                 total == 0 ? "" : fmt::format(" ({} of {})", Bytes(done), Bytes(total)));
    }
    phase_ = phase;
    tenth_ = tenth;
  }

 private:
  const std::string what_;
  const bool tty_;
  bool drawn_ = false;
  std::string phase_;
  int tenth_ = -2;
};

// The bootstrap progress of `shard_id`'s copy on `node_id` (0, 0 when it is not bootstrapping).
std::pair<uint64_t, uint64_t> BootstrapProgress(kj::AsyncIoContext& io, const ShardMap& map,
                                                const std::string& node_id, uint64_t shard_id) {
  const NodeInfo* node = map.FindNode(node_id);
  if (node == nullptr || node->address.empty()) return {0, 0};
  auto session = Connect(io, node->address, 500 * kj::MILLISECONDS);
  if (!session.ok()) return {0, 0};
  try {
    auto stats = io.provider->getTimer()
                     .timeoutAfter(500 * kj::MILLISECONDS, session->node.shardStatsRequest().send())
                     .wait(io.waitScope);
    for (auto st : stats.getStats()) {
      if (st.getShardId() == shard_id && st.getState() == s::ShardState::BOOTSTRAPPING) {
        return {st.getBootstrapBytesDone(), st.getBootstrapBytesTotal()};
      }
    }
  } catch (const kj::Exception&) {
  }
  return {0, 0};
}

// Moves of copies, node membership and full drains through the metadata store.
int MoveCopies(const std::string& etcd, const std::string& command, uint64_t shard,
               const std::string& from, const std::string& to, const std::string& node_id,
               int timeout_ms, bool json) {
  auto metadata = OpenEtcd(etcd, timeout_ms);
  if (!metadata.ok()) {
    fmt::print(stderr, "scrollbackctl: {}\n", metadata.status().ToString());
    return 1;
  }
  const auto timeout = std::chrono::milliseconds(timeout_ms);
  auto fail = [](const Status& status) {
    fmt::print(stderr, "scrollbackctl: {}\n", status.ToString());
    return 1;
  };
  if (command == "add-node" || command == "remove-node") {
    Status done = command == "add-node" ? AddNodeToMap(**metadata, node_id)
                                        : RemoveNodeFromMap(**metadata, node_id);
    if (!done.ok()) return fail(done);
    if (json) {
      fmt::print("{}\n",
                 nlohmann::json{{command == "add-node" ? "added" : "removed", node_id}}.dump());
    } else {
      fmt::print("{} {} the shard map\n", node_id,
                 command == "add-node" ? "added to (it takes shards by move or rebalance)"
                                       : "removed from");
    }
    return 0;
  }
  if (command == "abort") {
    Status done = AbortMove(**metadata, shard, timeout);
    if (!done.ok()) return fail(done);
    if (json) {
      fmt::print("{}\n", nlohmann::json{{"aborted", shard}}.dump());
    } else {
      fmt::print("the move of shard {} was rolled back\n", shard);
    }
    return 0;
  }
  auto io = kj::setupAsyncIo();
  nlohmann::json out = nlohmann::json::array();
  auto report = [&](const MoveResult& r) {
    if (json) {
      out.push_back({{"shard", r.shard_id},
                     {"from", r.from},
                     {"to", r.to},
                     {"was_primary", r.was_primary},
                     {"took_ms", r.took.count()}});
    } else {
      fmt::print("shard {:<5} copy moved {} -> {}{} in {} ms\n", r.shard_id, r.from, r.to,
                 r.was_primary ? " (primary: switched over)" : "", r.took.count());
    }
  };
  if (command == "move") {
    Progress progress("shard " + std::to_string(shard) + " " + from + " -> " + to);
    auto done = MoveCopy(**metadata, shard, from, to, timeout, [&](MovePhase phase) {
      uint64_t bytes = 0, total = 0;
      if (phase == MovePhase::kCatchingUp) {
        if (auto map = ReadShardMap(**metadata); map.ok()) {
          std::tie(bytes, total) = BootstrapProgress(io, *map, to, shard);
        }
      }
      if (!json) progress.Update(MovePhaseName(phase), bytes, total);
    });
    if (!done.ok()) return fail(done.status());
    report(*done);
  } else {  // drain --all-copies
    auto done = DrainCopies(**metadata, node_id, timeout, [&](const MoveResult& r) {
      if (!json) report(r);
    });
    if (!done.ok()) return fail(done.status());
    if (json) {
      for (const MoveResult& r : *done) report(r);
    } else {
      fmt::print("{} holds no copy any more: `scrollbackctl remove-node` takes it out of the map\n",
                 node_id);
    }
  }
  if (json) fmt::print("{}\n", out.dump(2));
  return 0;
}

// Switchover / drain through the metadata store (the failover controller carries them out).
int MovePrimaries(const std::string& etcd, uint64_t shard, const std::string& to,
                  const std::string& drain_node, int timeout_ms, bool json) {
  auto metadata = OpenEtcd(etcd, timeout_ms);
  if (!metadata.ok()) {
    fmt::print(stderr, "scrollbackctl: {}\n", metadata.status().ToString());
    return 1;
  }
  const auto timeout = std::chrono::milliseconds(timeout_ms);
  Result<std::vector<SwitchoverResult>> moved = std::vector<SwitchoverResult>{};
  if (drain_node.empty()) {
    auto one = Switchover(**metadata, shard, to, timeout);
    if (one.ok()) {
      moved->push_back(*one);
    } else {
      moved = one.status();
    }
  } else {
    moved = DrainPrimaries(**metadata, drain_node, timeout);
  }
  if (!moved.ok()) {
    fmt::print(stderr, "scrollbackctl: {}\n", moved.status().ToString());
    return 1;
  }
  nlohmann::json out = nlohmann::json::array();
  for (const SwitchoverResult& r : *moved) {
    if (json) {
      out.push_back({{"shard", r.shard_id},
                     {"from", r.from},
                     {"to", r.to},
                     {"epoch", r.epoch},
                     {"pause_ms", r.pause.count()}});
    } else {
      fmt::print("shard {:<5} {} -> {} at epoch {}: writes paused {} ms\n", r.shard_id, r.from,
                 r.to, r.epoch, r.pause.count());
    }
  }
  if (json) fmt::print("{}\n", out.dump(2));
  if (!json && moved->empty()) fmt::print("{} is primary of no shard\n", drain_node);
  return 0;
}

int Split(const std::string& etcd, uint64_t shard, std::optional<uint64_t> at, int timeout_ms,
          bool json) {
  auto metadata = OpenEtcd(etcd, timeout_ms);
  if (!metadata.ok()) {
    fmt::print(stderr, "scrollbackctl: {}\n", metadata.status().ToString());
    return 1;
  }
  if (!json) fmt::print("splitting shard {} ...\n", shard);
  auto done = SplitShard(**metadata, shard, at, std::chrono::milliseconds(timeout_ms));
  if (!done.ok()) {
    fmt::print(stderr, "scrollbackctl: {}\n", done.status().ToString());
    return 1;
  }
  if (json) {
    fmt::print("{}\n", nlohmann::json{{"shard", done->shard_id},
                                      {"at_token", done->at_token},
                                      {"left",
                                       {{"shard", done->left_id},
                                        {"token_first", done->left.first},
                                        {"token_last", done->left.last}}},
                                      {"right",
                                       {{"shard", done->right_id},
                                        {"token_first", done->right.first},
                                        {"token_last", done->right.last}}},
                                      {"lsn", done->lsn},
                                      {"pause_ms", done->pause.count()}}
                           .dump(2));
  } else {
    fmt::print(
        "shard {} split at token {:016x} (lsn {}): shard {} [{:016x}, {:016x}] and shard {} "
        "[{:016x}, {:016x}]; writes paused {} ms\n",
        done->shard_id, done->at_token, done->lsn, done->left_id, done->left.first, done->left.last,
        done->right_id, done->right.first, done->right.last, done->pause.count());
  }
  return 0;
}

int Merge(const std::string& etcd, uint64_t left, uint64_t right, int timeout_ms, bool json) {
  auto metadata = OpenEtcd(etcd, timeout_ms);
  if (!metadata.ok()) {
    fmt::print(stderr, "scrollbackctl: {}\n", metadata.status().ToString());
    return 1;
  }
  auto done = MergeShards(**metadata, left, right, std::chrono::milliseconds(timeout_ms));
  if (!done.ok()) {
    fmt::print(stderr, "scrollbackctl: {}\n", done.status().ToString());
    return 1;
  }
  if (json) {
    fmt::print("{}\n", nlohmann::json{{"left", done->left_id},
                                      {"right", done->right_id},
                                      {"merged", done->merged_id},
                                      {"token_first", done->range.first},
                                      {"token_last", done->range.last},
                                      {"took_ms", done->took.count()}}
                           .dump(2));
  } else {
    fmt::print("shards {} and {} merged into shard {} [{:016x}, {:016x}] in {} ms\n", done->left_id,
               done->right_id, done->merged_id, done->range.first, done->range.last,
               done->took.count());
  }
  return 0;
}

int Rebalance(const std::string& etcd, bool apply, const PlannerOptions& planner, int timeout_ms,
              bool json) {
  auto metadata = OpenEtcd(etcd, timeout_ms);
  if (!metadata.ok()) {
    fmt::print(stderr, "scrollbackctl: {}\n", metadata.status().ToString());
    return 1;
  }
  auto map = ReadShardMap(**metadata);
  if (!map.ok()) {
    fmt::print(stderr, "scrollbackctl: {}\n", map.status().ToString());
    return 1;
  }
  auto io = kj::setupAsyncIo();
  auto loads = admin::CollectShardLoads(io, *map, std::chrono::milliseconds(3000));
  if (!loads.ok()) {
    fmt::print(stderr, "scrollbackctl: {}\n", loads.status().ToString());
    return 1;
  }
  const RebalancePlan plan = PlanRebalance(*map, *loads, planner);
  nlohmann::json out = {{"map_version", map->version()},
                        {"max_over_mean_before", plan.max_over_mean_before},
                        {"max_over_mean_after", plan.max_over_mean_after},
                        {"node_load_before", plan.node_load_before},
                        {"node_load_after", plan.node_load_after},
                        {"splits", nlohmann::json::array()},
                        {"moves", nlohmann::json::array()}};
  for (const PlannedSplit& split : plan.splits) {
    out["splits"].push_back({{"shard", split.shard_id},
                             {"at_token", split.at_token},
                             {"left_ops", split.left_ops},
                             {"right_ops", split.right_ops},
                             {"reason", split.reason}});
  }
  for (const PlannedMove& move : plan.moves) {
    out["moves"].push_back({{"shard", move.shard_id},
                            {"from", move.from},
                            {"to", move.to},
                            {"switchover", move.switchover},
                            {"ops", move.ops},
                            {"reason", move.reason}});
  }
  if (!json) {
    fmt::print("node load (ops/s), max / mean {:.2f} now, {:.2f} after the plan:\n",
               plan.max_over_mean_before, plan.max_over_mean_after);
    for (const auto& [node, load] : plan.node_load_before) {
      fmt::print("  {:<12} {:>10.1f} -> {:>10.1f}\n", node, load, plan.node_load_after.at(node));
    }
    if (plan.splits.empty() && plan.moves.empty()) fmt::print("nothing to do\n");
    for (const PlannedSplit& split : plan.splits) {
      fmt::print("split shard {} at token {:016x} ({:.1f} | {:.1f} ops/s): {}\n", split.shard_id,
                 split.at_token, split.left_ops, split.right_ops, split.reason);
    }
    for (const PlannedMove& move : plan.moves) {
      fmt::print("move primary of shard {} from {} to {} ({}, {:.1f} ops/s): {}\n", move.shard_id,
                 move.from, move.to, move.switchover ? "switchover" : "copy", move.ops,
                 move.reason);
    }
  }
  int status = 0;
  if (apply) {
    const admin::AppliedPlan done =
        admin::ApplyRebalancePlan(**metadata, plan, std::chrono::milliseconds(timeout_ms));
    out["applied"] = {{"splits", done.splits.size()},
                      {"switchovers", done.switchovers.size()},
                      {"copies_moved", done.moves.size()},
                      {"errors", done.errors}};
    if (!json) {
      for (const SplitResult& r : done.splits) {
        fmt::print("split shard {} into {} and {}: writes paused {} ms\n", r.shard_id, r.left_id,
                   r.right_id, r.pause.count());
      }
      for (const SwitchoverResult& r : done.switchovers) {
        fmt::print("shard {} primary {} -> {}: writes paused {} ms\n", r.shard_id, r.from, r.to,
                   r.pause.count());
      }
      for (const MoveResult& m : done.moves) {
        fmt::print("shard {} copy moved {} -> {} in {} ms\n", m.shard_id, m.from, m.to,
                   m.took.count());
      }
      for (const std::string& e : done.errors) fmt::print(stderr, "failed: {}\n", e);
    }
    status = done.errors.empty() ? 0 : 1;
  }
  if (json) fmt::print("{}\n", out.dump(2));
  return status;
}

int Run(int argc, char** argv) {
  CLI::App app{"scrollbackctl: administer a Scrollback cluster."};
  app.require_subcommand(1);
  std::string node;
  int timeout_ms = 3000;
  bool json = false;
  uint64_t shard = 0;
  auto* status = app.add_subcommand(
      "status", "Print nodes and every copy of every shard: role, state, LSN, lag, sizes, load");
  status->add_option("--node", node, "host:port of any storage node of the cluster")->required();
  status->add_option("--timeout-ms", timeout_ms, "Per-call timeout")->check(CLI::Range(1, 600000));
  status->add_flag("--json", json, "Machine-readable output");
  auto* verify = app.add_subcommand(
      "verify",
      "Compare the checksums of every copy of each shard at one LSN (exit 1 if any differ)");
  verify->add_option("--node", node, "host:port of any storage node of the cluster")->required();
  verify->add_option("--shard", shard, "Only this shard id");
  verify->add_option("--timeout-ms", timeout_ms, "Connect timeout")->check(CLI::Range(1, 600000));
  verify->add_flag("--json", json, "Machine-readable output");
  std::string etcd, to, node_id;
  int move_timeout_ms = 30000;
  auto* failover = app.add_subcommand(
      "failover",
      "Planned switchover: move a shard's primary to a replica with no loss (writes pause while "
      "the replica catches up; the pause is printed)");
  failover->add_option("--etcd", etcd, "host:port of etcd's client URL")->required();
  failover->add_option("--shard", shard, "The shard id")->required();
  failover->add_option("--to", to, "The replica's node id (default: the most advanced replica)");
  failover->add_option("--timeout-ms", move_timeout_ms, "How long to wait")
      ->check(CLI::Range(1, 600000));
  failover->add_flag("--json", json, "Machine-readable output");
  auto* drain = app.add_subcommand(
      "drain", "Move every primary off a node (one switchover per shard; its replicas stay)");
  drain->add_option("--etcd", etcd, "host:port of etcd's client URL")->required();
  drain->add_option("--node-id", node_id, "The node to drain")->required();
  drain->add_option("--timeout-ms", move_timeout_ms, "How long to wait per shard")
      ->check(CLI::Range(1, 600000));
  drain->add_flag("--json", json, "Machine-readable output");
  uint64_t at = 0;
  auto* split = app.add_subcommand(
      "split",
      "Split a shard online at a token (default: the middle of its range); every copy is cut "
      "locally, writes pause meanwhile (printed)");
  split->add_option("--etcd", etcd, "host:port of etcd's client URL")->required();
  split->add_option("--shard", shard, "The shard id")->required();
  auto* at_option =
      split->add_option("--at", at, "The right half's first token (decimal; default: middle)");
  split->add_option("--timeout-ms", move_timeout_ms, "How long to wait")
      ->check(CLI::Range(1, 600000));
  split->add_flag("--json", json, "Machine-readable output");
  bool plan_only = false, apply = false;
  PlannerOptions planner;
  auto* rebalance = app.add_subcommand(
      "rebalance",
      "Plan one round of splits and primary moves from the load the nodes measure (--plan), "
      "or plan and carry it out (--apply)");
  rebalance->add_option("--etcd", etcd, "host:port of etcd's client URL")->required();
  auto* plan_flag = rebalance->add_flag("--plan", plan_only, "Print the plan only");
  auto* apply_flag = rebalance->add_flag("--apply", apply, "Carry the plan out");
  plan_flag->excludes(apply_flag);
  rebalance->add_option("--max-moves", planner.max_moves_per_round, "Moves per round");
  rebalance->add_option("--max-splits", planner.max_splits_per_round, "Splits per round");
  rebalance->add_option("--target-ratio", planner.target_ratio,
                        "Stop when the busiest node is within this factor of the mean");
  rebalance->add_option("--timeout-ms", move_timeout_ms, "How long to wait per step")
      ->check(CLI::Range(1, 600000));
  rebalance->add_flag("--json", json, "Machine-readable output");
  std::string from;
  bool abort = false, all_copies = false;
  drain->add_flag("--all-copies", all_copies,
                  "Move every copy off the node, replicas too (then remove-node takes it out)");
  auto* move = app.add_subcommand(
      "move",
      "Move a shard's copy from one node to another (bootstrap, catch-up, switchover if it was "
      "the primary, old copy removed); --abort rolls a move back before its switchover");
  move->add_option("--etcd", etcd, "host:port of etcd's client URL")->required();
  move->add_option("--shard", shard, "The shard id")->required();
  move->add_option("--from", from, "The node whose copy moves");
  move->add_option("--to", to, "The node that receives it (it must hold no copy)");
  move->add_flag("--abort", abort, "Roll back the shard's move in progress");
  move->add_option("--timeout-ms", move_timeout_ms, "How long to wait")
      ->check(CLI::Range(1, 86400000));
  move->add_flag("--json", json, "Machine-readable output");
  auto* add_node = app.add_subcommand(
      "add-node", "Add a node to the shard map (it then takes shards by move or rebalance)");
  add_node->add_option("--etcd", etcd, "host:port of etcd's client URL")->required();
  add_node->add_option("--node-id", node_id, "The new node's id")->required();
  add_node->add_flag("--json", json, "Machine-readable output");
  auto* remove_node =
      app.add_subcommand("remove-node", "Remove a node that holds no copy from the shard map");
  remove_node->add_option("--etcd", etcd, "host:port of etcd's client URL")->required();
  remove_node->add_option("--node-id", node_id, "The node")->required();
  remove_node->add_flag("--json", json, "Machine-readable output");
  uint64_t with = 0;
  auto* merge = app.add_subcommand(
      "merge",
      "Merge a shard with the shard right after it (both held by the same nodes); writes to "
      "both pause while the merged copy is made on every node");
  merge->add_option("--etcd", etcd, "host:port of etcd's client URL")->required();
  merge->add_option("--shard", shard, "The left shard's id")->required();
  merge->add_option("--with", with, "The right shard's id (the next one)")->required();
  merge->add_option("--timeout-ms", move_timeout_ms, "How long to wait")
      ->check(CLI::Range(1, 600000));
  merge->add_flag("--json", json, "Machine-readable output");
  CLI11_PARSE(app, argc, argv);
  if (*merge) return Merge(etcd, shard, with, move_timeout_ms, json);
  if (*move) {
    if (abort) return MoveCopies(etcd, "abort", shard, "", "", "", move_timeout_ms, json);
    if (from.empty() || to.empty()) {
      fmt::print(stderr, "scrollbackctl: move needs --from and --to (or --abort)\n");
      return 2;
    }
    return MoveCopies(etcd, "move", shard, from, to, "", move_timeout_ms, json);
  }
  if (*add_node) return MoveCopies(etcd, "add-node", 0, "", "", node_id, move_timeout_ms, json);
  if (*remove_node) {
    return MoveCopies(etcd, "remove-node", 0, "", "", node_id, move_timeout_ms, json);
  }
  if (*drain && all_copies) {
    return MoveCopies(etcd, "drain", 0, "", "", node_id, move_timeout_ms, json);
  }
  if (*split) {
    return Split(etcd, shard, at_option->count() > 0 ? std::optional<uint64_t>(at) : std::nullopt,
                 move_timeout_ms, json);
  }
  if (*rebalance) {
    if (!plan_only && !apply) {
      fmt::print(stderr, "scrollbackctl: rebalance needs --plan or --apply\n");
      return 2;
    }
    return Rebalance(etcd, apply, planner, move_timeout_ms, json);
  }
  if (*status) return Status_(node, timeout_ms, json);
  if (*verify) return Verify(node, timeout_ms, shard, json);
  if (*failover) return MovePrimaries(etcd, shard, to, "", move_timeout_ms, json);
  if (*drain) return MovePrimaries(etcd, 0, "", node_id, move_timeout_ms, json);
  return 2;
}

}  // namespace
}  // namespace scrollback

int main(int argc, char** argv) { return scrollback::Run(argc, argv); }
