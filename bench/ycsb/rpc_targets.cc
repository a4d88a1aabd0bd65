// RPC targets: `embedded` (an EmbeddedCluster started here, called through the smart client),
// `cluster` (a running cluster: the smart client with the shard map fetched from one node), and
// `echo` (a bare Cap'n Proto echo server: the RPC ceiling).
#include "rpc_targets.h"

#include <capnp/rpc-twoparty.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <thread>

#include "scrollback/bench/echo.capnp.h"
#include "scrollback/cluster/embedded_cluster.h"
#include "scrollback/replication/replication.h"
#include "scrollback/router/router_server.h"
#include "scrollback/rpc/buffered_stream.h"
#include "scrollback/rpc/rpc_server.h"
#include "scrollback/schema/chatstore.capnp.h"
#include "scrollback/schema/chatstore_wire.h"
#include "scrollback/schema/wire.h"

namespace scrollback::ycsb {
namespace {

// Waits until every outbox of every node is empty (all fan-out delivered) and every replica has
// caught up with its primary, at most `limit`.
Status WaitForFanOut(EmbeddedCluster& cluster, std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    bool idle = true;
    for (size_t i = 0; i < cluster.node_count() && idle; ++i) {
      for (const HostedShard& shard : cluster.node(i)->Shards()) {
        auto pending = shard.store->ReadOutbox("", 1);
        if (!pending.ok() || !pending->records.empty()) idle = false;
      }
    }
    // And every replica has applied everything its primary has (the fan-out's own writes
    // included): a run after the load measures the run, not the load's replication.
    if (idle) {
      std::map<uint64_t, uint64_t> primary_lsn;
      std::vector<std::pair<uint64_t, uint64_t>> replica_lsn;  // (shard, lsn)
      for (size_t i = 0; i < cluster.node_count(); ++i) {
        for (const HostedShard& shard : cluster.node(i)->Shards()) {
          const uint64_t lsn = shard.store->LatestSequence();
          if (shard.assignment.role == ShardRole::kPrimary) {
            primary_lsn[shard.assignment.shard_id] = lsn;
          } else {
            replica_lsn.emplace_back(shard.assignment.shard_id, lsn);
          }
        }
      }
      for (auto [shard_id, lsn] : replica_lsn) {
        if (lsn < primary_lsn[shard_id]) idle = false;
      }
    }
    if (idle) return Status::Ok();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return Status::Unavailable("fan-out or replication still busy after " +
                             std::to_string(limit.count()) + " s");
}

// Chat operations through the smart client. Reads use `consistency`; for session reads, each
// session passes the token of its own last write to the key's shard (read-your-writes). Writes
// use `write` (the acknowledgement mode).
class ClientSession final : public Session {
 public:
  ClientSession(std::unique_ptr<ChatClient> client, Consistency consistency, WriteOptions write)
      : client_(std::move(client)), consistency_(consistency), write_(write) {}

