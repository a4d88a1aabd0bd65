#include "scrollback/router/chat_client.h"

#include <capnp/message.h>
#include <capnp/rpc-twoparty.h>

#include <map>

#include "scrollback/rpc/buffered_stream.h"
#include "scrollback/rpc/network_faults.h"
#include "scrollback/schema/chatstore_wire.h"

namespace scrollback {

StaticShardMapSource::StaticShardMapSource(ShardMap map)
    : map_(std::make_shared<const ShardMap>(std::move(map))) {}

std::shared_ptr<const ShardMap> StaticShardMapSource::Current() {
  std::lock_guard lock(mu_);
  return map_;
}

void StaticShardMapSource::Set(ShardMap map) {
  std::lock_guard lock(mu_);
  map_ = std::make_shared<const ShardMap>(std::move(map));
}

// The page a HistoryPageView reads: the reply's page copied once, whole, into a message of its
// own (one allocation, no per-row strings), so that the view owns nothing of the RPC
// connection: the reply is released on its event loop as usual, and the view may move to any
// thread and outlive the client.
class HistoryPageView::Reply {
 public:
  explicit Reply(schema::HistoryPage::Reader page)
      : copy_(static_cast<unsigned>(page.totalSize().wordCount + 1)) {
    copy_.setRoot(page);
    page_ = copy_.getRoot<schema::HistoryPage>().asReader();
    messages_ = page_.getMessages();
  }
  schema::HistoryPage::Reader page() const { return page_; }
  capnp::List<schema::Message>::Reader messages() const { return messages_; }

 private:
  capnp::MallocMessageBuilder copy_;
  schema::HistoryPage::Reader page_;
  capnp::List<schema::Message>::Reader messages_;
};

HistoryPageView::HistoryPageView(std::shared_ptr<const Reply> reply)
    : reply_(std::move(reply)),
      size_(reply_->messages().size()),
      next_cursor_seq_(reply_->page().getNextCursorSeq()),
      has_more_(reply_->page().getHasMore()) {}

MessageView HistoryPageView::operator[](size_t i) const {
  auto in = reply_->messages()[static_cast<unsigned>(i)];
  MessageView out;
  out.conv_id = in.getConvId();
  out.seq = in.getSeq();
  out.sender_id = in.getSenderId();
  out.sent_at_ms = in.getSentAtMs();
  out.client_msg_id = wire::View(in.getClientMsgId());
  out.body = wire::View(in.getBody());
  out.kind = static_cast<MessageKind>(in.getKind());
  out.edited = in.getEdited();
  out.deleted = in.getDeleted();
  out.edited_at_ms = in.getEditedAtMs();
  out.revision = in.getRevision();
  return out;
}

Message HistoryPageView::Decode(size_t i) const {
  return wire::Decode<Message>(reply_->messages()[static_cast<unsigned>(i)]);
}

HistoryPage HistoryPageView::ToPage() const {
  HistoryPage page;
  if (reply_) wire::FromWire(reply_->page(), &page);
  return page;
}

namespace {

namespace s = ::scrollback::schema;
using NodeClient = s::Node::Client;
using Clock = std::chrono::steady_clock;

// The error in a reply, or OK when the reply has none.
template <typename Reader>
Status ReplyError(const Reader& reply) {
  return reply.hasError() ? wire::FromWire(reply.getError()) : Status::Ok();
}

void SetIds(capnp::List<uint64_t>::Builder out, const std::vector<uint64_t>& ids) {
  for (unsigned i = 0; i < ids.size(); ++i) out.set(i, ids[i]);
}

// The reply's error, or what `read(reply)` makes of a successful reply.
template <typename T, typename Reply, typename Read>
Result<T> Answer(const Reply& reply, Read&& read) {
  Status error = ReplyError(reply);
  if (!error.ok()) return error;
  return read(reply);
}

Result<SendMessageResult> ReadSend(s::SendResult::Reader in) {
  Status error = ReplyError(in);
  if (!error.ok()) return error;
  return SendMessageResult{in.getSeq(), in.getSentAtMs(), in.getDuplicate(),
                           wire::FromWire(in.getToken())};
}

// A write's reply: its error, or what `read(reply)` makes of it with the reply's token.
template <typename T, typename Reply, typename Read>
Result<Written<T>> AnswerWritten(const Reply& reply, Read&& read) {
  Status error = ReplyError(reply);
  if (!error.ok()) return error;
  return Written<T>{read(reply), wire::FromWire(reply.getToken())};
}

class ChatClientImpl final : public ChatClient {
 public:
  ChatClientImpl(kj::AsyncIoProvider& io, std::shared_ptr<ShardMapSource> maps,
                 ClientOptions options)
      : io_(io), maps_(std::move(maps)), options_(options) {}

