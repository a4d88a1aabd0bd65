// Replica verification (scrollbackctl verify): are all copies of a shard identical?
//
// For each shard, the primary digests its copy (every column family, ShardChecksum) at its
// current LSN L; each replica is then asked for its digest at exactly L (it holds its log there,
// digests, and resumes; Replication.checksumShard). Copies are identical when every digest and
// key count equals the primary's. A replica already past L (the primary wrote meanwhile) is
// asked again at a newer L, up to `attempts` times: under a steady write load, verification
// converges once a replica catches up within an attempt.
#pragma once

#include <kj/async-io.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "scrollback/router/shard_map.h"
#include "scrollback/schema/status.h"

namespace scrollback::admin {

struct CopyDigest {
  std::string node_id;
  bool primary = false;
  uint64_t lsn = 0;
  uint64_t checksum = 0;
  uint64_t keys = 0;
  Status error;  // Why this copy could not be digested (then the other fields are 0).
};

struct ShardVerdict {
  uint64_t shard_id = 0;
  bool identical = false;          // Every copy digested at the same LSN with the same checksum.
  uint64_t lsn = 0;                // The LSN compared at.
  std::vector<CopyDigest> copies;  // The primary first.
  std::string problem;             // Empty when identical; otherwise what differs or failed.
};

struct VerifyOptions {
  std::chrono::milliseconds call_timeout = std::chrono::seconds(40);
  int attempts = 20;
  uint64_t only_shard = 0;  // 0: every shard of the map.
};

// Blocks on `io` (the caller's event loop). One verdict per shard, in map order.
std::vector<ShardVerdict> VerifyShards(kj::AsyncIoContext& io, const ShardMap& map,
                                       const VerifyOptions& options = {});

}  // namespace scrollback::admin
