// A failing store never shows its words to a client: a real server whose
// SQLite database refuses to store deliveries (a trigger, added while the
// server is down, that fails every insert with text standing for what a
// database says: a path, a reason) answers INTERNAL "internal error
// (incident ID)", and its log has the same ID with the database's text.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <regex>
#include <string>

#include "harness/fastchat.h"

namespace fastchat::testing {
namespace {

const char kDatabaseWords[] = "disk I/O error at /var/lib/fastchat-secret-path/server.db";

// Runs `sql` on the database file `path` (no server may have it open).
void RunSql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) throw std::runtime_error("cannot open " + path);
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  std::string why = err != nullptr ? err : "";
  sqlite3_free(err);
  sqlite3_close(db);
  if (rc != SQLITE_OK) throw std::runtime_error("sql failed: " + why);
}

// Checks that `r` failed with nothing but a generic INTERNAL error and that
// the server's log names its incident with the database's words.
void ExpectIncident(World& w, const RunResult& r) {
  EXPECT_EQ(r.code(), "INTERNAL") << r.Describe();
  const std::string message = r.result().value("error", "");
  std::smatch m;
  static const std::regex kGeneric(R"(^internal error \(incident ([0-9a-f]{8})\)$)");
  ASSERT_TRUE(std::regex_match(message, m, kGeneric)) << r.Describe();
  for (const char* leak : {"secret-path", "disk I/O", "Enqueue", "store", "user "}) {
    EXPECT_EQ(r.out.find(leak), std::string::npos) << "'" << leak << "' reached the client:\n" << r.Describe();
  }
  const std::string log = ReadFile(w.server().log_path());
  const std::size_t at = log.find("incident " + m[1].str() + ": ");
  ASSERT_NE(at, std::string::npos) << log;
  const std::string line = log.substr(at, log.find('\n', at) - at);
  EXPECT_NE(line.find(kDatabaseWords), std::string::npos) << line;
}

TEST(InternalErrors, ClientGetsAnIncidentIdAndTheLogTheCause) {
  World w;
  User alice = w.Register("alice");
  User bob = w.Register("bob");
  w.Register("carol");
  {
    auto a = w.Chat(alice);
    auto b = w.Chat(bob);
    w.MakeFriends(*a, alice, *b, bob);
    EXPECT_EQ(a->Quit(), 0);
    EXPECT_EQ(b->Quit(), 0);
  }

  ASSERT_EQ(w.server().Stop(), 0);
  RunSql(w.server().db_path(), std::string("CREATE TRIGGER refuse BEFORE INSERT ON pending BEGIN SELECT RAISE(ABORT, '") +
                                   kDatabaseWords + "'); END;");
  w.RestartServer(false);

  // A direct message (the merged enqueue path) and a friend request (a write
  // of several steps) both fail in the store.
  ExpectIncident(w, w.Run(alice, {"single_message", "bob", "hello"}));
  ExpectIncident(w, w.Run(alice, {"add_friend", "carol"}));

  // What does not touch the failing table still works.
  RunResult r = w.Run(alice, {"friends"});
  EXPECT_TRUE(r.ok()) << r.Describe();
}

}  // namespace
}  // namespace fastchat::testing
