// Directory: loading the store's state, changes, and applying re-read facts.
#include "directory.h"

#include <gtest/gtest.h>

namespace fastchat::server {
namespace {

UserRecord User(std::uint64_t id, const std::string& name) {
  UserRecord u;
  u.id = id;
  u.name = name;
  u.password_hash = "h" + name;
  u.x25519_public = std::string(32, 'x');
  u.ed25519_public = std::string(32, 'e');
  return u;
}

DirectoryState Sample() {
  DirectoryState s;
  s.users = {User(1, "alice"), User(2, "bob"), User(3, "carol")};
  s.friendships = {{1, 2}, {2, 1}};  // stored both ways
  s.requests = {{3, 1}};
  s.groups = {GroupRecord{10, "team", 1, 4}};
  s.members = {{10, 1}, {10, 3}};
  return s;
}

TEST(DirectoryTest, LoadsUsersFriendsRequestsAndGroups) {
  Directory d;
  d.Load(Sample());
  ASSERT_NE(d.FindUser("bob"), nullptr);
  EXPECT_EQ(d.FindUser("bob")->id, 2u);
  EXPECT_EQ(d.FindUser(3)->name, "carol");
  EXPECT_EQ(d.FindUser("dave"), nullptr);
  EXPECT_TRUE(d.AreFriends(1, 2));
  EXPECT_TRUE(d.AreFriends(2, 1));
  EXPECT_FALSE(d.AreFriends(1, 3));
  EXPECT_EQ(d.FriendsOf(1), (std::vector<std::uint64_t>{2}));  // once, though stored twice
  EXPECT_TRUE(d.HasRequest(3, 1));
  const DirGroup* g = d.FindGroup(10);
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->epoch, 4u);
  EXPECT_EQ(g->members, (std::vector<std::uint64_t>{1, 3}));
  EXPECT_EQ(d.GroupsOf(3), (std::vector<std::uint64_t>{10}));
}

TEST(DirectoryTest, MembershipChangesKeepJoinOrderAndBumpTheEpoch) {
  Directory d;
  d.Load(Sample());
  d.AddMember(10, 2);
  EXPECT_EQ(d.FindGroup(10)->members, (std::vector<std::uint64_t>{1, 3, 2}));
  EXPECT_EQ(d.RemoveMember(10, 3), 5u);
  EXPECT_EQ(d.FindGroup(10)->members, (std::vector<std::uint64_t>{1, 2}));
  EXPECT_TRUE(d.GroupsOf(3).empty());
  d.DeleteGroup(10);
  EXPECT_EQ(d.FindGroup(10), nullptr);
  EXPECT_TRUE(d.GroupsOf(1).empty());
}

TEST(DirectoryTest, RequestsAreTakenOnce) {
  Directory d;
  d.Load(Sample());
  EXPECT_TRUE(d.TakeRequest(3, 1));
  EXPECT_FALSE(d.TakeRequest(3, 1));
  EXPECT_TRUE(d.RequestsTo(1).empty());
}

TEST(DirectoryTest, ApplyReplacesWhatWasReRead) {
  Directory d;
  d.Load(Sample());
  FactsSnapshot snap;
  snap.users = {User(4, "dave")};
  snap.friends = {{1, 4}};
  snap.requests_to = {{1, {}}};                                 // carol's request is gone
  snap.groups = {{GroupRecord{10, "team", 1, 6}, {1, 4}}};  // re-read group
  snap.missing_groups = {11};
  d.Apply(snap);
  EXPECT_EQ(d.FindUser("dave")->id, 4u);
  EXPECT_TRUE(d.AreFriends(4, 1));
  EXPECT_FALSE(d.HasRequest(3, 1));
  EXPECT_EQ(d.FindGroup(10)->epoch, 6u);
  EXPECT_EQ(d.GroupsOf(4), (std::vector<std::uint64_t>{10}));
  EXPECT_TRUE(d.GroupsOf(3).empty());
}

}  // namespace
}  // namespace fastchat::server
