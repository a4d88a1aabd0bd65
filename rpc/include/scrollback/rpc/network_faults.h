// NetworkFaults: the fault seam between named nodes (tests and chaos runs; production passes
// none). Every Scrollback connection made by a smart client or a replica follower can be
// wrapped here, keyed by (from node, to node); a test then cuts, drops or delays the traffic of
// one link, in one direction or both, and heals it.
//
//   cut    connects fail, and every read or write on a live connection of the link fails
//          (DISCONNECTED): the peer looks dead.
//   drop   bytes vanish: reads and writes never complete, so calls hang until their own
//          timeouts (a black hole, the worst partition to detect).
//   delay  every read and write of the link waits this long first.
//
// A link's mode is read at every operation, so changing it affects live connections at once.
// Thread-safe; a wrapped stream belongs to its event loop like any KJ stream.
#pragma once

#include <kj/async-io.h>
#include <kj/timer.h>

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace scrollback {

class NetworkFaults {
 public:
  struct Link {
    bool cut = false;
    bool drop = false;
    std::chrono::milliseconds delay{0};
  };

  // Traffic from `from` to `to` (and, with `both_ways`, back).
  void Cut(const std::string& from, const std::string& to, bool both_ways = true);
  void Drop(const std::string& from, const std::string& to, bool both_ways = true);
  void Delay(const std::string& from, const std::string& to, std::chrono::milliseconds delay,
             bool both_ways = true);
  void Heal(const std::string& from, const std::string& to, bool both_ways = true);
  // Cuts every link between `node` and the others named in `peers`.
  void Isolate(const std::string& node, const std::vector<std::string>& peers);
  void HealAll();

  Link LinkOf(const std::string& from, const std::string& to) const;

  // A connected stream from `from` to `to`, subject to the link's faults. The stream a
  // connect of a cut link returns fails on first use (the connection looks refused).
  kj::Own<kj::AsyncIoStream> Wrap(kj::Own<kj::AsyncIoStream> stream, std::string from,
                                  std::string to, kj::Timer& timer);

 private:
  void Set(const std::string& from, const std::string& to, bool both_ways, Link link);

  mutable std::mutex mu_;
  std::map<std::pair<std::string, std::string>, Link> links_;  // GUARDED_BY(mu_)
};

}  // namespace scrollback
