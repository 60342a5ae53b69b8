// The client as a user meets it (issue 8), with real server and client
// processes: one wording for a wrong password.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "harness/fastchat.h"

namespace fastchat::testing {
namespace {

namespace fs = std::filesystem;

// `argv` without its "--json".
std::vector<std::string> Human(std::vector<std::string> argv) {
  argv.erase(std::remove(argv.begin(), argv.end(), "--json"), argv.end());
  return argv;
}

// ------------------------------------------------------------------ wrong password

TEST(Login, OneWordingAndOneCodeForAWrongPasswordWhicheverSideRefuses) {
  World w;
  User a = w.Register("alice");
  const std::string kWords = "unknown user or wrong password";

  // A copy of alice's home as it is now: a second device, say.
  const std::string old_home = w.tmp().Sub("alice-old-home");
  fs::copy(a.home, old_home, fs::copy_options::recursive);
  ASSERT_TRUE(w.RunOk(a, {"--new-password", "pw-new-and-long", "change_password"}).value("ok", false));

  std::vector<std::pair<std::string, RunResult>> refused;
  // 1. The local store refuses: a wrong password, and no server to ask
  //    (nothing listens on port 1), so nobody else could have refused.
  User wrong = a;
  wrong.password = "not-the-password";
  {
    std::vector<std::string> argv = w.GlobalArgs(wrong);
    argv.at(std::find(argv.begin(), argv.end(), "--server") - argv.begin() + 1) = "127.0.0.1:1";
    argv.push_back("friends");
    refused.emplace_back("local store", RunClientOnce(argv, w.tmp().Sub("local.stderr"), kDefaultTimeout));
  }
  // 2. The server refuses an unknown user (no local store here).
  refused.emplace_back("server, unknown user", w.Run(a, {"friends"}, Millis(60000), std::string("nobody")));
  // 3. The server refuses a wrong password for a user this home has no store of.
  User elsewhere = wrong;
  elsewhere.home = w.tmp().Sub("empty-home", true);
  refused.emplace_back("server, no store here", w.Run(elsewhere, {"friends"}));
  // 4. The store opens (the old password, in the old copy) but the server
  //    has the new one.
  User old_copy = a;
  old_copy.home = old_home;
  refused.emplace_back("server, store opened", w.Run(old_copy, {"friends"}));

  for (const auto& [who, r] : refused) {
    SCOPED_TRACE(who);
    EXPECT_EQ(r.exit_code, 1) << r.Describe();
    EXPECT_EQ(r.code(), "BAD_CREDENTIALS") << r.Describe();
    EXPECT_EQ(Str(r.result(), "error"), kWords) << r.Describe();
  }
  // In text mode the two sides print the very same line.
  std::vector<std::string> argv = Human(w.GlobalArgs(wrong));
  argv.push_back("friends");
  RunResult local = RunClientOnce(argv, w.tmp().Sub("h1.stderr"), kDefaultTimeout);
  argv = Human(w.GlobalArgs(old_copy));
  argv.push_back("friends");
  RunResult server = RunClientOnce(argv, w.tmp().Sub("h2.stderr"), kDefaultTimeout);
  EXPECT_EQ(local.out, "error (friends): BAD_CREDENTIALS: " + kWords + "\n") << local.Describe();
  EXPECT_EQ(server.out, local.out) << server.Describe();
}

}  // namespace
}  // namespace fastchat::testing
