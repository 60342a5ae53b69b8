// Session tokens against a real server: issued at a password login, usable
// instead of the password (also after a restart, without an Argon2id hash),
// revoked by Logout and by a password change, refused when wrong.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "harness/fastchat.h"
#include "harness/raw_conn.h"

namespace fastchat::testing {
namespace {

wire::Envelope TokenLogin(RawConn& c, const std::string& token, const std::string& name = "") {
  wire::Envelope env;
  if (!name.empty()) env.mutable_login()->mutable_user()->set_name(name);
  env.mutable_login()->set_token(token);
  return c.Request(env);
}

std::string PasswordLoginToken(std::uint16_t port, const std::string& name, const std::string& password) {
  RawConn c(port);
  c.Hello();
  wire::Envelope r = c.Login(name, password, false);
  if (!r.has_logged_in()) throw std::runtime_error("login failed: " + Describe(r));
  return r.logged_in().session_token();
}

TEST(SessionToken, IssuedAtPasswordLoginAndAcceptedInsteadOfThePassword) {
  World w;
  {
    RawConn c(w.server().port());
    c.Hello();
    ASSERT_TRUE(c.Register("alice", "alice-password").has_ok());
    ASSERT_TRUE(c.Register("bob", "bob-password").has_ok());
  }
  RawConn c(w.server().port());
  c.Hello();
  wire::Envelope in = c.Login("alice", "alice-password", false);
  ASSERT_TRUE(in.has_logged_in()) << Describe(in);
  const std::string token = in.logged_in().session_token();
  EXPECT_EQ(token.size(), 32u);
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  EXPECT_GT(in.logged_in().token_expires_ms(), static_cast<std::uint64_t>(now_ms) + 29ull * 24 * 3600 * 1000);

  RawConn t(w.server().port());
  t.Hello();
  wire::Envelope by_token = TokenLogin(t, token);
  ASSERT_TRUE(by_token.has_logged_in()) << Describe(by_token);
  EXPECT_EQ(by_token.logged_in().name(), "alice");
  EXPECT_TRUE(by_token.logged_in().session_token().empty());  // keep using the same token

  RawConn named(w.server().port());
  named.Hello();
  EXPECT_TRUE(TokenLogin(named, token, "alice").has_logged_in());
  RawConn other(w.server().port());
  other.Hello();
  EXPECT_EQ(ErrorName(TokenLogin(other, token, "bob")), "BAD_CREDENTIALS");  // alice's token is not bob's
  RawConn wrong(w.server().port());
  wrong.Hello();
  std::string forged = token;
  forged[0] = static_cast<char>(forged[0] ^ 1);
  EXPECT_EQ(ErrorName(TokenLogin(wrong, forged)), "BAD_CREDENTIALS");
  RawConn both(w.server().port());
  both.Hello();
  wire::Envelope env;
  env.mutable_login()->set_token(token);
  env.mutable_login()->set_password("alice-password");
  EXPECT_EQ(ErrorName(both.Request(env)), "BAD_REQUEST");
}

// What tokens are for: after a restart every client logs in again; with a
// token that costs the server a store read, not an Argon2id hash.
TEST(SessionToken, SurvivesARestartAndSkipsTheHash) {
  ServerOptions o;
  o.extra_args = {"--pwhash", "interactive"};
  World w(o);
  {
    RawConn c(w.server().port());
    c.Hello();
    ASSERT_TRUE(c.Register("carol", "carol-password").has_ok());
  }
  const std::string token = PasswordLoginToken(w.server().port(), "carol", "carol-password");
  w.RestartServer(/*crash=*/true);

  RawConn p(w.server().port());
  p.Hello();
  auto t0 = Clock::now();
  ASSERT_TRUE(p.Login("carol", "carol-password", false).has_logged_in());
  auto password_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  RawConn t(w.server().port());
  t.Hello();
  t0 = Clock::now();
  ASSERT_TRUE(TokenLogin(t, token).has_logged_in());
  auto token_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  std::printf("login after restart: password (Argon2id interactive) %.1f ms, token %.1f ms\n", password_ms, token_ms);
  EXPECT_LT(token_ms, password_ms);
}

TEST(SessionToken, LogoutRevokesTheTokenAndEndsTheConnection) {
  World w;
  {
    RawConn c(w.server().port());
    c.Hello();
    ASSERT_TRUE(c.Register("dave", "dave-password").has_ok());
  }
  const std::string token = PasswordLoginToken(w.server().port(), "dave", "dave-password");
  RawConn c(w.server().port());
  c.Hello();
  ASSERT_TRUE(TokenLogin(c, token).has_logged_in());
  wire::Envelope out;
  out.mutable_logout();
  EXPECT_TRUE(c.Request(out).has_ok());
  EXPECT_TRUE(c.WaitClosed(Millis(5000)));
  RawConn again(w.server().port());
  again.Hello();
  EXPECT_EQ(ErrorName(TokenLogin(again, token)), "BAD_CREDENTIALS");
  // The password still works, and issues a new token.
  EXPECT_EQ(PasswordLoginToken(w.server().port(), "dave", "dave-password").size(), 32u);
}

TEST(SessionToken, APasswordChangeRevokesEveryTokenAndTheOldPassword) {
  World w;
  {
    RawConn c(w.server().port());
    c.Hello();
    ASSERT_TRUE(c.Register("erin", "erin-password").has_ok());
  }
  const std::string t1 = PasswordLoginToken(w.server().port(), "erin", "erin-password");
  RawConn c(w.server().port());
  c.Hello();
  wire::Envelope in = c.Login("erin", "erin-password", false);
  ASSERT_TRUE(in.has_logged_in());
  const std::string t2 = in.logged_in().session_token();

  wire::Envelope change;
  change.mutable_change_password()->set_old_password("not-her-password");
  change.mutable_change_password()->set_new_password("erin-new-password");
  EXPECT_EQ(ErrorName(c.Request(change)), "BAD_CREDENTIALS");
  change.mutable_change_password()->set_old_password("erin-password");
  change.mutable_change_password()->set_new_password("short");
  EXPECT_EQ(ErrorName(c.Request(change)), "BAD_REQUEST");
  change.mutable_change_password()->set_new_password("erin-new-password");
  wire::Envelope changed = c.Request(change);
  ASSERT_TRUE(changed.has_logged_in()) << Describe(changed);
  const std::string t3 = changed.logged_in().session_token();
  EXPECT_EQ(t3.size(), 32u);

  for (const std::string& old : {t1, t2}) {
    RawConn r(w.server().port());
    r.Hello();
    EXPECT_EQ(ErrorName(TokenLogin(r, old)), "BAD_CREDENTIALS");
  }
  RawConn fresh(w.server().port());
  fresh.Hello();
  EXPECT_TRUE(TokenLogin(fresh, t3).has_logged_in());
  RawConn oldpw(w.server().port());
  oldpw.Hello();
  EXPECT_EQ(ErrorName(oldpw.Login("erin", "erin-password", false)), "BAD_CREDENTIALS");
  RawConn newpw(w.server().port());
  newpw.Hello();
  EXPECT_TRUE(newpw.Login("erin", "erin-new-password", false).has_logged_in());
  // Not logged in: refused.
  RawConn anon(w.server().port());
  anon.Hello();
  EXPECT_EQ(ErrorName(anon.Request(change)), "NOT_LOGGED_IN");
}

TEST(SessionToken, WrongCurrentPasswordsInAChangeCountAsFailedLogins) {
  // A stolen token must not become a way to guess the password.
  ServerOptions o;
  o.limit_args = {"--registrations-per-ip", "0", "--login-failures-per-account", "2"};
  World w(o);
  {
    RawConn c(w.server().port());
    c.Hello();
    ASSERT_TRUE(c.Register("fay", "fay-password").has_ok());
  }
  const std::string token = PasswordLoginToken(w.server().port(), "fay", "fay-password");
  RawConn thief(w.server().port());
  thief.Hello();
  ASSERT_TRUE(TokenLogin(thief, token).has_logged_in());
  wire::Envelope guess;
  guess.mutable_change_password()->set_new_password("thief-chosen-password");
  std::vector<std::string> answers;
  for (int i = 0; i < 3; ++i) {
    guess.mutable_change_password()->set_old_password("guess-" + std::to_string(i));
    answers.push_back(ErrorName(thief.Request(guess)));
  }
  EXPECT_EQ(answers, (std::vector<std::string>{"BAD_CREDENTIALS", "BAD_CREDENTIALS", "RATE_LIMITED"}));
  // Even the right password is refused until the account's failures drain.
  guess.mutable_change_password()->set_old_password("fay-password");
  EXPECT_EQ(ErrorName(thief.Request(guess)), "RATE_LIMITED");
}

TEST(SessionToken, ClientChangesThePasswordOnTheServerAndInItsKeyStore) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");
  {
    auto ca = w.Chat(a);
    auto cb = w.Chat(b);
    w.MakeFriends(*ca, a, *cb, b);  // alice's key store now holds a friend key
    ca->Quit();
    cb->Quit();
  }
  RunResult same = w.Run(a, {"--new-password", a.password, "change_password"});
  EXPECT_EQ(same.code(), "USAGE") << same.Describe();

