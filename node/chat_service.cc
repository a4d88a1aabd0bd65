// ChatService: the ChatStore + Node Cap'n Proto API over a node's shard table.
#include "chat_service.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/async.h>
#include <spdlog/logger.h>

#include <algorithm>
#include <map>

#include "load_counters.h"
#include "scrollback/schema/chatstore_wire.h"
#include "scrollback/schema/wire.h"
#include "shard_routing.h"
#include "shard_stats.h"
#include "write_ack.h"

namespace scrollback {
namespace {

namespace s = ::scrollback::schema;

// The ChatStore + Node API over the node's shards. One instance per event loop; all state is in
// NodeCore. Each call is split in three: read the parameters (on the loop), do the engine work
// (`Work`, on the engine pool or inline), write the results (on the loop). Every reply carries
// errors as values (types.capnp Error), never as exceptions.
class ChatService final : public s::Node::Server {
 public:
  ChatService(std::shared_ptr<NodeCore> core, kj::Timer& timer)
      : core_(std::move(core)), timer_(timer), acks_(core_, timer) {}

  kj::Promise<void> createConversation(CreateConversationContext context) override {
    auto params = context.getParams();
    CreateConversationRequest request;
    request.conv_id = params.getConvId();
    request.creator_id = params.getCreatorId();
    request.title = wire::View(params.getTitle());
    Status ids = ReadIds(params.getMemberIds(), "member_ids", &request.member_ids);
    const WriteOptions write = wire::FromWire(params.getOptions());
    return Serve<Written<Conversation>>(
        NodeMetrics::kCreateConversation,
        [ids, request](NodeCore& core, const ShardTable& table) -> Result<Written<Conversation>> {
          SB_RETURN_IF_ERROR(ids);
          auto created = Write(core, table, request.conv_id, [&](ShardStore& store) {
            return store.CreateConversation(request);
          });
          core.signal.Notify();  // The members' `joined` updates are in the outbox now.
          return created;
        },
        [context](const Written<Conversation>& done) mutable {
          auto results = context.getResults();
          wire::ToWire(done.value, results.initConversation());
          SetToken(results.initToken(), done.token);
        },
        [context](const Status&) mutable { return context.getResults().initError(); }, write);
  }

  kj::Promise<void> getConversation(GetConversationContext context) override {
    const uint64_t conv_id = context.getParams().getConvId();
    const ReadOptions read = wire::FromWire(context.getParams().getOptions());
    return WhenReadable(conv_id, read, [this, context, conv_id, read]() mutable {
      return Serve<Conversation>(
          NodeMetrics::kGetConversation,
          [conv_id, read](NodeCore& core, const ShardTable& table) -> Result<Conversation> {
            auto shard = RouteRead(core, table, conv_id, "conv_id", read);
            if (!shard.ok()) return shard.status();
            return Counted(core, **shard, conv_id, read, (*shard)->store->GetConversation(conv_id));
          },
          [context](const Conversation& conv) mutable {
            wire::ToWire(conv, context.getResults().initConversation());
          },
          [context](const Status&) mutable { return context.getResults().initError(); });
    });
  }

  kj::Promise<void> addMembers(AddMembersContext context) override {
    return ChangeMembers(context, NodeMetrics::kAddMembers);
  }
  kj::Promise<void> removeMembers(RemoveMembersContext context) override {
    return ChangeMembers(context, NodeMetrics::kRemoveMembers);
  }

  kj::Promise<void> listMembers(ListMembersContext context) override {
    auto params = context.getParams();
    const uint64_t conv_id = params.getConvId(), after = params.getAfterUserId();
    const uint32_t limit = params.getLimit();
    const ReadOptions read = wire::FromWire(params.getOptions());
    return WhenReadable(conv_id, read, [this, context, conv_id, after, limit, read]() mutable {
      return Serve<std::vector<uint64_t>>(
          NodeMetrics::kListMembers,
          [conv_id, after, limit, read](NodeCore& core,
                                        const ShardTable& table) -> Result<std::vector<uint64_t>> {
            auto shard = RouteRead(core, table, conv_id, "conv_id", read);
            if (!shard.ok()) return shard.status();
            return Counted(core, **shard, conv_id, read,
                           (*shard)->store->ListMembers(conv_id, after, limit));
          },
          [context](const std::vector<uint64_t>& members) mutable {
            auto ids = context.getResults().initUserIds(static_cast<unsigned>(members.size()));
            for (unsigned i = 0; i < members.size(); ++i) ids.set(i, members[i]);
          },
          [context](const Status&) mutable { return context.getResults().initError(); });
    });
  }

