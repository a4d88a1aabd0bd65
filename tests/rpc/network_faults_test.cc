// The network fault seam (rpc/network_faults.h): a wrapped stream obeys its link's mode at every
// operation, in each direction separately, and heals.
#include "scrollback/rpc/network_faults.h"

#include <kj/async-io.h>

#include <catch2/catch.hpp>
#include <string>

namespace scrollback {
namespace {

struct Pipe {
  Pipe(NetworkFaults& faults, kj::AsyncIoContext& io) {
    auto pipe = io.provider->newTwoWayPipe();  // A socket pair: writes do not wait for reads.
    a = faults.Wrap(kj::mv(pipe.ends[0]), "a", "b", io.provider->getTimer());
    b = kj::mv(pipe.ends[1]);  // b's side is not wrapped: a's stream carries the link.
  }
  kj::Own<kj::AsyncIoStream> a, b;
};

// Whether `promise` completes within 200 ms (drop: it must not).
template <typename T>
bool CompletesSoon(kj::AsyncIoContext& io, kj::Promise<T>& promise) {
  return promise.then([](auto&&...) { return true; })
      .exclusiveJoin(
          io.provider->getTimer().afterDelay(200 * kj::MILLISECONDS).then([] { return false; }))
      .wait(io.waitScope);
}

TEST_CASE("a wrapped stream passes bytes, then fails while cut, hangs while dropped, and heals") {
  auto io = kj::setupAsyncIo();
  NetworkFaults faults;
  Pipe pipe(faults, io);
  char buffer[8] = {};

  pipe.a->write("hello", 5).wait(io.waitScope);
  CHECK(pipe.b->read(buffer, 5, 5).wait(io.waitScope) == 5);
  CHECK(std::string(buffer, 5) == "hello");

  faults.Cut("a", "b", /*both_ways=*/false);
  CHECK(faults.LinkOf("a", "b").cut);
  CHECK_FALSE(faults.LinkOf("b", "a").cut);  // One direction only.
  auto write = kj::evalNow([&] { return pipe.a->write("x", 1); });
  CHECK_THROWS(write.wait(io.waitScope));
  // Reading travels b -> a, which is open.
  pipe.b->write("ok", 2).wait(io.waitScope);
  CHECK(pipe.a->read(buffer, 2, 2).wait(io.waitScope) == 2);

  faults.Drop("a", "b");  // Both ways.
  auto read = pipe.a->read(buffer, 1, 1);
  pipe.b->write("y", 1).wait(io.waitScope);
  CHECK_FALSE(CompletesSoon(io, read));  // The byte vanished into the black hole.

  faults.Delay("a", "b", std::chrono::milliseconds(20));
  pipe.a->write("late", 4).wait(io.waitScope);
  CHECK(pipe.b->read(buffer, 4, 4).wait(io.waitScope) == 4);
  CHECK(std::string(buffer, 4) == "late");

  faults.HealAll();
  CHECK_FALSE(faults.LinkOf("a", "b").cut);
  pipe.a->write("back", 4).wait(io.waitScope);
  CHECK(pipe.b->read(buffer, 4, 4).wait(io.waitScope) == 4);
  CHECK(std::string(buffer, 4) == "back");
}

TEST_CASE("isolating a node cuts its links with every peer, both ways, and nothing else") {
  NetworkFaults faults;
  faults.Isolate("p", {"p", "r1", "r2"});
  CHECK(faults.LinkOf("p", "r1").cut);
  CHECK(faults.LinkOf("r2", "p").cut);
  CHECK_FALSE(faults.LinkOf("r1", "r2").cut);
  CHECK_FALSE(faults.LinkOf("client", "p").cut);
  faults.Heal("p", "r1");
  CHECK_FALSE(faults.LinkOf("r1", "p").cut);
  CHECK(faults.LinkOf("p", "r2").cut);
}

}  // namespace
}  // namespace scrollback
