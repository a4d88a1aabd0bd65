// ChatClient: the smart client. Caches the shard map, routes each call to the node that owns
// its key (conversation calls by conv_id, inbox calls by user_id), refreshes the map and retries
// when a node answers not-owner, and keeps one pipelined Cap'n Proto connection per node (many
// calls in flight on each).
//
// Health: a node whose connection fails or whose call times out is marked down; calls routed to
// it fail fast with `unavailable` until `down_retry` has passed, then the client reconnects.
//
// Reads take ReadOptions (docs/replication.md, Reads): `strong` reads go to the shard's
// primary; `replica` and `session` reads go to the replica with the fewest calls outstanding
// from this client, skipping nodes marked down, and fall back to the primary when the replica
// answers notPrimary (too stale, another epoch) or unavailable (a session token not applied in
// time), or when no replica is up. Writes that reach a replica (a stale map) answer notPrimary:
// the client refreshes its map and retries, as for not-owner. Writes take WriteOptions (the
// acknowledgement mode): a semi-sync write that no replica confirmed in time answers
// notReplicated, which the client passes on (not retried: the caller decides).
//
// Threading: a ChatClient lives on one thread's KJ event loop (the `io` it was created with);
// its promises resolve on that loop. Create one per thread. The same library serves the
// embedded cluster, the router process and the fan-out worker.
#pragma once

#include <kj/async-io.h>
#include <kj/async.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

#include "scrollback/router/shard_map.h"
#include "scrollback/schema/status.h"
#include "scrollback/schema/types.h"

namespace scrollback {

class NetworkFaults;  // rpc/network_faults.h

// One message of a HistoryPageView, read in place: the string views point into the view's
// page and are valid while the view (or a copy of it) lives. Membership lists of system
// messages are left out: HistoryPageView::Decode has them.
struct MessageView {
  uint64_t conv_id = 0;
  uint64_t seq = 0;
  uint64_t sender_id = 0;
  int64_t sent_at_ms = 0;
  std::string_view client_msg_id;
  std::string_view body;
  MessageKind kind = MessageKind::kText;
  bool edited = false;
  bool deleted = false;
  int64_t edited_at_ms = 0;
  uint32_t revision = 0;
};

// A history page as it arrived (ChatClient::ReadHistoryView): the page is kept as one Cap'n
// Proto message and its rows are read field by field on access, instead of being decoded into
// a HistoryPage (a Message and its strings per row) up front. Cheap to copy (shared);
// immutable, so copies may be read from any thread; independent of the client and its
// connection.
class HistoryPageView {
 public:
  class Reply;  // The Cap'n Proto reply it reads from (chat_client.cc).
  HistoryPageView() = default;
  explicit HistoryPageView(std::shared_ptr<const Reply> reply);

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // REQUIRES: i < size(). In the page's order (HistoryPage::messages).
  MessageView operator[](size_t i) const;
  // REQUIRES: i < size(). Message i decoded, with everything (member_ids too).
  Message Decode(size_t i) const;
  uint64_t next_cursor_seq() const { return next_cursor_seq_; }
  bool has_more() const { return has_more_; }
  // The page decoded, as ReadHistory returns it.
  HistoryPage ToPage() const;

 private:
  std::shared_ptr<const Reply> reply_;
  size_t size_ = 0;
  uint64_t next_cursor_seq_ = 0;
  bool has_more_ = false;
};

// Where the client gets the shard map. Implementations must be thread-safe.
class ShardMapSource {
 public:
  virtual ~ShardMapSource() = default;
  // The newest map known; never null.
  virtual std::shared_ptr<const ShardMap> Current() = 0;
  // Asks the source to re-read the map from its authority (called after a not-owner answer).
  // Never blocks: callers run on event loops. The newer map, once read, shows in Current();
  // concurrent requests are coalesced.
  virtual void RequestRefresh() = 0;
};

// A source that holds whatever map it was last given (tests and static deployments).
class StaticShardMapSource final : public ShardMapSource {
 public:
  explicit StaticShardMapSource(ShardMap map);
  std::shared_ptr<const ShardMap> Current() override;
  void RequestRefresh() override {}  // Set() is the only authority.
  void Set(ShardMap map);

