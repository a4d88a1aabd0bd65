// Helpers shared by the replication tests: raw calls to one node, verify, hosted copies,
// metrics.
#pragma once

#include <capnp/rpc-twoparty.h>

#include <catch2/catch.hpp>
#include <optional>
#include <string>

#include "cluster/cluster_test_util.h"
#include "scrollback/admin/verify.h"
#include "scrollback/schema/chatstore.capnp.h"

namespace scrollback::replication_testing {

using testing::ClusterFixture;
namespace s = ::scrollback::schema;

// A plain Cap'n Proto connection to one node, for calls the smart client would not make.
struct RawNode {
  RawNode(kj::AsyncIoContext& io, const std::string& address) {
    auto addr = io.provider->getNetwork().parseAddress(address).wait(io.waitScope);
    stream = addr->connect().wait(io.waitScope);
    rpc = kj::heap<capnp::TwoPartyClient>(*stream);
    node = rpc->bootstrap().castAs<s::Node>();
  }
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> rpc;
  s::Node::Client node = nullptr;
};

template <typename Reply>
ErrorCode CodeOf(const Reply& reply) {
  return reply.hasError() ? static_cast<ErrorCode>(reply.getError().getCode()) : ErrorCode::kOk;
}

inline SendMessageRequest Send(uint64_t conv, uint64_t sender, const std::string& id,
                               const std::string& body) {
  return SendMessageRequest{conv, sender, id, body};
}

// Every shard's copies digested at one LSN by `verify`; fails the test with the verdicts
// otherwise.
inline void RequireIdentical(ClusterFixture& f, uint64_t only_shard = 0) {
  admin::VerifyOptions options;
  options.only_shard = only_shard;
  auto verdicts = admin::VerifyShards(f.io, *f.cluster->shard_maps()->Current(), options);
  REQUIRE(!verdicts.empty());
  for (const auto& v : verdicts) {
    INFO("shard " << v.shard_id << ": " << v.problem);
    CHECK(v.identical);
    CHECK(v.copies.size() == f.cluster->replication_factor());
  }
}

// Polls `verify` until every copy is identical (replicas catching up) or 20 s pass.
inline bool EventuallyIdentical(ClusterFixture& f, uint64_t only_shard = 0) {
  return f.Eventually(
      [&] {
        admin::VerifyOptions options;
        options.only_shard = only_shard;
        options.attempts = 3;
        for (const auto& v :
             admin::VerifyShards(f.io, *f.cluster->shard_maps()->Current(), options)) {
          if (!v.identical) return false;
        }
        return true;
      },
      std::chrono::seconds(20));
}

// The HostedShard of `shard_id` on node `index`, or nullptr.
inline std::optional<HostedShard> HostedOn(ClusterFixture& f, size_t index, uint64_t shard_id) {
  for (const HostedShard& h : f.cluster->node(index)->Shards()) {
    if (h.assignment.shard_id == shard_id) return h;
  }
  return std::nullopt;
}

// Conversations 1..n, each with members 1..3, creator 1.
inline void CreateConversations(ClusterFixture& f, uint64_t first, int n) {
  for (int i = 0; i < n; ++i) {
    auto created = f.Wait(f.client->CreateConversation({first + i, 1, {2, 3}, "r"}));
    INFO(created.status().ToString());
    REQUIRE(created.ok());
  }
}

// The value of the first sample of `metric` in `text` (Prometheus exposition), or 0.
inline uint64_t MetricValue(const std::string& text, const std::string& metric) {
  size_t at = 0;
  while ((at = text.find(metric, at)) != std::string::npos) {
    const bool line_start = at == 0 || text[at - 1] == '\n';
    const char after = text[at + metric.size()];
    if (line_start && (after == ' ' || after == '{')) {
      size_t space = text.find(' ', at);
      return std::stoull(text.substr(space + 1, text.find('\n', space) - space - 1));
    }
    at += metric.size();
  }
  return 0;
}

}  // namespace scrollback::replication_testing