  const std::string old_password = a.password;
  json r = w.RunOk(a, {"--new-password", "alice-second-password", "change_password"});
  EXPECT_EQ(Str(r, "server"), "changed");
  // The old password opens neither the key store nor the account.
  RunResult old_local = w.Run(a, {"friends"});
  EXPECT_EQ(old_local.code(), "BAD_CREDENTIALS") << old_local.Describe();
  {
    RawConn c(w.server().port());
    c.Hello();
    EXPECT_EQ(ErrorName(c.Login("alice", old_password, false)), "BAD_CREDENTIALS");
  }
  a.password = "alice-second-password";
  w.RunOk(a, {"single_message", "bob", "after the change"});  // the re-sealed friend key still works
  auto cb = w.Chat(b);
  cb->WaitFor(Msg("alice", "after the change"), "bob receives alice's message");
  cb->Quit();

  // The server's half done by someone else (or a run whose local half
  // failed): running it again with the same passwords finishes the local half.
  {
    RawConn c(w.server().port());
    c.Hello();
    ASSERT_TRUE(c.Login("alice", "alice-second-password", false).has_logged_in());
    wire::Envelope change;
    change.mutable_change_password()->set_old_password("alice-second-password");
    change.mutable_change_password()->set_new_password("alice-third-password");
    ASSERT_TRUE(c.Request(change).has_logged_in());
  }
  json again = w.RunOk(a, {"--new-password", "alice-third-password", "change_password"});
  EXPECT_EQ(Str(again, "server"), "already changed");
  a.password = "alice-third-password";
  json friends = w.RunOk(a, {"friends"});
  EXPECT_EQ(Names(friends["friends"]), std::vector<std::string>{"bob"});

  // A wrong current password changes nothing.
  User wrong = a;
  wrong.password = "not-alice-password";
  RunResult refused = w.Run(wrong, {"--new-password", "whatever-password", "change_password"});
  EXPECT_EQ(refused.code(), "BAD_CREDENTIALS") << refused.Describe();
  w.RunOk(a, {"friends"});
}

}  // namespace
}  // namespace fastchat::testing
