#include "rocksdb_status.h"

#include <string>

namespace scrollback {

Status FromRocksDb(const rocksdb::Status& status, std::string_view context) {
  if (status.ok()) return Status::Ok();
  std::string message = std::string(context) + ": " + status.ToString();
  switch (status.code()) {
    case rocksdb::Status::kNotFound:
      return Status::NotFound(std::move(message));
    case rocksdb::Status::kCorruption:
      return Status::Corruption(std::move(message));
    case rocksdb::Status::kIncomplete:
      // What a read under kBlockCacheTier returns when the data is not in memory.
      return Status::FromCode(ErrorCode::kWouldBlock, std::move(message));
    case rocksdb::Status::kBusy:
    case rocksdb::Status::kTryAgain:
    case rocksdb::Status::kTimedOut:
      return Status::Unavailable(std::move(message));
    case rocksdb::Status::kInvalidArgument:
      return Status::InvalidArgument("", std::move(message));
    default:
      return Status::Internal(std::move(message));
  }
}

}  // namespace scrollback