  kj::Promise<void> sendMessage(SendMessageContext context) override {
    auto request = wire::ReadSend(context.getParams().getRequest());
    const WriteOptions write = wire::FromWire(context.getParams().getOptions());
    return Serve<Written<SendMessageResult>>(
        NodeMetrics::kSendMessage,
        [request](NodeCore& core, const ShardTable& table) {
          auto sent = Send(core, table, request);
          core.signal.Notify();
          return sent;
        },
        [context](const Written<SendMessageResult>& sent) mutable {
          WriteSend(sent, context.getResults().initResult());
        },
        [context](const Status& error) mutable {
          // Mirrored for clients of API version 1, which read result.error.
          wire::ToWire(error, context.getResults().initResult().initError());
          return context.getResults().initError();
        },
        write);
  }

  kj::Promise<void> sendBatch(SendBatchContext context) override {
    auto requests = context.getParams().getRequests();
    using Batch = std::vector<Result<Written<SendMessageResult>>>;
    Status too_many;
    std::vector<SendMessageRequest> sends;
    if (requests.size() > core_->options.max_batch) {
      too_many = Status::InvalidArgument(
          "requests", "at most " + std::to_string(core_->options.max_batch) + " sends per batch");
    } else {
      sends.reserve(requests.size());
      for (auto request : requests) sends.push_back(wire::ReadSend(request));
    }
    const unsigned n = requests.size();
    if (n == 0) return kj::READY_NOW;  // Nothing to do; the reply's empty list says so.
    const WriteOptions write = wire::FromWire(context.getParams().getOptions());
    return Serve<Batch>(
        NodeMetrics::kSendBatch,
        [too_many, sends = std::move(sends)](NodeCore& core,
                                             const ShardTable& table) -> Result<Batch> {
          SB_RETURN_IF_ERROR(too_many);
          Batch out = SendGroupedByShard(core, table, sends);
          core.signal.Notify();
          return out;
        },
        [this, context](const Batch& batch) mutable {
          auto results = context.getResults().initResults(static_cast<unsigned>(batch.size()));
          for (unsigned i = 0; i < batch.size(); ++i) {
            if (batch[i].ok()) {
              WriteSend(*batch[i], results[i]);
            } else {
              WriteError(results[i].initError(), batch[i].status());
            }
          }
        },
        // The batch as a whole failed: the top-level error says so, and every slot carries it.
        [context, n](const Status& error) mutable {
          auto results = context.getResults().initResults(n);
          for (unsigned i = 0; i < n; ++i) wire::ToWire(error, results[i].initError());
          return context.getResults().initError();
        },
        write);
  }

  kj::Promise<void> getMessage(GetMessageContext context) override {
    auto params = context.getParams();
    const uint64_t conv_id = params.getConvId(), seq = params.getSeq();
    const ReadOptions read = wire::FromWire(params.getOptions());
    return WhenReadable(conv_id, read, [this, context, conv_id, seq, read]() mutable {
      return Serve<Message>(
          NodeMetrics::kGetMessage,
          [conv_id, seq, read](NodeCore& core, const ShardTable& table) -> Result<Message> {
            auto shard = RouteRead(core, table, conv_id, "conv_id", read);
            if (!shard.ok()) return shard.status();
            return Counted(core, **shard, conv_id, read, (*shard)->store->GetMessage(conv_id, seq));
          },
          [context](const Message& message) mutable {
            wire::ToWire(message, context.getResults().initMessage());
          },
          [context](const Status&) mutable { return context.getResults().initError(); });
    });
  }

  kj::Promise<void> readHistory(ReadHistoryContext context) override {
    auto query = wire::ReadHistory(context.getParams().getRequest());
    const ReadOptions read = wire::FromWire(context.getParams().getOptions());
    return WhenReadable(query.conv_id, read, [this, context, query, read]() mutable {
      return Serve<EncodedHistoryPage>(
          NodeMetrics::kReadHistory,
          [query, read](NodeCore& core, const ShardTable& table) -> Result<EncodedHistoryPage> {
            auto shard = RouteRead(core, table, query.conv_id, "conv_id", read);
            if (!shard.ok()) return shard.status();
            return Counted(core, **shard, query.conv_id, read,
                           (*shard)->store->ReadHistoryEncoded(query));
          },
          [this, context](const EncodedHistoryPage& page) mutable {
            // Stored messages are copied onto the wire as they are: no decoding, no re-encoding.
            auto out = context.getResults().initPage();
            out.setNextCursorSeq(page.next_cursor_seq);
            out.setHasMore(page.has_more);
            auto messages = out.initMessages(static_cast<unsigned>(page.spans.size()));
            for (unsigned i = 0; i < page.spans.size(); ++i) {
              auto [offset, size] = page.spans[i];
              kj::ArrayPtr<const capnp::word> words(
                  reinterpret_cast<const capnp::word*>(page.words.data() + offset), size);
              Status copied = CopyStoredMessage(words, messages, i);
              if (!copied.ok()) {
                context.getResults().disownPage();
                WriteError(context.getResults().initError(), copied);
                return;
              }
            }
          },
          [context](const Status&) mutable { return context.getResults().initError(); });
    });
  }

