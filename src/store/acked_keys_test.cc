#include "acked_keys.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace fastchat {
namespace {

bool Names(const AckedKeys& keys, std::uint64_t hash, std::uint64_t rowid) {
  std::vector<std::uint64_t> rowids;
  keys.Candidates(hash, &rowids);
  return std::find(rowids.begin(), rowids.end(), rowid) != rowids.end();
}

// Every key added is named by its hash, through the table's growth, and a
// hash never added names (almost) nothing.
TEST(AckedKeysTest, EveryKeyAddedIsACandidateForItsHash) {
  AckedKeys keys;
  constexpr std::uint64_t kN = 100'000;
  for (std::uint64_t i = 1; i <= kN; ++i) {
    keys.Add(AckedKeys::Hash(i % 1000, "d/1/" + std::to_string(i) + "/0"), i, 1000);
  }
  EXPECT_EQ(keys.size(), kN);
  for (std::uint64_t i = 1; i <= kN; ++i) {
    ASSERT_TRUE(Names(keys, AckedKeys::Hash(i % 1000, "d/1/" + std::to_string(i) + "/0"), i)) << i;
  }
  std::size_t false_candidates = 0;
  for (std::uint64_t i = 1; i <= kN; ++i) {
    std::vector<std::uint64_t> rowids;
    keys.Candidates(AckedKeys::Hash(i % 1000, "d/2/" + std::to_string(i) + "/0"), &rowids);
    false_candidates += rowids.size();
  }
  EXPECT_LT(false_candidates, 10u);  // each one costs a read of a row, no more
}

// Generations span at most kGenerationSpanMs of expiries and go whole, once
// their newest key expired, reporting the rowids to delete.
TEST(AckedKeysTest, AGenerationIsDroppedWholeOnceItsNewestKeyExpired) {
  AckedKeys keys;
  const std::uint64_t t = 1'000'000;
  keys.Add(AckedKeys::Hash(1, "a"), 10, t);
  keys.Add(AckedKeys::Hash(1, "b"), 11, t + 1000);
  keys.Add(AckedKeys::Hash(1, "c"), 12, t + AckedKeys::kGenerationSpanMs + 1);  // a new generation
  EXPECT_TRUE(keys.DropExpired(t).empty());  // "a" expired, "b" did not: both stay
  EXPECT_TRUE(Names(keys, AckedKeys::Hash(1, "a"), 10));
  const std::vector<AckedKeys::Range> dropped = keys.DropExpired(t + 1000);
  ASSERT_EQ(dropped.size(), 1u);
  EXPECT_EQ(dropped[0].first, 10u);
  EXPECT_EQ(dropped[0].last, 11u);
  EXPECT_FALSE(Names(keys, AckedKeys::Hash(1, "a"), 10));
  EXPECT_FALSE(Names(keys, AckedKeys::Hash(1, "b"), 11));
  EXPECT_TRUE(Names(keys, AckedKeys::Hash(1, "c"), 12));
  EXPECT_EQ(keys.size(), 1u);
}

// A rowid below the current generation's first (the table was emptied and
// SQLite counts from 1 again) starts a generation of its own.
TEST(AckedKeysTest, ARowidBelowTheGenerationsFirstStartsANewOne) {
  AckedKeys keys;
  keys.Add(AckedKeys::Hash(1, "a"), 500, 100);
  keys.Add(AckedKeys::Hash(1, "b"), 1, 100);
  EXPECT_TRUE(Names(keys, AckedKeys::Hash(1, "a"), 500));
  EXPECT_TRUE(Names(keys, AckedKeys::Hash(1, "b"), 1));
  const std::vector<AckedKeys::Range> dropped = keys.DropExpired(100);
  ASSERT_EQ(dropped.size(), 2u);
  EXPECT_EQ(dropped[0].first, 500u);
  EXPECT_EQ(dropped[1].first, 1u);
}

}  // namespace
}  // namespace fastchat
