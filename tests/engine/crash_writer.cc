// Test helper: appends messages to a shard as fast as it can and reports every acknowledged
// send on stdout as "<conv_id> <seq>\n" (one write(2) per line, so lines never interleave).
// The durability test kills it with SIGKILL at a random moment and checks that every reported
// message survived.
//
// Usage: crash_writer <shard path> <threads>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "scrollback/engine/shard_store.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: crash_writer <shard path> <threads>\n");
    return 2;
  }
  const int threads = std::atoi(argv[2]);
  auto store = scrollback::ShardStore::Open(scrollback::ShardOptions{}, argv[1]);
  if (!store.ok()) {
    std::fprintf(stderr, "open: %s\n", store.status().ToString().c_str());
    return 1;
  }
  for (int t = 1; t <= threads; ++t) {
    auto created = (*store)->CreateConversation({static_cast<uint64_t>(t), 1, {2, 3}, "crash"});
    if (!created.ok() && created.status().code() != scrollback::ErrorCode::kAlreadyExists) {
      std::fprintf(stderr, "create: %s\n", created.status().ToString().c_str());
      return 1;
    }
  }
  std::vector<std::thread> workers;
  for (int t = 1; t <= threads; ++t) {
    workers.emplace_back([&store, t] {
      for (uint64_t i = 1;; ++i) {
        std::string body = "conv " + std::to_string(t) + " message " + std::to_string(i);
        auto sent =
            (*store)->SendMessage({static_cast<uint64_t>(t), 1, "c" + std::to_string(i), body});
        if (!sent.ok()) {
          std::fprintf(stderr, "send: %s\n", sent.status().ToString().c_str());
          std::_Exit(1);
        }
        std::string line = std::to_string(t) + " " + std::to_string(sent->seq) + "\n";
        if (write(STDOUT_FILENO, line.data(), line.size()) < 0) std::_Exit(1);
      }
    });
  }
  for (auto& w : workers) w.join();
  return 0;
}
