// LoadMeter: turns a chat server's running totals into the LoadSample that
// BalancerReporter sends (CPU use and message rate averaged since the
// previous sample). Give BalancerReporter a sample function such as
//
//   [&meter, &server] { return meter.Sample(server.connections(), server.frames_handled()); }
//
// Not thread-safe; BalancerReporter calls its sample function on the io thread.
#pragma once

#include <chrono>
#include <cstdint>

#include "reporter.h"

namespace fastchat::balancer {

class LoadMeter {
 public:
  using Clock = std::chrono::steady_clock;

  LoadMeter();

  // connections: open client connections now. frames_total: frames handled
  // since the server started (never decreases). CPU use is this process's
  // user + system time (getrusage), as a percent of one core.
  LoadSample Sample(std::uint32_t connections, std::uint64_t frames_total);

  // The same with the clock and the process CPU time given (for tests).
  LoadSample Sample(std::uint32_t connections, std::uint64_t frames_total, Clock::time_point now,
                    std::chrono::microseconds cpu_time);

  // This process's CPU time so far (user + system).
  static std::chrono::microseconds ProcessCpuTime();

 private:
  Clock::time_point last_time_;
  std::chrono::microseconds last_cpu_;
  std::uint64_t last_frames_ = 0;
  LoadSample last_;  // returned again if no time has passed
};

}  // namespace fastchat::balancer
