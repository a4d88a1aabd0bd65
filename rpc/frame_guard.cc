#include "frame_guard.h"

#include <kj/debug.h>

#include <string>

namespace scrollback {
namespace {

// Cap'n Proto refuses more segments than this; such a frame is left to it (never held back).
constexpr uint32_t kMaxSegments = 512;
constexpr auto kBudgetPoll = 5 * kj::MILLISECONDS;

class FrameGuard final : public kj::AsyncIoStream {
 public:
  FrameGuard(kj::Own<kj::AsyncIoStream> inner, ReceiveBudget& budget, FrameGuardCounters& counters,
             kj::Timer& timer, const FrameGuardOptions& options)
      : inner_(kj::mv(inner)),
        budget_(budget),
        counters_(counters),
        timer_(timer),
        options_(options),
        last_progress_(timer.now()),
        watchdog_(Watch().eagerlyEvaluate(nullptr)) {}
  ~FrameGuard() noexcept(false) {
    // What was taken and not given back: the frame in progress, and a completed frame whose
    // release had not been settled, less what was noted but never taken.
    const size_t outstanding = frame_held_ + to_release_ - to_acquire_;
    if (outstanding > 0) budget_.Release(outstanding);
  }

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override {
    if (dropped_) return KJ_EXCEPTION(DISCONNECTED, "the connection was dropped for a timeout");
    // No timer per read (reads are the hot path): a watchdog per connection checks progress.
    return canceler_.wrap(inner_->tryRead(buffer, min_bytes, max_bytes))
        .then([this, buffer](size_t n) -> kj::Promise<size_t> {
          last_progress_ = timer_.now();
          Scan(static_cast<const kj::byte*>(buffer), n);
          return Settle(n);
        });
  }

  kj::Maybe<uint64_t> tryGetLength() override { return nullptr; }
  void abortRead() override { inner_->abortRead(); }

  kj::Promise<void> write(const void* buffer, size_t size) override {
    return inner_->write(buffer, size);
  }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    return inner_->write(pieces);
  }
  kj::Promise<void> whenWriteDisconnected() override { return inner_->whenWriteDisconnected(); }
  void shutdownWrite() override { inner_->shutdownWrite(); }

  void getsockopt(int level, int option, void* value, kj::uint* length) override {
    inner_->getsockopt(level, option, value, length);
  }
  void setsockopt(int level, int option, const void* value, kj::uint length) override {
    inner_->setsockopt(level, option, value, length);
  }
  void getsockname(struct sockaddr* addr, kj::uint* length) override {
    inner_->getsockname(addr, length);
  }
  void getpeername(struct sockaddr* addr, kj::uint* length) override {
    inner_->getpeername(addr, length);
  }
  kj::Maybe<int> getFd() const override { return inner_->getFd(); }

 private:
  enum class Phase { kCount, kTable, kBody, kUnchecked };

  bool InFrame() const { return phase_ != Phase::kCount || word_have_ > 0; }

  // Wakes a few times per timeout; fails the pending read (and so the connection) when a
  // started frame, or with idle_timeout an idle connection, made no progress for that long.
  kj::Promise<void> Watch() {
    const auto partial = options_.partial_frame_timeout.count() * kj::MILLISECONDS;
    const auto idle = options_.idle_timeout.count() * kj::MILLISECONDS;
    auto shortest = partial;
    if (options_.idle_timeout.count() > 0 && idle < shortest) shortest = idle;
    return timer_.afterDelay(shortest / 4).then([this, partial, idle]() -> kj::Promise<void> {
      const auto quiet = timer_.now() - last_progress_;
      // A frame waiting for the budget is not stalled by its peer.
      const bool waiting_for_budget = to_acquire_ > 0;
      if (InFrame() && !waiting_for_budget && quiet >= partial) {
        counters_.partial_timeouts.fetch_add(1, std::memory_order_relaxed);
        Drop();
        canceler_.cancel(KJ_EXCEPTION(DISCONNECTED, "no byte of a started frame in time",
                                      options_.partial_frame_timeout.count()));
        return kj::READY_NOW;
      }
      if (!InFrame() && !waiting_for_budget && options_.idle_timeout.count() > 0 && quiet >= idle) {
        counters_.idle_timeouts.fetch_add(1, std::memory_order_relaxed);
        Drop();
        canceler_.cancel(
            KJ_EXCEPTION(DISCONNECTED, "no frame in time", options_.idle_timeout.count()));
        return kj::READY_NOW;
      }
      return Watch();
    });
  }

  // A timed-out connection gives its budget back at once: its RPC connection is torn down
  // only once its last writes are out (up to a second, longer if its peer stops reading), and
  // the frames waiting for the budget should not wait for that. Nothing is read after it.
  // REQUIRES: not waiting for the budget (to_acquire_ == 0).
  void Drop() {
    dropped_ = true;
    const size_t outstanding = frame_held_ + to_release_;
    if (outstanding > 0) budget_.Release(outstanding);
    frame_held_ = 0;
    to_release_ = 0;
  }

