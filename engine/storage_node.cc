// StorageNode: the shard table and the Cap'n Proto service over it (served by RpcServer).
#include "scrollback/engine/storage_node.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <filesystem>

#include "scrollback/schema/chatstore.capnp.h"
#include "scrollback/schema/rpc_server.h"
#include "scrollback/schema/wire.h"

namespace scrollback {
namespace {

namespace s = ::scrollback::schema;

// Which shards the node hosts, at one shard-map version. Replaced whole, never mutated.
struct ShardTable {
  uint64_t map_version = 0;
  std::string shard_map;  // Serialized map, opaque here.
  std::vector<HostedShard> shards;  // Sorted by range.first; ranges do not overlap.

  const HostedShard* Find(uint64_t token) const {
    auto it = std::upper_bound(shards.begin(), shards.end(), token,
                               [](uint64_t t, const HostedShard& h) {
                                 return t < h.assignment.range.first;
                               });
    if (it == shards.begin()) return nullptr;
    --it;
    return it->assignment.range.Contains(token) ? &*it : nullptr;
  }
};

// Request counters and latency histograms, per ChatStore / Node method. Lock-free.
class NodeMetrics {
 public:
  enum Method : size_t {
    kCreateConversation, kGetConversation, kAddMembers, kRemoveMembers, kListMembers,
    kSendMessage, kSendBatch, kGetMessage, kReadHistory, kEditMessage, kDeleteMessage,
    kListInbox, kMarkRead, kApplyInboxUpdates, kHealth, kShardStats, kShardMap, kNumMethods
  };
  static constexpr std::array<const char*, kNumMethods> kMethodNames = {
      "createConversation", "getConversation", "addMembers", "removeMembers", "listMembers",
      "sendMessage", "sendBatch", "getMessage", "readHistory", "editMessage", "deleteMessage",
      "listInbox", "markRead", "applyInboxUpdates", "health", "shardStats", "shardMap"};
  // Upper bounds of the latency buckets, in microseconds (+Inf is implicit).
  static constexpr std::array<uint64_t, 10> kBucketsUs = {25,   50,   100,   250,   500,
                                                           1000, 2500, 10000, 50000, 250000};
  static constexpr size_t kNumCodes = static_cast<size_t>(ErrorCode::kCorruption) + 1;

  void Record(Method method, std::chrono::nanoseconds took) {
    auto& m = methods_[method];
    m.count.fetch_add(1, std::memory_order_relaxed);
    const uint64_t us = static_cast<uint64_t>(took.count() / 1000);
    m.sum_us.fetch_add(us, std::memory_order_relaxed);
    size_t b = 0;
    while (b < kBucketsUs.size() && us > kBucketsUs[b]) ++b;
    m.buckets[b].fetch_add(1, std::memory_order_relaxed);
  }
  void RecordError(ErrorCode code) {
    errors_[static_cast<size_t>(code)].fetch_add(1, std::memory_order_relaxed);
  }

  void Render(std::string* out) const {
    *out += "# HELP scrollback_requests_total RPC calls served, by method.\n"
            "# TYPE scrollback_requests_total counter\n";
    for (size_t i = 0; i < kNumMethods; ++i) {
      *out += "scrollback_requests_total{method=\"" + std::string(kMethodNames[i]) + "\"} " +
              std::to_string(methods_[i].count.load()) + "\n";
    }
    *out += "# HELP scrollback_errors_total Errors answered (as values), by code.\n"
            "# TYPE scrollback_errors_total counter\n";
    for (size_t c = 1; c < kNumCodes; ++c) {
      *out += "scrollback_errors_total{code=\"" +
              std::string(ErrorCodeName(static_cast<ErrorCode>(c))) + "\"} " +
              std::to_string(errors_[c].load()) + "\n";
    }
    *out += "# HELP scrollback_request_duration_seconds Time to serve a call, by method.\n"
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
  }

 private:
  struct PerMethod {
    std::atomic<uint64_t> count{0};
    std::atomic<uint64_t> sum_us{0};
    std::array<std::atomic<uint64_t>, kBucketsUs.size() + 1> buckets{};
  };
  std::array<PerMethod, kNumMethods> methods_;
  std::array<std::atomic<uint64_t>, kNumCodes> errors_{};
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

// State shared by every event loop and connection of one node.
class NodeCore {
 public:
  explicit NodeCore(const NodeOptions& options) : options(options) {}