  kj::Promise<Result<Written<Conversation>>> CreateConversation(
      CreateConversationRequest request, const WriteOptions& write) override {
    return RoutedWrite<Written<Conversation>>(
        request.conv_id, write, [request, write](NodeClient& node) {
          auto call = node.createConversationRequest();
          SetWrite(call, write);
          call.setConvId(request.conv_id);
          call.setCreatorId(request.creator_id);
          SetIds(call.initMemberIds(static_cast<unsigned>(request.member_ids.size())),
                 request.member_ids);
          call.setTitle(wire::AsText(request.title));
          return call.send().then([](auto reply) {
            return AnswerWritten<Conversation>(
                reply, [](auto& r) { return wire::Decode<Conversation>(r.getConversation()); });
          });
        });
  }

  kj::Promise<Result<Conversation>> GetConversation(uint64_t conv_id,
                                                    const ReadOptions& read) override {
    return RoutedRead<Conversation>(conv_id, read, [conv_id, read](NodeClient& node) {
      auto call = node.getConversationRequest();
      call.setConvId(conv_id);
      SetRead(call, read);
      return call.send().then([](auto reply) {
        return Answer<Conversation>(
            reply, [](auto& r) { return wire::Decode<Conversation>(r.getConversation()); });
      });
    });
  }

  kj::Promise<Result<Written<uint64_t>>> AddMembers(uint64_t conv_id, uint64_t actor_id,
                                                    std::vector<uint64_t> user_ids,
                                                    const WriteOptions& write) override {
    return ChangeMembers(true, conv_id, actor_id, std::move(user_ids), write);
  }

  kj::Promise<Result<Written<uint64_t>>> RemoveMembers(uint64_t conv_id, uint64_t actor_id,
                                                       std::vector<uint64_t> user_ids,
                                                       const WriteOptions& write) override {
    return ChangeMembers(false, conv_id, actor_id, std::move(user_ids), write);
  }

  kj::Promise<Result<Written<uint64_t>>> ChangeMembers(bool adding, uint64_t conv_id,
                                                       uint64_t actor_id,
                                                       std::vector<uint64_t> user_ids,
                                                       const WriteOptions& write) {
    return RoutedWrite<Written<uint64_t>>(conv_id, write, [=](NodeClient& node) {
      auto send = [&](auto call) {
        SetWrite(call, write);
        call.setConvId(conv_id);
        call.setActorId(actor_id);
        SetIds(call.initUserIds(static_cast<unsigned>(user_ids.size())), user_ids);
        return call.send().then([](auto reply) {
          return AnswerWritten<uint64_t>(reply, [](auto& r) { return r.getSeq(); });
        });
      };
      return adding ? send(node.addMembersRequest()) : send(node.removeMembersRequest());
    });
  }

  kj::Promise<Result<std::vector<uint64_t>>> ListMembers(uint64_t conv_id, uint64_t after,
                                                         uint32_t limit,
                                                         const ReadOptions& read) override {
    return RoutedRead<std::vector<uint64_t>>(conv_id, read, [=](NodeClient& node) {
      auto call = node.listMembersRequest();
      call.setConvId(conv_id);
      call.setAfterUserId(after);
      call.setLimit(limit);
      SetRead(call, read);
      return call.send().then([](auto reply) -> Result<std::vector<uint64_t>> {
        Status error = ReplyError(reply);
        if (!error.ok()) return error;
        std::vector<uint64_t> ids;
        for (uint64_t id : reply.getUserIds()) ids.push_back(id);
        return ids;
      });
    });
  }

