// PrometheusText: writes metrics in the Prometheus text exposition format
// (version 0.0.4), the body of a /metrics answer.
//
// Each metric family is announced once with Family() (its # HELP and # TYPE
// lines), then its samples follow. Label values are escaped as the format
// asks (backslash, double quote, newline); names are the caller's and must
// already be valid metric and label names.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "histogram.h"

namespace fastchat::server {

using Labels = std::vector<std::pair<std::string_view, std::string_view>>;

class PrometheusText {
 public:
  // type: "counter", "gauge" or "histogram".
  void Family(std::string_view name, std::string_view type, std::string_view help);
  void Sample(std::string_view name, const Labels& labels, double value);
  void Sample(std::string_view name, double value) { Sample(name, {}, value); }
  // A whole histogram family: HELP/TYPE, cumulative _bucket{le=...} lines,
  // _sum and _count.
  void WriteHistogram(std::string_view name, std::string_view help, const Histogram& h);

  // The usual process_* families of this process: resident memory, CPU
  // seconds, open file descriptors and their limit, start time.
  void WriteProcessMetrics();

  const std::string& text() const { return out_; }

 private:
  void AppendNumber(double v);

  std::string out_;
};

}  // namespace fastchat::server
