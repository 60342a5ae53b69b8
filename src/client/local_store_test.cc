#include "local_store.h"

#include <sqlite3.h>
#include <unistd.h>

#include <fstream>
#include <iterator>

#include <gtest/gtest.h>

namespace fastchat::client {
namespace {

namespace fs = std::filesystem;

// Runs `sql` on the store file directly, as someone with write access to it
// might.
void Tamper(const fs::path& path, const char* sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  EXPECT_EQ(sqlite3_exec(db, sql, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);
}

class LocalStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(crypto::Init());
    home_ = fs::temp_directory_path() / ("fastchat-local-store-test-" + std::to_string(::getpid()));
    fs::remove_all(home_);
    fs::create_directories(home_);
    auto box = crypto::NewBoxKeyPair();
    auto sign = crypto::NewSignKeyPair();
    id_.user_id = 42;
    id_.name = "alice";
    id_.x25519_public = box.public_key;
    id_.x25519_secret = box.secret_key;
    id_.ed25519_public = sign.public_key;
    id_.ed25519_secret = sign.secret_key;
    path_ = LocalStore::PathFor(home_, "alice");
    ASSERT_TRUE(LocalStore::Create(path_, id_, "pw-alice", crypto::PwhashCost::Min(), &store_).ok());
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(home_);
  }

  fs::path home_, path_;
  Identity id_;
  std::unique_ptr<LocalStore> store_;
};

TEST_F(LocalStoreTest, ReopenWithPasswordRestoresIdentity) {
  store_.reset();
  std::unique_ptr<LocalStore> s;
  ASSERT_TRUE(LocalStore::Open(path_, "pw-alice", &s).ok());
  EXPECT_EQ(s->identity().user_id, 42u);
  EXPECT_EQ(s->identity().name, "alice");
  EXPECT_EQ(s->identity().x25519_secret, id_.x25519_secret);
  EXPECT_EQ(s->identity().ed25519_secret, id_.ed25519_secret);
  EXPECT_EQ(s->identity().ed25519_public, id_.ed25519_public);
}

TEST_F(LocalStoreTest, WrongPasswordIsBadCredentials) {
  std::unique_ptr<LocalStore> s;
  Status st = LocalStore::Open(path_, "wrong", &s);
  EXPECT_EQ(st.code(), Code::kBadCredentials) << st.ToString();
}

TEST_F(LocalStoreTest, ChangePasswordResealsEverySecretUnderTheNewPasswordOnly) {
  const std::string friend_key(32, 'f'), group_key(32, 'g'), group_key2(32, 'h');
  ASSERT_TRUE(store_->PutFriendKey(7, friend_key).ok());
  std::string got;
  ASSERT_TRUE(store_->PutGroupKey(3, 1, group_key, &got).ok());
  ASSERT_TRUE(store_->PutGroupKey(3, 2, group_key2, &got).ok());
  ASSERT_TRUE(store_->ChangePassword("pw-new", crypto::PwhashCost::Min()).ok());
  // This handle goes on working with the new key.
  ASSERT_TRUE(store_->GetFriendKey(7, &got).ok());
  EXPECT_EQ(got, friend_key);
  ASSERT_TRUE(store_->PutFriendKey(8, std::string(32, 'e')).ok());
  store_.reset();

  std::unique_ptr<LocalStore> old_pw;
  EXPECT_EQ(LocalStore::Open(path_, "pw-alice", &old_pw).code(), Code::kBadCredentials);
  std::unique_ptr<LocalStore> s;
  ASSERT_TRUE(LocalStore::Open(path_, "pw-new", &s).ok());
  EXPECT_EQ(s->identity().x25519_secret, id_.x25519_secret);
  EXPECT_EQ(s->identity().ed25519_secret, id_.ed25519_secret);
  ASSERT_TRUE(s->GetFriendKey(7, &got).ok());
  EXPECT_EQ(got, friend_key);
  ASSERT_TRUE(s->GetFriendKey(8, &got).ok());
  EXPECT_EQ(got, std::string(32, 'e'));
  ASSERT_TRUE(s->GetGroupKey(3, 1, &got).ok());
  EXPECT_EQ(got, group_key);
  std::uint64_t epoch = 0;
  ASSERT_TRUE(s->LatestGroupKey(3, &epoch, &got).ok());
  EXPECT_EQ(epoch, 2u);
  EXPECT_EQ(got, group_key2);
}

TEST_F(LocalStoreTest, AProcessHoldingTheOldKeyCannotWriteKeysAfterAChange) {
  std::unique_ptr<LocalStore> other;  // a second process of the same user, opened before the change
  ASSERT_TRUE(LocalStore::Open(path_, "pw-alice", &other).ok());
  ASSERT_TRUE(store_->ChangePassword("pw-new", crypto::PwhashCost::Min()).ok());
  Status st = other->PutFriendKey(9, std::string(32, 'x'));
  EXPECT_EQ(st.code(), Code::kBadCredentials) << st.ToString();
  std::string got;
  st = other->PutGroupKey(4, 1, std::string(32, 'y'), &got);
  EXPECT_EQ(st.code(), Code::kBadCredentials) << st.ToString();
  other.reset();
  store_.reset();
  std::unique_ptr<LocalStore> s;
  ASSERT_TRUE(LocalStore::Open(path_, "pw-new", &s).ok());
  EXPECT_EQ(s->GetFriendKey(9, &got).code(), Code::kNotFound);  // nothing sealed the old way got in
  EXPECT_EQ(s->GetGroupKey(4, 1, &got).code(), Code::kNotFound);
}

// Found writing fuzz/local_store_fuzz.cc: the key derivation cost comes from
// the file and was run as found, so a file someone wrote without the
// password made Open hash for hours (kdf_ops) or ask for terabytes
// (kdf_mem) before it could say "wrong password".
TEST_F(LocalStoreTest, AKeyDerivationCostOutOfRangeIsCorruptionNotRun) {
  store_.reset();
  for (auto [key, value] : {std::pair<const char*, const char*>{"kdf_ops", "4294967295"},
                            {"kdf_ops", "0"},
                            {"kdf_mem", "1099511627776"},
                            {"kdf_mem", "-1"}}) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    std::string sql = std::string("UPDATE meta SET v = '") + value + "' WHERE k = '" + key + "'";
    ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
    std::unique_ptr<LocalStore> s;
    Status st = LocalStore::Open(path_, "pw-alice", &s);
    EXPECT_EQ(st.code(), Code::kCorruption) << key << "=" << value << ": " << st.ToString();
    // Put the real cost back for the next case.
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    const crypto::PwhashCost min = crypto::PwhashCost::Min();
    sql = "UPDATE meta SET v = '" + std::to_string(key == std::string("kdf_ops") ? min.opslimit : min.memlimit) +
          "' WHERE k = '" + key + "'";
    ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
  }
  std::unique_ptr<LocalStore> s;
  EXPECT_TRUE(LocalStore::Open(path_, "pw-alice", &s).ok());
}

