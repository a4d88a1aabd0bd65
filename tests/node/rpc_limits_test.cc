// A storage node's connection limits, over real sockets: the node-wide budget for frames being
// received, the partial-frame and idle timeouts, and the connection cap. Every wait is bounded.
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "node_test_util.h"
#include "scrollback/node/storage_node.h"
#include "scrollback/schema/chatstore.capnp.h"
#include "scrollback/schema/log.h"
#include "test_util.h"

namespace scrollback {
namespace {

namespace s = ::scrollback::schema;
using testing::TempDir;

struct LimitsFixture {
  explicit LimitsFixture(void (*configure)(NodeOptions&))
      : options(testing::SmallNodeOptions("limits", dir.Sub("data"))) {
    configure(options);
    auto started = StorageNode::Start(options);
    INFO(started.status().ToString());
    REQUIRE(started.ok());
    node = std::move(started).value();
  }

  // The value of metric `name` (with labels, as printed) in the node's /metrics text; -1 if
  // absent.
  double Metric(const std::string& name) {
    const std::string text = node->RenderMetrics();
    const std::string pattern = "\n" + name + " ";
    auto at = text.find(pattern);
    if (at == std::string::npos) return -1;
    return std::stod(text.substr(at + pattern.size()));
  }

  kj::Own<kj::AsyncIoStream> Connect() {
    auto address = io.provider->getNetwork().parseAddress(node->address()).wait(io.waitScope);
    return address->connect().wait(io.waitScope);
  }

  // Polls `done` every 10 ms (running the event loop) until it is true or `limit` passes.
  template <typename Fn>
  bool Eventually(Fn&& done, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      if (done()) return true;
      io.provider->getTimer().afterDelay(10 * kj::MILLISECONDS).wait(io.waitScope);
    }
    return done();
  }

  // Whether the peer ended `stream` (EOF or reset) within `limit`.
  bool Ended(kj::AsyncIoStream& stream, std::chrono::milliseconds limit) {
    kj::byte buffer[4096];
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      auto read = io.provider->getTimer().timeoutAfter(100 * kj::MILLISECONDS,
                                                       stream.tryRead(buffer, 1, sizeof(buffer)));
      try {
        if (read.wait(io.waitScope) == 0) return true;
      } catch (const kj::Exception& e) {
        if (e.getType() != kj::Exception::Type::OVERLOADED) return true;  // Not our timeout.
      }
    }
    return false;
  }

  // A health call over a fresh Cap'n Proto connection: whether the node answers.
  bool Serves() {
    auto stream = Connect();
    capnp::TwoPartyClient rpc(*stream);
    auto node_cap = rpc.bootstrap().castAs<s::Node>();
    auto reply =
        io.provider->getTimer().timeoutAfter(5 * kj::SECONDS, node_cap.healthRequest().send());
    try {
      return std::string(reply.wait(io.waitScope).getNodeId().cStr()) == "limits";
    } catch (const kj::Exception&) {
      return false;
    }
  }

  TempDir dir;
  NodeOptions options;
  kj::AsyncIoContext io = kj::setupAsyncIo();
  std::unique_ptr<StorageNode> node;
};

// The first bytes of a one-segment frame of `words` words, and `body_bytes` bytes of its body.
std::vector<kj::byte> FrameStart(uint32_t words, size_t body_bytes) {
  std::vector<kj::byte> out = {0, 0, 0, 0};  // One segment.
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<kj::byte>(words >> (8 * i)));
  out.resize(out.size() + body_bytes, 0);
  return out;
}

