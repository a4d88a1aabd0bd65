// Helpers for tests that start a StorageNode of their own.
#pragma once

#include <string>

#include "scrollback/node/storage_node.h"
#include "scrollback/schema/log.h"

namespace scrollback::testing {

// Options of a small node for tests: one event loop, one engine thread, 8 MiB caches, quiet
// unless SCROLLBACK_TEST_LOG is set.
inline NodeOptions SmallNodeOptions(const std::string& node_id, const std::string& data_dir) {
  NodeOptions options;
  options.node_id = node_id;
  options.data_dir = data_dir;
  options.event_loops = 1;
  options.engine_threads = 1;
  options.budgets.block_cache_bytes = 8ull << 20;
  options.budgets.write_buffer_bytes = 8ull << 20;
  options.logger = MakeTestLogger(node_id);
  return options;
}

}  // namespace scrollback::testing
