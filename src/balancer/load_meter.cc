#include "load_meter.h"

#include <sys/resource.h>

namespace fastchat::balancer {

LoadMeter::LoadMeter() : last_time_(Clock::now()), last_cpu_(ProcessCpuTime()) {}

std::chrono::microseconds LoadMeter::ProcessCpuTime() {
  rusage ru{};
  if (::getrusage(RUSAGE_SELF, &ru) != 0) return std::chrono::microseconds(0);
  auto us = [](const timeval& tv) {
    return std::chrono::seconds(tv.tv_sec) + std::chrono::microseconds(tv.tv_usec);
  };
  return us(ru.ru_utime) + us(ru.ru_stime);
}

LoadSample LoadMeter::Sample(std::uint32_t connections, std::uint64_t frames_total) {
  return Sample(connections, frames_total, Clock::now(), ProcessCpuTime());
}

LoadSample LoadMeter::Sample(std::uint32_t connections, std::uint64_t frames_total, Clock::time_point now,
                             std::chrono::microseconds cpu_time) {
  last_.connections = connections;
  const double seconds = std::chrono::duration<double>(now - last_time_).count();
  if (seconds <= 0) return last_;
  const double cpu_seconds = std::chrono::duration<double>(cpu_time - last_cpu_).count();
  const std::uint64_t frames = frames_total >= last_frames_ ? frames_total - last_frames_ : 0;
  last_.cpu_percent = cpu_seconds > 0 ? 100.0 * cpu_seconds / seconds : 0.0;
  last_.msgs_per_sec = static_cast<double>(frames) / seconds;
  last_time_ = now;
  last_cpu_ = cpu_time;
  last_frames_ = frames_total;
  return last_;
}

}  // namespace fastchat::balancer