  kj::Promise<Status> CreateConversation(uint64_t conv_id, uint64_t creator,
                                         std::vector<uint64_t> members) override {
    return client_->CreateConversation({conv_id, creator, std::move(members), "bench"}, write_)
        .then([](Result<Written<Conversation>> r) { return r.status(); });
  }
  kj::Promise<Result<uint64_t>> Send(uint64_t conv_id, uint64_t sender, std::string client_id,
                                     std::string body) override {
    return client_->SendMessage({conv_id, sender, std::move(client_id), std::move(body)}, write_)
        .then([this](Result<SendMessageResult> r) -> Result<uint64_t> {
          if (!r.ok()) return r.status();
          if (consistency_ == Consistency::kSession) tokens_[r->token.shard_id] = r->token;
          return r->seq;
        });
  }
  kj::Promise<Status> SendBatch(std::vector<SendMessageRequest> sends) override {
    return client_->SendBatch(std::move(sends), write_)
        .then([](std::vector<Result<SendMessageResult>> results) {
          for (auto& r : results) {
            if (!r.ok()) return r.status();
          }
          return Status::Ok();
        });
  }
  kj::Promise<Status> GetMessage(uint64_t conv_id, uint64_t seq) override {
    return client_->GetMessage(conv_id, seq, ReadFor(conv_id)).then([](Result<Message> r) {
      return r.status();
    });
  }
  kj::Promise<Status> Edit(uint64_t conv_id, uint64_t seq, uint64_t editor,
                           std::string body) override {
    return client_->EditMessage(conv_id, seq, editor, std::move(body), write_)
        .then([](Result<Written<Message>> r) { return r.status(); });
  }
  // Pages are read in place (ReadHistoryView), as a client that renders them would; every
  // message is looked at once, so that the page's bytes are read, not just received.
  kj::Promise<Status> History(HistoryQuery query) override {
    return client_->ReadHistoryView(query, ReadFor(query.conv_id))
        .then([this](Result<HistoryPageView> page) {
          if (!page.ok()) return page.status();
          for (size_t i = 0; i < page->size(); ++i) read_bytes_ += (*page)[i].body.size();
          return Status::Ok();
        });
  }
  kj::Promise<Status> InboxList(uint64_t user_id, uint32_t limit) override {
    InboxQuery query;
    query.user_id = user_id;
    query.limit = limit;
    return client_->ListInbox(query, ReadFor(user_id)).then([](Result<InboxPage> r) {
      return r.status();
    });
  }
  kj::Promise<Status> MarkRead(uint64_t user_id, uint64_t conv_id, uint64_t seq) override {
    return client_->MarkRead(user_id, conv_id, seq, write_).then([](Result<Written<InboxEntry>> r) {
      // The reader's inbox row may not exist yet (fan-out in flight): not a failure of the store.
      return r.status().code() == ErrorCode::kNotFound ? Status::Ok() : r.status();
    });
  }

 private:
  ReadOptions ReadFor(uint64_t key) {
    ReadOptions read;
    read.consistency = consistency_;
    if (consistency_ == Consistency::kSession) {
      auto it = tokens_.find(client_->shard_map()->ShardForKey(key).shard_id);
      if (it != tokens_.end()) read.token = it->second;
    }
    return read;
  }

