// fastchat-server: the FastChat chat server.
#include <sys/resource.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <CLI/CLI.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "balancer/load_meter.h"
#include "balancer/reporter.h"
#include "config.h"
#include "fastchat/crypto.h"
#include "fastchat/store.h"
#include "limit_flags.h"
#include "server.h"

namespace {

bool ParseHostPort(const std::string& s, std::string* host, std::uint16_t* port) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos) return false;
  *host = s.substr(0, colon);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') *host = host->substr(1, host->size() - 2);
  try {
    unsigned long p = std::stoul(s.substr(colon + 1));
    if (p > 65535) return false;
    *port = static_cast<std::uint16_t>(p);
  } catch (...) {
    return false;
  }
  return !host->empty();
}

// Each client is one socket: use every file descriptor the hard limit allows.
void RaiseFileLimit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &lim) != 0) spdlog::warn("could not raise the open-file limit");
  }
}

}  // namespace

int main(int argc, char** argv) {
  using fastchat::server::ServerConfig;
  ServerConfig config;
  std::string listen = "127.0.0.1:7400";
  std::string pwhash = "interactive";
  std::string log_level = "info";

  CLI::App app{"fastchat-server: the FastChat end-to-end-encrypted chat server"};
  app.set_config("--config", "", "read settings from this file (key = value lines; keys are the long flag names)");
  app.add_option("--listen", listen, "address and port to listen on (port 0 picks a free one)")
      ->capture_default_str();
  app.add_option("--db", config.db_path, "SQLite database file (created if missing)")->capture_default_str();
  std::string pg;
  app.add_option("--pg", pg,
                 "use PostgreSQL instead of SQLite: a libpq connection string or postgresql:// URI "
                 "(the cluster store; servers of one cluster share it)");
  app.add_option("--server-id", config.server_id, "this server's name in the cluster and in HelloOk")
      ->capture_default_str();
  app.add_option("--pwhash", pwhash, "Argon2id cost for password hashes: interactive, moderate, or min (tests only)")
      ->capture_default_str();
  app.add_option("--max-frame", config.max_frame, "largest frame accepted, bytes")->capture_default_str();
  app.add_option("--max-image-bytes", config.max_image_bytes, "largest image accepted, bytes")
      ->capture_default_str();
  app.add_option("--max-queue-bytes", config.max_queue_bytes,
                 "per-connection write queue size before live deliveries pause")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")->capture_default_str();
  fastchat::server::AddLimitFlags(app, &config.limits);
  std::string mesh_listen, secret_file, advertise;
  std::vector<std::string> balancers;
  app.add_option("--balancer", balancers,
                 "cluster mode: report load to this balancer (HOST:PORT; repeat for several)");
  app.add_option("--advertise", advertise,
                 "HOST:PORT the balancer hands to clients (default: the --listen address)");
  app.add_option("--mesh-listen", mesh_listen,
                 "cluster mode: HOST:PORT where other servers connect to this one (port 0 picks one)");
  app.add_option("--mesh-advertise", config.mesh_advertise,
                 "HOST:PORT other servers should dial (default: the --mesh-listen address)");
  app.add_option("--cluster-secret", config.cluster_secret, "secret shared by the servers of a cluster (>= 16 bytes)");
  app.add_option("--cluster-secret-file", secret_file, "read the cluster secret from this file");
  CLI11_PARSE(app, argc, argv);

  auto logger = spdlog::stderr_color_mt("fastchat-server");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(log_level));

  if (!ParseHostPort(listen, &config.listen_host, &config.listen_port)) {
    std::cerr << "error: --listen wants HOST:PORT, got '" << listen << "'\n";
    return 2;
  }
  if (!secret_file.empty()) {
    std::ifstream in(secret_file);
    if (!in || !std::getline(in, config.cluster_secret)) {
      std::cerr << "error: cannot read the cluster secret from " << secret_file << "\n";
      return 2;
    }
  }
  if (!mesh_listen.empty()) {
    config.mesh_enabled = true;
    if (!ParseHostPort(mesh_listen, &config.mesh_host, &config.mesh_port)) {
      std::cerr << "error: --mesh-listen wants HOST:PORT, got '" << mesh_listen << "'\n";
      return 2;
    }
  }
  if ((config.mesh_enabled || !balancers.empty()) && config.cluster_secret.size() < 16) {
    std::cerr << "error: cluster mode needs --cluster-secret or --cluster-secret-file (at least 16 bytes)\n";
    return 2;
  }
  if (!fastchat::crypto::PwhashCost::Parse(pwhash, &config.pwhash)) {
    std::cerr << "error: --pwhash must be interactive, moderate or min\n";
    return 2;
  }
  if (config.max_frame < 4096 || config.max_frame > (64u << 20)) {
    std::cerr << "error: --max-frame must be between 4096 and 67108864\n";
    return 2;
  }
  if (std::string bad = fastchat::server::CheckLimits(config.limits, config.max_frame); !bad.empty()) {
    std::cerr << "error: " << bad << "\n";
    return 2;
  }
  RaiseFileLimit();
  if (rlimit files{}; getrlimit(RLIMIT_NOFILE, &files) == 0) {
    std::string lowered = fastchat::server::FitToFileLimit(&config.limits, files.rlim_cur);
    if (!lowered.empty()) spdlog::info("{}", lowered);
  }
  if (!fastchat::crypto::Init()) {
    std::cerr << "error: libsodium failed to initialise\n";
    return 1;
  }
  std::unique_ptr<fastchat::Store> store;
  fastchat::Status st;
  std::string store_name;
  if (!pg.empty()) {
    store_name = "PostgreSQL";
    st = fastchat::OpenPgStore(pg, &store);
  } else {
    store_name = config.db_path;
    std::error_code fs_ec;
    auto parent = std::filesystem::path(config.db_path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, fs_ec);
    st = fastchat::OpenSqliteStore(config.db_path, &store, /*exclusive=*/true);
  }
  if (!st.ok()) {
    std::cerr << "error: opening the store (" << store_name << "): " << st.ToString() << "\n";
    return 1;
  }

  asio::io_context io(1);
  std::uint16_t port = 0;
  {
    fastchat::server::Server server(io, config, std::move(store));
    st = server.Start(&port);
    if (!st.ok()) {
      std::cerr << "error: " << st.ToString() << "\n";
      return 1;
    }
    std::cout << "fastchat-server listening on " << config.listen_host << ":" << port << std::endl;
    std::cout << "connect a client with: fastchat --server " << config.listen_host << ":" << port
              << " register NAME" << std::endl;
    spdlog::info("store {}, pwhash {}, max frame {} bytes", store_name, pwhash, config.max_frame);

    std::unique_ptr<fastchat::balancer::BalancerReporter> reporter;
    fastchat::balancer::LoadMeter meter;
    if (!balancers.empty()) {
      if (advertise.empty()) advertise = config.listen_host + ":" + std::to_string(port);
      if (advertise.rfind("0.0.0.0:", 0) == 0 || advertise.rfind("[::]:", 0) == 0) {
        std::cerr << "error: listening on a wildcard address: give --advertise HOST:PORT for the balancer\n";
        return 2;
      }
      reporter = std::make_unique<fastchat::balancer::BalancerReporter>(
          io, balancers, config.server_id, advertise, config.cluster_secret, [&meter, &server] {
            fastchat::server::Server::Stats s = server.stats();
            return meter.Sample(s.connections, s.frames_handled);
          });
      reporter->Start();
      spdlog::info("reporting load to {} balancer(s) as {} at {}", balancers.size(), config.server_id, advertise);
    }

    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](const asio::error_code&, int sig) {
      spdlog::info("signal {}: shutting down", sig);
      if (reporter) reporter->Stop();
      server.Stop();
      io.stop();
    });
    io.run();
    reporter.reset();  // after io.run(): its sample function refers to the server
    const fastchat::server::Server::Stats s = server.stats();
    std::cout << "fastchat-server stats: frames_handled=" << s.frames_handled << " deliveries=" << s.deliveries
              << std::endl;
  }
  spdlog::info("stopped");
  return 0;
}