  kj::Promise<Result<SendMessageResult>> SendMessage(SendMessageRequest request,
                                                     const WriteOptions& write) override {
    return RoutedWrite<SendMessageResult>(
        request.conv_id, write, [request, write](NodeClient& node) {
          auto call = node.sendMessageRequest();
          SetWrite(call, write);
          wire::ToWire(request, call.initRequest());
          return call.send().then([](auto reply) -> Result<SendMessageResult> {
            if (reply.hasError()) return wire::FromWire(reply.getError());  // API version 2.
            return ReadSend(reply.getResult());
          });
        });
  }

  kj::Promise<std::vector<Result<SendMessageResult>>> SendBatch(
      std::vector<SendMessageRequest> requests, const WriteOptions& write) override {
    // One sendBatch per owning node; each sub-batch goes through Routed so that not-owner
    // answers refresh the map. Sends that a node refuses as not-owner are retried one by one.
    auto groups = GroupByNode(requests.size(), [&](size_t i) { return requests[i].conv_id; });
    auto results = kj::heap<std::vector<Result<SendMessageResult>>>(
        requests.size(), Result<SendMessageResult>(Status::Internal("not sent")));
    kj::Vector<kj::Promise<void>> calls;
    for (auto& [first_key, indexes] : groups) {
      std::vector<SendMessageRequest> part;
      for (size_t i : indexes) part.push_back(requests[i]);
      auto* out = results.get();
      calls.add(
          RoutedWrite<std::vector<Result<SendMessageResult>>>(
              first_key, write,
              [part, write](NodeClient& node) {
                auto call = node.sendBatchRequest();
                SetWrite(call, write);
                auto list = call.initRequests(static_cast<unsigned>(part.size()));
                for (unsigned i = 0; i < part.size(); ++i) wire::ToWire(part[i], list[i]);
                return call.send().then(
                    [](auto reply) -> Result<std::vector<Result<SendMessageResult>>> {
                      // The batch failed as a whole (API version 2): every send fails with it.
                      if (reply.hasError()) return wire::FromWire(reply.getError());
                      std::vector<Result<SendMessageResult>> out;
                      for (auto r : reply.getResults()) out.push_back(ReadSend(r));
                      return out;
                    });
              })
              .then([this, out, indexes, part, write](
                        Result<std::vector<Result<SendMessageResult>>> got) -> kj::Promise<void> {
                kj::Vector<kj::Promise<void>> retries;
                for (size_t k = 0; k < indexes.size(); ++k) {
                  Result<SendMessageResult> r =
                      !got.ok() ? Result<SendMessageResult>(got.status())
                      : k < got->size()
                          ? (*got)[k]
                          : Result<SendMessageResult>(Status::Internal("short batch reply"));
                  if (!r.ok() && r.status().code() == ErrorCode::kNotOwner) {
                    size_t index = indexes[k];
                    retries.add(SendMessage(part[k], write)
                                    .then([out, index](Result<SendMessageResult> retried) {
                                      (*out)[index] = std::move(retried);
                                    }));
                  } else {
                    (*out)[indexes[k]] = std::move(r);
                  }
                }
                return kj::joinPromises(retries.releaseAsArray());
              }));
    }
    return kj::joinPromises(calls.releaseAsArray()).then([results = kj::mv(results)]() mutable {
      return std::move(*results);
    });
  }

  kj::Promise<Result<Message>> GetMessage(uint64_t conv_id, uint64_t seq,
                                          const ReadOptions& read) override {
    return RoutedRead<Message>(conv_id, read, [=](NodeClient& node) {
      auto call = node.getMessageRequest();
      call.setConvId(conv_id);
      call.setSeq(seq);
      SetRead(call, read);
      return call.send().then([](auto reply) {
        return Answer<Message>(reply,
                               [](auto& r) { return wire::Decode<Message>(r.getMessage()); });
      });
    });
  }

  kj::Promise<Result<HistoryPage>> ReadHistory(HistoryQuery query,
                                               const ReadOptions& read) override {
    return RoutedRead<HistoryPage>(query.conv_id, read, [query, read](NodeClient& node) {
      auto call = node.readHistoryRequest();
      wire::ToWire(query, call.initRequest());
      SetRead(call, read);
      return call.send().then([](auto reply) {
        return Answer<HistoryPage>(reply,
                                   [](auto& r) { return wire::Decode<HistoryPage>(r.getPage()); });
      });
    });
  }