  std::unique_ptr<ChatClient> client_;
  const Consistency consistency_;
  const WriteOptions write_;
  uint64_t read_bytes_ = 0;  // Body bytes of the history pages read (so the reads are not idle).
  std::map<uint64_t, WriteToken> tokens_;  // By shard id: this session's last write there.
};

// Samples every replica copy's lag (LSNs behind, ms stale) every 10 ms while a run is measured.
class LagSampler {
 public:
  void Start(EmbeddedCluster& cluster) {
    stop_ = false;
    lag_ms_.clear();
    lag_lsn_.clear();
    cluster_ = &cluster;
    start_ = std::chrono::steady_clock::now();
    pulls_at_start_ = Counter("scrollback_replica_pulls_total");
    batches_at_start_ = Counter("scrollback_replica_batches_applied_total");
    thread_ = std::thread([this, &cluster] {
      while (!stop_) {
        for (size_t i = 0; i < cluster.node_count(); ++i) {
          StorageNode* node = cluster.node(i);
          if (node == nullptr) continue;
          for (const HostedShard& shard : node->Shards()) {
            if (shard.assignment.role != ShardRole::kReplica) continue;
            lag_ms_.push_back(static_cast<double>(shard.log->lag_ms()));
            lag_lsn_.push_back(static_cast<double>(shard.log->lag_lsn()));
          }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    });
  }
  std::vector<std::pair<std::string, double>> Stop() {
    if (!thread_.joinable()) return {};
    stop_ = true;
    thread_.join();
    if (lag_ms_.empty()) return {};
    auto pct = [](std::vector<double> v, double p) {
      std::sort(v.begin(), v.end());
      return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
    };
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double pulls =
        static_cast<double>(Counter("scrollback_replica_pulls_total") - pulls_at_start_);
    const double batches = static_cast<double>(Counter("scrollback_replica_batches_applied_total") -
                                               batches_at_start_);
    return {{"ReplicaLagMsP50", pct(lag_ms_, 0.50)},
            {"ReplicaLagMsP99", pct(lag_ms_, 0.99)},
            {"ReplicaLagLsnP50", pct(lag_lsn_, 0.50)},
            {"ReplicaLagLsnP99", pct(lag_lsn_, 0.99)},
            {"ReplicaLagSamples", static_cast<double>(lag_ms_.size())},
            {"ReplicaPullsPerSecond", pulls / seconds},
            {"ReplicaBatchesPerPull", pulls > 0 ? batches / pulls : 0}};
  }
  ~LagSampler() { Stop(); }

 private:
  // A counter summed over the nodes' /metrics text.
  uint64_t Counter(const std::string& name) const {
    uint64_t total = 0;
    for (size_t i = 0; i < cluster_->node_count(); ++i) {
      StorageNode* node = cluster_->node(i);
      if (node == nullptr) continue;
      const std::string text = node->RenderMetrics();
      const std::string key = "\n" + name + " ";
      auto at = text.find(key);
      if (at != std::string::npos) total += std::stoull(text.substr(at + key.size()));
    }
    return total;
  }

  EmbeddedCluster* cluster_ = nullptr;
  std::chrono::steady_clock::time_point start_;
  uint64_t pulls_at_start_ = 0, batches_at_start_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::vector<double> lag_ms_, lag_lsn_;  // Written by the thread until Stop joins it.
};

// Inbox freshness under load: while a run is measured, a probe sender (its own thread, event
// loop and smart client) sends a message to a conversation of two users of its own every 20 ms
// and polls the other member's inbox every millisecond until it shows that message. The delay
// from the send's acknowledgement to then is one sample (a probe not shown within 5 s is a
// miss). The probes go through the same fan-out as the workload's sends.
class FreshnessSampler {
 public:
  void Start(EmbeddedCluster& cluster, WriteOptions write) {
    stop_ = false;
    samples_ms_.clear();
    misses_ = 0;
    send_errors_ = 0;
    thread_ = std::thread([this, &cluster, write] {
      auto io = kj::setupAsyncIo();
      auto client = cluster.NewClient(*io.provider);
      // Ids far above the data set's conversations and users.
      static std::atomic<uint64_t> next_probe{0};
      const uint64_t n = next_probe.fetch_add(1);
      const uint64_t conv = (uint64_t{1} << 62) + n, sender = conv, reader = conv + (1ull << 40);
      if (!client->CreateConversation({conv, sender, {reader}, "freshness"}, write)
               .wait(io.waitScope)
               .ok()) {
        return;
      }
      auto& timer = io.provider->getTimer();
      for (uint64_t i = 0; !stop_; ++i) {
        auto sent = client->SendMessage({conv, sender, "p" + std::to_string(i), "probe"}, write)
                        .wait(io.waitScope);
        if (!sent.ok()) {  // Counted, and paced like any probe (no busy loop).
          ++send_errors_;
          timer.afterDelay(20 * kj::MILLISECONDS).wait(io.waitScope);
          continue;
        }
        const auto acked = std::chrono::steady_clock::now();
        bool shown = false;
        while (!stop_ && std::chrono::steady_clock::now() - acked < std::chrono::seconds(5)) {
          auto inbox = client->ListInbox({reader, "", 1}).wait(io.waitScope);
          if (inbox.ok() && !inbox->entries.empty() && inbox->entries[0].last_seq >= sent->seq) {
            shown = true;
            break;
          }
          timer.afterDelay(1 * kj::MILLISECONDS).wait(io.waitScope);
        }
        if (shown) {
          samples_ms_.push_back(
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - acked)
                  .count());
        } else if (!stop_) {
          ++misses_;
        }
        timer.afterDelay(20 * kj::MILLISECONDS).wait(io.waitScope);
      }
    });
  }
  std::vector<std::pair<std::string, double>> Stop() {
    if (!thread_.joinable()) return {};
    stop_ = true;
    thread_.join();
    if (samples_ms_.empty()) {
      return {{"InboxFreshnessMisses", static_cast<double>(misses_)},
              {"InboxFreshnessSendErrors", static_cast<double>(send_errors_)}};
    }
    std::sort(samples_ms_.begin(), samples_ms_.end());
    auto pct = [this](double p) {
      return samples_ms_[std::min(samples_ms_.size() - 1,
                                  static_cast<size_t>(p * samples_ms_.size()))];
    };
    return {{"InboxFreshnessMsP50", pct(0.50)},
            {"InboxFreshnessMsP99", pct(0.99)},
            {"InboxFreshnessMsMax", samples_ms_.back()},
            {"InboxFreshnessSamples", static_cast<double>(samples_ms_.size())},
            {"InboxFreshnessMisses", static_cast<double>(misses_)},
            {"InboxFreshnessSendErrors", static_cast<double>(send_errors_)}};
  }
  ~FreshnessSampler() { Stop(); }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::vector<double> samples_ms_;  // Written by the thread until Stop joins it.
  uint64_t misses_ = 0;             // Likewise.
  uint64_t send_errors_ = 0;        // Likewise.
};

class EmbeddedTarget final : public Target {
 public:
  EmbeddedTarget(std::unique_ptr<EmbeddedCluster> cluster, Consistency consistency,
                 WriteOptions write, bool measure_freshness)
      : cluster_(std::move(cluster)),
        consistency_(consistency),
        write_(write),
        measure_freshness_(measure_freshness) {}
  std::string name() const override { return "embedded"; }
  bool pipelined() const override { return true; }
  Status WaitIdle(std::chrono::seconds limit) override { return WaitForFanOut(*cluster_, limit); }
  std::unique_ptr<Session> NewSession(kj::AsyncIoProvider& io) override {
    return std::make_unique<ClientSession>(cluster_->NewClient(io), consistency_, write_);
  }
  void RunStarted() override {
    if (cluster_->replication_factor() > 1) lag_.Start(*cluster_);
    if (measure_freshness_) freshness_.Start(*cluster_, write_);
  }
  std::vector<std::pair<std::string, double>> RunEnded() override {
    auto figures = lag_.Stop();
    for (auto& figure : freshness_.Stop()) figures.push_back(std::move(figure));
    return figures;
  }

