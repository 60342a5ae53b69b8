// GroupLogCap: a group's log held to its bound on a real SQLite store, and
// the notices it queues (no server, no sockets).
#include "group_log_cap.h"

#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "fastchat.pb.h"
#include "test_records.h"

namespace fastchat::server {
namespace {

class GroupLogCapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fastchat_group_log_cap_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ASSERT_TRUE(OpenSqliteStore(dir_ + "/server.db", &store_).ok());
    alice_ = MakeUser("alice");
    bob_ = MakeUser("bob");
    carol_ = MakeUser("carol");
    ASSERT_TRUE(store_->CreateGroup("club", alice_, &group_).ok());
    ASSERT_TRUE(store_->AddMember(group_, bob_).ok());
    ASSERT_TRUE(store_->AddMember(group_, carol_).ok());
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::uint64_t MakeUser(const std::string& name) {
    std::uint64_t id = 0;
    EXPECT_TRUE(store_->CreateUser(TestUserRecord(name), &id).ok());
    return id;
  }
  std::uint64_t Send(std::uint64_t sender, int i) {
    std::vector<std::uint64_t> members;
    EXPECT_TRUE(store_->ListMembers(group_, &members).ok());
    std::erase(members, sender);
    std::uint64_t seq = 0;
    bool fresh = false;
    EXPECT_TRUE(store_->AppendGroup(group_, sender, members, "k" + std::to_string(i), "message " + std::to_string(i),
                                    &seq, &fresh, nullptr, nullptr)
                    .ok());
    return seq;
  }
  // `user`'s pending rows: the group's entries as payloads, and the notices
  // (rows of no group) as their EXPIRED counts.
  void Read(std::uint64_t user, std::vector<std::string>* entries, std::vector<std::uint64_t>* expired) {
    std::vector<PendingRow> rows;
    ASSERT_TRUE(store_->FetchPending(user, 0, 1000, &rows).ok());
    for (const PendingRow& r : rows) {
      if (r.group_id != 0) {
        entries->push_back(r.payload);
        continue;
      }
      wire::Event ev;
      ASSERT_TRUE(ev.ParseFromString(r.payload));
      ASSERT_TRUE(ev.has_group_notice());
      EXPECT_EQ(ev.group_notice().what(), wire::GroupNoticeEvent::EXPIRED);
      EXPECT_EQ(ev.group_notice().group_id(), group_);
      EXPECT_EQ(ev.group_notice().group_name(), "club");
      EXPECT_EQ(ev.group_notice().admin_id(), alice_);
      EXPECT_EQ(ev.from_id(), 0u);
      EXPECT_EQ(ev.time_ms(), 1234u);
      expired->push_back(ev.group_notice().expired());
    }
  }
  GroupLogCap Cap(std::uint64_t max_entries) {
    GroupLogCap cap;
    cap.group = group_;
    cap.bound.max_entries = max_entries;
    cap.group_name = "club";
    cap.admin = alice_;
    cap.now_ms = 1234;
    return cap;
  }

  std::string dir_;
  std::unique_ptr<Store> store_;
  std::uint64_t alice_ = 0, bob_ = 0, carol_ = 0, group_ = 0;
};

// bob collects everything, carol nothing: past the bound carol keeps the
// newest entries and gets one notice saying how many went; bob none. A
// second cap while her notice waits queues no second one.
TEST_F(GroupLogCapTest, AReaderBehindKeepsTheNewestEntriesAndIsToldHowManyWent) {
  std::uint64_t last = 0;
  for (int i = 0; i < 7; ++i) last = Send(alice_, i);
  ASSERT_TRUE(store_->AckGroup(bob_, group_, last).ok());

  GroupLogCapResult r = CapGroupLogAndTell(*store_, Cap(10));
  ASSERT_TRUE(r.st.ok()) << r.st.ToString();
  EXPECT_EQ(r.cut, 0u);  // within the bound: nothing happens

  r = CapGroupLogAndTell(*store_, Cap(3));
  ASSERT_TRUE(r.st.ok()) << r.st.ToString();
  EXPECT_NE(r.cut, 0u);
  EXPECT_EQ(r.lapsed, 1u);
  EXPECT_EQ(r.missed, 4u);
  std::uint64_t n = 0;
  ASSERT_TRUE(store_->CountGroupLog(group_, &n).ok());
  EXPECT_EQ(n, 3u);  // trimmed in the same job
  std::vector<std::string> entries;
  std::vector<std::uint64_t> expired;
  Read(carol_, &entries, &expired);
  EXPECT_EQ(entries, (std::vector<std::string>{"message 4", "message 5", "message 6"}));
  EXPECT_EQ(expired, (std::vector<std::uint64_t>{4}));
  entries.clear();
  expired.clear();
  Read(bob_, &entries, &expired);
  EXPECT_TRUE(entries.empty());
  EXPECT_TRUE(expired.empty());

  for (int i = 7; i < 12; ++i) Send(alice_, i);
  r = CapGroupLogAndTell(*store_, Cap(3));
  ASSERT_TRUE(r.st.ok()) << r.st.ToString();
  EXPECT_EQ(r.lapsed, 2u);  // bob is behind now too
  entries.clear();
  expired.clear();
  Read(carol_, &entries, &expired);
  EXPECT_EQ(entries, (std::vector<std::string>{"message 9", "message 10", "message 11"}));
  EXPECT_EQ(expired, (std::vector<std::uint64_t>{4}));  // her first notice still waits: no second
  entries.clear();
  expired.clear();
  Read(bob_, &entries, &expired);
  EXPECT_EQ(entries, (std::vector<std::string>{"message 9", "message 10", "message 11"}));
  EXPECT_EQ(expired, (std::vector<std::uint64_t>{2}));
}

// The cap, the notices and the trim all happen in the caller's unit: when
// the store worker undoes the job's unit (a later failure), the cursors,
// the log (and its index in memory) and the notices are as they were, and
// a cap after that does it all again.
TEST_F(GroupLogCapTest, AnUndoneUnitLeavesTheLogTheCursorsAndTheNoticesAsTheyWere) {
  std::uint64_t last = 0;
  for (int i = 0; i < 5; ++i) last = Send(alice_, i);
  ASSERT_TRUE(store_->AckGroup(bob_, group_, last).ok());
  ASSERT_TRUE(store_->BeginBatch().ok());
  ASSERT_TRUE(store_->BeginUnit().ok());
  GroupLogCapResult r = CapGroupLogAndTell(*store_, Cap(2));
  ASSERT_TRUE(r.st.ok()) << r.st.ToString();
  store_->EndUnit(false);
  ASSERT_TRUE(store_->CommitBatch().ok());
  std::uint64_t n = 0;
  ASSERT_TRUE(store_->CountGroupLog(group_, &n).ok());
  EXPECT_EQ(n, 5u);
  std::vector<std::string> entries;
  std::vector<std::uint64_t> expired;
  Read(carol_, &entries, &expired);
  EXPECT_EQ(entries.size(), 5u);
  EXPECT_TRUE(expired.empty());

  GroupLogCapResult again = CapGroupLogAndTell(*store_, Cap(2));
  ASSERT_TRUE(again.st.ok()) << again.st.ToString();
  EXPECT_EQ(again.missed, 3u);
  entries.clear();
  Read(carol_, &entries, &expired);
  EXPECT_EQ(entries, (std::vector<std::string>{"message 3", "message 4"}));
  EXPECT_EQ(expired, (std::vector<std::uint64_t>{3}));
}

}  // namespace
}  // namespace fastchat::server
