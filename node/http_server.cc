#include "scrollback/node/http_server.h"

#include <spdlog/logger.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <thread>

namespace scrollback {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

// One request on one connection, then close.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, const HttpServer::Handler& handler)
      : stream_(std::move(socket)), handler_(handler) {
    parser_.header_limit(8 * 1024);
    parser_.body_limit(0);
  }

  void Start() {
    stream_.expires_after(std::chrono::seconds(5));
    http::async_read(stream_, buffer_, parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (!ec) self->Respond();
                     });
  }

 private:
  void Respond() {
    const auto& request = parser_.get();
    HttpResponse answer =
        handler_(std::string(request.method_string()), std::string(request.target()));
    response_.version(request.version());
    response_.result(answer.status);
    response_.set(http::field::content_type, answer.content_type);
    response_.keep_alive(false);
    response_.body() = std::move(answer.body);
    response_.prepare_payload();
    http::async_write(stream_, response_, [self = shared_from_this()](beast::error_code, size_t) {
      beast::error_code ignored;
      self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    });
  }

  beast::tcp_stream stream_;
  const HttpServer::Handler& handler_;
  beast::flat_buffer buffer_;
  http::request_parser<http::empty_body> parser_;
  http::response<http::string_body> response_;
};

class HttpServerImpl final : public HttpServer {
 public:
  HttpServerImpl(Handler handler, Logger logger)
      : handler_(std::move(handler)),
        log_(OrNull(std::move(logger))),
        acceptor_(ioc_),
        retry_(ioc_) {}
  ~HttpServerImpl() override { Stop(); }

  Status Listen(const std::string& address) {
    auto colon = address.rfind(':');
    if (colon == std::string::npos) {
      return Status::InvalidArgument("http_address", "expected host:port, got " + address);
    }
    beast::error_code ec;
    auto ip = net::ip::make_address(address.substr(0, colon), ec);
    if (ec) return Status::InvalidArgument("http_address", "bad address " + address);
    tcp::endpoint endpoint(ip, static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec) return Status::Unavailable("cannot listen on " + address + ": " + ec.message());
    auto local = acceptor_.local_endpoint();
    address_ = local.address().to_string() + ":" + std::to_string(local.port());
    Accept();
    thread_ = std::thread([this] { ioc_.run(); });
    return Status::Ok();
  }

  std::string address() const override { return address_; }

  void Stop() override {
    if (!thread_.joinable()) return;
    ioc_.stop();
    thread_.join();
  }

 private:
  void Accept() {
    acceptor_.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;  // Stopping.
      if (ec) {
        // E.g. out of descriptors: keep serving /health and /metrics after a pause.
        log_->error("HTTP accept failed (retrying in 100 ms): {}", ec.message());
        retry_.expires_after(std::chrono::milliseconds(100));
        retry_.async_wait([this](beast::error_code) { Accept(); });
        return;
      }
      std::make_shared<Session>(std::move(socket), handler_)->Start();
      Accept();
    });
  }

  const Handler handler_;
  const Logger log_;
  net::io_context ioc_;
  tcp::acceptor acceptor_;
  net::steady_timer retry_;
  std::string address_;
  std::thread thread_;
};

}  // namespace

Result<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& address, Handler handler,
                                                      Logger logger) {
  auto server = std::make_unique<HttpServerImpl>(std::move(handler), std::move(logger));
  SB_RETURN_IF_ERROR(server->Listen(address));
  return std::unique_ptr<HttpServer>(std::move(server));
}

}  // namespace scrollback