TEST_F(LocalStoreTest, CreateRefusesAnExistingFile) {
  std::unique_ptr<LocalStore> s;
  EXPECT_EQ(LocalStore::Create(path_, id_, "pw", crypto::PwhashCost::Min(), &s).code(), Code::kNameTaken);
}

TEST_F(LocalStoreTest, FindByNameAndById) {
  fs::path p;
  ASSERT_TRUE(LocalStore::Find(home_, "alice", &p).ok());
  EXPECT_EQ(p, path_);
  ASSERT_TRUE(LocalStore::Find(home_, "42", &p).ok());
  EXPECT_EQ(p, path_);
  EXPECT_EQ(LocalStore::Find(home_, "43", &p).code(), Code::kNotFound);
  EXPECT_EQ(LocalStore::Find(home_, "bob", &p).code(), Code::kNotFound);
}

TEST_F(LocalStoreTest, SecretsAreNotStoredInTheClear) {
  ASSERT_TRUE(store_->PutFriendKey(7, std::string(32, 'K')).ok());
  store_.reset();  // checkpoints the WAL into the main file
  std::string bytes;
  for (const auto& suffix : {"", "-wal"}) {
    std::ifstream in(path_.string() + suffix, std::ios::binary);
    bytes += std::string(std::istreambuf_iterator<char>(in), {});
  }
  EXPECT_EQ(bytes.find(id_.x25519_secret), std::string::npos);
  EXPECT_EQ(bytes.find(id_.ed25519_secret.substr(0, 32)), std::string::npos);
  EXPECT_EQ(bytes.find(std::string(32, 'K')), std::string::npos);
}

