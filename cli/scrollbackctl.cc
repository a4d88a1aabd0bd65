// scrollbackctl: the admin CLI.
//
//   scrollbackctl status --node HOST:PORT   nodes, shards, owners and sizes of the cluster that
//                                            node belongs to
#include <capnp/rpc-twoparty.h>
#include <fmt/format.h>
#include <kj/async-io.h>

#include <CLI/CLI.hpp>
#include <map>

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

int Status_(const std::string& node_address, int timeout_ms) {
  auto io = kj::setupAsyncIo();
  const auto timeout = timeout_ms * kj::MILLISECONDS;
  auto& timer = io.provider->getTimer();
  auto first = Connect(io, node_address, timeout);
  if (!first.ok()) {
    fmt::print(stderr, "scrollbackctl: {}\n", first.status().ToString());
    return 1;
  }
  std::string map_bytes;
  try {
    auto reply =
        timer.timeoutAfter(timeout, first->node.shardMapRequest().send()).wait(io.waitScope);
    map_bytes = std::string(wire::View(reply.getMap()));
  } catch (const kj::Exception& e) {
    fmt::print(stderr, "scrollbackctl: {}: {}\n", node_address, e.getDescription().cStr());
    return 1;
  }
  if (map_bytes.empty()) {
    fmt::print(stderr, "scrollbackctl: {} has no shard map yet\n", node_address);
    return 1;
  }
  auto map = ShardMap::Parse(map_bytes);
  if (!map.ok()) {
    fmt::print(stderr, "scrollbackctl: bad shard map: {}\n", map.status().ToString());
    return 1;
  }

  struct Stats {
    uint64_t keys = 0, live = 0, memtable = 0, lsn = 0;
  };
  std::map<uint64_t, Stats> shard_stats;
  fmt::print("shard map version {}: {} shards on {} nodes\n\n", map->version(),
             map->shards().size(), map->nodes().size());
  fmt::print("{:<12} {:<22} {:<6} {:>6} {:>6}\n", "NODE", "ADDRESS", "STATE", "SHARDS", "MAP");
  for (const NodeInfo& info : map->nodes()) {
    auto session = Connect(io, info.address, timeout);
    std::string state = "down";
    uint32_t shards = 0;
    uint64_t version = 0;
    if (session.ok()) {
      try {
        auto health =
            timer.timeoutAfter(timeout, session->node.healthRequest().send()).wait(io.waitScope);
        state = health.getServing() ? "up" : "stopping";
        shards = health.getShards();
        version = health.getMapVersion();
        auto stats = timer.timeoutAfter(timeout, session->node.shardStatsRequest().send())
                         .wait(io.waitScope);
        for (auto st : stats.getStats()) {
          shard_stats[st.getShardId()] = {st.getEstimatedKeys(), st.getLiveDataBytes(),
                                          st.getMemtableBytes(), st.getLatestSequence()};
        }
      } catch (const kj::Exception&) {
        state = "down";
      }
    }
    fmt::print("{:<12} {:<22} {:<6} {:>6} {:>6}\n", info.node_id, info.address, state, shards,
               version);
  }
  fmt::print("\n{:<6} {:<35} {:<12} {:>5} {:>10} {:>10} {:>10} {:>10}\n", "SHARD", "TOKENS",
             "PRIMARY", "EPOCH", "KEYS~", "SST", "MEMTABLE", "LSN");
  for (const ShardInfo& shard : map->shards()) {
    auto it = shard_stats.find(shard.shard_id);
    std::string keys = "?", live = "?", mem = "?", lsn = "?";
    if (it != shard_stats.end()) {
      keys = std::to_string(it->second.keys);
      live = Bytes(it->second.live);
      mem = Bytes(it->second.memtable);
      lsn = std::to_string(it->second.lsn);
    }
    fmt::print("{:<6} {:016x}-{:016x} {:<12} {:>5} {:>10} {:>10} {:>10} {:>10}\n", shard.shard_id,
               shard.range.first, shard.range.last, shard.primary, shard.epoch, keys, live, mem,
               lsn);
  }
  return 0;
}

int Run(int argc, char** argv) {
  CLI::App app{"scrollbackctl: administer a Scrollback cluster."};
  app.require_subcommand(1);
  std::string node;
  int timeout_ms = 3000;
  auto* status = app.add_subcommand("status", "Print nodes, shards, owners and sizes");
  status->add_option("--node", node, "host:port of any storage node of the cluster")->required();
  status->add_option("--timeout-ms", timeout_ms, "Per-call timeout")->check(CLI::Range(1, 600000));
  CLI11_PARSE(app, argc, argv);
  if (*status) return Status_(node, timeout_ms);
  return 2;
}

}  // namespace
}  // namespace scrollback

int main(int argc, char** argv) { return scrollback::Run(argc, argv); }
