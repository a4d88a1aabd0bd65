// RPC targets of scrollback-bench (see rpc_targets.cc).
#pragma once

#include <string>

#include "target.h"

namespace scrollback::ycsb {

// `embedded`: an EmbeddedCluster (3 nodes, 16 shards) started in this process.
Result<std::unique_ptr<Target>> NewEmbeddedTarget(const TargetOptions& options);
// `cluster=HOST:PORT`: a running cluster, reached through the smart client; the shard map is
// read from the node at HOST:PORT.
Result<std::unique_ptr<Target>> NewClusterTarget(const std::string& node_address);
// `echo`: a bare Cap'n Proto echo server; every operation is one round trip of a message's size.
Result<std::unique_ptr<Target>> NewEchoTarget(const TargetOptions& options);

}  // namespace scrollback::ycsb
