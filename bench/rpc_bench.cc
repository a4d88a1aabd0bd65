// Cluster micro-benchmarks over real Cap'n Proto RPC on loopback, beside a bare Cap'n Proto
// echo server (the RPC ceiling) in the same process and run:
//
//   BM_Echo/inflight           echo of a 250-byte payload, `inflight` calls pipelined, over
//                              BufferedStream like every Scrollback connection
//   BM_EchoStockTransport/...  the same over Cap'n Proto's stock transport
//   BM_EchoReply50/inflight    a small request answered with 50 messages' bytes (13.2 KB): the
//                              ceiling for BM_ReadHistory50
//   BM_GetMessage/inflight     smart client -> EmbeddedCluster, one message (~250 bytes back)
//   BM_SendMessage/inflight    smart client -> EmbeddedCluster, a 200-byte body
//   BM_SendBatch/size          smart client -> EmbeddedCluster, `size` sends per call, 4 calls
//                              in flight; counts messages
//   BM_ReadHistory50/inflight  smart client -> EmbeddedCluster, a page of 50
//   BM_FanOutDelay             send reply -> message visible in another member's inbox
//
// The cluster has 3 nodes and 16 shards; the echo server uses the same RpcServer (one event
// loop). Client, servers, RocksDB and fan-out share the machine's cores, as they do in the
// embedded deployment. items_per_second counts calls.
#include <benchmark/benchmark.h>
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/vector.h>

#include <algorithm>
#include <optional>
#include <random>

#include "scrollback/bench/echo.capnp.h"
#include "scrollback/cluster/embedded_cluster.h"
#include "scrollback/rpc/buffered_stream.h"
#include "scrollback/rpc/rpc_server.h"
#include "ycsb/rpc_targets.h"

namespace scrollback {
namespace {

constexpr uint64_t kConvs = 64;
constexpr uint64_t kDepth = 200;

// Everything shared, built once: the event loop of the benchmark thread, the echo server, the
// cluster (pre-filled) and the clients.
// An echo server and a pipelined connection to it.
struct EchoEndpoint {
  std::unique_ptr<RpcServer> server;
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> rpc;
  bench::Echo::Client echo = nullptr;

  // `buffered`: both ends on BufferedStream, as every Scrollback connection; false: Cap'n
  // Proto's stock transport.
  EchoEndpoint(kj::AsyncIoContext& io, bool buffered) {
    RpcServerOptions options;
    options.event_loops = 1;
    options.buffer_streams = buffered;
    server = std::move(RpcServer::Start(options, [](kj::AsyncIoProvider&) {
                         return ycsb::NewEchoService();
                       }).value());
    auto address = io.provider->getNetwork().parseAddress(server->address()).wait(io.waitScope);
    stream = address->connect().wait(io.waitScope);
    if (buffered) stream = NewBufferedStream(kj::mv(stream));
    rpc = kj::heap<capnp::TwoPartyClient>(*stream);
    echo = rpc->bootstrap().castAs<bench::Echo>();
  }
};

struct Env {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  EchoEndpoint echo{io, /*buffered=*/true};
  EchoEndpoint echo_stock{io, /*buffered=*/false};
  std::unique_ptr<EmbeddedCluster> cluster;
  std::unique_ptr<ChatClient> client;
  uint64_t next_id = 1;

  Env() {
    EmbeddedClusterOptions cluster_options;
    if (const char* threads = std::getenv("ENGINE_THREADS")) {
      cluster_options.node.engine_threads = std::atoi(threads);
    }
    if (std::getenv("NO_FANOUT")) cluster_options.fan_out = false;
    cluster = std::move(EmbeddedCluster::Start(cluster_options).value());
    client = cluster->NewClient(*io.provider);
    std::vector<SendMessageRequest> fill;
    for (uint64_t conv = 1; conv <= kConvs; ++conv) {
      Check(Wait(client->CreateConversation({conv, 1, {2, 3, 4, 5}, "bench"})).status());
      for (uint64_t i = 1; i <= kDepth; ++i) {
        fill.push_back({conv, 1, "f" + std::to_string(i), std::string(200, 'x')});
        if (fill.size() == 500) {
          for (auto& r : Wait(client->SendBatch(std::move(fill)))) Check(r.status());
          fill.clear();
        }
      }
    }
    for (auto& r : Wait(client->SendBatch(std::move(fill)))) Check(r.status());
    WaitForFanOut();
  }

