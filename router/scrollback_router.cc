// scrollback-router: a stateless ChatStore proxy. Follows the shard map in etcd and forwards
// each call to the node that owns its key. Run as many as needed behind any TCP load balancer.
// SIGTERM or SIGINT: stop accepting, finish calls in flight, exit 0.
#include <fmt/format.h>
#include <spdlog/logger.h>

#include <CLI/CLI.hpp>
#include <cstring>
#include <thread>

#include "scrollback/cluster/etcd_metadata_store.h"
#include "scrollback/cluster/shard_map_store.h"
#include "scrollback/cluster/stop_signals.h"
#include "scrollback/router/router_server.h"

namespace scrollback {
namespace {

int Run(int argc, char** argv) {
  CLI::App app{"scrollback-router: a stateless ChatStore proxy."};
  RouterOptions options;
  std::string etcd = "127.0.0.1:2379";
  app.add_option("--listen", options.rpc.listen_address, "host:port for ChatStore (port 0: any)");
  app.add_option("--etcd", etcd, "host:port of etcd's client URL");
  app.add_option("--event-loops", options.rpc.event_loops, "Event-loop threads")
      ->check(CLI::Range(1, 64));
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off (stderr)");
  CLI11_PARSE(app, argc, argv);
  const Logger log = MakeProcessLogger("scrollback-router", log_level);
  options.rpc.logger = log;

  StopSignals stop_signals;  // Before any thread starts.

  EtcdOptions etcd_options;
  etcd_options.endpoint = etcd;
  etcd_options.wait_for_etcd = std::chrono::seconds(30);
  etcd_options.logger = log;
  auto metadata = NewEtcdMetadataStore(etcd_options);
  if (!metadata.ok()) {
    log->critical("etcd {}: {}", etcd, metadata.status().ToString());
    return 1;
  }
  // Wait for the nodes to publish the first map.
  auto maps = MetadataShardMapSource::Create(*metadata, log);
  for (int i = 0; i < 300 && !maps.ok(); ++i) {
    if (i == 0) log->info("waiting for the first shard map: {}", maps.status().ToString());
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    maps = MetadataShardMapSource::Create(*metadata, log);
  }
  if (!maps.ok()) {
    log->critical("shard map: {}", maps.status().ToString());
    return 1;
  }
  auto server = RouterServer::Start(options, *maps);
  if (!server.ok()) {
    log->critical("listen: {}", server.status().ToString());
    return 1;
  }
  log->info("started: ChatStore on {}, etcd {}, shard map version {} ({} shards)",
            (*server)->address(), etcd, (*maps)->Current()->version(),
            (*maps)->Current()->shards().size());
  // The line process supervisors and tests read to learn the address (stdout).
  fmt::print("scrollback-router: ChatStore on {}, etcd {}\n", (*server)->address(), etcd);
  std::fflush(stdout);
  const std::string received = stop_signals.Wait();
  log->info("{} received, stopping", received);
  (*server)->Stop(std::chrono::seconds(5));
  log->info("stopped");
  return 0;
}

}  // namespace
}  // namespace scrollback

int main(int argc, char** argv) { return scrollback::Run(argc, argv); }
