// Token buckets, bounded tables of them, and the server's rate limits, on an
// injected clock.
#include "rate_limiter.h"

#include <string>

#include <gtest/gtest.h>

namespace fastchat::server {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// A clock that moves only when told to.
struct FakeClock {
  SteadyTime now = SteadyTime() + std::chrono::hours(1);
  void Advance(Millis d) { now += d; }
  RateLimiter::Clock fn() {
    return [this] { return now; };
  }
};

TEST(TokenBucket, StartsFullRefusesWhenEmptyAndSaysWhenTheNextTokenComes) {
  const RateLimit limit{2.0, 3.0};  // 2 a second, bursts of 3
  FakeClock clock;
  TokenBucket b(limit, clock.now);
  EXPECT_EQ(b.Take(limit, clock.now), 0u);
  EXPECT_EQ(b.Take(limit, clock.now), 0u);
  EXPECT_EQ(b.Take(limit, clock.now), 0u);
  EXPECT_EQ(b.Take(limit, clock.now), 500u);  // one token per 500 ms
  clock.Advance(milliseconds(499));
  EXPECT_EQ(b.Take(limit, clock.now), 1u);
  clock.Advance(milliseconds(1));
  EXPECT_EQ(b.Take(limit, clock.now), 0u);
  EXPECT_GT(b.Take(limit, clock.now), 0u);
}

TEST(TokenBucket, RefillStopsAtTheBurstAndGiveNeverExceedsIt) {
  const RateLimit limit{1.0, 2.0};
  FakeClock clock;
  TokenBucket b(limit, clock.now);
  clock.Advance(seconds(100));  // long idle: still only 2 tokens
  EXPECT_EQ(b.Take(limit, clock.now), 0u);
  EXPECT_EQ(b.Take(limit, clock.now), 0u);
  EXPECT_GT(b.Take(limit, clock.now), 0u);
  b.Give(limit, clock.now);
  b.Give(limit, clock.now);
  b.Give(limit, clock.now);  // one more than was taken: capped
  EXPECT_TRUE(b.Full(limit, clock.now));
  EXPECT_EQ(b.Take(limit, clock.now), 0u);
  EXPECT_EQ(b.Take(limit, clock.now), 0u);
  EXPECT_GT(b.Take(limit, clock.now), 0u);
}

TEST(TokenBucket, FullAgainAfterBurstOverRate) {
  const RateLimit limit = RateLimit::PerMinute(6);  // a token per 10 s
  FakeClock clock;
  TokenBucket b(limit, clock.now);
  for (int i = 0; i < 6; ++i) ASSERT_EQ(b.Take(limit, clock.now), 0u);
  EXPECT_EQ(b.Take(limit, clock.now), 10000u);
  EXPECT_FALSE(b.Full(limit, clock.now + seconds(59)));
  EXPECT_TRUE(b.Full(limit, clock.now + seconds(60)));
}

TEST(RateTable, EachKeyHasItsOwnBucket) {
  FakeClock clock;
  RateTable t(RateLimit{1.0, 2.0}, 100);
  EXPECT_EQ(t.Take("a", clock.now), 0u);
  EXPECT_EQ(t.Take("a", clock.now), 0u);
  EXPECT_GT(t.Take("a", clock.now), 0u);
  EXPECT_EQ(t.Take("b", clock.now), 0u);
  EXPECT_EQ(t.size(), 2u);
}

TEST(RateTable, NeverHoldsMoreThanItsBoundAndDropsTheLeastRecentlyUsed) {
  FakeClock clock;
  RateTable t(RateLimit{1.0, 1.0}, 3);
  EXPECT_EQ(t.Take("a", clock.now), 0u);
  EXPECT_GT(t.Take("a", clock.now), 0u);  // a is empty
  EXPECT_EQ(t.Take("b", clock.now), 0u);
  EXPECT_EQ(t.Take("c", clock.now), 0u);
  EXPECT_GT(t.Take("a", clock.now), 0u);  // a used again: b is now the oldest
  EXPECT_EQ(t.Take("d", clock.now), 0u);  // at the bound: b goes
  EXPECT_EQ(t.size(), 3u);
  EXPECT_GT(t.Take("a", clock.now), 0u);  // a kept its (empty) bucket
  EXPECT_EQ(t.Take("b", clock.now), 0u);  // b starts again (and pushes c out)
  EXPECT_EQ(t.size(), 3u);
  for (int i = 0; i < 1000; ++i) t.Take("k" + std::to_string(i), clock.now);
  EXPECT_EQ(t.size(), 3u);
}

TEST(RateTable, PrefersDroppingFullBucketsWhenItNeedsRoom) {
  FakeClock clock;
  RateTable t(RateLimit{1.0, 1.0}, 2);
  EXPECT_EQ(t.Take("old", clock.now), 0u);  // empty now, full again in 1 s
  clock.Advance(seconds(2));
  EXPECT_EQ(t.Take("busy", clock.now), 0u);
  EXPECT_EQ(t.Take("new", clock.now), 0u);  // "old" is full: it goes, "busy" stays
  EXPECT_GT(t.Take("busy", clock.now), 0u);
}

TEST(RateTable, ExpireDropsRefilledBucketsOnly) {
  FakeClock clock;
  RateTable t(RateLimit::PerMinute(2), 100);  // emptied, full again 60 s later
  t.Take("a", clock.now);
  t.Take("a", clock.now);
  clock.Advance(seconds(30));
  t.Take("b", clock.now);
  t.Take("b", clock.now);
  EXPECT_EQ(t.Expire(clock.now), 0u);
  clock.Advance(seconds(30));  // a refilled, b half way
  EXPECT_EQ(t.Expire(clock.now), 1u);
  EXPECT_EQ(t.size(), 1u);
  clock.Advance(seconds(30));
  EXPECT_EQ(t.Expire(clock.now), 1u);
  EXPECT_EQ(t.size(), 0u);
}

TEST(RateTable, OffHoldsNothingAndRefusesNothing) {
  FakeClock clock;
  RateTable t(RateLimit{0, 0}, 10);
  for (int i = 0; i < 10000; ++i) ASSERT_EQ(t.Take("x" + std::to_string(i % 7), clock.now), 0u);
  EXPECT_EQ(t.size(), 0u);
}

Limits SmallLimits() {
  Limits l;
  l.login_failures_per_account = RateLimit::PerMinute(3);
  l.login_failures_per_source = RateLimit::PerMinute(5);
  l.registrations_per_source = RateLimit::PerMinute(2);
  l.sends_per_user = RateLimit{200, 1000};
  return l;
}

class RateLimiterTest : public ::testing::Test {
 protected:
  // A failed login: reserved, checked, kept.
  Refusal FailLogin(const std::string& source, const std::string& account) {
    Refusal r = rates_.BeginLogin(source, account);
    if (r.ok()) rates_.EndLogin(source, account, /*failed=*/true);
    return r;
  }

