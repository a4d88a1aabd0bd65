#include "scrollback/cluster/etcd_metadata_store.h"

#include <kj/encoding.h>
#include <pthread.h>
#include <spdlog/logger.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <condition_variable>
#include <cstdlib>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

namespace scrollback {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using nlohmann::json;

// ---- Base64 (RFC 4648, with padding): the gateway's encoding of bytes fields ---------------

std::string Base64Encode(std::string_view in) {
  kj::String encoded =
      kj::encodeBase64(kj::arrayPtr(reinterpret_cast<const kj::byte*>(in.data()), in.size()));
  return std::string(encoded.cStr(), encoded.size());
}

// Input that is not base64 (as WHATWG's atob judges it: bad characters or length; whitespace
// and missing padding are tolerated) is corruption in etcd's reply, reported, never thrown.
Result<std::string> Base64Decode(std::string_view in) {
  kj::EncodingResult<kj::Array<kj::byte>> decoded =
      kj::decodeBase64(kj::arrayPtr(in.data(), in.size()));
  if (decoded.hadErrors) return Status::Corruption("bad base64 in etcd reply");
  return std::string(decoded.begin(), decoded.end());
}

// int64 fields arrive as strings (or, from some versions, numbers); absent means 0.
int64_t Int(const json& object, const char* field) {
  auto it = object.find(field);
  if (it == object.end()) return 0;
  if (it->is_string()) {
    // Not std::stoll: a malformed reply must not throw through the store.
    const std::string& text = it->get_ref<const std::string&>();
    char* end = nullptr;
    long long value = std::strtoll(text.c_str(), &end, 10);
    return end != text.c_str() && *end == '\0' ? value : 0;
  }
  if (it->is_number_integer()) return it->get<int64_t>();
  return 0;
}

// etcd's range_end for a prefix: the smallest key greater than every key with it, or "\0"
// ("to the end of the keyspace") when there is none.
std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(prefix.back());
    if (last != 0xff) {
      ++last;
      return prefix;
    }
    prefix.pop_back();  // 0xff cannot be incremented: carry into the byte before.
  }
  return std::string(1, '\0');
}

// A synchronous HTTP/1.1 client with one kept-alive connection. Thread-safe (serialized).
class HttpClient {
 public:
  HttpClient(std::string host, std::string port, std::chrono::milliseconds timeout)
      : host_(std::move(host)), port_(std::move(port)), timeout_(timeout), stream_(ioc_) {}

  // POSTs `body` to `target`; returns the parsed JSON reply of a 200, else a Status.
  Result<json> Post(const std::string& target, const json& body) {
    std::lock_guard lock(mu_);
    http::request<http::string_body> request{http::verb::post, target, 11};
    request.set(http::field::host, host_ + ":" + port_);
    request.set(http::field::content_type, "application/json");
    request.keep_alive(true);
    request.body() = body.dump();
    request.prepare_payload();

    beast::error_code ec;
    // A kept-alive connection may have been closed by the server: reconnect and resend once.
    // Only a failed *send* is retried, so a write is never applied twice.
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (!connected_) {
        SB_RETURN_IF_ERROR(Connect());
      }
      stream_.expires_after(timeout_);
      http::write(stream_, request, ec);
      if (!ec) break;
      Close();
      if (attempt == 1) return Unavailable("send", ec);
    }
    beast::flat_buffer buffer;
    http::response<http::string_body> response;
    http::read(stream_, buffer, response, ec);
    if (ec) {
      Close();
      return Unavailable("read", ec);
    }
    if (!response.keep_alive()) Close();
    json reply = json::parse(response.body(), nullptr, /*allow_exceptions=*/false);
    if (response.result() != http::status::ok) {
      std::string message =
          reply.is_object() && reply.contains("error") && reply["error"].is_string()
              ? reply["error"].get<std::string>()
              : response.body();
      const bool client_error = response.result_int() >= 400 && response.result_int() < 500;
      return client_error ? Status::InvalidArgument("", "etcd " + target + ": " + message)
                          : Status::Unavailable("etcd " + target + ": " + message);
    }
    if (reply.is_discarded()) return Status::Unavailable("etcd " + target + ": reply is not JSON");
    return reply;
  }

  const std::string& host() const { return host_; }
  const std::string& port() const { return port_; }

 private:
  Status Connect() {
    beast::error_code ec;
    tcp::resolver resolver(ioc_);
    auto results = resolver.resolve(host_, port_, ec);
    if (ec) return Unavailable("resolve", ec);
    stream_.expires_after(timeout_);
    stream_.connect(results, ec);
    if (ec) return Unavailable("connect", ec);
    connected_ = true;
    return Status::Ok();
  }
  void Close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
    connected_ = false;
  }
  Status Unavailable(const char* what, const beast::error_code& ec) const {
    return Status::Unavailable("etcd at " + host_ + ":" + port_ + ": " + what + ": " +
                               ec.message());
  }

  const std::string host_;
  const std::string port_;
  const std::chrono::milliseconds timeout_;
  std::mutex mu_;
  net::io_context ioc_;
  beast::tcp_stream stream_;  // GUARDED_BY(mu_)
  bool connected_ = false;    // GUARDED_BY(mu_)
};

