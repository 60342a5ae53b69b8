// fastchat-server: the FastChat chat server.
#include <sys/resource.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <iostream>

#include <CLI/CLI.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "balancer/load_meter.h"
#include "balancer/reporter.h"
#include "common/host_port.h"
#include "common/private_files.h"
#include "common/secret_file.h"
#include "config.h"
#include "fastchat/crypto.h"
#include "fastchat/store.h"
#include "limit_flags.h"
#include "metrics_endpoint.h"
#include "net/tls.h"
#include "server.h"

namespace {

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
  // What this server creates (its data folder, its database files) is its
  // own user's only, whatever umask it was started with.
  ::umask(077);
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
  std::uint32_t pg_waiting_recount = fastchat::kDefaultWaitingRecount;
  app.add_option("--pg-waiting-recount", pg_waiting_recount,
                 "with --pg: count a user's waiting messages for --max-waiting-per-user(-bytes) once every N "
                 "messages this server stores for them; between counts a mailbox may pass its bound by up to N "
                 "per server (1 = exact: a count query per message)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1000000u));
  app.add_option("--server-id", config.server_id, "this server's name in the cluster and in HelloOk")
      ->capture_default_str();
  app.add_option("--pwhash", pwhash,
                 "Argon2id cost for password hashes: interactive, moderate, or min (tests only); the last one given wins")
      ->capture_default_str()
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
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
                 "cluster mode: report load to this balancer (HOST:PORT; repeat for several)")
      ->allow_extra_args(false);  // one value per --balancer
  app.add_option("--advertise", advertise,
                 "HOST:PORT the balancer hands to clients (default: the --listen address)");
  app.add_option("--mesh-listen", mesh_listen,
                 "cluster mode: HOST:PORT where other servers connect to this one (port 0 picks one)");
  app.add_option("--mesh-advertise", config.mesh_advertise,
                 "HOST:PORT other servers should dial (default: the --mesh-listen address)");
  app.add_option("--mesh-max-frame", config.mesh_max_frame,
                 "largest frame accepted from another server, bytes (keep it above --max-frame plus 64 KiB: a "
                 "Forward carries a stored delivery; smaller values are for tests)")
      ->capture_default_str()
      ->check(CLI::Range(1024u, 64u << 20));
  auto* secret_opt = app.add_option("--cluster-secret", config.cluster_secret,
                                    "secret shared by the servers of a cluster (>= 16 bytes; visible to other "
                                    "local users on the command line: prefer --cluster-secret-file)");
  app.add_option("--cluster-secret-file", secret_file,
                 "read the cluster secret from this file (mode 600; one trailing newline is not part of it)")
      ->excludes(secret_opt);
  std::string tls_cert, tls_key;
  bool plain_tcp = false;
  app.add_option("--tls-cert", tls_cert,
                 "TLS certificate chain (PEM); default: server.crt beside the database, created self-signed "
                 "on first start");
  app.add_option("--tls-key", tls_key, "TLS private key (PEM); default: --tls-cert with the extension .key");
  std::uint32_t token_days = 30;
  app.add_option("--session-token-days", token_days, "a session token (login without password) expires after this")
      ->capture_default_str()
      ->check(CLI::Range(1u, 3650u));
  std::uint32_t tls_handshake_ms = 10000;
  app.add_option("--tls-handshake-timeout-ms", tls_handshake_ms,
                 "a client connection that has not finished its TLS handshake by then is closed")
      ->capture_default_str();
  app.add_flag("--insecure-plain-tcp", plain_tcp,
               "no TLS on the client and mesh ports: passwords and metadata cross the network in clear "
               "(tests and benchmarks only)");
  std::string metrics_listen;
  app.add_option("--metrics-listen", metrics_listen,
                 "serve Prometheus metrics at http://HOST:PORT/metrics (a loopback address only; default: off)");
  std::string gen_cert, gen_key, gen_name = "localhost";
  CLI::App* gen = app.add_subcommand("gen-cert", "create a self-signed TLS certificate and key, print the fingerprint");
  gen->add_option("--cert", gen_cert, "certificate file to create (PEM)")->required();
  gen->add_option("--key", gen_key, "key file to create (PEM, mode 0600)")->required();
  gen->add_option("--name", gen_name, "host name the certificate names")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  if (gen->parsed()) {
    std::string fp;
    fastchat::Status gs = fastchat::net::GenerateSelfSigned(gen_cert, gen_key, gen_name, &fp);
    if (!gs.ok()) {
      std::cerr << "error: " << gs.ToString() << "\n";
      return 1;
    }
    std::cout << "wrote " << gen_cert << " and " << gen_key << "\nSHA-256 fingerprint: " << fp << std::endl;
    return 0;
  }

