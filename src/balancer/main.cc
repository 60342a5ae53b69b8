// fastchat-balancer: tells FastChat clients which chat server to use.
#include <csignal>
#include <iostream>

#include <CLI/CLI.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "address.h"
#include "balancer.h"
#include "common/secret_file.h"

int main(int argc, char** argv) {
  fastchat::balancer::BalancerConfig config;
  std::string listen = "127.0.0.1:7300";
  std::string secret_file;
  std::uint32_t expire_ms = 3000;
  std::string log_level = "info";

  CLI::App app{"fastchat-balancer: spreads FastChat clients over the chat servers"};
  app.set_config("--config", "", "read settings from this file (key = value lines; keys are the long flag names)");
  app.add_option("--listen", listen, "address and port to listen on (port 0 picks a free one)")
      ->capture_default_str();
  auto* secret_opt = app.add_option("--cluster-secret", config.cluster_secret,
                                    "secret shared by the balancers and servers of the cluster (>= 16 bytes; "
                                    "visible to other local users on the command line: prefer "
                                    "--cluster-secret-file)");
  app.add_option("--cluster-secret-file", secret_file,
                 "read the cluster secret from this file (mode 600; one trailing newline is not part of it)")
      ->excludes(secret_opt);
  app.add_option("--expire-ms", expire_ms, "stop assigning a server after this long without a report")
      ->capture_default_str()
      ->check(CLI::Range(100u, 3600000u));
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  CLI11_PARSE(app, argc, argv);

  auto logger = spdlog::stderr_color_mt("fastchat-balancer");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(log_level));
  if (fastchat::FlagOnCommandLine(argc, argv, "--cluster-secret")) spdlog::warn(fastchat::kSecretOnCommandLineWarning);

  if (!fastchat::balancer::ParseHostPort(listen, &config.listen_host, &config.listen_port)) {
    std::cerr << "error: --listen wants HOST:PORT, got '" << listen << "'\n";
    return 2;
  }
  if (fastchat::Status st = fastchat::LoadClusterSecret(secret_file, &config.cluster_secret); !st.ok()) {
    std::cerr << "error: " << st.message() << "\n";
    return 2;
  }
  config.expire_after = std::chrono::milliseconds(expire_ms);

  asio::io_context io(1);
  {
    fastchat::balancer::Balancer balancer(io, config);
    std::uint16_t port = 0;
    fastchat::Status st = balancer.Start(&port);
    if (!st.ok()) {
      std::cerr << "error: " << st.ToString() << "\n";
      return 1;
    }
    std::cout << "fastchat-balancer listening on " << fastchat::balancer::FormatHostPort(config.listen_host, port)
              << std::endl;
    spdlog::info("servers expire after {} ms without a report", expire_ms);

    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](const asio::error_code&, int sig) {
      spdlog::info("signal {}: shutting down", sig);
      balancer.Stop();
      io.stop();
    });
    io.run();
  }
  spdlog::info("stopped");
  return 0;
}
