#include "scrollback/router/shard_map.h"

#include <catch2/catch.hpp>
#include <random>

namespace scrollback {
namespace {

std::vector<NodeInfo> Nodes(int n) {
  std::vector<NodeInfo> nodes;
  for (int i = 1; i <= n; ++i) {
    nodes.push_back({"node-" + std::to_string(i), "127.0.0.1:" + std::to_string(7000 + i), ""});
  }
  return nodes;
}

TEST_CASE("a uniform map covers the ring with equal ranges and round-robin primaries") {
  ShardMap map = ShardMap::Uniform(3, 16, Nodes(3));
  REQUIRE(map.shards().size() == 16);
  CHECK(map.version() == 3);
  CHECK(map.shards()[0].range.first == 0);
  CHECK(map.shards()[1].range.first == 1ull << 60);  // 2^64 / 16.
  CHECK(map.shards().back().range.last == UINT64_MAX);
  CHECK(map.shards()[0].primary == "node-1");
  CHECK(map.shards()[4].primary == "node-2");
  // It passes its own validation.
  CHECK(ShardMap::Make(3, map.shards(), map.nodes()).ok());
}

TEST_CASE("every token maps to the one shard whose range contains it") {
  ShardMap map = ShardMap::Uniform(1, 7, Nodes(2));
  std::mt19937_64 rng(11);
  for (int i = 0; i < 10000; ++i) {
    uint64_t token = rng();
    CHECK(map.ShardForToken(token).range.Contains(token));
  }
  CHECK(map.ShardForToken(0).shard_id == 1);
  CHECK(map.ShardForToken(UINT64_MAX).shard_id == 7);
  CHECK(map.ShardForKey(42).range.Contains(TokenOf(42)));
}

TEST_CASE("maps with gaps, overlaps, duplicates or unknown nodes are refused") {
  auto nodes = Nodes(2);
  std::vector<ShardInfo> ok = {{1, {0, 99}, "node-1", {}, 1},
                               {2, {100, UINT64_MAX}, "node-2", {}, 1}};
  CHECK(ShardMap::Make(1, ok, nodes).ok());
  auto gap = ok;
  gap[1].range.first = 101;
  CHECK(ShardMap::Make(1, gap, nodes).status().code() == ErrorCode::kInvalidArgument);
  auto overlap = ok;
  overlap[1].range.first = 50;
  CHECK_FALSE(ShardMap::Make(1, overlap, nodes).ok());
  auto short_end = ok;
  short_end[1].range.last = 1000;
  CHECK_FALSE(ShardMap::Make(1, short_end, nodes).ok());
  auto duplicate = ok;
  duplicate[1].shard_id = 1;
  CHECK_FALSE(ShardMap::Make(1, duplicate, nodes).ok());
  auto stranger = ok;
  stranger[0].primary = "node-9";
  CHECK_FALSE(ShardMap::Make(1, stranger, nodes).ok());
  CHECK_FALSE(ShardMap::Make(1, {}, nodes).ok());
}

TEST_CASE("a shard map survives serialization and garbage does not parse") {
  ShardMap map = ShardMap::Uniform(9, 5, Nodes(3));
  auto parsed = ShardMap::Parse(map.Serialize());
  REQUIRE(parsed.ok());
  CHECK(parsed->version() == 9);
  REQUIRE(parsed->shards().size() == 5);
  CHECK(parsed->shards()[3].range == map.shards()[3].range);
  CHECK(parsed->FindNode("node-2")->address == "127.0.0.1:7002");
  CHECK(ShardMap::Parse("not a map").status().code() == ErrorCode::kCorruption);
  CHECK_FALSE(ShardMap::Parse(std::string(64, '\xff')).ok());
}

}  // namespace
}  // namespace scrollback
