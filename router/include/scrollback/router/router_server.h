// RouterServer: the stateless proxy behind scrollback-router. Serves the ChatStore API and
// forwards each call, through a smart client per event loop, to the node that owns its key, so
// that clients which do not link the smart client can use any router behind any TCP load
// balancer. Holds no data; run as many as needed.
#pragma once

#include <memory>
#include <string>

#include "scrollback/router/chat_client.h"
#include "scrollback/rpc/rpc_server.h"

namespace scrollback {

struct RouterOptions {
  RpcServerOptions rpc;  // Where and how the router listens.
  ClientOptions client;  // How it talks to the nodes.
  // Default: 1,000. Most sends in one sendBatch.
  uint32_t max_batch = 1000;
  // Default: 1,000. Most user ids in one member list (the nodes enforce their own limits too).
  uint32_t max_ids = 1000;
};

class RouterServer {
 public:
  static Result<std::unique_ptr<RouterServer>> Start(const RouterOptions& options,
                                                     std::shared_ptr<ShardMapSource> maps);
  ~RouterServer();
  std::string address() const { return server_->address(); }
  void Stop(std::chrono::milliseconds grace) { server_->Stop(grace); }

 private:
  explicit RouterServer(std::unique_ptr<RpcServer> server) : server_(std::move(server)) {}
  std::unique_ptr<RpcServer> server_;
};

}  // namespace scrollback
