// Graceful stop for Scrollback's processes: SIGINT and SIGTERM are blocked in every thread and
// received synchronously by the main thread, which then shuts down in order.
#pragma once

#include <signal.h>

#include <cstring>
#include <string>

namespace scrollback {

class StopSignals {
 public:
  // Construct first thing in main(), before any thread starts: threads inherit the mask.
  StopSignals() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  }
  // Blocks until SIGINT or SIGTERM arrives; returns its description ("Terminated").
  std::string Wait() {
    int signal_number = 0;
    sigwait(&set_, &signal_number);
    return strsignal(signal_number);
  }

 private:
  sigset_t set_;
};

}  // namespace scrollback
