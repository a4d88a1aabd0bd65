// The clock every part reads (the engine for message times, the metadata store for leases).
// Passed in, never global, so tests can control time.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

namespace scrollback {

class Clock {
 public:
  virtual ~Clock() = default;
  // Milliseconds since the Unix epoch. May go backwards (wall clock); callers that need
  // monotonicity enforce it themselves.
  virtual int64_t NowMs() = 0;
};

// The system's wall clock.
std::shared_ptr<Clock> SystemClock();

// A clock that only moves when told. Thread-safe.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t start_ms = 1'700'000'000'000) : now_ms_(start_ms) {}
  int64_t NowMs() override { return now_ms_.load(std::memory_order_relaxed); }
  void Set(int64_t ms) { now_ms_.store(ms, std::memory_order_relaxed); }
  void Advance(int64_t ms) { now_ms_.fetch_add(ms, std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> now_ms_;
};

}  // namespace scrollback
