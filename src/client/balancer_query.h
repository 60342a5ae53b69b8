// AskBalancers: how the client learns which chat server to use
// (proto/balancer.proto), over TLS checked like a server (server_trust.h).
//
// Promises:
// - Asks each balancer in the order given, each within `per_balancer`
//   (connect, TLS, request and reply), and returns the first assignment.
// - kNotFound if the balancers that answered had no server to offer;
//   kCryptoFailed at once if a balancer's identity is refused; kIOError if
//   none could be asked (the message names each and what went wrong).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <asio/awaitable.hpp>

#include "balancer_reply.h"
#include "fastchat/status.h"
#include "server_trust.h"

namespace asio {
class io_context;
}

namespace fastchat::client {

inline constexpr std::chrono::milliseconds kDefaultAskTimeout{2000};

asio::awaitable<Status> AskBalancers(asio::io_context& ioc, std::vector<std::string> balancers, TlsTrust trust,
                                     Assignment* out, std::chrono::milliseconds per_balancer = kDefaultAskTimeout);

// The same as one blocking call on its own io_context (for tools and tests).
Status AskBalancersNow(std::vector<std::string> balancers, TlsTrust trust, Assignment* out,
                       std::chrono::milliseconds per_balancer = kDefaultAskTimeout);

}  // namespace fastchat::client