  kj::Promise<Result<HistoryPageView>> ReadHistoryView(HistoryQuery query,
                                                       const ReadOptions& read) override {
    return RoutedRead<HistoryPageView>(query.conv_id, read, [query, read](NodeClient& node) {
      auto call = node.readHistoryRequest();
      wire::ToWire(query, call.initRequest());
      SetRead(call, read);
      return call.send().then([](auto reply) -> Result<HistoryPageView> {
        Status error = ReplyError(reply);
        if (!error.ok()) return error;
        return HistoryPageView(std::make_shared<const HistoryPageView::Reply>(reply.getPage()));
      });
    });
  }

  kj::Promise<Result<Written<Message>>> EditMessage(uint64_t conv_id, uint64_t seq,
                                                    uint64_t editor_id, std::string body,
                                                    const WriteOptions& write) override {
    return RoutedWrite<Written<Message>>(conv_id, write, [=](NodeClient& node) {
      auto call = node.editMessageRequest();
      SetWrite(call, write);
      call.setConvId(conv_id);
      call.setSeq(seq);
      call.setEditorId(editor_id);
      call.setBody(wire::AsData(body));
      return call.send().then([](auto reply) {
        return AnswerWritten<Message>(
            reply, [](auto& r) { return wire::Decode<Message>(r.getMessage()); });
      });
    });
  }

  kj::Promise<Result<Written<Message>>> DeleteMessage(uint64_t conv_id, uint64_t seq,
                                                      uint64_t actor_id,
                                                      const WriteOptions& write) override {
    return RoutedWrite<Written<Message>>(conv_id, write, [=](NodeClient& node) {
      auto call = node.deleteMessageRequest();
      SetWrite(call, write);
      call.setConvId(conv_id);
      call.setSeq(seq);
      call.setActorId(actor_id);
      return call.send().then([](auto reply) {
        return AnswerWritten<Message>(
            reply, [](auto& r) { return wire::Decode<Message>(r.getMessage()); });
      });
    });
  }

  kj::Promise<Result<InboxPage>> ListInbox(InboxQuery query, const ReadOptions& read) override {
    return RoutedRead<InboxPage>(query.user_id, read,
                                 [query, read](NodeClient& node) {
                                   auto call = node.listInboxRequest();
                                   call.setUserId(query.user_id);
                                   call.setCursor(wire::AsData(query.cursor));
                                   call.setLimit(query.limit);
                                   SetRead(call, read);
                                   return call.send().then([](auto reply) -> Result<InboxPage> {
                                     Status error = ReplyError(reply);
                                     if (!error.ok()) return error;
                                     InboxPage page;
                                     for (auto entry : reply.getEntries())
                                       wire::FromWire(entry, &page.entries.emplace_back());
                                     page.next_cursor = wire::View(reply.getNextCursor());
                                     page.has_more = reply.getHasMore();
                                     return page;
                                   });
                                 })
        .then([this, read](Result<InboxPage> page) {
          return CompleteLargeConversations(kj::mv(page), read);
        });
  }

  kj::Promise<Result<Written<InboxEntry>>> MarkRead(uint64_t user_id, uint64_t conv_id,
                                                    uint64_t seq,
                                                    const WriteOptions& write) override {
    // The seq is clamped to the conversation's last seq first: the user's shard clamps rows it
    // updates per message, but rows of conversations above the fan-out limit do not track the
    // last seq, and a read position never moves back. (If the conversation's shard cannot
    // answer, the mark goes ahead as asked.)
    return GetConversation(conv_id, {})
        .then([this, user_id, conv_id, seq, write](Result<Conversation> conv) {
          return MarkReadClamped(user_id, conv_id, conv.ok() ? std::min(seq, conv->last_seq) : seq,
                                 write);
        });
  }