  kj::Promise<void> editMessage(EditMessageContext context) override {
    auto params = context.getParams();
    const uint64_t conv_id = params.getConvId(), seq = params.getSeq();
    const uint64_t editor = params.getEditorId();
    std::string body(wire::View(params.getBody()));
    return RewriteMessage(context, NodeMetrics::kEditMessage, conv_id,
                          [conv_id, seq, editor, body](ShardStore& store) {
                            return store.EditMessage(conv_id, seq, editor, body);
                          });
  }

  kj::Promise<void> deleteMessage(DeleteMessageContext context) override {
    auto params = context.getParams();
    const uint64_t conv_id = params.getConvId(), seq = params.getSeq();
    const uint64_t actor = params.getActorId();
    return RewriteMessage(context, NodeMetrics::kDeleteMessage, conv_id,
                          [conv_id, seq, actor](ShardStore& store) {
                            return store.DeleteMessage(conv_id, seq, actor);
                          });
  }

  kj::Promise<void> listInbox(ListInboxContext context) override {
    auto params = context.getParams();
    InboxQuery query;
    query.user_id = params.getUserId();
    query.cursor = wire::View(params.getCursor());
    query.limit = params.getLimit();
    const ReadOptions read = wire::FromWire(params.getOptions());
    return WhenReadable(query.user_id, read, [this, context, query, read]() mutable {
      return Serve<InboxPage>(
          NodeMetrics::kListInbox,
          [query, read](NodeCore& core, const ShardTable& table) -> Result<InboxPage> {
            auto shard = RouteRead(core, table, query.user_id, "user_id", read);
            if (!shard.ok()) return shard.status();
            return Counted(core, **shard, query.user_id, read, (*shard)->store->ListInbox(query));
          },
          [context](const InboxPage& page) mutable {
            auto results = context.getResults();
            auto entries = results.initEntries(static_cast<unsigned>(page.entries.size()));
            for (unsigned i = 0; i < page.entries.size(); ++i) {
              wire::ToWire(page.entries[i], entries[i]);
            }
            if (!page.next_cursor.empty()) results.setNextCursor(wire::AsData(page.next_cursor));
            results.setHasMore(page.has_more);
          },
          [context](const Status&) mutable { return context.getResults().initError(); });
    });
  }

  kj::Promise<void> markRead(MarkReadContext context) override {
    auto params = context.getParams();
    const uint64_t user = params.getUserId(), conv_id = params.getConvId(), seq = params.getSeq();
    const WriteOptions write = wire::FromWire(params.getOptions());
    return Serve<Written<InboxEntry>>(
        NodeMetrics::kMarkRead,
        [user, conv_id, seq](NodeCore& core,
                             const ShardTable& table) -> Result<Written<InboxEntry>> {
          return Write(
              core, table, user,
              [&](ShardStore& store) { return store.MarkRead(user, conv_id, seq); }, "user_id");
        },
        [context](const Written<InboxEntry>& done) mutable {
          auto results = context.getResults();
          wire::ToWire(done.value, results.initEntry());
          SetToken(results.initToken(), done.token);
        },
        [context](const Status&) mutable { return context.getResults().initError(); }, write);
  }

  kj::Promise<void> applyInboxUpdates(ApplyInboxUpdatesContext context) override {
    auto list = context.getParams().getUpdates();
    Status too_many;
    std::vector<InboxUpdate> updates;
    if (list.size() > core_->options.max_batch) {
      too_many = Status::InvalidArgument(
          "updates", "at most " + std::to_string(core_->options.max_batch) + " updates per call");
    } else {
      updates.resize(list.size());
      for (unsigned i = 0; i < list.size(); ++i) wire::FromWire(list[i], &updates[i]);
    }
    const unsigned n = list.size();
    if (n == 0) return kj::READY_NOW;
    return Serve<std::vector<Status>>(
        NodeMetrics::kApplyInboxUpdates,
        [too_many, updates = std::move(updates)](
            NodeCore& core, const ShardTable& table) -> Result<std::vector<Status>> {
          SB_RETURN_IF_ERROR(too_many);
          // One WriteBatch per shard: group the updates by the shard that owns each user.
          std::vector<Status> out(updates.size());
          auto by_shard = GroupByShard(
              core, table, updates.size(), "user_id", [&](size_t i) { return updates[i].user_id; },
              [&](size_t i, Status error) { out[i] = std::move(error); });
          for (auto& [shard, indexes] : by_shard) {
            std::vector<InboxUpdate> part;
            part.reserve(indexes.size());
            for (size_t i : indexes) part.push_back(updates[i]);
            std::vector<Status> applied = shard->store->ApplyInboxUpdates(part);
            for (size_t k = 0; k < indexes.size(); ++k) out[indexes[k]] = std::move(applied[k]);
          }
          // Applied after the lease ran out: not acknowledged (the sender keeps its outbox
          // record and delivers again, idempotently, to whoever is primary then).
          if (core.options.primary_lease && !core.options.primary_lease->Writable()) {
            for (Status& status : out) {
              if (!status.ok()) continue;
              core.options.primary_lease->CountWithheldAck();
              status = Status::Unavailable("node " + core.options.node_id +
                                           "'s primary lease ran out: not acknowledged");
            }
          }
          return out;
        },
        [this, context](const std::vector<Status>& statuses) mutable {
          auto errors = context.getResults().initErrors(static_cast<unsigned>(statuses.size()));
          for (unsigned i = 0; i < statuses.size(); ++i) {
            if (!statuses[i].ok()) WriteError(errors[i], statuses[i]);
          }
        },
        [context, n](const Status& error) mutable {
          auto errors = context.getResults().initErrors(n);
          for (unsigned i = 0; i < n; ++i) wire::ToWire(error, errors[i]);
          return context.getResults().initError();
        });
  }

