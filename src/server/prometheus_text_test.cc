#include "prometheus_text.h"

#include <gtest/gtest.h>

namespace fastchat::server {
namespace {

TEST(Histogram, CountsIntoTheFirstBucketThatHoldsTheValue) {
  Histogram h({1, 10, 100});
  for (double v : {0.5, 1.0, 1.5, 10.0, 99.0, 1000.0}) h.Observe(v);
  EXPECT_EQ(h.counts(), (std::vector<std::uint64_t>{2, 2, 1, 1}));  // <=1, <=10, <=100, +Inf
  EXPECT_EQ(h.count(), 6u);
  EXPECT_DOUBLE_EQ(h.sum(), 1112.0);
}

TEST(PrometheusText, WritesFamiliesSamplesAndEscapedLabels) {
  PrometheusText t;
  t.Family("fastchat_logins_total", "counter", "Logins by\nresult \\ method.");
  t.Sample("fastchat_logins_total", {{"method", "password"}, {"result", "ok"}}, 3);
  t.Sample("fastchat_logins_total", {{"note", "a \"quoted\\\" \nline"}}, 0.25);
  t.Sample("plain", 1e21);
  EXPECT_EQ(t.text(),
            "# HELP fastchat_logins_total Logins by\\nresult \\\\ method.\n"
            "# TYPE fastchat_logins_total counter\n"
            "fastchat_logins_total{method=\"password\",result=\"ok\"} 3\n"
            "fastchat_logins_total{note=\"a \\\"quoted\\\\\\\" \\nline\"} 0.25\n"
            "plain 1e+21\n");
}

TEST(PrometheusText, WritesAHistogramWithCumulativeBuckets) {
  Histogram h({0.001, 0.01});
  h.Observe(0.0005);
  h.Observe(0.005);
  h.Observe(0.005);
  h.Observe(3);
  PrometheusText t;
  t.WriteHistogram("batch_seconds", "Time per batch.", h);
  EXPECT_EQ(t.text(),
            "# HELP batch_seconds Time per batch.\n"
            "# TYPE batch_seconds histogram\n"
            "batch_seconds_bucket{le=\"0.001\"} 1\n"
            "batch_seconds_bucket{le=\"0.01\"} 3\n"
            "batch_seconds_bucket{le=\"+Inf\"} 4\n"
            "batch_seconds_sum 3.0105\n"
            "batch_seconds_count 4\n");
}

TEST(PrometheusText, WritesThisProcess) {
  PrometheusText t;
  t.WriteProcessMetrics();
  for (const char* family : {"process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
                             "process_max_fds"}) {
    EXPECT_NE(t.text().find(std::string("# TYPE ") + family), std::string::npos) << family << "\n" << t.text();
  }
}

}  // namespace
}  // namespace fastchat::server