  kj::Promise<Result<Written<InboxEntry>>> MarkReadClamped(uint64_t user_id, uint64_t conv_id,
                                                           uint64_t seq,
                                                           const WriteOptions& write) {
    return RoutedWrite<Written<InboxEntry>>(
               user_id, write,
               [=](NodeClient& node) {
                 auto call = node.markReadRequest();
                 SetWrite(call, write);
                 call.setUserId(user_id);
                 call.setConvId(conv_id);
                 call.setSeq(seq);
                 return call.send().then([](auto reply) {
                   return AnswerWritten<InboxEntry>(
                       reply, [](auto& r) { return wire::Decode<InboxEntry>(r.getEntry()); });
                 });
               })
        .then(
            [this](Result<Written<InboxEntry>> entry) -> kj::Promise<Result<Written<InboxEntry>>> {
              if (!entry.ok()) return kj::mv(entry);
              auto shared = kj::heap<Written<InboxEntry>>(std::move(entry).value());
              auto* row = &shared->value;
              return CompleteRow(row).then([shared = kj::mv(shared)]() mutable {
                return Result<Written<InboxEntry>>(std::move(*shared));
              });
            });
  }

  kj::Promise<std::vector<Status>> ApplyInboxUpdates(std::vector<InboxUpdate> updates) override {
    auto groups = GroupByNode(updates.size(), [&](size_t i) { return updates[i].user_id; });
    auto statuses = kj::heap<std::vector<Status>>(updates.size(), Status::Internal("not sent"));
    kj::Vector<kj::Promise<void>> calls;
    for (auto& [first_key, indexes] : groups) {
      std::vector<InboxUpdate> part;
      for (size_t i : indexes) part.push_back(updates[i]);
      auto* out = statuses.get();
      calls.add(Routed<std::vector<Status>>(first_key, [part](NodeClient& node) {
                  auto call = node.applyInboxUpdatesRequest();
                  auto list = call.initUpdates(static_cast<unsigned>(part.size()));
                  for (unsigned i = 0; i < part.size(); ++i) wire::ToWire(part[i], list[i]);
                  return call.send().then(
                      [n = part.size()](auto reply) -> Result<std::vector<Status>> {
                        // Failed as a whole (API version 2): every update fails with it.
                        if (reply.hasError()) return wire::FromWire(reply.getError());
                        std::vector<Status> out;
                        for (auto e : reply.getErrors()) out.push_back(wire::FromWire(e));
                        out.resize(n, Status::Internal("short reply"));
                        return out;
                      });
                }).then([out, indexes](Result<std::vector<Status>> got) {
        for (size_t k = 0; k < indexes.size(); ++k) {
          (*out)[indexes[k]] = got.ok() ? (*got)[k] : got.status();
        }
      }));
    }
    return kj::joinPromises(calls.releaseAsArray()).then([statuses = kj::mv(statuses)]() mutable {
      return std::move(*statuses);
    });
  }

  // Rows of conversations above the fan-out limit are not updated per message (DESIGN.md):
  // their last seq, activity and unread count come from the conversation's own shard. A row
  // whose conversation cannot be read keeps what the inbox stored.
  kj::Promise<void> CompleteRow(InboxEntry* row, const ReadOptions& read = {}) {
    if (row->fan_out) return kj::READY_NOW;
    // A session token is the inbox shard's, not the conversation's: read that one as `replica`.
    ReadOptions conv_read = read;
    if (conv_read.consistency == Consistency::kSession) conv_read = {Consistency::kReplica, {}, 0};
    return GetConversation(row->conv_id, conv_read).then([row](Result<Conversation> conv) {
      if (!conv.ok() || conv->last_seq <= row->last_seq) return;
      row->last_seq = conv->last_seq;
      row->last_activity_ms = std::max(row->last_activity_ms, conv->last_activity_ms);
      row->unread_count = conv->last_seq > row->read_seq ? conv->last_seq - row->read_seq : 0;
    });
  }

  // CompleteRow for every row of a page, in parallel.
  kj::Promise<Result<InboxPage>> CompleteLargeConversations(Result<InboxPage> page,
                                                            const ReadOptions& read) {
    if (!page.ok()) return kj::mv(page);
    auto shared = kj::heap<InboxPage>(std::move(page).value());
    kj::Vector<kj::Promise<void>> lookups;
    for (InboxEntry& entry : shared->entries) lookups.add(CompleteRow(&entry, read));
    return kj::joinPromises(lookups.releaseAsArray()).then([shared = kj::mv(shared)]() mutable {
      return Result<InboxPage>(std::move(*shared));
    });
  }

