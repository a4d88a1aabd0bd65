// Write acknowledgement (docs/replication.md, Acknowledgement): a semi-sync write's reply waits,
// after its commit, until a replica that the shard map lists for its shard has applied the
// write's token (ShardLog's acknowledged LSN, raised by those replicas' pulls), or answers
// notReplicated after its timeout. Never a silent downgrade to async. Private to node/; used by
// the ChatStore service on its event loop.
#pragma once

#include <kj/async.h>
#include <kj/timer.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "node_core.h"
#include "shard_routing.h"

namespace scrollback {

// Results that carry write tokens: a write's, or a batch of sends'.
template <typename T>
struct IsWrite : std::false_type {};
template <typename V>
struct IsWrite<Written<V>> : std::true_type {};
template <typename V>
struct IsWrite<std::vector<Result<Written<V>>>> : std::true_type {};

class WriteAcknowledger {
 public:
  // `timer` belongs to the event loop the acknowledger's promises run on.
  WriteAcknowledger(std::shared_ptr<NodeCore> core, kj::Timer& timer)
      : core_(std::move(core)), timer_(timer) {}

  // Whether `write` waits for a replica (its mode, or the node's default).
  bool SemiSync(const WriteOptions& write) const;
  // The wait: the write's own timeout (capped at 60 s), else the node's.
  std::chrono::milliseconds Timeout(const WriteOptions& write) const;

  // Resolves once a replica the map lists for the token's shard has applied the token's LSN,
  // or to notReplicated after `timeout` (the write stays committed on the primary), or at once
  // when the shard has no replica here to wait for. Counted in /metrics.
  kj::Promise<Status> WaitReplicated(const WriteToken& token, std::chrono::milliseconds timeout);

  // The last step before a write's reply: a write that committed after the node's primary
  // lease ran out, or after its shard changed epoch, is answered `unavailable` rather than
  // acknowledged (CheckAcknowledgeable; decision 0010). Runs on the event loop.
  template <typename V>
  Result<Written<V>> Withhold(Result<Written<V>> result) const {
    if (!result.ok() || !core_->options.primary_lease) return result;
    Status ok = CheckAcknowledgeable(*core_, *core_->Table(), result->token);
    if (!ok.ok()) return ok;
    return result;
  }
  template <typename V>
  Result<std::vector<Result<Written<V>>>> Withhold(
      Result<std::vector<Result<Written<V>>>> result) const {
    if (!result.ok() || !core_->options.primary_lease) return result;
    auto table = core_->Table();
    for (auto& item : *result) {
      if (!item.ok()) continue;
      Status ok = CheckAcknowledgeable(*core_, *table, item->token);
      if (!ok.ok()) item = ok;
    }
    return result;
  }

  // A write's result, once acknowledged (or notReplicated).
  template <typename V>
  kj::Promise<Result<Written<V>>> Acknowledge(Result<Written<V>> result,
                                              std::chrono::milliseconds timeout) {
    if (!result.ok()) return std::move(result);
    const WriteToken token = result->token;
    return WaitReplicated(token, timeout)
        .then([result = std::move(result)](Status acked) mutable -> Result<Written<V>> {
          if (!acked.ok()) return acked;
          return std::move(result);
        });
  }

  // A batch: one wait per shard, for the highest token of its sends; the sends of a shard
  // that was not acknowledged answer notReplicated.
  template <typename V>
  kj::Promise<Result<std::vector<Result<Written<V>>>>> Acknowledge(
      Result<std::vector<Result<Written<V>>>> result, std::chrono::milliseconds timeout) {
    if (!result.ok()) return std::move(result);
    std::map<uint64_t, WriteToken> highest;
    for (const auto& item : *result) {
      if (!item.ok()) continue;
      WriteToken& top = highest[item->token.shard_id];
      if (item->token.lsn >= top.lsn) top = item->token;
    }
    auto waits = kj::heapArrayBuilder<kj::Promise<std::pair<uint64_t, Status>>>(highest.size());
    for (const auto& [shard_id, token] : highest) {
      waits.add(WaitReplicated(token, timeout).then([shard_id = shard_id](Status acked) {
        return std::make_pair(shard_id, std::move(acked));
      }));
    }
    return kj::joinPromises(waits.finish())
        .then([result = std::move(result)](kj::Array<std::pair<uint64_t, Status>> acks) mutable
              -> Result<std::vector<Result<Written<V>>>> {
          for (auto& item : *result) {
            if (!item.ok()) continue;
            for (const auto& [shard_id, acked] : acks) {
              if (shard_id == item->token.shard_id && !acked.ok()) item = acked;
            }
          }
          return std::move(result);
        });
  }

 private:
  std::shared_ptr<NodeCore> core_;
  kj::Timer& timer_;
};

}  // namespace scrollback
