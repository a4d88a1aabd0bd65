// A minimal HTTP/1.1 server for operational endpoints (/health, /metrics), on Boost.Beast.
// One thread; each request is answered by `handler` and the connection closed. Requests are
// bounded (8 KiB of headers, no body) and time out after 5 s.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "scrollback/schema/log.h"
#include "scrollback/schema/status.h"

namespace scrollback {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

class HttpServer {
 public:
  // Called on the server thread with the request's method and target (path and query).
  using Handler = std::function<HttpResponse(const std::string& method, const std::string& target)>;

  // Listens on IPv4 `address` (host:port; port 0 picks one).
  // Accept errors are logged to `logger` and retried.
  static Result<std::unique_ptr<HttpServer>> Start(const std::string& address, Handler handler,
                                                   Logger logger = nullptr);
  virtual ~HttpServer() = default;
  virtual std::string address() const = 0;
  virtual void Stop() = 0;  // Idempotent; the destructor calls it.
};

}  // namespace scrollback
