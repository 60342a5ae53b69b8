// Admission, deadlines and the hash queue, with times passed in.
#include "peer_limits.h"

#include <string>

#include <asio/ip/address.hpp>
#include <gtest/gtest.h>

namespace fastchat::server {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::string Key(const char* address) { return SourceKey(asio::ip::make_address(address)); }

TEST(SourceKey, IPv4AndMappedIPv4AreOneSourceIPv6GoesBy64) {
  EXPECT_EQ(Key("192.0.2.7"), Key("::ffff:192.0.2.7"));
  EXPECT_NE(Key("192.0.2.7"), Key("192.0.2.8"));
  EXPECT_EQ(Key("2001:db8:1:2::1"), Key("2001:db8:1:2:ffff::9"));
  EXPECT_NE(Key("2001:db8:1:2::1"), Key("2001:db8:1:3::1"));
  EXPECT_EQ(Key("192.0.2.7").size(), 4u);
  EXPECT_EQ(Key("2001:db8::1").size(), 8u);
  EXPECT_EQ(DescribeSource(Key("::ffff:192.0.2.7")), "192.0.2.7");
  EXPECT_EQ(DescribeSource(Key("2001:db8:1:2::1")), "2001:db8:1:2::/64");
}

TEST(ConnectionCounts, PerSourceLimitTriggersAtItsNumberOthersStillGetIn) {
  Limits l;
  l.max_connections = 100;
  l.max_connections_per_source = 3;
  ConnectionCounts c(l);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(c.Admit("a").ok()) << i;
  Refusal r = c.Admit("a");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status.code(), Code::kLimitReached);
  EXPECT_NE(r.status.message().find("at most 3"), std::string::npos) << r.status.message();
  EXPECT_GT(r.retry_after_ms, 0u);
  EXPECT_TRUE(c.Admit("b").ok());
  EXPECT_EQ(c.total(), 4u);
  EXPECT_EQ(c.from("a"), 3u);
  c.Release("a");
  EXPECT_TRUE(c.Admit("a").ok());
}

TEST(ConnectionCounts, TotalLimitAndReleaseForgetsEmptySources) {
  Limits l;
  l.max_connections = 2;
  l.max_connections_per_source = 0;  // off
  ConnectionCounts c(l);
  ASSERT_TRUE(c.Admit("a").ok());
  ASSERT_TRUE(c.Admit("b").ok());
  Refusal r = c.Admit("c");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status.message().find("limit of 2 connections"), std::string::npos) << r.status.message();
  c.Release("a");
  c.Release("b");
  EXPECT_EQ(c.total(), 0u);
  EXPECT_EQ(c.sources(), 0u);
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(c.Admit("c").ok());
}

// A connection accepted at t0 = 1 h on the steady clock.
class Deadlines : public ::testing::Test {
 protected:
  Deadlines() {
    limits_.hello_timeout = seconds(10);
    limits_.login_timeout = seconds(30);
    limits_.unauth_idle_timeout = seconds(5);
    limits_.write_stall_timeout = seconds(60);
    limits_.ping_after = seconds(60);
    limits_.ping_timeout = seconds(30);
    limits_.close_grace = seconds(5);
    c_.accepted = c_.last_frame = c_.last_bytes = c_.last_write_progress = t0_;
    c_.waiting_for_peer = true;
  }
  Verdict::Act At(Millis since_t0) { return CheckLiveness(c_, limits_, t0_ + since_t0).act; }
  std::string Why(Millis since_t0) { return CheckLiveness(c_, limits_, t0_ + since_t0).why.message(); }

  Limits limits_;
  SteadyTime t0_ = SteadyTime() + std::chrono::hours(1);
  Liveness c_;
};

TEST_F(Deadlines, NoHelloClosesAtTheHelloTimeout) {
  limits_.unauth_idle_timeout = seconds(0);
  EXPECT_EQ(At(milliseconds(9999)), Verdict::kNone);
  EXPECT_EQ(At(seconds(10)), Verdict::kCloseWithError);
  EXPECT_EQ(CheckLiveness(c_, limits_, t0_ + seconds(10)).why.code(), Code::kLimitReached);
  EXPECT_NE(Why(seconds(10)).find("no Hello within 10 s"), std::string::npos) << Why(seconds(10));
  c_.said_hello = true;
  EXPECT_EQ(At(seconds(10)), Verdict::kNone);
}

TEST_F(Deadlines, NotLoggedInClosesAtTheLoginTimeoutEvenIfBusy) {
  c_.said_hello = true;
  c_.last_frame = t0_ + seconds(29);  // chatty, but never logs in
  EXPECT_EQ(At(milliseconds(29999)), Verdict::kNone);
  EXPECT_EQ(At(seconds(30)), Verdict::kCloseWithError);
  EXPECT_NE(Why(seconds(30)).find("not logged in within 30 s"), std::string::npos) << Why(seconds(30));
  c_.logged_in = true;
  EXPECT_EQ(At(seconds(30)), Verdict::kNone);
}