  // Waits until every node's outboxes are empty, so that measurements start from a quiet
  // cluster.
  void WaitForFanOut() {
    for (int attempt = 0; attempt < 6000; ++attempt) {
      bool empty = true;
      for (size_t i = 0; i < cluster->node_count() && empty; ++i) {
        for (const HostedShard& shard : cluster->node(i)->Shards()) {
          auto pending = shard.store->ReadOutbox("", 1);
          if (!pending.ok() || !pending->records.empty()) empty = false;
        }
      }
      if (empty) return;
      io.provider->getTimer().afterDelay(10 * kj::MILLISECONDS).wait(io.waitScope);
    }
  }

  template <typename T>
  T Wait(kj::Promise<T>&& promise) {
    return promise.wait(io.waitScope);
  }
  static void Check(const Status& status) {
    if (!status.ok()) {
      std::fprintf(stderr, "rpc_bench: %s\n", status.ToString().c_str());
      std::exit(1);
    }
  }
};

Env& GetEnv() {
  static Env env;
  return env;
}

// Runs `make_call` `inflight` times per iteration, all pipelined, and waits for all.
template <typename MakeCall>
void RunPipelined(benchmark::State& state, MakeCall&& make_call) {
  Env& env = GetEnv();
  const int inflight = static_cast<int>(state.range(0));
  size_t failures = 0;
  for (auto _ : state) {
    kj::Vector<kj::Promise<bool>> calls(inflight);
    for (int i = 0; i < inflight; ++i) calls.add(make_call(env));
    for (bool ok : env.Wait(kj::joinPromises(calls.releaseAsArray()))) failures += !ok;
  }
  if (failures > 0) state.SkipWithError("calls failed");
  state.SetItemsProcessed(state.iterations() * inflight);
}

// Seconds from now until `reader`'s inbox shows `conv` at `seq` or later, polling every
// millisecond; nullopt if it does not within 10 s.
std::optional<double> SecondsUntilInInbox(Env& env, uint64_t reader, uint64_t conv, uint64_t seq) {
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    auto page = env.Wait(env.client->ListInbox({reader, "", 200}));
    if (page.ok()) {
      for (auto& e : page->entries) {
        if (e.conv_id == conv && e.last_seq >= seq) {
          return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        }
      }
    }
    if (std::chrono::steady_clock::now() - start > std::chrono::seconds(10)) return std::nullopt;
    env.io.provider->getTimer().afterDelay(1 * kj::MILLISECONDS).wait(env.io.waitScope);
  }
}

// Fan-out delay: from a send's reply to the message showing in another member's inbox (on
// another shard), polled every millisecond. Reported as the iteration time.
void BM_FanOutDelay(benchmark::State& state) {
  Env& env = GetEnv();
  const uint64_t conv = 1;  // Members 2..5; user 5's inbox row lives on some shard of its own.
  const uint64_t reader = 5;
  for (auto _ : state) {
    auto sent = env.Wait(
        env.client->SendMessage({conv, 2, "d" + std::to_string(env.next_id++), "fan-out probe"}));
    if (!sent.ok()) {
      state.SkipWithError("send failed");
      break;
    }
    auto took = SecondsUntilInInbox(env, reader, conv, sent->seq);
    if (!took) {
      state.SkipWithError("fan-out did not arrive within 10 s");
      return;
    }
    state.SetIterationTime(*took);
  }
}
BENCHMARK(BM_FanOutDelay)->UseManualTime()->Unit(benchmark::kMillisecond);

// The p-th percentile (0..1) of `samples` (sorted in place), in milliseconds.
double PercentileMs(std::vector<double>& samples, double p) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  const size_t i = std::min(samples.size() - 1, static_cast<size_t>(p * samples.size()));
  return samples[i] * 1e3;
}

// The same for the first message of a brand-new conversation (create, then send at once), the
// case where a slow first delivery would show: p50 / p99 / max over the iterations as counters.
void BM_FanOutDelayNewConversation(benchmark::State& state) {
  Env& env = GetEnv();
  static uint64_t next_conv = 1'000'000;
  std::vector<double> samples;
  for (auto _ : state) {
    const uint64_t conv = next_conv++;
    const uint64_t reader = 1'000'000 + conv;  // A user with no inbox yet.
    Env::Check(env.Wait(env.client->CreateConversation({conv, 2, {reader}, "new"})).status());
    auto sent = env.Wait(env.client->SendMessage({conv, 2, "first", "fan-out probe"}));
    if (!sent.ok()) {
      state.SkipWithError("send failed");
      break;
    }
    auto took = SecondsUntilInInbox(env, reader, conv, sent->seq);
    if (!took) {
      state.SkipWithError("fan-out did not arrive within 10 s");
      return;
    }
    samples.push_back(*took);
    state.SetIterationTime(*took);
  }
  state.counters["max_ms"] = PercentileMs(samples, 1.0);
  state.counters["p99_ms"] = PercentileMs(samples, 0.99);
  state.counters["p50_ms"] = PercentileMs(samples, 0.50);
}
BENCHMARK(BM_FanOutDelayNewConversation)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(300);

