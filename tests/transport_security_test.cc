// Transport security against real processes: what a network observer sees of
// a default session (nothing readable), what a plain-TCP peer gets from a
// default server (nothing), and how the client checks the server's identity
// (pinning, trust on first use, a changed certificate refused).
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "harness/fastchat.h"
#include "harness/raw_conn.h"
#include "harness/relay.h"
#include "net/tls.h"

namespace fastchat::testing {
namespace {

namespace fs = std::filesystem;

// Registers two users through the relay, makes them friends, sends a DM and
// creates a named group; returns the strings an observer must not read.
std::vector<std::string> Converse(World& w) {
  User a = w.Register("qzalice");
  User b = w.Register("qzbob");
  auto ca = w.Chat(a);
  ca->CommandOk("add_friend qzbob");
  w.RunOk(b, {"accept", "qzalice"});
  ca->WaitFor(Like({{"type", "friend_accepted"}, {"from", "qzbob"}}), "friend_accepted");
  auto cb = w.Chat(b);
  ca->CommandOk("single_message qzbob marker-text-4711");
  cb->WaitFor(Msg("qzalice", "marker-text-4711"), "the DM");
  ca->CommandOk("create_group qzgroupname");
  return {a.password, b.password, "qzalice", "qzbob", "qzgroupname", "marker-text-4711"};
}

TEST(TransportSecurity, AnObserverOfADefaultSessionReadsNoPasswordNameOrText) {
  World w;
  Relay relay(w.server().port());
  w.RouteClients(relay.address());
  std::vector<std::string> secrets = Converse(w);
  std::string wire = relay.Captured();
  EXPECT_GT(wire.size(), 4000u) << "the relay saw too little traffic to prove anything";
  for (const std::string& s : secrets) EXPECT_EQ(wire.find(s), std::string::npos) << "'" << s << "' on the wire";
  std::printf("captured %zu bytes of a default session; none of %zu markers found\n", wire.size(), secrets.size());
}

// The positive control: the same capture of a --insecure-plain-tcp session
// shows the passwords and names (the text stays end-to-end encrypted).
TEST(TransportSecurity, PlainTcpIsOnlyWhatTheExplicitFlagAsksForAndIsReadable) {
  ServerOptions o;
  o.extra_args = {"--insecure-plain-tcp"};
  World w(o);
  Relay relay(w.server().port());
  w.RouteClients(relay.address(), {"--insecure-plain-tcp"});
  std::vector<std::string> secrets = Converse(w);
  std::string wire = relay.Captured();
  for (std::size_t i = 0; i < 5; ++i)
    EXPECT_NE(wire.find(secrets[i]), std::string::npos) << "'" << secrets[i] << "' not seen in plain TCP";
  EXPECT_EQ(wire.find(secrets[5]), std::string::npos) << "message text must be end-to-end encrypted";
}

TEST(TransportSecurity, ADefaultServerRefusesPlainTcp) {
  World w;
  RawConn raw(w.server().port(), RawConn::Transport::kPlain);
  wire::Envelope hello;
  hello.mutable_hello()->set_version(kProtocolVersion);
  hello.set_rid(1);
  raw.Send(hello);
  wire::Envelope reply;
  RawConn::Recv r = raw.Receive(&reply, Millis(5000));
  EXPECT_NE(r, RawConn::Recv::kOk) << Describe(reply);
  EXPECT_TRUE(raw.WaitClosed(Millis(5000)));
  // ... and a plain client gets a clear failure, not a hang.
  User u = w.MakeUser("plainuser");
  std::vector<std::string> args = w.GlobalArgs(u, std::string());
  args.push_back("--insecure-plain-tcp");
  args.push_back("register");
  args.push_back("plainuser");
  RunResult res = RunClientOnce(args, w.tmp().Sub("plain.stderr"), Millis(30000));
  EXPECT_FALSE(res.ok()) << res.Describe();
}

TEST(TransportSecurity, PinnedFingerprintIsRequiredAndAWrongOneRefused) {
  World w;
  std::string fp;
  ASSERT_TRUE(net::FileFingerprint(w.server().dir() + "/server.crt", &fp).ok());
  User u = w.MakeUser("pinuser");
  RunResult wrong = w.Run(u, {"--tls-pin", std::string(64, 'a'), "register", "pinuser"}, Millis(30000),
                          std::string());
  EXPECT_FALSE(wrong.ok()) << wrong.Describe();
  EXPECT_EQ(wrong.code(), "CRYPTO_FAILED") << wrong.Describe();
  EXPECT_FALSE(fs::exists(u.home + "/known_servers"));  // a pin records nothing
  RunResult right = w.Run(u, {"--tls-pin", fp, "register", "pinuser"}, Millis(30000), std::string());
  EXPECT_TRUE(right.ok()) << right.Describe();
}

TEST(TransportSecurity, TrustOnFirstUseThenAChangedCertificateIsRefusedLoudly) {
  World w;
  User u = w.Register("tofuuser");  // first use: recorded
  std::string known = ReadFile(u.home + "/known_servers");
  std::string fp;
  ASSERT_TRUE(net::FileFingerprint(w.server().dir() + "/server.crt", &fp).ok());
  EXPECT_NE(known.find(fp), std::string::npos) << known;
  EXPECT_TRUE(w.Run(u, {"friends"}).ok());

  // The server comes back with another certificate. It listens on a new
  // port, so the record is moved to that port: the client then sees "the
  // same server, a different key".
  fs::remove(w.server().dir() + "/server.crt");
  fs::remove(w.server().dir() + "/server.key");
  w.RestartServer(false);
  std::string rewritten = "127.0.0.1:" + std::to_string(w.server().port()) + known.substr(known.find(' '));
  WriteFile(u.home + "/known_servers", rewritten);
  RunResult r = w.Run(u, {"friends"});
  EXPECT_FALSE(r.ok()) << r.Describe();
  EXPECT_EQ(r.code(), "CRYPTO_FAILED") << r.Describe();
  EXPECT_NE(r.out.find("HAS CHANGED"), std::string::npos) << r.Describe();
  EXPECT_EQ(ReadFile(u.home + "/known_servers"), rewritten);  // not overwritten
}

TEST(TransportSecurity, AConnectionThatNeverHandshakesIsClosedAtTheDeadline) {
  ServerOptions o;
  o.extra_args = {"--tls-handshake-timeout-ms", "700"};
  World w(o);
  RawConn silent(w.server().port(), RawConn::Transport::kPlain);  // TCP only, sends nothing
  auto start = Clock::now();
  EXPECT_TRUE(silent.WaitClosed(Millis(5000)));
  auto waited = std::chrono::duration_cast<Millis>(Clock::now() - start).count();
  EXPECT_GE(waited, 500);
  std::printf("silent connection closed after %lld ms (deadline 700 ms)\n", static_cast<long long>(waited));
  // A real client meanwhile is served.
  EXPECT_NO_THROW(w.Register("served"));
}

}  // namespace
}  // namespace fastchat::testing
