#include "scrollback/router/router_server.h"

#include "scrollback/schema/chatstore_wire.h"

namespace scrollback {
namespace {

namespace s = ::scrollback::schema;

template <typename Builder>
void SetError(Builder&& results, const Status& status) {
  wire::ToWire(status, results.initError());
}

// Reads a bounded id list; fills the error and returns false when it is too long.
template <typename Results>
bool ReadIds(capnp::List<uint64_t>::Reader in, uint32_t max, const char* field,
             std::vector<uint64_t>* out, Results& results) {
  Status read = wire::ReadIdList(in, max, field, out);
  if (!read.ok()) SetError(results, read);
  return read.ok();
}

void WriteSend(const Result<SendMessageResult>& in, s::SendResult::Builder out) {
  if (!in.ok()) {
    wire::ToWire(in.status(), out.initError());
    return;
  }
  out.setSeq(in->seq);
  out.setSentAtMs(in->sent_at_ms);
  out.setDuplicate(in->duplicate);
  wire::ToWire(in->token, out.initToken());
}

// The ChatStore API, each call forwarded through the smart client of this event loop.
class RouterService final : public s::ChatStore::Server {
 public:
  RouterService(std::unique_ptr<ChatClient> client, const RouterOptions& options)
      : client_(std::move(client)), options_(options) {}

  kj::Promise<void> createConversation(CreateConversationContext context) override {
    auto params = context.getParams();
    CreateConversationRequest request;
    request.conv_id = params.getConvId();
    request.creator_id = params.getCreatorId();
    request.title = wire::View(params.getTitle());
    auto results = context.getResults();
    if (!ReadIds(params.getMemberIds(), options_.max_ids, "member_ids", &request.member_ids,
                 results)) {
      return kj::READY_NOW;
    }
    return client_->CreateConversation(std::move(request), wire::FromWire(params.getOptions()))
        .then([context](Result<Written<Conversation>> conv) mutable {
          auto results = context.getResults();
          if (!conv.ok()) return SetError(results, conv.status());
          wire::ToWire(conv->value, results.initConversation());
          wire::ToWire(conv->token, results.initToken());
        });
  }

  kj::Promise<void> getConversation(GetConversationContext context) override {
    return client_
        ->GetConversation(context.getParams().getConvId(),
                          wire::FromWire(context.getParams().getOptions()))
        .then([context](Result<Conversation> conv) mutable {
          auto results = context.getResults();
          if (!conv.ok()) return SetError(results, conv.status());
          wire::ToWire(*conv, results.initConversation());
        });
  }

  kj::Promise<void> addMembers(AddMembersContext context) override {
    return ChangeMembers(context, /*adding=*/true);
  }
  kj::Promise<void> removeMembers(RemoveMembersContext context) override {
    return ChangeMembers(context, /*adding=*/false);
  }

  kj::Promise<void> listMembers(ListMembersContext context) override {
    auto params = context.getParams();
    return client_
        ->ListMembers(params.getConvId(), params.getAfterUserId(), params.getLimit(),
                      wire::FromWire(params.getOptions()))
        .then([context](Result<std::vector<uint64_t>> ids) mutable {
          auto results = context.getResults();
          if (!ids.ok()) return SetError(results, ids.status());
          auto out = results.initUserIds(static_cast<unsigned>(ids->size()));
          for (unsigned i = 0; i < ids->size(); ++i) out.set(i, (*ids)[i]);
        });
  }

  kj::Promise<void> sendMessage(SendMessageContext context) override {
    return client_
        ->SendMessage(wire::ReadSend(context.getParams().getRequest()),
                      wire::FromWire(context.getParams().getOptions()))
        .then([context](Result<SendMessageResult> sent) mutable {
          auto results = context.getResults();
          WriteSend(sent, results.initResult());  // Mirrors the error for API version 1.
          if (!sent.ok()) SetError(results, sent.status());
        });
  }

  kj::Promise<void> sendBatch(SendBatchContext context) override {
    auto requests = context.getParams().getRequests();
    if (requests.size() > options_.max_batch) {
      auto results = context.getResults().initResults(requests.size());
      Status too_many = Status::InvalidArgument(
          "requests", "at most " + std::to_string(options_.max_batch) + " sends per batch");
      for (auto result : results) wire::ToWire(too_many, result.initError());
      SetError(context.getResults(), too_many);
      return kj::READY_NOW;
    }
    std::vector<SendMessageRequest> sends;
    sends.reserve(requests.size());
    for (auto request : requests) sends.push_back(wire::ReadSend(request));
    return client_->SendBatch(std::move(sends), wire::FromWire(context.getParams().getOptions()))
        .then([context](std::vector<Result<SendMessageResult>> sent) mutable {
          auto results = context.getResults().initResults(static_cast<unsigned>(sent.size()));
          for (unsigned i = 0; i < sent.size(); ++i) WriteSend(sent[i], results[i]);
        });
  }

