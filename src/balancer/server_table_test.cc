#include "server_table.h"

#include <cmath>
#include <limits>
#include <random>

#include <gtest/gtest.h>

#include "load.h"

namespace fastchat::balancer {
namespace {

using namespace std::chrono_literals;
using Clock = ServerTable::Clock;

LoadReport Report(const std::string& id, double load, std::uint16_t port = 7400) {
  LoadReport r;
  r.server_id = id;
  r.client_address = "127.0.0.1:" + std::to_string(port);
  r.load = load;
  return r;
}

TEST(ComputeLoadTest, Formula) {
  EXPECT_DOUBLE_EQ(ComputeLoad(0, 0, 0), 1.0);
  EXPECT_DOUBLE_EQ(ComputeLoad(3, 0, 0), 4.0);
  EXPECT_DOUBLE_EQ(ComputeLoad(0, 0, 2000), 3.0);
  EXPECT_DOUBLE_EQ(ComputeLoad(0, 50, 0), 6.0);
  EXPECT_DOUBLE_EQ(ComputeLoad(10, 25, 500), 1 + 10 + 0.5 + 2.5);
  // Broken samples count as zero.
  EXPECT_DOUBLE_EQ(ComputeLoad(0, -5, std::numeric_limits<double>::quiet_NaN()), 1.0);
  EXPECT_DOUBLE_EQ(ComputeLoad(0, std::numeric_limits<double>::infinity(), 0), 1.0);
}

TEST(ComputeLoadTest, Clamp) {
  EXPECT_DOUBLE_EQ(ClampLoad(0), kMinLoad);
  EXPECT_DOUBLE_EQ(ClampLoad(-3), kMinLoad);
  EXPECT_DOUBLE_EQ(ClampLoad(2.5), 2.5);
  EXPECT_DOUBLE_EQ(ClampLoad(std::numeric_limits<double>::infinity()), kMaxLoad);
  EXPECT_DOUBLE_EQ(ClampLoad(std::numeric_limits<double>::quiet_NaN()), kMaxLoad);
}

TEST(ServerTableTest, EmptyPicksNothing) {
  ServerTable t(3s);
  EXPECT_EQ(t.Pick(0.5), nullptr);
  EXPECT_TRUE(t.Shares().empty());
}

TEST(ServerTableTest, UpdateParsesAddress) {
  ServerTable t(3s);
  const auto now = Clock::now();
  bool added = false;
  ASSERT_TRUE(t.Update(Report("a", 1, 7401), 1, now, &added).ok());
  EXPECT_TRUE(added);
  ASSERT_TRUE(t.Update(Report("a", 2, 7401), 1, now, &added).ok());
  EXPECT_FALSE(added);
  const ServerTable::Entry* e = t.Pick(0.0);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->server_id, "a");
  EXPECT_EQ(e->host, "127.0.0.1");
  EXPECT_EQ(e->port, 7401);
  EXPECT_DOUBLE_EQ(e->load, 2);

