// NodeMetrics: a storage node's request counters and latency histograms (GET /metrics).
// Private to node/.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "scrollback/schema/status.h"

namespace scrollback {

// Request counters and latency histograms, per ChatStore / Node method. Lock-free.
class NodeMetrics {
 public:
  enum Method : size_t {
    kCreateConversation,
    kGetConversation,
    kAddMembers,
    kRemoveMembers,
    kListMembers,
    kSendMessage,
    kSendBatch,
    kGetMessage,
    kReadHistory,
    kEditMessage,
    kDeleteMessage,
    kListInbox,
    kMarkRead,
    kApplyInboxUpdates,
    kHealth,
    kShardStats,
    kShardMap,
    kPullLog,
    kBeginCheckpoint,
    kReadCheckpoint,
    kEndCheckpoint,
    kChecksumShard,
    kNumMethods
  };
  static constexpr std::array<const char*, kNumMethods> kMethodNames = {
      "createConversation", "getConversation", "addMembers", "removeMembers",     "listMembers",
      "sendMessage",        "sendBatch",       "getMessage", "readHistory",       "editMessage",
      "deleteMessage",      "listInbox",       "markRead",   "applyInboxUpdates", "health",
      "shardStats",         "shardMap",        "pullLog",    "beginCheckpoint",   "readCheckpoint",
      "endCheckpoint",      "checksumShard"};
  // Upper bounds of the latency buckets, in microseconds (+Inf is implicit).
  static constexpr std::array<uint64_t, 10> kBucketsUs = {25,   50,   100,   250,   500,
                                                          1000, 2500, 10000, 50000, 250000};
  static constexpr size_t kNumCodes = static_cast<size_t>(ErrorCode::kNotReplicated) + 1;

  void Record(Method method, std::chrono::nanoseconds took) {
    auto& m = methods_[method];
    m.count.fetch_add(1, std::memory_order_relaxed);
    const uint64_t us = static_cast<uint64_t>(took.count() / 1000);
    m.sum_us.fetch_add(us, std::memory_order_relaxed);
    size_t b = 0;
    while (b < kBucketsUs.size() && us > kBucketsUs[b]) ++b;
    m.buckets[b].fetch_add(1, std::memory_order_relaxed);
  }
  // A read served by a replica copy (consistency 1 = replica, 2 = session).
  void RecordReplicaRead(size_t consistency) {
    replica_reads_[consistency == 2 ? 1 : 0].fetch_add(1, std::memory_order_relaxed);
  }
  void RecordError(ErrorCode code) {
    errors_[static_cast<size_t>(code)].fetch_add(1, std::memory_order_relaxed);
  }
  // A semi-sync write's wait for a replica: acknowledged in time, or not (notReplicated).
  void RecordSemiSync(bool acked, std::chrono::nanoseconds waited) {
    semi_sync_[acked ? 0 : 1].fetch_add(1, std::memory_order_relaxed);
    semi_sync_wait_us_.fetch_add(static_cast<uint64_t>(waited.count() / 1000),
                                 std::memory_order_relaxed);
  }
  // Where an engine call ran: on the event loop (a read served from memory) or on the pool.
  enum Where : size_t { kOnLoop, kOnPool, kNumWheres };
  void RecordEngineCall(Where where) {
    engine_calls_[where].fetch_add(1, std::memory_order_relaxed);
  }

