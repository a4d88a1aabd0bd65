#include "scrollback/engine/keys.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <random>
#include <string>
#include <vector>

namespace scrollback::keys {
namespace {

std::string Be(uint64_t v) {
  std::string out(8, '\0');
  PutBigEndian64(out.data(), v);
  return out;
}

TEST_CASE("big-endian encoding makes byte order numeric order") {
  std::mt19937_64 rng(42);
  std::vector<uint64_t> edge = {0, 1, 255, 256, 65535, 1ull << 32, UINT64_MAX - 1, UINT64_MAX};
  for (int i = 0; i < 2000; ++i) edge.push_back(rng());
  for (size_t i = 0; i + 1 < edge.size(); ++i) {
    uint64_t a = edge[i], b = edge[i + 1];
    CHECK((a < b) == (Be(a) < Be(b)));
    CHECK(GetBigEndian64(Be(a).data()) == a);
  }
}

TEST_CASE("signed times keep their order once encoded") {
  std::vector<int64_t> times = {INT64_MIN, -5, -1, 0, 1, 1'700'000'000'000, INT64_MAX};
  for (size_t i = 0; i + 1 < times.size(); ++i) {
    CHECK(Be(OrderedFromSigned(times[i])) < Be(OrderedFromSigned(times[i + 1])));
    CHECK(SignedFromOrdered(OrderedFromSigned(times[i])) == times[i]);
  }
}

TEST_CASE("every key of a conversation starts with its token and id") {
  const uint64_t conv = 123456789;
  std::string prefix = Be(TokenOf(conv)) + Be(conv);
  for (const Key& k :
       {ConversationKey(conv), MemberKey(conv, 7), MessageKey(conv, 9),
        ClientMsgIdKey(conv, 3, "abc"), TimeIndexKey(conv, 5, 9), SenderIndexKey(conv, 3, 9)}) {
    REQUIRE(k.size() > kPrefixSize);
    CHECK(k.view().substr(0, kPrefixSize) == prefix);
    auto decoded = DecodePrefix(k.view());
    REQUIRE(decoded);
    CHECK(decoded->token == TokenOf(conv));
    CHECK(decoded->shard_key == conv);
  }
  CHECK(InboxStateKey(77, conv).view().substr(0, kPrefixSize) == Be(TokenOf(77)) + Be(77));
}

TEST_CASE("message keys of a conversation sort by seq and decode back") {
  const uint64_t conv = 42;
  std::vector<uint64_t> seqs = {1, 2, 255, 256, 1000, 1ull << 40};
  for (size_t i = 0; i + 1 < seqs.size(); ++i) {
    CHECK(MessageKey(conv, seqs[i]).view() < MessageKey(conv, seqs[i + 1]).view());
  }
  auto decoded = DecodeMessageKey(MessageKey(conv, 1000).view());
  REQUIRE(decoded);
  CHECK(decoded->conv_id == conv);
  CHECK(decoded->seq == 1000);
  CHECK_FALSE(DecodeMessageKey(ConversationKey(conv).view()));
}

TEST_CASE("time index keys sort by time then seq") {
  CHECK(TimeIndexKey(1, -10, 5).view() < TimeIndexKey(1, 0, 1).view());
  CHECK(TimeIndexKey(1, 100, 1).view() < TimeIndexKey(1, 100, 2).view());
  auto decoded = DecodeTimeIndexKey(TimeIndexKey(9, -77, 3).view());
  REQUIRE(decoded);
  CHECK(decoded->sent_at_ms == -77);
  CHECK(decoded->seq == 3);
}

TEST_CASE("outbox keys sort in write order, then by target user") {
  CHECK(OutboxKey(1, 999).view() < OutboxKey(2, 1).view());
  CHECK(OutboxKey(256, 1).view() > OutboxKey(255, 1000).view());
  CHECK(OutboxKey(7, 1).view() < OutboxKey(7, 2).view());
  CHECK(OutboxKey(7, 2).size() == kOutboxKeySize);
}

TEST_CASE("inbox activity keys sort newest first") {
  CHECK(InboxByActivityKey(5, 2000, 1).view() < InboxByActivityKey(5, 1000, 1).view());
  CHECK(InboxByActivityKey(5, 1000, 1).view() < InboxByActivityKey(5, 1000, 2).view());
}

TEST_CASE("a token range is one contiguous key range") {
  TokenRange range{1ull << 62, (1ull << 63) - 1};
  KeyRange bounds = KeyRangeOf(range);
  std::mt19937_64 rng(7);
  int inside = 0;
  for (int i = 0; i < 5000; ++i) {
    uint64_t id = rng();
    std::string key(MessageKey(id, 1 + rng() % 1000).view());
    bool in_keys = key >= bounds.begin && key < bounds.end;
    CHECK(in_keys == range.Contains(TokenOf(id)));
    inside += in_keys;
  }
  CHECK(inside > 0);  // About a quarter of random ids land in a quarter of the ring.
  // The top of the ring has no end key.
  CHECK(KeyRangeOf(TokenRange{5, UINT64_MAX}).end.empty());
}

TEST_CASE("the prefix successor bounds every key with that prefix") {
  CHECK(PrefixSuccessor("ab") == std::optional<std::string>("ac"));
  CHECK(PrefixSuccessor(std::string("a\xff", 2)) == std::optional<std::string>("b"));
  CHECK_FALSE(PrefixSuccessor(std::string("\xff\xff", 2)));
}

TEST_CASE("the token function is XXH3 of the big-endian id and never changes") {
  // Pinned values: changing TokenOf would re-home every stored key.
  CHECK(TokenOf(0) == 0xc77b3abb6f87acd9ull);
  CHECK(TokenOf(1) == 0xf36b4a1a44f78bf3ull);
}

}  // namespace
}  // namespace scrollback::keys