  std::shared_ptr<const ShardTable> Table() const {
    std::lock_guard lock(mu);
    return table;
  }

  const NodeOptions options;
  OutboxSignal signal;
  NodeMetrics metrics;
  mutable std::mutex mu;
  std::shared_ptr<const ShardTable> table = std::make_shared<ShardTable>();  // GUARDED_BY(mu)
};

// Returns early from a service method when `expr` failed (it has already filled the error).
#define SB_RETURN_VOID_IF_ERROR(expr) \
  do {                                 \
    if (!(expr)) return kj::READY_NOW; \
  } while (0)

// The ChatStore + Node API over the node's shards. One instance per connection; all state is
// in NodeCore. Every reply carries errors as values (types.capnp Error), never as exceptions.
class ChatService final : public s::Node::Server {
 public:
  explicit ChatService(std::shared_ptr<NodeCore> core) : core_(std::move(core)) {}

  kj::Promise<void> createConversation(CreateConversationContext context) override {
    CallTimer timer(core_->metrics, NodeMetrics::kCreateConversation);
    auto params = context.getParams();
    auto results = context.getResults();
    auto table = core_->Table();
    auto shard = Route(*table, params.getConvId(), "conv_id");
    if (!shard.ok()) return Fail(results.initError(), shard.status(), *table);
    CreateConversationRequest request;
    request.conv_id = params.getConvId();
    request.creator_id = params.getCreatorId();
    SB_RETURN_VOID_IF_ERROR(ReadIds(params.getMemberIds(), "member_ids", &request.member_ids,
                                    results, *table));
    request.title = wire::View(params.getTitle());
    auto conv = (*shard)->store->CreateConversation(request);
    if (!conv.ok()) return Fail(results.initError(), conv.status(), *table);
    wire::ToWire(*conv, results.initConversation());
    SetToken(results.initToken(), **shard);
    core_->signal.Notify();
    return kj::READY_NOW;
  }

  kj::Promise<void> getConversation(GetConversationContext context) override {
    CallTimer timer(core_->metrics, NodeMetrics::kGetConversation);
    auto results = context.getResults();
    auto table = core_->Table();
    uint64_t conv_id = context.getParams().getConvId();
    auto shard = Route(*table, conv_id, "conv_id");
    if (!shard.ok()) return Fail(results.initError(), shard.status(), *table);
    auto conv = (*shard)->store->GetConversation(conv_id);
    if (!conv.ok()) return Fail(results.initError(), conv.status(), *table);
    wire::ToWire(*conv, results.initConversation());
    return kj::READY_NOW;
  }

  kj::Promise<void> addMembers(AddMembersContext context) override {
    CallTimer timer(core_->metrics, NodeMetrics::kAddMembers);
    return ChangeMembers(context, /*adding=*/true);
  }
  kj::Promise<void> removeMembers(RemoveMembersContext context) override {
    CallTimer timer(core_->metrics, NodeMetrics::kRemoveMembers);
    return ChangeMembers(context, /*adding=*/false);
  }

  kj::Promise<void> listMembers(ListMembersContext context) override {
    CallTimer timer(core_->metrics, NodeMetrics::kListMembers);
    auto params = context.getParams();
    auto results = context.getResults();
    auto table = core_->Table();
    auto shard = Route(*table, params.getConvId(), "conv_id");
    if (!shard.ok()) return Fail(results.initError(), shard.status(), *table);
    auto members =
        (*shard)->store->ListMembers(params.getConvId(), params.getAfterUserId(), params.getLimit());
    if (!members.ok()) return Fail(results.initError(), members.status(), *table);
    auto ids = results.initUserIds(static_cast<unsigned>(members->size()));
    for (unsigned i = 0; i < members->size(); ++i) ids.set(i, (*members)[i]);
    return kj::READY_NOW;
  }

  kj::Promise<void> sendMessage(SendMessageContext context) override {
    CallTimer timer(core_->metrics, NodeMetrics::kSendMessage);
    auto table = core_->Table();
    Send(*table, context.getParams().getRequest(), context.getResults().initResult());
    core_->signal.Notify();
    return kj::READY_NOW;
  }

