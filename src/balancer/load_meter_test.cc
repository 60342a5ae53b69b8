#include "load_meter.h"

#include <gtest/gtest.h>

#include "load.h"

namespace fastchat::balancer {
namespace {

using namespace std::chrono_literals;

TEST(LoadMeterTest, AveragesSinceThePreviousSample) {
  LoadMeter meter;
  const auto t0 = LoadMeter::Clock::now();
  meter.Sample(0, 100, t0, 1s);  // sets the baseline
  LoadSample s = meter.Sample(7, 100 + 3000, t0 + 2s, 1s + 500ms);
  EXPECT_EQ(s.connections, 7u);
  EXPECT_DOUBLE_EQ(s.msgs_per_sec, 1500.0);
  EXPECT_DOUBLE_EQ(s.cpu_percent, 25.0);
  EXPECT_DOUBLE_EQ(ComputeLoad(s.connections, s.cpu_percent, s.msgs_per_sec), 1 + 7 + 1.5 + 2.5);

  // No time passed: the previous numbers, with the new connection count.
  s = meter.Sample(8, 999999, t0 + 2s, 9s);
  EXPECT_EQ(s.connections, 8u);
  EXPECT_DOUBLE_EQ(s.msgs_per_sec, 1500.0);

  // A counter that went backwards (server restarted it) counts as no frames.
  s = meter.Sample(1, 10, t0 + 3s, 1s + 500ms);
  EXPECT_DOUBLE_EQ(s.msgs_per_sec, 0.0);
  EXPECT_DOUBLE_EQ(s.cpu_percent, 0.0);
}

TEST(LoadMeterTest, RealClockAndCpu) {
  LoadMeter meter;
  volatile std::uint64_t x = 0;
  for (std::uint64_t i = 0; i < 20000000; ++i) x = x + i;
  LoadSample s = meter.Sample(3, 0);
  EXPECT_EQ(s.connections, 3u);
  EXPECT_GE(s.cpu_percent, 0.0);
  EXPECT_GT(LoadMeter::ProcessCpuTime().count(), 0);
}

}  // namespace
}  // namespace fastchat::balancer
