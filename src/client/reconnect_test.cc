#include "reconnect.h"

#include <gtest/gtest.h>

namespace fastchat::client {
namespace {

using std::chrono::milliseconds;

TEST(SplitHostPort, AcceptsHostsAndBracketedV6) {
  std::string h, p;
  ASSERT_TRUE(SplitHostPort("127.0.0.1:7400", &h, &p));
  EXPECT_EQ(h, "127.0.0.1");
  EXPECT_EQ(p, "7400");
  ASSERT_TRUE(SplitHostPort("[::1]:9", &h, &p));
  EXPECT_EQ(h, "::1");
  EXPECT_EQ(p, "9");
  ASSERT_TRUE(SplitHostPort("chat.example.org:65535", &h, &p));
  EXPECT_EQ(h, "chat.example.org");
}

TEST(SplitHostPort, RejectsBadPorts) {
  std::string h = "keep", p = "keep";
  for (const char* bad : {"", "host", "host:", ":7400", "host:0", "host:65536", "host:12x", "host:-1",
                          "host:123456", "[]:80"}) {
    EXPECT_FALSE(SplitHostPort(bad, &h, &p)) << bad;
  }
  EXPECT_EQ(h, "keep");
  EXPECT_EQ(p, "keep");
}

TEST(ParseBalancerList, SplitsCommasAcrossRepeatedOptions) {
  std::vector<std::string> out;
  std::string err;
  ASSERT_TRUE(ParseBalancerList({"a:1, b:2", "c:3", " ,a:1,, "}, &out, &err)) << err;
  EXPECT_EQ(out, (std::vector<std::string>{"a:1", "b:2", "c:3"}));
  ASSERT_TRUE(ParseBalancerList({}, &out, &err));
  EXPECT_TRUE(out.empty());
  ASSERT_TRUE(ParseBalancerList({""}, &out, &err));
  EXPECT_TRUE(out.empty());
}

TEST(ParseBalancerList, NamesTheBadEntry) {
  std::vector<std::string> out;
  std::string err;
  EXPECT_FALSE(ParseBalancerList({"a:1,nonsense,b:2"}, &out, &err));
  EXPECT_NE(err.find("nonsense"), std::string::npos) << err;
  EXPECT_FALSE(ParseBalancerList({"a:99999"}, &out, &err));
}

TEST(Backoff, DoublesUpToTheCapAndResets) {
  Backoff b(milliseconds(100), milliseconds(2000));
  std::vector<long> got;
  for (int i = 0; i < 8; ++i) got.push_back(static_cast<long>(b.Next().count()));
  EXPECT_EQ(got, (std::vector<long>{100, 200, 400, 800, 1600, 2000, 2000, 2000}));
  b.Reset();
  EXPECT_EQ(b.Next().count(), 100);
}

TEST(Backoff, DefaultScheduleFitsManyAttemptsIntoTheBudget) {
  Backoff b;
  milliseconds total(0);
  int attempts = 0;
  while (total < kReconnectFor) {
    total += b.Next();
    ++attempts;
  }
  EXPECT_GE(attempts, 30);  // never stops trying early
}

TEST(ClipDelay, NeverPassesTheDeadline) {
  EXPECT_EQ(ClipDelay(milliseconds(2000), milliseconds(500)).count(), 500);
  EXPECT_EQ(ClipDelay(milliseconds(100), milliseconds(500)).count(), 100);
  EXPECT_EQ(ClipDelay(milliseconds(100), milliseconds(0)).count(), 0);
  EXPECT_EQ(ClipDelay(milliseconds(100), milliseconds(-5)).count(), 0);
}

}  // namespace
}  // namespace fastchat::client
