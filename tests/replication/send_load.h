// A cluster under a send load, and the checks made afterwards from what clients were told
// (acknowledged sends, their seqs and write tokens): shared by the failover and resharding tests.
#pragma once

#include <algorithm>
#include <catch2/catch.hpp>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cluster/cluster_test_util.h"
#include "replication/replication_test_util.h"

namespace scrollback::replication_testing {

inline constexpr uint64_t kFirstConv = 500;

inline EmbeddedClusterOptions FailoverOptions(AckMode ack) {
  EmbeddedClusterOptions options;
  options.shards = 6;
  options.lease.ttl = std::chrono::milliseconds(600);
  options.controller.leader_ttl = std::chrono::milliseconds(600);
  options.node.replication.default_ack = ack;
  options.node.replication.semi_sync_timeout = std::chrono::milliseconds(2000);
  return options;
}

struct AckedSend {
  uint64_t conv = 0;
  std::string id;
  uint64_t seq = 0;
  WriteToken token;
};

// One chain of sends per conversation on the fixture's loop. Each send is retried with the same
// client_msg_id until it is acknowledged (idempotent), so every message a chain started ends
// acknowledged, and each conversation's seqs must be exactly 1..n.
class SendLoad {
 public:
  SendLoad(ClusterFixture& f, std::vector<uint64_t> convs, WriteOptions write)
      : f_(f), convs_(std::move(convs)), write_(write), next_(convs_.size(), 0) {}

  void Start() {
    for (size_t i = 0; i < convs_.size(); ++i) {
      chains_.push_back(Chain(i).eagerlyEvaluate(
          [](kj::Exception&& e) { FAIL("send chain failed: " << e.getDescription().cStr()); }));
    }
  }
  // Lets every chain finish the send it is on, then stops them.
  void Stop() {
    stopping_ = true;
    REQUIRE(f_.Eventually([&] { return running_ == 0; }, std::chrono::seconds(60)));
    chains_.clear();
  }
  // Acknowledged sends so far to `conv`.
  size_t AckedTo(uint64_t conv) const {
    size_t n = 0;
    for (const AckedSend& a : acked) n += a.conv == conv;
    return n;
  }
  // Waits until every conversation has `more` acknowledged sends beyond what it had.
  bool EachGains(size_t more, std::chrono::milliseconds limit = std::chrono::seconds(30)) {
    std::map<uint64_t, size_t> from;
    for (uint64_t conv : convs_) from[conv] = AckedTo(conv);
    return f_.Eventually(
        [&] {
          for (uint64_t conv : convs_) {
            if (AckedTo(conv) < from[conv] + more) return false;
          }
          return true;
        },
        limit);
  }

  std::vector<AckedSend> acked;
  uint64_t failed_attempts = 0;

 private:
  kj::Promise<void> Chain(size_t i) {
    if (stopping_) return kj::READY_NOW;
    ++running_;
    const std::string id = "c" + std::to_string(convs_[i]) + "-" + std::to_string(next_[i]);
    return Attempt(i, id).then([this, i] {
      --running_;
      ++next_[i];
      return Chain(i);
    });
  }
  kj::Promise<void> Attempt(size_t i, std::string id) {
    return f_.client->SendMessage(Send(convs_[i], 1, id, "body of " + id), write_)
        .then([this, i, id](Result<SendMessageResult> sent) -> kj::Promise<void> {
          if (sent.ok()) {
            acked.push_back({convs_[i], id, sent->seq, sent->token});
            return kj::READY_NOW;
          }
          ++failed_attempts;  // Unavailable while a failover runs, notReplicated, ...
          return f_.io.provider->getTimer().afterDelay(20 * kj::MILLISECONDS).then([this, i, id] {
            return Attempt(i, id);
          });
        });
  }

