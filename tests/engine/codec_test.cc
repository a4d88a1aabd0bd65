#include <catch2/catch.hpp>
#include <random>
#include <string>

#include "scrollback/engine/value_codec.h"

namespace scrollback::codec {
namespace {

TEST_CASE("a message survives encoding and decoding, at any alignment") {
  Message m;
  m.conv_id = 5;
  m.seq = 99;
  m.sender_id = 7;
  m.sent_at_ms = -3;
  m.client_msg_id = std::string("id\0x", 4);
  m.body = std::string(300, 'b');
  m.kind = MessageKind::kMembersAdded;
  m.edited = true;
  m.edited_at_ms = 12;
  m.member_ids = {1, 2, 3};
  std::string bytes = EncodeMessage(m);
  for (size_t offset = 0; offset < 8; ++offset) {
    std::string shifted = std::string(offset, 'x') + bytes;
    Message out;
    REQUIRE(DecodeMessage(std::string_view(shifted).substr(offset), &out).ok());
    CHECK(out.conv_id == 5);
    CHECK(out.seq == 99);
    CHECK(out.sender_id == 7);
    CHECK(out.sent_at_ms == -3);
    CHECK(out.client_msg_id == m.client_msg_id);
    CHECK(out.body == m.body);
    CHECK(out.kind == MessageKind::kMembersAdded);
    CHECK(out.edited);
    CHECK_FALSE(out.deleted);
    CHECK(out.member_ids == m.member_ids);
  }
}

TEST_CASE("an inbox update and an inbox entry survive encoding") {
  InboxUpdate u;
  u.user_id = 1;
  u.conv_id = 2;
  u.seq = 3;
  u.kind = InboxUpdateKind::kRemoved;
  u.activity_ms = 4;
  u.sender_id = 5;
  u.preview = "hello";
  u.fan_out = false;
  u.title = "team";
  InboxUpdate u2;
  REQUIRE(DecodeInboxUpdate(EncodeInboxUpdate(u), &u2).ok());
  CHECK(u2.kind == InboxUpdateKind::kRemoved);
  CHECK(u2.preview == "hello");
  CHECK(u2.title == "team");
  CHECK_FALSE(u2.fan_out);

  InboxEntry e;
  e.last_seq = 10;
  e.read_seq = 4;
  e.preview = "p";
  InboxEntry e2;
  REQUIRE(DecodeInboxEntry(EncodeInboxEntry(e), &e2).ok());
  CHECK(e2.unread_count == 6);
  CHECK(e2.preview == "p");
}

TEST_CASE("garbage bytes decode to a corruption status, never a crash") {
  std::mt19937 rng(1234);
  int corrupt = 0;
  for (int i = 0; i < 2000; ++i) {
    std::string junk(8 * (rng() % 16), '\0');
    for (char& c : junk) c = static_cast<char>(rng());
    Message out;
    Status s = DecodeMessage(junk, &out);
    if (!s.ok()) {
      CHECK(s.code() == ErrorCode::kCorruption);
      ++corrupt;
    }
  }
  CHECK(corrupt > 0);
  Message out;
  CHECK(DecodeMessage("abc", &out).code() == ErrorCode::kCorruption);
}

}  // namespace
}  // namespace scrollback::codec