 private:
  std::mutex mu_;
  std::shared_ptr<const ShardMap> map_;  // GUARDED_BY(mu_)
};

struct ClientOptions {
  // Default: 5 s. A call without an answer by then fails with unavailable and marks its node
  // down.
  std::chrono::milliseconds call_timeout = std::chrono::seconds(5);
  // Default: 10. Attempts per call when nodes answer not-owner (the map is refreshed between) or
  // unavailable (a shard still opening, or paused by a split, merge or switchover). With the
  // backoff below, a call rides out about 1 s of such answers before it fails with them: the
  // measured split pauses are 0.2-0.7 s (docs/resharding.md).
  int max_attempts = 10;
  // Default: 25 ms. Wait before the first retry after not-owner or unavailable; doubles per
  // attempt (a node that is still applying a new map or opening a shard catches up meanwhile).
  std::chrono::milliseconds not_owner_backoff = std::chrono::milliseconds(25);
  // Default: 100 ms. The longest of those waits: a shard paused for a split or a switchover
  // comes back within a few hundred ms, and a longer sleep would only add to the pause.
  std::chrono::milliseconds max_backoff = std::chrono::milliseconds(100);
  // Default: 300 ms. How long a node stays marked down before the client tries it again.
  std::chrono::milliseconds down_retry = std::chrono::milliseconds(300);
  // Default: 64 MiB. Largest reply accepted (Cap'n Proto traversal limit).
  uint64_t max_message_bytes = 64ull << 20;
  // Test seam, default none: connections to nodes go through these faults, as the link from
  // `self` to the node's id (rpc/network_faults.h).
  std::shared_ptr<NetworkFaults> faults;
  std::string self = "client";
};

class ChatClient {
 public:
  static std::unique_ptr<ChatClient> Create(kj::AsyncIoProvider& io,
                                            std::shared_ptr<ShardMapSource> maps,
                                            ClientOptions options = {});
  virtual ~ChatClient() = default;

  // Writes answer with the WriteToken of the write (Written<T>::token; SendMessageResult::token).
  virtual kj::Promise<Result<Written<Conversation>>> CreateConversation(
      CreateConversationRequest request, const WriteOptions& write = {}) = 0;
  virtual kj::Promise<Result<Conversation>> GetConversation(uint64_t conv_id,
                                                            const ReadOptions& read = {}) = 0;
  virtual kj::Promise<Result<Written<uint64_t>>> AddMembers(uint64_t conv_id, uint64_t actor_id,
                                                            std::vector<uint64_t> user_ids,
                                                            const WriteOptions& write = {}) = 0;
  virtual kj::Promise<Result<Written<uint64_t>>> RemoveMembers(uint64_t conv_id, uint64_t actor_id,
                                                               std::vector<uint64_t> user_ids,
                                                               const WriteOptions& write = {}) = 0;
  virtual kj::Promise<Result<std::vector<uint64_t>>> ListMembers(uint64_t conv_id,
                                                                 uint64_t after_user_id,
                                                                 uint32_t limit,
                                                                 const ReadOptions& read = {}) = 0;
  virtual kj::Promise<Result<SendMessageResult>> SendMessage(SendMessageRequest request,
                                                             const WriteOptions& write = {}) = 0;
  // Groups the sends by owning node (one call per node); results in request order.
  virtual kj::Promise<std::vector<Result<SendMessageResult>>> SendBatch(
      std::vector<SendMessageRequest> requests, const WriteOptions& write = {}) = 0;
  virtual kj::Promise<Result<Message>> GetMessage(uint64_t conv_id, uint64_t seq,
                                                  const ReadOptions& read = {}) = 0;
  virtual kj::Promise<Result<HistoryPage>> ReadHistory(HistoryQuery query,
                                                       const ReadOptions& read = {}) = 0;
  // The same page without decoding it: for callers that read each message once (render it,
  // forward it), this saves a Message and its strings per row.
  virtual kj::Promise<Result<HistoryPageView>> ReadHistoryView(HistoryQuery query,
                                                               const ReadOptions& read = {}) = 0;
  virtual kj::Promise<Result<Written<Message>>> EditMessage(uint64_t conv_id, uint64_t seq,
                                                            uint64_t editor_id, std::string body,
                                                            const WriteOptions& write = {}) = 0;
  virtual kj::Promise<Result<Written<Message>>> DeleteMessage(uint64_t conv_id, uint64_t seq,
                                                              uint64_t actor_id,
                                                              const WriteOptions& write = {}) = 0;
  // For conversations above the fan-out member limit, completes each row's last seq and unread
  // count from the conversation's shard (those rows are not updated per message).
  virtual kj::Promise<Result<InboxPage>> ListInbox(InboxQuery query,
                                                   const ReadOptions& read = {}) = 0;
  // Completed like ListInbox rows for conversations above the fan-out limit.
  virtual kj::Promise<Result<Written<InboxEntry>>> MarkRead(uint64_t user_id, uint64_t conv_id,
                                                            uint64_t seq,
                                                            const WriteOptions& write = {}) = 0;
  // Delivers inbox updates to the users' shards (grouped by node); statuses in input order.
  virtual kj::Promise<std::vector<Status>> ApplyInboxUpdates(std::vector<InboxUpdate> updates) = 0;

  // True while `node_id` is marked down.
  virtual bool IsDown(const std::string& node_id) = 0;
  // Calls this client has sent to `node_id` and not yet had answered.
  virtual uint32_t Outstanding(const std::string& node_id) = 0;
  virtual std::shared_ptr<const ShardMap> shard_map() = 0;
};

}  // namespace scrollback
