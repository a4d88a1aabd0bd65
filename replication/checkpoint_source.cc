// CheckpointSource: the primary side of bootstrap (docs/replication.md, Bootstrap).
#include <spdlog/logger.h>
#include <xxhash.h>

#include <filesystem>
#include <fstream>

#include "scrollback/replication/replication.h"

namespace scrollback::replication {
namespace {

namespace fs = std::filesystem;

constexpr uint32_t kMaxChunk = 4u << 20;

Result<uint64_t> DigestFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::Internal("cannot read " + path.string());
  XXH64_state_t* state = XXH64_createState();
  XXH64_reset(state, 0);
  std::vector<char> buffer(1 << 20);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    XXH64_update(state, buffer.data(), static_cast<size_t>(in.gcount()));
  }
  const bool failed = in.bad();
  const uint64_t digest = XXH64_digest(state);
  XXH64_freeState(state);
  if (failed) return Status::Internal("reading " + path.string() + " failed");
  return digest;
}

}  // namespace

CheckpointSource::CheckpointSource(std::string root, std::chrono::milliseconds idle_timeout,
                                   Logger logger)
    : root_(std::move(root)), idle_timeout_(idle_timeout), log_(OrNull(std::move(logger))) {
  // Checkpoints of an earlier run of this node are nobody's any more.
  std::error_code ec;
  fs::remove_all(root_, ec);
}

CheckpointSource::~CheckpointSource() {
  std::lock_guard lock(mu_);
  for (auto& [id, open] : open_) {
    std::error_code ec;
    fs::remove_all(open.dir, ec);
  }
  open_.clear();
}

Result<CheckpointInfo> CheckpointSource::Begin(ShardStore& store) {
  ExpireIdle();
  uint64_t id;
  {
    std::lock_guard lock(mu_);
    if (open_.size() + beginning_ >= kMaxOpen) {
      return Status::FromCode(ErrorCode::kOverloaded,
                              std::to_string(open_.size() + beginning_) +
                                  " checkpoints are being made or copied already; retry later");
    }
    id = next_id_++;
    ++beginning_;
  }
  // Counted until it is open or has failed: concurrent Begins stay within kMaxOpen. Declared
  // before the final lock below, so destroyed after it is released.
  struct Begun {
    CheckpointSource* source;
    ~Begun() {
      std::lock_guard lock(source->mu_);
      --source->beginning_;
    }
  } begun{this};
  std::error_code ec;
  fs::create_directories(root_, ec);
  if (ec) return Status::Internal("cannot create " + root_ + ": " + ec.message());
  const std::string dir =
      (fs::path(root_) / ("shard-" + std::to_string(store.shard_id()) + "." + std::to_string(id)))
          .string();
  auto lsn = store.CreateCheckpoint(dir);
  if (!lsn.ok()) return lsn.status();

  CheckpointInfo info{id, *lsn, {}};
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file()) continue;
    auto digest = DigestFile(entry.path());
    if (!digest.ok()) {
      fs::remove_all(dir, ec);
      return digest.status();
    }
    info.files.push_back({entry.path().filename().string(), entry.file_size(), *digest});
  }
  if (ec) {
    fs::remove_all(dir, ec);
    return Status::Internal("cannot list checkpoint " + dir + ": " + ec.message());
  }
  std::sort(info.files.begin(), info.files.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  uint64_t bytes = 0;
  for (const auto& file : info.files) bytes += file.size;
  log_->info("checkpoint {} of shard {} at lsn {}: {} files, {} bytes", id, store.shard_id(),
             info.lsn, info.files.size(), bytes);
  std::lock_guard lock(mu_);
  open_[id] = Open{dir, info.files, SteadyMs()};
  return info;
}

Result<std::string> CheckpointSource::Read(uint64_t id, uint32_t file_index, uint64_t offset,
                                           uint32_t max_bytes) {
  fs::path path;
  uint64_t size = 0;
  {
    std::lock_guard lock(mu_);
    auto it = open_.find(id);
    if (it == open_.end()) {
      return Status::NotFound("checkpoint " + std::to_string(id) +
                              " is not open (ended, expired, or the node restarted)");
    }
    if (file_index >= it->second.files.size()) {
      return Status::InvalidArgument("file_index", "checkpoint " + std::to_string(id) + " has " +
                                                       std::to_string(it->second.files.size()) +
                                                       " files");
    }
    it->second.last_used_ms = SteadyMs();
    path = fs::path(it->second.dir) / it->second.files[file_index].name;
    size = it->second.files[file_index].size;
  }
  if (offset > size) return Status::InvalidArgument("offset", "past the end of the file");
  const uint64_t n = std::min<uint64_t>({max_bytes, kMaxChunk, size - offset});
  std::string data(n, '\0');
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  in.read(data.data(), static_cast<std::streamsize>(n));
  if (!in || static_cast<uint64_t>(in.gcount()) != n) {
    return Status::Internal("reading " + path.string() + " failed");
  }
  bytes_served_.fetch_add(n, std::memory_order_relaxed);
  return data;
}

Status CheckpointSource::End(uint64_t id) {
  std::string dir;
  {
    std::lock_guard lock(mu_);
    auto it = open_.find(id);
    if (it == open_.end()) return Status::Ok();
    dir = it->second.dir;
    open_.erase(it);
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (ec) {
    log_->error("removing checkpoint {} failed: {}", dir, ec.message());
    return Status::Internal("cannot remove " + dir + ": " + ec.message());
  }
  return Status::Ok();
}

void CheckpointSource::ExpireIdle() {
  std::vector<std::pair<uint64_t, std::string>> expired;
  {
    std::lock_guard lock(mu_);
    const int64_t now = SteadyMs();
    for (auto it = open_.begin(); it != open_.end();) {
      if (now - it->second.last_used_ms > idle_timeout_.count()) {
        expired.emplace_back(it->first, it->second.dir);
        it = open_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& [id, dir] : expired) {
    log_->warn("checkpoint {} unused for {} ms: released ({})", id, idle_timeout_.count(), dir);
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
}

size_t CheckpointSource::open_checkpoints() const {
  std::lock_guard lock(mu_);
  return open_.size();
}

}  // namespace scrollback::replication
