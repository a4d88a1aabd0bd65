// YCSB operations as chat calls: the data set a workload runs against (records are messages,
// spread over conversations) and how each YCSB or chat operation becomes calls on a Session.
// docs/benchmarks.md, "Data set and mapping onto chat", describes the mapping; this file is
// where it is implemented.
//
// The runner decides when and from which thread operations happen; Operations decides what
// they do. One Operations serves one (workload, target) pair: it remembers where each record
// was stored, so it must not be reused for a second target.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "generators.h"
#include "scrollback/schema/status.h"
#include "target.h"
#include "workload.h"

namespace scrollback::ycsb {

struct OperationsOptions {
  // Default: 100,000. Records (messages) the load phase inserts: keys [0, records).
  uint64_t records = 100'000;
  // Default: 1,100,000. Run-phase inserts whose location is remembered, so that later reads,
  // updates and scans can target them. Set to --operations + 1,000,000, which covers any
  // --operations run and leaves room for a --duration run; inserts beyond it are still sent but
  // never read back.
  uint64_t max_run_inserts = 1'100'000;
  // Default: 100. Sets the number of conversations: max(1, records / this).
  uint32_t messages_per_conversation = 100;
  // Default: 5. Members of each conversation (>= 2: member 0 sends, member 1 marks read).
  uint32_t members = 5;
  // Default: 200. Every message body has this many bytes.
  uint32_t body_bytes = 200;
};

// The chat data set the workloads run against.
struct DataSet {
  uint64_t conversations = 0;  // Ids 1..conversations.
  uint64_t users = 0;          // Ids 1..users.
  uint32_t members = 0;        // Per conversation.

  // Record `k` goes to conversation 1 + hash(k) % conversations (YCSB's hashed insert order).
  uint64_t ConversationOf(uint64_t record) const { return 1 + FnvHash64(record) % conversations; }
  // The i-th member of a conversation (i < members); member 0 sends.
  uint64_t Member(uint64_t conv, uint32_t i) const {
    return 1 + FnvHash64(conv * 1'000'003 + i) % users;
  }
};

class Operations {
 public:
  // One client thread's random source and request generators. Not thread-safe: each client
  // thread has its own. Its draws depend only on `seed` and the calls made, so a run's
  // operation sequence per thread is reproducible.
  class Client {
   public:
    // REQUIRES: `operations` outlives the client.
    Client(const Operations& operations, uint64_t seed);

   private:
    friend class Operations;
    Rng rng_;
    OpChooser ops_;
    KeyChooser keys_;
    ZipfianGenerator conv_zipf_;
    ScrambledZipfianGenerator user_zipf_;
  };

  Operations(const Workload& workload, const OperationsOptions& options);
  Operations(const Operations&) = delete;
  Operations& operator=(const Operations&) = delete;

  const DataSet& data() const { return data_; }
  uint64_t records() const { return options_.records; }

  // ---- Load phase. Thread-safe. ----

  // Creates conversation `conv` with its members. A conversation that exists already counts as
  // created. REQUIRES: 1 <= conv <= data().conversations.
  kj::Promise<Status> CreateConversation(Session& session, uint64_t conv);
  // Sends record `record` (client id "load-<record>") and remembers where it was stored.
  // REQUIRES: record < records(), each record loaded once, its conversation created.
  kj::Promise<Status> LoadRecord(Session& session, uint64_t record);

  // ---- Run phase. Thread-safe across clients; REQUIRES: the load phase completed. ----

  // Draws the workload's next operation.
  Op Next(Client& client) const;
  // Performs `op` as calls on `session`; completes when the calls have. The status is the
  // first failure, if any (a read of a missing message is one).
  kj::Promise<Status> Perform(Session& session, Client& client, Op op);

 private:
  // Where each record lives: (conversation, seq) packed as conv << 32 | seq. Thread-safe.
  class RecordTable {
   public:
    explicit RecordTable(uint64_t capacity) : slots_(capacity) {}
    void Set(uint64_t record, uint64_t conv, uint64_t seq) {
      slots_[record].store(conv << 32 | seq, std::memory_order_release);
    }
    // (conv, seq); conv 0 while the record's insert has not completed.
    std::pair<uint64_t, uint64_t> Get(uint64_t record) const {
      uint64_t v = slots_[record].load(std::memory_order_acquire);
      return {v >> 32, v & 0xffffffff};
    }
    uint64_t capacity() const { return slots_.size(); }

   private:
    std::vector<std::atomic<uint64_t>> slots_;
  };

  // Message body `n`: body_bytes bytes, varied every 16 bytes so bodies differ.
  std::string Body(uint64_t n) const;

  const OperationsOptions options_;
  const Workload workload_;
  DataSet data_;
  RecordTable records_;    // Sized for the load plus max_run_inserts.
  InsertCounter inserts_;  // Starts at records(): every loaded record counts as inserted.
  std::atomic<uint64_t> batch_sends_{0};  // Client ids of batched sends.
};

}  // namespace scrollback::ycsb