TEST_CASE("stalled partial frames hold at most the receive budget, and time out") {
  LimitsFixture f([](NodeOptions& o) {
    o.max_message_bytes = 1 << 20;
    o.receive_budget_bytes = 1 << 20;
    o.partial_frame_timeout = std::chrono::milliseconds(1500);
  });
  // Four connections each announce a 700 KiB message and send 8 bytes of it.
  constexpr uint32_t kWords = (700 << 10) / 8;
  std::vector<kj::Own<kj::AsyncIoStream>> stalled;
  for (int i = 0; i < 4; ++i) {
    stalled.push_back(f.Connect());
    auto frame = FrameStart(kWords, 8);
    stalled.back()->write(frame.data(), frame.size()).wait(f.io.waitScope);
  }
  const double limit = f.Metric("scrollback_rpc_receive_budget_bytes{kind=\"limit\"}");
  REQUIRE(limit == 1 << 20);
  // One is admitted; the other three wait instead of allocating.
  REQUIRE(f.Eventually([&] { return f.Metric("scrollback_rpc_receive_budget_waits_total") >= 3; }));
  double peak = 0;
  CHECK(f.Eventually(
      [&] {
        const double used = f.Metric("scrollback_rpc_receive_budget_bytes{kind=\"used\"}");
        peak = std::max(peak, used);
        return f.Metric("scrollback_rpc_partial_frame_timeouts_total") >= 4;
      },
      std::chrono::seconds(20)));
  CHECK(peak <= limit);
  CHECK(peak >= kWords * 8.0);
  // Every stalled connection was dropped and gave its budget back; the node serves others.
  for (auto& stream : stalled) CHECK(f.Ended(*stream, std::chrono::seconds(5)));
  CHECK(f.Eventually(
      [&] { return f.Metric("scrollback_rpc_receive_budget_bytes{kind=\"used\"}") == 0; }));
  CHECK(f.Serves());
}

TEST_CASE("while stalled frames hold most of the budget, small calls are still served") {
  LimitsFixture f([](NodeOptions& o) {
    o.max_message_bytes = 1 << 20;
    o.receive_budget_bytes = 1 << 20;
    o.partial_frame_timeout = std::chrono::seconds(30);  // Longer than this test.
  });
  auto stalled = f.Connect();
  auto frame = FrameStart((900 << 10) / 8, 8);
  stalled->write(frame.data(), frame.size()).wait(f.io.waitScope);
  REQUIRE(f.Eventually(
      [&] { return f.Metric("scrollback_rpc_receive_budget_bytes{kind=\"used\"}") >= 900 << 10; }));
  CHECK(f.Serves());
  CHECK(f.Serves());
}

TEST_CASE("a connection past max_connections is closed at once and the others are served") {
  LimitsFixture f([](NodeOptions& o) { o.max_connections = 3; });
  std::vector<kj::Own<kj::AsyncIoStream>> open;
  for (int i = 0; i < 3; ++i) open.push_back(f.Connect());
  REQUIRE(f.Eventually([&] { return f.Metric("scrollback_rpc_connections_open") == 3; }));
  auto extra = f.Connect();
  CHECK(f.Ended(*extra, std::chrono::seconds(5)));
  CHECK(f.Metric("scrollback_rpc_connections_refused_total") == 1);
  // Those already open are untouched; one closing makes room.
  open.pop_back();
  REQUIRE(f.Eventually([&] { return f.Metric("scrollback_rpc_connections_open") == 2; }));
  CHECK(f.Serves());
}

TEST_CASE("with an idle timeout, a silent connection is dropped and a busy one is not") {
  LimitsFixture f([](NodeOptions& o) { o.idle_timeout = std::chrono::milliseconds(300); });
  auto silent = f.Connect();
  auto busy_stream = f.Connect();
  capnp::TwoPartyClient rpc(*busy_stream);
  auto busy = rpc.bootstrap().castAs<s::Node>();
  // The busy connection calls every 100 ms for a second: it stays.
  for (int i = 0; i < 10; ++i) {
    REQUIRE(std::string(busy.healthRequest().send().wait(f.io.waitScope).getNodeId().cStr()) ==
            "limits");
    f.io.provider->getTimer().afterDelay(100 * kj::MILLISECONDS).wait(f.io.waitScope);
  }
  CHECK(f.Ended(*silent, std::chrono::seconds(5)));
  CHECK(f.Metric("scrollback_rpc_idle_timeouts_total") >= 1);
  CHECK(std::string(busy.healthRequest().send().wait(f.io.waitScope).getNodeId().cStr()) ==
        "limits");
}

}  // namespace
}  // namespace scrollback
