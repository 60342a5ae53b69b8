// A real server whose disk fails under its SQLite database: a full disk
// (ENOSPC), a write error (EIO), a sync error (EIO from fsync/fdatasync) and
// a read-only file system (EROFS), injected by an LD_PRELOAD shim
// (harness/store_fault_shim.cc) while a control file exists.
//
// For each fault: a request whose write fails is answered INTERNAL (never
// Ok); the server keeps running and serves reads; once the fault clears new
// writes succeed; everything Ok'd before, during and after survives a crash
// (SIGKILL) and is delivered exactly once, nothing refused is delivered;
// and the database passes PRAGMA integrity_check. The log names the cause.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <cstdio>
#include <cstdlib>
#include <ostream>
#include <string>
#include <vector>

#include "harness/fastchat.h"

namespace fastchat::testing {
namespace {

// Runs `sql` on the database at `path` (no server may have it open) and
// returns the first column of each row.
std::vector<std::string> Query(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    throw std::runtime_error("cannot open " + path);
  }
  std::vector<std::string> rows;
  char* err = nullptr;
  const int rc = sqlite3_exec(
      db, sql.c_str(),
      [](void* out, int, char** values, char**) {
        static_cast<std::vector<std::string>*>(out)->push_back(values[0] != nullptr ? values[0] : "NULL");
        return 0;
      },
      &rows, &err);
  std::string why = err != nullptr ? err : "";
  sqlite3_free(err);
  sqlite3_close(db);
  if (rc != SQLITE_OK) throw std::runtime_error(sql + ": " + why);
  return rows;
}

struct Fault {
  const char* name;
  const char* control;     // what the control file says (store_fault_shim.cc)
  const char* log_words;   // what the server's log says of it
};

void PrintTo(const Fault& f, std::ostream* os) { *os << f.name; }

const Fault kFaults[] = {
    {"FullDisk", "ENOSPC", "database or disk is full"},
    {"WriteError", "EIO", "disk I/O error (a write failed)"},
    {"SyncError", "EIO sync", "disk I/O error (a sync to stable storage failed)"},
    {"ReadOnlyFileSystem", "EROFS", "disk I/O error (a write failed)"},
};

// A World whose server runs under the shim, its database in `dir`.
class FaultyDisk {
 public:
  FaultyDisk()
      : db_(dir_.Sub("server.db")), control_(dir_.Sub("fault-on")), world_(Options()) {}

  World& world() { return world_; }
  const std::string& db() const { return db_; }
  void Start(const char* control) { WriteFile(control_, control); }
  void Clear() { std::remove(control_.c_str()); }

 private:
  ServerOptions Options() {
    if (IsSanitizerBuild()) {
      // The shim comes before the sanitizer runtime in the library list.
      const char* old = std::getenv("ASAN_OPTIONS");
      std::string v = old != nullptr ? std::string(old) + ":" : std::string();
      ::setenv("ASAN_OPTIONS", (v + "verify_asan_link_order=0").c_str(), 1);
    }
    ServerOptions o;
    o.db_path = db_;
    o.wrapper = {"env", std::string("LD_PRELOAD=") + FASTCHAT_FAULT_SHIM, "FASTCHAT_FAULT_PATH=" + db_,
                 "FASTCHAT_FAULT_CONTROL=" + control_};
    return o;
  }