 private:
  std::unique_ptr<EmbeddedCluster> cluster_;
  const Consistency consistency_;
  const WriteOptions write_;
  const bool measure_freshness_;
  LagSampler lag_;
  FreshnessSampler freshness_;
};

class ClusterTarget final : public Target {
 public:
  ClusterTarget(std::shared_ptr<ShardMapSource> maps, Consistency consistency, WriteOptions write)
      : maps_(std::move(maps)), consistency_(consistency), write_(write) {}
  std::string name() const override { return "cluster"; }
  bool pipelined() const override { return true; }
  std::unique_ptr<Session> NewSession(kj::AsyncIoProvider& io) override {
    return std::make_unique<ClientSession>(ChatClient::Create(io, maps_), consistency_, write_);
  }

 private:
  std::shared_ptr<ShardMapSource> maps_;
  const Consistency consistency_;
  const WriteOptions write_;
};

// A Cap'n Proto connection to `address` over BufferedStream (as every Scrollback client), whose
// bootstrap capability is a `Interface`. Calls made before it connects are queued.
template <typename Interface>
class BootstrapConnection {
 public:
  BootstrapConnection(kj::AsyncIoProvider& io, const std::string& address)
      : state_(std::make_unique<State>()) {
    State* state = state_.get();
    state->cap = typename Interface::Client(
        io.getNetwork()
            .parseAddress(address)
            .then([](kj::Own<kj::NetworkAddress> addr) { return addr->connect(); })
            .then([state](kj::Own<kj::AsyncIoStream> stream) {
              state->stream = NewBufferedStream(kj::mv(stream));
              state->rpc = kj::heap<capnp::TwoPartyClient>(*state->stream);
              return state->rpc->bootstrap().template castAs<Interface>();
            }));
  }
  typename Interface::Client& cap() { return state_->cap; }

