#include "scrollback/rpc/rpc_server.h"

#include <arpa/inet.h>
#include <capnp/rpc-twoparty.h>
#include <capnp/rpc.h>
#include <fcntl.h>
#include <kj/async.h>
#include <kj/common.h>
#include <netinet/in.h>
#include <pthread.h>
#include <spdlog/logger.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <list>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "frame_guard.h"
#include "scrollback/rpc/buffered_stream.h"

namespace scrollback {
namespace {

Result<int> Listen(const std::string& address) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos) {
    return Status::InvalidArgument("listen_address", "expected host:port, got " + address);
  }
  std::string host = address.substr(0, colon);
  char* end = nullptr;
  long port = std::strtol(address.c_str() + colon + 1, &end, 10);
  if (*end != '\0' || port < 0 || port > 65535) {
    return Status::InvalidArgument("listen_address", "bad port in " + address);
  }
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

// Owns a file descriptor until released; closes it otherwise.
class OwnedFd {
 public:
  explicit OwnedFd(int fd) : fd_(fd) {}
  OwnedFd(OwnedFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  OwnedFd& operator=(OwnedFd&&) = delete;
  ~OwnedFd() {
    if (fd_ >= 0) close(fd_);
  }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

// What the loops count for /metrics. Shared by every loop of one server.
struct RpcCounters {
  explicit RpcCounters(const RpcServerOptions& options)
      : budget(std::max(options.receive_budget_bytes, options.max_message_bytes)) {}
  std::atomic<uint64_t> accepted{0};
  std::atomic<uint64_t> accept_errors{0};
  std::atomic<uint64_t> closed{0};
  std::atomic<uint64_t> connection_errors{0};
  std::atomic<uint64_t> refused{0};  // Accepted past max_connections and closed at once.
  std::atomic<int64_t> open{0};      // Connections being served.
  ReceiveBudget budget;              // Bytes of frames being received, all connections.
  FrameGuardCounters frames;
};

// One event-loop thread serving its share of the connections. The first loop also accepts:
// it hands each new connection to the loops in turn (itself included), so connections spread
// evenly over the loops whatever the timing of their arrival.
class EventLoopThread {
 public:
  // Picks the loop for the next accepted connection.
  using NextLoop = std::function<EventLoopThread*()>;

  // `listen_fd` < 0: this loop does not accept. Otherwise it starts accepting on
  // StartAccepting(), once every loop `next_loop` may pick exists.
  EventLoopThread(const RpcServerOptions& options, const RpcServer::BootstrapFactory& factory,
                  int listen_fd, NextLoop next_loop, RpcCounters& counters)
      : options_(options),
        log_(OrNull(options.logger)),
        counters_(counters),
        factory_(factory),
        listen_fd_(listen_fd >= 0 ? fcntl(listen_fd, F_DUPFD_CLOEXEC, 0) : -1),
        next_loop_(std::move(next_loop)) {
    thread_ = std::thread([this] { Run(); });
    std::unique_lock lock(mu_);
    ready_cv_.wait(lock, [this] { return executor_ != nullptr || done_; });
  }
  ~EventLoopThread() { Stop(std::chrono::milliseconds(0)); }

  void Stop(std::chrono::milliseconds grace) {
    const kj::Executor* executor;
    {
      std::lock_guard lock(mu_);
      executor = executor_;
      executor_ = nullptr;
    }
    if (executor != nullptr) {
      executor->executeSync([this, grace] {
        listening_ = nullptr;  // Stop accepting.
        (*stop_fulfiller_)->fulfill(std::chrono::milliseconds(grace));
      });
    }
    if (thread_.joinable()) thread_.join();
    if (listen_fd_ >= 0 && !listener_owns_fd_) close(listen_fd_);
    listen_fd_ = -1;  // Stop() may run twice (explicitly, then from the destructor).
  }

  void StartAccepting() {
    const kj::Executor* executor;
    {
      std::lock_guard lock(mu_);
      executor = executor_;
    }
    if (executor == nullptr || listen_fd_ < 0) return;
    executor->executeSync([this] {
      listener_ = loop_->io.lowLevelProvider->wrapListenSocketFd(
          listen_fd_, kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP);
      listener_owns_fd_ = true;
      listening_ = AcceptLoop(*listener_).eagerlyEvaluate(nullptr);
    });
  }

  // Called on another loop's thread: this loop takes over the connected socket `fd`. The
  // returned promise belongs to the calling loop.
  kj::Promise<void> Adopt(OwnedFd fd) {
    const kj::Executor* executor;
    {
      std::lock_guard lock(mu_);
      executor = executor_;
    }
    if (executor == nullptr) return kj::READY_NOW;  // Stopping: `fd` closes.
    return executor->executeAsync([this, fd = std::move(fd)]() mutable {
      constexpr uint flags = kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP |
                             kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC |
                             kj::LowLevelAsyncIoProvider::ALREADY_NONBLOCK;
      ServeConnection(loop_->io.lowLevelProvider->wrapSocketFd(fd.release(), flags));
    });
  }

 private:
  struct Connection {
    kj::Own<kj::AsyncIoStream> stream;
    BufferedStream* buffered = nullptr;  // `stream`, when it is a BufferedStream.
    kj::Own<capnp::TwoPartyVatNetwork> network;
    kj::Own<capnp::RpcSystem<capnp::rpc::twoparty::VatId>> rpc;
  };

  // What the loop thread owns while it runs.
  struct LoopState {
    kj::AsyncIoContext io = kj::setupAsyncIo();
    capnp::Capability::Client bootstrap = nullptr;
    // Declared before `tasks` so that the tasks watching connections die first.
    std::list<Connection> connections;
    kj::TaskSet tasks;
    explicit LoopState(kj::TaskSet::ErrorHandler& errors) : tasks(errors) {}
  };

  void Run() {
    pthread_setname_np(pthread_self(), "sb-rpc-loop");  // For top -H, perf, gdb.
    try {
      Serve();
    } catch (const kj::Exception& e) {
      // Only setup can fail here (e.g. an unusable socket); Start reports no loop as ready.
      log_->error("RPC event loop failed to start: {}", e.getDescription().cStr());
    }
    {
      std::lock_guard lock(mu_);
      done_ = true;
      executor_ = nullptr;
    }
    ready_cv_.notify_all();
  }

  void Serve() {
    LoopState loop(error_handler_);
    loop_ = &loop;
    KJ_DEFER(loop_ = nullptr);
    auto stop = kj::newPromiseAndFulfiller<std::chrono::milliseconds>();
    loop.bootstrap = factory_(*loop.io.provider);
    stop_fulfiller_ = &stop.fulfiller;
    KJ_DEFER(listener_ = nullptr);
    KJ_DEFER(listening_ = nullptr);  // Runs first: the accept loop uses the listener.
    {
      std::lock_guard lock(mu_);
      executor_ = &kj::getCurrentThreadExecutor();
    }
    ready_cv_.notify_all();

    auto grace = stop.promise.wait(loop.io.waitScope);
    auto deadline = std::chrono::steady_clock::now() + grace;
    while (std::chrono::steady_clock::now() < deadline) {
      bool busy = false;
      for (auto& c : loop.connections) {
        // Calls still running, or replies not yet handed to the kernel.
        busy |= c.network->getCurrentQueueCount() > 0 || (c.buffered && c.buffered->hasUnsent());
      }
      if (!busy) break;
      loop.io.provider->getTimer().afterDelay(5 * kj::MILLISECONDS).wait(loop.io.waitScope);
    }
    listening_ = nullptr;
  }

  kj::Promise<void> AcceptLoop(kj::ConnectionReceiver& listener) {
    return listener.accept().then(
        [this, &listener](kj::Own<kj::AsyncIoStream>&& stream) {
          counters_.accepted.fetch_add(1, std::memory_order_relaxed);
          if (counters_.open.load(std::memory_order_relaxed) >=
              static_cast<int64_t>(options_.max_connections)) {
            // Over the cap: closed at once (the peer sees the connection end), logged once per
            // 1,000 so that a flood cannot flood the log too.
            if (counters_.refused.fetch_add(1, std::memory_order_relaxed) % 1000 == 0) {
              log_->warn("refusing connections: {} open, max_connections {}", counters_.open.load(),
                         options_.max_connections);
            }
            return AcceptLoop(listener);  // `stream` closes here.
          }
          counters_.open.fetch_add(1, std::memory_order_relaxed);
          EventLoopThread* target = next_loop_();
          int duplicate = -1;
          if (target != this) {
            KJ_IF_MAYBE (fd, stream->getFd()) {
              duplicate = fcntl(*fd, F_DUPFD_CLOEXEC, 0);
            }
          }
          if (duplicate < 0) {
            ServeConnection(kj::mv(stream));  // Ours by turn, or the descriptor ran out.
          } else {
            stream = nullptr;  // Closes this loop's descriptor; the duplicate travels.
            loop_->tasks.add(target->Adopt(OwnedFd(duplicate)));
          }
          return AcceptLoop(listener);
        },
        [this, &listener](kj::Exception&& e) {
          // accept() failed (e.g. out of descriptors): keep the server accepting, after a
          // pause that lets connections close.
          counters_.accept_errors.fetch_add(1, std::memory_order_relaxed);
          log_->error("accept failed (retrying in 100 ms): {}", e.getDescription().cStr());
          return loop_->io.provider->getTimer()
              .afterDelay(100 * kj::MILLISECONDS)
              .then([this, &listener] { return AcceptLoop(listener); });
        });
  }

  void ServeConnection(kj::Own<kj::AsyncIoStream> stream) {
    capnp::ReaderOptions reader;
    reader.traversalLimitInWords = options_.max_message_bytes / sizeof(capnp::word);
    reader.nestingLimit = 16;
    auto& connections = loop_->connections;
    auto& c = connections.emplace_back();
    if (options_.buffer_streams) {
      auto buffered = NewBufferedStream(kj::mv(stream));
      c.buffered = buffered.get();
      stream = kj::mv(buffered);
    }
    FrameGuardOptions guard;
    guard.max_message_bytes = options_.max_message_bytes;
    guard.partial_frame_timeout = options_.partial_frame_timeout;
    guard.idle_timeout = options_.idle_timeout;
    c.stream = NewFrameGuard(kj::mv(stream), counters_.budget, counters_.frames,
                             loop_->io.provider->getTimer(), guard);
    c.network =
        kj::heap<capnp::TwoPartyVatNetwork>(*c.stream, capnp::rpc::twoparty::Side::SERVER, reader);
    c.rpc = kj::heap(capnp::makeRpcServer(*c.network, loop_->bootstrap));
    c.rpc->setFlowLimit(options_.flow_limit_bytes);
    auto it = std::prev(connections.end());
    // A disconnect (or a malformed message, which aborts this connection only) drops it, once
    // its last bytes (an Abort message, the shutdown) have reached the kernel or a second has
    // passed, and never inside the network's own callback.
    auto& timer = loop_->io.provider->getTimer();
    loop_->tasks.add(c.network->onDisconnect().then([this, &connections, it, &timer] {
      counters_.closed.fetch_add(1, std::memory_order_relaxed);
      kj::Promise<void> flushed = it->buffered ? it->buffered->whenFlushed() : kj::READY_NOW;
      return timer.timeoutAfter(1 * kj::SECONDS, kj::mv(flushed))
          .then([] {}, [](kj::Exception&&) {})
          .then([this, &connections, it] {
            return kj::evalLater([this, &connections, it] {
              connections.erase(it);
              counters_.open.fetch_sub(1, std::memory_order_relaxed);
            });
          });
    }));
  }

  // A connection's task failed (e.g. handing it to its loop): it is dropped; the others go on.
  struct ErrorHandler final : kj::TaskSet::ErrorHandler {
    ErrorHandler(const Logger& log, RpcCounters& counters) : log(log), counters(counters) {}
    void taskFailed(kj::Exception&& e) override {
      counters.connection_errors.fetch_add(1, std::memory_order_relaxed);
      log->warn("connection dropped: {}", e.getDescription().cStr());
    }
    const Logger& log;
    RpcCounters& counters;
  };

  const RpcServerOptions options_;
  const Logger log_;
  RpcCounters& counters_;
  const RpcServer::BootstrapFactory& factory_;
  int listen_fd_;
  bool listener_owns_fd_ = false;
  const NextLoop next_loop_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable ready_cv_;
  const kj::Executor* executor_ = nullptr;  // GUARDED_BY(mu_)
  bool done_ = false;                       // GUARDED_BY(mu_)
  // Owned by the loop thread:
  LoopState* loop_ = nullptr;
  kj::Own<kj::PromiseFulfiller<std::chrono::milliseconds>>* stop_fulfiller_ = nullptr;
  kj::Own<kj::ConnectionReceiver> listener_;
  kj::Promise<void> listening_ = nullptr;
  ErrorHandler error_handler_{log_, counters_};
};

class RpcServerImpl final : public RpcServer {
 public:
  RpcServerImpl(const RpcServerOptions& options, BootstrapFactory factory, int listen_fd)
      : factory_(std::move(factory)),
        listen_fd_(listen_fd),
        address_(LocalAddress(listen_fd)),
        counters_(options) {
    const int n = std::max(1, options.event_loops);
    loops_.resize(n);
    // The acceptor (loop 0) starts accepting only once every loop exists.
    for (int i = n - 1; i >= 0; --i) {
      loops_[i] = std::make_unique<EventLoopThread>(
          options, factory_, i == 0 ? listen_fd_ : -1,
          [this] {
            // Only the acceptor's thread calls this.
            return loops_[next_loop_++ % loops_.size()].get();
          },
          counters_);
    }
    loops_[0]->StartAccepting();
  }
  ~RpcServerImpl() override { Stop(std::chrono::milliseconds(0)); }

  std::string address() const override { return address_; }

  void RenderMetrics(std::string* out) const override {
    auto counter = [out](const char* name, const char* help, uint64_t value) {
      *out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n" +
              name + " " + std::to_string(value) + "\n";
    };
    counter("scrollback_rpc_connections_accepted_total", "Connections accepted.",
            counters_.accepted.load());
    counter("scrollback_rpc_accept_errors_total", "accept() failures, retried (logged).",
            counters_.accept_errors.load());
    counter("scrollback_rpc_connections_refused_total",
            "Connections closed at once because max_connections were open (logged).",
            counters_.refused.load());
    counter("scrollback_rpc_receive_budget_waits_total",
            "Frames that waited for the node-wide receive budget (backpressure).",
            counters_.frames.budget_waits.load());
    counter("scrollback_rpc_partial_frame_timeouts_total",
            "Connections dropped because a started frame stalled past partial_frame_timeout.",
            counters_.frames.partial_timeouts.load());
    counter("scrollback_rpc_idle_timeouts_total",
            "Connections dropped after idle_timeout without a frame.",
            counters_.frames.idle_timeouts.load());
    *out +=
        "# HELP scrollback_rpc_connections_open Connections being served.\n"
        "# TYPE scrollback_rpc_connections_open gauge\nscrollback_rpc_connections_open " +
        std::to_string(counters_.open.load()) + "\n";
    *out +=
        "# HELP scrollback_rpc_receive_budget_bytes Bytes of incoming frames held now, of "
        "the budget.\n# TYPE scrollback_rpc_receive_budget_bytes gauge\n"
        "scrollback_rpc_receive_budget_bytes{kind=\"used\"} " +
        std::to_string(counters_.budget.used()) +
        "\nscrollback_rpc_receive_budget_bytes{kind=\"limit\"} " +
        std::to_string(counters_.budget.limit()) + "\n";
    counter("scrollback_rpc_connections_closed_total",
            "Connections that ended: closed by the peer, reset, or aborted by the server on a "
            "malformed or oversized message (Cap'n Proto does not tell these apart).",
            counters_.closed.load());
    counter("scrollback_rpc_connection_errors_total",
            "Connection tasks that failed (e.g. handing a connection to its loop; logged).",
            counters_.connection_errors.load());
  }

  void Stop(std::chrono::milliseconds grace) override {
    std::lock_guard lock(mu_);
    if (stopped_) return;
    stopped_ = true;
    // The acceptor first: no connection is handed to a loop that has stopped.
    for (auto& loop : loops_) loop->Stop(grace);
    loops_.clear();
    close(listen_fd_);
  }

 private:
  const BootstrapFactory factory_;
  int listen_fd_;
  std::string address_;
  RpcCounters counters_;  // Before loops_: the loops use it until they stop.
  std::mutex mu_;
  bool stopped_ = false;  // GUARDED_BY(mu_)
  std::vector<std::unique_ptr<EventLoopThread>> loops_;
  size_t next_loop_ = 0;  // Used by the acceptor's thread only.
};

}  // namespace

Result<std::unique_ptr<RpcServer>> RpcServer::Start(const RpcServerOptions& options,
                                                    BootstrapFactory make_bootstrap) {
  auto fd = Listen(options.listen_address);
  if (!fd.ok()) return fd.status();
  return std::unique_ptr<RpcServer>(new RpcServerImpl(options, std::move(make_bootstrap), *fd));
}

}  // namespace scrollback
