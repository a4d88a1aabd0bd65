// scrollback-bootstrap-bench: how fast a new replica copies a large shard from its primary.
//
// Fills one shard on a storage node with --megabytes of messages (random, incompressible
// bodies), flushes and compacts it, then bootstraps a replica copy over Cap'n Proto on loopback
// (checkpoint on the primary, chunks streamed and checked with XXH64, written to a new
// directory) and reports MB/s. The baseline, in the same run: copying the same checkpoint's
// files with the filesystem (read + write on the same disk, no network, no checksums).
//
//   scrollback-bootstrap-bench [--megabytes 1024] [--mb-per-s 0] [--data-dir DIR]
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include "scrollback/node/storage_node.h"
#include "scrollback/replication/replication.h"

namespace scrollback {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

uint64_t DirectoryBytes(const fs::path& dir) {
  uint64_t total = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) total += entry.file_size();
  }
  return total;
}

int Run(int argc, char** argv) {
  CLI::App app{"scrollback-bootstrap-bench: replica bootstrap throughput of a large shard."};
  uint64_t megabytes = 1024;
  double mb_per_s = 0;
  std::string data_dir;
  app.add_option("--megabytes", megabytes, "Message bytes to load into the shard")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 20));
  app.add_option("--mb-per-s", mb_per_s, "Bootstrap throttle (0: unlimited)");
  app.add_option("--data-dir", data_dir, "Where to keep the shard (default: a temporary dir)");
  CLI11_PARSE(app, argc, argv);
  const bool temporary = data_dir.empty();
  if (temporary) {
    data_dir =
        (fs::temp_directory_path() / ("scrollback-bootstrap-" + std::to_string(getpid()))).string();
  }
  fs::create_directories(data_dir);

  NodeOptions options;
  options.node_id = "primary";
  options.data_dir = (fs::path(data_dir) / "primary").string();
  options.event_loops = 1;
  auto node = StorageNode::Start(options);
  if (!node.ok()) {
    fmt::print(stderr, "{}\n", node.status().ToString());
    return 1;
  }
  ShardAssignment shard{1,         TokenRange::Full(), 1, ShardRole::kPrimary, 1,
                        "primary", (*node)->address()};
  if (Status assigned = (*node)->AssignShards(1, {shard}, ""); !assigned.ok()) {
    fmt::print(stderr, "{}\n", assigned.ToString());
    return 1;
  }
  while ((*node)->Shards().empty()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  std::shared_ptr<ShardStore> store = (*node)->Shards().front().store;

  // Load: 1 KiB random bodies, 1,000 sends per WriteBatch, 100 conversations.
  fmt::print("loading {} MB into one shard...\n", megabytes);
  std::fflush(stdout);
  const auto load_start = Clock::now();
  std::mt19937_64 rng(42);
  constexpr uint64_t kConvs = 100;
  for (uint64_t c = 1; c <= kConvs; ++c) {
    auto created = store->CreateConversation({c, 1, {2, 3, 4, 5}, "bootstrap"});
    if (!created.ok()) {
      fmt::print(stderr, "{}\n", created.status().ToString());
      return 1;
    }
  }
  const uint64_t messages = megabytes * 1000 * 1000 / 1024;
  std::vector<SendMessageRequest> batch;
  for (uint64_t i = 0; i < messages; ++i) {
    std::string body(1024, '\0');
    for (size_t k = 0; k < body.size(); k += 8) {
      const uint64_t r = rng();
      std::memcpy(body.data() + k, &r, std::min<size_t>(8, body.size() - k));
    }
    batch.push_back({1 + i % kConvs, 1, "m" + std::to_string(i), std::move(body)});
    if (batch.size() == 1000 || i + 1 == messages) {
      for (auto& sent : store->SendMessages(batch)) {
        if (!sent.ok()) {
          fmt::print(stderr, "{}\n", sent.status().ToString());
          return 1;
        }
      }
      batch.clear();
    }
  }
  if (Status compacted = store->CompactAll(); !compacted.ok()) {
    fmt::print(stderr, "{}\n", compacted.ToString());
    return 1;
  }
  fmt::print(
      "loaded {} messages in {:.1f} s; the shard directory holds {:.1f} MB (WAL archive "
      "included)\n",
      messages, Seconds(Clock::now() - load_start),
      DirectoryBytes(fs::path(options.data_dir) / "shard-1") / 1e6);

  // Baseline: a checkpoint of the same shard copied with the filesystem.
  const fs::path baseline_src = fs::path(data_dir) / "baseline-checkpoint";
  const fs::path baseline_dst = fs::path(data_dir) / "baseline-copy";
  auto lsn = store->CreateCheckpoint(baseline_src.string());
  if (!lsn.ok()) {
    fmt::print(stderr, "{}\n", lsn.status().ToString());
    return 1;
  }
  const uint64_t checkpoint_bytes = DirectoryBytes(baseline_src);
  // Drop the page cache's copy where we can (root only); otherwise both runs read from memory.
  std::system("sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null");
  const auto copy_start = Clock::now();
  fs::copy(baseline_src, baseline_dst, fs::copy_options::recursive);
  std::system("sync");
  const double copy_s = Seconds(Clock::now() - copy_start);
  fs::remove_all(baseline_src);
  fs::remove_all(baseline_dst);

  // The bootstrap: checkpoint, XXH64 of every file, chunks over Cap'n Proto, checks, rename.
  std::system("sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null");
  replication::FollowerOptions follower_options;
  follower_options.node_id = "replica";
  follower_options.bootstrap_mb_per_s = mb_per_s;
  auto follower = replication::ReplicaFollower::Start(follower_options, nullptr);
  replication::ShardLog log;
  const auto boot_start = Clock::now();
  auto copied = follower->Bootstrap({1, 1, "primary", (*node)->address()},
                                    (fs::path(data_dir) / "replica-shard-1").string(), log);
  std::system("sync");
  const double boot_s = Seconds(Clock::now() - boot_start);
  if (!copied.ok()) {
    fmt::print(stderr, "bootstrap failed: {}\n", copied.status().ToString());
    return 1;
  }
  const uint64_t boot_bytes = DirectoryBytes(fs::path(data_dir) / "replica-shard-1");
  fmt::print("\n{:<44} {:>10} {:>9} {:>9}\n", "", "MB", "seconds", "MB/s");
  fmt::print("{:<44} {:>10.1f} {:>9.2f} {:>9.1f}\n", "filesystem copy of a checkpoint (baseline)",
             checkpoint_bytes / 1e6, copy_s, checkpoint_bytes / 1e6 / copy_s);
  fmt::print("{:<44} {:>10.1f} {:>9.2f} {:>9.1f}\n",
             "replica bootstrap over Cap'n Proto (loopback)", boot_bytes / 1e6, boot_s,
             boot_bytes / 1e6 / boot_s);
  fmt::print("bootstrap / baseline: {:.0f} %\n",
             100.0 * (boot_bytes / boot_s) / (checkpoint_bytes / copy_s));
  follower->Stop();
  (*node)->Stop();
  if (temporary) fs::remove_all(data_dir);
  return 0;
}

}  // namespace
}  // namespace scrollback

int main(int argc, char** argv) { return scrollback::Run(argc, argv); }
