#include "workload.h"

namespace scrollback::ycsb {

std::string_view OpName(Op op) {
  switch (op) {
    case Op::kRead:
      return "READ";
    case Op::kUpdate:
      return "UPDATE";
    case Op::kInsert:
      return "INSERT";
    case Op::kScan:
      return "SCAN";
    case Op::kReadModifyWrite:
      return "READ-MODIFY-WRITE";
    case Op::kHistoryPage:
      return "HISTORY-PAGE";
    case Op::kSendBatch:
      return "SEND-BATCH";
    case Op::kSend:
      return "SEND";
    case Op::kInboxList:
      return "INBOX-LIST";
    case Op::kMarkRead:
      return "MARK-READ";
  }
  return "UNKNOWN";
}

std::string_view DistributionName(Distribution d) {
  switch (d) {
    case Distribution::kUniform:
      return "uniform";
    case Distribution::kZipfian:
      return "zipfian";
    case Distribution::kLatest:
      return "latest";
  }
  return "unknown";
}

std::optional<Workload> Workload::Named(std::string_view name) {
  Workload w;
  w.name = std::string(name);
  if (name == "a") {
    w.description = "update heavy: 50% read, 50% update, zipfian";
    w.mix = {{Op::kRead, 0.5}, {Op::kUpdate, 0.5}};
  } else if (name == "b") {
    w.description = "read mostly: 95% read, 5% update, zipfian";
    w.mix = {{Op::kRead, 0.95}, {Op::kUpdate, 0.05}};
  } else if (name == "c") {
    w.description = "read only: 100% read, zipfian";
    w.mix = {{Op::kRead, 1.0}};
  } else if (name == "d") {
    w.description = "read latest: 95% read, 5% insert, latest";
    w.mix = {{Op::kRead, 0.95}, {Op::kInsert, 0.05}};
    w.distribution = Distribution::kLatest;
  } else if (name == "e") {
    w.description = "short ranges: 95% scan (1-100), 5% insert, zipfian";
    w.mix = {{Op::kScan, 0.95}, {Op::kInsert, 0.05}};
  } else if (name == "f") {
    w.description = "read-modify-write: 50% read, 50% read-modify-write, zipfian";
    w.mix = {{Op::kRead, 0.5}, {Op::kReadModifyWrite, 0.5}};
  } else if (name == "chat") {
    w.description =
        "chat: 70% history page of 50, 15% send, 10% inbox list, 5% mark read, zipfian over "
        "conversations";
    w.mix = {
        {Op::kHistoryPage, 0.70}, {Op::kSend, 0.15}, {Op::kInboxList, 0.10}, {Op::kMarkRead, 0.05}};
  } else if (name == "send") {
    w.description = "sends only: 100% send, zipfian over conversations";
    w.mix = {{Op::kSend, 1.0}};
  } else if (name == "history") {
    w.description = "history only: 100% history page of 50, zipfian over conversations";
    w.mix = {{Op::kHistoryPage, 1.0}};
  } else if (name == "batch") {
    w.description = "batched sends: 100% send batch of 100, zipfian over conversations";
    w.mix = {{Op::kSendBatch, 1.0}};
  } else {
    return std::nullopt;
  }
  return w;
}

std::vector<std::string> Workload::Names() {
  return {"a", "b", "c", "d", "e", "f", "chat", "send", "history", "batch"};
}

OpChooser::OpChooser(const Workload& workload) {
  double sum = 0;
  for (auto [op, share] : workload.mix) {
    sum += share;
    cumulative_.emplace_back(op, sum);
  }
  for (auto& entry : cumulative_) entry.second /= sum;  // Normalize against rounding.
}

Op OpChooser::Next(Rng& rng) const {
  const double u = NextDouble(rng);
  for (auto [op, bound] : cumulative_) {
    if (u < bound) return op;
  }
  return cumulative_.back().first;
}

KeyChooser::KeyChooser(Distribution distribution, uint64_t record_count,
                       const InsertCounter& inserts)
    : distribution_(distribution),
      inserts_(inserts),
      uniform_(0, std::max<uint64_t>(record_count, 1) - 1),
      zipfian_(0, std::max<uint64_t>(record_count, 1) - 1),
      latest_(inserts) {}

uint64_t KeyChooser::Next(Rng& rng) {
  switch (distribution_) {
    case Distribution::kUniform:
      return uniform_.Next(rng);
    case Distribution::kZipfian: {
      // YCSB draws over the loaded records and retries keys not inserted yet.
      uint64_t key;
      do {
        key = zipfian_.Next(rng);
      } while (key >= inserts_.Limit());
      return key;
    }
    case Distribution::kLatest:
      return latest_.Next(rng);
  }
  return 0;
}

}  // namespace scrollback::ycsb
