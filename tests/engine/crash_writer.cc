// Test helper: appends messages to a shard as fast as it can and reports every acknowledged
// send on stdout as "<conv_id> <seq> <client_msg_id> <new|dup>\n" (one write(2) per line, so
// lines never interleave). The durability test runs it once per round on the same shard, kills
// it with SIGKILL at a random moment and checks that every reported message survived, once.
//
// One thread per conversation 1..<threads>, all as sender 1. New sends use client_msg_id
// "r<round>-<n>" (n = 1, 2, ...), unique across rounds, and body Body(conv, client_msg_id).
// Before sending new messages, a round after the first retries, per conversation, the previous
// round's first send ("r<round-1>-1") and the newest stored message (which may have been in
// flight at the last kill, never acknowledged); the latter must be recognised as a duplicate of
// the stored send, or the writer exits with status 1 instead of being killed.
//
// Usage: crash_writer <shard path> <threads> <round>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "scrollback/engine/shard_store.h"

namespace {

using scrollback::SendMessageResult;
using scrollback::ShardStore;

constexpr uint64_t kSender = 1;

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "crash_writer: %s\n", what.c_str());
  std::_Exit(1);
}

// The body of every message, so the test can tie a stored message to its client_msg_id.
std::string Body(uint64_t conv, const std::string& client_msg_id) {
  return "conv " + std::to_string(conv) + " message " + client_msg_id;
}

// Sends (or retries) `client_msg_id` and reports the acknowledgement on stdout.
SendMessageResult Send(ShardStore& store, uint64_t conv, const std::string& client_msg_id) {
  auto sent = store.SendMessage({conv, kSender, client_msg_id, Body(conv, client_msg_id)});
  if (!sent.ok()) Fail("send " + client_msg_id + ": " + sent.status().ToString());
  std::string line = std::to_string(conv) + " " + std::to_string(sent->seq) + " " + client_msg_id +
                     (sent->duplicate ? " dup\n" : " new\n");
  if (write(STDOUT_FILENO, line.data(), line.size()) < 0) std::_Exit(1);
  return *sent;
}

// Retries sends of earlier rounds (see the file comment).
void RetryEarlierRounds(ShardStore& store, uint64_t conv, int round) {
  if (round == 0) return;
  Send(store, conv, "r" + std::to_string(round - 1) + "-1");
  auto state = store.GetConversation(conv);
  if (!state.ok()) Fail("get conversation: " + state.status().ToString());
  if (state->last_seq == 0) return;
  auto newest = store.GetMessage(conv, state->last_seq);
  if (!newest.ok()) Fail("get message: " + newest.status().ToString());
  SendMessageResult retried = Send(store, conv, newest->client_msg_id);
  if (!retried.duplicate || retried.seq != newest->seq) {
    Fail("retry of stored " + newest->client_msg_id + " (seq " + std::to_string(newest->seq) +
         ") answered seq " + std::to_string(retried.seq) +
         (retried.duplicate ? " as a duplicate" : " as a new message"));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: crash_writer <shard path> <threads> <round>\n");
    return 2;
  }
  const int threads = std::atoi(argv[2]);
  const int round = std::atoi(argv[3]);
  if (threads <= 0 || round < 0) {
    std::fprintf(stderr, "crash_writer: bad <threads> or <round>\n");
    return 2;
  }
  auto store = ShardStore::Open(scrollback::ShardOptions{}, argv[1]);
  if (!store.ok()) {
    std::fprintf(stderr, "open: %s\n", store.status().ToString().c_str());
    return 1;
  }
  for (int t = 1; t <= threads; ++t) {
    auto created =
        (*store)->CreateConversation({static_cast<uint64_t>(t), kSender, {2, 3}, "crash"});
    if (!created.ok() && created.status().code() != scrollback::ErrorCode::kAlreadyExists) {
      std::fprintf(stderr, "create: %s\n", created.status().ToString().c_str());
      return 1;
    }
  }
  std::vector<std::thread> workers;
  for (int t = 1; t <= threads; ++t) {
    workers.emplace_back([&store, t, round] {
      const auto conv = static_cast<uint64_t>(t);
      RetryEarlierRounds(**store, conv, round);
      const std::string id_prefix = "r" + std::to_string(round) + "-";
      for (uint64_t n = 1;; ++n) Send(**store, conv, id_prefix + std::to_string(n));
    });
  }
  for (auto& w : workers) w.join();
  return 0;
}