  FakeClock clock_;
  RateLimiter rates_{SmallLimits(), clock_.fn()};
};

TEST_F(RateLimiterTest, FailedLoginsPerAccountStopAtTheLimitUntilATokenReturns) {
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(FailLogin("ip1", "#7").ok()) << i;
  Refusal r = FailLogin("ip1", "#7");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status.code(), Code::kRateLimited);
  EXPECT_EQ(r.retry_after_ms, 20000u);  // 3 a minute: one per 20 s
  // Other accounts from the same source still get their tries (the source allows 5).
  EXPECT_TRUE(FailLogin("ip1", "#8").ok());
  clock_.Advance(milliseconds(r.retry_after_ms));
  EXPECT_TRUE(FailLogin("ip1", "#7").ok());
  EXPECT_FALSE(FailLogin("ip1", "#7").ok());
}

TEST_F(RateLimiterTest, FailedLoginsPerSourceCountEveryAccount) {
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(FailLogin("ip1", "#" + std::to_string(i)).ok()) << i;
  Refusal r = FailLogin("ip1", "#100");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status.code(), Code::kRateLimited);
  EXPECT_NE(r.status.message().find("from"), std::string::npos) << r.status.message();
  EXPECT_EQ(r.retry_after_ms, 12000u);
  // Another source is not affected, not even for the same accounts.
  EXPECT_TRUE(FailLogin("ip2", "#100").ok());
}

TEST_F(RateLimiterTest, SuccessfulLoginsCostNothing) {
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(rates_.BeginLogin("ip1", "#7").ok()) << i;
    rates_.EndLogin("ip1", "#7", /*failed=*/false);
  }
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(FailLogin("ip1", "#7").ok());
}

TEST_F(RateLimiterTest, AnAccountRefusalDoesNotCostTheSource) {
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(FailLogin("ip1", "#7").ok());
  for (int i = 0; i < 10; ++i) ASSERT_FALSE(FailLogin("ip1", "#7").ok());
  // Only the 3 failures count against ip1 (limit 5): 2 more accounts may fail.
  EXPECT_TRUE(FailLogin("ip1", "#8").ok());
  EXPECT_TRUE(FailLogin("ip1", "#9").ok());
  EXPECT_FALSE(FailLogin("ip1", "#10").ok());
}

TEST_F(RateLimiterTest, RegistrationsPerSource) {
  EXPECT_TRUE(rates_.TakeRegistration("ip1").ok());
  EXPECT_TRUE(rates_.TakeRegistration("ip1").ok());
  Refusal r = rates_.TakeRegistration("ip1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status.code(), Code::kRateLimited);
  EXPECT_EQ(r.retry_after_ms, 30000u);
  EXPECT_TRUE(rates_.TakeRegistration("ip2").ok());
  rates_.GiveRegistration("ip1");  // refused later for another reason: not counted
  EXPECT_TRUE(rates_.TakeRegistration("ip1").ok());
}

TEST_F(RateLimiterTest, SendsHaveABurstThenTheRate) {
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(rates_.TakeSend(1).ok()) << i;
  Refusal r = rates_.TakeSend(1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.retry_after_ms, 5u);  // 200 a second
  EXPECT_TRUE(rates_.TakeSend(2).ok());
  clock_.Advance(seconds(1));
  int sent = 0;
  while (rates_.TakeSend(1).ok()) ++sent;
  EXPECT_EQ(sent, 200);
}

TEST_F(RateLimiterTest, ExpireForgetsWhatHasRefilled) {
  FailLogin("ip1", "#7");          // a token back in 12 s (source), 20 s (account)
  rates_.TakeRegistration("ip1");  // 30 s
  rates_.TakeSend(1);              // 5 ms
  EXPECT_EQ(rates_.entries(), 4u);
  clock_.Advance(milliseconds(5));
  rates_.Expire();
  EXPECT_EQ(rates_.entries(), 3u);
  clock_.Advance(seconds(12));
  rates_.Expire();
  EXPECT_EQ(rates_.entries(), 2u);
  clock_.Advance(seconds(8));
  rates_.Expire();
  EXPECT_EQ(rates_.entries(), 1u);
  clock_.Advance(seconds(10));
  rates_.Expire();
  EXPECT_EQ(rates_.entries(), 0u);
}

}  // namespace
}  // namespace fastchat::server
