// MetricsEndpoint: serves the server's metrics to a Prometheus scraper on
// the same machine: `GET /metrics` over plain HTTP/1.1 on a loopback address
// (127.0.0.0/8 or ::1; any other address is refused at Start, since the
// figures describe the server's users and load and carry no authentication).
//
// What a local peer can make it hold is bounded: at most kMaxConnections
// connections at once (more are closed at once), a request head of at most
// kMaxRequestBytes (else 431), and kDeadline per connection, after which it
// is closed whatever state it is in. One answer per connection (Connection:
// close). GET or HEAD only (else 405), path /metrics only (else 404).
//
// Runs on the event loop it is given; `render` is called there, once per
// answered request.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "fastchat/status.h"

namespace asio {
class io_context;
}

namespace fastchat::server {

class MetricsEndpoint {
 public:
  static constexpr std::size_t kMaxConnections = 16;
  static constexpr std::size_t kMaxRequestBytes = 8192;
  static constexpr std::chrono::seconds kDeadline{5};

  using Render = std::function<std::string()>;
  MetricsEndpoint(asio::io_context& io, Render render);
  ~MetricsEndpoint();  // stops

  // Listens on host:port (port 0 picks one) and sets *bound_port.
  Status Start(const std::string& host, std::uint16_t port, std::uint16_t* bound_port);
  // Stops accepting; open connections end at their deadline or answer.
  void Stop();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace fastchat::server
