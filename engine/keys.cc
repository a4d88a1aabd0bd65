#include "scrollback/engine/keys.h"

namespace scrollback::keys {

std::optional<std::string> PrefixSuccessor(std::string_view prefix) {
  std::string out(prefix);
  while (!out.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(out.back());
    if (last != 0xff) {
      ++last;
      return out;
    }
    out.pop_back();
  }
  return std::nullopt;
}

std::optional<EntityPrefix> DecodePrefix(std::string_view key) {
  if (key.size() < kPrefixSize) return std::nullopt;
  return EntityPrefix{GetBigEndian64(key.data()), GetBigEndian64(key.data() + 8)};
}

std::optional<DecodedMessageKey> DecodeMessageKey(std::string_view key) {
  if (key.size() != kPrefixSize + 1 + 8 || key[kPrefixSize] != static_cast<char>(Tag::kMessage)) {
    return std::nullopt;
  }
  return DecodedMessageKey{GetBigEndian64(key.data() + 8), GetBigEndian64(key.data() + 17)};
}

std::optional<DecodedTimeIndexKey> DecodeTimeIndexKey(std::string_view key) {
  if (key.size() != kPrefixSize + 1 + 16 ||
      key[kPrefixSize] != static_cast<char>(Tag::kTimeIndex)) {
    return std::nullopt;
  }
  return DecodedTimeIndexKey{GetBigEndian64(key.data() + 8),
                             SignedFromOrdered(GetBigEndian64(key.data() + 17)),
                             GetBigEndian64(key.data() + 25)};
}

KeyRange KeyRangeOf(TokenRange range) {
  KeyRange out;
  out.begin.resize(8);
  PutBigEndian64(out.begin.data(), range.first);
  if (range.last != UINT64_MAX) {
    out.end.resize(8);
    PutBigEndian64(out.end.data(), range.last + 1);
  }
  return out;
}

}  // namespace scrollback::keys
