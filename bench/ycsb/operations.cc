#include "operations.h"

#include <algorithm>

namespace scrollback::ycsb {

Operations::Client::Client(const Operations& operations, uint64_t seed)
    : rng_(seed),
      ops_(operations.workload_),
      keys_(operations.workload_.distribution, operations.options_.records, operations.inserts_),
      conv_zipf_(1, operations.data_.conversations),
      user_zipf_(1, operations.data_.users) {}

Operations::Operations(const Workload& workload, const OperationsOptions& options)
    : options_(options),
      workload_(workload),
      records_(options.records + options.max_run_inserts),
      inserts_(options.records) {
  data_.conversations = std::max<uint64_t>(1, options.records / options.messages_per_conversation);
  data_.users = std::max<uint64_t>(100, data_.conversations * 2);
  data_.members = options.members;
}

std::string Operations::Body(uint64_t n) const { return TextBody(n, options_.body_bytes); }

kj::Promise<Status> Operations::CreateConversation(Session& session, uint64_t conv) {
  std::vector<uint64_t> members;
  for (uint32_t i = 1; i < data_.members; ++i) members.push_back(data_.Member(conv, i));
  return session.CreateConversation(conv, data_.Member(conv, 0), std::move(members))
      .then([](Status s) { return s.code() == ErrorCode::kAlreadyExists ? Status::Ok() : s; });
}

kj::Promise<Status> Operations::LoadRecord(Session& session, uint64_t record) {
  const uint64_t conv = data_.ConversationOf(record);
  return session.Send(conv, data_.Member(conv, 0), "load-" + std::to_string(record), Body(record))
      .then([this, record, conv](Result<uint64_t> seq) -> Status {
        if (!seq.ok()) return seq.status();
        records_.Set(record, conv, *seq);
        return Status::Ok();
      });
}

Op Operations::Next(Client& client) const { return client.ops_.Next(client.rng_); }

kj::Promise<Status> Operations::Perform(Session& session, Client& client, Op op) {
  Rng& rng = client.rng_;
  switch (op) {
    case Op::kRead: {
      auto [conv, seq] = records_.Get(client.keys_.Next(rng));
      return session.GetMessage(conv, seq);
    }
    case Op::kUpdate: {
      auto [conv, seq] = records_.Get(client.keys_.Next(rng));
      return session.Edit(conv, seq, data_.Member(conv, 0), Body(rng()));
    }
    case Op::kReadModifyWrite: {
      auto [conv, seq] = records_.Get(client.keys_.Next(rng));
      std::string body = Body(rng());
      uint64_t editor = data_.Member(conv, 0);
      return session.GetMessage(conv, seq).then(
          [&session, conv, seq, editor,
           body = std::move(body)](Status read) mutable -> kj::Promise<Status> {
            if (!read.ok()) return read;
            return session.Edit(conv, seq, editor, std::move(body));
          });
    }
    case Op::kInsert:
    case Op::kSend: {
      uint64_t record = inserts_.Next();
      uint64_t conv = op == Op::kSend ? client.conv_zipf_.Next(rng) : data_.ConversationOf(record);
      return session
          .Send(conv, data_.Member(conv, 0), "run-" + std::to_string(record), Body(record))
          .then([this, record, conv](Result<uint64_t> seq) -> Status {
            if (!seq.ok()) return seq.status();
            if (record < records_.capacity()) {
              records_.Set(record, conv, *seq);
              inserts_.Acknowledge(record);
            }
            return Status::Ok();
          });
    }
    case Op::kScan: {
      auto [conv, seq] = records_.Get(client.keys_.Next(rng));
      HistoryQuery query;
      query.conv_id = conv;
      query.direction = Direction::kOldestFirst;
      query.cursor_seq = seq - 1;
      query.limit = 1 + static_cast<uint32_t>(rng() % workload_.max_scan_length);
      return session.History(query);
    }
    case Op::kHistoryPage: {
      HistoryQuery query;
      query.conv_id = client.conv_zipf_.Next(rng);
      query.limit = 50;
      return session.History(query);
    }
    case Op::kSendBatch: {
      std::vector<SendMessageRequest> sends;
      sends.reserve(workload_.batch_size);
      for (uint32_t i = 0; i < workload_.batch_size; ++i) {
        uint64_t conv = client.conv_zipf_.Next(rng);
        uint64_t id = batch_sends_.fetch_add(1, std::memory_order_relaxed);
        sends.push_back({conv, data_.Member(conv, 0), "batch-" + std::to_string(id), Body(id)});
      }
      return session.SendBatch(std::move(sends));
    }
    case Op::kInboxList:
      return session.InboxList(client.user_zipf_.Next(rng), 20);
    case Op::kMarkRead: {
      uint64_t conv = client.conv_zipf_.Next(rng);
      return session.MarkRead(data_.Member(conv, 1 % data_.members), conv, 1 + rng() % 50);
    }
  }
  return Status::Internal("unknown op");
}

}  // namespace scrollback::ycsb
