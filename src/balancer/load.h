// Load: the one number by which the balancer spreads new clients.
//
// A server's share of new clients is proportional to 1 / load, so a server
// with half the load of another gets twice as many new clients. The load of
// an idle server is 1; each open connection adds 1, a thousand frames per
// second add 1, and ten percent of a core adds 1:
//
//   load = 1 + connections + msgs_per_sec / 1000 + cpu_percent / 10
//
// A FastChat server computes this (through BalancerReporter) and sends it as
// ServerReport.load; the balancer uses the reported value as given, clamped
// to [kMinLoad, kMaxLoad]. Header-only, no dependencies.
#pragma once

#include <cmath>
#include <cstdint>

namespace fastchat::balancer {

// Bounds the balancer applies to a reported load, so that one report can
// neither take (almost) every new client nor divide by zero.
inline constexpr double kMinLoad = 0.01;
inline constexpr double kMaxLoad = 1e9;

inline double ComputeLoad(std::uint32_t connections, double cpu_percent, double msgs_per_sec) {
  // Negative or non-finite inputs count as 0, so the result is always a
  // finite number >= 1.
  auto clean = [](double v) { return std::isfinite(v) && v > 0 ? v : 0.0; };
  return 1.0 + static_cast<double>(connections) + clean(msgs_per_sec) / 1000.0 + clean(cpu_percent) / 10.0;
}

// The load the balancer weighs by: `load` clamped to [kMinLoad, kMaxLoad];
// NaN counts as kMaxLoad.
inline double ClampLoad(double load) {
  if (std::isnan(load) || load > kMaxLoad) return kMaxLoad;
  if (load < kMinLoad) return kMinLoad;
  return load;
}

}  // namespace fastchat::balancer
