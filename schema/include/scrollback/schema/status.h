// Status and Result<T>: how Scrollback code reports errors. Nothing throws across a public API.
// The codes are the wire contract's ErrorCode (types.capnp), which is why this lives in schema/:
// the engine, the router and the clients all speak it. RocksDB statuses are translated in
// exactly one place (engine/rocksdb_status.cc); Cap'n Proto errors in router/ and engine/'s RPC
// layer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace scrollback {

// Mirrors schema::ErrorCode (schema/types.capnp) one to one, with the same numbers, so the RPC
// layer converts by value. Never renumber.
enum class ErrorCode : uint16_t {
  kOk = 0,
  kNotFound = 1,
  kInvalidArgument = 2,
  kAlreadyExists = 3,
  kPermissionDenied = 4,
  kFailedPrecondition = 5,
  kNotOwner = 6,
  kNotPrimary = 7,
  kStaleEpoch = 8,
  kOverloaded = 9,
  kUnavailable = 10,
  kInternal = 11,
  kCorruption = 12,
  // Engine-internal, never on the wire: a cache-only read (CacheOnlyReads) would have needed
  // the disk. Storage nodes retry such calls on their engine pool.
  kWouldBlock = 13,
  // The log (WAL) a replica needs to catch up is gone; it must re-bootstrap from a checkpoint
  // (ShardStore::ReadLog; on the wire only in the replication protocol's pullLog).
  kLogGap = 14,
  // A semi-sync write committed on the primary but no replica confirmed it in time (it may or
  // may not survive a failover; retrying is safe). docs/replication.md, Acknowledgement.
  kNotReplicated = 15,
};

std::string_view ErrorCodeName(ErrorCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK.

  static Status Ok() { return Status(); }
  static Status NotFound(std::string message) {
    return Status(ErrorCode::kNotFound, std::move(message));
  }
  // `field` names the offending input field, e.g. "body" or "limit".
  static Status InvalidArgument(std::string field, std::string message) {
    Status s(ErrorCode::kInvalidArgument, std::move(message));
    s.field_ = std::move(field);
    return s;
  }
  static Status AlreadyExists(std::string message) {
    return Status(ErrorCode::kAlreadyExists, std::move(message));
  }
  static Status PermissionDenied(std::string message) {
    return Status(ErrorCode::kPermissionDenied, std::move(message));
  }
  static Status FailedPrecondition(std::string message) {
    return Status(ErrorCode::kFailedPrecondition, std::move(message));
  }
  static Status NotOwner(std::string message) {
    return Status(ErrorCode::kNotOwner, std::move(message));
  }
  static Status Unavailable(std::string message) {
    return Status(ErrorCode::kUnavailable, std::move(message));
  }
  static Status Internal(std::string message) {
    return Status(ErrorCode::kInternal, std::move(message));
  }
  static Status Corruption(std::string message) {
    return Status(ErrorCode::kCorruption, std::move(message));
  }
  static Status NotReplicated(std::string message) {
    return Status(ErrorCode::kNotReplicated, std::move(message));
  }
  static Status FromCode(ErrorCode code, std::string message) {
    return Status(code, std::move(message));
  }
  // `primary_hint`: host:port of the shard's primary, when known (empty otherwise).
  static Status NotPrimary(std::string message, std::string primary_hint) {
    Status s(ErrorCode::kNotPrimary, std::move(message));
    s.primary_hint_ = std::move(primary_hint);
    return s;
  }
  // `current_epoch`: the shard's epoch as the answering node knows it.
  static Status StaleEpoch(std::string message, uint64_t current_epoch) {
    Status s(ErrorCode::kStaleEpoch, std::move(message));
    s.epoch_ = current_epoch;
    return s;
  }

  bool ok() const { return code_ == ErrorCode::kOk; }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  const std::string& field() const { return field_; }
  const std::string& primary_hint() const { return primary_hint_; }  // notPrimary.
  uint64_t epoch() const { return epoch_; }                          // staleEpoch.
  // "invalid-argument (body): body is 70000 bytes, limit 65536".
  std::string ToString() const;

 private:
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
  std::string field_;
  std::string primary_hint_;
  uint64_t epoch_ = 0;
};

// A value or the Status explaining why there is none. Never holds an OK status.
template <typename T>
class [[nodiscard]] Result {
 public:
  using value_type = T;

  Result(T value) : state_(std::move(value)) {}         // NOLINT: implicit by design.
  Result(Status status) : state_(std::move(status)) {}  // NOLINT: implicit by design.

  bool ok() const { return state_.index() == 0; }
  // REQUIRES: ok().
  T& value() & { return std::get<0>(state_); }
  const T& value() const& { return std::get<0>(state_); }
  T&& value() && { return std::get<0>(std::move(state_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  // OK when a value is held.
  Status status() const { return ok() ? Status::Ok() : std::get<1>(state_); }

 private:
  std::variant<T, Status> state_;
};

}  // namespace scrollback

// Returns early from a function returning Status or Result<T> when `expr` fails.
#define SB_RETURN_IF_ERROR(expr)              \
  do {                                        \
    ::scrollback::Status sb_status_ = (expr); \
    if (!sb_status_.ok()) return sb_status_;  \
  } while (0)