  void Render(std::string* out) const {
    *out +=
        "# HELP scrollback_requests_total RPC calls served, by method.\n"
        "# TYPE scrollback_requests_total counter\n";
    for (size_t i = 0; i < kNumMethods; ++i) {
      *out += "scrollback_requests_total{method=\"" + std::string(kMethodNames[i]) + "\"} " +
              std::to_string(methods_[i].count.load()) + "\n";
    }
    *out +=
        "# HELP scrollback_errors_total Errors answered (as values), by code.\n"
        "# TYPE scrollback_errors_total counter\n";
    for (size_t c = 1; c < kNumCodes; ++c) {
      *out += "scrollback_errors_total{code=\"" +
              std::string(ErrorCodeName(static_cast<ErrorCode>(c))) + "\"} " +
              std::to_string(errors_[c].load()) + "\n";
    }
    *out +=
        "# HELP scrollback_request_duration_seconds Time to serve a call, by method.\n"
        "# TYPE scrollback_request_duration_seconds histogram\n";
    for (size_t i = 0; i < kNumMethods; ++i) {
      const auto& m = methods_[i];
      const std::string label = "method=\"" + std::string(kMethodNames[i]) + "\"";
      uint64_t cumulative = 0;
      for (size_t b = 0; b <= kBucketsUs.size(); ++b) {
        cumulative += m.buckets[b].load();
        std::string le = b < kBucketsUs.size() ? std::to_string(kBucketsUs[b] / 1e6) : "+Inf";
        *out += "scrollback_request_duration_seconds_bucket{" + label + ",le=\"" + le + "\"} " +
                std::to_string(cumulative) + "\n";
      }
      *out += "scrollback_request_duration_seconds_sum{" + label + "} " +
              std::to_string(m.sum_us.load() / 1e6) + "\n";
      *out += "scrollback_request_duration_seconds_count{" + label + "} " +
              std::to_string(m.count.load()) + "\n";
    }
    *out +=
        "# HELP scrollback_engine_calls_total Engine calls, by where they ran: reads served from "
        "memory run on the event loop, the rest on the engine pool.\n"
        "# TYPE scrollback_engine_calls_total counter\n"
        "scrollback_engine_calls_total{where=\"loop\"} " +
        std::to_string(engine_calls_[kOnLoop].load()) +
        "\n"
        "scrollback_engine_calls_total{where=\"pool\"} " +
        std::to_string(engine_calls_[kOnPool].load()) + "\n";
    *out +=
        "# HELP scrollback_replica_reads_total Reads served by this node's replica copies, by "
        "consistency.\n"
        "# TYPE scrollback_replica_reads_total counter\n"
        "scrollback_replica_reads_total{consistency=\"replica\"} " +
        std::to_string(replica_reads_[0].load()) +
        "\n"
        "scrollback_replica_reads_total{consistency=\"session\"} " +
        std::to_string(replica_reads_[1].load()) + "\n";
    *out +=
        "# HELP scrollback_semi_sync_writes_total Semi-sync writes, by outcome: a replica "
        "acknowledged them in time, or they answered notReplicated.\n"
        "# TYPE scrollback_semi_sync_writes_total counter\n"
        "scrollback_semi_sync_writes_total{outcome=\"acked\"} " +
        std::to_string(semi_sync_[0].load()) +
        "\n"
        "scrollback_semi_sync_writes_total{outcome=\"not_replicated\"} " +
        std::to_string(semi_sync_[1].load()) +
        "\n"
        "# HELP scrollback_semi_sync_wait_seconds_total Time semi-sync writes waited for a "
        "replica after their commit.\n"
        "# TYPE scrollback_semi_sync_wait_seconds_total counter\n"
        "scrollback_semi_sync_wait_seconds_total " +
        std::to_string(semi_sync_wait_us_.load() / 1e6) + "\n";
  }

 private:
  struct PerMethod {
    std::atomic<uint64_t> count{0};
    std::atomic<uint64_t> sum_us{0};
    std::array<std::atomic<uint64_t>, kBucketsUs.size() + 1> buckets{};
  };
  std::array<PerMethod, kNumMethods> methods_;
  std::array<std::atomic<uint64_t>, kNumCodes> errors_{};
  std::array<std::atomic<uint64_t>, kNumWheres> engine_calls_{};
  std::array<std::atomic<uint64_t>, 2> replica_reads_{};
  std::array<std::atomic<uint64_t>, 2> semi_sync_{};  // Acked, not replicated.
  std::atomic<uint64_t> semi_sync_wait_us_{0};
};

// Times one call into NodeMetrics (calls complete within the method: the engine is synchronous).
class CallTimer {
 public:
  CallTimer(NodeMetrics& metrics, NodeMetrics::Method method)
      : metrics_(metrics), method_(method), start_(std::chrono::steady_clock::now()) {}
  ~CallTimer() { metrics_.Record(method_, std::chrono::steady_clock::now() - start_); }

 private:
  NodeMetrics& metrics_;
  NodeMetrics::Method method_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace scrollback