  auto logger = spdlog::stderr_color_mt("fastchat-server");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(log_level));
  if (fastchat::FlagOnCommandLine(argc, argv, "--cluster-secret")) spdlog::warn(fastchat::kSecretOnCommandLineWarning);

  if (!fastchat::ParseHostPort(listen, &config.listen_host, &config.listen_port)) {
    std::cerr << "error: --listen wants HOST:PORT, got '" << listen << "'\n";
    return 2;
  }
  std::string metrics_host;
  std::uint16_t metrics_port = 0;
  if (!metrics_listen.empty() && !fastchat::ParseHostPort(metrics_listen, &metrics_host, &metrics_port)) {
    std::cerr << "error: --metrics-listen wants HOST:PORT, got '" << metrics_listen << "'\n";
    return 2;
  }
  if (!mesh_listen.empty()) {
    config.mesh_enabled = true;
    if (!fastchat::ParseHostPort(mesh_listen, &config.mesh_host, &config.mesh_port)) {
      std::cerr << "error: --mesh-listen wants HOST:PORT, got '" << mesh_listen << "'\n";
      return 2;
    }
  }
  // Cluster mode needs the secret; one given without it is checked all the same.
  if (config.mesh_enabled || !balancers.empty() || !secret_file.empty() || !config.cluster_secret.empty()) {
    if (fastchat::Status st = fastchat::LoadClusterSecret(secret_file, &config.cluster_secret); !st.ok()) {
      std::cerr << "error: " << st.message() << "\n";
      return 2;
    }
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
  if (config.mesh_enabled && config.mesh_max_frame < config.max_frame + (64u << 10)) {
    spdlog::warn("--mesh-max-frame {} is below --max-frame plus 64 KiB: a large delivery forwarded between "
                 "servers will break their link (a setting for tests)",
                 config.mesh_max_frame);
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
    st = fastchat::OpenPgStore(pg, &store, pg_waiting_recount);
  } else {
    store_name = config.db_path;
    st = fastchat::MakePrivateDirs(std::filesystem::path(config.db_path).parent_path().string());
    // Database files others may read (made before this version, or by
    // hand) become owner-only.
    if (st.ok()) {
      st = fastchat::MakeDatabaseOwnerOnly(config.db_path, [](const std::string& line) { spdlog::warn("{}", line); });
    }
    if (st.ok()) st = fastchat::OpenSqliteStore(config.db_path, &store, /*exclusive=*/true);
  }
  if (!st.ok()) {
    std::cerr << "error: opening the store (" << store_name << "): " << st.ToString() << "\n";
    return 1;
  }

  std::string fingerprint;
  config.tls_handshake_timeout = std::chrono::milliseconds(tls_handshake_ms);
  config.session_token_ttl = std::chrono::hours(24) * token_days;
  if (plain_tcp) {
    spdlog::warn("--insecure-plain-tcp: no TLS; passwords and metadata cross the network in clear");
  } else {
    namespace fs = std::filesystem;
    if (tls_cert.empty()) {
      fs::path dir = pg.empty() ? fs::path(config.db_path).parent_path() : fs::path("fastchat-data");
      std::error_code fs_ec;
      if (!dir.empty()) fs::create_directories(dir, fs_ec);
      tls_cert = (dir / "server.crt").string();
    }
    if (tls_key.empty()) tls_key = fs::path(tls_cert).replace_extension(".key").string();
    bool created = false;
    st = fastchat::net::LoadOrCreateServerTls(tls_cert, tls_key, config.server_id, &config.tls, &fingerprint,
                                              &created);
    if (st.ok()) st = fastchat::net::MakeClientTls("", &config.peer_tls);
    if (!st.ok()) {
      std::cerr << "error: TLS: " << st.ToString() << "\n";
      return 1;
    }
    if (created) spdlog::info("created a self-signed TLS certificate {} (key {})", tls_cert, tls_key);
  }

  std::uint16_t port = 0;
  {
    // Declared first in this scope, so destroyed last: what is declared
    // below runs on its event loop.
    fastchat::server::Server server(config, std::move(store));
    asio::io_context& io = server.io();
    st = server.Start(&port);
    if (!st.ok()) {
      std::cerr << "error: " << st.ToString() << "\n";
      return 1;
    }
    std::cout << "fastchat-server listening on " << config.listen_host << ":" << port << std::endl;
    if (plain_tcp) {
      std::cout << "connect a client with: fastchat --server " << config.listen_host << ":" << port
                << " --insecure-plain-tcp register NAME" << std::endl;
    } else {
      std::cout << "TLS certificate SHA-256 fingerprint: " << fingerprint << std::endl;
      std::cout << "connect a client with: fastchat --server " << config.listen_host << ":" << port
                << " --tls-pin " << fingerprint << " register NAME" << std::endl;
    }
    spdlog::info("store {}, pwhash {}, max frame {} bytes", store_name, pwhash, config.max_frame);
    fastchat::server::MetricsEndpoint metrics(io, [&server] { return server.MetricsText(); });
    if (!metrics_listen.empty()) {
      std::uint16_t bound = 0;
      st = metrics.Start(metrics_host, metrics_port, &bound);
      if (!st.ok()) {
        std::cerr << "error: " << st.message() << "\n";
        return 2;
      }
      std::cout << "metrics at http://" << fastchat::FormatHostPort(metrics_host, bound) << "/metrics" << std::endl;
    }

    std::unique_ptr<fastchat::balancer::BalancerReporter> reporter;
    fastchat::balancer::LoadMeter meter;
    if (!balancers.empty()) {
      if (advertise.empty()) advertise = fastchat::FormatHostPort(config.listen_host, port);
      if (advertise.rfind("0.0.0.0:", 0) == 0 || advertise.rfind("[::]:", 0) == 0) {
        std::cerr << "error: listening on a wildcard address: give --advertise HOST:PORT for the balancer\n";
        return 2;
      }
      fastchat::balancer::ReporterOptions ropts;
      ropts.tls = config.peer_tls;  // null with --insecure-plain-tcp
      reporter = std::make_unique<fastchat::balancer::BalancerReporter>(
          io, balancers, config.server_id, advertise, config.cluster_secret,
          [&meter, &server] {
            fastchat::server::Server::Stats s = server.stats();
            return meter.Sample(s.connections, s.frames_handled);
          },
          ropts);
      reporter->Start();
      spdlog::info("reporting load to {} balancer(s) as {} at {}", balancers.size(), config.server_id, advertise);
    }

    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](const asio::error_code&, int sig) {
      spdlog::info("signal {}: shutting down", sig);
      if (reporter) reporter->Stop();
      metrics.Stop();
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
