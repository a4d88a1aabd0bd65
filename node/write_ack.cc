#include "write_ack.h"

#include <algorithm>
#include <string>

namespace scrollback {

bool WriteAcknowledger::SemiSync(const WriteOptions& write) const {
  const AckMode mode =
      write.ack == AckMode::kDefault ? core_->options.replication.default_ack : write.ack;
  return mode == AckMode::kSemiSync;
}

std::chrono::milliseconds WriteAcknowledger::Timeout(const WriteOptions& write) const {
  if (write.timeout_ms == 0) return core_->options.replication.semi_sync_timeout;
  return std::chrono::milliseconds(std::min<uint32_t>(write.timeout_ms, 60'000));
}

kj::Promise<Status> WriteAcknowledger::WaitReplicated(const WriteToken& token,
                                                      std::chrono::milliseconds timeout) {
  auto table = core_->Table();
  const HostedShard* shard = table->FindShard(token.shard_id);
  if (shard == nullptr || shard->assignment.role != ShardRole::kPrimary ||
      shard->assignment.replica_nodes.empty()) {
    core_->metrics.RecordSemiSync(false, std::chrono::nanoseconds(0));
    return Status::NotReplicated("shard " + std::to_string(token.shard_id) +
                                 " has no replica to acknowledge a semi-sync write; it is "
                                 "committed on its primary only");
  }
  const auto start = std::chrono::steady_clock::now();
  std::shared_ptr<replication::ShardLog> log = shard->log;
  return log->WaitAcked(token.lsn, timer_, timeout)
      .attach(kj::mv(log))
      .then([core = core_, token, timeout, start](bool acked) -> Status {
        core->metrics.RecordSemiSync(acked, std::chrono::steady_clock::now() - start);
        if (acked) return Status::Ok();
        return Status::NotReplicated(
            "no replica of shard " + std::to_string(token.shard_id) + " applied lsn " +
            std::to_string(token.lsn) + " within " + std::to_string(timeout.count()) +
            " ms; the write is committed on the primary and may or may not survive a "
            "failover (retrying is safe)");
      });
}

}  // namespace scrollback