 private:
  // KJ objects (whose destructors may throw) live behind a unique_ptr so that the owner's own
  // destructor stays noexcept.
  struct State {
    typename Interface::Client cap = nullptr;  // Declared first: destroyed after the connection.
    kj::Own<kj::AsyncIoStream> stream;
    kj::Own<capnp::TwoPartyClient> rpc;
  };
  std::unique_ptr<State> state_;
};

// What a failed call (a broken connection) means to the benchmark.
Status CallFailed(const kj::Exception& e) { return Status::Unavailable(e.getDescription().cStr()); }

// The error in a ChatStore reply, or OK.
template <typename Reply>
Status ErrorOf(const Reply& reply) {
  return reply.hasError() ? wire::FromWire(reply.getError()) : Status::Ok();
}

// ---- router: chat operations as plain ChatStore calls to a router --------------------------

class RouterSession final : public Session {
 public:
  RouterSession(kj::AsyncIoProvider& io, const std::string& address) : conn_(io, address) {}

  kj::Promise<Status> CreateConversation(uint64_t conv_id, uint64_t creator,
                                         std::vector<uint64_t> members) override {
    auto call = conn_.cap().createConversationRequest();
    call.setConvId(conv_id);
    call.setCreatorId(creator);
    auto ids = call.initMemberIds(static_cast<unsigned>(members.size()));
    for (unsigned i = 0; i < members.size(); ++i) ids.set(i, members[i]);
    call.setTitle("bench");
    return Finish(call.send());
  }
  kj::Promise<Result<uint64_t>> Send(uint64_t conv_id, uint64_t sender, std::string client_id,
                                     std::string body) override {
    auto call = conn_.cap().sendMessageRequest();
    wire::ToWire(SendMessageRequest{conv_id, sender, std::move(client_id), std::move(body)},
                 call.initRequest());
    return call.send().then(
        [](auto reply) -> Result<uint64_t> {
          auto result = reply.getResult();
          Status error = ErrorOf(result);
          if (!error.ok()) return error;
          return result.getSeq();
        },
        [](kj::Exception&& e) -> Result<uint64_t> { return CallFailed(e); });
  }
  kj::Promise<Status> SendBatch(std::vector<SendMessageRequest> sends) override {
    auto call = conn_.cap().sendBatchRequest();
    auto requests = call.initRequests(static_cast<unsigned>(sends.size()));
    for (unsigned i = 0; i < sends.size(); ++i) wire::ToWire(sends[i], requests[i]);
    return call.send().then(
        [](auto reply) {
          for (auto result : reply.getResults()) {
            Status error = ErrorOf(result);
            if (!error.ok()) return error;
          }
          return Status::Ok();
        },
        [](kj::Exception&& e) { return CallFailed(e); });
  }
  kj::Promise<Status> GetMessage(uint64_t conv_id, uint64_t seq) override {
    auto call = conn_.cap().getMessageRequest();
    call.setConvId(conv_id);
    call.setSeq(seq);
    return Finish(call.send());
  }
  kj::Promise<Status> Edit(uint64_t conv_id, uint64_t seq, uint64_t editor,
                           std::string body) override {
    auto call = conn_.cap().editMessageRequest();
    call.setConvId(conv_id);
    call.setSeq(seq);
    call.setEditorId(editor);
    call.setBody(wire::AsData(body));
    return Finish(call.send());
  }
  kj::Promise<Status> History(HistoryQuery query) override {
    auto call = conn_.cap().readHistoryRequest();
    wire::ToWire(query, call.initRequest());
    return Finish(call.send());
  }
  kj::Promise<Status> InboxList(uint64_t user_id, uint32_t limit) override {
    auto call = conn_.cap().listInboxRequest();
    call.setUserId(user_id);
    call.setLimit(limit);
    return Finish(call.send());
  }
  kj::Promise<Status> MarkRead(uint64_t user_id, uint64_t conv_id, uint64_t seq) override {
    auto call = conn_.cap().markReadRequest();
    call.setUserId(user_id);
    call.setConvId(conv_id);
    call.setSeq(seq);
    return Finish(call.send()).then([](Status status) {
      // The reader's inbox row may not exist yet (fan-out in flight): not a failure of the store.
      return status.code() == ErrorCode::kNotFound ? Status::Ok() : status;
    });
  }