  bool IsDown(const std::string& node_id) override {
    auto it = connections_.find(node_id);
    return it != connections_.end() && it->second->down;
  }
  uint32_t Outstanding(const std::string& node_id) override {
    auto it = outstanding_.find(node_id);
    return it == outstanding_.end() ? 0 : it->second;
  }

  std::shared_ptr<const ShardMap> shard_map() override { return maps_->Current(); }

 private:
  // One pipelined connection to a node. Owned by connections_; replaced on reconnect.
  struct Connection {
    std::string address;
    kj::Own<kj::AsyncIoStream> stream;
    kj::Own<capnp::TwoPartyVatNetwork> network;  // Reads replies under the traversal limit.
    kj::Own<capnp::RpcSystem<capnp::rpc::twoparty::VatId>> rpc;
    // A promise capability: queues calls until connected, then forwards them.
    NodeClient node = nullptr;
    // Once connected, the node's own capability: calls on it skip the promise capability's
    // local call context (an extra copy of every request and a fork per call).
    kj::Maybe<NodeClient> connected;
    // The capability to call now.
    NodeClient& Current() {
      KJ_IF_MAYBE (direct, connected) {
        return *direct;
      }
      return node;
    }
    bool down = false;
    Clock::time_point down_since;
    kj::Promise<void> watcher = nullptr;
    // Wraps the connect chain, whose continuation fills this struct: destroyed first (declared
    // last), it cancels a connect still pending when the connection is dropped or replaced,
    // even if queued calls keep the promise capability alive.
    kj::Canceler connecting;
  };

  // Keys grouped by the primary node of their shard in the current map: node id -> (a key of
  // that group, for routing; the input indexes).
  template <typename KeyOf>
  std::map<std::string, std::pair<uint64_t, std::vector<size_t>>> GroupByNodeImpl(size_t n,
                                                                                  KeyOf key_of) {
    auto map = maps_->Current();
    std::map<std::string, std::pair<uint64_t, std::vector<size_t>>> groups;
    for (size_t i = 0; i < n; ++i) {
      uint64_t key = key_of(i);
      auto& group = groups[map->ShardForKey(key).primary];
      if (group.second.empty()) group.first = key;
      group.second.push_back(i);
    }
    return groups;
  }
  template <typename KeyOf>
  std::vector<std::pair<uint64_t, std::vector<size_t>>> GroupByNode(size_t n, KeyOf key_of) {
    std::vector<std::pair<uint64_t, std::vector<size_t>>> out;
    for (auto& [node, group] : GroupByNodeImpl(n, key_of)) out.push_back(std::move(group));
    return out;
  }

  // Marks `node_id` down, if `connection` is still its current connection (a call that failed
  // on a connection since replaced says nothing about the new one).
  void MarkDown(const std::string& node_id, const Connection* connection) {
    auto it = connections_.find(node_id);
    if (it == connections_.end() || it->second.get() != connection || it->second->down) return;
    it->second->down = true;
    it->second->down_since = Clock::now();
  }