  kj::Promise<void> sendBatch(SendBatchContext context) override {
    CallTimer timer(core_->metrics, NodeMetrics::kSendBatch);
    auto requests = context.getParams().getRequests();
    auto table = core_->Table();
    if (requests.size() > core_->options.max_batch) {
      // The batch as a whole is refused: every slot carries the error.
      auto results = context.getResults().initResults(requests.size());
      Status too_many = Status::InvalidArgument(
          "requests", "at most " + std::to_string(core_->options.max_batch) + " sends per batch");
      for (auto result : results) Fail(result.initError(), too_many, *table);
      return kj::READY_NOW;
    }
    auto results = context.getResults().initResults(requests.size());
    for (unsigned i = 0; i < requests.size(); ++i) Send(*table, requests[i], results[i]);
    core_->signal.Notify();
    return kj::READY_NOW;
  }

  kj::Promise<void> getMessage(GetMessageContext context) override {
    CallTimer timer(core_->metrics, NodeMetrics::kGetMessage);
    auto params = context.getParams();
    auto results = context.getResults();
    auto table = core_->Table();
    auto shard = Route(*table, params.getConvId(), "conv_id");
    if (!shard.ok()) return Fail(results.initError(), shard.status(), *table);
    auto message = (*shard)->store->GetMessage(params.getConvId(), params.getSeq());
    if (!message.ok()) return Fail(results.initError(), message.status(), *table);
    wire::ToWire(*message, results.initMessage());
    return kj::READY_NOW;
  }

  kj::Promise<void> readHistory(ReadHistoryContext context) override {
    CallTimer timer(core_->metrics, NodeMetrics::kReadHistory);
    auto request = context.getParams().getRequest();
    auto results = context.getResults();
    auto table = core_->Table();
    auto shard = Route(*table, request.getConvId(), "conv_id");
    if (!shard.ok()) return Fail(results.initError(), shard.status(), *table);
    HistoryQuery query;
    query.conv_id = request.getConvId();
    query.direction = request.getDirection() == s::Direction::OLDEST_FIRST
                          ? Direction::kOldestFirst
                          : Direction::kNewestFirst;
    query.cursor_seq = request.getCursorSeq();
    if (request.getHasFromTime()) query.from_time_ms = request.getFromTimeMs();
    query.limit = request.getLimit();
    auto page = (*shard)->store->ReadHistory(query);
    if (!page.ok()) return Fail(results.initError(), page.status(), *table);
    wire::ToWire(*page, results.initPage());
    return kj::READY_NOW;
  }

  kj::Promise<void> editMessage(EditMessageContext context) override {
    CallTimer timer(core_->metrics, NodeMetrics::kEditMessage);
    auto params = context.getParams();
    auto results = context.getResults();
    auto table = core_->Table();
    auto shard = Route(*table, params.getConvId(), "conv_id");
    if (!shard.ok()) return Fail(results.initError(), shard.status(), *table);
    auto message = (*shard)->store->EditMessage(params.getConvId(), params.getSeq(),
                                                params.getEditorId(),
                                                std::string(wire::View(params.getBody())));
    if (!message.ok()) return Fail(results.initError(), message.status(), *table);
    wire::ToWire(*message, results.initMessage());
    SetToken(results.initToken(), **shard);
    return kj::READY_NOW;
  }

  kj::Promise<void> deleteMessage(DeleteMessageContext context) override {
    CallTimer timer(core_->metrics, NodeMetrics::kDeleteMessage);
    auto params = context.getParams();
    auto results = context.getResults();
    auto table = core_->Table();
    auto shard = Route(*table, params.getConvId(), "conv_id");
    if (!shard.ok()) return Fail(results.initError(), shard.status(), *table);
    auto message =
        (*shard)->store->DeleteMessage(params.getConvId(), params.getSeq(), params.getActorId());
    if (!message.ok()) return Fail(results.initError(), message.status(), *table);
    wire::ToWire(*message, results.initMessage());
    SetToken(results.initToken(), **shard);
    return kj::READY_NOW;
  }

  kj::Promise<void> listInbox(ListInboxContext context) override {
    CallTimer timer(core_->metrics, NodeMetrics::kListInbox);
    auto params = context.getParams();
    auto results = context.getResults();
    auto table = core_->Table();
    auto shard = Route(*table, params.getUserId(), "user_id");
    if (!shard.ok()) return Fail(results.initError(), shard.status(), *table);
    InboxQuery query;
    query.user_id = params.getUserId();
    query.cursor = wire::View(params.getCursor());
    query.limit = params.getLimit();
    auto page = (*shard)->store->ListInbox(query);
    if (!page.ok()) return Fail(results.initError(), page.status(), *table);
    auto entries = results.initEntries(static_cast<unsigned>(page->entries.size()));
    for (unsigned i = 0; i < page->entries.size(); ++i) wire::ToWire(page->entries[i], entries[i]);
    if (!page->next_cursor.empty()) results.setNextCursor(wire::AsData(page->next_cursor));
    results.setHasMore(page->has_more);
    return kj::READY_NOW;
  }

