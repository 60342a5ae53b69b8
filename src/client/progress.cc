#include "progress.h"

#include <algorithm>
#include <cstdio>

namespace fastchat::client {

bool ProgressMeter::Due(std::uint64_t done, Clock::time_point now) {
  const bool due = !reported_ || done >= total_ || now - last_ >= every_;
  if (due) {
    reported_ = true;
    last_ = now;
  }
  return due;
}

int ProgressMeter::Percent(std::uint64_t done, std::uint64_t total) {
  if (total == 0 || done >= total) return 100;
  return static_cast<int>(std::min<std::uint64_t>(99, done * 100 / total));
}

double ProgressMeter::Rate(std::uint64_t done, Clock::time_point now) const {
  const double secs = std::chrono::duration<double>(now - start_).count();
  return secs > 0 ? static_cast<double>(done) / secs : 0.0;
}

double ProgressMeter::SecondsLeft(std::uint64_t done, Clock::time_point now) const {
  if (done >= total_) return 0.0;
  const double rate = Rate(done, now);
  if (rate <= 0) return -1.0;
  return static_cast<double>(total_ - done) / rate;
}

nlohmann::ordered_json ProgressMeter::Fields(std::uint64_t done, Clock::time_point now) const {
  nlohmann::ordered_json j;
  j["bytes"] = std::min(done, total_);
  j["total"] = total_;
  j["percent"] = Percent(done, total_);
  j["rate_bps"] = static_cast<std::uint64_t>(Rate(done, now));
  const double left = SecondsLeft(done, now);
  j["eta_s"] = left < 0 ? -1.0 : static_cast<double>(static_cast<std::int64_t>(left * 10)) / 10;
  return j;
}

std::string HumanBytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%.0f %s", bytes, units[u]);
  else
    std::snprintf(buf, sizeof buf, "%.1f %s", bytes, units[u]);
  return buf;
}

std::string ProgressBar(int percent, int width) {
  percent = std::clamp(percent, 0, 100);
  const int full = percent * width / 100;
  return "[" + std::string(static_cast<std::size_t>(full), '#') + std::string(static_cast<std::size_t>(width - full), '.') +
         "]";
}

}  // namespace fastchat::client
