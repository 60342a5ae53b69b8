#include "progress.h"

#include <gtest/gtest.h>

namespace fastchat::client {
namespace {

using std::chrono::milliseconds;

TEST(Progress, DueFirstLastAndAtMostOncePerInterval) {
  const auto t0 = ProgressMeter::Clock::time_point() + std::chrono::hours(1);
  ProgressMeter m(1000, t0);
  EXPECT_TRUE(m.Due(0, t0));
  EXPECT_FALSE(m.Due(100, t0 + milliseconds(100)));
  EXPECT_FALSE(m.Due(200, t0 + milliseconds(249)));
  EXPECT_TRUE(m.Due(300, t0 + milliseconds(250)));
  EXPECT_FALSE(m.Due(400, t0 + milliseconds(300)));
  EXPECT_TRUE(m.Due(1000, t0 + milliseconds(301)));  // done: always reported
}

TEST(Progress, PercentRateAndTimeLeft) {
  const auto t0 = ProgressMeter::Clock::time_point() + std::chrono::hours(1);
  ProgressMeter m(1000, t0);
  EXPECT_EQ(ProgressMeter::Percent(0, 1000), 0);
  EXPECT_EQ(ProgressMeter::Percent(120, 1000), 12);
  EXPECT_EQ(ProgressMeter::Percent(999, 1000), 99);  // never 100 before the end
  EXPECT_EQ(ProgressMeter::Percent(1000, 1000), 100);
  EXPECT_EQ(ProgressMeter::Percent(0, 0), 100);
  EXPECT_EQ(m.SecondsLeft(0, t0), -1.0);  // no rate yet
  EXPECT_DOUBLE_EQ(m.Rate(250, t0 + milliseconds(500)), 500.0);
  EXPECT_DOUBLE_EQ(m.SecondsLeft(250, t0 + milliseconds(500)), 1.5);
  auto f = m.Fields(250, t0 + milliseconds(500));
  EXPECT_EQ(f["bytes"], 250);
  EXPECT_EQ(f["total"], 1000);
  EXPECT_EQ(f["percent"], 25);
  EXPECT_EQ(f["rate_bps"], 500);
  EXPECT_EQ(f["eta_s"], 1.5);
}

TEST(Progress, HumanBytesAndBar) {
  EXPECT_EQ(HumanBytes(512), "512 B");
  EXPECT_EQ(HumanBytes(1536), "1.5 KiB");
  EXPECT_EQ(HumanBytes(70.0 * 1024 * 1024), "70.0 MiB");
  EXPECT_EQ(ProgressBar(0, 10), "[..........]");
  EXPECT_EQ(ProgressBar(50, 10), "[#####.....]");
  EXPECT_EQ(ProgressBar(100, 10), "[##########]");
}

}  // namespace
}  // namespace fastchat::client
