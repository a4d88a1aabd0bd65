#include "scrollback/schema/rpc_server.h"

#include <arpa/inet.h>
#include <capnp/rpc-twoparty.h>
#include <capnp/rpc.h>
#include <kj/async.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <list>
#include <mutex>
#include <thread>
#include <vector>

#include "scrollback/schema/buffered_stream.h"

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

// One event loop thread: accepts from the shared listening socket and serves its connections.
class EventLoopThread {
 public:
  EventLoopThread(const RpcServerOptions& options, const RpcServer::BootstrapFactory& factory,
                  int listen_fd)
      : options_(options), factory_(factory), listen_fd_(dup(listen_fd)) {
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
    } catch (const kj::Exception&) {
      // Only setup can fail here (e.g. an unusable socket); Start reports no loop as ready.
    }
    {
      std::lock_guard lock(mu_);
      done_ = true;
      executor_ = nullptr;
    }
    ready_cv_.notify_all();
  }

  void Serve() {
    auto io = kj::setupAsyncIo();
    auto listener = io.lowLevelProvider->wrapListenSocketFd(
        listen_fd_, kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP);
    auto stop = kj::newPromiseAndFulfiller<std::chrono::milliseconds>();
    capnp::Capability::Client bootstrap = factory_(*io.provider);
    // Declared before `tasks` so that the tasks watching connections die first.
    std::list<Connection> connections;
    kj::TaskSet tasks(error_handler_);
    stop_fulfiller_ = &stop.fulfiller;
    listening_ = AcceptLoop(*listener, bootstrap, tasks, connections).eagerlyEvaluate(nullptr);
    {
      std::lock_guard lock(mu_);
      executor_ = &kj::getCurrentThreadExecutor();
    }
    ready_cv_.notify_all();

    auto grace = stop.promise.wait(io.waitScope);
    auto deadline = std::chrono::steady_clock::now() + grace;
    while (std::chrono::steady_clock::now() < deadline) {
      bool busy = false;
      for (auto& c : connections) busy |= c.network->getCurrentQueueCount() > 0;
      if (!busy) break;
      io.provider->getTimer().afterDelay(5 * kj::MILLISECONDS).wait(io.waitScope);
    }
    listening_ = nullptr;
  }

  kj::Promise<void> AcceptLoop(kj::ConnectionReceiver& listener,
                               capnp::Capability::Client bootstrap, kj::TaskSet& tasks,
                               std::list<Connection>& connections) {
    return listener.accept().then([this, &listener, bootstrap, &tasks,
                                   &connections](kj::Own<kj::AsyncIoStream>&& stream) mutable {
      capnp::ReaderOptions reader;
      reader.traversalLimitInWords = options_.max_message_bytes / sizeof(capnp::word);
      reader.nestingLimit = 16;
      auto& c = connections.emplace_back();
      c.stream = options_.buffer_streams ? NewBufferedStream(kj::mv(stream)) : kj::mv(stream);
      c.network = kj::heap<capnp::TwoPartyVatNetwork>(*c.stream, capnp::rpc::twoparty::Side::SERVER,
                                                      reader);
      c.rpc = kj::heap(capnp::makeRpcServer(*c.network, bootstrap));
      c.rpc->setFlowLimit(options_.flow_limit_bytes);
      auto it = std::prev(connections.end());
      // A disconnect (or a malformed message, which aborts this connection only) drops it, on
      // the next turn of the loop rather than inside the network's own callback.
      tasks.add(c.network->onDisconnect().then([&connections, it] {
        return kj::evalLater([&connections, it] { connections.erase(it); });
      }));
      return AcceptLoop(listener, kj::mv(bootstrap), tasks, connections);
    });
  }

  struct ErrorHandler final : kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&&) override {}  // A connection failed: it is dropped.
  };

  const RpcServerOptions options_;
  const RpcServer::BootstrapFactory& factory_;
  int listen_fd_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable ready_cv_;
  const kj::Executor* executor_ = nullptr;  // GUARDED_BY(mu_)
  bool done_ = false;                       // GUARDED_BY(mu_)
  // Owned by the loop thread:
  kj::Own<kj::PromiseFulfiller<std::chrono::milliseconds>>* stop_fulfiller_ = nullptr;
  kj::Promise<void> listening_ = nullptr;
  ErrorHandler error_handler_;
};

class RpcServerImpl final : public RpcServer {
 public:
  RpcServerImpl(const RpcServerOptions& options, BootstrapFactory factory, int listen_fd)
      : factory_(std::move(factory)), listen_fd_(listen_fd), address_(LocalAddress(listen_fd)) {
    for (int i = 0; i < std::max(1, options.event_loops); ++i) {
      loops_.push_back(std::make_unique<EventLoopThread>(options, factory_, listen_fd_));
    }
  }
  ~RpcServerImpl() override { Stop(std::chrono::milliseconds(0)); }

  std::string address() const override { return address_; }

  void Stop(std::chrono::milliseconds grace) override {
    std::lock_guard lock(mu_);
    if (stopped_) return;
    stopped_ = true;
    for (auto& loop : loops_) loop->Stop(grace);
    loops_.clear();
    close(listen_fd_);
  }

 private:
  const BootstrapFactory factory_;
  int listen_fd_;
  std::string address_;
  std::mutex mu_;
  bool stopped_ = false;  // GUARDED_BY(mu_)
  std::vector<std::unique_ptr<EventLoopThread>> loops_;
};

}  // namespace

Result<std::unique_ptr<RpcServer>> RpcServer::Start(const RpcServerOptions& options,
                                                    BootstrapFactory make_bootstrap) {
  auto fd = Listen(options.listen_address);
  if (!fd.ok()) return fd.status();
  return std::unique_ptr<RpcServer>(new RpcServerImpl(options, std::move(make_bootstrap), *fd));
}

}  // namespace scrollback
