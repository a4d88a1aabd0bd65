// FrameGuard: bounds what one connection's incoming Cap'n Proto frames may cost the server.
// Private to rpc/.
//
// Cap'n Proto's reader allocates a whole message as soon as it has read the frame's segment
// table, then waits for the bytes. A client that sends tables and then trickles (or stops) can
// make the server hold up to `max_message_bytes` per connection. FrameGuard sits between the
// socket (BufferedStream) and Cap'n Proto, follows the standard stream framing
//
//   uint32 segment count - 1 | uint32 size in words, per segment | padding to 8 bytes | segments
//
// and, per frame:
//  - before Cap'n Proto sees a complete segment table, takes the frame's bytes from a budget
//    shared by every connection of the server (ReceiveBudget); while the budget is spent, the
//    connection waits (backpressure) instead of allocating. The bytes return to the budget once
//    the frame's last byte has been handed on. A frame larger than `max_message_bytes` is not
//    held back: Cap'n Proto refuses it by itself.
//  - fails the connection (DISCONNECTED) when a frame has started and no byte of it arrives for
//    `partial_frame_timeout`, and, if `idle_timeout` is set, when no frame starts for that long.
//    A watchdog per connection checks four times per timeout (so a timeout fires within 1.25x
//    of its value): reads, the hot path, arm no timer.
// Writes pass through untouched.
#pragma once

#include <kj/async-io.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace scrollback {

// Bytes of frames being received, shared by every connection of one server. Thread-safe.
class ReceiveBudget {
 public:
  explicit ReceiveBudget(size_t limit) : limit_(limit) {}
  // Takes `bytes` if they fit under the limit.
  bool TryAcquire(size_t bytes) {
    size_t used = used_.load(std::memory_order_relaxed);
    while (used + bytes <= limit_) {
      if (used_.compare_exchange_weak(used, used + bytes, std::memory_order_relaxed)) {
        return true;
      }
    }
    return false;
  }
  void Release(size_t bytes) { used_.fetch_sub(bytes, std::memory_order_relaxed); }
  size_t used() const { return used_.load(std::memory_order_relaxed); }
  size_t limit() const { return limit_; }

 private:
  const size_t limit_;
  std::atomic<size_t> used_{0};
};

struct FrameGuardCounters {
  std::atomic<uint64_t> budget_waits{0};      // Frames that waited for the budget.
  std::atomic<uint64_t> partial_timeouts{0};  // Connections dropped mid-frame.
  std::atomic<uint64_t> idle_timeouts{0};     // Connections dropped while idle.
};

struct FrameGuardOptions {
  size_t max_message_bytes = 64ull << 20;
  std::chrono::milliseconds partial_frame_timeout = std::chrono::seconds(30);
  std::chrono::milliseconds idle_timeout{0};  // 0: none.
};

// Wraps `inner`. `budget`, `counters` and `timer` must outlive the returned stream.
kj::Own<kj::AsyncIoStream> NewFrameGuard(kj::Own<kj::AsyncIoStream> inner, ReceiveBudget& budget,
                                         FrameGuardCounters& counters, kj::Timer& timer,
                                         const FrameGuardOptions& options);

}  // namespace scrollback
