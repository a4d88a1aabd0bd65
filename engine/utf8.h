// UTF-8 validation for the engine's Text fields (titles). Private to engine/.
#pragma once

#include <cstdint>
#include <string_view>

namespace scrollback::engine_internal {

// True when `text` is well-formed UTF-8 (RFC 3629): no overlong encodings, no surrogates
// (U+D800..U+DFFF), nothing above U+10FFFF, no truncated sequences. Cap'n Proto's Text is UTF-8,
// and clients in other languages decode it strictly: one bad title stored would fail every
// inbox page that shows it.
inline bool IsValidUtf8(std::string_view text) {
  const auto* p = reinterpret_cast<const uint8_t*>(text.data());
  const auto* end = p + text.size();
  while (p < end) {
    const uint8_t b = *p;
    if (b < 0x80) {
      ++p;
      continue;
    }
    int extra;
    uint32_t min, cp;
    if ((b & 0xE0) == 0xC0) {
      extra = 1, min = 0x80, cp = b & 0x1F;
    } else if ((b & 0xF0) == 0xE0) {
      extra = 2, min = 0x800, cp = b & 0x0F;
    } else if ((b & 0xF8) == 0xF0) {
      extra = 3, min = 0x10000, cp = b & 0x07;
    } else {
      return false;  // A continuation byte first, or 0xF8..0xFF.
    }
    if (end - p <= extra) return false;
    for (int i = 1; i <= extra; ++i) {
      if ((p[i] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    p += extra + 1;
  }
  return true;
}

}  // namespace scrollback::engine_internal
