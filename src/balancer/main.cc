// fastchat-balancer: tells FastChat clients which chat server to use.
#include <csignal>
#include <filesystem>
#include <iostream>

#include <CLI/CLI.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "common/host_port.h"
#include "balancer.h"
#include "common/secret_file.h"
#include "net/tls.h"

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
  std::string tls_cert = "fastchat-data/balancer.crt", tls_key;
  bool plain_tcp = false;
  app.add_option("--tls-cert", tls_cert, "TLS certificate chain (PEM); created self-signed if it and the key are missing")
      ->capture_default_str();
  app.add_option("--tls-key", tls_key, "TLS private key (PEM); default: --tls-cert with the extension .key");
  app.add_flag("--insecure-plain-tcp", plain_tcp, "no TLS: reports and answers cross the network in clear (tests only)");
  CLI11_PARSE(app, argc, argv);

  auto logger = spdlog::stderr_color_mt("fastchat-balancer");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(log_level));
  if (fastchat::FlagOnCommandLine(argc, argv, "--cluster-secret")) spdlog::warn(fastchat::kSecretOnCommandLineWarning);

  if (!fastchat::ParseHostPort(listen, &config.listen_host, &config.listen_port)) {
    std::cerr << "error: --listen wants HOST:PORT, got '" << listen << "'\n";
    return 2;
  }
  if (fastchat::Status st = fastchat::LoadClusterSecret(secret_file, &config.cluster_secret); !st.ok()) {
    std::cerr << "error: " << st.message() << "\n";
    return 2;
  }
  config.expire_after = std::chrono::milliseconds(expire_ms);
  std::string fingerprint;
  if (plain_tcp) {
    spdlog::warn("--insecure-plain-tcp: no TLS; load reports and server addresses cross the network in clear");
  } else {
    namespace fs = std::filesystem;
    std::error_code fs_ec;
    if (fs::path(tls_cert).has_parent_path()) fs::create_directories(fs::path(tls_cert).parent_path(), fs_ec);
    if (tls_key.empty()) tls_key = fs::path(tls_cert).replace_extension(".key").string();
    bool created = false;
    fastchat::Status tst =
        fastchat::net::LoadOrCreateServerTls(tls_cert, tls_key, "fastchat-balancer", &config.tls, &fingerprint, &created);
    if (!tst.ok()) {
      std::cerr << "error: TLS: " << tst.ToString() << "\n";
      return 1;
    }
    if (created) spdlog::info("created a self-signed TLS certificate {} (key {})", tls_cert, tls_key);
  }

  asio::io_context io(1);
  {
    fastchat::balancer::Balancer balancer(io, config);
    std::uint16_t port = 0;
    fastchat::Status st = balancer.Start(&port);
    if (!st.ok()) {
      std::cerr << "error: " << st.ToString() << "\n";
      return 1;
    }
    std::cout << "fastchat-balancer listening on " << fastchat::FormatHostPort(config.listen_host, port)
              << std::endl;
    if (!plain_tcp) std::cout << "TLS certificate SHA-256 fingerprint: " << fingerprint << std::endl;
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