TEST_F(Deadlines, SilenceBeforeLoginCountsCompleteFramesOnly) {
  c_.said_hello = true;
  c_.last_frame = t0_ + seconds(1);
  c_.last_bytes = t0_ + seconds(5);  // bytes of a frame never finished
  EXPECT_EQ(At(milliseconds(5999)), Verdict::kNone);
  EXPECT_EQ(At(seconds(6)), Verdict::kCloseWithError);
  EXPECT_NE(Why(seconds(6)).find("no complete frame for 5 s"), std::string::npos) << Why(seconds(6));
  // Waiting for the server (a password check), not for the peer: no idle close.
  c_.waiting_for_peer = false;
  EXPECT_EQ(At(seconds(6)), Verdict::kNone);
}

TEST_F(Deadlines, LoggedInSilenceGetsAPingThenADropWithoutAnAnswer) {
  c_.logged_in = true;
  EXPECT_EQ(At(seconds(59)), Verdict::kNone);
  EXPECT_EQ(At(seconds(60)), Verdict::kPing);
  c_.ping_outstanding = true;
  c_.ping_sent = t0_ + seconds(60);
  EXPECT_EQ(At(seconds(89)), Verdict::kNone);
  EXPECT_EQ(At(seconds(90)), Verdict::kDrop);
  EXPECT_NE(Why(seconds(90)).find("no answer to Ping within 30 s"), std::string::npos);
  // An answer (any bytes) clears it; the next ping is 60 s after those bytes.
  c_.ping_outstanding = false;
  c_.last_bytes = t0_ + seconds(70);
  EXPECT_EQ(At(seconds(90)), Verdict::kNone);
  EXPECT_EQ(At(seconds(130)), Verdict::kPing);
}

TEST_F(Deadlines, NoPingWhileTheServerHoldsTheReader) {
  c_.logged_in = true;
  c_.waiting_for_peer = false;  // e.g. waiting for its store writes
  EXPECT_EQ(At(seconds(600)), Verdict::kNone);
}

TEST_F(Deadlines, WriteStallDropsAPeerThatStoppedReading) {
  c_.logged_in = true;
  c_.waiting_for_peer = false;  // the reader is held by the full queue
  c_.queued_bytes = 8 << 20;
  c_.last_write_progress = t0_ + seconds(10);
  EXPECT_EQ(At(milliseconds(69999)), Verdict::kNone);
  EXPECT_EQ(At(seconds(70)), Verdict::kDrop);
  EXPECT_NE(Why(seconds(70)).find("took none of its 8388608 queued bytes for 60 s"), std::string::npos)
      << Why(seconds(70));
  // An empty queue never stalls.
  c_.queued_bytes = 0;
  EXPECT_EQ(At(seconds(70)), Verdict::kNone);
}

TEST_F(Deadlines, ClosingConnectionsGetTheGraceThenGo) {
  c_.closing = true;
  c_.closing_since = t0_ + seconds(100);
  EXPECT_EQ(At(seconds(104)), Verdict::kNone);
  EXPECT_EQ(At(seconds(105)), Verdict::kDrop);
}

TEST_F(Deadlines, ZeroSwitchesEachOff) {
  limits_ = Limits();
  limits_.hello_timeout = limits_.login_timeout = limits_.unauth_idle_timeout = Millis(0);
  limits_.write_stall_timeout = limits_.ping_after = limits_.close_grace = Millis(0);
  EXPECT_EQ(limits_.ShortestDeadline(), seconds(30));  // ping_timeout is still on
  EXPECT_EQ(At(std::chrono::hours(24)), Verdict::kNone);
  c_.logged_in = true;
  c_.queued_bytes = 1;
  EXPECT_EQ(At(std::chrono::hours(24)), Verdict::kNone);
  c_.closing = true;
  EXPECT_EQ(At(std::chrono::hours(24)), Verdict::kNone);
}

TEST(HashQueue, RefusesPastThreadsPlusWaitingWithAnEstimate) {
  HashQueue q(2, 3);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(q.Enter().ok()) << i;
  // Teach it that a hash takes 200 ms.
  for (int i = 0; i < 50; ++i) {
    q.Leave(milliseconds(200));
    ASSERT_TRUE(q.Enter().ok());
  }
  Refusal r = q.Enter();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status.code(), Code::kBusy);
  // 3 waiting and this one: two rounds of the 2 threads at 200 ms a hash.
  EXPECT_NEAR(r.retry_after_ms, 400u, 5u);
  EXPECT_EQ(q.jobs(), 5u);
  q.Leave(milliseconds(200));
  EXPECT_TRUE(q.Enter().ok());
}

TEST(HashQueue, ZeroWaitingMeansNoBound) {
  HashQueue q(2, 0);
  for (int i = 0; i < 10000; ++i) ASSERT_TRUE(q.Enter().ok());
}

}  // namespace
}  // namespace fastchat::server
