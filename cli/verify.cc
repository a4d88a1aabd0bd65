#include "scrollback/admin/verify.h"

#include <capnp/rpc-twoparty.h>

#include <map>
#include <memory>

#include "scrollback/schema/chatstore.capnp.h"
#include "scrollback/schema/wire.h"

namespace scrollback::admin {
namespace {

namespace s = ::scrollback::schema;

struct Session {
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> rpc;
  s::Node::Client node = nullptr;
};

// Asks `node` for its digest of `shard_id` at `at` (0: now).
CopyDigest Digest(kj::AsyncIoContext& io, Session& session, const std::string& node_id,
                  uint64_t shard_id, uint64_t at, kj::Duration timeout) {
  CopyDigest out;
  out.node_id = node_id;
  try {
    auto request = session.node.checksumShardRequest();
    request.setShardId(shard_id);
    request.setAtLsn(at);
    auto reply = io.provider->getTimer().timeoutAfter(timeout, request.send()).wait(io.waitScope);
    if (reply.hasError()) {
      out.error = wire::FromWire(reply.getError());
      return out;
    }
    out.lsn = reply.getLsn();
    out.checksum = reply.getChecksum();
    out.keys = reply.getKeys();
  } catch (const kj::Exception& e) {
    out.error = Status::Unavailable(node_id + ": " + e.getDescription().cStr());
  }
  return out;
}

}  // namespace

std::vector<ShardVerdict> VerifyShards(kj::AsyncIoContext& io, const ShardMap& map,
                                       const VerifyOptions& options) {
  const kj::Duration timeout = options.call_timeout.count() * kj::MILLISECONDS;
  std::map<std::string, std::unique_ptr<Session>> sessions;
  auto session_of = [&](const std::string& node_id) -> Result<Session*> {
    auto it = sessions.find(node_id);
    if (it != sessions.end()) return it->second.get();
    const NodeInfo* info = map.FindNode(node_id);
    if (info == nullptr) return Status::NotFound("node " + node_id + " is not in the map");
    try {
      auto session = std::make_unique<Session>();
      auto address = io.provider->getNetwork().parseAddress(info->address).wait(io.waitScope);
      session->stream =
          io.provider->getTimer().timeoutAfter(timeout, address->connect()).wait(io.waitScope);
      session->rpc = kj::heap<capnp::TwoPartyClient>(*session->stream);
      session->node = session->rpc->bootstrap().castAs<s::Node>();
      Session* raw = session.get();
      sessions.emplace(node_id, std::move(session));
      return raw;
    } catch (const kj::Exception& e) {
      return Status::Unavailable(node_id + " at " + info->address + ": " +
                                 e.getDescription().cStr());
    }
  };
  auto digest_at = [&](const std::string& node_id, uint64_t shard_id, uint64_t at) {
    auto session = session_of(node_id);
    if (!session.ok()) {
      CopyDigest failed;
      failed.node_id = node_id;
      failed.error = session.status();
      return failed;
    }
    CopyDigest got = Digest(io, **session, node_id, shard_id, at, timeout);
    if (got.error.code() == ErrorCode::kUnavailable) sessions.erase(node_id);
    return got;
  };

  std::vector<ShardVerdict> verdicts;
  for (const ShardInfo& shard : map.shards()) {
    if (options.only_shard != 0 && shard.shard_id != options.only_shard) continue;
    ShardVerdict verdict;
    verdict.shard_id = shard.shard_id;
    for (int attempt = 0; attempt < std::max(1, options.attempts); ++attempt) {
      verdict.copies.clear();
      verdict.problem.clear();
      CopyDigest primary = digest_at(shard.primary, shard.shard_id, 0);
      primary.primary = true;
      verdict.lsn = primary.lsn;
      verdict.copies.push_back(primary);
      if (!primary.error.ok()) {
        verdict.problem = "primary " + shard.primary + ": " + primary.error.ToString();
        continue;
      }
      bool retry = false;
      for (const std::string& replica : shard.replicas) {
        CopyDigest copy = digest_at(replica, shard.shard_id, primary.lsn);
        verdict.copies.push_back(copy);
        if (!copy.error.ok()) {
          // Past the primary's LSN (it wrote meanwhile): ask again at a newer one.
          retry = retry || copy.error.code() == ErrorCode::kFailedPrecondition;
          verdict.problem += (verdict.problem.empty() ? "" : "; ") + std::string("replica ") +
                             replica + ": " + copy.error.ToString();
        } else if (copy.checksum != primary.checksum || copy.keys != primary.keys) {
          verdict.problem +=
              (verdict.problem.empty() ? "" : "; ") + std::string("replica ") + replica +
              " differs at lsn " + std::to_string(primary.lsn) + ": " + std::to_string(copy.keys) +
              " keys, checksum " + std::to_string(copy.checksum) + " vs the primary's " +
              std::to_string(primary.keys) + " keys, checksum " + std::to_string(primary.checksum);
        }
      }
      if (verdict.problem.empty() || !retry) break;
    }
    verdict.identical = verdict.problem.empty();
    verdicts.push_back(std::move(verdict));
  }
  return verdicts;
}

}  // namespace scrollback::admin