TEST_F(LocalStoreTest, PinningDetectsChangedKeys) {
  Contact bob{7, "bob", std::string(32, 'x'), std::string(32, 'e'), 0};
  Contact pinned;
  PinResult r;
  ASSERT_TRUE(store_->Pin(bob, &r, &pinned).ok());
  EXPECT_EQ(r, PinResult::kNew);
  ASSERT_TRUE(store_->Pin(bob, &r, &pinned).ok());
  EXPECT_EQ(r, PinResult::kMatch);
  Contact evil = bob;
  evil.x25519_public = std::string(32, 'z');
  ASSERT_TRUE(store_->Pin(evil, &r, &pinned).ok());
  EXPECT_EQ(r, PinResult::kChanged);
  EXPECT_EQ(pinned.x25519_public, bob.x25519_public);  // the pinned key stays
  Contact c;
  ASSERT_TRUE(store_->FindContactByName("bob", &c).ok());
  EXPECT_EQ(c.id, 7u);
}

TEST_F(LocalStoreTest, FriendKeysAndRequests) {
  std::string k;
  EXPECT_EQ(store_->GetFriendKey(7, &k).code(), Code::kNotFound);
  ASSERT_TRUE(store_->PutFriendKey(7, "0123456789abcdef0123456789abcdef").ok());
  ASSERT_TRUE(store_->GetFriendKey(7, &k).ok());
  EXPECT_EQ(k, "0123456789abcdef0123456789abcdef");
  ASSERT_TRUE(store_->DeleteFriendKey(7).ok());
  EXPECT_EQ(store_->GetFriendKey(7, &k).code(), Code::kNotFound);

  ASSERT_TRUE(store_->AddFriendRequest(9, "carol").ok());
  std::vector<Contact> reqs;
  ASSERT_TRUE(store_->ListFriendRequests(&reqs).ok());
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].name, "carol");
  ASSERT_TRUE(store_->RemoveFriendRequest(9).ok());
  ASSERT_TRUE(store_->ListFriendRequests(&reqs).ok());
  EXPECT_TRUE(reqs.empty());
}

TEST_F(LocalStoreTest, GroupsAndEpochKeys) {
  ASSERT_TRUE(store_->PutGroup(LocalGroup{5, "club", 42, 1, false}).ok());
  ASSERT_TRUE(store_->PutGroup(LocalGroup{6, "club", 9, 3, false}).ok());
  std::vector<LocalGroup> found;
  ASSERT_TRUE(store_->FindGroupsByName("club", &found).ok());
  EXPECT_EQ(found.size(), 2u);

  std::string k, stored;
  ASSERT_TRUE(store_->PutGroupKey(5, 1, std::string(32, '1'), &stored).ok());
  EXPECT_EQ(stored, std::string(32, '1'));
  // A second key for the same epoch does not replace the first.
  ASSERT_TRUE(store_->PutGroupKey(5, 1, std::string(32, '9'), &stored).ok());
  EXPECT_EQ(stored, std::string(32, '1'));
  ASSERT_TRUE(store_->PutGroupKey(5, 2, std::string(32, '2'), nullptr).ok());
  std::uint64_t epoch = 0;
  ASSERT_TRUE(store_->LatestGroupKey(5, &epoch, &k).ok());
  EXPECT_EQ(epoch, 2u);
  EXPECT_EQ(k, std::string(32, '2'));
  ASSERT_TRUE(store_->GetGroupKey(5, 1, &k).ok());
  EXPECT_EQ(k, std::string(32, '1'));
  EXPECT_EQ(store_->GetGroupKey(5, 3, &k).code(), Code::kNotFound);
  EXPECT_EQ(store_->LatestGroupKey(6, &epoch, &k).code(), Code::kNotFound);

  // The epoch only grows; left is recorded.
  ASSERT_TRUE(store_->PutGroup(LocalGroup{5, "club2", 42, 1, true}).ok());
  LocalGroup g;
  ASSERT_TRUE(store_->GetGroup(5, &g).ok());
  EXPECT_EQ(g.name, "club2");
  EXPECT_TRUE(g.left);
  ASSERT_TRUE(store_->PutGroup(LocalGroup{5, "club2", 42, 4, false}).ok());
  ASSERT_TRUE(store_->GetGroup(5, &g).ok());
  EXPECT_EQ(g.epoch, 4u);
}

