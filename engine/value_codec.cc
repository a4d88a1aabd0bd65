#include "scrollback/engine/value_codec.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstring>

#include "scrollback/schema/types.capnp.h"
#include "scrollback/schema/wire.h"

namespace scrollback::codec {
namespace {

namespace s = ::scrollback::schema;

// Writes `builder` in the standard stream format: (segment count - 1) as u32, each segment's
// size in words as u32, padding to 8 bytes, then the segments. Little-endian, as Cap'n Proto.
std::string ToBytes(capnp::MessageBuilder& builder) {
  auto segments = builder.getSegmentsForOutput();
  size_t table_words = (segments.size() + 2) / 2;  // 4 bytes per entry + 4 for the count.
  size_t total_words = table_words;
  for (auto segment : segments) total_words += segment.size();
  std::string out(total_words * sizeof(capnp::word), '\0');
  char* p = out.data();
  auto put32 = [&p](uint32_t v) {
    for (int i = 0; i < 4; ++i) *p++ = static_cast<char>((v >> (8 * i)) & 0xff);
  };
  put32(static_cast<uint32_t>(segments.size() - 1));
  for (auto segment : segments) put32(static_cast<uint32_t>(segment.size()));
  p = out.data() + table_words * sizeof(capnp::word);
  for (auto segment : segments) {
    std::memcpy(p, segment.begin(), segment.size() * sizeof(capnp::word));
    p += segment.size() * sizeof(capnp::word);
  }
  return out;
}

// Cap'n Proto reads words in place and requires 8-byte alignment; RocksDB hands out values at
// any address, so misaligned values are copied first: into a stack buffer when small (the
// common case: no allocation), else onto the heap.
class AlignedView {
 public:
  explicit AlignedView(std::string_view bytes) {
    if (bytes.size() % sizeof(capnp::word) != 0) {
      valid_ = false;
      return;
    }
    size_t words = bytes.size() / sizeof(capnp::word);
    const void* data = bytes.data();
    if (reinterpret_cast<uintptr_t>(data) % alignof(capnp::word) != 0) {
      capnp::word* copy =
          words <= kStackWords ? stack_ : (heap_ = kj::heapArray<capnp::word>(words)).begin();
      std::memcpy(copy, bytes.data(), bytes.size());
      data = copy;
    }
    words_ = kj::arrayPtr(static_cast<const capnp::word*>(data), words);
  }
  AlignedView(const AlignedView&) = delete;
  AlignedView& operator=(const AlignedView&) = delete;

  bool valid() const { return valid_; }
  kj::ArrayPtr<const capnp::word> words() const { return words_; }

