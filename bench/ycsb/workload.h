// Workloads: YCSB's core workloads A-F with YCSB's operation mixes and request distributions,
// and chat-specific mixes. docs/benchmarks.md maps each YCSB operation onto a chat operation.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "generators.h"

namespace scrollback::ycsb {

// YCSB's operations, and the chat operations of the chat mixes.
enum class Op {
  kRead,             // YCSB read          -> get one message
  kUpdate,           // YCSB update        -> edit a message
  kInsert,           // YCSB insert        -> send a message
  kScan,             // YCSB scan          -> a history page of 1..max_scan_length messages
  kReadModifyWrite,  // YCSB RMW           -> get a message, then edit it
  kHistoryPage,      // chat: a history page of 50, newest first
  kSend,             // chat: send to an existing conversation
  kInboxList,        // chat: a user's inbox, 20 rows
  kMarkRead,         // chat: mark a conversation read
  kSendBatch,        // chat: one call carrying `batch_size` sends (bulk import, bridges)
};
std::string_view OpName(Op op);  // YCSB's names: READ, UPDATE, INSERT, SCAN, READ-MODIFY-WRITE...

enum class Distribution { kUniform, kZipfian, kLatest };
std::string_view DistributionName(Distribution d);

struct Workload {
  std::string name;  // "a".."f", "chat"
  std::string description;
  std::vector<std::pair<Op, double>> mix;  // Proportions, summing to 1.
  Distribution distribution = Distribution::kZipfian;
  uint32_t max_scan_length = 100;  // Scan lengths are uniform in [1, max].
  uint32_t batch_size = 100;       // Sends per kSendBatch operation.

  // "a".."f" (YCSB core workloads), "chat", "send", "history" or "batch"; nullopt for unknown
  // names.
  static std::optional<Workload> Named(std::string_view name);
  static std::vector<std::string> Names();
};

// Draws operations in a workload's proportions.
class OpChooser {
 public:
  explicit OpChooser(const Workload& workload);
  Op Next(Rng& rng) const;

 private:
  std::vector<std::pair<Op, double>> cumulative_;
};

// Draws the record a read/update/scan targets, among records [0, counter.Limit()).
class KeyChooser {
 public:
  KeyChooser(Distribution distribution, uint64_t record_count, const InsertCounter& inserts);
  uint64_t Next(Rng& rng);

 private:
  Distribution distribution_;
  const InsertCounter& inserts_;
  UniformGenerator uniform_;
  ScrambledZipfianGenerator zipfian_;
  SkewedLatestGenerator latest_;
};

}  // namespace scrollback::ycsb