  TempDir dir_{"fastchat-fault"};
  std::string db_;
  std::string control_;
  World world_;
};

void ExpectInternal(const json& r, const std::string& what) {
  EXPECT_FALSE(r.value("ok", true)) << what << " was Ok'd while the disk failed: " << r.dump();
  EXPECT_EQ(Str(r, "code"), "INTERNAL") << what << ": " << r.dump();
}

class StoreFaults : public ::testing::TestWithParam<Fault> {};

TEST_P(StoreFaults, ClearErrorsNoLossNoCorruptionAndRecovery) {
  const Fault& fault = GetParam();
  FaultyDisk disk;
  World& w = disk.world();
  User alice = w.Register("alice");
  User bob = w.Register("bob");
  User carol = w.Register("carol");
  auto a = w.Chat(alice);
  {
    auto b = w.Chat(bob);
    w.MakeFriends(*a, alice, *b, bob);
    ASSERT_EQ(b->Quit(), 0);
  }
  // Ok'd while bob is away: they wait in the store.
  for (int i = 0; i < 3; ++i) a->CommandOk("single_message bob before " + std::to_string(i));

  disk.Start(fault.control);
  // A direct message (the merged enqueue path), a friend request (a write of
  // several steps) and a registration all fail, clearly.
  ExpectInternal(a->Command("single_message bob during"), "a direct message");
  ExpectInternal(a->Command("add_friend carol"), "a friend request");
  RunResult reg = w.Run(w.MakeUser("dave"), {"register", "dave"}, Millis(60000), std::string());
  EXPECT_FALSE(reg.ok()) << reg.Describe();
  EXPECT_EQ(reg.code(), "INTERNAL") << reg.Describe();
  // The server is up and serves reads.
  ASSERT_TRUE(w.server().Running()) << w.server().StderrTail();
  json friends = a->CommandOk("friends");
  EXPECT_EQ(Names(friends["friends"]), std::vector<std::string>{"bob"}) << friends.dump();
  // Refused writes left nothing behind in what the server shows.
  EXPECT_TRUE(Names(friends["requests"]).empty()) << friends.dump();

  disk.Clear();
  // New writes succeed again: the same requests as during the fault.
  a->CommandOk("single_message bob after");
  a->CommandOk("add_friend carol");
  User dave = w.Register("dave");
  ASSERT_TRUE(w.server().Running()) << w.server().StderrTail();
  ASSERT_EQ(a->Quit(), 0);

  const std::string log = ReadFile(w.server().log_path());
  EXPECT_NE(log.find(fault.log_words), std::string::npos) << "the log does not say '" << fault.log_words << "':\n"
                                                          << log;
  EXPECT_NE(log.find("incident "), std::string::npos) << log;

  // A crash right now loses nothing Ok'd; the file is sound.
  w.server().Kill();
  EXPECT_EQ(Query(disk.db(), "PRAGMA integrity_check"), std::vector<std::string>{"ok"});
  EXPECT_EQ(Query(disk.db(), "SELECT name FROM users ORDER BY id"),
            (std::vector<std::string>{"alice", "bob", "carol", "dave"}));
  w.RestartServer(true);

  // Bob gets every Ok'd message once, in order, and not the refused one.
  auto b = w.Chat(bob);
  std::vector<std::string> texts;
  const std::vector<std::string> want = {"before 0", "before 1", "before 2", "after"};
  while (texts.size() < want.size()) {
    json m = b->WaitFor(OfType("message"), "a message for bob");
    texts.push_back(Str(m, "text"));
  }
  EXPECT_EQ(texts, want);
  EXPECT_FALSE(b->TryWaitFor(OfType("message"), Millis(500)).has_value()) << "a message more than was Ok'd";
  ASSERT_EQ(b->Quit(), 0);
  RunResult carols = w.Run(carol, {"friends"});
  ASSERT_TRUE(carols.ok()) << carols.Describe();
  EXPECT_EQ(Names(carols.result()["requests"]), std::vector<std::string>{"alice"}) << carols.Describe();
  EXPECT_EQ(w.server().Stop(), 0);
  EXPECT_EQ(Query(disk.db(), "PRAGMA integrity_check"), std::vector<std::string>{"ok"});
}

INSTANTIATE_TEST_SUITE_P(Disk, StoreFaults, ::testing::ValuesIn(kFaults),
                         [](const ::testing::TestParamInfo<Fault>& p) { return std::string(p.param.name); });

// A server cannot start on a database it cannot write: it says so and exits
// (no crash), the file is untouched, and it starts once the fault clears.
TEST(StoreFaults, ReadOnlyDatabaseAtStartIsRefusedClearly) {
  FaultyDisk disk;
  World& w = disk.world();
  User alice = w.Register("alice");
  ASSERT_EQ(w.server().Stop(), 0);

  disk.Start("EROFS");
  std::string why;
  try {
    w.RestartServer(false);
  } catch (const std::runtime_error& e) {
    why = e.what();
  }
  EXPECT_NE(why.find("exited with code 1 before listening"), std::string::npos) << why;
  EXPECT_NE(why.find("the database is read-only"), std::string::npos) << why;

  disk.Clear();
  w.RestartServer(false);
  RunResult r = w.Run(alice, {"friends"});
  EXPECT_TRUE(r.ok()) << r.Describe();
  EXPECT_EQ(w.server().Stop(), 0);
  EXPECT_EQ(Query(disk.db(), "PRAGMA integrity_check"), std::vector<std::string>{"ok"});
}

}  // namespace
}  // namespace fastchat::testing
