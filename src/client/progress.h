// Progress of a file being sent or received: when to report it, and the
// figures a report carries (bytes, percent, rate, time left).
//
// Promises: Due() is true for the first call, for the last (done == total)
// and otherwise at most once per `every`; Percent is 0..100 and never 100
// before done == total; the rate is measured since Start and the time left
// is the rest at that rate (-1 while unknown). Plain arithmetic on an
// injected clock (tested in progress_test.cc).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace fastchat::client {

class ProgressMeter {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kEvery{250};

  ProgressMeter(std::uint64_t total, Clock::time_point start, std::chrono::milliseconds every = kEvery)
      : total_(total), start_(start), every_(every) {}

  // Whether a report is due now that `done` bytes are through.
  bool Due(std::uint64_t done, Clock::time_point now);

  static int Percent(std::uint64_t done, std::uint64_t total);
  // Bytes per second since start (0 before any time has passed).
  double Rate(std::uint64_t done, Clock::time_point now) const;
  // Seconds left at that rate; -1 while no rate is known.
  double SecondsLeft(std::uint64_t done, Clock::time_point now) const;

  // The fields of a "progress" event: bytes, total, percent, rate_bps, eta_s.
  nlohmann::ordered_json Fields(std::uint64_t done, Clock::time_point now) const;

 private:
  std::uint64_t total_;
  Clock::time_point start_;
  std::chrono::milliseconds every_;
  bool reported_ = false;
  Clock::time_point last_{};
};

// "12.3 MiB", "512 B".
std::string HumanBytes(double bytes);
// A text bar of `width` cells for `percent`: "[#####.....]".
std::string ProgressBar(int percent, int width);

}  // namespace fastchat::client
