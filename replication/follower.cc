// ReplicaFollower: the replica side of log shipping and bootstrap (docs/replication.md).
//
// Everything runs on the follower's own thread and KJ event loop: one pull loop per followed
// shard (pull, apply, pull again; a pull long-polls on the primary when there is nothing new),
// one Cap'n Proto connection per primary address shared by the pulls and bootstraps to it.
// Public methods hop onto the loop with executeSync (never while the loop is exiting: see
// Stop); nothing here is touched from another thread except the atomic counters and the lock
// that orders those calls against Stop (calls_mu_).
#include <capnp/rpc-twoparty.h>
#include <pthread.h>
#include <spdlog/logger.h>
#include <xxhash.h>

#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <shared_mutex>
#include <thread>

#include "scrollback/replication/replication.h"
#include "scrollback/rpc/buffered_stream.h"
#include "scrollback/rpc/network_faults.h"
#include "scrollback/schema/chatstore.capnp.h"
#include "scrollback/schema/chatstore_wire.h"

namespace scrollback::replication {
namespace {

namespace fs = std::filesystem;
namespace s = ::scrollback::schema;

// How long a paused copy (a checksum at an LSN) waits between looks at the pause.
constexpr auto kPausePoll = std::chrono::milliseconds(2);
// Attempts per checkpoint file before the bootstrap fails (a new checkpoint is made then).
constexpr int kFileAttempts = 3;

template <typename Reader>
Status ReplyError(const Reader& reply) {
  return reply.hasError() ? wire::FromWire(reply.getError()) : Status::Ok();
}

class FollowerImpl final : public ReplicaFollower {
 public:
  FollowerImpl(FollowerOptions options, std::function<void(uint64_t, const Status&)> on_rebootstrap)
      : options_(std::move(options)),
        log_(OrNull(options_.logger)),
        on_rebootstrap_(std::move(on_rebootstrap)) {
    std::promise<kj::Own<const kj::Executor>> ready;
    auto executor = ready.get_future();
    thread_ = std::thread([this, &ready] {
      pthread_setname_np(pthread_self(), "sb-follower");
      auto io = kj::setupAsyncIo();
      io_ = &io;
      loop_ = std::make_unique<LoopState>();
      auto stop = kj::newPromiseAndFulfiller<void>();
      loop_->stop = kj::mv(stop.fulfiller);
      // A counted reference: callers on other threads may still hold it while this loop ends;
      // their calls then throw (caught by OnLoop and Bootstrap) instead of touching freed memory.
      ready.set_value(kj::getCurrentThreadExecutor().addRef());
      stop.promise.wait(io.waitScope);
      // Cancel every loop (Stop cancelled the bootstraps), then close the connections, on this
      // thread.
      loop_->followed.clear();
      loop_->connections.clear();
      // Let the teardown's own events (connections closing, cancelled calls) run: a loop must
      // be empty when it is destroyed.
      for (int i = 0; i < 16; ++i) io.waitScope.poll();
      loop_.reset();
      for (int i = 0; i < 16; ++i) io.waitScope.poll();
      io_ = nullptr;
    });
    executor_ref_ = std::make_unique<ExecutorRef>(ExecutorRef{executor.get()});
    executor_ = executor_ref_->own.get();
  }

  ~FollowerImpl() override { Stop(); }

  void Follow(const FollowTarget& target, std::shared_ptr<ShardStore> store,
              std::shared_ptr<ShardLog> log) override {
    OnLoop([&] {
      auto it = loop_->followed.find(target.shard_id);
      if (it != loop_->followed.end() && it->second->target == target &&
          it->second->store == store && !it->second->stopped) {
        return;
      }
      if (it != loop_->followed.end()) loop_->followed.erase(it);  // Cancels its loop.
      auto followed = kj::heap<Followed>();
      followed->target = target;
      followed->store = std::move(store);
      followed->log = std::move(log);
      followed->log->StartedFollowing();
      Followed& f = *followed;
      log_->info("following shard {} epoch {} from {} ({}) at lsn {}", target.shard_id,
                 target.epoch, target.primary_node, target.primary_address,
                 f.store->LatestSequence());
      f.loop = PullLoop(f).eagerlyEvaluate([this, &f](kj::Exception&& e) {
        log_->error("the pull loop of shard {} failed: {}", f.target.shard_id,
                    e.getDescription().cStr());
      });
      loop_->followed.emplace(target.shard_id, kj::mv(followed));
    });
  }