class EtcdMetadataStore final : public MetadataStore {
 public:
  EtcdMetadataStore(const EtcdOptions& options, std::string host, std::string port)
      : options_(options),
        log_(OrNull(options.logger)),
        http_(std::move(host), std::move(port), options.request_timeout) {}

  Result<std::optional<VersionedValue>> Get(const std::string& key) override {
    auto reply = http_.Post("/v3/kv/range", {{"key", Base64Encode(key)}});
    if (!reply.ok()) return reply.status();
    auto kvs = Kvs(*reply);
    if (!kvs.ok()) return kvs.status();
    if (kvs->empty()) return std::optional<VersionedValue>();
    return std::optional<VersionedValue>(std::move((*kvs)[0].value));
  }

  Result<std::vector<KeyValue>> List(const std::string& prefix) override {
    auto reply = http_.Post("/v3/kv/range", {{"key", Base64Encode(prefix)},
                                             {"range_end", Base64Encode(PrefixEnd(prefix))}});
    if (!reply.ok()) return reply.status();
    return Kvs(*reply);
  }

  Result<int64_t> Put(const std::string& key, const std::string& value, int64_t lease_id) override {
    json body = {{"key", Base64Encode(key)}, {"value", Base64Encode(value)}};
    if (lease_id != 0) body["lease"] = std::to_string(lease_id);
    auto reply = http_.Post("/v3/kv/put", body);
    if (!reply.ok()) return LeaseAware(reply.status(), lease_id);
    return Int((*reply)["header"], "revision");
  }

  Result<int64_t> CompareAndSwap(const std::string& key, int64_t expected_version,
                                 const std::string& value, int64_t lease_id) override {
    json compare = Condition(key, expected_version);
    json put = {{"key", Base64Encode(key)}, {"value", Base64Encode(value)}};
    if (lease_id != 0) put["lease"] = std::to_string(lease_id);
    json body = {{"compare", json::array({compare})},
                 {"success", json::array({{{"request_put", put}}})}};
    auto reply = http_.Post("/v3/kv/txn", body);
    if (!reply.ok()) return LeaseAware(reply.status(), lease_id);
    // A failed comparison omits "succeeded" (false is the default value).
    if (!reply->value("succeeded", false)) {
      return Status::FailedPrecondition("version of " + key + " is not " +
                                        std::to_string(expected_version));
    }
    return Int((*reply)["header"], "revision");
  }

  Status Delete(const std::string& key) override {
    return http_.Post("/v3/kv/deleterange", {{"key", Base64Encode(key)}}).status();
  }

  Result<int64_t> Commit(const std::vector<MetadataCondition>& conditions,
                         const std::vector<MetadataWrite>& writes) override {
    if (writes.size() > options_.max_txn_ops || conditions.size() > options_.max_txn_ops) {
      return Status::InvalidArgument("writes", "a commit takes at most " +
                                                   std::to_string(options_.max_txn_ops) +
                                                   " writes and conditions (etcd --max-txn-ops)");
    }
    json compare = json::array();
    for (const MetadataCondition& condition : conditions) {
      compare.push_back(Condition(condition.key, condition.version));
    }
    json success = json::array();
    for (const MetadataWrite& write : writes) {
      if (write.value) {
        success.push_back(
            {{"request_put",
              {{"key", Base64Encode(write.key)}, {"value", Base64Encode(*write.value)}}}});
      } else {
        success.push_back({{"request_delete_range", {{"key", Base64Encode(write.key)}}}});
      }
    }
    auto reply = http_.Post("/v3/kv/txn", {{"compare", compare}, {"success", success}});
    if (!reply.ok()) return reply.status();
    if (!reply->value("succeeded", false)) {
      return Status::FailedPrecondition("a condition of the commit does not hold");
    }
    return Int((*reply)["header"], "revision");
  }