  kj::Promise<void> getMessage(GetMessageContext context) override {
    auto params = context.getParams();
    return client_
        ->GetMessage(params.getConvId(), params.getSeq(), wire::FromWire(params.getOptions()))
        .then([context](Result<Message> message) mutable {
          WriteMessage(context.getResults(), message);
        });
  }

  kj::Promise<void> readHistory(ReadHistoryContext context) override {
    auto query = wire::ReadHistory(context.getParams().getRequest());
    const ReadOptions read = wire::FromWire(context.getParams().getOptions());
    return client_->ReadHistory(query, read).then([context](Result<HistoryPage> page) mutable {
      auto results = context.getResults();
      if (!page.ok()) return SetError(results, page.status());
      wire::ToWire(*page, results.initPage());
    });
  }

  kj::Promise<void> editMessage(EditMessageContext context) override {
    auto params = context.getParams();
    return client_
        ->EditMessage(params.getConvId(), params.getSeq(), params.getEditorId(),
                      std::string(wire::View(params.getBody())),
                      wire::FromWire(params.getOptions()))
        .then([context](Result<Written<Message>> message) mutable {
          WriteWrittenMessage(context.getResults(), message);
        });
  }

  kj::Promise<void> deleteMessage(DeleteMessageContext context) override {
    auto params = context.getParams();
    return client_
        ->DeleteMessage(params.getConvId(), params.getSeq(), params.getActorId(),
                        wire::FromWire(params.getOptions()))
        .then([context](Result<Written<Message>> message) mutable {
          WriteWrittenMessage(context.getResults(), message);
        });
  }

  kj::Promise<void> listInbox(ListInboxContext context) override {
    auto params = context.getParams();
    InboxQuery query;
    query.user_id = params.getUserId();
    query.cursor = wire::View(params.getCursor());
    query.limit = params.getLimit();
    return client_->ListInbox(query, wire::FromWire(params.getOptions()))
        .then([context](Result<InboxPage> page) mutable {
          auto results = context.getResults();
          if (!page.ok()) return SetError(results, page.status());
          auto entries = results.initEntries(static_cast<unsigned>(page->entries.size()));
          for (unsigned i = 0; i < page->entries.size(); ++i)
            wire::ToWire(page->entries[i], entries[i]);
          if (!page->next_cursor.empty()) results.setNextCursor(wire::AsData(page->next_cursor));
          results.setHasMore(page->has_more);
        });
  }

  kj::Promise<void> markRead(MarkReadContext context) override {
    auto params = context.getParams();
    return client_
        ->MarkRead(params.getUserId(), params.getConvId(), params.getSeq(),
                   wire::FromWire(params.getOptions()))
        .then([context](Result<Written<InboxEntry>> entry) mutable {
          auto results = context.getResults();
          if (!entry.ok()) return SetError(results, entry.status());
          wire::ToWire(entry->value, results.initEntry());
          wire::ToWire(entry->token, results.initToken());
        });
  }

 private:
  template <typename Results>
  static void WriteMessage(Results results, const Result<Message>& message) {
    if (!message.ok()) return SetError(results, message.status());
    wire::ToWire(*message, results.initMessage());
  }
  template <typename Results>
  static void WriteWrittenMessage(Results results, const Result<Written<Message>>& message) {
    if (!message.ok()) return SetError(results, message.status());
    wire::ToWire(message->value, results.initMessage());
    wire::ToWire(message->token, results.initToken());
  }

  template <typename Context>
  kj::Promise<void> ChangeMembers(Context& context, bool adding) {
    auto params = context.getParams();
    auto results = context.getResults();
    std::vector<uint64_t> ids;
    if (!ReadIds(params.getUserIds(), options_.max_ids, "user_ids", &ids, results)) {
      return kj::READY_NOW;
    }
    const WriteOptions write = wire::FromWire(params.getOptions());
    auto changed =
        adding ? client_->AddMembers(params.getConvId(), params.getActorId(), ids, write)
               : client_->RemoveMembers(params.getConvId(), params.getActorId(), ids, write);
    return changed.then([context](Result<Written<uint64_t>> seq) mutable {
      auto results = context.getResults();
      if (!seq.ok()) return SetError(results, seq.status());
      results.setSeq(seq->value);
      wire::ToWire(seq->token, results.initToken());
    });
  }

  std::unique_ptr<ChatClient> client_;
  const RouterOptions options_;
};

}  // namespace

Result<std::unique_ptr<RouterServer>> RouterServer::Start(const RouterOptions& options,
                                                          std::shared_ptr<ShardMapSource> maps) {
  auto server = RpcServer::Start(
      options.rpc, [options, maps](kj::AsyncIoProvider& io) -> capnp::Capability::Client {
        return kj::heap<RouterService>(ChatClient::Create(io, maps, options.client), options);
      });
  if (!server.ok()) return server.status();
  return std::unique_ptr<RouterServer>(new RouterServer(std::move(server).value()));
}

RouterServer::~RouterServer() { server_->Stop(std::chrono::milliseconds(0)); }

}  // namespace scrollback
