#include "common/host_port.h"

namespace fastchat {

bool ParseHostPort(std::string_view s, std::string* host, std::uint16_t* port) {
  auto colon = s.rfind(':');
  if (colon == std::string_view::npos) return false;
  std::string_view h = s.substr(0, colon);
  std::string_view p = s.substr(colon + 1);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') {
    h = h.substr(1, h.size() - 2);
  } else if (h.find(':') != std::string_view::npos) {
    return false;  // an IPv6 host must be bracketed
  }
  if (h.empty() || h.size() > 255 || p.empty() || p.size() > 5) return false;
  std::uint32_t value = 0;
  for (char c : p) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<std::uint32_t>(c - '0');
  }
  if (value > 65535) return false;
  host->assign(h);
  *port = static_cast<std::uint16_t>(value);
  return true;
}

std::string FormatHostPort(std::string_view host, std::uint16_t port) {
  std::string out;
  if (host.find(':') != std::string_view::npos) {
    out += '[';
    out += host;
    out += ']';
  } else {
    out += host;
  }
  out += ':';
  out += std::to_string(port);
  return out;
}

}  // namespace fastchat
