#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

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

// One acknowledgement reported by crash_writer (see its file comment).
struct Ack {
  uint64_t conv = 0;
  uint64_t seq = 0;
  std::string client_msg_id;
  bool duplicate = false;
};

// The round in which crash_writer first sent `client_msg_id` ("r<round>-<n>"), or -1.
int RoundOf(const std::string& client_msg_id) {
  int round = -1;
  return std::sscanf(client_msg_id.c_str(), "r%d-", &round) == 1 ? round : -1;
}

// Runs crash_writer as round `round` on `path`, lets it write for a while, kills it with SIGKILL
// and returns the acknowledgements it reported, in the order reported.
std::vector<Ack> RunAndKillWriter(const std::string& path, int threads, int round,
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
    std::string r = std::to_string(round);
    execl(SCROLLBACK_CRASH_WRITER, "crash_writer", path.c_str(), n.c_str(), r.c_str(), nullptr);
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
  // Anything else means the writer stopped on its own (its reason is on stderr).
  INFO("crash_writer wait status " << status);
  CHECK(WIFSIGNALED(status));

  std::vector<Ack> acks;
  std::istringstream lines(reported);
  for (std::string line; std::getline(lines, line);) {
    INFO("reported line: " << line);
    std::istringstream fields(line);
    Ack ack;
    std::string kind;
    fields >> ack.conv >> ack.seq >> ack.client_msg_id >> kind;
    REQUIRE_FALSE(fields.fail());
    REQUIRE((kind == "new" || kind == "dup"));
    ack.duplicate = kind == "dup";
    acks.push_back(std::move(ack));
  }
  return acks;
}

TEST_CASE("a writer killed with SIGKILL loses no acknowledged message") {
  TempDir dir;
  const std::string path = dir.Sub("crash");
  constexpr int kThreads = 4;
  constexpr int kRounds = 3;
  // conv -> client_msg_id -> seq of every send acknowledged in any round so far.
  std::map<uint64_t, std::map<std::string, uint64_t>> acked;
  for (int round = 0; round < kRounds; ++round) {
    INFO("round " << round);
    auto acks = RunAndKillWriter(path, kThreads, round, std::chrono::milliseconds(700));
    std::map<uint64_t, int> new_sends;  // conv -> sends first made this round and acknowledged.
    for (const Ack& ack : acks) {
      INFO("conv " << ack.conv << " seq " << ack.seq << " " << ack.client_msg_id
                   << (ack.duplicate ? " dup" : " new"));
      const int sent_in = RoundOf(ack.client_msg_id);
      REQUIRE(sent_in >= 0);
      REQUIRE(sent_in <= round);
      auto [earlier, first_ack] = acked[ack.conv].emplace(ack.client_msg_id, ack.seq);
      if (sent_in == round) {
        // A client id of this round: never sent before, so written now, acknowledged once.
        CHECK(first_ack);
        CHECK_FALSE(ack.duplicate);
        ++new_sends[ack.conv];
      } else if (!first_ack) {
        // A retry, after a restart, of a send acknowledged in an earlier round: recognised as
        // that send, with its seq. (A retry of a send never acknowledged may be either.)
        CHECK(ack.duplicate);
        CHECK(ack.seq == earlier->second);
      }
    }
    REQUIRE(new_sends.size() == kThreads);  // Every writer thread made progress.

    auto store = ShardStore::Open(ShardOptions{}, path);
    REQUIRE(store.ok());
    for (const auto& [conv, acked_ids] : acked) {
      INFO("conv " << conv << ", new sends acknowledged this round: " << new_sends[conv]);
      auto conv_state = (*store)->GetConversation(conv);
      REQUIRE(conv_state.ok());
      std::map<std::string, uint64_t> stored;  // client_msg_id -> seq, from the history.
      uint64_t cursor = 0;
      uint64_t seen = 0;
      for (;;) {
        auto page =
            (*store)->ReadHistory({conv, Direction::kOldestFirst, cursor, std::nullopt, 200});
        REQUIRE(page.ok());
        for (auto& m : page->messages) {
          ++seen;
          INFO("seq " << m.seq << " " << m.client_msg_id);
          REQUIRE(m.seq == seen);  // Dense: no hole left by any crash.
          REQUIRE(m.body == "conv " + std::to_string(conv) + " message " + m.client_msg_id);
          REQUIRE(stored.emplace(m.client_msg_id, m.seq).second);  // No send stored twice.
        }
        if (!page->has_more) break;
        cursor = page->next_cursor_seq;
      }
      CHECK(seen == conv_state->last_seq);
      // Every send acknowledged in this round or an earlier one is there, at its seq.
      for (const auto& [client_msg_id, seq] : acked_ids) {
        INFO("acknowledged " << client_msg_id << " at seq " << seq);
        auto found = stored.find(client_msg_id);
        REQUIRE(found != stored.end());
        CHECK(found->second == seq);
      }
      // The rest were in flight at a kill: at most one per conversation per round so far.
      CHECK(stored.size() - acked_ids.size() <= static_cast<size_t>(round + 1));
    }
  }
}

