#include "scrollback/schema/token.h"

#include <xxhash.h>

namespace scrollback {

uint64_t TokenOf(uint64_t shard_key) {
  unsigned char be[8];
  for (int i = 7; i >= 0; --i) {
    be[i] = static_cast<unsigned char>(shard_key & 0xff);
    shard_key >>= 8;
  }
  return XXH3_64bits(be, sizeof(be));
}

}  // namespace scrollback
