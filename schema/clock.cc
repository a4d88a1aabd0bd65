#include "scrollback/schema/clock.h"

#include <chrono>

namespace scrollback {
namespace {

class WallClock final : public Clock {
 public:
  int64_t NowMs() override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

}  // namespace

std::shared_ptr<Clock> SystemClock() { return std::make_shared<WallClock>(); }

}  // namespace scrollback