// A FileSystem that counts what RocksDB does to the shard's WAL files ("<number>.log"; the
// info log is "LOG") and passes every call on to the default FileSystem. RocksDB 7.8 creates a
// WAL with NewWritableFile (ReuseWritableFile when recycle_log_file_num > 0, which the engine
// does not set), writes each write group's record with FSWritableFile::Append when it flushes
// the record to the file, and syncs it for WriteOptions::sync with FSWritableFile::Sync (Fsync
// when DBOptions::use_fsync).
class WalCountingFileSystem final : public rocksdb::FileSystemWrapper {
 public:
  WalCountingFileSystem() : FileSystemWrapper(rocksdb::FileSystem::Default()) {}

  const char* Name() const override { return "WalCountingFileSystem"; }

  uint64_t appends() const { return counts_->appends.load(); }
  uint64_t syncs() const { return counts_->syncs.load(); }

  rocksdb::IOStatus NewWritableFile(const std::string& fname, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override {
    return Wrap(fname, target()->NewWritableFile(fname, options, result, dbg), result);
  }
  rocksdb::IOStatus ReopenWritableFile(const std::string& fname,
                                       const rocksdb::FileOptions& options,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* dbg) override {
    return Wrap(fname, target()->ReopenWritableFile(fname, options, result, dbg), result);
  }
  rocksdb::IOStatus ReuseWritableFile(const std::string& fname, const std::string& old_fname,
                                      const rocksdb::FileOptions& options,
                                      std::unique_ptr<rocksdb::FSWritableFile>* result,
                                      rocksdb::IODebugContext* dbg) override {
    return Wrap(fname, target()->ReuseWritableFile(fname, old_fname, options, result, dbg), result);
  }

 private:
  struct Counts {
    std::atomic<uint64_t> appends{0};
    std::atomic<uint64_t> syncs{0};  // Sync and Fsync calls.
  };

  class CountingFile final : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    CountingFile(std::unique_ptr<rocksdb::FSWritableFile> file, std::shared_ptr<Counts> counts)
        : FSWritableFileOwnerWrapper(std::move(file)), counts_(std::move(counts)) {}

    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override {
      ++counts_->appends;
      return FSWritableFileOwnerWrapper::Append(data, options, dbg);
    }
    // With checksum handoff for WAL files (not set by the engine) RocksDB calls this one.
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                             const rocksdb::DataVerificationInfo& verification_info,
                             rocksdb::IODebugContext* dbg) override {
      ++counts_->appends;
      return FSWritableFileOwnerWrapper::Append(data, options, verification_info, dbg);
    }
    rocksdb::IOStatus Sync(const rocksdb::IOOptions& options,
                           rocksdb::IODebugContext* dbg) override {
      ++counts_->syncs;
      return FSWritableFileOwnerWrapper::Sync(options, dbg);
    }
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options,
                            rocksdb::IODebugContext* dbg) override {
      ++counts_->syncs;
      return FSWritableFileOwnerWrapper::Fsync(options, dbg);
    }

   private:
    const std::shared_ptr<Counts> counts_;
  };

  rocksdb::IOStatus Wrap(const std::string& fname, rocksdb::IOStatus opened,
                         std::unique_ptr<rocksdb::FSWritableFile>* result) {
    if (opened.ok() && fname.ends_with(".log")) {
      *result = std::make_unique<CountingFile>(std::move(*result), counts_);
    }
    return opened;
  }

  const std::shared_ptr<Counts> counts_ = std::make_shared<Counts>();
};

// WAL calls made by RocksDB while `kSends` messages are sent one by one, each waiting for its
// acknowledgement, to a new conversation of `f`'s shard, reopened on a WalCountingFileSystem.
// Only the sends are measured: opening a DB that recovered WALs syncs the new one,
// ShardStore::Open writes the shard's meta row with sync, and closing may sync too; none of
// that is sync_writes.
struct WalCalls {
  uint64_t appends = 0;
  uint64_t syncs = 0;
};
constexpr uint64_t kSends = 20;

WalCalls CountWalCallsOfSends(StoreFixture& f) {
  auto fs = std::make_shared<WalCountingFileSystem>();
  f.options.env = rocksdb::NewCompositeEnv(fs);
  f.Reopen();  // Opens a new WAL, through fs.
  f.Create(10, 1);
  const uint64_t appends_before = fs->appends();
  const uint64_t syncs_before = fs->syncs();
  for (uint64_t i = 0; i < kSends; ++i) {
    CHECK(f.Send(10, 1, std::to_string(i), "counted") == i + 1);
  }
  return {fs->appends() - appends_before, fs->syncs() - syncs_before};
}

TEST_CASE("with sync_writes every acknowledged send has synced the WAL") {
  StoreFixture f;
  f.options.sync_writes = true;
  const WalCalls calls = CountWalCallsOfSends(f);
  // Each send is its own write group (one thread, one write at a time), written to the WAL and
  // synced before SendMessage returned.
  CHECK(calls.appends >= kSends);
  CHECK(calls.syncs >= kSends);

  // The shard reopens on the same env with everything acknowledged.
  f.Reopen();
  CHECK(f.store->GetConversation(10)->last_seq == kSends);
  CHECK(f.store->GetMessage(10, kSends)->body == "counted");
}

TEST_CASE("without sync_writes sends write the WAL but never sync it") {
  StoreFixture f;
  REQUIRE_FALSE(f.options.sync_writes);  // The default.
  const WalCalls calls = CountWalCallsOfSends(f);
  // The WAL was written through the counting file system, so zero syncs is a measurement.
  CHECK(calls.appends >= kSends);
  CHECK(calls.syncs == 0);
}

}  // namespace
}  // namespace scrollback
