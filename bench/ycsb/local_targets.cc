// In-process targets: `raw` (RocksDB alone: the storage floor) and `engine` (ShardStore).
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/table.h>

#include <atomic>
#include <filesystem>
#include <mutex>
#include <unordered_map>

#include "generators.h"
#include "scrollback/engine/keys.h"
#include "scrollback/engine/shard_store.h"
#include "scrollback/engine/value_codec.h"
#include "target.h"

namespace scrollback::ycsb {
namespace {

Status FromRocks(const rocksdb::Status& s) {
  if (s.ok()) return Status::Ok();
  if (s.IsNotFound()) return Status::NotFound(s.ToString());
  return Status::Internal(s.ToString());
}

// ---- raw ---------------------------------------------------------------------------------------

// The storage floor: the same message keys, values of the engine's encoded size, one Put per
// send (no indexes, no outbox, no inbox), reads by Get and Seek + Next.
class RawTarget final : public Target {
 public:
  RawTarget(std::unique_ptr<rocksdb::DB> db, size_t value_bytes) : db_(std::move(db)) {
    // Values like the engine's: text of the encoded message's size, not one repeated byte
    // (which would compress away and flatter the baseline). A pool, so neighbouring rows differ.
    for (uint64_t i = 0; i < kValues; ++i) values_.push_back(TextBody(i, value_bytes));
  }

  std::string name() const override { return "raw"; }
  bool pipelined() const override { return false; }
  std::unique_ptr<Session> NewSession(kj::AsyncIoProvider&) override {
    return std::make_unique<RawSession>(*this);
  }

 private:
  class RawSession final : public Session {
   public:
    explicit RawSession(RawTarget& target) : t_(target) {}

    kj::Promise<Status> CreateConversation(uint64_t conv_id, uint64_t,
                                           std::vector<uint64_t>) override {
      std::lock_guard lock(t_.mu_);
      t_.last_seq_.emplace(conv_id, 0);
      return Status::Ok();
    }
    kj::Promise<Result<uint64_t>> Send(uint64_t conv_id, uint64_t, std::string,
                                       std::string) override {
      uint64_t seq;
      {
        std::lock_guard lock(t_.mu_);
        seq = ++t_.last_seq_[conv_id];
      }
      Status s = FromRocks(t_.db_->Put(rocksdb::WriteOptions(),
                                       keys::MessageKey(conv_id, seq).str(), t_.Value(seq)));
      if (!s.ok()) return Result<uint64_t>(s);
      return Result<uint64_t>(seq);
    }
    kj::Promise<Status> SendBatch(std::vector<SendMessageRequest> sends) override {
      rocksdb::WriteBatch batch;
      {
        std::lock_guard lock(t_.mu_);
        for (const auto& send : sends) {
          const uint64_t seq = ++t_.last_seq_[send.conv_id];
          batch.Put(keys::MessageKey(send.conv_id, seq).str(), t_.Value(seq));
        }
      }
      return FromRocks(t_.db_->Write(rocksdb::WriteOptions(), &batch));
    }
    kj::Promise<Status> GetMessage(uint64_t conv_id, uint64_t seq) override {
      rocksdb::PinnableSlice value;
      return FromRocks(t_.db_->Get(rocksdb::ReadOptions(), t_.db_->DefaultColumnFamily(),
                                   keys::MessageKey(conv_id, seq).str(), &value));
    }
    kj::Promise<Status> Edit(uint64_t conv_id, uint64_t seq, uint64_t, std::string) override {
      return FromRocks(t_.db_->Put(rocksdb::WriteOptions(), keys::MessageKey(conv_id, seq).str(),
                                   t_.Value(seq + 1)));
    }
    kj::Promise<Status> History(HistoryQuery query) override {
      std::string first =
          keys::MessageKey(
              query.conv_id,
              query.direction == Direction::kOldestFirst
                  ? query.cursor_seq + 1
                  : (query.cursor_seq > query.limit ? query.cursor_seq - query.limit : 1))
              .str();
      return Scan(first, query.limit);
    }
    kj::Promise<Status> InboxList(uint64_t user_id, uint32_t limit) override {
      // The floor of a 20-row range read: the same number of rows, here message rows.
      return Scan(keys::MessageKey(user_id, 1).str(), limit);
    }
    kj::Promise<Status> MarkRead(uint64_t user_id, uint64_t conv_id, uint64_t seq) override {
      std::string value(8, '\0');
      keys::PutBigEndian64(value.data(), seq);
      return FromRocks(
          t_.db_->Put(rocksdb::WriteOptions(), keys::InboxStateKey(user_id, conv_id).str(), value));
    }

