// Planned switchover (docs/replication.md, Switchover): moving a shard's primary on purpose,
// losing nothing even of async writes. The request goes through the metadata store to the
// failover controller, which owns every change of primary:
//   1. the map gives the shard epoch + 1 with switchTo = the target: the primary stops taking
//      writes (unavailable, retryable; writes already in flight are not acknowledged) and keeps
//      shipping its log;
//   2. once the target has applied everything the primary has, the map makes the target primary
//      at epoch + 2, the old primary a replica.
// The pause writes see is the time between the two maps plus the target's reopen as primary.
//
// Keys (persisted; never rename):
//   /scrollback/switchover/<shard id>   the target node id (empty: the most advanced replica)
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "scrollback/cluster/metadata_store.h"

namespace scrollback {

inline constexpr const char* kSwitchoverPrefix = "/scrollback/switchover/";

struct SwitchoverResult {
  uint64_t shard_id = 0;
  std::string from;
  std::string to;
  uint64_t epoch = 0;  // The new primary's epoch.
  // From the map that paused writes to the map that names the new primary.
  std::chrono::milliseconds pause{0};
};

// Asks for a switchover of `shard_id` to `to` (empty: its most advanced live replica) and
// waits until the map names the new primary. invalid-argument for an unknown shard or a target
// that is not one of its replicas; failed-precondition if the controller gave up (the target
// did not catch up in time: the old primary keeps the shard and takes writes again);
// unavailable after `timeout` (the request stays; the controller may still finish it).
Result<SwitchoverResult> Switchover(MetadataStore& metadata, uint64_t shard_id,
                                    const std::string& to, std::chrono::milliseconds timeout);

// Moves every primary of `node_id` to another copy, one shard after another (a drain before
// maintenance; the node keeps its replicas). Stops at the first failure.
Result<std::vector<SwitchoverResult>> DrainPrimaries(MetadataStore& metadata,
                                                     const std::string& node_id,
                                                     std::chrono::milliseconds timeout_per_shard);

}  // namespace scrollback