 private:
  static constexpr size_t kStackWords = 128;  // 1 KiB: a typical message or inbox row.
  bool valid_ = true;
  capnp::word stack_[kStackWords];
  kj::Array<capnp::word> heap_;
  kj::ArrayPtr<const capnp::word> words_;
};

// Parses `bytes` as a `T` and calls `read(reader)`; any Cap'n Proto validation failure (bad
// pointers, truncated segments) becomes a corruption Status naming `what`.
template <typename T, typename Fn>
Status Parse(std::string_view bytes, const char* what, Fn&& read) {
  AlignedView view(bytes);
  if (!view.valid()) {
    return Status::Corruption(std::string(what) + ": value size is not a multiple of 8");
  }
  try {
    capnp::FlatArrayMessageReader message(view.words());
    read(message.getRoot<T>());
    return Status::Ok();
  } catch (const kj::Exception& e) {
    return Status::Corruption(std::string(what) + ": " + e.getDescription().cStr());
  }
}

// Words a builder's first segment should have to hold `payload_bytes` of text / data plus a
// small struct, so that a typical value is encoded with one allocation.
uint32_t FirstSegmentWords(size_t payload_bytes) {
  return static_cast<uint32_t>(32 + payload_bytes / sizeof(capnp::word));
}

}  // namespace

std::string EncodeConversation(const Conversation& conv) {
  capnp::MallocMessageBuilder builder(FirstSegmentWords(conv.title.size()));
  Conversation stored = conv;  // last_seq / last_activity_ms are derived, not stored.
  stored.last_seq = 0;
  stored.last_activity_ms = 0;
  wire::ToWire(stored, builder.initRoot<s::Conversation>());
  return ToBytes(builder);
}

Status DecodeConversation(std::string_view bytes, Conversation* out) {
  return Parse<s::Conversation>(bytes, "conversation",
                                [out](s::Conversation::Reader r) { wire::FromWire(r, out); });
}

std::string EncodeMember(const MemberRow& member) {
  capnp::MallocMessageBuilder builder(FirstSegmentWords(0));
  auto root = builder.initRoot<s::Member>();
  root.setUserId(member.user_id);
  root.setJoinedAtMs(member.joined_at_ms);
  root.setJoinedSeq(member.joined_seq);
  return ToBytes(builder);
}

std::string EncodeMessage(const Message& m) {
  capnp::MallocMessageBuilder builder(
      FirstSegmentWords(m.body.size() + m.client_msg_id.size() + 8 * m.member_ids.size()));
  wire::ToWire(m, builder.initRoot<s::Message>());
  return ToBytes(builder);
}

Status DecodeMessage(std::string_view bytes, Message* out) {
  return Parse<s::Message>(bytes, "message",
                           [out](s::Message::Reader r) { wire::FromWire(r, out); });
}

std::string EncodeInboxUpdate(const InboxUpdate& u) {
  capnp::MallocMessageBuilder builder(FirstSegmentWords(u.preview.size() + u.title.size()));
  wire::ToWire(u, builder.initRoot<s::InboxUpdate>());
  return ToBytes(builder);
}

Status DecodeInboxUpdate(std::string_view bytes, InboxUpdate* out) {
  return Parse<s::InboxUpdate>(bytes, "inbox update",
                               [out](s::InboxUpdate::Reader r) { wire::FromWire(r, out); });
}

std::string EncodeOutboxEntry(const InboxUpdate& u, const uint64_t* targets, size_t count) {
  capnp::MallocMessageBuilder builder(
      FirstSegmentWords(u.preview.size() + u.title.size() + 8 * count));
  auto root = builder.initRoot<s::OutboxEntry>();
  InboxUpdate stored = u;
  stored.user_id = 0;
  wire::ToWire(stored, root.initUpdate());
  auto list = root.initTargets(static_cast<unsigned>(count));
  for (size_t i = 0; i < count; ++i) list.set(static_cast<unsigned>(i), targets[i]);
  return ToBytes(builder);
}

Status DecodeOutboxEntry(std::string_view bytes, InboxUpdate* update,
                         std::vector<uint64_t>* targets) {
  return Parse<s::OutboxEntry>(bytes, "outbox entry", [update, targets](s::OutboxEntry::Reader r) {
    wire::FromWire(r.getUpdate(), update);
    targets->clear();
    targets->reserve(r.getTargets().size());
    for (uint64_t user : r.getTargets()) targets->push_back(user);
  });
}

std::string EncodeInboxEntry(const InboxEntry& e) {
  capnp::MallocMessageBuilder builder(FirstSegmentWords(e.preview.size() + e.title.size()));
  InboxEntry stored = e;  // unread_count is derived when read.
  stored.unread_count = 0;
  wire::ToWire(stored, builder.initRoot<s::InboxEntry>());
  return ToBytes(builder);
}

Status DecodeInboxEntry(std::string_view bytes, InboxEntry* out) {
  return Parse<s::InboxEntry>(bytes, "inbox entry",
                              [out](s::InboxEntry::Reader r) { wire::FromWire(r, out); });
}

std::string EncodeInboxState(const InboxState& st) {
  capnp::MallocMessageBuilder builder(FirstSegmentWords(0));
  auto root = builder.initRoot<s::InboxState>();
  root.setLastSeq(st.last_seq);
  root.setLastActivityMs(st.last_activity_ms);
  root.setReadSeq(st.read_seq);
  root.setRemoved(st.removed);
  root.setPreviewRevision(st.preview_revision);
  return ToBytes(builder);
}

Status DecodeInboxState(std::string_view bytes, InboxState* out) {
  return Parse<s::InboxState>(bytes, "inbox state", [out](s::InboxState::Reader r) {
    out->last_seq = r.getLastSeq();
    out->last_activity_ms = r.getLastActivityMs();
    out->read_seq = r.getReadSeq();
    out->removed = r.getRemoved();
    out->preview_revision = r.getPreviewRevision();
  });
}

std::string EncodeShardMeta(const ShardMetaRow& meta) {
  capnp::MallocMessageBuilder builder(FirstSegmentWords(0));
  auto root = builder.initRoot<s::ShardMeta>();
  root.setFormatVersion(meta.format_version);
  root.setShardId(meta.shard_id);
  root.setTokenBegin(meta.token_first);
  root.setTokenEnd(meta.token_last);
  return ToBytes(builder);
}

Status DecodeShardMeta(std::string_view bytes, ShardMetaRow* out) {
  return Parse<s::ShardMeta>(bytes, "shard meta", [out](s::ShardMeta::Reader r) {
    out->format_version = r.getFormatVersion();
    out->shard_id = r.getShardId();
    out->token_first = r.getTokenBegin();
    out->token_last = r.getTokenEnd();
  });
}

}  // namespace scrollback::codec