  void Unfollow(uint64_t shard_id) override {
    OnLoop([&] {
      if (loop_->followed.erase(shard_id) > 0) log_->info("stopped following shard {}", shard_id);
    });
  }

  Result<uint64_t> Bootstrap(const FollowTarget& target, const std::string& dir,
                             ShardLog& log) override {
    std::shared_lock call(calls_mu_);
    if (!Running()) return Status::Unavailable("the replica follower is stopped");
    Result<uint64_t> result = Status::Internal("bootstrap did not run");
    KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] {
                   result = executor_->executeSync([&]() -> kj::Promise<Result<uint64_t>> {
                     if (loop_->stopping) {
                       return Result<uint64_t>(
                           Status::Unavailable("the replica follower is stopping"));
                     }
                     return loop_->bootstraps.wrap(BootstrapAsync(target, dir, log));
                   });
                 })) {
      result =
          Status::Unavailable(std::string("bootstrap interrupted: ") + e->getDescription().cStr());
    }
    if (!result.ok()) {
      bootstrap_failures_.fetch_add(1, std::memory_order_relaxed);
      std::error_code ec;
      fs::remove_all(dir + ".part", ec);  // Never `dir`: it may be another copy's (exists).
    }
    log.bootstrap_done = 0;
    log.bootstrap_total = 0;
    return result;
  }

  void RenderMetrics(std::string* out) const override {
    auto counter = [out](const char* name, const char* help, uint64_t value) {
      *out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n" +
              name + " " + std::to_string(value) + "\n";
    };
    counter("scrollback_replica_pulls_total", "Log pulls answered by primaries.", pulls_.load());
    counter("scrollback_rejoin_rebuilds_total",
            "Copies refused by their primary for holding writes past the start of a later epoch "
            "(an old primary's unacknowledged tail; rebuilt from a checkpoint, logged).",
            rejoins_rebuilt_.load());
    counter("scrollback_rejoin_discarded_lsns_total",
            "LSNs discarded by those rebuilds (writes an old primary held that no later "
            "primary had).",
            discarded_lsns_.load());
    counter("scrollback_replica_pull_failures_total",
            "Log pulls that failed (primary unreachable, not primary yet, stale epoch; logged).",
            pull_failures_.load());
    counter("scrollback_replica_batches_applied_total", "Log batches applied to replica copies.",
            batches_.load());
    counter("scrollback_replica_bytes_applied_total", "Log bytes applied to replica copies.",
            bytes_.load());
    counter("scrollback_replica_rebootstraps_total",
            "Replica copies that had to bootstrap again (log gap, divergence; logged).",
            rebootstraps_.load());
    counter("scrollback_replica_bootstraps_total", "Checkpoints copied and verified.",
            bootstraps_done_.load());
    counter("scrollback_replica_bootstrap_failures_total",
            "Bootstraps that failed and were retried (logged).", bootstrap_failures_.load());
    counter("scrollback_replica_bootstrap_bytes_total", "Checkpoint bytes received.",
            bootstrap_bytes_.load());
    counter("scrollback_replica_checkpoint_file_mismatches_total",
            "Checkpoint files whose size or checksum did not match (re-fetched; logged).",
            file_mismatches_.load());
  }

  // Ends the loop once no other thread is calling into it. KJ 0.9.2 can leave a caller waiting
  // forever if the target loop exits while its cross-thread call is being sent, so the loop never
  // exits under a call: calls hold `calls_mu_` shared, and the loop is told to exit only under it
  // held exclusively. Calls in flight first finish: every bootstrap is cancelled, and a bootstrap
  // that reaches the loop after that is refused.
  void Stop() override {
    if (!thread_.joinable()) return;
    stopped_.store(true);  // New calls return at once.
    auto on_loop = [this](auto&& fn) {
      KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] { executor_->executeSync(fn); })) {
        log_->error("stopping the replica follower: {}", e->getDescription().cStr());
      }
    };
    on_loop([this] {
      loop_->stopping = true;
      loop_->bootstraps.cancel("the follower is stopping");
    });
    {
      std::unique_lock no_calls(calls_mu_);
      on_loop([this] { loop_->stop->fulfill(); });
    }
    thread_.join();
  }

 private:
  struct Connection {
    kj::Own<kj::AsyncIoStream> stream;
    kj::Own<capnp::TwoPartyVatNetwork> network;
    kj::Own<capnp::RpcSystem<capnp::rpc::twoparty::VatId>> rpc;
    s::Node::Client node = nullptr;
    kj::Canceler connecting;  // Last: cancels a pending connect first.
  };

  struct Followed {
    FollowTarget target;
    std::shared_ptr<ShardStore> store;
    std::shared_ptr<ShardLog> log;
    uint32_t failures = 0;
    // A pull at this target's epoch was answered: the copy continues the primary's log (not
    // diverged), so later pulls report the target's epoch as the copy's data epoch.
    bool accepted = false;
    bool stopped = false;              // Handed back for a bootstrap; the loop has ended.
    kj::Promise<void> loop = nullptr;  // Last: destroyed first, cancelling the loop.
  };

  bool Running() const { return !stopped_.load() && thread_.joinable(); }

  // Runs `fn` on the follower's loop and waits for it. Nothing happens once the follower is
  // stopping: its loop drops every followed copy itself. Holds `calls_mu_` shared (see Stop).
  // REQUIRES: not on the loop's thread (Follow, Unfollow and Bootstrap neither: the loop's own
  // callbacks, such as on_rebootstrap, must not call back into the follower).
  template <typename Fn>
  void OnLoop(Fn&& fn) {
    std::shared_lock call(calls_mu_);
    if (!Running()) return;
    KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] { executor_->executeSync(fn); })) {
      if (!stopped_.load()) {
        log_->error("the replica follower's loop failed a call: {}", e->getDescription().cStr());
      }
    }
  }

  kj::Timer& timer() { return io_->provider->getTimer(); }

  // The connection to `address`, connecting if there is none. Dropped (and made afresh by the
  // next caller) when a call on it fails. `*used` (if given) identifies it for DropConnection.
  // `node_id` names the peer for the fault seam (FollowerOptions::faults).
  s::Node::Client ConnectionTo(const std::string& address, const std::string& node_id,
                               const Connection** used = nullptr) {
    auto it = loop_->connections.find(address);
    if (it != loop_->connections.end()) {
      if (used != nullptr) *used = it->second.get();
      return it->second->node;
    }
    auto owned = kj::heap<Connection>();
    Connection* c = owned.get();
    c->node = s::Node::Client(c->connecting.wrap(
        io_->provider->getNetwork()
            .parseAddress(address)
            .then([](kj::Own<kj::NetworkAddress> a) { return a->connect(); })
            .then([this, c, node_id](kj::Own<kj::AsyncIoStream> stream) {
              capnp::ReaderOptions reader;
              reader.traversalLimitInWords = options_.max_message_bytes / sizeof(capnp::word);
              if (options_.faults) {
                stream = options_.faults->Wrap(kj::mv(stream), options_.node_id, node_id, timer());
              }
              c->stream = NewBufferedStream(kj::mv(stream));
              c->network = kj::heap<capnp::TwoPartyVatNetwork>(
                  *c->stream, capnp::rpc::twoparty::Side::CLIENT, reader);
              c->rpc = kj::heap(capnp::makeRpcClient(*c->network));
              capnp::word scratch[4]{};
              capnp::MallocMessageBuilder vat(scratch);
              auto server = vat.getRoot<capnp::rpc::twoparty::VatId>();
              server.setSide(capnp::rpc::twoparty::Side::SERVER);
              return c->rpc->bootstrap(server).castAs<s::Node>();
            })));
    s::Node::Client node = c->node;
    if (used != nullptr) *used = c;
    loop_->connections.emplace(address, kj::mv(owned));
    return node;
  }
  // Drops the connection a failed call used, unless it was replaced meanwhile (a newer one
  // serves other shards' pulls).
  void DropConnection(const std::string& address, const Connection* used) {
    auto it = loop_->connections.find(address);
    if (it != loop_->connections.end() && it->second.get() == used) loop_->connections.erase(it);
  }

  template <typename T>
  kj::Promise<T> WithTimeout(kj::Promise<T> call) {
    return timer().timeoutAfter(options_.call_timeout.count() * kj::MILLISECONDS, kj::mv(call));
  }

  kj::Promise<void> Backoff(Followed& f) {
    f.failures = std::min<uint32_t>(f.failures + 1, 16);
    auto wait = std::min<std::chrono::milliseconds>(
        options_.retry_max, options_.retry_min * (1u << std::min<uint32_t>(f.failures - 1, 10)));
    return timer().afterDelay(wait.count() * kj::MILLISECONDS);
  }

  // Stops following `f` and asks the host for a new bootstrap.
  kj::Promise<void> Rebootstrap(Followed& f, const Status& why) {
    rebootstraps_.fetch_add(1, std::memory_order_relaxed);
    log_->warn("shard {} at lsn {} must bootstrap again: {}", f.target.shard_id,
               f.store->LatestSequence(), why.ToString());
    f.stopped = true;
    if (on_rebootstrap_) on_rebootstrap_(f.target.shard_id, why);
    return kj::READY_NOW;
  }

  kj::Promise<void> PullLoop(Followed& f) {
    // A checksum at an LSN holds the copy there (ShardLog::SetPauseAt).
    const uint64_t pause = f.log->pause_at();
    if (pause != 0 && f.store->LatestSequence() >= pause) {
      return timer().afterDelay(kPausePoll.count() * kj::MILLISECONDS).then([this, &f] {
        return PullLoop(f);
      });
    }
    const uint64_t from = f.store->LatestSequence() + 1;
    const Connection* used = nullptr;
    auto request =
        ConnectionTo(f.target.primary_address, f.target.primary_node, &used).pullLogRequest();
    request.setShardId(f.target.shard_id);
    request.setEpoch(f.target.epoch);
    request.setFromLsn(from);
    request.setMaxBytes(options_.pull_max_bytes);
    request.setWaitMs(static_cast<uint32_t>(options_.pull_wait.count()));
    request.setReplicaNodeId(wire::AsText(options_.node_id));
    uint64_t data_epoch = f.target.epoch;
    if (!f.accepted) {
      // The last epoch this copy's data records: the primary checks it against its own
      // history (a copy past the start of a later epoch diverged).
      auto history = f.store->EpochHistory();
      data_epoch = history.ok() && !history->empty() ? history->back().epoch : 0;
    }
    request.setDataEpoch(data_epoch);
    return WithTimeout(request.send())
        .then(
            [this, &f, from, data_epoch](
                capnp::Response<s::Replication::PullLogResults> reply) -> kj::Promise<void> {
              Status error = ReplyError(reply);
              if (!error.ok()) {
                if (error.code() == ErrorCode::kFailedPrecondition &&
                    reply.getEpochStartLsn() > 0 && from - 1 > reply.getEpochStartLsn()) {
                  // Rejoin of a diverged copy: what it discards is counted, never hidden.
                  const uint64_t discarded = from - 1 - reply.getEpochStartLsn();
                  rejoins_rebuilt_.fetch_add(1, std::memory_order_relaxed);
                  discarded_lsns_.fetch_add(discarded, std::memory_order_relaxed);
                  log_->error(
                      "rejoin: shard {} copy at lsn {} (data epoch {}) holds {} LSNs past lsn {}, "
                      "where primary {} began a later epoch (now {}): discarding them, "
                      "rebuilding from a checkpoint",
                      f.target.shard_id, from - 1, data_epoch, discarded, reply.getEpochStartLsn(),
                      f.target.primary_node, f.target.epoch);
                }
                return PullRefused(f, error);
              }
              f.accepted = true;
              pulls_.fetch_add(1, std::memory_order_relaxed);
              Status applied = ApplyBatches(f, from, reply.getBatches());
              if (!applied.ok()) {
                if (applied.code() == ErrorCode::kCorruption) return Rebootstrap(f, applied);
                pull_failures_.fetch_add(1, std::memory_order_relaxed);
                log_->warn("shard {}: a pulled batch did not apply ({}); pulling again",
                           f.target.shard_id, applied.ToString());
                return Backoff(f).then([this, &f] { return PullLoop(f); });
              }
              f.failures = 0;
              const uint64_t latest = reply.getLatestLsn();
              f.log->RecordPrimaryState(latest, f.store->LatestSequence() >= latest);
              // A pull that found a little (a write or two, woken by the first): let a few
              // more accumulate before the next, so that a busy shard ships in groups rather
              // than one call and one replica write per primary write.
              if (options_.pull_linger.count() > 0 && reply.getBatches().size() > 0 &&
                  reply.getBatches().size() < 64) {
                return timer()
                    .afterDelay(options_.pull_linger.count() * kj::MICROSECONDS)
                    .then([this, &f] { return PullLoop(f); });
              }
              return PullLoop(f);
            },
            [this, &f, used](kj::Exception&& e) -> kj::Promise<void> {
              pull_failures_.fetch_add(1, std::memory_order_relaxed);
              if (f.failures == 0) {
                log_->warn("pulling shard {} from {} failed: {}", f.target.shard_id,
                           f.target.primary_address, e.getDescription().cStr());
              }
              DropConnection(f.target.primary_address, used);
              return Backoff(f).then([this, &f] { return PullLoop(f); });
            });
  }

  kj::Promise<void> PullRefused(Followed& f, const Status& error) {
    if (error.code() == ErrorCode::kLogGap) return Rebootstrap(f, error);
    // This copy is ahead of its primary: it holds writes the primary never had (an old
    // primary's). Never merged: rebuilt from the primary's checkpoint (DESIGN.md).
    if (error.code() == ErrorCode::kFailedPrecondition) return Rebootstrap(f, error);
    // Not primary (yet), another epoch, still opening: the map will change or the shard open.
    pull_failures_.fetch_add(1, std::memory_order_relaxed);
    if (f.failures == 0) {
      log_->warn("pulling shard {} from {} refused: {}", f.target.shard_id, f.target.primary_node,
                 error.ToString());
    }
    return Backoff(f).then([this, &f] { return PullLoop(f); });
  }

  // Applies the pulled batches in order. corruption: the copy diverged (re-bootstrap); anything
  // else: pull again.
  Status ApplyBatches(Followed& f, uint64_t from, capnp::List<s::LogBatch>::Reader batches) {
    // Checked whole before anything applies: the first batch holds `from`, each next one
    // starts where the one before ended.
    uint64_t expected = from;
    for (unsigned i = 0; i < batches.size(); ++i) {
      const uint64_t first = batches[i].getFirstLsn(), count = batches[i].getCount();
      const bool fits =
          count > 0 && (i == 0 ? first <= from && from < first + count : first == expected);
      if (!fits) {
        return Status::FailedPrecondition(
            "the primary sent batch " + std::to_string(i) + " at lsn " + std::to_string(first) +
            " (+" + std::to_string(count) + "), expected lsn " + std::to_string(expected));
      }
      expected = first + count;
    }
    // One write for all of them, stopping at a checksum's pause LSN (batches end there).
    const uint64_t pause = f.log->pause_at();
    std::vector<LogBatch> group;
    group.reserve(batches.size());
    size_t bytes = 0;
    for (auto batch : batches) {
      if (pause != 0 && batch.getFirstLsn() > pause) break;  // Held for a checksum.
      group.push_back(LogBatch{batch.getFirstLsn(), batch.getCount(),
                               std::string(wire::View(batch.getData()))});
      bytes += group.back().data.size();
    }
    if (group.empty()) return Status::Ok();
    Status applied = f.store->ApplyLogBatches(group);
    if (applied.code() == ErrorCode::kFailedPrecondition) {
      // The reply was in order (checked above), yet the store refused it: a group straddling
      // the copy's LSN that it could not split. Rebuilt rather than retried forever.
      return Status::Corruption("the primary's log does not continue this copy: " +
                                applied.message());
    }
    SB_RETURN_IF_ERROR(applied);
    batches_.fetch_add(group.size(), std::memory_order_relaxed);
    bytes_.fetch_add(bytes, std::memory_order_relaxed);
    return Status::Ok();
  }

  // ---- Bootstrap --------------------------------------------------------------------------------

  struct Copy {
    FollowTarget target;
    std::string part_dir;  // Files land here; renamed to `dir` once all are verified.
    std::string dir;
    ShardLog* log = nullptr;
    s::Node::Client node = nullptr;
    const Connection* connection = nullptr;  // What `node` came from (DropConnection).
    uint64_t checkpoint_id = 0;
    uint64_t lsn = 0;
    std::vector<CheckpointFile> files;
    int64_t started_ms = 0;
    uint64_t bytes_requested = 0;  // For the rate limit.
  };

  kj::Promise<Result<uint64_t>> BootstrapAsync(FollowTarget target, std::string dir,
                                               ShardLog& log) {
    auto copy = kj::heap<Copy>();
    copy->target = target;
    copy->dir = dir;
    copy->part_dir = dir + ".part";
    copy->log = &log;
    copy->started_ms = SteadyMs();
    std::error_code ec;
    if (fs::exists(dir, ec)) return Result<uint64_t>(Status::AlreadyExists(dir + " exists"));
    fs::remove_all(copy->part_dir, ec);
    fs::create_directories(copy->part_dir, ec);
    if (ec) {
      return Result<uint64_t>(
          Status::Internal("cannot create " + copy->part_dir + ": " + ec.message()));
    }
    copy->node = ConnectionTo(target.primary_address, target.primary_node, &copy->connection);
    auto begin = copy->node.beginCheckpointRequest();
    begin.setShardId(target.shard_id);
    begin.setEpoch(target.epoch);
    begin.setReplicaNodeId(wire::AsText(options_.node_id));
    Copy& c = *copy;
    return WithTimeout(begin.send())
        .then(
            [this, &c](capnp::Response<s::Replication::BeginCheckpointResults> reply)
                -> kj::Promise<Status> {
              Status error = ReplyError(reply);
              if (!error.ok()) return error;
              c.checkpoint_id = reply.getCheckpointId();
              c.lsn = reply.getLsn();
              uint64_t total = 0;
              for (auto file : reply.getFiles()) {
                std::string name(wire::View(file.getName()));
                // A plain name only: a path from the network never escapes the copy's directory.
                if (name.empty() || name == "." || name == ".." ||
                    name.find('/') != std::string::npos) {
                  return Status::InvalidArgument("files", "checkpoint file name '" + name + "'");
                }
                c.files.push_back({name, file.getSize(), file.getXxh64()});
                total += file.getSize();
              }
              c.log->bootstrap_total = total;
              c.log->bootstrap_done = 0;
              log_->info(
                  "bootstrapping shard {} from {}: checkpoint {} at lsn {}, {} files, {} bytes",
                  c.target.shard_id, c.target.primary_node, c.checkpoint_id, c.lsn, c.files.size(),
                  total);
              return CopyFiles(c, 0);
            },
            [this, &c](kj::Exception&& e) -> kj::Promise<Status> {
              DropConnection(c.target.primary_address, c.connection);
              return Status::Unavailable(std::string("beginCheckpoint: ") +
                                         e.getDescription().cStr());
            })
        .then([this, &c](Status copied) -> kj::Promise<Result<uint64_t>> {
          // Released whatever happened (an abandoned checkpoint also expires on the primary).
          kj::Promise<void> ended = kj::READY_NOW;
          if (c.checkpoint_id != 0) {
            auto end = c.node.endCheckpointRequest();
            end.setCheckpointId(c.checkpoint_id);
            ended = WithTimeout(end.send()).ignoreResult().catch_([](kj::Exception&&) {});
          }
          return ended.then([this, &c, copied]() -> Result<uint64_t> {
            if (!copied.ok()) {
              // The caller (the shard host) logs the failure and retries; corruption is worth
              // a line of its own.
              log_->log(copied.code() == ErrorCode::kCorruption ? spdlog::level::warn
                                                                : spdlog::level::debug,
                        "bootstrap of shard {} from {} failed: {}", c.target.shard_id,
                        c.target.primary_node, copied.ToString());
              return copied;
            }
            std::error_code ec;
            fs::rename(c.part_dir, c.dir, ec);
            if (ec) return Status::Internal("cannot rename " + c.part_dir + ": " + ec.message());
            bootstraps_done_.fetch_add(1, std::memory_order_relaxed);
            const int64_t ms = std::max<int64_t>(1, SteadyMs() - c.started_ms);
            const uint64_t total = c.log->bootstrap_total.load();
            log_->info("bootstrapped shard {} at lsn {}: {} bytes in {} ms ({:.1f} MB/s)",
                       c.target.shard_id, c.lsn, total, ms, total / 1e3 / ms);
            return c.lsn;
          });
        })
        .attach(kj::mv(copy));
  }

  kj::Promise<Status> CopyFiles(Copy& c, size_t index) {
    if (index == c.files.size()) return Status::Ok();
    return CopyFile(c, index, 1).then([this, &c, index](Status copied) -> kj::Promise<Status> {
      if (!copied.ok()) return copied;
      return CopyFiles(c, index + 1);
    });
  }

  // One file: chunks requested `bootstrap_inflight` at a time, written and digested in order,
  // then checked against the listed size and XXH64. A mismatch fetches the file again.
  struct FileCopy {
    std::ofstream out;
    XXH64_state_t* digest = XXH64_createState();
    uint64_t next_offset = 0;  // Next chunk to request.
    uint64_t written = 0;
    std::deque<kj::Promise<Result<std::string>>> inflight;
    ~FileCopy() { XXH64_freeState(digest); }
  };

  kj::Promise<Status> CopyFile(Copy& c, size_t index, int attempt) {
    const CheckpointFile& file = c.files[index];
    auto fc = kj::heap<FileCopy>();
    const fs::path path = fs::path(c.part_dir) / file.name;
    fc->out.open(path, std::ios::binary | std::ios::trunc);
    if (!fc->out) return Status::Internal("cannot write " + path.string());
    XXH64_reset(fc->digest, 0);
    FileCopy& f = *fc;
    return Pump(c, index, f)
        .then([this, &c, index, attempt, &f, path](Status pumped) -> kj::Promise<Status> {
          const CheckpointFile& file = c.files[index];
          f.out.close();
          if (pumped.ok() && f.out.fail()) pumped = Status::Internal("writing " + path.string());
          if (!pumped.ok()) return pumped;
          const uint64_t digest = XXH64_digest(f.digest);
          if (f.written == file.size && digest == file.xxh64) return Status::Ok();
          file_mismatches_.fetch_add(1, std::memory_order_relaxed);
          Status bad = Status::Corruption(
              "checkpoint file " + file.name + " of shard " + std::to_string(c.target.shard_id) +
              ": got " + std::to_string(f.written) + " bytes with xxh64 " + std::to_string(digest) +
              ", expected " + std::to_string(file.size) + " bytes with " +
              std::to_string(file.xxh64));
          log_->warn("{} (attempt {} of {})", bad.ToString(), attempt, kFileAttempts);
          c.log->bootstrap_done -= std::min<uint64_t>(c.log->bootstrap_done, f.written);
          if (attempt >= kFileAttempts) return bad;
          return CopyFile(c, index, attempt + 1);
        })
        .attach(kj::mv(fc));
  }

  // Keeps up to bootstrap_inflight chunk reads in flight, consuming them in order.
  kj::Promise<Status> Pump(Copy& c, size_t index, FileCopy& f) {
    const CheckpointFile& file = c.files[index];
    while (f.inflight.size() < static_cast<size_t>(std::max(1, options_.bootstrap_inflight)) &&
           f.next_offset < file.size) {
      // The rate limit: a chunk is requested no earlier than its share of the budget allows.
      if (options_.bootstrap_mb_per_s > 0) {
        const int64_t due =
            c.started_ms +
            static_cast<int64_t>(c.bytes_requested / (options_.bootstrap_mb_per_s * 1e3));
        const int64_t now = SteadyMs();
        if (due > now && f.inflight.empty()) {
          return timer().afterDelay((due - now) * kj::MILLISECONDS).then([this, &c, index, &f] {
            return Pump(c, index, f);
          });
        }
        if (due > now) break;
      }
      const uint32_t n = static_cast<uint32_t>(
          std::min<uint64_t>(options_.bootstrap_chunk_bytes, file.size - f.next_offset));
      auto read = c.node.readCheckpointRequest();
      read.setCheckpointId(c.checkpoint_id);
      read.setFileIndex(static_cast<uint32_t>(index));
      read.setOffset(f.next_offset);
      read.setMaxBytes(n);
      const uint64_t offset = f.next_offset;
      f.inflight.push_back(
          WithTimeout(read.send())
              .then([this, &c, &file,
                     offset](capnp::Response<s::Replication::ReadCheckpointResults> reply)
                        -> Result<std::string> {
                Status error = ReplyError(reply);
                if (!error.ok()) return error;
                std::string data(wire::View(reply.getData()));
                if (options_.tamper_chunk) options_.tamper_chunk(file.name, offset, &data);
                return data;  // A short chunk shows in the file's size check.
              }));
      f.next_offset += n;
      c.bytes_requested += n;
    }
    if (f.inflight.empty()) return Status::Ok();  // Every chunk written.
    auto next = kj::mv(f.inflight.front());
    f.inflight.pop_front();
    return next.then([this, &c, index, &f](Result<std::string> chunk) -> kj::Promise<Status> {
      if (!chunk.ok()) return chunk.status();
      f.out.write(chunk->data(), static_cast<std::streamsize>(chunk->size()));
      XXH64_update(f.digest, chunk->data(), chunk->size());
      f.written += chunk->size();
      c.log->bootstrap_done += chunk->size();
      bootstrap_bytes_.fetch_add(chunk->size(), std::memory_order_relaxed);
      return Pump(c, index, f);
    });
  }

  const FollowerOptions options_;
  const Logger log_;
  const std::function<void(uint64_t, const Status&)> on_rebootstrap_;
  std::thread thread_;
  // A counted reference to the loop's executor (see the constructor); `executor_` points at it.
  struct ExecutorRef {
    kj::Own<const kj::Executor> own;
  };
  std::unique_ptr<ExecutorRef> executor_ref_;
  const kj::Executor* executor_ = nullptr;
  std::atomic<bool> stopped_{false};
  // Held shared by every call from another thread onto the loop (OnLoop, Bootstrap), and
  // exclusively by Stop while it tells the loop to exit: no call is in flight when it does.
  std::shared_mutex calls_mu_;

  // Loop thread only; made and destroyed on it (KJ objects never cross threads).
  struct LoopState {
    kj::Own<kj::PromiseFulfiller<void>> stop;
    std::map<std::string, kj::Own<Connection>> connections;  // By address.
    std::map<uint64_t, kj::Own<Followed>> followed;          // By shard id.
    kj::Canceler bootstraps;
    bool stopping = false;  // Set by Stop: bootstraps are refused from then on.
  };
  kj::AsyncIoContext* io_ = nullptr;
  std::unique_ptr<LoopState> loop_;

  std::atomic<uint64_t> rejoins_rebuilt_{0}, discarded_lsns_{0};
  std::atomic<uint64_t> pulls_{0}, pull_failures_{0}, batches_{0}, bytes_{0}, rebootstraps_{0},
      bootstraps_done_{0}, bootstrap_failures_{0}, bootstrap_bytes_{0}, file_mismatches_{0};
};

}  // namespace

std::unique_ptr<ReplicaFollower> ReplicaFollower::Start(
    FollowerOptions options, std::function<void(uint64_t, const Status&)> on_rebootstrap) {
  return std::make_unique<FollowerImpl>(std::move(options), std::move(on_rebootstrap));
}

}  // namespace scrollback::replication
