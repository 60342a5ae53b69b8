// fastchat-server's flags for its Limits (peer_limits.h), kept apart from main.cc.
#pragma once

#include <sys/resource.h>

#include <string>

#include "peer_limits.h"

namespace CLI {
class App;
}

namespace fastchat::server {

// Adds one flag per limit to `app`, writing into *limits (durations in
// seconds, fractions allowed; rates per minute or per second as named).
void AddLimitFlags(CLI::App& app, Limits* limits);

// Checks the limits' own ranges; an error message, or "" if they are fine.
std::string CheckLimits(const Limits& limits, std::uint32_t max_frame);

// Lowers max_connections so that `open_files` (the process's file limit)
// keeps reserved_fds free for the store, cluster links and logs. Returns a
// line saying so, or "" if nothing changed.
std::string FitToFileLimit(Limits* limits, rlim_t open_files);

}  // namespace fastchat::server