  size_t max_writes_per_commit() const override { return options_.max_txn_ops; }

  Result<MetadataPage> ListPage(const std::string& prefix, const std::string& start_after,
                                size_t limit, int64_t at_version) override {
    if (limit == 0) return Status::InvalidArgument("limit", "a page holds at least one key");
    // Keys after start_after: from start_after + "\0", the smallest key greater than it.
    const std::string from =
        start_after.empty() || start_after < prefix ? prefix : start_after + std::string(1, '\0');
    json body = {{"key", Base64Encode(from)},
                 {"range_end", Base64Encode(PrefixEnd(prefix))},
                 {"limit", std::to_string(limit)}};
    if (at_version != 0) body["revision"] = std::to_string(at_version);
    auto reply = http_.Post("/v3/kv/range", body);
    if (!reply.ok()) {
      if (at_version != 0 && reply.status().message().find("compacted") != std::string::npos) {
        return Status::FailedPrecondition("version " + std::to_string(at_version) +
                                          " is compacted: " + reply.status().message());
      }
      return reply.status();
    }
    auto kvs = Kvs(*reply);
    if (!kvs.ok()) return kvs.status();
    MetadataPage page;
    page.kvs = std::move(kvs).value();
    page.more = reply->value("more", false);
    page.version = at_version != 0 ? at_version : Int((*reply)["header"], "revision");
    return page;
  }

  Result<int64_t> GrantLease(std::chrono::milliseconds ttl) override {
    if (ttl.count() <= 0) return Status::InvalidArgument("ttl", "lease ttl must be positive");
    // etcd leases have whole seconds; round up.
    int64_t seconds = (ttl.count() + 999) / 1000;
    auto reply = http_.Post("/v3/lease/grant", {{"TTL", std::to_string(seconds)}});
    if (!reply.ok()) return reply.status();
    int64_t id = Int(*reply, "ID");
    if (id == 0) return Status::Unavailable("etcd granted no lease: " + reply->dump());
    return id;
  }

  Status KeepAlive(int64_t lease_id) override {
    auto reply = http_.Post("/v3/lease/keepalive", {{"ID", std::to_string(lease_id)}});
    if (!reply.ok()) return reply.status();
    const json& result = reply->contains("result") ? (*reply)["result"] : *reply;
    if (Int(result, "TTL") <= 0) {
      return Status::NotFound("lease " + std::to_string(lease_id) + " expired");
    }
    return Status::Ok();
  }

  Status RevokeLease(int64_t lease_id) override {
    auto reply = http_.Post("/v3/lease/revoke", {{"ID", std::to_string(lease_id)}});
    if (!reply.ok() && reply.status().code() == ErrorCode::kInvalidArgument) {
      return Status::Ok();  // Already gone.
    }
    return reply.status();
  }

  std::unique_ptr<WatchHandle> WatchChanges(const std::string& prefix, int64_t after_version,
                                            ChangesCallback on_changes) override {
    if (after_version == 0) {
      // "From now" is the revision etcd is at before this call returns: a change made after it
      // is delivered even if the stream connects later.
      auto now = http_.Post("/v3/kv/range", {{"key", Base64Encode(prefix)}, {"count_only", true}});
      if (now.ok()) after_version = Int((*now)["header"], "revision");
    }
    return std::make_unique<StreamingWatch>(this, prefix, after_version, std::move(on_changes));
  }

 private:
  // One etcd watch stream (POST /v3/watch through the gateway: newline-separated JSON
  // WatchResponses over a chunked HTTP reply), on a thread of its own with its own connection.
  // A broken stream is re-created from the version after the last one delivered, after
  // options.watch_retry_interval; a compacted start ends the watch with history_lost.
  class StreamingWatch final : public WatchHandle {
   public:
    // One WatchResponse line at most (a transaction of 128 writes of shard records is ~50 KB;
    // etcd's own request limit is 1.5 MiB).
    static constexpr size_t kMaxWatchLine = 64u << 20;

    StreamingWatch(EtcdMetadataStore* store, std::string prefix, int64_t after_version,
                   ChangesCallback callback)
        : store_(store),
          prefix_(std::move(prefix)),
          callback_(std::move(callback)),
          delivered_(after_version) {
      thread_ = std::thread([this] { Loop(); });
    }
    ~StreamingWatch() override {
      {
        std::lock_guard lock(mu_);
        stop_ = true;
        if (ioc_ != nullptr) ioc_->stop();
      }
      cv_.notify_all();
      thread_.join();
    }

