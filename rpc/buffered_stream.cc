#include "scrollback/rpc/buffered_stream.h"

#include <kj/debug.h>
#include <kj/vector.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <cstring>
#include <utility>

namespace scrollback {
namespace {

class BufferedStreamImpl final : public BufferedStream {
 public:
  BufferedStreamImpl(kj::Own<kj::AsyncIoStream> inner, const BufferedStreamOptions& options)
      : inner_(kj::mv(inner)),
        options_(options),
        read_buffer_(kj::heapArray<kj::byte>(kj::max(options.read_buffer_bytes, size_t{64}))) {}

  // ---- reading -------------------------------------------------------------------------------

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override {
    auto* out = static_cast<kj::byte*>(buffer);
    size_t copied = TakeBuffered(out, max_bytes);
    if (copied >= min_bytes) return copied;
    return ReadMore(out, copied, min_bytes, max_bytes);
  }

  kj::Maybe<uint64_t> tryGetLength() override { return nullptr; }
  void abortRead() override { inner_->abortRead(); }

  // ---- writing -------------------------------------------------------------------------------

  kj::Promise<void> write(const void* buffer, size_t size) override {
    kj::ArrayPtr<const kj::byte> piece(static_cast<const kj::byte*>(buffer), size);
    return write(kj::arrayPtr(&piece, 1));
  }

  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    KJ_IF_MAYBE (failure, failure_) {
      return kj::cp(*failure);
    }
    KJ_REQUIRE(!write_shut_down_, "write() after shutdownWrite()");
    for (auto piece : pieces) pending_.addAll(piece);
    if (pending_.empty()) return kj::READY_NOW;
    if (!flush_scheduled_) {
      flush_scheduled_ = true;
      writing_ = writing_.then([this] { return kj::evalLast([this] { return Flush(); }); })
                     .eagerlyEvaluate([this](kj::Exception&& e) { Fail(kj::mv(e)); });
    }
    if (pending_.size() <= options_.max_pending_bytes) return kj::READY_NOW;
    auto waiter = kj::newPromiseAndFulfiller<void>();
    pending_waiters_.add(kj::mv(waiter.fulfiller));
    return kj::mv(waiter.promise);
  }

  kj::Promise<void> whenWriteDisconnected() override { return inner_->whenWriteDisconnected(); }

  void shutdownWrite() override {
    write_shut_down_ = true;
    // Queued behind any scheduled flush, so every byte written before reaches the peer first.
    writing_ = writing_.then([this] { inner_->shutdownWrite(); })
                   .eagerlyEvaluate([this](kj::Exception&& e) { Fail(kj::mv(e)); });
  }

  kj::Promise<void> whenFlushed() override {
    KJ_IF_MAYBE (failure, failure_) {
      return kj::cp(*failure);
    }
    auto flushed = kj::newPromiseAndFulfiller<void>();
    // Queued behind every flush and shutdown scheduled so far. If the chain fails first, the
    // fulfiller is dropped and the promise rejects.
    writing_ = writing_
                   .then([this, fulfiller = kj::mv(flushed.fulfiller)]() mutable {
                     KJ_IF_MAYBE (failure, failure_) {
                       fulfiller->reject(kj::cp(*failure));
                     } else {
                       fulfiller->fulfill();
                     }
                   })
                   .eagerlyEvaluate([this](kj::Exception&& e) { Fail(kj::mv(e)); });
    return kj::mv(flushed.promise);
  }

  bool hasUnsent() const override { return !pending_.empty() || !in_flight_.empty(); }

  // ---- the socket itself ---------------------------------------------------------------------

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
  // Moves up to `max_bytes` buffered bytes to `out`; returns how many.
  size_t TakeBuffered(kj::byte* out, size_t max_bytes) {
    size_t n = kj::min(max_bytes, read_end_ - read_begin_);
    if (n > 0) {
      std::memcpy(out, read_buffer_.begin() + read_begin_, n);
      read_begin_ += n;
    }
    return n;
  }

