// BalancerReply: what the client makes of one frame a balancer sends on a
// GetServer connection, without the socket (AskBalancers reads the frames and
// asks this; fuzz/balancer_peer_fuzz.cc plays a hostile balancer against it).
//
// Promises, for any bytes:
// - kOk with *out filled only for a ServerAssignment whose host is 1-255
//   printable ASCII bytes with no space, whose port is in [1, 65535] and whose
//   server_id is 1-64 printable ASCII bytes (the balancer's own rule,
//   ValidServerId); *out is untouched otherwise.
// - *skip = true, and kOk, for a Hello (the balancer's greeting, which a
//   client ignores): read the next frame.
// - kNotFound for Error{NO_SERVER}; kBadFrame for a frame that does not
//   parse; kBadRequest for any other Error and for any other body. The message may quote
//   the balancer's text: show it through SafeForTerminal.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "fastchat/status.h"

namespace fastchat::client {

struct Assignment {
  std::string host;
  std::uint16_t port = 0;
  std::string server_id;
};

Status ReadBalancerReply(std::string_view payload, Assignment* out, bool* skip);

}  // namespace fastchat::client