  LoadReport v6 = Report("b", 1);
  v6.client_address = "[::1]:7402";
  ASSERT_TRUE(t.Update(v6, 2, now).ok());
  EXPECT_EQ(t.Find("b")->host, "::1");
}

TEST(ServerTableTest, RejectsBadReports) {
  ServerTable t(3s);
  const auto now = Clock::now();
  for (const char* addr : {"", "host", "host:", ":7400", "host:0", "host:65536", "host:12x", "::1:7400"}) {
    LoadReport r = Report("a", 1);
    r.client_address = addr;
    Status st = t.Update(r, 1, now);
    EXPECT_EQ(st.code(), Code::kBadRequest) << addr;
  }
  EXPECT_EQ(t.Update(Report("", 1), 1, now).code(), Code::kBadRequest);
  EXPECT_EQ(t.size(), 0u);
}

TEST(ServerTableTest, MissingLoadIsComputedFromFields) {
  ServerTable t(3s);
  LoadReport r = Report("a", 0);
  r.connections = 4;
  r.cpu_percent = 20;
  r.msgs_per_sec = 1000;
  ASSERT_TRUE(t.Update(r, 1, Clock::now()).ok());
  EXPECT_DOUBLE_EQ(t.Find("a")->load, 1 + 4 + 1 + 2);
  // A tiny reported load is clamped, not divided by.
  ASSERT_TRUE(t.Update(Report("b", 1e-12), 1, Clock::now()).ok());
  EXPECT_DOUBLE_EQ(t.Find("b")->load, kMinLoad);
}

TEST(ServerTableTest, ExpiryAndReturn) {
  ServerTable t(3s);
  const auto t0 = Clock::now();
  ASSERT_TRUE(t.Update(Report("a", 1), 1, t0).ok());
  ASSERT_TRUE(t.Update(Report("b", 1), 2, t0).ok());
  // b keeps reporting; a falls silent.
  ASSERT_TRUE(t.Update(Report("b", 1), 2, t0 + 2s).ok());
  EXPECT_TRUE(t.Expire(t0 + 3s).empty());  // exactly expire_after: still live
  EXPECT_EQ(t.size(), 2u);
  std::vector<std::string> gone = t.Expire(t0 + 3s + 1ms);
  ASSERT_EQ(gone, std::vector<std::string>{"a"});
  ASSERT_EQ(t.size(), 1u);
  for (double u : {0.0, 0.3, 0.6, 0.99}) EXPECT_EQ(t.Pick(u)->server_id, "b");

  // b goes silent too: nothing left.
  EXPECT_EQ(t.Expire(t0 + 5s + 1ms), std::vector<std::string>{"b"});
  EXPECT_EQ(t.Pick(0.5), nullptr);

  // a reports again and is back.
  bool added = false;
  ASSERT_TRUE(t.Update(Report("a", 1), 1, t0 + 10s, &added).ok());
  EXPECT_TRUE(added);
  ASSERT_NE(t.Pick(0.5), nullptr);
  EXPECT_EQ(t.Pick(0.5)->server_id, "a");
  EXPECT_TRUE(t.Expire(t0 + 12s).empty());
}

TEST(ServerTableTest, RemoveOnlyByLastOwner) {
  ServerTable t(3s);
  const auto now = Clock::now();
  ASSERT_TRUE(t.Update(Report("a", 1), 1, now).ok());
  // The server reconnected: connection 2 now reports for it.
  ASSERT_TRUE(t.Update(Report("a", 1), 2, now).ok());
  EXPECT_FALSE(t.Remove("a", 1));  // the old connection closing changes nothing
  EXPECT_EQ(t.size(), 1u);
  EXPECT_TRUE(t.Remove("a", 2));
  EXPECT_EQ(t.size(), 0u);
  EXPECT_FALSE(t.Remove("a", 2));
}

TEST(ServerTableTest, SharesAreInverseLoad) {
  ServerTable t(3s);
  const auto now = Clock::now();
  ASSERT_TRUE(t.Update(Report("a", 1), 1, now).ok());
  ASSERT_TRUE(t.Update(Report("b", 2), 2, now).ok());
  ASSERT_TRUE(t.Update(Report("c", 4), 3, now).ok());
  auto shares = t.Shares();
  EXPECT_NEAR(shares["a"], 4.0 / 7, 1e-12);
  EXPECT_NEAR(shares["b"], 2.0 / 7, 1e-12);
  EXPECT_NEAR(shares["c"], 1.0 / 7, 1e-12);
}

TEST(ServerTableTest, WeightedPicksWithUnequalLoads) {
  ServerTable t(3s);
  const auto now = Clock::now();
  ASSERT_TRUE(t.Update(Report("a", 1), 1, now).ok());
  ASSERT_TRUE(t.Update(Report("b", 2), 2, now).ok());
  ASSERT_TRUE(t.Update(Report("c", 4), 3, now).ok());

  std::mt19937_64 rng(20240521);  // fixed seed: the test is deterministic
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  constexpr int kPicks = 70000;
  std::map<std::string, int> counts;
  for (int i = 0; i < kPicks; ++i) {
    const ServerTable::Entry* e = t.Pick(uniform(rng));
    ASSERT_NE(e, nullptr);
    ++counts[e->server_id];
  }
  const std::map<std::string, double> want = {{"a", 4.0 / 7}, {"b", 2.0 / 7}, {"c", 1.0 / 7}};
  for (const auto& [id, share] : want) {
    double got = static_cast<double>(counts[id]) / kPicks;
    EXPECT_NEAR(got, share, 0.02) << id << " got " << counts[id] << " of " << kPicks;
  }
}

TEST(ServerTableTest, PickCoversTheWholeUnitInterval) {
  ServerTable t(3s);
  const auto now = Clock::now();
  ASSERT_TRUE(t.Update(Report("a", 1), 1, now).ok());
  ASSERT_TRUE(t.Update(Report("b", 3), 2, now).ok());
  EXPECT_EQ(t.Pick(0.0)->server_id, "a");
  EXPECT_EQ(t.Pick(0.74)->server_id, "a");
  EXPECT_EQ(t.Pick(0.76)->server_id, "b");
  EXPECT_EQ(t.Pick(std::nextafter(1.0, 0.0))->server_id, "b");
  EXPECT_EQ(t.Pick(1.0)->server_id, "b");  // out of contract, still safe
}

}  // namespace
}  // namespace fastchat::balancer
