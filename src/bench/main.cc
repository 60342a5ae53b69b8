// fastchat-bench: drives running FastChat servers with many simulated users
// over real TCP and reports throughput, latency, server CPU/RSS and whether
// every acknowledged message arrived once and in order. See docs/performance.md.
#include <iostream>

#include <CLI/CLI.hpp>

#include "bench.h"

int main(int argc, char** argv) {
  using fastchat::bench::Options;
  Options o;
  bool no_encrypt = false;
  bool self_test = false;
  CLI::App app{
      "fastchat-bench: load generator for FastChat servers (one thread, many connections, the real protocol).\n"
      "Start servers with --pwhash min so set-up (registration, logins) is fast."};
  // A later flag overrides an earlier one (scripts pass defaults, then the user's).
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--server", o.servers, "HOST:PORT of a server (repeat for a cluster; users spread round-robin)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->allow_extra_args(false);  // one value per flag: repeat it
  app.add_option("--server-pid", o.server_pids, "server process to measure (CPU from /proc/PID/stat, VmRSS); repeatable")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->allow_extra_args(false);  // one value per flag: repeat it
  app.add_option("--db-pid", o.db_pids, "database process to measure, with its child processes; repeatable")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->allow_extra_args(false);  // one value per flag: repeat it
  app.add_option("--workload", o.workload, "dm | group | offline | login | idle")
      ->check(CLI::IsMember({"dm", "group", "offline", "login", "idle"}))
      ->capture_default_str();
  app.add_option("--users", o.users, "simulated users (dm, offline, login, idle)")->capture_default_str();
  app.add_option("--groups", o.groups, "group workload: number of groups")->capture_default_str();
  app.add_option("--group-size", o.group_size, "group workload: members per group")->capture_default_str();
  app.add_option("--senders", o.senders, "group workload: sending members per group")->capture_default_str();
  app.add_option("--payload", o.payload, "plaintext bytes per message (at least 24)")->capture_default_str();
  app.add_option("--window", o.window, "closed loop: un-Ok'd sends in flight per sender")->capture_default_str();
  app.add_option("--rate", o.rate, "open loop: total offered msgs/s (0 = closed loop)")->capture_default_str();
  app.add_option("--duration", o.duration, "measured seconds (idle: seconds held idle)")->capture_default_str();
  app.add_option("--warmup", o.warmup, "seconds of load before the measured window")->capture_default_str();
  app.add_option("--drain", o.drain, "after sending stops, give up after this many seconds without progress")
      ->capture_default_str();
  app.add_option("--messages", o.messages, "offline: messages per sender (0 = send for --duration)")
      ->capture_default_str();
  app.add_flag("--no-encrypt", no_encrypt, "send random bytes instead of real AEAD ciphertexts and signatures");
  app.add_flag("--tls", o.tls,
               "connect with TLS 1.3, as the server's client port speaks by default (start it without "
               "--insecure-plain-tcp). The server's certificate is NOT verified: this is a load generator, "
               "not a client");
  app.add_flag("--pairs-together", o.pairs_together,
               "dm with several --server: put both users of each pair on one server (user i on server (i/2) mod N "
               "rather than i mod N), so no DM crosses servers: the local baseline within the same cluster");
  app.add_flag("--groups-together", o.groups_together,
               "group with several --server: put every member of group g on server g mod N (rather than user i "
               "on server i mod N), so no delivery crosses servers: the local baseline within the same cluster");
  app.add_flag("--groups-apart", o.groups_apart,
               "group with several --server: put the senders of group g on server g mod N and its other members on "
               "server (g+1) mod N, so every delivery crosses servers (each member's through one link)");
  app.add_flag("--verify-signatures", o.verify_signatures, "group: receivers verify every Ed25519 signature");
  app.add_flag("--batch-add", o.batch_add, "group: build groups with one GroupAdd per 1000 members (one notice each)");
  app.add_option("--json", o.json_file, "also write every number to this JSON file");
  app.add_option("--sources", o.sources, "connect from source addresses 127.0.0.1..127.0.0.N (more than 28k connections)")
      ->capture_default_str();
  app.add_option("--concurrency", o.concurrency, "sessions being set up at once (0 = all)")->capture_default_str();
  app.add_option("--password", o.password, "password of every simulated user (8+ bytes)")->capture_default_str();
  app.add_option("--prefix", o.prefix, "user-name prefix (default: random per run)");
  app.add_option("--setup-timeout", o.setup_timeout, "fail a set-up phase after this many seconds without progress")
      ->capture_default_str();
  app.add_option("--inject-loss", o.inject_loss, "checker test: ignore every Nth received message");
  app.add_option("--inject-dup", o.inject_dup, "checker test: count every Nth received message twice");
  app.add_option("--inject-reorder", o.inject_reorder, "checker test: hold every Nth message back behind the next");
  app.add_flag("--self-test", self_test, "test the checker and histogram on synthetic sequences and exit");
  CLI11_PARSE(app, argc, argv);
  o.encrypt = !no_encrypt;

  if (self_test) return fastchat::bench::SelfTest() == 0 ? 0 : 1;
  if (o.password.size() < 8) {
    std::cerr << "error: --password must be at least 8 bytes\n";
    return 2;
  }
  if (o.pairs_together && o.workload != "dm") {
    std::cerr << "error: --pairs-together is for the dm workload\n";
    return 2;
  }
  if ((o.groups_together || o.groups_apart) && o.workload != "group") {
    std::cerr << "error: --groups-together and --groups-apart are for the group workload\n";
    return 2;
  }
  if (o.groups_together && o.groups_apart) {
    std::cerr << "error: --groups-together and --groups-apart exclude each other\n";
    return 2;
  }
  if (o.workload == "group" && (o.groups < 1 || o.group_size < 2 || o.senders < 1)) {
    // Checked here, not only in the group workload: users are placed on
    // servers by group (--groups-together, --groups-apart) before it runs.
    std::cerr << "error: group needs --groups >= 1, --group-size >= 2 and --senders >= 1\n";
    return 2;
  }
  if (o.window < 1 || o.duration <= 0 || o.warmup < 0 || o.rate < 0 || o.sources < 1 || o.sources > 250) {
    std::cerr << "error: bad --window/--duration/--warmup/--rate/--sources\n";
    return 2;
  }
  fastchat::bench::Results r;
  fastchat::bench::RunBench(o, &r);
  fastchat::bench::Report(r);
  return fastchat::bench::ExitCode(r);
}
