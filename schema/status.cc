#include "scrollback/schema/status.h"

namespace scrollback {

std::string_view ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kOk:
      return "ok";
    case ErrorCode::kNotFound:
      return "not-found";
    case ErrorCode::kInvalidArgument:
      return "invalid-argument";
    case ErrorCode::kAlreadyExists:
      return "already-exists";
    case ErrorCode::kPermissionDenied:
      return "permission-denied";
    case ErrorCode::kFailedPrecondition:
      return "failed-precondition";
    case ErrorCode::kNotOwner:
      return "not-owner";
    case ErrorCode::kNotPrimary:
      return "not-primary";
    case ErrorCode::kStaleEpoch:
      return "stale-epoch";
    case ErrorCode::kOverloaded:
      return "overloaded";
    case ErrorCode::kUnavailable:
      return "unavailable";
    case ErrorCode::kInternal:
      return "internal";
    case ErrorCode::kCorruption:
      return "corruption";
    case ErrorCode::kWouldBlock:
      return "would-block";
    case ErrorCode::kLogGap:
      return "log-gap";
    case ErrorCode::kNotReplicated:
      return "not-replicated";
  }
  return "unknown";
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  std::string out(ErrorCodeName(code_));
  if (!field_.empty()) out += " (" + field_ + ")";
  if (!message_.empty()) out += ": " + message_;
  return out;
}

}  // namespace scrollback
