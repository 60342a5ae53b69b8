// AskBalancer: how a FastChat client learns which chat server to use.
//
// Blocking; plain POSIX sockets, no Asio, no threads. Asks each balancer in
// the order given, each with its own timeout (connect + request + reply), and
// returns the first assignment. Needs no secret.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "fastchat/status.h"

namespace fastchat::balancer {

inline constexpr std::chrono::milliseconds kDefaultAskTimeout{2000};

// balancers: "host:port" each. On success sets *host, *port, *server_id.
// Fails with kNotFound if the balancers that answered had no server to
// offer, kIOError if none could be asked (the message names each balancer
// and what went wrong), kBadRequest for an empty list.
Status AskBalancer(const std::vector<std::string>& balancers, std::string* host, std::uint16_t* port,
                   std::string* server_id, std::chrono::milliseconds timeout_per_balancer = kDefaultAskTimeout);

}  // namespace fastchat::balancer
