#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <sstream>

#include "test_util.h"

namespace scrollback {
namespace {

using testing::StoreFixture;
using testing::TempDir;

TEST_CASE("everything written survives close and reopen, and seqs continue") {
  StoreFixture f;
  f.Create(10, 1, {2}, "kept");
  for (int i = 0; i < 100; ++i) f.Send(10, 1, std::to_string(i), "body " + std::to_string(i));
  REQUIRE(f.store->DeleteMessage(10, 50, 1).ok());
  auto outbox = f.store->ReadOutbox("", 1000);
  REQUIRE(outbox.ok());
  for (auto& r : outbox->records) REQUIRE(f.store->ApplyInboxUpdate(r.update).ok());
  REQUIRE(f.store->MarkRead(2, 10, 40).ok());
  REQUIRE(f.store->Flush().ok());
  f.Send(10, 2, "after-flush", "in the WAL only");

  f.Reopen();
  auto conv = f.store->GetConversation(10);
  REQUIRE(conv.ok());
  CHECK(conv->title == "kept");
  CHECK(conv->last_seq == 101);
  CHECK(f.store->GetMessage(10, 101)->body == "in the WAL only");
  CHECK(f.store->GetMessage(10, 50)->deleted);
  CHECK(f.store->GetMessage(10, 7)->body == "body 6");
  auto entry = f.store->GetInboxEntry(2, 10);
  REQUIRE(entry.ok());
  CHECK(entry->read_seq == 40);
  CHECK(entry->unread_count == 60);
  CHECK(f.Send(10, 1, "next", "x") == 102);
  // Retries across a restart are still recognised.
  auto retry = f.store->SendMessage({10, 1, "3", "again"});
  CHECK(retry->duplicate);
  CHECK(retry->seq == 4);
}

// Runs crash_writer on `path`, lets it write for a while, kills it with SIGKILL and returns the
// acknowledged seqs per conversation.
std::map<uint64_t, uint64_t> RunAndKillWriter(const std::string& path, int threads,
                                              std::chrono::milliseconds run_for) {
  int out[2];
  REQUIRE(pipe(out) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    close(out[0]);
    close(out[1]);
    std::string n = std::to_string(threads);
    execl(SCROLLBACK_CRASH_WRITER, "crash_writer", path.c_str(), n.c_str(), nullptr);
    _exit(127);
  }
  close(out[1]);
  // Read acknowledgements until the deadline, then kill mid-write and drain what was reported.
  std::string reported;
  char buf[4096];
  auto deadline = std::chrono::steady_clock::now() + run_for;
  while (std::chrono::steady_clock::now() < deadline) {
    ssize_t n = read(out[0], buf, sizeof(buf));
    if (n <= 0) break;
    reported.append(buf, n);
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  for (ssize_t n; (n = read(out[0], buf, sizeof(buf))) > 0;) reported.append(buf, n);
  close(out[0]);
  CHECK(WIFSIGNALED(status));

  std::map<uint64_t, uint64_t> acked;  // conv -> highest acknowledged seq.
  std::istringstream lines(reported);
  uint64_t conv, seq;
  while (lines >> conv >> seq) acked[conv] = std::max(acked[conv], seq);
  return acked;
}

TEST_CASE("a writer killed with SIGKILL loses no acknowledged message") {
  TempDir dir;
  const std::string path = dir.Sub("crash");
  constexpr int kThreads = 4;
  for (int round = 0; round < 3; ++round) {
    auto acked = RunAndKillWriter(path, kThreads, std::chrono::milliseconds(700));
    REQUIRE(acked.size() == kThreads);
    auto store = ShardStore::Open(ShardOptions{}, path);
    REQUIRE(store.ok());
    for (auto [conv, last_acked] : acked) {
      auto conv_state = (*store)->GetConversation(conv);
      REQUIRE(conv_state.ok());
      // Everything acknowledged is there; a write in flight at the kill may be too.
      CHECK(conv_state->last_seq >= last_acked);
      uint64_t cursor = 0;
      uint64_t seen = 0;
      for (;;) {
        auto page =
            (*store)->ReadHistory({conv, Direction::kOldestFirst, cursor, std::nullopt, 200});
        REQUIRE(page.ok());
        for (auto& m : page->messages) {
          ++seen;
          REQUIRE(m.seq == seen);  // Dense: no hole left by the crash.
          REQUIRE(m.body.find("conv " + std::to_string(conv) + " message ") == 0);
        }
        if (!page->has_more) break;
        cursor = page->next_cursor_seq;
      }
      CHECK(seen == conv_state->last_seq);
      INFO("round " << round << " conv " << conv << " acked " << last_acked);
      CHECK(last_acked > 0);
    }
  }
}

}  // namespace
}  // namespace scrollback

namespace scrollback {
namespace {

TEST_CASE("the fsync mode acknowledges writes that read back after reopen") {
  testing::StoreFixture f;
  f.options.sync_writes = true;
  f.Reopen();
  f.Create(10, 1);
  for (int i = 0; i < 20; ++i) f.Send(10, 1, std::to_string(i), "synced");
  f.Reopen();
  CHECK(f.store->GetConversation(10)->last_seq == 20);
  CHECK(f.store->GetMessage(10, 20)->body == "synced");
}

}  // namespace
}  // namespace scrollback