  kj::Promise<void> markRead(MarkReadContext context) override {
    CallTimer timer(core_->metrics, NodeMetrics::kMarkRead);
    auto params = context.getParams();
    auto results = context.getResults();
    auto table = core_->Table();
    auto shard = Route(*table, params.getUserId(), "user_id");
    if (!shard.ok()) return Fail(results.initError(), shard.status(), *table);
    auto entry =
        (*shard)->store->MarkRead(params.getUserId(), params.getConvId(), params.getSeq());
    if (!entry.ok()) return Fail(results.initError(), entry.status(), *table);
    wire::ToWire(*entry, results.initEntry());
    SetToken(results.initToken(), **shard);
    return kj::READY_NOW;
  }

  kj::Promise<void> applyInboxUpdates(ApplyInboxUpdatesContext context) override {
    CallTimer timer(core_->metrics, NodeMetrics::kApplyInboxUpdates);
    auto updates = context.getParams().getUpdates();
    auto table = core_->Table();
    auto errors = context.getResults().initErrors(updates.size());
    Status too_many;
    if (updates.size() > core_->options.max_batch) {
      too_many = Status::InvalidArgument("updates", "at most " +
                                                        std::to_string(core_->options.max_batch) +
                                                        " updates per call");
    }
    InboxUpdate update;
    for (unsigned i = 0; i < updates.size(); ++i) {
      if (!too_many.ok()) {
        Fail(errors[i], too_many, *table);
        continue;
      }
      wire::FromWire(updates[i], &update);
      auto shard = Route(*table, update.user_id, "user_id");
      Status applied = shard.ok() ? (*shard)->store->ApplyInboxUpdate(update) : shard.status();
      if (!applied.ok()) Fail(errors[i], applied, *table);
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> health(HealthContext context) override {
    CallTimer timer(core_->metrics, NodeMetrics::kHealth);
    auto table = core_->Table();
    auto results = context.getResults();
    results.setNodeId(wire::AsText(core_->options.node_id));
    results.setMapVersion(table->map_version);
    results.setShards(static_cast<uint32_t>(table->shards.size()));
    results.setServing(true);
    return kj::READY_NOW;
  }

  kj::Promise<void> shardMap(ShardMapContext context) override {
    CallTimer timer(core_->metrics, NodeMetrics::kShardMap);
    auto table = core_->Table();
    context.getResults().setMap(wire::AsData(table->shard_map));
    return kj::READY_NOW;
  }

  kj::Promise<void> shardStats(ShardStatsContext context) override {
    CallTimer timer(core_->metrics, NodeMetrics::kShardStats);
    auto table = core_->Table();
    auto stats = context.getResults().initStats(static_cast<unsigned>(table->shards.size()));
    for (unsigned i = 0; i < table->shards.size(); ++i) {
      const HostedShard& shard = table->shards[i];
      stats[i].setShardId(shard.assignment.shard_id);
      auto got = shard.store->GetStats();
      if (!got.ok()) continue;
      stats[i].setLiveDataBytes(got->live_data_bytes);
      stats[i].setMemtableBytes(got->memtable_bytes);
      stats[i].setEstimatedKeys(got->estimated_keys);
      stats[i].setLatestSequence(got->latest_sequence);
    }
    return kj::READY_NOW;
  }

 private:

  Result<const HostedShard*> Route(const ShardTable& table, uint64_t key, const char* field) {
    const HostedShard* shard = table.Find(TokenOf(key));
    if (shard != nullptr) return shard;
    return Status::NotOwner(std::string(field) + " " + std::to_string(key) +
                            " is not hosted by node " + core_->options.node_id +
                            " at shard-map version " + std::to_string(table.map_version));
  }

  kj::Promise<void> Fail(s::Error::Builder error, const Status& status, const ShardTable& table) {
    core_->metrics.RecordError(status.code());
    wire::ToWire(status, error);
    if (status.code() == ErrorCode::kNotOwner) error.setMapVersion(table.map_version);
    return kj::READY_NOW;
  }

  static void SetToken(s::WriteToken::Builder token, const HostedShard& shard) {
    token.setShardId(shard.assignment.shard_id);
    token.setEpoch(shard.assignment.epoch);
    token.setLsn(shard.store->LatestSequence());
  }

  // Copies a list of ids, refusing lists longer than any call accepts. Returns false (with the
  // error filled) when refused.
  template <typename Results>
  bool ReadIds(capnp::List<uint64_t>::Reader in, const char* field, std::vector<uint64_t>* out,
               Results& results, const ShardTable& table) {
    const uint32_t max = core_->options.shard_options.limits.max_members_per_change;
    if (in.size() > max) {
      Fail(results.initError(),
           Status::InvalidArgument(field, std::string(field) + " lists more than " +
                                              std::to_string(max) + " users"),
           table);
      return false;
    }
    out->clear();
    out->reserve(in.size());
    for (uint64_t id : in) out->push_back(id);
    return true;
  }

  template <typename Context>
  kj::Promise<void> ChangeMembers(Context& context, bool adding) {
    auto params = context.getParams();
    auto results = context.getResults();
    auto table = core_->Table();
    auto shard = Route(*table, params.getConvId(), "conv_id");
    if (!shard.ok()) return Fail(results.initError(), shard.status(), *table);
    std::vector<uint64_t> user_ids;
    SB_RETURN_VOID_IF_ERROR(ReadIds(params.getUserIds(), "user_ids", &user_ids, results, *table));
    auto seq = adding ? (*shard)->store->AddMembers(params.getConvId(), params.getActorId(), user_ids)
                      : (*shard)->store->RemoveMembers(params.getConvId(), params.getActorId(),
                                                       user_ids);
    if (!seq.ok()) return Fail(results.initError(), seq.status(), *table);
    results.setSeq(*seq);
    SetToken(results.initToken(), **shard);
    core_->signal.Notify();
    return kj::READY_NOW;
  }

  void Send(const ShardTable& table, s::SendRequest::Reader request,
            s::SendResult::Builder result) {
    auto shard = Route(table, request.getConvId(), "conv_id");
    if (!shard.ok()) {
      Fail(result.initError(), shard.status(), table);
      return;
    }
    SendMessageRequest send;
    send.conv_id = request.getConvId();
    send.sender_id = request.getSenderId();
    send.client_msg_id = wire::View(request.getClientMsgId());
    send.body = wire::View(request.getBody());
    auto sent = (*shard)->store->SendMessage(send);
    if (!sent.ok()) {
      Fail(result.initError(), sent.status(), table);
      return;
    }
    result.setSeq(sent->seq);
    result.setSentAtMs(sent->sent_at_ms);
    result.setDuplicate(sent->duplicate);
    SetToken(result.initToken(), **shard);
  }
#undef SB_RETURN_VOID_IF_ERROR

  std::shared_ptr<NodeCore> core_;
};

class StorageNodeImpl final : public StorageNode {
 public:
  explicit StorageNodeImpl(std::shared_ptr<NodeCore> core) : core_(std::move(core)) {}
  ~StorageNodeImpl() override { Stop(std::chrono::milliseconds(0)); }

  // REQUIRES: called once, before the node is shared.
  Status Listen() {
    RpcServerOptions rpc;
    rpc.listen_address = core_->options.listen_address;
    rpc.event_loops = core_->options.event_loops;
    rpc.max_message_bytes = core_->options.max_message_bytes;
    rpc.flow_limit_bytes = core_->options.flow_limit_bytes;
    auto core = core_;
    auto server = RpcServer::Start(rpc, [core](kj::AsyncIoProvider&) -> capnp::Capability::Client {
      return kj::heap<ChatService>(core);
    });
    if (!server.ok()) return server.status();
    server_ = std::move(server).value();
    return Status::Ok();
  }

  std::string address() const override { return server_->address(); }

  std::string RenderMetrics() override {
    std::string out;
    core_->metrics.Render(&out);
    auto table = core_->Table();
    out += "# HELP scrollback_map_version Shard-map version this node serves.\n"
           "# TYPE scrollback_map_version gauge\n"
           "scrollback_map_version " + std::to_string(table->map_version) + "\n";
    out += "# HELP scrollback_shard_live_bytes Estimated live SST bytes per shard.\n"
           "# TYPE scrollback_shard_live_bytes gauge\n";
    std::string memtables = "# HELP scrollback_shard_memtable_bytes Memtable bytes per shard.\n"
                            "# TYPE scrollback_shard_memtable_bytes gauge\n";
    std::string keys = "# HELP scrollback_shard_keys Estimated keys per shard.\n"
                       "# TYPE scrollback_shard_keys gauge\n";
    for (const HostedShard& shard : table->shards) {
      auto stats = shard.store->GetStats();
      if (!stats.ok()) continue;
      const std::string label = "{shard=\"" + std::to_string(shard.assignment.shard_id) + "\"} ";
      out += "scrollback_shard_live_bytes" + label + std::to_string(stats->live_data_bytes) + "\n";
      memtables += "scrollback_shard_memtable_bytes" + label +
                   std::to_string(stats->memtable_bytes) + "\n";
      keys += "scrollback_shard_keys" + label + std::to_string(stats->estimated_keys) + "\n";
    }
    out += memtables + keys;
    out += "# HELP scrollback_block_cache_bytes Shared block cache in use.\n"
           "# TYPE scrollback_block_cache_bytes gauge\n"
           "scrollback_block_cache_bytes " + std::to_string(resources_->BlockCacheUsage()) + "\n";
    return out;
  }
  const std::string& node_id() const override { return core_->options.node_id; }
  uint64_t map_version() const override { return core_->Table()->map_version; }
  OutboxSignal& outbox_signal() override { return core_->signal; }

  std::vector<HostedShard> Shards() const override { return core_->Table()->shards; }

  Status AssignShards(uint64_t map_version, const std::vector<ShardAssignment>& shards,
                      std::string shard_map) override {
    std::lock_guard assign(assign_mu_);
    auto current = core_->Table();
    auto next = std::make_shared<ShardTable>();
    next->map_version = map_version;
    next->shard_map = std::move(shard_map);
    for (const ShardAssignment& assignment : shards) {
      HostedShard hosted{assignment, nullptr};
      for (const HostedShard& existing : current->shards) {
        if (existing.assignment.shard_id == assignment.shard_id &&
            existing.assignment.range == assignment.range) {
          hosted.store = existing.store;
        }
      }
      if (!hosted.store) {
        ShardOptions options = core_->options.shard_options;
        options.shard_id = assignment.shard_id;
        options.token_range = assignment.range;
        if (!options.resources) options.resources = resources_;
        auto path = std::filesystem::path(core_->options.data_dir) /
                    ("shard-" + std::to_string(assignment.shard_id));
        std::error_code ec;
        std::filesystem::create_directories(path.parent_path(), ec);
        auto opened = ShardStore::Open(options, path.string());
        if (!opened.ok()) return opened.status();
        hosted.store = std::move(opened).value();
      }
      next->shards.push_back(std::move(hosted));
    }
    std::sort(next->shards.begin(), next->shards.end(),
              [](const HostedShard& a, const HostedShard& b) {
                return a.assignment.range.first < b.assignment.range.first;
              });
    std::lock_guard lock(core_->mu);
    core_->table = std::move(next);
    return Status::Ok();
  }

  void Stop(std::chrono::milliseconds grace) override {
    std::lock_guard lock(stop_mu_);
    if (stopped_) return;
    stopped_ = true;
    if (server_) server_->Stop(grace);
    std::lock_guard table_lock(core_->mu);
    core_->table = std::make_shared<ShardTable>();  // Closes shards nobody else holds.
  }

 private:
  std::shared_ptr<NodeCore> core_;
  std::unique_ptr<RpcServer> server_;
  std::shared_ptr<StorageResources> resources_ = StorageResources::Create();
  std::mutex assign_mu_;
  std::mutex stop_mu_;
  bool stopped_ = false;  // GUARDED_BY(stop_mu_)
};

}  // namespace

Result<std::unique_ptr<StorageNode>> StorageNode::Start(const NodeOptions& options) {
  if (options.data_dir.empty()) return Status::InvalidArgument("data_dir", "data_dir is required");
  auto node = std::make_unique<StorageNodeImpl>(std::make_shared<NodeCore>(options));
  SB_RETURN_IF_ERROR(node->Listen());
  return std::unique_ptr<StorageNode>(std::move(node));
}

}  // namespace scrollback
