#include "scrollback/rpc/network_faults.h"

#include <kj/debug.h>

#include <memory>
#include <vector>

namespace scrollback {
namespace {

// Consults the link before every operation of the stream it wraps.
class FaultyStream final : public kj::AsyncIoStream {
 public:
  FaultyStream(kj::Own<kj::AsyncIoStream> inner, const NetworkFaults& faults, std::string from,
               std::string to, kj::Timer& timer)
      : inner_(kj::mv(inner)),
        faults_(faults),
        from_(std::move(from)),
        to_(std::move(to)),
        timer_(timer) {}

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override {
    // What arrives travels from `to` to `from`.
    return Gate(to_, from_).then([this, buffer, min_bytes, max_bytes] {
      return inner_->tryRead(buffer, min_bytes, max_bytes);
    });
  }
  kj::Promise<void> write(const void* buffer, size_t size) override {
    return Gate(from_, to_).then([this, buffer, size] { return inner_->write(buffer, size); });
  }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    return Gate(from_, to_).then([this, pieces] { return inner_->write(pieces); });
  }
  kj::Promise<void> whenWriteDisconnected() override { return inner_->whenWriteDisconnected(); }
  void shutdownWrite() override { inner_->shutdownWrite(); }
  void abortRead() override { inner_->abortRead(); }
  void setsockopt(int level, int option, const void* value, kj::uint length) override {
    inner_->setsockopt(level, option, value, length);
  }
  void getsockopt(int level, int option, void* value, kj::uint* length) override {
    inner_->getsockopt(level, option, value, length);
  }
  kj::Maybe<int> getFd() const override { return inner_->getFd(); }

 private:
  kj::Promise<void> Gate(const std::string& from, const std::string& to) {
    const NetworkFaults::Link link = faults_.LinkOf(from, to);
    if (link.cut) {
      return KJ_EXCEPTION(DISCONNECTED, "link cut (fault injected)", from, to);
    }
    if (link.drop) return kj::NEVER_DONE;
    if (link.delay.count() > 0) return timer_.afterDelay(link.delay.count() * kj::MILLISECONDS);
    return kj::READY_NOW;
  }

  kj::Own<kj::AsyncIoStream> inner_;
  const NetworkFaults& faults_;
  const std::string from_;
  const std::string to_;
  kj::Timer& timer_;
};

}  // namespace

void NetworkFaults::Set(const std::string& from, const std::string& to, bool both_ways, Link link) {
  std::lock_guard lock(mu_);
  links_[{from, to}] = link;
  if (both_ways) links_[{to, from}] = link;
}

void NetworkFaults::Cut(const std::string& from, const std::string& to, bool both_ways) {
  Set(from, to, both_ways, Link{true, false, {}});
}
void NetworkFaults::Drop(const std::string& from, const std::string& to, bool both_ways) {
  Set(from, to, both_ways, Link{false, true, {}});
}
void NetworkFaults::Delay(const std::string& from, const std::string& to,
                          std::chrono::milliseconds delay, bool both_ways) {
  Set(from, to, both_ways, Link{false, false, delay});
}
void NetworkFaults::Heal(const std::string& from, const std::string& to, bool both_ways) {
  std::lock_guard lock(mu_);
  links_.erase({from, to});
  if (both_ways) links_.erase({to, from});
}
void NetworkFaults::Isolate(const std::string& node, const std::vector<std::string>& peers) {
  for (const std::string& peer : peers) {
    if (peer != node) Cut(node, peer);
  }
}
void NetworkFaults::HealAll() {
  std::lock_guard lock(mu_);
  links_.clear();
}

NetworkFaults::Link NetworkFaults::LinkOf(const std::string& from, const std::string& to) const {
  std::lock_guard lock(mu_);
  auto it = links_.find({from, to});
  return it == links_.end() ? Link{} : it->second;
}

kj::Own<kj::AsyncIoStream> NetworkFaults::Wrap(kj::Own<kj::AsyncIoStream> stream, std::string from,
                                               std::string to, kj::Timer& timer) {
  return kj::heap<FaultyStream>(kj::mv(stream), *this, std::move(from), std::move(to), timer);
}

}  // namespace scrollback