   private:
    void Loop() {
      pthread_setname_np(pthread_self(), "sb-etcd-watch");
      bool failing = false;
      for (;;) {
        Status ended = Stream();
        std::unique_lock lock(mu_);
        if (stop_ || ended_) return;
        if (!failing) {
          store_->log_->warn("watching {} in etcd broke (resuming after version {}): {}", prefix_,
                             delivered_, ended.ToString());
        }
        failing = true;
        cv_.wait_for(lock, store_->options_.watch_retry_interval, [this] { return stop_; });
        if (stop_) return;
      }
    }

    // Runs one stream until it breaks or the watch stops.
    Status Stream() {
      net::io_context ioc;
      {
        std::lock_guard lock(mu_);
        if (stop_) return Status::Ok();
        ioc_ = &ioc;
      }
      Status result = Status::Unavailable("watch stream ended");
      beast::tcp_stream stream(ioc);
      beast::flat_buffer buffer;
      http::request<http::string_body> request{http::verb::post, "/v3/watch", 11};
      request.set(http::field::host, store_->http_.host() + ":" + store_->http_.port());
      request.set(http::field::content_type, "application/json");
      json create = {{"key", Base64Encode(prefix_)},
                     {"range_end", Base64Encode(PrefixEnd(prefix_))}};
      if (delivered_ != 0) create["start_revision"] = std::to_string(delivered_ + 1);
      request.body() = json{{"create_request", create}}.dump();
      request.prepare_payload();
      http::response_parser<http::string_body> parser;
      parser.body_limit(boost::none);
      std::string pending;  // Bytes of a reply line not complete yet.
      auto on_chunk = [&](std::uint64_t, beast::string_view body, beast::error_code&) {
        pending.append(body.data(), body.size());
        if (pending.size() > kMaxWatchLine) {  // Bounded: a reply never ends its line.
          result = Status::Corruption("etcd watch: a reply line exceeds " +
                                      std::to_string(kMaxWatchLine) + " bytes");
          ioc.stop();
          return body.size();
        }
        size_t newline;
        while ((newline = pending.find('\n')) != std::string::npos) {
          Status handled = HandleLine(std::string_view(pending).substr(0, newline));
          pending.erase(0, newline + 1);
          if (!handled.ok()) {
            result = handled;
            ioc.stop();
            break;
          }
        }
        return body.size();
      };
      parser.on_chunk_body(on_chunk);
      std::function<void(beast::error_code, size_t)> on_read = [&](beast::error_code ec, size_t) {
        if (ec) {
          result = Status::Unavailable("etcd watch: " + ec.message());
          return;
        }
        if (parser.is_done()) return;
        http::async_read_some(stream, buffer, parser, on_read);
      };
      tcp::resolver resolver(ioc);
      beast::error_code ec;
      auto endpoints = resolver.resolve(store_->http_.host(), store_->http_.port(), ec);
      if (ec) return Status::Unavailable("etcd watch: resolve: " + ec.message());
      stream.expires_after(store_->options_.request_timeout);
      stream.async_connect(endpoints, [&](beast::error_code ec, const tcp::endpoint&) {
        if (ec) {
          result = Status::Unavailable("etcd watch: connect: " + ec.message());
          return;
        }
        http::async_write(stream, request, [&](beast::error_code ec, size_t) {
          if (ec) {
            result = Status::Unavailable("etcd watch: send: " + ec.message());
            return;
          }
          http::async_read_header(stream, buffer, parser, [&](beast::error_code ec, size_t) {
            if (ec) {
              result = Status::Unavailable("etcd watch: " + ec.message());
              return;
            }
            if (parser.get().result() != http::status::ok) {
              result = Status::Unavailable("etcd watch: HTTP " +
                                           std::to_string(parser.get().result_int()));
              return;
            }
            stream.expires_never();  // A watch is quiet while nothing changes.
            http::async_read_some(stream, buffer, parser, on_read);
          });
        });
      });
      ioc.run();
      std::lock_guard lock(mu_);
      ioc_ = nullptr;
      return result;
    }