  ClusterFixture& f_;
  std::vector<uint64_t> convs_;
  WriteOptions write_;
  std::vector<uint64_t> next_;
  std::vector<kj::Promise<void>> chains_;
  bool stopping_ = false;
  int running_ = 0;
};

// Conversations kFirstConv.. such that every shard has at least one.
inline std::vector<uint64_t> ConversationsOnEveryShard(ClusterFixture& f) {
  auto map = f.cluster->shard_maps()->Current();
  std::set<uint64_t> covered;
  std::vector<uint64_t> convs;
  for (uint64_t conv = kFirstConv; covered.size() < map->shards().size(); ++conv) {
    if (covered.insert(map->ShardForKey(conv).shard_id).second) convs.push_back(conv);
  }
  for (uint64_t conv : convs) CreateConversations(f, conv, 1);
  return convs;
}

// Every conversation's whole history, oldest first (strong reads, retried through failovers).
// `pages` (if given) describes each page read: cursor, seqs returned, has_more, next cursor.
inline std::vector<Message> History(ClusterFixture& f, uint64_t conv,
                                    std::string* pages = nullptr) {
  std::vector<Message> out;
  uint64_t cursor = 0;
  for (;;) {
    HistoryQuery q{conv, Direction::kOldestFirst, cursor, {}, 200};
    Result<HistoryPage> page = Status::Unavailable("not read");
    REQUIRE(f.Eventually([&] {
      page = f.Wait(f.client->ReadHistory(q));
      return page.ok();
    }));
    if (pages) {
      *pages += "\n  after " + std::to_string(cursor) + ": " +
                std::to_string(page->messages.size()) + " messages";
      if (!page->messages.empty()) {
        *pages += " " + std::to_string(page->messages.front().seq) + ".." +
                  std::to_string(page->messages.back().seq);
      }
      *pages += page->has_more ? ", more after " + std::to_string(page->next_cursor_seq) : "";
    }
    for (Message& m : page->messages) out.push_back(std::move(m));
    if (!page->has_more) return out;
    cursor = page->next_cursor_seq;
  }
}

// What clients were told holds: every acknowledged send is in its conversation's history
// exactly once, at the seq it was acknowledged with; seqs are exactly 1..n; and per shard, the
// acknowledged tokens never go back in epoch as their LSNs grow, and every acknowledged write
// of an epoch lies at or before the start of the next epoch in the primary's history (no two
// primaries accepted writes in the same range of the log).
inline void CheckAcknowledged(ClusterFixture& f, const std::vector<AckedSend>& acked) {
  std::map<uint64_t, std::vector<const AckedSend*>> by_conv;
  for (const AckedSend& a : acked) by_conv[a.conv].push_back(&a);
  for (const auto& [conv, sends] : by_conv) {
    std::string pages;
    std::vector<Message> history = History(f, conv, &pages);
    std::map<std::string, std::vector<uint64_t>> seqs_of;
    bool dense = true;
    for (size_t k = 0; k < history.size(); ++k) {
      dense = dense && history[k].seq == k + 1;
      seqs_of[history[k].client_msg_id].push_back(history[k].seq);
    }
    if (!dense) {
      // Where the hole is, copy by copy: what a failure needs to be understood.
      auto map = f.cluster->shard_maps()->Current();
      const ShardInfo& shard = map->ShardForKey(conv);
      std::string copies;
      uint64_t missing = 0;
      for (size_t k = 0; k < history.size(); ++k) {
        if (history[k].seq != k + 1) {
          missing = k + 1;
          break;
        }
      }
      for (size_t i = 0; i < f.cluster->node_count(); ++i) {
        auto hosted = HostedOn(f, i, shard.shard_id);
        if (!hosted) continue;
        auto epochs = hosted->store->EpochHistory();
        copies += "\n  " + f.cluster->node_id(i) + " " + ShardRoleName(hosted->assignment.role) +
                  " lsn " + std::to_string(hosted->store->LatestSequence()) + " has seq " +
                  std::to_string(missing) + ": " +
                  (hosted->store->GetMessage(conv, missing).ok() ? "yes" : "no") + "; epochs";
        for (const EpochRecord& e : epochs.ok() ? *epochs : std::vector<EpochRecord>{}) {
          copies += " " + std::to_string(e.epoch) + "@" + std::to_string(e.start_lsn);
        }
        for (int cache_only = 0; cache_only < 2; ++cache_only) {
          std::optional<CacheOnlyReads> memory;
          if (cache_only) memory.emplace();
          auto page =
              hosted->store->ReadHistory({conv, Direction::kOldestFirst, missing - 2, {}, 4});
          copies += cache_only ? "; cache-only page:" : "; page:";
          if (!page.ok()) copies += " " + page.status().ToString();
          for (const Message& m : page.ok() ? page->messages : std::vector<Message>{}) {
            copies += " " + std::to_string(m.seq);
          }
        }
      }
      FAIL("conversation " << conv << " (shard " << shard.shard_id << ", primary " << shard.primary
                           << ") lacks seq " << missing << ":" << copies
                           << "\npages read:" << pages);
    }
    for (const AckedSend* a : sends) {
      INFO("conversation " << conv << " send " << a->id);
      REQUIRE(seqs_of[a->id].size() == 1);  // Present, exactly once.
      CHECK(seqs_of[a->id][0] == a->seq);
    }
  }
  std::map<uint64_t, std::vector<WriteToken>> by_shard;
  for (const AckedSend& a : acked) by_shard[a.token.shard_id].push_back(a.token);
  auto map = f.cluster->shard_maps()->Current();
  for (auto& [shard_id, tokens] : by_shard) {
    std::sort(tokens.begin(), tokens.end(),
              [](const WriteToken& a, const WriteToken& b) { return a.lsn < b.lsn; });
    for (size_t k = 1; k < tokens.size(); ++k) {
      INFO("shard " << shard_id << " lsn " << tokens[k].lsn);
      CHECK(tokens[k].epoch >= tokens[k - 1].epoch);
    }
    const ShardInfo* info = map->FindShard(shard_id);
    if (info == nullptr) {
      // Split since: its children inherited its epoch history, and no write it acknowledged
      // lies past the LSN it was sealed at. (A shard split twice since has no child left in
      // the map; its grandchildren were checked when it split.)
      for (const ShardInfo& s : map->shards()) {
        if (s.split_from == shard_id) info = &s;
      }
      if (info == nullptr) continue;
      for (const WriteToken& t : tokens) {
        INFO("shard " << shard_id << " sealed at lsn " << info->split_lsn);
        CHECK(t.lsn <= info->split_lsn);
      }
    }
    auto hosted = HostedOn(f, f.cluster->IndexOf(info->primary), info->shard_id);
    REQUIRE(hosted);
    auto history = hosted->store->EpochHistory();
    REQUIRE(history.ok());
    for (const WriteToken& t : tokens) {
      for (const EpochRecord& e : *history) {
        if (e.epoch <= t.epoch) continue;
        INFO("shard " << shard_id << ": a write acknowledged at epoch " << t.epoch << " lsn "
                      << t.lsn << " lies past epoch " << e.epoch << "'s start " << e.start_lsn);
        CHECK(t.lsn <= e.start_lsn);
        break;
      }
    }
  }
}

// The shard map as the (uncut) metadata store has it.
inline ShardMap StoredMap(ClusterFixture& f) {
  auto map = ReadShardMap(*f.cluster->metadata());
  REQUIRE(map.ok());
  return std::move(map).value();
}

}  // namespace scrollback::replication_testing