  // Follows the framing over `n` bytes handed on: notes the budget to take (a table completed)
  // and to give back (a frame completed).
  void Scan(const kj::byte* data, size_t n) {
    size_t i = 0;
    while (i < n) {
      switch (phase_) {
        case Phase::kUnchecked:
          return;
        case Phase::kCount:
        case Phase::kTable: {
          // Collect one little-endian uint32 (a count or a size), or skip padding.
          if (phase_ == Phase::kTable && sizes_seen_ == segments_) {  // Padding.
            const size_t skip = std::min(padding_left_, n - i);
            padding_left_ -= skip;
            i += skip;
            if (padding_left_ == 0) StartBody();
            break;
          }
          word_ = word_ | (uint32_t{data[i]} << (8 * word_have_));
          ++i;
          if (++word_have_ < 4) break;
          const uint32_t value = word_;
          word_ = 0;
          word_have_ = 0;
          if (phase_ == Phase::kCount) {
            if (value >= kMaxSegments) {  // Cap'n Proto refuses it; nothing to hold.
              phase_ = Phase::kUnchecked;
              return;
            }
            segments_ = value + 1;
            sizes_seen_ = 0;
            words_ = 0;
            // The table (count + sizes) is padded to a whole word.
            padding_left_ = (4 + 4 * size_t{segments_}) % 8 == 0 ? 0 : 4;
            phase_ = Phase::kTable;
          } else {
            words_ += value;
            ++sizes_seen_;
            if (sizes_seen_ == segments_ && padding_left_ == 0) StartBody();
          }
          break;
        }
        case Phase::kBody: {
          const size_t take = static_cast<size_t>(std::min<uint64_t>(body_left_, n - i));
          body_left_ -= take;
          i += take;
          if (body_left_ == 0) EndFrame();
          break;
        }
      }
    }
  }

  // The segment table is complete: the frame's size is known.
  void StartBody() {
    const uint64_t bytes = words_ * 8;
    // A frame the reader will refuse (too large) is not held back; one that the budget could
    // never hold either (the budget is at least max_message_bytes, so this is only defensive).
    if (bytes <= options_.max_message_bytes && bytes <= budget_.limit()) {
      to_acquire_ += bytes;
      frame_held_ = bytes;
    }
    body_left_ = bytes;
    phase_ = Phase::kBody;
    if (body_left_ == 0) EndFrame();
  }

  void EndFrame() {
    to_release_ += frame_held_;
    frame_held_ = 0;
    phase_ = Phase::kCount;
  }

  // Takes what Scan noted from the budget (waiting while it is spent), gives back what
  // completed, then hands the read on.
  kj::Promise<size_t> Settle(size_t n, bool waited = false) {
    if (dropped_) return KJ_EXCEPTION(DISCONNECTED, "the connection was dropped for a timeout");
    if (to_acquire_ > 0) {
      if (!budget_.TryAcquire(to_acquire_)) {
        if (!waited) counters_.budget_waits.fetch_add(1, std::memory_order_relaxed);
        return timer_.afterDelay(kBudgetPoll).then([this, n] { return Settle(n, true); });
      }
      to_acquire_ = 0;
    }
    if (to_release_ > 0) {
      budget_.Release(to_release_);
      to_release_ = 0;
    }
    return n;
  }

  kj::Own<kj::AsyncIoStream> inner_;
  ReceiveBudget& budget_;
  FrameGuardCounters& counters_;
  kj::Timer& timer_;
  const FrameGuardOptions options_;

  Phase phase_ = Phase::kCount;
  uint32_t word_ = 0;     // The uint32 being collected.
  size_t word_have_ = 0;  // Its bytes so far.
  uint32_t segments_ = 0;
  uint32_t sizes_seen_ = 0;
  uint64_t words_ = 0;  // Of the frame, from its table.
  size_t padding_left_ = 0;
  uint64_t body_left_ = 0;
  size_t frame_held_ = 0;  // Budget taken for the frame in progress.
  size_t to_acquire_ = 0;  // Noted by Scan, settled before the read is handed on.
  size_t to_release_ = 0;
  bool dropped_ = false;         // The watchdog timed the connection out (Drop).
  kj::TimePoint last_progress_;  // When a read last completed (or the connection began).
  kj::Canceler canceler_;        // Wraps the pending read, so the watchdog can fail it.
  kj::Promise<void> watchdog_;   // Last: destroyed first, before what it watches.
};

}  // namespace

kj::Own<kj::AsyncIoStream> NewFrameGuard(kj::Own<kj::AsyncIoStream> inner, ReceiveBudget& budget,
                                         FrameGuardCounters& counters, kj::Timer& timer,
                                         const FrameGuardOptions& options) {
  return kj::heap<FrameGuard>(kj::mv(inner), budget, counters, timer, options);
}

}  // namespace scrollback
