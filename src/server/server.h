// Server: one FastChat server process's state, its TCP acceptor and the
// event loop they run on.
//
// Everything here runs on one event-loop thread (one io_context, owned by
// the Server): sessions, presence, routing. Blocking work runs elsewhere:
// database calls on the StoreWorker thread, password hashing on a small
// thread pool.
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
  // Takes ownership of `store`. Call Start(), then run io() on one thread.
  Server(ServerConfig config, std::unique_ptr<Store> store);
  // Stops (as Stop()), waits for the password hashes running and the store
  // jobs queued to finish (hashes not started are dropped), then destroys
  // every handler still queued on io() (a cancelled write, a hash or store
  // result no one will read) while the server's state they refer to is
  // alive, and then that state. io() must not be running, and cannot be run
  // again.
  ~Server();

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The event loop the server runs on. Others in the process may use it too
  // (a metrics endpoint, the balancer reporter, signals) if they are
  // destroyed before the Server: its destructor destroys their queued
  // handlers with its own.
  asio::io_context& io();

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
  class EventLoop;
  std::unique_ptr<EventLoop> loop_;  // declared first: outlives impl_'s sockets and timers
  std::unique_ptr<Impl> impl_;
};

}  // namespace fastchat::server