  kj::Promise<void> health(HealthContext context) override {
    CallTimer timer(core_->metrics, NodeMetrics::kHealth);
    auto table = core_->Table();
    auto results = context.getResults();
    results.setNodeId(wire::AsText(core_->options.node_id));
    results.setMapVersion(table->map_version);
    results.setShards(static_cast<uint32_t>(table->shards.size()));
    // Serving: every shard the node was assigned is open (none opening or refused).
    results.setServing(table->pending.empty());
    results.setApiVersion(s::API_VERSION);
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
    WriteShardStats(*core_->Table(), context.getResults());
    return kj::READY_NOW;
  }

  // ---- Replication (schema/replication.capnp; docs/replication.md) ----------------------------

  kj::Promise<void> pullLog(PullLogContext context) override {
    auto params = context.getParams();
    const uint64_t shard_id = params.getShardId(), epoch = params.getEpoch();
    const uint64_t from = params.getFromLsn();
    const size_t max_bytes = std::clamp<size_t>(params.getMaxBytes(), 1, kMaxPullBytes);
    const auto wait =
        std::chrono::milliseconds(std::min<uint32_t>(params.getWaitMs(), kMaxPullWaitMs));
    const std::string replica(wire::View(params.getReplicaNodeId()));
    auto table = core_->Table();
    auto primary = PrimaryFor(*core_, *table, shard_id, epoch);
    Status refused =
        !primary.ok() ? primary.status()
        : from == 0   ? Status::InvalidArgument("from_lsn", "log positions start at 1")
        : !ValidNodeId(replica)
            ? Status::InvalidArgument("replica_node_id",
                                      "at most 128 bytes of letters, digits, '.', '_', ':', '-'")
            : Status::Ok();
    uint64_t epoch_start = 0;  // The start of the first epoch after the copy's, if any.
    if (refused.ok()) {
      refused = AcceptPull(*core_, **primary, replica, from, params.getDataEpoch(), &epoch_start);
    }
    if (!refused.ok()) {
      CallTimer timer(core_->metrics, NodeMetrics::kPullLog);
      WriteError(context.getResults().initError(), refused);
      context.getResults().setEpochStartLsn(epoch_start);
      return kj::READY_NOW;
    }
    // Nothing new: a long poll, woken by the shard's next commit (or the wait's end).
    std::shared_ptr<replication::ShardLog> log = (*primary)->log;
    kj::Promise<bool> ready = from <= log->lsn() || wait.count() == 0
                                  ? kj::Promise<bool>(true)
                                  : log->WaitFor(from, timer_, wait);
    return ready.attach(kj::mv(log))
        .then([this, context, shard_id, epoch, from, max_bytes](bool) mutable {
          struct Pulled {
            LogChunk chunk;
            uint64_t latest = 0;
          };
          return Serve<Pulled>(
              NodeMetrics::kPullLog,
              [shard_id, epoch, from, max_bytes](NodeCore& core,
                                                 const ShardTable& table) -> Result<Pulled> {
                auto primary = PrimaryFor(core, table, shard_id, epoch);
                if (!primary.ok()) return primary.status();
                Pulled out;
                out.latest = (*primary)->store->LatestSequence();
                auto chunk = (*primary)->store->ReadLog(from, max_bytes);
                if (!chunk.ok()) return chunk.status();
                out.chunk = std::move(chunk).value();
                return out;
              },
              [context](const Pulled& pulled) mutable {
                auto results = context.getResults();
                auto batches =
                    results.initBatches(static_cast<unsigned>(pulled.chunk.batches.size()));
                for (unsigned i = 0; i < pulled.chunk.batches.size(); ++i) {
                  const LogBatch& batch = pulled.chunk.batches[i];
                  batches[i].setFirstLsn(batch.first_lsn);
                  batches[i].setCount(batch.count);
                  batches[i].setData(wire::AsData(batch.data));
                }
                // The chunk may end past `latest` (writes since): report the larger.
                uint64_t latest = pulled.latest;
                if (!pulled.chunk.batches.empty()) {
                  latest = std::max(latest, pulled.chunk.next_lsn - 1);
                }
                results.setLatestLsn(latest);
                results.setPrimaryTimeMs(std::chrono::duration_cast<std::chrono::milliseconds>(
                                             std::chrono::system_clock::now().time_since_epoch())
                                             .count());
              },
              [context](const Status&) mutable { return context.getResults().initError(); });
        });
  }

