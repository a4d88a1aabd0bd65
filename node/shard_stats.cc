#include "shard_stats.h"

#include <algorithm>

#include "load_counters.h"
#include "scrollback/schema/wire.h"

namespace scrollback {

namespace s = ::scrollback::schema;

void WriteShardStats(const ShardTable& table, s::Node::ShardStatsResults::Builder results) {
  const unsigned n = static_cast<unsigned>(table.shards.size() + table.pending.size());
  auto stats = results.initStats(n);
  auto role = [](ShardRole r) {
    return r == ShardRole::kPrimary ? s::ShardRole::PRIMARY : s::ShardRole::REPLICA;
  };
  unsigned i = 0;
  for (const HostedShard& shard : table.shards) {
    auto out = stats[i++];
    out.setShardId(shard.assignment.shard_id);
    out.setRole(role(shard.assignment.role));
    out.setState(s::ShardState::SERVING);
    out.setEpoch(shard.assignment.epoch);
    out.setPrimaryNode(wire::AsText(shard.assignment.primary_node));
    out.setAppliedLsn(shard.log->lsn());
    if (shard.assignment.role == ShardRole::kReplica) {
      out.setLagLsn(shard.log->lag_lsn());
      out.setLagMs(shard.log->lag_ms());
    } else {
      auto pulls = shard.log->Pulls();
      auto list = out.initReplicasOnPrimary(static_cast<unsigned>(pulls.size()));
      const int64_t now = replication::SteadyMs();
      for (unsigned k = 0; k < pulls.size(); ++k) {
        list[k].setNodeId(wire::AsText(pulls[k].node_id));
        list[k].setAppliedLsn(pulls[k].applied_lsn);
        list[k].setLastPullAgeMs(static_cast<uint64_t>(std::max<int64_t>(0, now - pulls[k].at_ms)));
      }
    }
    // Sealed first: once sealed() holds, the LSN read after it is the final one.
    const bool sealed = shard.store->sealed();
    auto got = shard.store->GetStats();
    if (!got.ok()) {
      out.setLastError(wire::AsText(got.status().ToString()));
      continue;
    }
    out.setLiveDataBytes(got->live_data_bytes);
    out.setMemtableBytes(got->memtable_bytes);
    out.setEstimatedKeys(got->estimated_keys);
    out.setLatestSequence(got->latest_sequence);
    out.setSealed(sealed);
    if (shard.load) {
      const LoadSnapshot load = shard.load->Snapshot();
      out.setReadOpsPerS(load.read_ops_per_s);
      out.setWriteOpsPerS(load.write_ops_per_s);
      out.setBytesPerS(load.bytes_per_s);
      const auto n = static_cast<unsigned>(load.buckets.size());
      auto buckets = out.initLoadBuckets(n);
      auto reads = out.initBucketReadOpsPerS(n);
      auto writes = out.initBucketWriteOpsPerS(n);
      auto bytes = out.initBucketBytesPerS(n);
      for (unsigned b = 0; b < n; ++b) {
        buckets.set(b, load.buckets[b].read_ops_per_s + load.buckets[b].write_ops_per_s);
        reads.set(b, load.buckets[b].read_ops_per_s);
        writes.set(b, load.buckets[b].write_ops_per_s);
        bytes.set(b, load.buckets[b].bytes_per_s);
      }
      auto hot = out.initHotTokens(static_cast<unsigned>(load.hot_tokens.size()));
      for (unsigned k = 0; k < load.hot_tokens.size(); ++k) {
        hot[k].setToken(load.hot_tokens[k].token);
        hot[k].setShare(load.hot_tokens[k].share);
      }
    }
  }
  for (const PendingShard& pending : table.pending) {
    auto out = stats[i++];
    out.setShardId(pending.assignment.shard_id);
    out.setRole(role(pending.assignment.role));
    out.setEpoch(pending.assignment.epoch);
    out.setPrimaryNode(wire::AsText(pending.assignment.primary_node));
    out.setState(pending.state == ShardState::kRefused         ? s::ShardState::REFUSED
                 : pending.state == ShardState::kBootstrapping ? s::ShardState::BOOTSTRAPPING
                                                               : s::ShardState::OPENING);
    if (pending.log) {
      out.setBootstrapBytesDone(pending.log->bootstrap_done.load());
      out.setBootstrapBytesTotal(pending.log->bootstrap_total.load());
    }
    out.setLastError(wire::AsText(pending.why));
  }
}

}  // namespace scrollback
