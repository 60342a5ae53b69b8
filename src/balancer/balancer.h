// Balancer: the fastchat-balancer service, an acceptor plus its ServerTable.
//
// Chat servers authenticate with the cluster secret and report their load;
// clients ask which server to use and get one chosen with weight 1 / load
// (server_table.h, proto/balancer.proto). Everything runs on the one thread
// that runs the io_context. The balancer keeps no user data: restarting it
// loses nothing, because servers reconnect and report again within a second.
// Asio stays out of this header.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "fastchat/status.h"
#include "net/tls.h"

namespace asio {
class io_context;
}

namespace fastchat::balancer {

struct BalancerConfig {
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 7300;  // 0 = pick a free port
  std::string cluster_secret;        // must not be empty
  // A server with no report for this long is no longer assigned.
  std::chrono::milliseconds expire_after{3000};
  // A connection that sends nothing for this long is closed.
  std::chrono::milliseconds idle_timeout{60000};
  std::uint32_t max_frame = 64 * 1024;
  std::size_t max_connections = 10000;
  // Replies queued for a peer that does not read; over this the peer is dropped.
  std::size_t max_queue_bytes = 1u << 20;
  // TLS server context (net/tls.h); null: plain TCP (tests only).
  std::shared_ptr<net::TlsContext> tls;
};

class Balancer {
 public:
  // Call Start(), then run `io`.
  Balancer(asio::io_context& io, BalancerConfig config);
  ~Balancer();

  Balancer(const Balancer&) = delete;
  Balancer& operator=(const Balancer&) = delete;

  // Binds and starts accepting; sets *port to the bound port.
  Status Start(std::uint16_t* port);
  // Stops accepting and closes every connection. Call on the io thread (or
  // when it is not running).
  void Stop();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;  // shared with the accept and sweep coroutines
};

}  // namespace fastchat::balancer