  // REQUIRES: the read buffer is empty and copied < min_bytes.
  kj::Promise<size_t> ReadMore(kj::byte* out, size_t copied, size_t min_bytes, size_t max_bytes) {
    const size_t wanted = max_bytes - copied;
    if (wanted >= read_buffer_.size()) {
      // As large as the buffer: straight into the caller's memory, no copy.
      return inner_->tryRead(out + copied, min_bytes - copied, wanted).then([copied](size_t n) {
        return copied + n;
      });
    }
    return inner_->tryRead(read_buffer_.begin(), 1, read_buffer_.size())
        .then([this, out, copied, min_bytes, max_bytes](size_t n) -> kj::Promise<size_t> {
          if (n == 0) return copied;  // End of stream: a short read, as tryRead() allows.
          read_begin_ = 0;
          read_end_ = n;
          size_t total = copied + TakeBuffered(out + copied, max_bytes - copied);
          if (total >= min_bytes) return total;
          return ReadMore(out, total, min_bytes, max_bytes);
        });
  }

  // Hands every pending byte to the socket in one write. Runs on the `writing_` chain, so at
  // most one socket write is in flight and `in_flight_` is free when it starts.
  kj::Promise<void> Flush() {
    flush_scheduled_ = false;
    KJ_IF_MAYBE (failure, failure_) {
      return kj::cp(*failure);
    }
    std::swap(pending_, in_flight_);
    std::swap(pending_waiters_, in_flight_waiters_);
    return inner_->write(in_flight_.begin(), in_flight_.size()).then([this] {
      for (auto& waiter : in_flight_waiters_) waiter->fulfill();
      in_flight_waiters_.clear();
      // Keep the buffer for the next turn unless one large message grew it far past the norm.
      if (in_flight_.capacity() > 4 * options_.max_pending_bytes) {
        in_flight_ = kj::Vector<kj::byte>();
      } else {
        in_flight_.clear();
      }
    });
  }

  void Fail(kj::Exception&& e) {
    for (auto& waiter : in_flight_waiters_) waiter->reject(kj::cp(e));
    for (auto& waiter : pending_waiters_) waiter->reject(kj::cp(e));
    in_flight_waiters_.clear();
    pending_waiters_.clear();
    if (failure_ == nullptr) failure_ = kj::mv(e);
  }

  kj::Own<kj::AsyncIoStream> inner_;
  const BufferedStreamOptions options_;

  kj::Array<kj::byte> read_buffer_;
  size_t read_begin_ = 0;  // Unread bytes are read_buffer_[read_begin_, read_end_).
  size_t read_end_ = 0;

  kj::Vector<kj::byte> pending_;    // Written, not yet handed to the socket.
  kj::Vector<kj::byte> in_flight_;  // Being written to the socket.
  kj::Vector<kj::Own<kj::PromiseFulfiller<void>>> pending_waiters_;
  kj::Vector<kj::Own<kj::PromiseFulfiller<void>>> in_flight_waiters_;
  bool flush_scheduled_ = false;
  bool write_shut_down_ = false;
  kj::Maybe<kj::Exception> failure_;
  // Socket writes and the shutdown, in order. Declared last: destroyed first, before the
  // buffers and the stream it uses.
  kj::Promise<void> writing_ = kj::READY_NOW;
};

}  // namespace

kj::Own<BufferedStream> NewBufferedStream(kj::Own<kj::AsyncIoStream> inner,
                                          const BufferedStreamOptions& options) {
  if (inner->getFd() != nullptr) {
    // Not every fd is a socket (pipes in tests): options that do not apply are skipped.
    KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] {
                   int family = 0;
                   kj::uint length = sizeof(family);
                   inner->getsockopt(SOL_SOCKET, SO_DOMAIN, &family, &length);
                   if (family == AF_INET || family == AF_INET6) {
                     int one = 1;
                     inner->setsockopt(IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                   }
                 })) {
      (void)e;
    }
  }
  return kj::heap<BufferedStreamImpl>(kj::mv(inner), options);
}

}  // namespace scrollback
