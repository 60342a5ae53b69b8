// Server: one FastChat server process's state and its TCP acceptor.
//
// Everything here runs on one event-loop thread (one io_context): sessions,
// presence, routing. Blocking work runs elsewhere: database calls on the
// StoreWorker thread, password hashing on a small thread pool.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "config.h"
#include "fastchat/status.h"
#include "fastchat/store.h"

namespace asio {
class io_context;
}

namespace fastchat::server {

class Server {
 public:
  // Takes ownership of `store`. Call Start() then run `io`.
  Server(asio::io_context& io, ServerConfig config, std::unique_ptr<Store> store);
  ~Server();

  // Binds and starts accepting; sets *port to the bound port.
  Status Start(std::uint16_t* port);
  // Stops accepting and closes every session.
  void Stop();

  // Running totals, read on the event-loop thread.
  struct Stats {
    std::uint32_t connections = 0;  // open client connections now
    std::uint64_t frames_handled = 0;  // client frames handled since start
    std::uint64_t deliveries = 0;      // Deliver frames queued to local sessions
  };
  Stats stats() const;

  // The server's metrics in the Prometheus text format (connections, logins,
  // deliveries, queued bytes, store batches, limit rejections, process
  // figures): the body of a /metrics answer. Event-loop thread only.
  std::string MetricsText() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace fastchat::server
