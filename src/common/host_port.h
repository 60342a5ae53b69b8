// HostPort: "host:port" strings as used on the command line, in
// ServerReport.client_address and in mesh addresses. IPv6 hosts are written in brackets
// ("[::1]:7400"); ParseHostPort strips them and FormatHostPort adds them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace fastchat {

// Splits "host:port". Returns false for a missing, empty or over-255-byte
// host, a missing port, or a port that is not a decimal number in
// [0, 65535]. Port 0 is accepted (callers that need a real port check).
bool ParseHostPort(std::string_view s, std::string* host, std::uint16_t* port);

// "host:port", with brackets around a host containing ':'.
std::string FormatHostPort(std::string_view host, std::uint16_t port);

}  // namespace fastchat