  kj::Promise<void> beginCheckpoint(BeginCheckpointContext context) override {
    auto params = context.getParams();
    const uint64_t shard_id = params.getShardId(), epoch = params.getEpoch();
    const std::string replica(wire::View(params.getReplicaNodeId()));
    return Serve<replication::CheckpointInfo>(
        NodeMetrics::kBeginCheckpoint,
        [shard_id, epoch, replica](NodeCore& core,
                                   const ShardTable& table) -> Result<replication::CheckpointInfo> {
          auto primary = PrimaryFor(core, table, shard_id, epoch);
          if (!primary.ok()) return primary.status();
          core.logger->info("checkpoint of shard {} for replica {}", shard_id,
                            ValidNodeId(replica) ? replica : std::string("(unnamed)"));
          return core.checkpoints.Begin(*(*primary)->store);
        },
        [context](const replication::CheckpointInfo& info) mutable {
          auto results = context.getResults();
          results.setCheckpointId(info.id);
          results.setLsn(info.lsn);
          auto files = results.initFiles(static_cast<unsigned>(info.files.size()));
          for (unsigned i = 0; i < info.files.size(); ++i) {
            files[i].setName(wire::AsText(info.files[i].name));
            files[i].setSize(info.files[i].size);
            files[i].setXxh64(info.files[i].xxh64);
          }
        },
        [context](const Status&) mutable { return context.getResults().initError(); });
  }

  kj::Promise<void> readCheckpoint(ReadCheckpointContext context) override {
    auto params = context.getParams();
    const uint64_t id = params.getCheckpointId(), offset = params.getOffset();
    const uint32_t file = params.getFileIndex(), max_bytes = params.getMaxBytes();
    return Serve<std::string>(
        NodeMetrics::kReadCheckpoint,
        [id, file, offset, max_bytes](NodeCore& core, const ShardTable&) {
          return core.checkpoints.Read(id, file, offset, max_bytes);
        },
        [context](const std::string& data) mutable {
          context.getResults().setData(wire::AsData(data));
        },
        [context](const Status&) mutable { return context.getResults().initError(); });
  }

  kj::Promise<void> endCheckpoint(EndCheckpointContext context) override {
    const uint64_t id = context.getParams().getCheckpointId();
    return Serve<bool>(
        NodeMetrics::kEndCheckpoint,
        [id](NodeCore& core, const ShardTable&) -> Result<bool> {
          SB_RETURN_IF_ERROR(core.checkpoints.End(id));
          return true;
        },
        [](bool) {}, [context](const Status&) mutable { return context.getResults().initError(); });
  }

  kj::Promise<void> checksumShard(ChecksumShardContext context) override {
    auto params = context.getParams();
    const uint64_t shard_id = params.getShardId(), at = params.getAtLsn();
    auto table = core_->Table();
    const HostedShard* shard = table->FindShard(shard_id);
    kj::Promise<bool> ready = true;
    std::shared_ptr<replication::ShardLog> log;
    if (shard != nullptr && at != 0 && shard->assignment.role == ShardRole::kReplica &&
        shard->store->LatestSequence() < at) {
      // Hold the copy at exactly `at` (the primary's write groups end there), digest, resume.
      log = shard->log;
      log->SetPauseAt(at);
      ready = log->WaitFor(at, timer_, kChecksumWait);
    }
    // Whatever happens to the call (answered, failed, cancelled by a disconnect), the copy
    // resumes applying afterwards.
    auto release = kj::heap<PauseRelease>(log, at);
    return ready
        .then([this, context, shard_id, at](bool) mutable {
          return Serve<ShardChecksum>(
              NodeMetrics::kChecksumShard,
              [shard_id, at](NodeCore& core, const ShardTable& table) -> Result<ShardChecksum> {
                const HostedShard* shard = table.FindShard(shard_id);
                if (shard == nullptr) {
                  return Status::NotFound("node " + core.options.node_id +
                                          " serves no copy of shard " + std::to_string(shard_id));
                }
                auto sum = shard->store->Checksum();
                if (sum.ok() && at != 0 && sum->lsn != at) {
                  return Status::FailedPrecondition(
                      "shard " + std::to_string(shard_id) + " on node " + core.options.node_id +
                      " is at lsn " + std::to_string(sum->lsn) + ", not " + std::to_string(at) +
                      "; ask again at a newer lsn");
                }
                return sum;
              },
              [context](const ShardChecksum& sum) mutable {
                auto results = context.getResults();
                results.setLsn(sum.lsn);
                results.setChecksum(sum.checksum);
                results.setKeys(sum.keys);
              },
              [context](const Status&) mutable { return context.getResults().initError(); });
        })
        .attach(kj::mv(release));  // Attached last: released after the checksum, not before.
  }

