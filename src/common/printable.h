// Printable: text a peer sent, made safe for one log line.
#pragma once

#include <string>
#include <string_view>

namespace fastchat {

// `s` with control, non-ASCII and backslash bytes written as \xNN, at most
// 64 bytes of it kept ("..." marks the cut). Names in failed logins and a
// balancer's error texts come from peers.
std::string Printable(std::string_view s);

}  // namespace fastchat