  // The connection to `node_id`, (re)connecting as needed; unavailable while it is down.
  Result<Connection*> ConnectionTo(const ShardMap& map, const std::string& node_id) {
    const NodeInfo* info = map.FindNode(node_id);
    if (info == nullptr) return Status::Unavailable("node " + node_id + " is not in the shard map");
    auto it = connections_.find(node_id);
    if (it != connections_.end()) {
      Connection& c = *it->second;
      const bool same_address = c.address == info->address;
      if (!c.down && same_address) return &c;
      if (c.down && same_address && Clock::now() - c.down_since < options_.down_retry) {
        return Status::Unavailable("node " + node_id + " at " + c.address + " is down");
      }
      connections_.erase(it);  // Down long enough, or moved: connect afresh.
    }
    auto owned = std::make_unique<Connection>();
    Connection* c = owned.get();
    c->address = info->address;
    c->node = NodeClient(c->connecting.wrap(
        io_.getNetwork()
            .parseAddress(info->address)
            .then([](kj::Own<kj::NetworkAddress> address) { return address->connect(); })
            .then([this, c, node_id](kj::Own<kj::AsyncIoStream> stream) {
              capnp::ReaderOptions reader;
              reader.traversalLimitInWords = options_.max_message_bytes / sizeof(capnp::word);
              if (options_.faults) {
                stream =
                    options_.faults->Wrap(kj::mv(stream), options_.self, node_id, io_.getTimer());
              }
              c->stream = NewBufferedStream(kj::mv(stream));
              c->network = kj::heap<capnp::TwoPartyVatNetwork>(
                  *c->stream, capnp::rpc::twoparty::Side::CLIENT, reader);
              c->rpc = kj::heap(capnp::makeRpcClient(*c->network));
              c->watcher = c->network->onDisconnect()
                               .then([this, node_id, c] { MarkDown(node_id, c); },
                                     [this, node_id, c](kj::Exception&&) { MarkDown(node_id, c); })
                               .eagerlyEvaluate(nullptr);
              capnp::word scratch[4]{};
              capnp::MallocMessageBuilder vat(scratch);
              auto server = vat.getRoot<capnp::rpc::twoparty::VatId>();
              server.setSide(capnp::rpc::twoparty::Side::SERVER);
              auto node = c->rpc->bootstrap(server).castAs<s::Node>();
              c->connected = node;
              return node;
            })));
    connections_[node_id] = std::move(owned);
    return c;
  }

  // Where a call goes: the shard's primary, or (reads that allow it) one of its replicas.
  enum class Target { kPrimary, kReplica };

  // A write, routed to the primary, with its acknowledgement wait added to the deadline.
  template <typename T, typename Call>
  kj::Promise<Result<T>> RoutedWrite(uint64_t shard_key, const WriteOptions& write, Call call) {
    return Routed<T>(shard_key, kj::mv(call), 0, Target::kPrimary, AckWait(write));
  }

  // How long a node may hold a write's reply for its replicas (added to the call's deadline):
  // the write's own semi-sync timeout. Without one the node's default applies, which stays
  // below the call timeout (scrollbackd caps --semi-sync-timeout-ms at 4 s).
  static std::chrono::milliseconds AckWait(const WriteOptions& write) {
    return write.ack == AckMode::kAsync ? std::chrono::milliseconds(0)
                                        : std::chrono::milliseconds(write.timeout_ms);
  }

  // Sets a write's options; nothing for the default (the message stays as small as before).
  template <typename Request>
  static void SetWrite(Request& call, const WriteOptions& write) {
    if (write.ack != AckMode::kDefault || write.timeout_ms != 0) {
      wire::ToWire(write, call.initOptions());
    }
  }

  template <typename Request>
  static void SetRead(Request& call, const ReadOptions& read) {
    if (read.consistency != Consistency::kStrong) wire::ToWire(read, call.initOptions());
  }

  template <typename T, typename Call>
  kj::Promise<Result<T>> RoutedRead(uint64_t shard_key, const ReadOptions& read, Call call) {
    return Routed<T>(
        shard_key, kj::mv(call), 0,
        read.consistency == Consistency::kStrong ? Target::kPrimary : Target::kReplica);
  }

  // The replica of `shard` with the fewest calls outstanding from this client, skipping nodes
  // marked down (and not yet due for a retry); empty when none is up.
  std::string PickReplica(const ShardInfo& shard) {
    std::string best;
    uint32_t best_outstanding = UINT32_MAX;
    for (const std::string& node : shard.replicas) {
      auto it = connections_.find(node);
      if (it != connections_.end() && it->second->down &&
          Clock::now() - it->second->down_since < options_.down_retry) {
        continue;
      }
      const uint32_t outstanding = Outstanding(node);
      if (outstanding < best_outstanding) {
        best = node;
        best_outstanding = outstanding;
      }
    }
    return best;
  }

