// BufferedStream: the byte stream under every Scrollback Cap'n Proto connection, built to cut
// the system calls per RPC message.
//
// Cap'n Proto 0.9's two-party transport reads each message with at least two read() calls
// (segment table, then segments) and writes each message with its own writev(). Under
// pipelined load that kernel work is most of a call's CPU. A BufferedStream:
//  - reads: one read() of up to `read_buffer_bytes` fills a buffer that then serves the next
//    messages' tables and segments; a read larger than the buffer goes straight to the caller.
//  - writes: write() appends the bytes to a pending buffer and returns at once; one write per
//    event-loop turn (scheduled with kj::evalLast, which runs when the loop is about to wait for
//    I/O) hands everything written during the turn to the kernel. Past `max_pending_bytes` of
//    unsent bytes, write() returns a promise that resolves once its bytes have been handed to
//    the kernel, so a slow peer pushes back and memory stays bounded.
//  - shutdownWrite() takes effect after every byte written before it.
//
// Contract: bytes reach the peer in write() order. A failed write to the socket fails every
// later write() (and every waiting one) with the same exception; the read side sees the
// disconnect as usual. Single-threaded, like every KJ stream: use it on its event loop only.
#pragma once

#include <kj/async-io.h>

#include <cstddef>

namespace scrollback {

struct BufferedStreamOptions {
  // Default: 64 KiB. Bytes read from the socket at a time.
  size_t read_buffer_bytes = 64 << 10;
  // Default: 1 MiB. Unsent bytes beyond which write() waits for the socket.
  size_t max_pending_bytes = 1 << 20;
};

class BufferedStream : public kj::AsyncIoStream {
 public:
  // Resolves once every byte written so far, and a shutdownWrite() requested so far, has been
  // handed to the kernel; rejects if the socket failed first. Whoever destroys the stream after
  // the other side is done (e.g. a server dropping a closed connection) waits for it, or the
  // last bytes (such as Cap'n Proto's Abort message) would be lost.
  virtual kj::Promise<void> whenFlushed() = 0;
  // True while written bytes have not all been handed to the kernel.
  virtual bool hasUnsent() const = 0;
};

// Wraps `inner` (a connected stream). On a TCP socket, also disables Nagle's algorithm: writes
// are already coalesced per loop turn, and small replies must not wait for the peer's ACK.
kj::Own<BufferedStream> NewBufferedStream(kj::Own<kj::AsyncIoStream> inner,
                                          const BufferedStreamOptions& options = {});

}  // namespace scrollback
