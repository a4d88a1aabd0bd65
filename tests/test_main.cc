// Catch2's main, plus a hang reporter: when one test case runs longer than
// SCROLLBACK_TEST_HANG_SECONDS (set per test executable by tests/CMakeLists.txt, a little under
// ctest's timeout; unset: off), it prints the test's name and every thread's stack (through gdb,
// when installed) to stderr once, so that a hang that ctest is about to kill leaves evidence.
// It never fails or stops a test.
#define CATCH_CONFIG_MAIN
#include <sys/prctl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

namespace {

class HangReporter : public Catch::TestEventListenerBase {
 public:
  using TestEventListenerBase::TestEventListenerBase;

  void testRunStarting(const Catch::TestRunInfo&) override {
    const char* seconds = std::getenv("SCROLLBACK_TEST_HANG_SECONDS");
    if (seconds == nullptr || std::atoi(seconds) <= 0) return;
    limit_ = std::chrono::seconds(std::atoi(seconds));
    // gdb runs as a child of this process: allow it to attach to its parent (Yama ptrace_scope).
    prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
    watcher_ = std::thread([this] { Watch(); });
  }
  void testCaseStarting(const Catch::TestCaseInfo& info) override {
    std::lock_guard lock(mu_);
    name_ = info.name;
    started_ = std::chrono::steady_clock::now();
    running_ = true;
    reported_ = false;
  }
  void testCaseEnded(const Catch::TestCaseStats&) override {
    std::lock_guard lock(mu_);
    running_ = false;
  }
  void testRunEnded(const Catch::TestRunStats&) override {
    if (!watcher_.joinable()) return;
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    watcher_.join();
  }

 private:
  void Watch() {
    std::unique_lock lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, std::chrono::seconds(1));
      if (!running_ || reported_ || std::chrono::steady_clock::now() - started_ < limit_) continue;
      reported_ = true;
      const std::string name = name_;
      lock.unlock();
      std::fprintf(stderr, "\n*** test case still running after %lld s: %s\n*** thread stacks:\n",
                   static_cast<long long>(limit_.count()), name.c_str());
      std::fflush(stderr);
      const std::string command = "command -v gdb >/dev/null && gdb -p " +
                                  std::to_string(getpid()) +
                                  " -batch -nx -ex 'thread apply all bt 25' 1>&2 2>/dev/null";
      if (std::system(command.c_str()) != 0) {
        std::fprintf(stderr, "*** (no stacks: gdb is missing or could not attach)\n");
      }
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::thread watcher_;
  std::chrono::seconds limit_{0};
  std::string name_;                               // GUARDED_BY(mu_)
  std::chrono::steady_clock::time_point started_;  // GUARDED_BY(mu_)
  bool running_ = false;                           // GUARDED_BY(mu_)
  bool reported_ = false;                          // GUARDED_BY(mu_)
  bool stop_ = false;                              // GUARDED_BY(mu_)
};

}  // namespace

CATCH_REGISTER_LISTENER(HangReporter)