TEST_F(LocalStoreTest, SealedValuesAreBoundToTheirSlot) {
  // Copying one slot's sealed key into another slot (as someone with write
  // access to the file might) does not make it usable there.
  ASSERT_TRUE(store_->PutGroupKey(5, 1, std::string(32, 'a'), nullptr).ok());
  ASSERT_TRUE(store_->PutFriendKey(7, std::string(32, 'f')).ok());
  Tamper(path_,
         "INSERT INTO group_keys(group_id, epoch, sealed) "
         "SELECT group_id, 2, sealed FROM group_keys WHERE group_id = 5 AND epoch = 1;"
         "INSERT INTO friend_keys(user_id, sealed, created) "
         "SELECT 8, sealed, created FROM friend_keys WHERE user_id = 7;");
  std::string k;
  EXPECT_TRUE(store_->GetGroupKey(5, 1, &k).ok());
  EXPECT_EQ(store_->GetGroupKey(5, 2, &k).code(), Code::kCorruption);
  EXPECT_EQ(store_->GetFriendKey(8, &k).code(), Code::kCorruption);
}

TEST_F(LocalStoreTest, DedupeAndPartialImages) {
  bool seen = true;
  ASSERT_TRUE(store_->SeenSeq(10, &seen).ok());
  EXPECT_FALSE(seen);
  ASSERT_TRUE(store_->MarkSeq(10).ok());
  ASSERT_TRUE(store_->MarkSeq(10).ok());
  ASSERT_TRUE(store_->SeenSeq(10, &seen).ok());
  EXPECT_TRUE(seen);

  std::string mid(16, '\x01');
  ASSERT_TRUE(store_->SeenMsg(7, mid, 0, &seen).ok());
  EXPECT_FALSE(seen);
  ASSERT_TRUE(store_->MarkMsg(7, mid, 0).ok());
  ASSERT_TRUE(store_->SeenMsg(7, mid, 0, &seen).ok());
  EXPECT_TRUE(seen);
  ASSERT_TRUE(store_->SeenMsg(7, mid, 1, &seen).ok());
  EXPECT_FALSE(seen);

  PartialImage p;
  p.scope = 0;
  p.sender = 7;
  p.msg_id = mid;
  p.title = "x.png";
  p.size = 1000;
  p.chunk_count = 2;
  p.next_chunk = 1;
  p.temp_path = "/tmp/x";
  ASSERT_TRUE(store_->PutPartial(p).ok());
  PartialImage q;
  ASSERT_TRUE(store_->GetPartial(0, 7, mid, &q).ok());
  EXPECT_EQ(q.title, "x.png");
  EXPECT_EQ(q.size, 1000u);
  EXPECT_EQ(q.next_chunk, 1u);
  EXPECT_EQ(store_->GetPartial(5, 7, mid, &q).code(), Code::kNotFound);
  ASSERT_TRUE(store_->DeletePartial(0, 7, mid).ok());
  EXPECT_EQ(store_->GetPartial(0, 7, mid, &q).code(), Code::kNotFound);
}

TEST_F(LocalStoreTest, TwoHandlesSeeEachOthersWrites) {
  std::unique_ptr<LocalStore> other;
  ASSERT_TRUE(LocalStore::Open(path_, "pw-alice", &other).ok());
  ASSERT_TRUE(store_->PutFriendKey(7, std::string(32, 'f')).ok());
  std::string k;
  ASSERT_TRUE(other->GetFriendKey(7, &k).ok());
  EXPECT_EQ(k, std::string(32, 'f'));
  ASSERT_TRUE(other->Begin().ok());
  ASSERT_TRUE(other->MarkSeq(99).ok());
  ASSERT_TRUE(other->Commit().ok());
  bool seen = false;
  ASSERT_TRUE(store_->SeenSeq(99, &seen).ok());
  EXPECT_TRUE(seen);
}

HistoryEntry Entry(bool group, std::uint64_t conv, std::uint64_t sender, const std::string& body,
                   const std::string& msg_id = std::string()) {
  HistoryEntry e;
  e.group = group;
  e.conv_id = conv;
  e.sender = sender;
  e.outgoing = sender == 42;
  e.kind = "message";
  e.at_ms = 1700000000000 + static_cast<std::int64_t>(body.size());
  e.msg_id = msg_id;
  e.body = body;
  return e;
}