 private:
  // Clears a replica's pause at `at` (checksumShard) when destroyed, unless another pause
  // replaced it.
  struct PauseRelease {
    PauseRelease(std::shared_ptr<replication::ShardLog> log, uint64_t at)
        : log(std::move(log)), at(at) {}
    ~PauseRelease() {
      if (log && log->pause_at() == at) log->SetPauseAt(0);
    }
    std::shared_ptr<replication::ShardLog> log;
    uint64_t at;
  };

  static constexpr size_t kMaxPullBytes = 16u << 20;
  static constexpr uint32_t kMaxPullWaitMs = 5000;
  static constexpr std::chrono::milliseconds kChecksumWait = std::chrono::seconds(30);

  // Runs `work` (on the engine pool, or inline when there is none), then on the event loop
  // either `fill(value)` or writes the error into the builder `error_slot(status)` returns.
  // Records the call's latency (queueing included) and error code.
  template <typename T, typename Work, typename Fill, typename ErrorSlot>
  // `write`: a write's acknowledgement mode. A semi-sync write's reply waits, after the work,
  // until a replica acknowledged the write's token (WriteAcknowledger).
  kj::Promise<void> Serve(NodeMetrics::Method method, Work&& work, Fill&& fill,
                          ErrorSlot&& error_slot, const WriteOptions& write = {}) {
    auto start = std::chrono::steady_clock::now();
    auto respond = [this, method, start, fill = std::forward<Fill>(fill),
                    error_slot = std::forward<ErrorSlot>(error_slot)](Result<T> result) mutable {
      if (result.ok()) {
        fill(*result);
      } else {
        WriteError(error_slot(result.status()), result.status());
      }
      core_->metrics.Record(method, std::chrono::steady_clock::now() - start);
    };
    const bool semi_sync = IsWrite<T>::value && acks_.SemiSync(write);
    const auto ack_timeout = acks_.Timeout(write);
    // Returns a promise only when the reply must wait for a replica; else answers at once.
    auto finish = [this, semi_sync, ack_timeout,
                   respond = kj::mv(respond)](Result<T> result) mutable -> kj::Promise<void> {
      if constexpr (IsWrite<T>::value) {
        if (semi_sync) {
          return acks_.Acknowledge(std::move(result), ack_timeout)
              .then([this, respond = kj::mv(respond)](Result<T> acked) mutable {
                respond(acks_.Withhold(std::move(acked)));
              });
        }
        respond(acks_.Withhold(std::move(result)));
        return kj::READY_NOW;
      }
      respond(std::move(result));
      return kj::READY_NOW;
    };
    if (!core_->pool) {
      core_->metrics.RecordEngineCall(NodeMetrics::kOnLoop);
      return finish(work(*core_, *core_->Table()));
    }
    if (IsLockFreeRead(method)) {
      // Tried on the loop from memory first; only a read that needs the disk pays the two
      // thread hops to the pool and back (decision 0006).
      Result<T> result = [&] {
        CacheOnlyReads memory_only;
        return work(*core_, *core_->Table());
      }();
      if (result.ok() || result.status().code() != ErrorCode::kWouldBlock) {
        core_->metrics.RecordEngineCall(NodeMetrics::kOnLoop);
        return finish(std::move(result));
      }
    }
    core_->metrics.RecordEngineCall(NodeMetrics::kOnPool);
    auto paf = kj::newPromiseAndCrossThreadFulfiller<Result<T>>();
    bool queued = core_->pool->Submit([core = core_, work = std::forward<Work>(work),
                                       fulfiller = kj::mv(paf.fulfiller)]() mutable {
      fulfiller->fulfill(work(*core, *core->Table()));
    });
    if (!queued) {
      return finish(Result<T>(Status::FromCode(
          ErrorCode::kOverloaded,
          "node " + core_->options.node_id + " has too many calls queued; retry later")));
    }
    return paf.promise.then(kj::mv(finish));
  }

