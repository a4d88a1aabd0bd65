// The one place where RocksDB statuses become Scrollback statuses. Private to engine/.
#pragma once

#include <rocksdb/status.h>

#include <string_view>

#include "scrollback/schema/status.h"

namespace scrollback {

// `context` says what was being done ("write message", "open shard"); it prefixes the message.
// NotFound maps to not-found, Corruption to corruption, Busy / TryAgain / TimedOut to
// unavailable (retryable), Incomplete (a cache-only read missed) to would-block,
// InvalidArgument to invalid-argument, everything else to internal.
Status FromRocksDb(const rocksdb::Status& status, std::string_view context);

}  // namespace scrollback
