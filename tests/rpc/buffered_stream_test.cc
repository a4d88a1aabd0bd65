#include "scrollback/rpc/buffered_stream.h"

#include <kj/async-io.h>
#include <kj/vector.h>

#include <catch2/catch.hpp>
#include <string>

namespace scrollback {
namespace {

std::string ReadAll(kj::AsyncInputStream& in, kj::WaitScope& wait_scope) {
  std::string out;
  char buffer[4096];
  for (;;) {
    size_t n = in.tryRead(buffer, 1, sizeof(buffer)).wait(wait_scope);
    if (n == 0) return out;
    out.append(buffer, n);
  }
}

kj::Promise<void> Write(kj::AsyncOutputStream& out, const std::string& bytes) {
  return out.write(bytes.data(), bytes.size());
}

TEST_CASE("bytes written without waiting arrive in order, and shutdown comes after them") {
  auto io = kj::setupAsyncIo();
  auto pipe = io.provider->newTwoWayPipe();  // A socketpair.
  auto writer = NewBufferedStream(kj::mv(pipe.ends[0]));
  std::string expected;
  kj::Vector<kj::Promise<void>> writes;
  for (int i = 0; i < 2000; ++i) {
    std::string piece = "message-" + std::to_string(i) + ";";
    expected += piece;
    writes.add(Write(*writer, piece));
  }
  std::string big(300 << 10, 'b');  // Larger than every buffer.
  expected += big;
  writes.add(Write(*writer, big));
  writer->shutdownWrite();
  auto all_written = kj::joinPromises(writes.releaseAsArray());
  CHECK(ReadAll(*pipe.ends[1], io.waitScope) == expected);
  all_written.wait(io.waitScope);
}

TEST_CASE("reads of any size are served from the buffer or straight from the socket") {
  auto io = kj::setupAsyncIo();
  auto pipe = io.provider->newTwoWayPipe();
  BufferedStreamOptions options;
  options.read_buffer_bytes = 1024;
  auto reader = NewBufferedStream(kj::mv(pipe.ends[1]), options);
  std::string sent;
  for (int i = 0; i < 5000; ++i) sent += static_cast<char>('a' + i % 26);
  Write(*pipe.ends[0], sent).wait(io.waitScope);
  pipe.ends[0]->shutdownWrite();

  std::string got(sent.size() + 10, '\0');
  size_t at = 0;
  // Small exact reads (as Cap'n Proto reads a segment table), then one larger than the buffer.
  for (int i = 0; i < 10; ++i) {
    CHECK(reader->tryRead(&got[at], 8, 8).wait(io.waitScope) == 8);
    at += 8;
  }
  CHECK(reader->tryRead(&got[at], 3000, 3000).wait(io.waitScope) == 3000);
  at += 3000;
  // The rest, asking for more than there is: a short read at the end of the stream.
  size_t rest =
      reader->tryRead(&got[at], sent.size() - at + 10, sent.size() - at + 10).wait(io.waitScope);
  CHECK(rest == sent.size() - at);
  got.resize(at + rest);
  CHECK(got == sent);
  char byte;
  CHECK(reader->tryRead(&byte, 1, 1).wait(io.waitScope) == 0);
}

TEST_CASE("past max_pending_bytes a write waits until the peer takes the bytes") {
  auto io = kj::setupAsyncIo();
  auto pipe = kj::newTwoWayPipe();  // In memory, unbuffered: a write completes when read.
  BufferedStreamOptions options;
  options.max_pending_bytes = 1024;
  auto writer = NewBufferedStream(kj::mv(pipe.ends[0]), options);

  auto small = Write(*writer, std::string(100, 's'));
  CHECK(small.poll(io.waitScope));  // Under the limit: done at once.
  auto large = Write(*writer, std::string(2000, 'l'));
  CHECK_FALSE(large.poll(io.waitScope));  // Over it: waits for the peer.

  std::string got(2100, '\0');
  pipe.ends[1]->read(&got[0], got.size()).wait(io.waitScope);
  CHECK(got == std::string(100, 's') + std::string(2000, 'l'));
  CHECK(large.poll(io.waitScope));
  large.wait(io.waitScope);
}

TEST_CASE("whenFlushed resolves once written bytes and the shutdown reached the socket") {
  auto io = kj::setupAsyncIo();
  auto pipe = io.provider->newTwoWayPipe();
  auto writer = NewBufferedStream(kj::mv(pipe.ends[0]));
  CHECK_FALSE(writer->hasUnsent());
  Write(*writer, "last words").wait(io.waitScope);
  CHECK(writer->hasUnsent());  // Accepted, not yet handed to the kernel.
  writer->shutdownWrite();
  writer->whenFlushed().wait(io.waitScope);
  CHECK_FALSE(writer->hasUnsent());
  writer = nullptr;  // Dropping the stream now loses nothing.
  CHECK(ReadAll(*pipe.ends[1], io.waitScope) == "last words");
}

TEST_CASE("after a failed socket write every later write fails") {
  auto io = kj::setupAsyncIo();
  auto pipe = kj::newTwoWayPipe();
  auto writer = NewBufferedStream(kj::mv(pipe.ends[0]));
  pipe.ends[1] = nullptr;  // The peer goes away.
  auto first = Write(*writer, "lost");
  CHECK(first.poll(io.waitScope));  // Accepted into the buffer...
  first.wait(io.waitScope);
  io.provider->getTimer().afterDelay(1 * kj::MILLISECONDS).wait(io.waitScope);  // ...flushed.
  CHECK_THROWS(Write(*writer, "later").wait(io.waitScope));
  CHECK_THROWS(writer->whenFlushed().wait(io.waitScope));
}

}  // namespace
}  // namespace scrollback
