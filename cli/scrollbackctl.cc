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
#include <capnp/rpc-twoparty.h>
#include <fmt/format.h>
#include <kj/async-io.h>

#include <CLI/CLI.hpp>
#include <map>
#include <nlohmann/json.hpp>

#include "scrollback/admin/verify.h"
#include "scrollback/cluster/etcd_metadata_store.h"
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
    fmt::print("\n{:<6} {:<33} {:<10} {:<8} {:<13} {:>5} {:>9} {:>8} {:>8} {:>9} {:>10}  {}\n",
               "SHARD", "TOKENS", "NODE", "ROLE", "STATE", "EPOCH", "LSN", "LAG", "LAG_MS", "KEYS~",
               "SST", "NOTE");
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
                                        {"error", c.error}});
      } else {
        const bool replica = c.role == "replica";
        fmt::print(
            "{:<6} {:016x}-{:016x} {:<10} {:<8} {:<13} {:>5} {:>9} {:>8} {:>8} {:>9} {:>10}  {}\n",
            shard.shard_id, shard.range.first, shard.range.last, c.node, c.role, c.state, c.epoch,
            c.lsn, replica ? std::to_string(c.lag_lsn) : "-",
            replica ? std::to_string(c.lag_ms) : "-", c.keys, Bytes(c.live), note);
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

// Switchover / drain through the metadata store (the failover controller carries them out).
int MovePrimaries(const std::string& etcd, uint64_t shard, const std::string& to,
                  const std::string& drain_node, int timeout_ms, bool json) {
  EtcdOptions options;
  options.endpoint = etcd;
  options.wait_for_etcd = std::chrono::milliseconds(timeout_ms);
  auto metadata = NewEtcdMetadataStore(options);
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

int Run(int argc, char** argv) {
  CLI::App app{"scrollbackctl: administer a Scrollback cluster."};
  app.require_subcommand(1);
  std::string node;
  int timeout_ms = 3000;
  bool json = false;
  uint64_t shard = 0;
  auto* status = app.add_subcommand(
      "status", "Print nodes and every copy of every shard: role, state, LSN, lag, sizes");
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
  CLI11_PARSE(app, argc, argv);
  if (*status) return Status_(node, timeout_ms, json);
  if (*verify) return Verify(node, timeout_ms, shard, json);
  if (*failover) return MovePrimaries(etcd, shard, to, "", move_timeout_ms, json);
  if (*drain) return MovePrimaries(etcd, 0, "", node_id, move_timeout_ms, json);
  return 2;
}

}  // namespace
}  // namespace scrollback

int main(int argc, char** argv) { return scrollback::Run(argc, argv); }
