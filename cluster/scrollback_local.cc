// scrollback-local: a whole Scrollback cluster in one process on the embedded default (3 nodes,
// 16 shards, in-memory metadata, real RocksDB and real Cap'n Proto over loopback) plus a router
// that speaks the ChatStore API on one address. Serves until SIGINT or SIGTERM.
#include <fmt/format.h>

#include <CLI/CLI.hpp>

#include "scrollback/cluster/embedded_cluster.h"
#include "scrollback/cluster/stop_signals.h"
#include "scrollback/router/router_server.h"

namespace scrollback {
namespace {

int Run(int argc, char** argv) {
  CLI::App app{"Scrollback: a local cluster in one process."};
  EmbeddedClusterOptions options;
  std::string listen = "127.0.0.1:7600";
  app.add_option("--nodes", options.nodes, "Storage nodes")->check(CLI::Range(1, 32));
  app.add_option("--shards", options.shards, "Shards (equal token ranges)")
      ->check(CLI::Range(1u, 4096u));
  app.add_option("--replication-factor", options.replication_factor,
                 "Copies of each shard: a primary and replicas kept current by log shipping "
                 "(default 3, capped at --nodes)")
      ->check(CLI::Range(1u, 32u));
  std::string default_ack = "async";
  app.add_option("--default-ack", default_ack,
                 "How writes that do not choose are acknowledged: async or semi-sync")
      ->check(CLI::IsMember({"async", "semi-sync"}));
  app.add_option("--data-dir", options.data_dir,
                 "Where the shards live (default: a temporary directory, removed at exit)");
  app.add_option("--listen", listen, "host:port of the router's ChatStore listener (port 0: any)");
  std::string log_level = "warn";
  app.add_option(
      "--log-level", log_level,
      "trace, debug, info, warn (default: quiet unless something goes wrong), error, off");
  CLI11_PARSE(app, argc, argv);
  options.logger = MakeProcessLogger("scrollback-local", log_level);
  options.node.replication.default_ack =
      default_ack == "semi-sync" ? AckMode::kSemiSync : AckMode::kAsync;

  StopSignals stop_signals;  // Before any thread starts.

  auto cluster = EmbeddedCluster::Start(options);
  if (!cluster.ok()) {
    fmt::print(stderr, "scrollback-local: {}\n", cluster.status().ToString());
    return 1;
  }
  RouterOptions router_options;
  router_options.rpc.listen_address = listen;
  router_options.rpc.logger = options.logger;
  auto router = RouterServer::Start(router_options, (*cluster)->shard_maps());
  if (!router.ok()) {
    fmt::print(stderr, "scrollback-local: router: {}\n", router.status().ToString());
    return 1;
  }

  auto map = (*cluster)->shard_maps()->Current();
  fmt::print("Scrollback local cluster: {} nodes, {} shards x {} copies, data in {}\n",
             (*cluster)->node_count(), map->shards().size(), (*cluster)->replication_factor(),
             (*cluster)->data_dir());
  for (size_t i = 0; i < (*cluster)->node_count(); ++i) {
    fmt::print("  {}  {}  ({} shards)\n", (*cluster)->node_id(i), (*cluster)->node(i)->address(),
               (*cluster)->node(i)->Shards().size());
  }
  fmt::print("\nChatStore API (schema/chatstore.capnp) on {} (router).\n", (*router)->address());
  fmt::print("Smart clients may also connect to the nodes directly.\n");
  fmt::print("Status:  build/cli/scrollbackctl status --node {}\n", (*cluster)->node(0)->address());
  fmt::print("Verify:  build/cli/scrollbackctl verify --node {}\n", (*cluster)->node(0)->address());
  fmt::print("Stop with Ctrl-C.\n");
  std::fflush(stdout);

  const std::string received = stop_signals.Wait();
  fmt::print("\nscrollback-local: {} received, stopping\n", received);
  (*router)->Stop(std::chrono::seconds(2));
  router->reset();
  cluster->reset();
  return 0;
}

}  // namespace
}  // namespace scrollback

int main(int argc, char** argv) { return scrollback::Run(argc, argv); }
