// A shard directory's identity: which shard, range, placement and epoch a directory holds, so a
// node never serves a directory left by an earlier placement as if it were current. Private to
// node/. Format in docs/formats.md ("Shard directories").
//
//   data_dir/shard-<id>/                  the shard's RocksDB
//   data_dir/shard-<id>/SHARD_IDENTITY    this file (JSON), written atomically at every open
//                                         and clean close
//   data_dir/dropped/shard-<id>.p<placement>.<unix ms>/   directories the node stopped hosting
//
// The identity lives beside the RocksDB files, never inside the database: a replica's database
// must hold nothing but the primary's log (DESIGN.md, Replication).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "scrollback/node/storage_node.h"
#include "scrollback/schema/status.h"

namespace scrollback {

inline constexpr const char* kShardIdentityFile = "SHARD_IDENTITY";

struct ShardIdentity {
  uint32_t format = 1;  // Persisted; readers refuse a newer format.
  uint64_t shard_id = 0;
  TokenRange range;
  uint64_t placement_version = 0;
  uint64_t epoch = 0;
  ShardRole role = ShardRole::kPrimary;
  uint64_t lsn = 0;          // RocksDB's last sequence when written.
  bool clean_close = false;  // Written by a close (true) or an open (false).
  std::string node_id;       // The node that wrote it last.
};

// The identity in `dir`, nullopt when the directory or the file does not exist. corruption when
// the file exists but cannot be parsed.
Result<std::optional<ShardIdentity>> ReadShardIdentity(const std::string& dir);

// Writes `identity` to `dir` atomically (a temporary file, fsync, rename, fsync of the directory).
Status WriteShardIdentity(const std::string& dir, const ShardIdentity& identity);

// Whether a directory holding `found` may be opened for `wanted`. OK when it holds the same
// shard, range and placement at an epoch not newer than the map's. failed-precondition (a
// refusal, naming what differs) otherwise: it belongs to another placement, shard or range, or
// to a newer epoch than the map gives (the map would have gone back).
Status CheckShardIdentity(const ShardIdentity& found, const ShardAssignment& wanted);

// Renames `from` to `to` (replacing nothing: `to` must not exist) and fsyncs their parent
// directory, so that the rename survives a power loss (a split or merge copy made aside and put
// into place).
Status RenameDurably(const std::string& from, const std::string& to);

// Moves `dir` to `data_dir/<folder>/<name of dir>.p<placement>.<now_ms>` and returns the new
// path. Never deletes.
Result<std::string> MoveShardDirectoryAside(const std::string& data_dir, const std::string& dir,
                                            const std::string& folder, uint64_t placement_version,
                                            int64_t now_ms);

}  // namespace scrollback
