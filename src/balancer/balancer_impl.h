// Balancer::Impl: the state every balancer session shares. Internal header
// (pulls in Asio); only balancer.cc and session.cc include it.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <set>
#include <string>

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

#include "balancer.h"
#include "server_table.h"

namespace fastchat::balancer {

class Session;

struct Balancer::Impl {
  Impl(asio::io_context& io_in, BalancerConfig config_in);

  asio::io_context& io;
  BalancerConfig config;
  std::string auth_key;  // AuthKey(config.cluster_secret)
  asio::ip::tcp::acceptor acceptor;
  asio::steady_timer sweep_timer;
  ServerTable table;
  std::mt19937_64 rng;
  std::set<std::shared_ptr<Session>> sessions;
  std::uint64_t next_session_id = 1;
  bool stopping = false;
};

// Takes servers that stopped reporting out of the table, and logs them.
void ExpireServers(Balancer::Impl& impl);

}  // namespace fastchat::balancer
