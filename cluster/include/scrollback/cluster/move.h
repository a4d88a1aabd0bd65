// Moving copies of shards between nodes, and nodes in and out of the map (docs/resharding.md,
// Move). A move is "add a replica, let it catch up, switch the primary over to it if the moved
// copy was the primary, remove the old copy"; the request goes through the metadata store to the
// failover controller, which owns every change of the map's shards. Its progress lives in the
// map (ShardInfo.move_from / move_to), so a move survives the crash of the controller (the next
// leader carries on), of the target (it bootstraps again when back) and of the source (a
// failover replaces a dead primary; the move then completes or is aborted). Data travels by the
// ordinary replica bootstrap (a checkpoint, throttled by ReplicationOptions::bootstrap_mb_per_s,
// progress in Node.shardStats) and log shipping: nothing acknowledged can be lost, and the range
// never has two owners (only the copy set changes; the primary changes by a fenced switchover).
//
// The controller's step, per shard with a move:
//   start     move_to joins the replicas (the map records move_from / move_to);
//   catch up  move_to's copy serves and has the primary's LSN (probed the same pass, primary
//   first); switch    if move_from is the primary: a planned switchover to move_to (switchover.h);
//   finish    move_from leaves the copy set; move_from / move_to are cleared.
// An abort before the switch removes move_to's copy again (the old placement never stopped
// serving); after the switch only the finish is left, and the abort is refused.
//
// Keys (persisted; never rename):
//   /scrollback/move/<shard id>   "<from node> <to node>", or "abort"
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "scrollback/cluster/metadata_store.h"
#include "scrollback/router/shard_map.h"

namespace scrollback {

inline constexpr const char* kMovePrefix = "/scrollback/move/";

struct MoveResult {
  uint64_t shard_id = 0;
  std::string from;
  std::string to;
  bool was_primary = false;           // The moved copy was the primary (a switchover ran).
  std::chrono::milliseconds took{0};  // From the request to the finish.
};

// Where a move stands, for progress reports.
enum class MovePhase { kRequested, kCatchingUp, kSwitching, kDone };
const char* MovePhaseName(MovePhase phase);

// Asks for `shard_id`'s copy on `from` to move to `to`, and waits until it has (calling
// `progress`, if set, on every poll, about every 100 ms). invalid-argument: unknown shard or
// node, `from` holds no copy, `to` holds one already; failed-precondition: the shard is already
// moving, splitting or switching over, or the move was aborted; unavailable after `timeout` (the
// move goes on: wait again, or AbortMove).
Result<MoveResult> MoveCopy(MetadataStore& metadata, uint64_t shard_id, const std::string& from,
                            const std::string& to, std::chrono::milliseconds timeout,
                            const std::function<void(MovePhase)>& progress = {});

// Aborts `shard_id`'s move: before its switchover the new copy is removed and the old placement
// keeps serving; failed-precondition when no move is in progress or it has switched already.
// Returns once the map no longer records the move.
Status AbortMove(MetadataStore& metadata, uint64_t shard_id, std::chrono::milliseconds timeout);

// Adds a node to the map (no shards yet; rebalancing or moves give it some). Its address is
// filled in when it starts (PublishNodeAddress). alreadyExists if the map names it.
Status AddNodeToMap(MetadataStore& metadata, const std::string& node_id,
                    const std::string& address = "");

// Removes a node that holds no copy from the map. failed-precondition while it holds one.
Status RemoveNodeFromMap(MetadataStore& metadata, const std::string& node_id);

// Moves every copy off `node_id`, one shard after another, each to the node with the fewest
// copies among those holding none of that shard (ties: the lowest id). The node can then be
// removed. failed-precondition when some shard has no node to go to.
Result<std::vector<MoveResult>> DrainCopies(
    MetadataStore& metadata, const std::string& node_id,
    std::chrono::milliseconds timeout_per_shard,
    const std::function<void(const MoveResult&)>& done = {});

}  // namespace scrollback
