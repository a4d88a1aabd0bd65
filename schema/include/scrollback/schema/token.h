// The token of a shard key: where a conversation or a user lives on the 64-bit ring.
//
// Format (persisted in every sharded key, and computed the same way by every client):
//   token(id) = XXH3_64bits(big-endian 8 bytes of id), seed 0.
// Changing this function re-homes every key: never change it.
#pragma once

#include <cstdint>

namespace scrollback {

// The token of a conversation id or a user id. Pure and allocation-free.
uint64_t TokenOf(uint64_t shard_key);

// An inclusive token range [first, last]. Inclusive so that the whole ring [0, 2^64-1] is
// expressible without a 65-bit end.
struct TokenRange {
  uint64_t first = 0;
  uint64_t last = UINT64_MAX;

  bool Contains(uint64_t token) const { return token >= first && token <= last; }
  static TokenRange Full() { return {}; }
  friend bool operator==(const TokenRange&, const TokenRange&) = default;
};

}  // namespace scrollback
