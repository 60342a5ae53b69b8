// Listen: open, bind and listen a TCP acceptor, as every FastChat service
// does (client port, mesh port, balancer port). Header-only and Asio-based:
// include it only from the few translation units that own an acceptor.
#pragma once

#include <cstdint>
#include <string>

#include <asio/ip/tcp.hpp>

#include "fastchat/status.h"

namespace fastchat {

// Listens on host:port (port 0 picks a free one) with SO_REUSEADDR and sets
// *bound_port. `what` names the service in error messages.
inline Status Listen(asio::ip::tcp::acceptor& acceptor, const std::string& host, std::uint16_t port,
                     const std::string& what, std::uint16_t* bound_port) {
  asio::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) return Status(Code::kBadRequest, "cannot listen for " + what + " on '" + host + "': not an IP address");
  asio::ip::tcp::endpoint ep(addr, port);
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Status(Code::kIOError,
                  "cannot listen for " + what + " on " + host + ":" + std::to_string(port) + ": " + ec.message());
  }
  *bound_port = acceptor.local_endpoint().port();
  return Status::OK();
}

}  // namespace fastchat