std::vector<std::string> Bodies(const std::vector<HistoryEntry>& v) {
  std::vector<std::string> out;
  for (const auto& e : v) out.push_back(e.intact ? e.body : "<damaged>");
  return out;
}

TEST_F(LocalStoreTest, HistoryKeepsEachConversationInOrder) {
  bool added = false;
  ASSERT_TRUE(store_->AddHistory(Entry(false, 7, 42, "one", "m1"), &added).ok());
  EXPECT_TRUE(added);
  ASSERT_TRUE(store_->AddHistory(Entry(false, 7, 7, "two", "m2")).ok());
  ASSERT_TRUE(store_->AddHistory(Entry(true, 7, 9, "in the group with id 7")).ok());
  ASSERT_TRUE(store_->AddHistory(Entry(false, 8, 8, "to someone else")).ok());
  ASSERT_TRUE(store_->AddHistory(Entry(false, 7, 42, "three", "m3")).ok());
  // The same message again (a delivery repeated): kept once.
  ASSERT_TRUE(store_->AddHistory(Entry(false, 7, 7, "two", "m2"), &added).ok());
  EXPECT_FALSE(added);
  // Notices without a key are kept each time.
  ASSERT_TRUE(store_->AddHistory(Entry(true, 7, 9, "notice"), &added).ok());
  EXPECT_TRUE(added);

  std::vector<HistoryEntry> h;
  ASSERT_TRUE(store_->History(false, 7, 20, &h).ok());
  EXPECT_EQ(Bodies(h), (std::vector<std::string>{"one", "two", "three"}));
  ASSERT_EQ(h.size(), 3u);
  EXPECT_TRUE(h[0].outgoing);
  EXPECT_FALSE(h[1].outgoing);
  EXPECT_EQ(h[1].sender, 7u);
  EXPECT_EQ(h[1].msg_id, "m2");
  EXPECT_EQ(h[1].kind, "message");
  EXPECT_EQ(h[1].at_ms, 1700000000003);
  EXPECT_LT(h[0].id, h[1].id);
  // The newest N, oldest first.
  ASSERT_TRUE(store_->History(false, 7, 2, &h).ok());
  EXPECT_EQ(Bodies(h), (std::vector<std::string>{"two", "three"}));
  ASSERT_TRUE(store_->History(true, 7, 20, &h).ok());
  EXPECT_EQ(Bodies(h), (std::vector<std::string>{"in the group with id 7", "notice"}));
  ASSERT_TRUE(store_->History(false, 99, 20, &h).ok());
  EXPECT_TRUE(h.empty());

  // Another handle (a restarted client) reads the same.
  store_.reset();
  std::unique_ptr<LocalStore> s;
  ASSERT_TRUE(LocalStore::Open(path_, "pw-alice", &s).ok());
  ASSERT_TRUE(s->History(false, 7, 20, &h).ok());
  EXPECT_EQ(Bodies(h), (std::vector<std::string>{"one", "two", "three"}));
}

TEST_F(LocalStoreTest, HistoryTextIsNotStoredInTheClear) {
  const std::string secret = "the-launch-code-is-0000-" + crypto::Hex(crypto::RandomBytes(8));
  ASSERT_TRUE(store_->AddHistory(Entry(false, 7, 7, secret, "m")).ok());
  store_.reset();
  std::string bytes;
  for (const auto& suffix : {"", "-wal"}) {
    std::ifstream in(path_.string() + suffix, std::ios::binary);
    bytes += std::string(std::istreambuf_iterator<char>(in), {});
  }
  EXPECT_FALSE(bytes.empty());
  EXPECT_EQ(bytes.find(secret), std::string::npos);
  EXPECT_EQ(bytes.find("launch-code"), std::string::npos);
}