 private:
  template <typename Reply>
  static kj::Promise<Status> Finish(Reply&& reply) {
    return reply.then([](auto r) { return ErrorOf(r); },
                      [](kj::Exception&& e) { return CallFailed(e); });
  }

  BootstrapConnection<schema::ChatStore> conn_;
};

class RouterTarget final : public Target {
 public:
  // `cluster` (may be null) and `router` are kept running while the target lives.
  RouterTarget(std::string address, std::unique_ptr<EmbeddedCluster> cluster,
               std::unique_ptr<RouterServer> router)
      : address_(std::move(address)), cluster_(std::move(cluster)), router_(std::move(router)) {}
  ~RouterTarget() override {
    router_.reset();  // Before the cluster it forwards to.
    cluster_.reset();
  }
  std::string name() const override { return cluster_ ? "embedded-router" : "router"; }
  bool pipelined() const override { return true; }
  std::unique_ptr<Session> NewSession(kj::AsyncIoProvider& io) override {
    return std::make_unique<RouterSession>(io, address_);
  }
  Status WaitIdle(std::chrono::seconds limit) override {
    return cluster_ ? WaitForFanOut(*cluster_, limit) : Status::Ok();
  }

 private:
  std::string address_;
  std::unique_ptr<EmbeddedCluster> cluster_;
  std::unique_ptr<RouterServer> router_;
};

// ---- echo: every operation is one echo round trip with a payload of a message's size ---------

class EchoImpl final : public bench::Echo::Server {
 public:
  kj::Promise<void> echo(EchoContext context) override {
    context.getResults().setPayload(context.getParams().getPayload());
    return kj::READY_NOW;
  }
  kj::Promise<void> reply(ReplyContext context) override {
    const uint32_t bytes = std::min(context.getParams().getBytes(), uint32_t{16} << 20);
    auto payload = context.getResults().initPayload(bytes);
    std::fill(payload.begin(), payload.end(), 'r');
    return kj::READY_NOW;
  }
};

class EchoSession final : public Session {
 public:
  EchoSession(kj::AsyncIoProvider& io, const std::string& address, size_t payload_bytes)
      : payload_(payload_bytes, 'e'), conn_(io, address) {}

  kj::Promise<Status> CreateConversation(uint64_t, uint64_t, std::vector<uint64_t>) override {
    return Echo();
  }
  kj::Promise<Result<uint64_t>> Send(uint64_t, uint64_t, std::string, std::string) override {
    return Echo().then([this](Status s) -> Result<uint64_t> {
      if (!s.ok()) return s;
      return ++seq_;
    });
  }
  // One echo carrying the batch's bytes.
  kj::Promise<Status> SendBatch(std::vector<SendMessageRequest> sends) override {
    return Echo(sends.size());
  }
  kj::Promise<Status> GetMessage(uint64_t, uint64_t) override { return Echo(); }
  kj::Promise<Status> Edit(uint64_t, uint64_t, uint64_t, std::string) override { return Echo(); }
  // Reads get back as many bytes as the real reply carries: one message per row.
  kj::Promise<Status> History(HistoryQuery query) override { return Reply(query.limit); }
  kj::Promise<Status> InboxList(uint64_t, uint32_t limit) override { return Reply(limit); }
  kj::Promise<Status> MarkRead(uint64_t, uint64_t, uint64_t) override { return Echo(); }

 private:
  kj::Promise<Status> Echo(size_t messages = 1) {
    auto request = conn_.cap().echoRequest();
    if (messages == 1) {
      request.setPayload(wire::AsData(payload_));
    } else {
      auto payload = request.initPayload(static_cast<unsigned>(payload_.size() * messages));
      std::fill(payload.begin(), payload.end(), 'e');
    }
    return request.send().then([](auto) { return Status::Ok(); },
                               [](kj::Exception&& e) { return CallFailed(e); });
  }

  kj::Promise<Status> Reply(uint32_t rows) {
    auto request = conn_.cap().replyRequest();
    request.setBytes(static_cast<uint32_t>(payload_.size() * rows));
    return request.send().then([](auto) { return Status::Ok(); },
                               [](kj::Exception&& e) { return CallFailed(e); });
  }

