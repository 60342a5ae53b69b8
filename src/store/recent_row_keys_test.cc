#include "recent_row_keys.h"

#include <cstdint>
#include <string>

#include <gtest/gtest.h>

namespace fastchat {
namespace {

std::string KeyOf(std::uint64_t seq) { return "d/7/" + std::to_string(seq * 2654435761u) + "/0"; }

// What is Put is Taken once, with its recipient, key and size.
TEST(RecentRowKeysTest, TakeAnswersWhatWasPutOnce) {
  RecentRowKeys keys(8);
  keys.Put(5, 42, "d/1/ab/0", 100);
  keys.Put(9, 43, "g/2/1/cd/3", 7);
  RecentRowKeys::Row row;
  ASSERT_TRUE(keys.Take(9, &row));
  EXPECT_EQ(row.recipient, 43u);
  EXPECT_EQ(row.key, "g/2/1/cd/3");
  EXPECT_EQ(row.bytes, 7u);
  EXPECT_FALSE(keys.Take(9, &row));
  ASSERT_TRUE(keys.Take(5, &row));
  EXPECT_EQ(row.recipient, 42u);
  EXPECT_EQ(row.key, "d/1/ab/0");
  EXPECT_EQ(row.bytes, 100u);
  EXPECT_FALSE(keys.Take(6, &row));
  EXPECT_EQ(keys.size(), 0u);
}

// A seq Put again keeps its first entry (a row's key never changes; a
// second read of it must not take a second entry).
TEST(RecentRowKeysTest, ASeqPutTwiceKeepsOneEntry) {
  RecentRowKeys keys(4);
  keys.Put(3, 1, "a", 1);
  keys.Put(3, 1, "a", 1);
  EXPECT_EQ(keys.size(), 1u);
  RecentRowKeys::Row row;
  EXPECT_TRUE(keys.Take(3, &row));
  EXPECT_FALSE(keys.Take(3, &row));
}

// Past its capacity the oldest entries go first; every entry kept is still
// found, through many evictions and takes in between (which exercise the
// hash table's deletions), and nothing evicted or taken is found.
TEST(RecentRowKeysTest, TheOldestAreEvictedAndTheRestFound) {
  constexpr std::uint64_t kCapacity = 1024;
  RecentRowKeys keys(kCapacity);
  constexpr std::uint64_t kN = 20'000;
  for (std::uint64_t seq = 1; seq <= kN; ++seq) {
    keys.Put(seq, seq % 97, KeyOf(seq), seq % 300);
    ASSERT_LE(keys.size(), kCapacity);
    // Take every third seq a little after it was Put.
    if (seq > 10 && (seq - 10) % 3 == 0) {
      RecentRowKeys::Row row;
      ASSERT_TRUE(keys.Take(seq - 10, &row)) << seq - 10;
      ASSERT_EQ(row.key, KeyOf(seq - 10));
    }
  }
  RecentRowKeys::Row row;
  for (std::uint64_t seq = 1; seq <= kN; ++seq) {
    const bool taken = seq <= kN - 10 && seq % 3 == 0;
    const bool kept = seq > kN - kCapacity && !taken;
    ASSERT_EQ(keys.Take(seq, &row), kept) << seq;
    if (kept) {
      EXPECT_EQ(row.recipient, seq % 97);
      EXPECT_EQ(row.key, KeyOf(seq));
      EXPECT_EQ(row.bytes, seq % 300);
    }
  }
  EXPECT_EQ(keys.size(), 0u);
}

// Seqs whose low 32 bits are equal (the bits a hash slot keeps) are told
// apart by the entry.
TEST(RecentRowKeysTest, SeqsAlikeInTheirLowBitsAreToldApart) {
  RecentRowKeys keys(8);
  constexpr std::uint64_t kHigh = std::uint64_t{1} << 32;
  keys.Put(5, 1, "low", 1);
  keys.Put(5 + kHigh, 2, "high", 2);
  keys.Put(5 + 2 * kHigh, 3, "higher", 3);
  EXPECT_EQ(keys.size(), 3u);
  RecentRowKeys::Row row;
  ASSERT_TRUE(keys.Take(5 + kHigh, &row));
  EXPECT_EQ(row.key, "high");
  EXPECT_FALSE(keys.Take(5 + 3 * kHigh, &row));
  ASSERT_TRUE(keys.Take(5, &row));
  EXPECT_EQ(row.key, "low");
  ASSERT_TRUE(keys.Take(5 + 2 * kHigh, &row));
  EXPECT_EQ(row.key, "higher");
}

// A key too long to keep, or a size past 32 bits, is not kept: the caller
// reads the row instead.
TEST(RecentRowKeysTest, WhatDoesNotFitIsNotKept) {
  RecentRowKeys keys(4);
  keys.Put(1, 1, std::string(RecentRowKeys::kMaxKey + 1, 'k'), 1);
  keys.Put(2, 1, "k", std::uint64_t{1} << 32);
  keys.Put(3, 1, std::string(RecentRowKeys::kMaxKey, 'k'), 1);
  RecentRowKeys::Row row;
  EXPECT_FALSE(keys.Take(1, &row));
  EXPECT_FALSE(keys.Take(2, &row));
  ASSERT_TRUE(keys.Take(3, &row));
  EXPECT_EQ(row.key, std::string(RecentRowKeys::kMaxKey, 'k'));
}

TEST(RecentRowKeysTest, ClearForgetsEverything) {
  RecentRowKeys keys(4);
  keys.Put(1, 1, "a", 1);
  keys.Clear();
  RecentRowKeys::Row row;
  EXPECT_FALSE(keys.Take(1, &row));
  keys.Put(1, 2, "b", 2);
  ASSERT_TRUE(keys.Take(1, &row));
  EXPECT_EQ(row.key, "b");
}

}  // namespace
}  // namespace fastchat
