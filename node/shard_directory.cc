#include "shard_directory.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace scrollback {
namespace {

namespace fs = std::filesystem;

Status IoError(const std::string& what) {
  return Status::FromCode(ErrorCode::kInternal, what + ": " + std::strerror(errno));
}

Status FsyncPath(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags);
  if (fd < 0) return IoError("open " + path);
  int synced = ::fsync(fd);
  ::close(fd);
  if (synced != 0) return IoError("fsync " + path);
  return Status::Ok();
}

std::string RoleName(ShardRole role) { return ShardRoleName(role); }

}  // namespace

Result<std::optional<ShardIdentity>> ReadShardIdentity(const std::string& dir) {
  const fs::path path = fs::path(dir) / kShardIdentityFile;
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::optional<ShardIdentity>();
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  auto json = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return Status::Corruption(path.string() + " is not a JSON object");
  }
  ShardIdentity id;
  try {
    id.format = json.at("format").get<uint32_t>();
    if (id.format != 1) {
      return Status::Corruption(path.string() + " has unknown format " + std::to_string(id.format));
    }
    id.shard_id = json.at("shard_id").get<uint64_t>();
    id.range.first = json.at("token_first").get<uint64_t>();
    id.range.last = json.at("token_last").get<uint64_t>();
    id.placement_version = json.at("placement_version").get<uint64_t>();
    id.epoch = json.at("epoch").get<uint64_t>();
    const std::string role = json.at("role").get<std::string>();
    if (role == "primary") {
      id.role = ShardRole::kPrimary;
    } else if (role == "replica") {
      id.role = ShardRole::kReplica;
    } else {
      return Status::Corruption(path.string() + " has unknown role " + role);
    }
    id.lsn = json.at("lsn").get<uint64_t>();
    id.clean_close = json.at("clean_close").get<bool>();
    id.node_id = json.at("node_id").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    return Status::Corruption(path.string() + ": " + e.what());
  }
  return std::optional<ShardIdentity>(std::move(id));
}

Status WriteShardIdentity(const std::string& dir, const ShardIdentity& id) {
  nlohmann::json json = {{"format", id.format},
                         {"shard_id", id.shard_id},
                         {"token_first", id.range.first},
                         {"token_last", id.range.last},
                         {"placement_version", id.placement_version},
                         {"epoch", id.epoch},
                         {"role", RoleName(id.role)},
                         {"lsn", id.lsn},
                         {"clean_close", id.clean_close},
                         {"node_id", id.node_id}};
  const std::string path = (fs::path(dir) / kShardIdentityFile).string();
  const std::string temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::trunc);
    out << json.dump(2) << "\n";
    out.flush();
    if (!out) return IoError("write " + temp);
  }
  SB_RETURN_IF_ERROR(FsyncPath(temp, O_RDONLY));
  if (::rename(temp.c_str(), path.c_str()) != 0) return IoError("rename " + temp);
  return FsyncPath(dir, O_RDONLY | O_DIRECTORY);
}

Status CheckShardIdentity(const ShardIdentity& found, const ShardAssignment& wanted) {
  auto refuse = [&](const std::string& what) {
    return Status::FromCode(ErrorCode::kFailedPrecondition,
                            "directory holds " + what + " (last written by node " + found.node_id +
                                "); refusing to serve it as shard " +
                                std::to_string(wanted.shard_id) + " placed at map version " +
                                std::to_string(wanted.placement_version));
  };
  if (found.shard_id != wanted.shard_id) {
    return refuse("shard " + std::to_string(found.shard_id));
  }
  if (!(found.range == wanted.range)) {
    return refuse("token range [" + std::to_string(found.range.first) + ", " +
                  std::to_string(found.range.last) + "]");
  }
  if (found.placement_version != wanted.placement_version) {
    return refuse("an earlier placement (map version " + std::to_string(found.placement_version) +
                  ")");
  }
  if (found.epoch > wanted.epoch) {
    return refuse("epoch " + std::to_string(found.epoch) + ", newer than the map's " +
                  std::to_string(wanted.epoch));
  }
  return Status::Ok();
}

Status RenameDurably(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) return IoError("rename " + from + " to " + to);
  const std::string parent = fs::path(to).parent_path().string();
  return FsyncPath(parent.empty() ? "." : parent, O_RDONLY | O_DIRECTORY);
}

Result<std::string> MoveShardDirectoryAside(const std::string& data_dir, const std::string& dir,
                                            const std::string& folder, uint64_t placement_version,
                                            int64_t now_ms) {
  std::error_code ec;
  const fs::path parent = fs::path(data_dir) / folder;
  fs::create_directories(parent, ec);
  if (ec)
    return Status::FromCode(ErrorCode::kInternal,
                            "create " + parent.string() + ": " + ec.message());
  const fs::path target =
      parent / (fs::path(dir).filename().string() + ".p" + std::to_string(placement_version) + "." +
                std::to_string(now_ms));
  fs::rename(dir, target, ec);
  if (ec) {
    return Status::FromCode(ErrorCode::kInternal,
                            "move " + dir + " to " + target.string() + ": " + ec.message());
  }
  return target.string();
}

}  // namespace scrollback
