// What scrollback-bench measures: a Target hands out one Session per client thread; a Session
// performs chat operations and completes them as KJ promises, so RPC targets can keep many
// calls in flight on the thread's event loop while in-process targets complete at once.
#pragma once

#include <kj/async-io.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "scrollback/schema/status.h"
#include "scrollback/schema/types.h"

namespace scrollback::ycsb {

class Session {
 public:
  virtual ~Session() = default;
  virtual kj::Promise<Status> CreateConversation(uint64_t conv_id, uint64_t creator,
                                                 std::vector<uint64_t> members) = 0;
  // The new message's seq.
  virtual kj::Promise<Result<uint64_t>> Send(uint64_t conv_id, uint64_t sender,
                                             std::string client_msg_id, std::string body) = 0;
  // Many sends in one call (sendBatch / SendMessages / one WriteBatch). OK when every send
  // succeeded, else the first failure.
  virtual kj::Promise<Status> SendBatch(std::vector<SendMessageRequest> sends) = 0;
  virtual kj::Promise<Status> GetMessage(uint64_t conv_id, uint64_t seq) = 0;
  virtual kj::Promise<Status> Edit(uint64_t conv_id, uint64_t seq, uint64_t editor,
                                   std::string body) = 0;
  virtual kj::Promise<Status> History(HistoryQuery query) = 0;
  virtual kj::Promise<Status> InboxList(uint64_t user_id, uint32_t limit) = 0;
  virtual kj::Promise<Status> MarkRead(uint64_t user_id, uint64_t conv_id, uint64_t seq) = 0;
};

class Target {
 public:
  virtual ~Target() = default;
  virtual std::string name() const = 0;
  // Called on each client thread, with that thread's event loop.
  virtual std::unique_ptr<Session> NewSession(kj::AsyncIoProvider& io) = 0;
  // False for targets whose calls complete synchronously (in-flight depth 1 per thread).
  virtual bool pipelined() const = 0;
  // Waits until background work of earlier calls (inbox fan-out) is done, at most `limit`.
  // Targets without such work, or that cannot see it (a remote cluster), return at once.
  virtual Status WaitIdle(std::chrono::seconds limit) {
    (void)limit;
    return Status::Ok();
  }
  // Figures of the target itself over the measured run (e.g. replica lag percentiles), sampled
  // between RunStarted and RunEnded; none by default. Printed after the YCSB sections.
  virtual void RunStarted() {}
  virtual std::vector<std::pair<std::string, double>> RunEnded() { return {}; }
};

struct TargetOptions {
  std::string data_dir;       // Where in-process targets keep their RocksDB data.
  uint32_t body_bytes = 200;  // Message body size (for sizing raw values).
  // Cluster targets: copies per shard (in-process clusters), and where reads go.
  uint32_t replication_factor = 3;
  Consistency consistency = Consistency::kStrong;
  // Cluster targets: how writes are acknowledged (async or semi-sync; default: the node's).
  WriteOptions write;
  // `embedded`: while a run is measured, probe inbox freshness (a probe send every 20 ms, its
  // delay until another member's inbox shows it). For workloads that send: the probes are
  // writes of their own.
  bool measure_freshness = false;
};

// `raw`: RocksDB directly, with the engine's message keys and values of the same size.
Result<std::unique_ptr<Target>> NewRawTarget(const TargetOptions& options);
// `engine`: one ShardStore, no RPC.
Result<std::unique_ptr<Target>> NewEngineTarget(const TargetOptions& options);

}  // namespace scrollback::ycsb
