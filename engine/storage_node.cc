// StorageNode: shard table, the Cap'n Proto service, and the event-loop threads.
#include "scrollback/engine/storage_node.h"

#include <arpa/inet.h>
#include <capnp/rpc-twoparty.h>
#include <capnp/rpc.h>
#include <kj/async-io.h>
#include <kj/async.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <list>
#include <thread>

#include "scrollback/schema/chatstore.capnp.h"
#include "scrollback/schema/wire.h"

namespace scrollback {
namespace {

namespace s = ::scrollback::schema;

// Which shards the node hosts, at one shard-map version. Replaced whole, never mutated.
struct ShardTable {
  uint64_t map_version = 0;
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
    return ChangeMembers(context, /*adding=*/true);
  }
  kj::Promise<void> removeMembers(RemoveMembersContext context) override {
    return ChangeMembers(context, /*adding=*/false);
  }

  kj::Promise<void> listMembers(ListMembersContext context) override {
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
    auto table = core_->Table();
    Send(*table, context.getParams().getRequest(), context.getResults().initResult());
    core_->signal.Notify();
    return kj::READY_NOW;
  }

  kj::Promise<void> sendBatch(SendBatchContext context) override {
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
    auto table = core_->Table();
    auto results = context.getResults();
    results.setNodeId(wire::AsText(core_->options.node_id));
    results.setMapVersion(table->map_version);
    results.setShards(static_cast<uint32_t>(table->shards.size()));
    results.setServing(true);
    return kj::READY_NOW;
  }

  kj::Promise<void> shardStats(ShardStatsContext context) override {
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

  static kj::Promise<void> Fail(s::Error::Builder error, const Status& status,
                                const ShardTable& table) {
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

// One event loop thread: accepts from the shared listening socket and serves its connections.
class EventLoopThread {
 public:
  EventLoopThread(std::shared_ptr<NodeCore> core, int listen_fd)
      : core_(std::move(core)), listen_fd_(dup(listen_fd)) {
    thread_ = std::thread([this] { Run(); });
    std::unique_lock lock(mu_);
    ready_cv_.wait(lock, [this] { return executor_ != nullptr || failed_; });
  }
  ~EventLoopThread() {
    Stop(std::chrono::milliseconds(0));
    if (thread_.joinable()) thread_.join();
  }

  // Stops accepting, waits up to `grace` for connections to go idle, then ends the loop.
  void Stop(std::chrono::milliseconds grace) {
    const kj::Executor* executor;
    {
      std::lock_guard lock(mu_);
      executor = executor_;
      executor_ = nullptr;
    }
    if (executor == nullptr) return;
    executor->executeSync([this, grace] {
      listening_ = nullptr;  // Stop accepting.
      auto& fulfiller = *stop_fulfiller_;
      fulfiller->fulfill(std::chrono::milliseconds(grace));
    });
    thread_.join();
  }

 private:
  struct Connection {
    kj::Own<kj::AsyncIoStream> stream;
    kj::Own<capnp::TwoPartyVatNetwork> network;
    kj::Own<capnp::RpcSystem<capnp::rpc::twoparty::VatId>> rpc;
  };

  void Run() {
    try {
      Serve();
    } catch (const kj::Exception& e) {
      // Only setup can throw here (e.g. the listening socket is unusable).
      std::lock_guard lock(mu_);
      failed_ = true;
    }
    ready_cv_.notify_all();
  }

  void Serve() {
    auto io = kj::setupAsyncIo();
    auto listener = io.lowLevelProvider->wrapListenSocketFd(
        listen_fd_, kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP);
    auto stop = kj::newPromiseAndFulfiller<std::chrono::milliseconds>();
    // Declared before `tasks` so that the tasks watching connections die first.
    std::list<Connection> connections;
    kj::TaskSet tasks(error_handler_);
    stop_fulfiller_ = &stop.fulfiller;
    listening_ = AcceptLoop(*listener, tasks, connections).eagerlyEvaluate(nullptr);
    {
      std::lock_guard lock(mu_);
      executor_ = &kj::getCurrentThreadExecutor();
    }
    ready_cv_.notify_all();

    auto grace = stop.promise.wait(io.waitScope);
    // Graceful: calls run to completion inside the loop, so what remains is replies still being
    // written. Give connections up to `grace` to drain, then close them.
    auto deadline = std::chrono::steady_clock::now() + grace;
    while (std::chrono::steady_clock::now() < deadline) {
      bool busy = false;
      for (auto& c : connections) busy |= c.network->getCurrentQueueCount() > 0;
      if (!busy) break;
      io.provider->getTimer().afterDelay(5 * kj::MILLISECONDS).wait(io.waitScope);
    }
    listening_ = nullptr;
  }

  kj::Promise<void> AcceptLoop(kj::ConnectionReceiver& listener, kj::TaskSet& tasks,
                               std::list<Connection>& connections) {
    return listener.accept().then([this, &listener, &tasks,
                                   &connections](kj::Own<kj::AsyncIoStream>&& stream) {
      capnp::ReaderOptions reader;
      reader.traversalLimitInWords = core_->options.max_message_bytes / sizeof(capnp::word);
      reader.nestingLimit = 16;
      auto& c = connections.emplace_back();
      c.stream = kj::mv(stream);
      c.network = kj::heap<capnp::TwoPartyVatNetwork>(*c.stream, capnp::rpc::twoparty::Side::SERVER,
                                                      reader);
      c.rpc = kj::heap(capnp::makeRpcServer(*c.network, kj::heap<ChatService>(core_)));
      c.rpc->setFlowLimit(core_->options.flow_limit_bytes);
      auto it = std::prev(connections.end());
      // A disconnect (or a malformed message, which aborts this connection only) drops it.
      tasks.add(c.network->onDisconnect().then([&connections, it] {
        // Not from inside the network's own callback: on the next turn of the loop.
        return kj::evalLater([&connections, it] { connections.erase(it); });
      }));
      return AcceptLoop(listener, tasks, connections);
    });
  }

  struct ErrorHandler final : kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&& e) override { (void)e; }  // A connection failed: dropped.
  };

  std::shared_ptr<NodeCore> core_;
  int listen_fd_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable ready_cv_;
  const kj::Executor* executor_ = nullptr;  // GUARDED_BY(mu_)
  bool failed_ = false;
  // Owned by the loop thread:
  kj::Own<kj::PromiseFulfiller<std::chrono::milliseconds>>* stop_fulfiller_ = nullptr;
  kj::Promise<void> listening_ = nullptr;
  ErrorHandler error_handler_;
};

Result<int> Listen(const std::string& address) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos) {
    return Status::InvalidArgument("listen_address", "expected host:port, got " + address);
  }
  std::string host = address.substr(0, colon);
  int port = std::atoi(address.c_str() + colon + 1);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return Status::InvalidArgument("listen_address", "not an IPv4 address: " + host);
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::Internal("socket: " + std::string(strerror(errno)));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 1024) != 0) {
    std::string error = strerror(errno);
    close(fd);
    return Status::Unavailable("cannot listen on " + address + ": " + error);
  }
  return fd;
}

