// GroupHold: entries held for their predecessor come out in chain order once
// it is sent; what is held is bounded in entries and bytes; the oldest
// entry's hold time is known for the deadline; Clear() returns every seq.
#include "group_hold.h"

#include <algorithm>

#include <gtest/gtest.h>

namespace fastchat::server {
namespace {

constexpr std::uint64_t kG = 7, kH = 8;
using Time = GroupHold::Time;

GroupHold::Entry E(std::uint64_t group, std::uint64_t seq, std::uint64_t prev, std::size_t bytes = 10,
                   Time since = Time{} + std::chrono::seconds(1)) {
  return GroupHold::Entry{group, seq, prev, std::make_shared<const std::string>(bytes, 'x'), since};
}

TEST(GroupHold, HeldEntriesComeOutInChainOrderOnceTheirPredecessorIsKnown) {
  GroupHold h(16, 1 << 20);
  // Known(kG) is 10; 20 (naming 10) is in flight; 30 and 40 came first.
  ASSERT_TRUE(h.Hold(E(kG, 40, 30)));
  ASSERT_TRUE(h.Hold(E(kG, 30, 20)));
  ASSERT_TRUE(h.Hold(E(kH, 35, 33)));
  EXPECT_EQ(h.entries(), 3u);
  EXPECT_FALSE(h.Next(kG, 10).has_value()) << "30 names 20, which was not sent";
  // 20 arrives and is sent: Known(kG) = 20.
  auto a = h.Next(kG, 20);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->seq, 30u);
  EXPECT_FALSE(h.Next(kG, 20).has_value()) << "40 names 30: not yet sent";
  auto b = h.Next(kG, 30);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->seq, 40u);
  EXPECT_FALSE(h.Next(kG, 40).has_value());
  // The other group's entry is its own.
  EXPECT_FALSE(h.Next(kH, 32).has_value());
  auto c = h.Next(kH, 33);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->seq, 35u);
  EXPECT_TRUE(h.empty());
  EXPECT_EQ(h.bytes(), 0u);
}

TEST(GroupHold, TheUsersOwnEntryIsHeldWithoutAnEvent) {
  GroupHold h(16, 1 << 20);
  ASSERT_TRUE(h.Hold(GroupHold::Entry{kG, 30, 20, nullptr, Time{}}));  // own, naming 20
  ASSERT_TRUE(h.Hold(E(kG, 40, 30)));                                  // another's, naming the own one
  EXPECT_EQ(h.bytes(), 10u);
  auto own = h.Next(kG, 20);
  ASSERT_TRUE(own.has_value());
  EXPECT_EQ(own->event, nullptr);
  EXPECT_EQ(h.Next(kG, 30)->seq, 40u);
}

TEST(GroupHold, ARepeatOfAHeldEntryIsNotHeldTwice) {
  GroupHold h(16, 1 << 20);
  ASSERT_TRUE(h.Hold(E(kG, 30, 20)));
  ASSERT_TRUE(h.Hold(E(kG, 30, 20)));
  EXPECT_EQ(h.entries(), 1u);
  EXPECT_EQ(h.bytes(), 10u);
}

TEST(GroupHold, TheEntryBoundRefusesOneMore) {
  GroupHold h(2, 1 << 20);
  EXPECT_TRUE(h.Hold(E(kG, 30, 20)));
  EXPECT_TRUE(h.Hold(E(kG, 40, 30)));
  EXPECT_FALSE(h.Hold(E(kG, 50, 40)));
  EXPECT_EQ(h.entries(), 2u);
  ASSERT_TRUE(h.Next(kG, 20).has_value());
  EXPECT_TRUE(h.Hold(E(kG, 50, 40))) << "room again once one went";
}

TEST(GroupHold, TheByteBoundRefusesAnEntryThatWouldPassIt) {
  GroupHold h(16, 100);
  EXPECT_TRUE(h.Hold(E(kG, 30, 20, 60)));
  EXPECT_FALSE(h.Hold(E(kG, 40, 30, 41)));
  EXPECT_TRUE(h.Hold(E(kG, 40, 30, 40)));
  EXPECT_EQ(h.bytes(), 100u);
  EXPECT_FALSE(h.Hold(E(kH, 50, 45, 1)));
}

TEST(GroupHold, NothingIsHeldWithABoundOfZero) {
  GroupHold none(0, 1 << 20);
  EXPECT_FALSE(none.Hold(E(kG, 30, 20)));
  GroupHold no_bytes(16, 0);
  EXPECT_FALSE(no_bytes.Hold(E(kG, 30, 20)));
}

TEST(GroupHold, OldestIsTheLongestHeldEntrysTime) {
  GroupHold h(16, 1 << 20);
  const Time t0 = Time{} + std::chrono::seconds(100);
  EXPECT_EQ(h.Oldest(), Time{});
  ASSERT_TRUE(h.Hold(E(kG, 30, 20, 10, t0)));
  ASSERT_TRUE(h.Hold(E(kG, 40, 30, 10, t0 + std::chrono::milliseconds(300))));
  EXPECT_EQ(h.Oldest(), t0);
  ASSERT_TRUE(h.Next(kG, 20).has_value());  // 30 went
  EXPECT_EQ(h.Oldest(), t0 + std::chrono::milliseconds(300));
}

TEST(GroupHold, ClearReturnsTheSeqOfEveryEntryHeldToBeSent) {
  GroupHold h(16, 1 << 20);
  ASSERT_TRUE(h.Hold(E(kG, 30, 20)));
  ASSERT_TRUE(h.Hold(E(kH, 35, 33)));
  ASSERT_TRUE(h.Hold(GroupHold::Entry{kH, 37, 35, nullptr, Time{}}));  // the user's own: not read
  std::vector<std::uint64_t> seqs = h.Clear();
  std::sort(seqs.begin(), seqs.end());
  EXPECT_EQ(seqs, (std::vector<std::uint64_t>{30, 35}));
  EXPECT_TRUE(h.empty());
  EXPECT_EQ(h.bytes(), 0u);
}

}  // namespace
}  // namespace fastchat::server
