#include "prometheus_text.h"

#include <sys/resource.h>
#include <unistd.h>

#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>

namespace fastchat::server {

namespace {

void AppendEscaped(std::string* out, std::string_view s, bool quotes) {
  for (char c : s) {
    switch (c) {
      case '\\': *out += "\\\\"; break;
      case '\n': *out += "\\n"; break;
      case '"':
        if (quotes) {
          *out += "\\\"";
          break;
        }
        [[fallthrough]];
      default: *out += c;
    }
  }
}

}  // namespace

void PrometheusText::Family(std::string_view name, std::string_view type, std::string_view help) {
  out_ += "# HELP ";
  out_ += name;
  out_ += ' ';
  AppendEscaped(&out_, help, /*quotes=*/false);
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += ' ';
  out_ += type;
  out_ += '\n';
}

void PrometheusText::AppendNumber(double v) {
  if (std::isnan(v)) {
    out_ += "NaN";
  } else if (std::isinf(v)) {
    out_ += v > 0 ? "+Inf" : "-Inf";
  } else {
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof buf, v);  // shortest form that reads back the same
    out_.append(buf, r.ptr);
  }
}

void PrometheusText::Sample(std::string_view name, const Labels& labels, double value) {
  out_ += name;
  if (!labels.empty()) {
    out_ += '{';
    bool first = true;
    for (const auto& [key, val] : labels) {
      if (!first) out_ += ',';
      first = false;
      out_ += key;
      out_ += "=\"";
      AppendEscaped(&out_, val, /*quotes=*/true);
      out_ += '"';
    }
    out_ += '}';
  }
  out_ += ' ';
  AppendNumber(value);
  out_ += '\n';
}

void PrometheusText::WriteHistogram(std::string_view name, std::string_view help, const Histogram& h) {
  Family(name, "histogram", help);
  const std::string bucket = std::string(name) + "_bucket";
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < h.counts().size(); ++i) {
    cumulative += h.counts()[i];
    std::string le;
    if (i < h.bounds().size()) {
      char buf[32];
      auto r = std::to_chars(buf, buf + sizeof buf, h.bounds()[i]);
      le.assign(buf, r.ptr);
    } else {
      le = "+Inf";
    }
    Sample(bucket, {{"le", le}}, static_cast<double>(cumulative));
  }
  Sample(std::string(name) + "_sum", h.sum());
  Sample(std::string(name) + "_count", static_cast<double>(h.count()));
}

void PrometheusText::WriteProcessMetrics() {
  const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  std::ifstream statm("/proc/self/statm");
  double size_pages = 0, resident_pages = 0;
  if (statm >> size_pages >> resident_pages) {
    Family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    Sample("process_resident_memory_bytes", resident_pages * page);
    Family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    Sample("process_virtual_memory_bytes", size_pages * page);
  }
  rusage ru{};
  if (::getrusage(RUSAGE_SELF, &ru) == 0) {
    const auto seconds = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6; };
    Family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
    Sample("process_cpu_seconds_total", seconds(ru.ru_utime) + seconds(ru.ru_stime));
  }
  std::error_code ec;
  std::size_t fds = 0;
  for (std::filesystem::directory_iterator it("/proc/self/fd", ec), end; !ec && it != end; it.increment(ec)) ++fds;
  if (!ec) {
    Family("process_open_fds", "gauge", "Number of open file descriptors.");
    Sample("process_open_fds", static_cast<double>(fds));
  }
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    Family("process_max_fds", "gauge", "Maximum number of open file descriptors.");
    Sample("process_max_fds", static_cast<double>(lim.rlim_cur));
  }
}

}  // namespace fastchat::server
