// scrollback-demo: the engine in one process. Opens one shard (a fresh temporary directory
// unless --data-dir is given), creates a group conversation, sends messages, delivers the inbox
// fan-out as the cluster's worker will, and prints what a chat client would see.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "scrollback/engine/shard_store.h"

namespace scrollback {
namespace {

[[noreturn]] void Fail(const std::string& what, const Status& status) {
  fmt::print(stderr, "scrollback-demo: {}: {}\n", what, status.ToString());
  std::exit(1);
}

template <typename T>
T Must(Result<T> result, const std::string& what) {
  if (!result.ok()) Fail(what, result.status());
  return std::move(result).value();
}

// What the fan-out worker does, within one shard: apply every outbox record, then delete it.
size_t DeliverOutbox(ShardStore& store) {
  size_t delivered = 0;
  for (;;) {
    OutboxBatch batch = Must(store.ReadOutbox("", 500), "read outbox");
    if (batch.records.empty()) return delivered;
    std::vector<std::string> positions;
    for (const OutboxRecord& record : batch.records) {
      Status applied = store.ApplyInboxUpdate(record.update);
      if (!applied.ok()) Fail("apply inbox update", applied);
      positions.push_back(record.position);
    }
    Status deleted = store.DeleteOutbox(positions);
    if (!deleted.ok()) Fail("delete outbox", deleted);
    delivered += positions.size();
  }
}

void PrintInbox(ShardStore& store, uint64_t user) {
  InboxPage page = Must(store.ListInbox({user, "", 10}), "list inbox");
  fmt::print("inbox of user {}:\n", user);
  for (const InboxEntry& e : page.entries) {
    fmt::print("  conversation {} \"{}\"  unread {}  last seq {} from user {}: \"{}\"\n", e.conv_id,
               e.title, e.unread_count, e.last_seq, e.last_sender_id, e.preview);
  }
}

int Run(int argc, char** argv) {
  CLI::App app{"Scrollback engine demo: one shard, one process."};
  std::string data_dir;
  uint32_t members = 3;
  uint32_t messages = 8;
  uint32_t load = 20000;
  app.add_option("--data-dir", data_dir,
                 "Shard directory to use and keep (default: a temporary one, removed at exit)");
  app.add_option("--members", members, "Members of the demo conversation")
      ->check(CLI::Range(2u, 1000u));
  app.add_option("--messages", messages, "Messages to send and show")->check(CLI::Range(1u, 1000u));
  app.add_option("--load", load, "Messages to send afterwards to measure send throughput (0: skip)")
      ->check(CLI::Range(0u, 10'000'000u));
  CLI11_PARSE(app, argc, argv);

  const bool temporary = data_dir.empty();
  if (temporary) {
    data_dir =
        (std::filesystem::temp_directory_path() / ("scrollback-demo-" + std::to_string(::getpid())))
            .string();
  }
  ShardOptions options;
  auto store = Must(ShardStore::Open(options, data_dir), "open shard");
  fmt::print("Scrollback engine demo: one shard at {}\n\n", data_dir);

  // A conversation id not used yet in this directory.
  uint64_t conv_id = 42;
  while (store->GetConversation(conv_id).ok()) ++conv_id;
  std::vector<uint64_t> others;
  for (uint64_t user = 2; user <= members; ++user) others.push_back(user);
  Conversation conv =
      Must(store->CreateConversation({conv_id, 1, others, "launch plans"}), "create");
  fmt::print("created conversation {} \"{}\" with {} members\n", conv.conv_id, conv.title,
             conv.member_count);

  for (uint32_t i = 1; i <= messages; ++i) {
    uint64_t sender = 1 + (i - 1) % members;
    SendMessageResult sent =
        Must(store->SendMessage({conv_id, sender, fmt::format("demo-{}", i),
                                 fmt::format("message {} from user {}", i, sender)}),
             "send");
    fmt::print("user {} sent seq {}\n", sender, sent.seq);
  }
  SendMessageResult retry =
      Must(store->SendMessage({conv_id, 1, "demo-1", "message 1 from user 1"}), "retry");
  fmt::print("a retried send of client_msg_id demo-1 returned seq {} (duplicate: {})\n", retry.seq,
             retry.duplicate);
  Must(store->EditMessage(conv_id, 1, 1, "message 1 from user 1 (edited)"), "edit");
  Must(store->DeleteMessage(conv_id, 2, 2 <= members ? 2 : 1), "delete");
  fmt::print("edited seq 1, deleted seq 2\n");

  fmt::print("fan-out delivered {} inbox updates\n\n", DeliverOutbox(*store));

  HistoryPage page =
      Must(store->ReadHistory({conv_id, Direction::kNewestFirst, 0, std::nullopt, 5}), "history");
  fmt::print("history of conversation {}, newest first, page of 5:\n", conv_id);
  for (const Message& m : page.messages) {
    fmt::print("  seq {:>3}  user {}  {}\n", m.seq, m.sender_id,
               m.deleted ? "(deleted)" : "\"" + m.body + "\"" + (m.edited ? " (edited)" : ""));
  }
  fmt::print("  more: {} (next cursor {})\n\n", page.has_more, page.next_cursor_seq);

  const uint64_t reader = members;
  PrintInbox(*store, reader);
  InboxEntry read = Must(store->MarkRead(reader, conv_id, messages - 1), "mark read");
  fmt::print("user {} read up to seq {}: unread now {}\n\n", reader, read.read_seq,
             read.unread_count);

  if (load > 0) {
    auto start = std::chrono::steady_clock::now();
    for (uint32_t i = 1; i <= load; ++i) {
      Must(store->SendMessage({conv_id, 1, fmt::format("load-{}", i), std::string(200, 'x')}),
           "send");
    }
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    fmt::print("sent {} messages of 200 bytes in {:.2f}s: {:.0f} messages/s from one thread\n",
               load, seconds, load / seconds);
    fmt::print("fan-out delivered {} inbox updates\n", DeliverOutbox(*store));
  }

  store.reset();
  if (temporary) std::filesystem::remove_all(data_dir);
  return 0;
}

}  // namespace
}  // namespace scrollback

int main(int argc, char** argv) { return scrollback::Run(argc, argv); }
