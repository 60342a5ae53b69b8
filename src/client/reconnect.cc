#include "reconnect.h"

#include <algorithm>

namespace fastchat::client {

namespace {
std::string Trim(const std::string& s) {
  std::size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return std::string();
  std::size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}
}  // namespace

bool SplitHostPort(const std::string& s, std::string* host, std::string* port) {
  std::size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon + 1 >= s.size()) return false;
  std::string h = s.substr(0, colon);
  std::string p = s.substr(colon + 1);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  if (h.empty() || p.size() > 5) return false;
  if (!std::all_of(p.begin(), p.end(), [](char c) { return c >= '0' && c <= '9'; })) return false;
  unsigned long n = std::stoul(p);
  if (n == 0 || n > 65535) return false;
  *host = h;
  *port = p;
  return true;
}

bool ParseBalancerList(const std::vector<std::string>& values, std::vector<std::string>* out,
                       std::string* error) {
  out->clear();
  for (const std::string& value : values) {
    std::size_t start = 0;
    for (;;) {
      std::size_t comma = value.find(',', start);
      std::string entry = Trim(value.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
      if (!entry.empty()) {
        std::string host, port;
        if (!SplitHostPort(entry, &host, &port)) {
          *error = "not HOST:PORT: '" + entry + "'";
          return false;
        }
        if (std::find(out->begin(), out->end(), entry) == out->end()) out->push_back(entry);
      }
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  return true;
}

std::chrono::milliseconds Backoff::Next() {
  std::chrono::milliseconds d = std::min(next_, max_);
  next_ = std::min(next_ * 2, max_);
  return d;
}

std::chrono::milliseconds ClipDelay(std::chrono::milliseconds delay, std::chrono::milliseconds left) {
  if (left.count() <= 0) return std::chrono::milliseconds(0);
  return std::min(delay, left);
}

}  // namespace fastchat::client