void RunEcho(benchmark::State& state, bench::Echo::Client& echo) {
  const std::string payload(250, 'e');
  RunPipelined(state, [&](Env&) {
    auto request = echo.echoRequest();
    request.setPayload(
        capnp::Data::Reader(reinterpret_cast<const kj::byte*>(payload.data()), payload.size()));
    return request.send().then([](auto reply) { return reply.getPayload().size() == 250; });
  });
}
void BM_Echo(benchmark::State& state) { RunEcho(state, GetEnv().echo.echo); }
BENCHMARK(BM_Echo)->Arg(1)->Arg(32)->UseRealTime();
void BM_EchoStockTransport(benchmark::State& state) { RunEcho(state, GetEnv().echo_stock.echo); }
BENCHMARK(BM_EchoStockTransport)->Arg(1)->Arg(32)->UseRealTime();

// The ceiling for a history page of 50: a small request, a reply of 50 messages' bytes.
void BM_EchoReply50(benchmark::State& state) {
  static constexpr uint32_t kBytes = 50 * 264;
  RunPipelined(state, [&](Env& env) {
    auto request = env.echo.echo.replyRequest();
    request.setBytes(kBytes);
    return request.send().then([](auto reply) { return reply.getPayload().size() == kBytes; });
  });
}
BENCHMARK(BM_EchoReply50)->Arg(1)->Arg(32)->UseRealTime();

void BM_GetMessage(benchmark::State& state) {
  std::mt19937_64 rng(1);
  RunPipelined(state, [&](Env& env) {
    return env.client->GetMessage(1 + rng() % kConvs, 1 + rng() % kDepth)
        .then([](Result<Message> m) { return m.ok(); });
  });
}
BENCHMARK(BM_GetMessage)->Arg(1)->Arg(32)->UseRealTime();

void BM_SendMessage(benchmark::State& state) {
  std::mt19937_64 rng(2);
  const std::string body(200, 's');
  RunPipelined(state, [&](Env& env) {
    uint64_t conv = 1 + rng() % kConvs;
    return env.client->SendMessage({conv, 2, "b" + std::to_string(env.next_id++), body})
        .then([](Result<SendMessageResult> r) { return r.ok(); });
  });
}
BENCHMARK(BM_SendMessage)->Arg(1)->Arg(32)->UseRealTime();

// Batched sends: `range(0)` messages per sendBatch call (spread over the conversations, so over
// every node and shard), 4 calls in flight. items_per_second counts messages.
void BM_SendBatch(benchmark::State& state) {
  Env& env = GetEnv();
  std::mt19937_64 rng(4);
  const std::string body(200, 'b');
  const size_t batch_size = static_cast<size_t>(state.range(0));
  constexpr int kInFlight = 4;
  size_t failures = 0;
  for (auto _ : state) {
    kj::Vector<kj::Promise<size_t>> calls(kInFlight);
    for (int c = 0; c < kInFlight; ++c) {
      std::vector<SendMessageRequest> batch;
      batch.reserve(batch_size);
      for (size_t i = 0; i < batch_size; ++i) {
        batch.push_back({1 + rng() % kConvs, 2, "sb" + std::to_string(env.next_id++), body});
      }
      calls.add(env.client->SendBatch(std::move(batch))
                    .then([](std::vector<Result<SendMessageResult>> results) {
                      size_t failed = 0;
                      for (auto& r : results) failed += !r.ok();
                      return failed;
                    }));
    }
    for (size_t failed : env.Wait(kj::joinPromises(calls.releaseAsArray()))) failures += failed;
  }
  if (failures > 0) state.SkipWithError("sends failed");
  state.SetItemsProcessed(state.iterations() * kInFlight * batch_size);
}
BENCHMARK(BM_SendBatch)->Arg(100)->UseRealTime();

void BM_ReadHistory50(benchmark::State& state) {
  std::mt19937_64 rng(3);
  RunPipelined(state, [&](Env& env) {
    HistoryQuery query{1 + rng() % kConvs, Direction::kNewestFirst, 51 + rng() % (kDepth - 50),
                       std::nullopt, 50};
    return env.client->ReadHistory(query).then(
        [](Result<HistoryPage> page) { return page.ok() && page->messages.size() == 50; });
  });
}
BENCHMARK(BM_ReadHistory50)->Arg(1)->Arg(32)->UseRealTime();

}  // namespace
}  // namespace scrollback

BENCHMARK_MAIN();