std::string LocalAddress(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  char host[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &addr.sin_addr, host, sizeof(host));
  return std::string(host) + ":" + std::to_string(ntohs(addr.sin_port));
}

class StorageNodeImpl final : public StorageNode {
 public:
  StorageNodeImpl(const NodeOptions& options, int listen_fd)
      : core_(std::make_shared<NodeCore>(options)),
        listen_fd_(listen_fd),
        address_(LocalAddress(listen_fd)) {
    for (int i = 0; i < std::max(1, options.event_loops); ++i) {
      loops_.push_back(std::make_unique<EventLoopThread>(core_, listen_fd_));
    }
  }
  ~StorageNodeImpl() override { Stop(std::chrono::milliseconds(0)); }

  std::string address() const override { return address_; }
  const std::string& node_id() const override { return core_->options.node_id; }
  uint64_t map_version() const override { return core_->Table()->map_version; }
  OutboxSignal& outbox_signal() override { return core_->signal; }

  std::vector<HostedShard> Shards() const override { return core_->Table()->shards; }

  Status AssignShards(uint64_t map_version, const std::vector<ShardAssignment>& shards) override {
    std::lock_guard assign(assign_mu_);
    auto current = core_->Table();
    auto next = std::make_shared<ShardTable>();
    next->map_version = map_version;
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
    // Stop accepting on every loop first, then drain each.
    for (auto& loop : loops_) loop->Stop(grace);
    loops_.clear();
    close(listen_fd_);
    std::lock_guard table_lock(core_->mu);
    core_->table = std::make_shared<ShardTable>();  // Closes shards nobody else holds.
  }

 private:
  std::shared_ptr<NodeCore> core_;
  int listen_fd_;
  std::string address_;
  std::shared_ptr<StorageResources> resources_ = StorageResources::Create();
  std::mutex assign_mu_;
  std::mutex stop_mu_;
  bool stopped_ = false;  // GUARDED_BY(stop_mu_)
  std::vector<std::unique_ptr<EventLoopThread>> loops_;
};

}  // namespace

Result<std::unique_ptr<StorageNode>> StorageNode::Start(const NodeOptions& options) {
  if (options.data_dir.empty()) return Status::InvalidArgument("data_dir", "data_dir is required");
  auto fd = Listen(options.listen_address);
  if (!fd.ok()) return fd.status();
  return std::unique_ptr<StorageNode>(new StorageNodeImpl(options, *fd));
}

}  // namespace scrollback