TEST_F(LocalStoreTest, HistoryBodiesAreBoundToTheirSlotAndFields) {
  ASSERT_TRUE(store_->AddHistory(Entry(false, 7, 7, "from bob", "a")).ok());
  ASSERT_TRUE(store_->AddHistory(Entry(false, 8, 8, "from carol", "b")).ok());
  ASSERT_TRUE(store_->AddHistory(Entry(false, 9, 9, "from dave", "c")).ok());
  // carol's sealed text copied into bob's row; dave's row moved into bob's
  // conversation.
  Tamper(path_,
         "UPDATE history SET sealed = (SELECT sealed FROM history WHERE conv_id = 8) WHERE conv_id = 7;"
         "UPDATE history SET conv_id = 7, sender = 7 WHERE conv_id = 9;");
  std::vector<HistoryEntry> h;
  ASSERT_TRUE(store_->History(false, 7, 20, &h).ok());
  EXPECT_EQ(Bodies(h), (std::vector<std::string>{"<damaged>", "<damaged>"}));
  ASSERT_TRUE(store_->History(false, 8, 20, &h).ok());
  EXPECT_EQ(Bodies(h), (std::vector<std::string>{"from carol"}));
}

TEST_F(LocalStoreTest, SearchOpensAtMostTheNewestEntries) {
  ASSERT_TRUE(store_->AddHistory(Entry(false, 7, 7, "needle in the oldest")).ok());
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(store_->AddHistory(Entry(false, 7, 7, "hay " + std::to_string(i))).ok());
  ASSERT_TRUE(store_->AddHistory(Entry(true, 3, 9, "needle in the newest")).ok());
  auto needle = [](const HistoryEntry& e) { return e.body.find("needle") != std::string::npos; };
  std::vector<HistoryEntry> hits;
  std::size_t scanned = 0;
  bool more = false;
  ASSERT_TRUE(store_->SearchHistory(10, 100, needle, &hits, &scanned, &more).ok());
  EXPECT_EQ(Bodies(hits), (std::vector<std::string>{"needle in the newest"}));
  EXPECT_EQ(scanned, 10u);
  EXPECT_TRUE(more);
  EXPECT_TRUE(hits[0].group);
  EXPECT_EQ(hits[0].conv_id, 3u);
  ASSERT_TRUE(store_->SearchHistory(1000, 100, needle, &hits, &scanned, &more).ok());
  EXPECT_EQ(Bodies(hits), (std::vector<std::string>{"needle in the oldest", "needle in the newest"}));
  EXPECT_EQ(scanned, 32u);
  EXPECT_FALSE(more);
  // At most max_hits, the newest ones.
  auto hay = [](const HistoryEntry& e) { return e.body.rfind("hay", 0) == 0; };
  ASSERT_TRUE(store_->SearchHistory(1000, 2, hay, &hits, &scanned, &more).ok());
  EXPECT_EQ(Bodies(hits), (std::vector<std::string>{"hay 28", "hay 29"}));
  EXPECT_TRUE(more);
}

TEST_F(LocalStoreTest, ChangePasswordResealsTheHistory) {
  ASSERT_TRUE(store_->AddHistory(Entry(false, 7, 42, "before the change", "m1")).ok());
  ASSERT_TRUE(store_->AddHistory(Entry(true, 3, 9, "in a group")).ok());
  std::unique_ptr<LocalStore> other;  // a second process, opened before the change
  ASSERT_TRUE(LocalStore::Open(path_, "pw-alice", &other).ok());
  ASSERT_TRUE(store_->ChangePassword("pw-new", crypto::PwhashCost::Min()).ok());
  ASSERT_TRUE(store_->AddHistory(Entry(false, 7, 7, "after the change", "m2")).ok());
  // The old key cannot add entries the new one would not open.
  bool added = true;
  Status st = other->AddHistory(Entry(false, 7, 7, "sealed the old way", "m3"), &added);
  EXPECT_EQ(st.code(), Code::kBadCredentials) << st.ToString();
  EXPECT_FALSE(added);
  other.reset();
  store_.reset();
  std::unique_ptr<LocalStore> s;
  ASSERT_TRUE(LocalStore::Open(path_, "pw-new", &s).ok());
  std::vector<HistoryEntry> h;
  ASSERT_TRUE(s->History(false, 7, 20, &h).ok());
  EXPECT_EQ(Bodies(h), (std::vector<std::string>{"before the change", "after the change"}));
  ASSERT_TRUE(s->History(true, 3, 20, &h).ok());
  EXPECT_EQ(Bodies(h), (std::vector<std::string>{"in a group"}));
}

}  // namespace
}  // namespace fastchat::client
