#include "scrollback/cluster/fanout_worker.h"

#include <kj/async-io.h>
#include <pthread.h>

#include <map>
#include <optional>

namespace scrollback {

FanOutWorker::FanOutWorker(StorageNode& node, std::shared_ptr<ShardMapSource> maps,
                           FanOutOptions options)
    : node_(node), maps_(std::move(maps)), options_(options) {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "sb-fanout");
    Run();
  });
}

FanOutWorker::~FanOutWorker() {
  stop_ = true;
  node_.outbox_signal().Notify();
  thread_.join();
}

void FanOutWorker::Run() {
  auto io = kj::setupAsyncIo();
  auto client = ChatClient::Create(*io.provider, maps_, options_.client);
  // Per shard: where the next read starts, and the oldest record left undelivered (a target
  // was down), which the worker goes back to once it has caught up. The outbox is a FIFO
  // queue, so nothing new appears behind the read position.
  struct Cursor {
    std::string position;
    std::optional<std::string> retry_from;
  };
  std::map<uint64_t, Cursor> cursors;
  uint64_t seen_signal = 0;
  while (!stop_) {
    bool progress = false;
    bool failures = false;
    for (const HostedShard& shard : node_.Shards()) {
      if (stop_) break;
      Cursor& cursor = cursors[shard.assignment.shard_id];
      auto batch = shard.store->ReadOutbox(cursor.position, options_.batch);
      if (!batch.ok()) {
        failures = true;
        cursor = Cursor{};
        continue;
      }
      if (batch->records.empty()) {
        if (cursor.retry_from) {  // Caught up: next time, retry what failed.
          cursor.position = *cursor.retry_from;
          cursor.retry_from.reset();
          failures = true;
        }
        continue;
      }
      cursor.position = batch->next_position;

      std::vector<InboxUpdate> updates;
      updates.reserve(batch->records.size());
      for (const OutboxRecord& record : batch->records) updates.push_back(record.update);
      std::vector<Status> statuses =
          client->ApplyInboxUpdates(std::move(updates)).wait(io.waitScope);

      std::vector<std::string> done;
      bool stale_map = false;
      for (size_t i = 0; i < statuses.size(); ++i) {
        const Status& status = statuses[i];
        const ErrorCode code = status.code();
        if (status.ok()) {
          done.push_back(batch->records[i].position);
          delivered_.fetch_add(1, std::memory_order_relaxed);
        } else if (code == ErrorCode::kInvalidArgument || code == ErrorCode::kCorruption) {
          done.push_back(batch->records[i].position);  // Can never apply: drop, count it.
          dropped_.fetch_add(1, std::memory_order_relaxed);
        } else {
          failures = true;
          stale_map |= code == ErrorCode::kNotOwner;
          if (!cursor.retry_from || batch->records[i].position < *cursor.retry_from) {
            cursor.retry_from = batch->records[i].position;
          }
        }
      }
      if (stale_map) maps_->Refresh();
      if (!done.empty()) {
        // A failed delete only means a repeat delivery later, which is a no-op.
        (void)shard.store->DeleteOutbox(done);
        progress = true;
      }
    }
    if (stop_) break;
    if (!progress) {
      node_.outbox_signal().WaitFor(&seen_signal,
                                    failures ? options_.retry_wait : options_.idle_wait);
    }
  }
}

}  // namespace scrollback
