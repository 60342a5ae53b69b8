// BalancerReporter: what a FastChat server embeds to register with the
// cluster's balancers and keep them informed of its load.
//
// For each listed balancer it keeps one connection: connect, answer the
// challenge with the cluster secret (auth.h; the secret never crosses the
// wire), then send a ServerReport every report_interval. When a connection
// fails or a balancer restarts it reconnects with exponential backoff
// (min_backoff doubling to max_backoff, with jitter); a refused secret is
// logged as an error and retried at max_backoff. The sample function is
// called on the io_context's thread, at most about once per report_interval
// however many balancers there are; its numbers become ServerReport fields
// and load = ComputeLoad(...) (load.h).
//
// Threading: everything runs on the io_context's thread. Start() and Stop()
// may be called from any thread. Stop() (and the destructor) called on the
// io thread takes effect at once and the sample function is never called
// afterwards; from another thread it is posted, so destroy the reporter on
// the io thread or after the io_context has stopped running if the sample
// function refers to things that die with it. Asio stays out of this header.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "net/tls.h"

namespace asio {
class io_context;
}

namespace fastchat::balancer {

struct LoadSample {
  std::uint32_t connections = 0;  // open client connections
  double cpu_percent = 0;         // process CPU use, percent of one core
  double msgs_per_sec = 0;        // frames handled per second, recent average
};

struct ReporterOptions {
  std::chrono::milliseconds report_interval{500};
  std::chrono::milliseconds connect_timeout{2000};  // also bounds the handshake
  std::chrono::milliseconds min_backoff{100};
  std::chrono::milliseconds max_backoff{5000};
  // TLS client context for the links (net/tls.h); null: plain TCP.
  std::shared_ptr<net::TlsContext> tls;
};

class BalancerReporter {
 public:
  // balancer_addrs: "host:port" each (invalid ones are logged and skipped).
  // client_address: "host:port" where clients reach this server.
  BalancerReporter(asio::io_context& io, std::vector<std::string> balancer_addrs, std::string server_id,
                   std::string client_address, std::string cluster_secret, std::function<LoadSample()> sample,
                   ReporterOptions options = {});
  ~BalancerReporter();

  BalancerReporter(const BalancerReporter&) = delete;
  BalancerReporter& operator=(const BalancerReporter&) = delete;

  // Starts connecting to every balancer. Calling it again does nothing.
  void Start();
  // Closes every connection and stops reconnecting. Idempotent; a stopped
  // reporter cannot be restarted.
  void Stop();

  // How many balancers have currently accepted this server. Any thread.
  std::size_t registered() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace fastchat::balancer
