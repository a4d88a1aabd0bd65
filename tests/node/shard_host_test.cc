// The storage node's shard lifecycle (node/shard_host.h): shards open in the background, shard
// directories carry an identity that is checked before a directory is served, dropped shards
// close cleanly and are moved aside, failed opens are retried. Each test runs a real
// StorageNode on a temporary data directory; waits poll ShardStatuses() and are bounded.
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "node_test_util.h"
#include "scrollback/node/storage_node.h"
#include "scrollback/schema/chatstore.capnp.h"
#include "scrollback/schema/log.h"
#include "scrollback/schema/token.h"
#include "shard_directory.h"
#include "test_util.h"

namespace Catch {
template <>
struct StringMaker<scrollback::ShardState> {
  static std::string convert(scrollback::ShardState state) {
    return scrollback::ShardStateName(state);
  }
};
template <>
struct StringMaker<scrollback::ErrorCode> {
  static std::string convert(scrollback::ErrorCode code) {
    return std::string(scrollback::ErrorCodeName(code));
  }
};
}  // namespace Catch

namespace scrollback {
namespace {

namespace fs = std::filesystem;
namespace s = ::scrollback::schema;

using testing::TempDir;

// Two halves and two quarters of the ring.
constexpr TokenRange kLowHalf{0, (1ull << 63) - 1};
constexpr TokenRange kHighHalf{1ull << 63, UINT64_MAX};
constexpr TokenRange kFirstQuarter{0, (1ull << 62) - 1};
constexpr TokenRange kSecondQuarter{1ull << 62, (1ull << 63) - 1};

ShardAssignment Assignment(uint64_t shard_id, TokenRange range, uint64_t placement_version,
                           uint64_t epoch = 1) {
  ShardAssignment a;
  a.shard_id = shard_id;
  a.range = range;
  a.epoch = epoch;
  a.role = ShardRole::kPrimary;
  a.placement_version = placement_version;
  return a;
}

// The identity a node would write for `a` at open.
ShardIdentity IdentityFor(const ShardAssignment& a, const std::string& node_id) {
  ShardIdentity id;
  id.shard_id = a.shard_id;
  id.range = a.range;
  id.placement_version = a.placement_version;
  id.epoch = a.epoch;
  id.role = a.role;
  id.node_id = node_id;
  return id;
}

// The smallest conversation id whose token lies in `range`.
uint64_t ConvIn(TokenRange range) {
  for (uint64_t id = 1;; ++id) {
    if (range.Contains(TokenOf(id))) return id;
  }
}

// Polls `done` every 5 ms until it returns true or `limit` passes; returns whether it did.
template <typename Fn>
bool WaitUntil(Fn&& done, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// Whether `holds` stays true, polled every 5 ms, for all of `period`.
template <typename Fn>
bool HoldsFor(Fn&& holds, std::chrono::milliseconds period) {
  const auto deadline = std::chrono::steady_clock::now() + period;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!holds()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return holds();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> EntriesOf(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// The identity in `dir`; fails the test if it cannot be read.
std::optional<ShardIdentity> IdentityIn(const std::string& dir) {
  auto read = ReadShardIdentity(dir);
  INFO(dir << ": " << read.status().ToString());
  REQUIRE(read.ok());
  return *read;
}

// What a test compares of two status snapshots.
bool SameStatuses(const std::vector<ShardStatus>& a, const std::vector<ShardStatus>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!(a[i].assignment == b[i].assignment) || a[i].state != b[i].state ||
        a[i].open_attempts != b[i].open_attempts || a[i].last_error != b[i].last_error) {
      return false;
    }
  }
  return true;
}

// A started node on a temporary data directory.
struct NodeFixture {
  explicit NodeFixture(bool keep_dropped_directories = false)
      : options(testing::SmallNodeOptions("node-a", dir.Sub("data"))) {
    options.keep_dropped_directories = keep_dropped_directories;
    auto started = StorageNode::Start(options);
    INFO(started.status().ToString());
    REQUIRE(started.ok());
    node = std::move(started).value();
  }

  std::string ShardDir(uint64_t shard_id) const {
    return (fs::path(options.data_dir) / ("shard-" + std::to_string(shard_id))).string();
  }
  std::string DroppedDir() const { return (fs::path(options.data_dir) / "dropped").string(); }

  std::optional<ShardStatus> StatusOf(uint64_t shard_id) const {
    for (const ShardStatus& status : node->ShardStatuses()) {
      if (status.assignment.shard_id == shard_id) return status;
    }
    return std::nullopt;
  }
  bool IsIn(uint64_t shard_id, ShardState state) const {
    auto status = StatusOf(shard_id);
    return status && status->state == state;
  }
  // Waits (bounded) until shard `shard_id` is in `state`.
  bool WaitFor(uint64_t shard_id, ShardState state) {
    return WaitUntil([&] { return IsIn(shard_id, state); });
  }
  // The serving store of `shard_id`, or null.
  std::shared_ptr<ShardStore> StoreOf(uint64_t shard_id) const {
    for (const HostedShard& shard : node->Shards()) {
      if (shard.assignment.shard_id == shard_id) return shard.store;
    }
    return nullptr;
  }

  TempDir dir;  // Outlives the node.
  NodeOptions options;
  std::unique_ptr<StorageNode> node;
};

// Writes `identity` into the (new) directory of its shard, as an earlier placement would have.
void PlantIdentity(const NodeFixture& f, const ShardIdentity& identity) {
  const std::string dir = f.ShardDir(identity.shard_id);
  fs::create_directories(dir);
  Status written = WriteShardIdentity(dir, identity);
  INFO(written.ToString());
  REQUIRE(written.ok());
}

// Creates conversation `conv_id` through `store`; fails the test on error.
void CreateConversation(ShardStore& store, uint64_t conv_id) {
  auto created = store.CreateConversation({conv_id, 1, {2}, "t"});
  INFO(created.status().ToString());
  REQUIRE(created.ok());
}

TEST_CASE("a new shard opens in the background and its directory names its shard and placement") {
  NodeFixture f;
  const ShardAssignment low = Assignment(1, kLowHalf, 3, 2);
  const ShardAssignment high = Assignment(2, kHighHalf, 3, 5);
  REQUIRE(f.node->AssignShards(3, {low, high}, "map-3").ok());
  // Assigned at once, whatever state the background open has reached.
  auto statuses = f.node->ShardStatuses();
  REQUIRE(statuses.size() == 2);
  CHECK(statuses[0].assignment == low);
  CHECK(statuses[1].assignment == high);
  CHECK(f.node->map_version() == 3);

  REQUIRE(f.WaitFor(1, ShardState::kServing));
  REQUIRE(f.WaitFor(2, ShardState::kServing));
  for (const ShardStatus& status : f.node->ShardStatuses()) {
    CHECK(status.open_attempts == 1);
    CHECK(status.last_error.empty());
  }
  auto shards = f.node->Shards();
  REQUIRE(shards.size() == 2);
  CHECK(shards[0].assignment == low);
  CHECK(shards[1].assignment == high);
  REQUIRE(shards[0].store);
  CHECK(shards[0].store->shard_id() == 1);
  CHECK(shards[0].store->token_range() == kLowHalf);
  REQUIRE(shards[1].store);
  CHECK(shards[1].store->shard_id() == 2);

  for (const ShardAssignment& a : {low, high}) {
    INFO("shard " << a.shard_id);
    auto identity = IdentityIn(f.ShardDir(a.shard_id));
    REQUIRE(identity.has_value());
    CHECK(identity->shard_id == a.shard_id);
    CHECK(identity->range == a.range);
    CHECK(identity->placement_version == 3);
    CHECK(identity->epoch == a.epoch);
    CHECK(identity->role == ShardRole::kPrimary);
    CHECK_FALSE(identity->clean_close);  // Written at open.
    CHECK(identity->node_id == "node-a");
  }
}

TEST_CASE("a dropped shard is closed cleanly at its last lsn and its directory moved to dropped") {
  NodeFixture f;
  REQUIRE(f.node->AssignShards(3, {Assignment(1, TokenRange::Full(), 3)}, "").ok());
  REQUIRE(f.WaitFor(1, ShardState::kServing));
  const uint64_t conv = ConvIn(TokenRange::Full());
  uint64_t lsn = 0;
  {
    std::shared_ptr<ShardStore> store = f.StoreOf(1);
    REQUIRE(store);
    CreateConversation(*store, conv);
    lsn = store->LatestSequence();
  }  // Nobody but the node holds the store now: the drop can close it.
  REQUIRE(lsn > 0);
  auto opened_identity = IdentityIn(f.ShardDir(1));
  REQUIRE(opened_identity.has_value());
  CHECK(opened_identity->lsn < lsn);

  const int64_t before_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count();
  REQUIRE(f.node->AssignShards(4, {}, "").ok());
  CHECK(f.node->ShardStatuses().empty());
  CHECK(f.node->Shards().empty());
  REQUIRE(WaitUntil([&] { return EntriesOf(f.DroppedDir()).size() == 1; }));
  const int64_t after_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();

  CHECK_FALSE(fs::exists(f.ShardDir(1)));
  const std::string name = EntriesOf(f.DroppedDir())[0];
  INFO("moved to dropped/" << name);
  // dropped/shard-<id>.p<placement>.<unix ms>
  const std::string prefix = "shard-1.p3.";
  REQUIRE(name.starts_with(prefix));
  const std::string ms = name.substr(prefix.size());
  REQUIRE_FALSE(ms.empty());
  REQUIRE(std::all_of(ms.begin(), ms.end(), [](char c) { return c >= '0' && c <= '9'; }));
  CHECK(std::stoll(ms) >= before_ms);
  CHECK(std::stoll(ms) <= after_ms);

  const std::string moved = (fs::path(f.DroppedDir()) / name).string();
  auto identity = IdentityIn(moved);
  REQUIRE(identity.has_value());
  CHECK(identity->clean_close);
  CHECK(identity->lsn == lsn);
  CHECK(identity->shard_id == 1);
  CHECK(identity->range == TokenRange::Full());
  CHECK(identity->placement_version == 3);
  CHECK(identity->node_id == "node-a");

  // Moved, never deleted: the data is all there.
  ShardOptions options;
  options.shard_id = 1;
  options.token_range = TokenRange::Full();
  auto reopened = ShardStore::Open(options, moved);
  INFO(reopened.status().ToString());
  REQUIRE(reopened.ok());
  CHECK((*reopened)->GetConversation(conv).ok());
}

TEST_CASE("with keep_dropped_directories a dropped shard stays in place, closed cleanly") {
  NodeFixture f(/*keep_dropped_directories=*/true);
  REQUIRE(f.node->AssignShards(3, {Assignment(1, TokenRange::Full(), 3)}, "").ok());
  REQUIRE(f.WaitFor(1, ShardState::kServing));
  const uint64_t conv = ConvIn(TokenRange::Full());
  uint64_t lsn = 0;
  {
    std::shared_ptr<ShardStore> store = f.StoreOf(1);
    REQUIRE(store);
    CreateConversation(*store, conv);
    lsn = store->LatestSequence();
  }

  REQUIRE(f.node->AssignShards(4, {}, "").ok());
  REQUIRE(WaitUntil([&] {
    auto identity = ReadShardIdentity(f.ShardDir(1));
    return identity.ok() && *identity && (*identity)->clean_close;
  }));
  auto identity = IdentityIn(f.ShardDir(1));
  REQUIRE(identity.has_value());
  CHECK(identity->lsn == lsn);
  // Nothing moves it afterwards either.
  CHECK(HoldsFor([&] { return !fs::exists(f.DroppedDir()) && fs::exists(f.ShardDir(1)); },
                 std::chrono::milliseconds(300)));

  // Assigned again, the node serves the same data from the same directory.
  REQUIRE(f.node->AssignShards(5, {Assignment(1, TokenRange::Full(), 3)}, "").ok());
  REQUIRE(f.WaitFor(1, ShardState::kServing));
  std::shared_ptr<ShardStore> store = f.StoreOf(1);
  REQUIRE(store);
  CHECK(store->GetConversation(conv).ok());
}

TEST_CASE("a directory from another placement is refused and left untouched until it is assigned") {
  NodeFixture f;
  // Shard 2's directory was made for placement 2; the map now places shard 2 at version 5.
  const ShardAssignment earlier = Assignment(2, kHighHalf, 2);
  PlantIdentity(f, IdentityFor(earlier, "node-old"));
  const std::string identity_file = (fs::path(f.ShardDir(2)) / kShardIdentityFile).string();
  const std::string planted = ReadFile(identity_file);
  REQUIRE_FALSE(planted.empty());

  REQUIRE(
      f.node->AssignShards(5, {Assignment(1, kLowHalf, 5), Assignment(2, kHighHalf, 5)}, "").ok());
  REQUIRE(f.WaitFor(2, ShardState::kRefused));
  REQUIRE(f.WaitFor(1, ShardState::kServing));
  auto refused = f.StatusOf(2);
  REQUIRE(refused);
  CHECK_FALSE(refused->last_error.empty());
  // Refusal is final for this assignment: no retries (a retry would come after 50 ms).
  CHECK(
      HoldsFor([&] { return f.IsIn(2, ShardState::kRefused) && f.StatusOf(2)->open_attempts == 1; },
               std::chrono::milliseconds(300)));

  // The other shard is served as usual.
  auto shards = f.node->Shards();
  REQUIRE(shards.size() == 1);
  CHECK(shards[0].assignment.shard_id == 1);
  CreateConversation(*shards[0].store, ConvIn(kLowHalf));
  shards.clear();

  // Untouched: the same identity, no database created beside it.
  CHECK(ReadFile(identity_file) == planted);
  CHECK(EntriesOf(f.ShardDir(2)) == std::vector<std::string>{kShardIdentityFile});

  // The map places shard 2 where the directory says: it opens.
  REQUIRE(f.node->AssignShards(6, {Assignment(1, kLowHalf, 5), earlier}, "").ok());
  REQUIRE(f.WaitFor(2, ShardState::kServing));
  CHECK(f.StatusOf(2)->last_error.empty());
  CHECK(f.IsIn(1, ShardState::kServing));
  auto identity = IdentityIn(f.ShardDir(2));
  REQUIRE(identity.has_value());
  CHECK(identity->placement_version == 2);
  CHECK(identity->node_id == "node-a");
  CHECK_FALSE(identity->clean_close);
}

TEST_CASE("a directory with a newer epoch than the map's is refused until the map reaches it") {
  NodeFixture f;
  PlantIdentity(f, IdentityFor(Assignment(1, TokenRange::Full(), 4, /*epoch=*/7), "node-old"));
  const std::string identity_file = (fs::path(f.ShardDir(1)) / kShardIdentityFile).string();
  const std::string planted = ReadFile(identity_file);

  REQUIRE(f.node->AssignShards(6, {Assignment(1, TokenRange::Full(), 4, /*epoch=*/3)}, "").ok());
  REQUIRE(f.WaitFor(1, ShardState::kRefused));
  CHECK(f.StatusOf(1)->last_error.find("epoch") != std::string::npos);
  CHECK(f.node->Shards().empty());
  CHECK(ReadFile(identity_file) == planted);

  // The map's epoch catches up with the directory's: the refused shard is tried again.
  REQUIRE(f.node->AssignShards(7, {Assignment(1, TokenRange::Full(), 4, /*epoch=*/7)}, "").ok());
  REQUIRE(f.WaitFor(1, ShardState::kServing));
  auto identity = IdentityIn(f.ShardDir(1));
  REQUIRE(identity.has_value());
  CHECK(identity->epoch == 7);
}

TEST_CASE("a directory with a database but no identity file is adopted and given one") {
  NodeFixture f;
  const uint64_t conv = ConvIn(kLowHalf);
  {
    fs::create_directories(f.options.data_dir);
    ShardOptions options;
    options.shard_id = 1;
    options.token_range = kLowHalf;
    auto legacy = ShardStore::Open(options, f.ShardDir(1));
    INFO(legacy.status().ToString());
    REQUIRE(legacy.ok());
    CreateConversation(**legacy, conv);
  }
  REQUIRE_FALSE(fs::exists(fs::path(f.ShardDir(1)) / kShardIdentityFile));

  REQUIRE(f.node->AssignShards(3, {Assignment(1, kLowHalf, 3)}, "").ok());
  REQUIRE(f.WaitFor(1, ShardState::kServing));
  std::shared_ptr<ShardStore> store = f.StoreOf(1);
  REQUIRE(store);
  CHECK(store->GetConversation(conv).ok());
  auto identity = IdentityIn(f.ShardDir(1));
  REQUIRE(identity.has_value());
  CHECK(identity->shard_id == 1);
  CHECK(identity->range == kLowHalf);
  CHECK(identity->placement_version == 3);
}

TEST_CASE("a shard whose directory is still open in the process is retried until it is released") {
  NodeFixture f;
  const uint64_t conv = ConvIn(TokenRange::Full());
  fs::create_directories(f.options.data_dir);
  ShardOptions options;
  options.shard_id = 1;
  options.token_range = TokenRange::Full();
  auto opened = ShardStore::Open(options, f.ShardDir(1));
  INFO(opened.status().ToString());
  REQUIRE(opened.ok());
  std::unique_ptr<ShardStore> holder = std::move(opened).value();  // Holds the RocksDB LOCK.
  CreateConversation(*holder, conv);

  REQUIRE(f.node->AssignShards(3, {Assignment(1, TokenRange::Full(), 3)}, "").ok());
  REQUIRE(WaitUntil([&] {
    auto status = f.StatusOf(1);
    return status && status->open_attempts > 1;
  }));
  auto status = f.StatusOf(1);
  REQUIRE(status);
  CHECK(status->state == ShardState::kOpening);  // Retried, not refused.
  CHECK_FALSE(status->last_error.empty());
  CHECK(f.node->Shards().empty());

  holder.reset();  // Releases the LOCK.
  REQUIRE(f.WaitFor(1, ShardState::kServing));
  CHECK(f.StatusOf(1)->last_error.empty());
  std::shared_ptr<ShardStore> store = f.StoreOf(1);
  REQUIRE(store);
  CHECK(store->GetConversation(conv).ok());
}

TEST_CASE("overlapping ranges and repeated shard ids are invalid and an older map is ignored") {
  NodeFixture f;
  REQUIRE(f.node->AssignShards(5, {Assignment(1, kLowHalf, 5)}, "map-5").ok());
  REQUIRE(f.WaitFor(1, ShardState::kServing));
  const auto before = f.node->ShardStatuses();

  Status overlapping = f.node->AssignShards(
      6, {Assignment(1, {0, 1000}, 6), Assignment(2, {1000, 2000}, 6)}, "map-6");
  CHECK(overlapping.code() == ErrorCode::kInvalidArgument);
  Status repeated =
      f.node->AssignShards(6, {Assignment(1, kLowHalf, 6), Assignment(1, kHighHalf, 6)}, "map-6");
  CHECK(repeated.code() == ErrorCode::kInvalidArgument);
  CHECK(SameStatuses(f.node->ShardStatuses(), before));
  CHECK(f.node->map_version() == 5);

  // An older map (a late notification) changes nothing.
  Status older = f.node->AssignShards(4, {Assignment(2, kHighHalf, 4)}, "map-4");
  INFO(older.ToString());
  CHECK(older.ok());
  CHECK(SameStatuses(f.node->ShardStatuses(), before));
  CHECK(f.node->map_version() == 5);
  auto shards = f.node->Shards();
  REQUIRE(shards.size() == 1);
  CHECK(shards[0].assignment.shard_id == 1);
  CHECK_FALSE(fs::exists(f.ShardDir(2)));
}

TEST_CASE("over RPC the keys of a refused shard answer unavailable and the node is not serving") {
  NodeFixture f;
  // Shard 1 (first quarter) has a directory from placement 2, shard 2 (second quarter) is new,
  // and the node hosts nothing of the upper half.
  const ShardAssignment earlier = Assignment(1, kFirstQuarter, 2);
  PlantIdentity(f, IdentityFor(earlier, "node-old"));
  REQUIRE(
      f.node
          ->AssignShards(4, {Assignment(1, kFirstQuarter, 4), Assignment(2, kSecondQuarter, 4)}, "")
          .ok());
  REQUIRE(f.WaitFor(1, ShardState::kRefused));
  REQUIRE(f.WaitFor(2, ShardState::kServing));

  kj::AsyncIoContext io = kj::setupAsyncIo();
  const std::string node_address = f.node->address();
  auto address = io.provider->getNetwork().parseAddress(node_address.c_str()).wait(io.waitScope);
  auto stream = address->connect().wait(io.waitScope);
  capnp::TwoPartyClient rpc(*stream);
  auto client = rpc.bootstrap().castAs<s::Node>();

  auto create = [&](uint64_t conv) {
    auto request = client.createConversationRequest();
    request.setConvId(conv);
    request.setCreatorId(1);
    request.setTitle("t");
    auto reply = request.send().wait(io.waitScope);
    return reply.hasError() ? reply.getError().getCode() : s::ErrorCode::OK;
  };
  auto get = [&](uint64_t conv) {
    auto request = client.getConversationRequest();
    request.setConvId(conv);
    auto reply = request.send().wait(io.waitScope);
    return reply.hasError() ? reply.getError().getCode() : s::ErrorCode::OK;
  };
  auto health = [&] { return client.healthRequest().send().wait(io.waitScope); };

  const uint64_t in_refused = ConvIn(kFirstQuarter);
  const uint64_t in_serving = ConvIn(kSecondQuarter);
  const uint64_t not_hosted = ConvIn(kHighHalf);

  CHECK(get(in_refused) == s::ErrorCode::UNAVAILABLE);
  CHECK(create(in_refused) == s::ErrorCode::UNAVAILABLE);
  CHECK(create(in_serving) == s::ErrorCode::OK);
  CHECK(get(in_serving) == s::ErrorCode::OK);
  CHECK(get(not_hosted) == s::ErrorCode::NOT_OWNER);
  {
    auto reply = health();
    CHECK_FALSE(reply.getServing());
    CHECK(reply.getMapVersion() == 4);
  }

  // Placed where its directory says, the shard opens and the node serves everything it holds.
  REQUIRE(f.node->AssignShards(5, {earlier, Assignment(2, kSecondQuarter, 4)}, "").ok());
  REQUIRE(f.WaitFor(1, ShardState::kServing));
  {
    auto reply = health();
    CHECK(reply.getServing());
    CHECK(reply.getMapVersion() == 5);
  }
  CHECK(create(in_refused) == s::ErrorCode::OK);
  CHECK(get(in_refused) == s::ErrorCode::OK);
  CHECK(get(in_serving) == s::ErrorCode::OK);
  CHECK(get(not_hosted) == s::ErrorCode::NOT_OWNER);
}

TEST_CASE(
    "a new placement of a shard on the same node moves the old copy aside and starts afresh") {
  // The old copy closes and moves to dropped/ before the new one opens: the new open never sees
  // (and never refuses) the directory of the placement it replaces.
  NodeFixture f;
  REQUIRE(f.node->AssignShards(3, {Assignment(1, TokenRange::Full(), 3)}, "").ok());
  REQUIRE(f.WaitFor(1, ShardState::kServing));
  const uint64_t conv = ConvIn(TokenRange::Full());
  {
    std::shared_ptr<ShardStore> store = f.StoreOf(1);
    REQUIRE(store);
    CreateConversation(*store, conv);
  }
  REQUIRE(f.node->AssignShards(5, {Assignment(1, TokenRange::Full(), 5)}, "").ok());
  REQUIRE(WaitUntil([&] {
    auto status = f.StatusOf(1);
    return status && status->assignment.placement_version == 5 &&
           status->state != ShardState::kOpening;
  }));
  auto status = f.StatusOf(1);
  INFO(status->last_error);
  REQUIRE(status->state == ShardState::kServing);
  auto identity = IdentityIn(f.ShardDir(1));
  REQUIRE(identity.has_value());
  CHECK(identity->placement_version == 5);
  std::shared_ptr<ShardStore> fresh = f.StoreOf(1);
  REQUIRE(fresh);
  CHECK(fresh->GetConversation(conv).status().code() == ErrorCode::kNotFound);
  auto dropped = EntriesOf(f.DroppedDir());
  REQUIRE(dropped.size() == 1);
  CHECK(dropped[0].rfind("shard-1.p3.", 0) == 0);
}

TEST_CASE("a map that gives a serving shard an older epoch does not lower its recorded epoch") {
  NodeFixture f;
  REQUIRE(f.node->AssignShards(3, {Assignment(1, TokenRange::Full(), 3, /*epoch=*/4)}, "").ok());
  REQUIRE(f.WaitFor(1, ShardState::kServing));
  REQUIRE(f.node->AssignShards(4, {Assignment(1, TokenRange::Full(), 3, /*epoch=*/2)}, "").ok());
  auto status = f.StatusOf(1);
  REQUIRE(status.has_value());
  CHECK(status->assignment.epoch == 4);
  REQUIRE(f.node->AssignShards(5, {}, "").ok());  // Dropped: the identity is written at close.
  REQUIRE(WaitUntil([&] { return !EntriesOf(f.DroppedDir()).empty(); }));
  auto dropped = EntriesOf(f.DroppedDir());
  auto identity = IdentityIn((fs::path(f.DroppedDir()) / dropped[0]).string());
  REQUIRE(identity.has_value());
  CHECK(identity->epoch == 4);
}

TEST_CASE("a replica promoted to primary is reopened: its outbox and sequences continue") {
  TempDir dir;
  auto a = StorageNode::Start(testing::SmallNodeOptions("node-a", dir.Sub("a")));
  auto b = StorageNode::Start(testing::SmallNodeOptions("node-b", dir.Sub("b")));
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  ShardAssignment primary = Assignment(1, TokenRange::Full(), 1);
  primary.primary_node = "node-a";
  primary.primary_address = (*a)->address();
  ShardAssignment replica = primary;
  replica.role = ShardRole::kReplica;
  REQUIRE((*a)->AssignShards(1, {primary}, "").ok());
  REQUIRE(WaitUntil([&] { return !(*a)->Shards().empty(); }));
  auto store_a = (*a)->Shards().front().store;
  // Node b bootstraps its replica of the empty shard; every write below reaches it by the log
  // (no fan-out runs here: the outbox keeps every record).
  REQUIRE((*b)->AssignShards(1, {replica}, "").ok());
  REQUIRE(WaitUntil([&] { return !(*b)->Shards().empty(); }));
  REQUIRE(store_a->CreateConversation({7, 1, {2, 3}, "t"}).ok());
  for (int i = 0; i < 10; ++i) {
    REQUIRE(store_a->SendMessage({7, 1, "m" + std::to_string(i), "x"}).ok());
  }
  REQUIRE(WaitUntil([&] {
    auto shards = (*b)->Shards();
    return !shards.empty() && shards.front().store->LatestSequence() == store_a->LatestSequence();
  }));
  auto pending_before = store_a->ReadOutbox("", 1000);
  REQUIRE(pending_before.ok());
  REQUIRE(!pending_before->records.empty());

  // Switch: a stops hosting, b becomes primary at epoch 2.
  REQUIRE((*a)->AssignShards(2, {}, "").ok());
  ShardAssignment promoted = primary;
  promoted.epoch = 2;
  promoted.primary_node = "node-b";
  promoted.primary_address = (*b)->address();
  REQUIRE((*b)->AssignShards(2, {promoted}, "").ok());
  std::shared_ptr<ShardStore> store_b;
  REQUIRE(WaitUntil([&] {
    auto shards = (*b)->Shards();
    if (shards.empty() || shards.front().assignment.role != ShardRole::kPrimary) return false;
    store_b = shards.front().store;
    return true;
  }));
  // Sends continue the sequence, and their outbox records join the pending ones instead of
  // overwriting them (the reopened store knows where the outbox ends).
  auto sent = store_b->SendMessage({7, 2, "after", "on b"});
  REQUIRE(sent.ok());
  CHECK(sent->seq == 11);
  // A send retried after the primary changed (its reply lost on a) is still the first one.
  auto retried = store_b->SendMessage({7, 1, "m3", "x"});
  REQUIRE(retried.ok());
  CHECK(retried->duplicate);
  CHECK(retried->seq == 4);
  auto pending_after = store_b->ReadOutbox("", 1000);
  REQUIRE(pending_after.ok());
  CHECK(pending_after->records.size() == pending_before->records.size() + 3);
  (*a)->Stop();
  (*b)->Stop();
}

TEST_CASE("a primary demoted to replica is rebuilt from its new primary, never merged") {
  TempDir dir;
  auto a = StorageNode::Start(testing::SmallNodeOptions("node-a", dir.Sub("a")));
  auto b = StorageNode::Start(testing::SmallNodeOptions("node-b", dir.Sub("b")));
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  ShardAssignment on_a = Assignment(1, TokenRange::Full(), 1);
  on_a.primary_node = "node-a";
  on_a.primary_address = (*a)->address();
  ShardAssignment b_follows_a = on_a;
  b_follows_a.role = ShardRole::kReplica;
  REQUIRE((*a)->AssignShards(1, {on_a}, "").ok());
  REQUIRE(WaitUntil([&] { return !(*a)->Shards().empty(); }));
  auto store_a = (*a)->Shards().front().store;
  REQUIRE(store_a->CreateConversation({7, 1, {2}, "t"}).ok());
  REQUIRE((*b)->AssignShards(1, {b_follows_a}, "").ok());
  REQUIRE(WaitUntil([&] {
    auto shards = (*b)->Shards();
    return !shards.empty() && shards.front().store->LatestSequence() == store_a->LatestSequence();
  }));

  // b becomes primary at epoch 2; a, cut off, still takes a write of its own (never acked by
  // the new history), then learns the new map and becomes b's replica: its first pull finds it
  // past the start of epoch 2 (the rejoin check), and it is rebuilt.
  ShardAssignment on_b = on_a;
  on_b.epoch = 2;
  on_b.primary_node = "node-b";
  on_b.primary_address = (*b)->address();
  REQUIRE((*b)->AssignShards(2, {on_b}, "").ok());
  std::shared_ptr<ShardStore> store_b;
  REQUIRE(WaitUntil([&] {
    auto shards = (*b)->Shards();
    if (shards.empty() || shards.front().assignment.role != ShardRole::kPrimary) return false;
    store_b = shards.front().store;
    return true;
  }));
  REQUIRE(store_a->SendMessage({7, 1, "lost", "only on the old primary"}).ok());
  REQUIRE(store_b->SendMessage({7, 2, "kept", "on the new primary"}).ok());
  store_a.reset();
  ShardAssignment a_follows_b = on_b;
  a_follows_b.role = ShardRole::kReplica;
  REQUIRE((*a)->AssignShards(2, {a_follows_b}, "").ok());
  std::shared_ptr<ShardStore> rebuilt;
  REQUIRE(WaitUntil([&] {
    auto shards = (*a)->Shards();
    if (shards.empty() || shards.front().assignment.role != ShardRole::kReplica) return false;
    // Kept only once it is the rebuilt copy: holding the diverged one would keep it from
    // closing (and being moved aside).
    if (shards.front().store->LatestSequence() != store_b->LatestSequence()) return false;
    rebuilt = shards.front().store;
    return true;
  }));
  auto want = store_b->Checksum();
  auto got = rebuilt->Checksum();
  REQUIRE(want.ok());
  REQUIRE(got.ok());
  CHECK(got->checksum == want->checksum);
  auto first = rebuilt->GetMessage(7, 1);
  REQUIRE(first.ok());
  CHECK(first->body == "on the new primary");  // Not the old primary's diverged write.
  // The old copy was moved aside, not deleted.
  CHECK(!EntriesOf(dir.Sub("a") + "/dropped").empty());
  rebuilt.reset();
  store_b.reset();
  (*a)->Stop();
  (*b)->Stop();
}

}  // namespace
}  // namespace scrollback
