// GroupChain: a live entry whose predecessor was never sent is held back; a
// catch-up pass that began above a group's known point does not send an
// entry past a gap; a pass that covers a group makes it known to its head.
#include "group_chain.h"

#include <gtest/gtest.h>

namespace fastchat::server {
namespace {

using Heads = std::vector<std::pair<std::uint64_t, std::uint64_t>>;

constexpr std::uint64_t kG = 7, kH = 8;
constexpr GroupChain::Verdict kSend = GroupChain::Verdict::kSend;
constexpr GroupChain::Verdict kRepeat = GroupChain::Verdict::kRepeat;
constexpr GroupChain::Verdict kGap = GroupChain::Verdict::kGap;

// A login: a pass from 0 that read nothing, with both logs' heads.
GroupChain LoggedIn(std::uint64_t g_head, std::uint64_t h_head) {
  GroupChain c;
  c.StartPass();
  c.Reading(0);
  c.EndPass(0, Heads{{kG, g_head}, {kH, h_head}});
  return c;
}

TEST(GroupChain, ALivePushNamingASentEntryGoesAndOneNamingAnUnsentEntryIsAGap) {
  GroupChain c = LoggedIn(10, 12);
  EXPECT_EQ(c.Known(kG), 10u);
  EXPECT_EQ(c.Push(kG, 20, 10), kSend);
  EXPECT_EQ(c.Known(kG), 20u);
  // Entry 25 (from a server whose forward was lost) never came: 30 names it.
  EXPECT_EQ(c.Push(kG, 30, 25), kGap);
  EXPECT_EQ(c.Known(kG), 20u);  // unchanged: the store is read after 20
  // The other group's chain is its own.
  EXPECT_EQ(c.Push(kH, 31, 12), kSend);
}

// A forward that comes after a store read already sent its entry (the read
// found it committed first), or a second forward of one, is a repeat: the
// session drops it instead of sending the client the same seq twice.
TEST(GroupChain, ALivePushAtOrBelowTheKnownPointIsARepeat) {
  GroupChain c = LoggedIn(10, 12);
  EXPECT_EQ(c.Push(kG, 10, 9), kRepeat);  // the head a login's pass made known
  EXPECT_EQ(c.Push(kG, 4, 3), kRepeat);
  ASSERT_EQ(c.Push(kG, 20, 10), kSend);
  EXPECT_EQ(c.Push(kG, 20, 10), kRepeat);  // forwarded twice
  EXPECT_EQ(c.Known(kG), 20u);
  // Read from the store by a pass, then forwarded.
  c.StartPass();
  c.Reading(20);
  ASSERT_TRUE(c.FromStore(kG, 21, 20));
  c.EndPass(21, Heads{{kG, 21}, {kH, 12}});
  EXPECT_TRUE(c.IsRepeat(kG, 21));
  EXPECT_FALSE(c.IsRepeat(kG, 22));
  EXPECT_EQ(c.Push(kG, 21, 20), kRepeat);
  EXPECT_EQ(c.Push(kG, 22, 21), kSend);
  // The other group's chain is its own.
  EXPECT_EQ(c.Push(kH, 13, 12), kSend);
}

TEST(GroupChain, TheUsersOwnEntryIsKnownOnceItsPredecessorIs) {
  GroupChain c = LoggedIn(10, 12);
  c.Own(kG, 15, 10);  // sent by the user: it reads none of its own
  EXPECT_EQ(c.Push(kG, 16, 15), kSend);
  c.Own(kG, 40, 35);  // its predecessor was never sent: not known
  EXPECT_EQ(c.Known(kG), 16u);
  EXPECT_EQ(c.Push(kG, 41, 40), kGap);
}

TEST(GroupChain, APassThatBeganAboveTheGapRewindsAndOneThatCoversItSendsInOrder) {
  GroupChain c = LoggedIn(10, 12);
  ASSERT_EQ(c.Push(kH, 50, 12), kSend);  // other traffic moved the session's reads on
  // A catch-up pass after lagging begins at 50, above kG's known 10; the
  // store has kG's 25 (never sent) and 30 (names 25).
  c.StartPass();
  c.Reading(50);
  EXPECT_FALSE(c.FromStore(kG, 60, 25));  // would pass 25: read again after 10
  c.Reading(10);                          // the rewound read
  EXPECT_TRUE(c.FromStore(kG, 25, 10));
  EXPECT_TRUE(c.FromStore(kH, 50, 12));   // a repeat, harmless
  EXPECT_TRUE(c.FromStore(kG, 60, 25));
  c.EndPass(60, Heads{{kG, 60}, {kH, 50}});
  EXPECT_EQ(c.Known(kG), 60u);
  EXPECT_EQ(c.Known(kH), 60u);
}

TEST(GroupChain, ACoveringPassSendsEntriesWhosePredecessorTheUserDoesNotRead) {
  GroupChain c = LoggedIn(10, 12);
  c.StartPass();
  c.Reading(5);  // at or below every group's known point
  // 18 is the user's own entry, sent from another server: not in the read.
  EXPECT_TRUE(c.FromStore(kG, 19, 18));
  c.EndPass(19, Heads{{kG, 19}, {kH, 12}});
  EXPECT_EQ(c.Push(kG, 21, 19), kSend);
}

TEST(GroupChain, APassMakesAGroupKnownToItsHeadOnlyIfItCoveredIt) {
  GroupChain c = LoggedIn(10, 12);
  ASSERT_EQ(c.Push(kH, 50, 12), kSend);
  c.StartPass();
  c.Reading(50);  // above kG's known 10, at kH's
  c.EndPass(50, Heads{{kG, 45}, {kH, 55}});
  EXPECT_EQ(c.Known(kG), 10u);  // 11..45 of kG may never have been sent
  EXPECT_EQ(c.Known(kH), 55u);
  // A group joined after login is known up to where every covering pass read.
  EXPECT_EQ(c.Known(99), 0u);
  GroupChain d;
  d.StartPass();
  d.Reading(0);
  d.EndPass(70, Heads{});
  EXPECT_EQ(d.Known(99), 70u);
}

}  // namespace
}  // namespace fastchat::server