   private:
    Status Scan(const std::string& from, uint32_t limit) {
      std::unique_ptr<rocksdb::Iterator> it(t_.db_->NewIterator(rocksdb::ReadOptions()));
      uint32_t n = 0;
      size_t bytes = 0;
      for (it->Seek(from); it->Valid() && n < limit; it->Next(), ++n) bytes += it->value().size();
      (void)bytes;
      return FromRocks(it->status());
    }
    RawTarget& t_;
  };

  static constexpr uint64_t kValues = 64;
  const std::string& Value(uint64_t seq) const { return values_[seq % kValues]; }
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<std::string> values_;
  std::mutex mu_;
  std::unordered_map<uint64_t, uint64_t> last_seq_;  // GUARDED_BY(mu_)
};

// ---- engine ------------------------------------------------------------------------------------

class EngineTarget final : public Target {
 public:
  explicit EngineTarget(std::unique_ptr<ShardStore> store) : store_(std::move(store)) {}
  std::string name() const override { return "engine"; }
  bool pipelined() const override { return false; }
  std::unique_ptr<Session> NewSession(kj::AsyncIoProvider&) override {
    return std::make_unique<EngineSession>(*store_);
  }

 private:
  class EngineSession final : public Session {
   public:
    explicit EngineSession(ShardStore& store) : store_(store) {}
    kj::Promise<Status> CreateConversation(uint64_t conv_id, uint64_t creator,
                                           std::vector<uint64_t> members) override {
      return store_.CreateConversation({conv_id, creator, std::move(members), "bench"}).status();
    }
    kj::Promise<Result<uint64_t>> Send(uint64_t conv_id, uint64_t sender, std::string client_id,
                                       std::string body) override {
      auto sent = store_.SendMessage({conv_id, sender, std::move(client_id), std::move(body)});
      if (!sent.ok()) return Result<uint64_t>(sent.status());
      return Result<uint64_t>(sent->seq);
    }
    kj::Promise<Status> SendBatch(std::vector<SendMessageRequest> sends) override {
      for (auto& sent : store_.SendMessages(sends)) {
        if (!sent.ok()) return sent.status();
      }
      return Status::Ok();
    }
    kj::Promise<Status> GetMessage(uint64_t conv_id, uint64_t seq) override {
      return store_.GetMessage(conv_id, seq).status();
    }
    kj::Promise<Status> Edit(uint64_t conv_id, uint64_t seq, uint64_t editor,
                             std::string body) override {
      return store_.EditMessage(conv_id, seq, editor, body).status();
    }
    kj::Promise<Status> History(HistoryQuery query) override {
      return store_.ReadHistory(query).status();
    }
    kj::Promise<Status> InboxList(uint64_t user_id, uint32_t limit) override {
      InboxQuery query;
      query.user_id = user_id;
      query.limit = limit;
      return store_.ListInbox(query).status();
    }
    kj::Promise<Status> MarkRead(uint64_t user_id, uint64_t conv_id, uint64_t seq) override {
      auto read = store_.MarkRead(user_id, conv_id, seq);
      // A user whose inbox row the fan-out has not written (no worker in this target) is fine.
      if (read.status().code() == ErrorCode::kNotFound) return Status::Ok();
      return read.status();
    }

   private:
    ShardStore& store_;
  };

  std::unique_ptr<ShardStore> store_;
};

}  // namespace

Result<std::unique_ptr<Target>> NewRawTarget(const TargetOptions& options) {
  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(256ull << 20);
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  db_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  rocksdb::DB* db = nullptr;
  auto path = (std::filesystem::path(options.data_dir) / "raw").string();
  SB_RETURN_IF_ERROR(FromRocks(rocksdb::DB::Open(db_options, path, &db)));
  // The engine's stored message for a body of this size: key fields, client id, body.
  Message sample;
  sample.conv_id = 1;
  sample.seq = 1;
  sample.sender_id = 1;
  sample.sent_at_ms = 1;
  sample.client_msg_id = "r123456";
  sample.body.assign(options.body_bytes, 'b');
  const size_t value_bytes = codec::EncodeMessage(sample).size();
  return std::unique_ptr<Target>(
      std::make_unique<RawTarget>(std::unique_ptr<rocksdb::DB>(db), value_bytes));
}

Result<std::unique_ptr<Target>> NewEngineTarget(const TargetOptions& options) {
  ShardOptions shard;
  auto store =
      ShardStore::Open(shard, (std::filesystem::path(options.data_dir) / "engine").string());
  if (!store.ok()) return store.status();
  return std::unique_ptr<Target>(std::make_unique<EngineTarget>(std::move(store).value()));
}

}  // namespace scrollback::ycsb