  // Copies one stored message (a flat Cap'n Proto message) into element `i` of `out`.
  static Status CopyStoredMessage(kj::ArrayPtr<const capnp::word> words,
                                  capnp::List<s::Message>::Builder out, unsigned i) {
    KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] {
                   capnp::FlatArrayMessageReader reader(words);
                   out.setWithCaveats(i, reader.getRoot<s::Message>());
                 })) {
      return Status::Corruption(std::string("stored message: ") + e->getDescription().cStr());
    }
    return Status::Ok();
  }

  // Reads that take no engine lock, so running them on the loop can only wait for memory.
  // (getConversation and listMembers take the conversation's lock, which writers hold across
  // their WAL write.) pullLog continues a replica's log iterator on the loop (the live WAL's
  // tail, in the page cache); opening the log goes to the pool.
  // Scans (readHistory, listInbox) never run memory-only: RocksDB 7.8's merging iterator can
  // drop a child's Incomplete status under kBlockCacheTier and skip that file's keys with an OK
  // status (decision 0011): a history page silently missing messages. Point reads are safe
  // (an uncached table answers "may exist", which the engine turns into would-block). A history
  // page is tried on the loop only from the node's history tail cache: under CacheOnlyReads
  // the engine answers it from a cached tail or says would-block, never scans (decision 0014).
  static bool IsLockFreeRead(NodeMetrics::Method method) {
    return method == NodeMetrics::kGetMessage || method == NodeMetrics::kPullLog ||
           method == NodeMetrics::kReadHistory;
  }

  void WriteError(s::Error::Builder error, const Status& status) {
    core_->metrics.RecordError(status.code());
    wire::ToWire(status, error);
    // The version the node serves now: what a client needs to know it should refresh.
    if (status.code() == ErrorCode::kNotOwner) error.setMapVersion(core_->Table()->map_version);
  }

  // Runs `serve` at once, or, for a session read of a key this node holds as a replica that
  // has not applied the caller's token yet, once it has (or the session wait ran out). The
  // common case adds no promise node: reads are the hot path.
  template <typename Serve>
  kj::Promise<void> WhenReadable(uint64_t key, const ReadOptions& read, Serve&& serve) {
    if (read.consistency != Consistency::kSession || read.token.lsn == 0) return serve();
    auto table = core_->Table();
    const HostedShard* shard = table->Find(TokenOf(key));
    if (shard == nullptr || shard->assignment.role == ShardRole::kPrimary ||
        shard->assignment.shard_id != read.token.shard_id || shard->log->lsn() >= read.token.lsn) {
      return serve();
    }
    return shard->log->WaitFor(read.token.lsn, timer_, core_->options.replication.session_wait)
        .attach(std::shared_ptr<const ShardTable>(table))
        .then([serve = std::forward<Serve>(serve)](bool) mutable { return serve(); });
  }

  // Work functions (below, and the `work` lambdas above) run on engine-pool threads: they use
  // only the NodeCore they are given, never the service object, which belongs to an event loop
  // that may end while they run.
  // Routes `key`, runs the write `op` on its shard, and attaches the write token.
  template <typename Op>
  static auto Write(const NodeCore& core, const ShardTable& table, uint64_t key, Op&& op,
                    const char* field = "conv_id", uint64_t bytes = 0)
      -> Result<
          Written<typename std::decay_t<decltype(op(std::declval<ShardStore&>()))>::value_type>> {
    using T = typename std::decay_t<decltype(op(std::declval<ShardStore&>()))>::value_type;
    auto shard = RouteWrite(core, table, key, field, bytes);
    if (!shard.ok()) return shard.status();
    Result<T> done = op(*(*shard)->store);
    if (!done.ok()) return done.status();
    return Written<T>{std::move(done).value(), TokenAt(**shard)};
  }

  static WriteToken TokenAt(const HostedShard& shard) {
    return {shard.assignment.shard_id, shard.assignment.epoch, shard.store->LatestSequence()};
  }
  // A read's reply, counted in its shard's load by its approximate size on the wire.
  template <typename T>
  static Result<T> Counted(NodeCore& core, const HostedShard& shard, uint64_t key,
                           const ReadOptions& options, Result<T> read) {
    // An attempt on the event loop that would block is retried on the pool, which counts it.
    if (!read.ok() && read.status().code() == ErrorCode::kWouldBlock) return read;
    CountRead(core, shard, key, options, read.ok() ? ApproxBytes(*read) : 0);
    return read;
  }
  static uint64_t ApproxBytes(const Conversation& conv) { return 64 + conv.title.size(); }
  static uint64_t ApproxBytes(const std::vector<uint64_t>& ids) { return 8 * ids.size(); }
  static uint64_t ApproxBytes(const Message& m) {
    return 64 + m.body.size() + m.client_msg_id.size() + 8 * m.member_ids.size();
  }
  static uint64_t ApproxBytes(const EncodedHistoryPage& page) { return 8 * page.words.size(); }
  static uint64_t ApproxBytes(const InboxPage& page) {
    uint64_t bytes = 0;
    for (const InboxEntry& e : page.entries) bytes += 64 + e.preview.size();
    return bytes;
  }

  static void SetToken(s::WriteToken::Builder out, const WriteToken& token) {
    out.setShardId(token.shard_id);
    out.setEpoch(token.epoch);
    out.setLsn(token.lsn);
  }

  // Copies an id list, refusing lists longer than any call accepts.
  Status ReadIds(capnp::List<uint64_t>::Reader in, const char* field, std::vector<uint64_t>* out) {
    return wire::ReadIdList(in, core_->options.shard_options.limits.max_members_per_change, field,
                            out);
  }

  static void WriteSend(const Written<SendMessageResult>& sent, s::SendResult::Builder out) {
    out.setSeq(sent.value.seq);
    out.setSentAtMs(sent.value.sent_at_ms);
    out.setDuplicate(sent.value.duplicate);
    SetToken(out.initToken(), sent.token);
  }

  static Result<Written<SendMessageResult>> Send(const NodeCore& core, const ShardTable& table,
                                                 const SendMessageRequest& request) {
    return Write(
        core, table, request.conv_id, [&](ShardStore& store) { return store.SendMessage(request); },
        "conv_id", request.body.size() + request.client_msg_id.size());
  }

  // The indexes 0..n-1 grouped by the hosted shard that owns `key_of(i)`; an index no hosted
  // shard owns is handed to `unrouted(i, not_owner_error)` instead.
  template <typename KeyOf, typename Unrouted, typename BytesOf = uint64_t (*)(size_t)>
  static std::map<const HostedShard*, std::vector<size_t>> GroupByShard(
      const NodeCore& core, const ShardTable& table, size_t n, const char* field, KeyOf key_of,
      Unrouted unrouted, BytesOf bytes_of = [](size_t) -> uint64_t { return 0; }) {
    std::map<const HostedShard*, std::vector<size_t>> by_shard;
    for (size_t i = 0; i < n; ++i) {
      auto shard = RouteWrite(core, table, key_of(i), field, bytes_of(i));
      if (shard.ok()) {
        by_shard[*shard].push_back(i);
      } else {
        unrouted(i, shard.status());
      }
    }
    return by_shard;
  }

  // The sends of one batch, one SendMessages call (one WriteBatch) per shard; results in input
  // order.
  static std::vector<Result<Written<SendMessageResult>>> SendGroupedByShard(
      const NodeCore& core, const ShardTable& table, const std::vector<SendMessageRequest>& sends) {
    std::vector<Result<Written<SendMessageResult>>> out(sends.size(),
                                                        Status::Internal("send not routed"));
    auto by_shard = GroupByShard(
        core, table, sends.size(), "conv_id", [&](size_t i) { return sends[i].conv_id; },
        [&](size_t i, Status error) { out[i] = std::move(error); },
        [&](size_t i) { return sends[i].body.size() + sends[i].client_msg_id.size(); });
    for (auto& [shard, indexes] : by_shard) {
      std::vector<SendMessageRequest> group;
      group.reserve(indexes.size());
      for (size_t i : indexes) group.push_back(sends[i]);
      auto results = shard->store->SendMessages(group);
      const WriteToken token = TokenAt(*shard);
      for (size_t k = 0; k < indexes.size(); ++k) {
        if (results[k].ok()) {
          out[indexes[k]] = Written<SendMessageResult>{*results[k], token};
        } else {
          out[indexes[k]] = results[k].status();
        }
      }
    }
    return out;
  }

  template <typename Context>
  kj::Promise<void> ChangeMembers(Context& context, NodeMetrics::Method method) {
    auto params = context.getParams();
    const bool adding = method == NodeMetrics::kAddMembers;
    const uint64_t conv_id = params.getConvId(), actor = params.getActorId();
    std::vector<uint64_t> user_ids;
    Status ids = ReadIds(params.getUserIds(), "user_ids", &user_ids);
    const WriteOptions write = wire::FromWire(params.getOptions());
    return Serve<Written<uint64_t>>(
        method,
        [ids, adding, conv_id, actor, user_ids](
            NodeCore& core, const ShardTable& table) -> Result<Written<uint64_t>> {
          SB_RETURN_IF_ERROR(ids);
          auto done = Write(core, table, conv_id, [&](ShardStore& store) {
            return adding ? store.AddMembers(conv_id, actor, user_ids)
                          : store.RemoveMembers(conv_id, actor, user_ids);
          });
          core.signal.Notify();
          return done;
        },
        [context](const Written<uint64_t>& done) mutable {
          auto results = context.getResults();
          results.setSeq(done.value);
          SetToken(results.initToken(), done.token);
        },
        [context](const Status&) mutable { return context.getResults().initError(); }, write);
  }

  template <typename Context, typename Op>
  kj::Promise<void> RewriteMessage(Context& context, NodeMetrics::Method method, uint64_t conv_id,
                                   Op op) {
    return Serve<Written<Message>>(
        method,
        [conv_id, op](NodeCore& core, const ShardTable& table) {
          auto done = Write(core, table, conv_id, [&](ShardStore& store) { return op(store); });
          core.signal.Notify();  // An edit of the newest message updates members' previews.
          return done;
        },
        [context](const Written<Message>& done) mutable {
          auto results = context.getResults();
          wire::ToWire(done.value, results.initMessage());
          SetToken(results.initToken(), done.token);
        },
        [context](const Status&) mutable { return context.getResults().initError(); },
        wire::FromWire(context.getParams().getOptions()));
  }

  std::shared_ptr<NodeCore> core_;
  kj::Timer& timer_;
  WriteAcknowledger acks_;
};

}  // namespace

capnp::Capability::Client NewChatService(std::shared_ptr<NodeCore> core, kj::Timer& timer) {
  return kj::heap<ChatService>(std::move(core), timer);
}

}  // namespace scrollback
