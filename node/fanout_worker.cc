#include "scrollback/node/fanout_worker.h"

#include <kj/async-io.h>
#include <pthread.h>
#include <spdlog/logger.h>

#include <algorithm>
#include <map>
#include <optional>

namespace scrollback {

FanOutWorker::FanOutWorker(StorageNode& node, std::shared_ptr<ShardMapSource> maps,
                           FanOutOptions options)
    : node_(node), maps_(std::move(maps)), options_(options), log_(OrNull(options.logger)) {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "sb-fanout");
    Run();
  });
}

FanOutWorker::~FanOutWorker() {
  {
    std::lock_guard lock(linger_mu_);
    stop_ = true;
  }
  linger_cv_.notify_all();
  node_.outbox_signal().Notify();
  thread_.join();
}

void FanOutWorker::Run() {
  using Clock = std::chrono::steady_clock;
  auto io = kj::setupAsyncIo();
  auto client = ChatClient::Create(*io.provider, maps_, options_.client);
  // Per shard: the store the positions belong to, where the next read starts, and the oldest
  // record left undelivered, which the worker goes back to once it has caught up and the retry
  // time has come. The outbox is a FIFO queue, so nothing new appears behind the read position.
  struct Cursor {
    std::weak_ptr<ShardStore> store;  // Positions are only meaningful for this store.
    std::string position;
    std::optional<std::string> retry_from;
    Clock::time_point retry_at;
    // The wait before the next retry: retry_wait after a first failure, doubled each time a
    // retry fails too, up to max_retry_wait; back to zero once a retry delivers everything.
    std::chrono::milliseconds backoff{0};
    bool retrying = false;  // The current read started at retry_from.
  };
  auto same_store = [](const std::weak_ptr<ShardStore>& a, const std::shared_ptr<ShardStore>& b) {
    return !a.owner_before(b) && !b.owner_before(a);
  };
  std::map<uint64_t, Cursor> cursors;
  uint64_t seen_signal = 0;
  while (!stop_) {
    bool progress = false;
    bool full = false;  // Some outbox had more records than one read takes.
    std::optional<Clock::time_point> next_retry;
    // A fenced node (its primary lease not valid) delivers nothing: deleting delivered outbox
    // records is a write, and its shards may have a newer primary that delivers them.
    PrimaryLease* lease = node_.primary_lease();
    const bool fenced = lease != nullptr && !lease->Writable();
    for (const HostedShard& shard : node_.Shards()) {
      if (stop_ || fenced) break;
      if (shard.assignment.role != ShardRole::kPrimary) continue;  // Replicas never deliver.
      // Paused for a switchover: no writes here (the outbox deletes) until the new primary has
      // everything; it delivers what is left. Splitting: the children deliver it.
      if (shard.assignment.writes_paused || shard.assignment.sealed_for_reshard) continue;
      Cursor& cursor = cursors[shard.assignment.shard_id];
      if (!same_store(cursor.store, shard.store)) {
        // First pass over this shard, or it was closed and opened again (its outbox positions
        // restarted): start from its oldest record.
        cursor = Cursor{};
        cursor.store = shard.store;
      }
      if (cursor.retry_from && Clock::now() >= cursor.retry_at) {
        // Time to retry what failed, even while new records keep arriving.
        cursor.position = *cursor.retry_from;
        cursor.retry_from.reset();
        cursor.retrying = true;
      }
      auto batch = shard.store->ReadOutbox(cursor.position, options_.batch);
      if (!batch.ok()) {
        read_errors_.fetch_add(1, std::memory_order_relaxed);
        log_->error("reading the outbox of shard {} failed: {}", shard.assignment.shard_id,
                    batch.status().ToString());
        cursor = Cursor{};
        cursor.store = shard.store;
        next_retry = Clock::now() + options_.retry_wait;
        continue;
      }
      if (batch->records.empty()) {
        cursor.retrying = false;
        if (cursor.retry_from) {
          next_retry = std::min(next_retry.value_or(cursor.retry_at), cursor.retry_at);
        } else {
          cursor.backoff = std::chrono::milliseconds(0);
        }
        continue;
      }
      cursor.position = batch->next_position;
      full |= batch->records.size() >= options_.batch;

      std::vector<InboxUpdate> updates;
      updates.reserve(batch->records.size());
      for (const OutboxRecord& record : batch->records) updates.push_back(record.update);
      rounds_.fetch_add(1, std::memory_order_relaxed);
      std::vector<Status> statuses =
          client->ApplyInboxUpdates(std::move(updates)).wait(io.waitScope);

      const bool had_failures = cursor.retry_from.has_value();
      std::vector<std::string> done;
      bool stale_map = false;
      size_t failed = 0;
      const Status* first_failure = nullptr;
      for (size_t i = 0; i < statuses.size(); ++i) {
        const Status& status = statuses[i];
        if (status.ok()) {
          done.push_back(batch->records[i].position);
          continue;
        }
        // Kept in the outbox whatever the error: never lose an update silently.
        ++failed;
        if (first_failure == nullptr) first_failure = &status;
        const ErrorCode code = status.code();
        stale_map |= code == ErrorCode::kNotOwner;
        if (code == ErrorCode::kInvalidArgument || code == ErrorCode::kCorruption) {
          undeliverable_.fetch_add(1, std::memory_order_relaxed);
          const InboxUpdate& update = batch->records[i].update;
          log_->error(
              "inbox update for user {} in conversation {} (seq {}) from shard {} cannot be "
              "applied by its target: {}; kept in the outbox and retried",
              update.user_id, update.conv_id, update.seq, shard.assignment.shard_id,
              status.ToString());
        }
        if (!cursor.retry_from || batch->records[i].position < *cursor.retry_from) {
          cursor.retry_from = batch->records[i].position;
        }
      }
      delivered_.fetch_add(done.size(), std::memory_order_relaxed);
      failed_.fetch_add(failed, std::memory_order_relaxed);
      if (failed > 0 && (cursor.retrying || !had_failures)) {
        // Once per pass: a retry that failed again doubles the wait; a first failure starts it.
        cursor.backoff = cursor.backoff.count() == 0
                             ? options_.retry_wait
                             : std::min(cursor.backoff * 2, options_.max_retry_wait);
        cursor.retry_at = Clock::now() + cursor.backoff;
        log_->warn(
            "{} of {} inbox updates from shard {} not delivered (first: {}); retrying in {} ms",
            failed, statuses.size(), shard.assignment.shard_id, first_failure->ToString(),
            cursor.backoff.count());
      }
      cursor.retrying = false;
      if (stale_map) maps_->RequestRefresh();
      if (!done.empty()) {
        if (Status deleted = shard.store->DeleteOutbox(done); !deleted.ok()) {
          // Read them again with the next retry: a repeat delivery is a no-op.
          if (!cursor.retry_from || done.front() < *cursor.retry_from) {
            cursor.retry_from = done.front();
            cursor.retry_at = Clock::now() + options_.retry_wait;
          }
          delete_errors_.fetch_add(1, std::memory_order_relaxed);
          log_->warn("deleting {} delivered outbox records of shard {} failed: {}", done.size(),
                     shard.assignment.shard_id, deleted.ToString());
        }
        progress = true;
      }
    }
    if (stop_) break;
    if (progress && !full && options_.linger.count() > 0) {
      // Let the next round gather more (see FanOutOptions::linger); stop ends the wait.
      std::unique_lock lock(linger_mu_);
      linger_cv_.wait_for(lock, options_.linger, [this] { return stop_.load(); });
    }
    if (!progress) {
      auto wait = options_.idle_wait;
      if (next_retry) {
        auto until =
            std::chrono::duration_cast<std::chrono::milliseconds>(*next_retry - Clock::now());
        wait = std::clamp(until, std::chrono::milliseconds(1), wait);
      }
      node_.outbox_signal().WaitFor(&seen_signal, wait);
    }
  }
}

void FanOutWorker::RenderMetrics(std::string* out) const {
  auto counter = [out](const char* name, const char* help, uint64_t value) {
    *out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n" + name +
            " " + std::to_string(value) + "\n";
  };
  counter("scrollback_fanout_delivered_total", "Inbox updates delivered from outboxes.",
          delivered_.load());
  counter("scrollback_fanout_rounds_total",
          "Delivery calls made (outbox records read and sent to their users' shards).",
          rounds_.load());
  counter("scrollback_fanout_failed_total",
          "Delivery attempts that failed; the records stay in the outbox and are retried.",
          failed_.load());
  counter("scrollback_fanout_undeliverable_total",
          "Delivery attempts answered invalid-argument or corruption by the target (kept, "
          "retried with backoff, logged at error level).",
          undeliverable_.load());
  counter("scrollback_fanout_outbox_read_errors_total", "Outbox reads that failed (logged).",
          read_errors_.load());
  counter("scrollback_fanout_outbox_delete_errors_total",
          "Deletes of delivered records that failed (delivered again later; logged).",
          delete_errors_.load());
}

}  // namespace scrollback