  // Sends `call` to the primary (or, for `target` kReplica, a replica) of the shard owning
  // `shard_key`, with a timeout, marking the node down on failure and retrying (after a map
  // refresh) on not-owner / not-primary. A replica that declines a read (notPrimary,
  // unavailable) or fails is followed by the same read at the primary.
  template <typename T, typename Call>
  // `ack_wait`: how long the node may hold a semi-sync write's reply on purpose (its timeoutMs),
  // added to the call's deadline: a slow replica must not make the primary look dead.
  kj::Promise<Result<T>> Routed(uint64_t shard_key, Call call, int attempt = 0,
                                Target target = Target::kPrimary,
                                std::chrono::milliseconds ack_wait = {}) {
    auto map = maps_->Current();
    const ShardInfo& shard = map->ShardForKey(shard_key);
    std::string node_id = shard.primary;
    if (target == Target::kReplica) {
      std::string replica = PickReplica(shard);
      if (replica.empty()) {
        target = Target::kPrimary;  // No replica up: the primary answers.
      } else {
        node_id = replica;
      }
    }
    auto connection = ConnectionTo(*map, node_id);
    if (!connection.ok()) {
      if (target == Target::kReplica)
        return Routed<T>(shard_key, call, attempt, Target::kPrimary, ack_wait);
      return Result<T>(connection.status());
    }
    const Connection* used = *connection;
    kj::Promise<Result<T>> sent = nullptr;
    try {
      sent = call((*connection)->Current());
    } catch (kj::Exception& e) {
      sent = kj::mv(e);
    }
    ++outstanding_[node_id];
    // Counted down when the call ends however it ends, dropped by its caller included.
    sent = sent.attach(kj::defer([this, node_id] { --outstanding_[node_id]; }));
    auto timeout = (options_.call_timeout + ack_wait).count() * kj::MILLISECONDS;
    return io_.getTimer()
        .timeoutAfter(timeout, kj::mv(sent))
        .then(
            [this, shard_key, call, attempt, target, node_id,
             ack_wait](Result<T> result) -> kj::Promise<Result<T>> {
              const ErrorCode code = result.ok() ? ErrorCode::kOk : result.status().code();
              if (target == Target::kReplica &&
                  (code == ErrorCode::kNotPrimary || code == ErrorCode::kUnavailable ||
                   code == ErrorCode::kNotOwner)) {
                // The replica declined (too stale, token not applied, map moved): the primary.
                if (code == ErrorCode::kNotOwner) maps_->RequestRefresh();
                return Routed<T>(shard_key, call, attempt, Target::kPrimary, ack_wait);
              }
              // Retried: not-owner and not-primary (a stale map here or there) and unavailable
              // answered by the node itself (a shard still opening: nothing was applied).
              // Transport failures are not retried here (below).
              if ((code == ErrorCode::kNotOwner || code == ErrorCode::kNotPrimary ||
                   code == ErrorCode::kUnavailable) &&
                  attempt + 1 < options_.max_attempts) {
                if (code != ErrorCode::kUnavailable) {
                  maps_->RequestRefresh();  // Off the loop: the metadata store may be slow.
                }
                // The node may be the one behind (still applying the map): back off a little,
                // more each attempt, before asking again.
                auto backoff = std::min<int64_t>(options_.not_owner_backoff.count() << attempt,
                                                 options_.max_backoff.count());
                return io_.getTimer()
                    .afterDelay(backoff * kj::MILLISECONDS)
                    .then([this, shard_key, call, attempt, ack_wait] {
                      return Routed<T>(shard_key, call, attempt + 1, Target::kPrimary, ack_wait);
                    });
              }
              return kj::mv(result);
            },
            [this, shard_key, call, attempt, target, node_id, used,
             ack_wait](kj::Exception&& e) -> kj::Promise<Result<T>> {
              MarkDown(node_id, used);
              if (target == Target::kReplica)
                return Routed<T>(shard_key, call, attempt, Target::kPrimary, ack_wait);
              return Result<T>(
                  Status::Unavailable("node " + node_id + ": " + e.getDescription().cStr()));
            });
  }

  kj::AsyncIoProvider& io_;
  std::shared_ptr<ShardMapSource> maps_;
  const ClientOptions options_;
  std::map<std::string, std::unique_ptr<Connection>> connections_;
  std::map<std::string, uint32_t> outstanding_;  // By node id: calls sent, not yet answered.
};

}  // namespace

std::unique_ptr<ChatClient> ChatClient::Create(kj::AsyncIoProvider& io,
                                               std::shared_ptr<ShardMapSource> maps,
                                               ClientOptions options) {
  return std::make_unique<ChatClientImpl>(io, std::move(maps), options);
}

}  // namespace scrollback
