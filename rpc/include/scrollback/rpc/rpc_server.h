// RpcServer: the Cap'n Proto listener shared by every Scrollback process that serves the
// contract (storage nodes, routers).
//
// `event_loops` threads each run a KJ event loop; the first accepts and hands connections to
// the loops in turn, so connections spread over the cores. Each connection reads messages under a
// traversal limit (max_message_bytes) and a nesting limit, and has a flow limit: past
// `flow_limit_bytes` of calls in flight the server stops reading from it (backpressure, bounded
// memory). A malformed message aborts its own connection only.
#pragma once

#include <capnp/capability.h>
#include <kj/async-io.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "scrollback/schema/log.h"
#include "scrollback/schema/status.h"

namespace scrollback {

struct RpcServerOptions {
  // Default: "127.0.0.1:0" (a free port). IPv4 host:port.
  std::string listen_address = "127.0.0.1:0";
  // Default: 2. Event-loop threads.
  int event_loops = 2;
  // Default: 64 MiB. Largest message a connection may send.
  uint64_t max_message_bytes = 64ull << 20;
  // Default: 16 MiB. Bytes of calls in flight per connection before reading pauses.
  size_t flow_limit_bytes = 16ull << 20;
  // Default: true. Connections use BufferedStream (one read and one write per loop turn rather
  // than per message). false: Cap'n Proto's stock transport, kept as a benchmark baseline.
  bool buffer_streams = true;
  // Default: 256 MiB (at least max_message_bytes). Bytes of incoming frames the server holds
  // for all its connections together: Cap'n Proto allocates a whole message once it has read
  // the frame's segment table, so a frame's bytes are taken from this budget before that, and
  // a connection whose frame does not fit waits (backpressure) until others complete.
  size_t receive_budget_bytes = 256ull << 20;
  // Default: 30 s. A connection whose started frame receives no byte for this long is dropped
  // (its budget returns): a client that sends a table and stalls cannot hold memory forever.
  std::chrono::milliseconds partial_frame_timeout = std::chrono::seconds(30);
  // Default: 0 (none). When set, a connection on which no frame starts for this long is dropped.
  // Chat services keep connections open through quiet periods; set it only behind a load
  // balancer that reconnects.
  std::chrono::milliseconds idle_timeout{0};
  // Default: 10,000. Connections served at once; beyond, new ones are closed as soon as they
  // are accepted (counted and logged). Bounds per-connection memory (buffers, flow limit).
  size_t max_connections = 10'000;
  // Default: none (quiet). Accept errors and failed connections are logged here.
  Logger logger;
};

class RpcServer {
 public:
  // Called once on each event-loop thread when it starts; the capability it returns is the
  // bootstrap interface of every connection that loop accepts.
  using BootstrapFactory = std::function<capnp::Capability::Client(kj::AsyncIoProvider& io)>;

  static Result<std::unique_ptr<RpcServer>> Start(const RpcServerOptions& options,
                                                  BootstrapFactory make_bootstrap);
  virtual ~RpcServer() = default;

  // host:port actually bound.
  virtual std::string address() const = 0;
  // Stops accepting, gives connections up to `grace` to finish writing replies (calls run to
  // completion inside the loops), then closes them and ends the loops. Idempotent.
  virtual void Stop(std::chrono::milliseconds grace) = 0;

  // Prometheus text: connections accepted and closed, accept errors and failed connection
  // tasks (each also logged).
  virtual void RenderMetrics(std::string* out) const = 0;
};

}  // namespace scrollback