  std::string payload_;
  BootstrapConnection<bench::Echo> conn_;
  uint64_t seq_ = 0;
};

class EchoTarget final : public Target {
 public:
  EchoTarget(std::unique_ptr<RpcServer> server, size_t payload_bytes)
      : server_(std::move(server)), payload_bytes_(payload_bytes) {}
  std::string name() const override { return "echo"; }
  bool pipelined() const override { return true; }
  std::unique_ptr<Session> NewSession(kj::AsyncIoProvider& io) override {
    return std::make_unique<EchoSession>(io, server_->address(), payload_bytes_);
  }

 private:
  std::unique_ptr<RpcServer> server_;
  size_t payload_bytes_;
};

}  // namespace

Result<std::unique_ptr<Target>> NewEmbeddedTarget(const TargetOptions& options) {
  EmbeddedClusterOptions cluster;
  cluster.data_dir = options.data_dir;
  cluster.replication_factor = options.replication_factor;
  auto started = EmbeddedCluster::Start(cluster);
  if (!started.ok()) return started.status();
  return std::unique_ptr<Target>(std::make_unique<EmbeddedTarget>(
      std::move(started).value(), options.consistency, options.write, options.measure_freshness));
}

Result<std::unique_ptr<Target>> NewClusterTarget(const std::string& node_address,
                                                 const TargetOptions& options) {
  // The shard map, from any node of the cluster.
  auto io = kj::setupAsyncIo();
  std::string bytes;
  try {
    auto addr = io.provider->getNetwork().parseAddress(node_address).wait(io.waitScope);
    auto stream = addr->connect().wait(io.waitScope);
    capnp::TwoPartyClient rpc(*stream);
    auto node = rpc.bootstrap().castAs<schema::Node>();
    auto reply = node.shardMapRequest().send().wait(io.waitScope);
    bytes = std::string(wire::View(reply.getMap()));
  } catch (const kj::Exception& e) {
    return Status::Unavailable(node_address + ": " + e.getDescription().cStr());
  }
  auto map = ShardMap::Parse(bytes);
  if (!map.ok()) return map.status();
  return std::unique_ptr<Target>(std::make_unique<ClusterTarget>(
      std::make_shared<StaticShardMapSource>(std::move(map).value()), options.consistency,
      options.write));
}

capnp::Capability::Client NewEchoService() { return kj::heap<EchoImpl>(); }

Result<std::unique_ptr<Target>> NewRouterTarget(const std::string& router_address) {
  return std::unique_ptr<Target>(std::make_unique<RouterTarget>(router_address, nullptr, nullptr));
}

Result<std::unique_ptr<Target>> NewEmbeddedRouterTarget(const TargetOptions& options) {
  EmbeddedClusterOptions cluster_options;
  cluster_options.data_dir = options.data_dir;
  cluster_options.replication_factor = options.replication_factor;
  auto cluster = EmbeddedCluster::Start(cluster_options);
  if (!cluster.ok()) return cluster.status();
  RouterOptions router_options;
  router_options.rpc.event_loops = 1;  // Like one node: the router shares the 2 cores too.
  auto router = RouterServer::Start(router_options, (*cluster)->shard_maps());
  if (!router.ok()) return router.status();
  std::string address = (*router)->address();
  return std::unique_ptr<Target>(std::make_unique<RouterTarget>(
      std::move(address), std::move(cluster).value(), std::move(router).value()));
}

Result<std::unique_ptr<Target>> NewEchoTarget(const TargetOptions& options) {
  RpcServerOptions rpc;
  rpc.event_loops = 2;
  auto server = RpcServer::Start(
      rpc, [](kj::AsyncIoProvider&) { return capnp::Capability::Client(NewEchoService()); });
  if (!server.ok()) return server.status();
  // A message's size on the wire: the body plus the fields around it.
  return std::unique_ptr<Target>(
      std::make_unique<EchoTarget>(std::move(server).value(), options.body_bytes + 64));
}

}  // namespace scrollback::ycsb