    // One WatchResponse: its events, grouped by version, go to the callback.
    Status HandleLine(std::string_view line) {
      if (line.empty()) return Status::Ok();
      json reply = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (reply.is_discarded() || !reply.is_object()) {
        return Status::Corruption("etcd watch: a reply line is not JSON");
      }
      if (reply.contains("error")) {
        return Status::Unavailable("etcd watch: " + reply["error"].dump());
      }
      const json& result = reply.contains("result") ? reply["result"] : reply;
      if (Int(result, "compact_revision") != 0) {
        ChangeBatch lost;
        lost.version = Int(result, "compact_revision");
        lost.history_lost = true;
        {
          std::lock_guard lock(mu_);
          ended_ = true;
        }
        callback_(lost);
        return Status::FailedPrecondition("history compacted");
      }
      if (result.value("canceled", false)) {
        return Status::Unavailable("etcd watch: canceled: " + result.value("cancel_reason", ""));
      }
      auto events = result.find("events");
      if (events == result.end() || !events->is_array()) return Status::Ok();
      ChangeBatch batch;
      auto flush = [&] {
        if (batch.changes.empty()) return;
        if (batch.version > delivered_) {  // A resumed stream may repeat a version.
          callback_(batch);
          delivered_ = batch.version;
        }
        batch = ChangeBatch{};
      };
      for (const json& event : *events) {
        const json& kv = event.contains("kv") ? event["kv"] : json::object();
        const int64_t version = Int(kv, "mod_revision");
        if (version != batch.version) flush();
        batch.version = version;
        auto key = Base64Decode(kv.value("key", ""));
        if (!key.ok()) return key.status();
        if (event.value("type", "PUT") == "DELETE") {
          batch.changes.emplace_back(std::move(key).value(), std::nullopt);
        } else {
          auto value = Base64Decode(kv.value("value", ""));
          if (!value.ok()) return value.status();
          batch.changes.emplace_back(std::move(key).value(),
                                     VersionedValue{std::move(value).value(), version});
        }
      }
      flush();
      return Status::Ok();
    }

    EtcdMetadataStore* const store_;
    const std::string prefix_;
    const ChangesCallback callback_;
    int64_t delivered_;  // Owned by the thread: the last version delivered (or started after).
    std::mutex mu_;
    std::condition_variable cv_;
    net::io_context* ioc_ = nullptr;  // GUARDED_BY(mu_); the running stream's.
    bool stop_ = false;               // GUARDED_BY(mu_)
    bool ended_ = false;              // GUARDED_BY(mu_); history lost: no resuming.
    std::thread thread_;
  };

  static json Condition(const std::string& key, int64_t version) {
    json compare = {{"key", Base64Encode(key)}, {"result", "EQUAL"}};
    if (version == 0) {
      compare["target"] = "CREATE";  // create_revision 0: the key does not exist.
      compare["create_revision"] = "0";
    } else {
      compare["target"] = "MOD";
      compare["mod_revision"] = std::to_string(version);
    }
    return compare;
  }

  static Result<std::vector<KeyValue>> Kvs(const json& reply) {
    std::vector<KeyValue> out;
    auto it = reply.find("kvs");
    if (it == reply.end()) return out;
    for (const json& kv : *it) {
      auto key = Base64Decode(kv.value("key", ""));
      auto value = Base64Decode(kv.value("value", ""));
      if (!key.ok()) return key.status();
      if (!value.ok()) return value.status();
      out.push_back({std::move(key).value(),
                     VersionedValue{std::move(value).value(), Int(kv, "mod_revision")}});
    }
    return out;
  }

  // etcd answers a put under an unknown lease with an error; report it as not-found.
  static Status LeaseAware(const Status& status, int64_t lease_id) {
    if (lease_id != 0 && status.message().find("lease not found") != std::string::npos) {
      return Status::NotFound("lease " + std::to_string(lease_id) + " does not exist");
    }
    return status;
  }

  const EtcdOptions options_;
  const Logger log_;
  HttpClient http_;
};

}  // namespace

Result<std::shared_ptr<MetadataStore>> NewEtcdMetadataStore(const EtcdOptions& options) {
  auto colon = options.endpoint.rfind(':');
  if (colon == std::string::npos) {
    return Status::InvalidArgument("endpoint", "expected host:port, got " + options.endpoint);
  }
  auto store = std::make_shared<EtcdMetadataStore>(options, options.endpoint.substr(0, colon),
                                                   options.endpoint.substr(colon + 1));
  auto deadline = std::chrono::steady_clock::now() + options.wait_for_etcd;
  auto probe = store->Get("/scrollback/");
  while (!probe.ok() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    probe = store->Get("/scrollback/");
  }
  if (!probe.ok()) return probe.status();
  return std::shared_ptr<MetadataStore>(std::move(store));
}

}  // namespace scrollback
