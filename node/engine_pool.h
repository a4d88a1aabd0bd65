// EnginePool: the threads that run engine calls off a node's event loops. Private to node/.
#pragma once

#include <kj/function.h>
#include <pthread.h>

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace scrollback {

// A bounded pool of threads that run engine calls off the event loops, so that a slow call (an
// fsync, a cold read) delays only its own caller. Tasks beyond `max_queued` are refused, and the
// caller answers `overloaded` (backpressure instead of unbounded memory).
class EnginePool {
 public:
  EnginePool(int threads, size_t max_queued) : max_queued_(max_queued) {
    for (int i = 0; i < threads; ++i) {
      threads_.emplace_back([this] {
        pthread_setname_np(pthread_self(), "sb-engine");
        Work();
      });
    }
  }
  ~EnginePool() { Shutdown(); }

  // Refuses new tasks, runs what is queued, and joins the threads. Idempotent. REQUIRES: not
  // called from a pool thread. The node calls it when it stops, so that no pool thread is left
  // holding the last reference to what owns the pool.
  void Shutdown() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

  // False when the queue is full (the task is dropped unrun).
  bool Submit(kj::Function<void()> task) {
    {
      std::lock_guard lock(mu_);
      if (queue_.size() >= max_queued_ || stopping_) return false;
      queue_.push_back(kj::mv(task));
    }
    cv_.notify_one();
    return true;
  }

 private:
  void Work() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // Stopping, and everything queued has run.
      {
        kj::Function<void()> task = kj::mv(queue_.front());
        queue_.pop_front();
        lock.unlock();
        task();
      }  // The task (and what it captured) is destroyed before the lock is taken again.
      lock.lock();
    }
  }

  const size_t max_queued_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<kj::Function<void()>> queue_;  // GUARDED_BY(mu_)
  bool stopping_ = false;                   // GUARDED_BY(mu_)
  std::vector<std::thread> threads_;
};

}  // namespace scrollback
