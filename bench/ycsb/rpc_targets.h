// RPC targets of scrollback-bench (see rpc_targets.cc).
#pragma once

#include <capnp/capability.h>

#include <string>

#include "target.h"

namespace scrollback::ycsb {

// `embedded`: an EmbeddedCluster (3 nodes, 16 shards, options.replication_factor copies)
// started in this process; reads with options.consistency.
Result<std::unique_ptr<Target>> NewEmbeddedTarget(const TargetOptions& options);
// `cluster=HOST:PORT`: a running cluster, reached through the smart client; the shard map is
// read from the node at HOST:PORT.
Result<std::unique_ptr<Target>> NewClusterTarget(const std::string& node_address,
                                                 const TargetOptions& options);
// `router=HOST:PORT`: a running scrollback-router, called as a plain ChatStore client (what a
// service that does not link the smart client does).
Result<std::unique_ptr<Target>> NewRouterTarget(const std::string& router_address);
// `embedded-router`: an EmbeddedCluster and a RouterServer in this process, called through the
// router.
Result<std::unique_ptr<Target>> NewEmbeddedRouterTarget(const TargetOptions& options);
// The echo service (bench/echo.capnp) behind the `echo` target and rpc_bench's baseline.
capnp::Capability::Client NewEchoService();
// `echo`: a bare Cap'n Proto echo server; every operation is one round trip of a message's size.
Result<std::unique_ptr<Target>> NewEchoTarget(const TargetOptions& options);

}  // namespace scrollback::ycsb
