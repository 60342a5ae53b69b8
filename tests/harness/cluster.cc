#include "harness/cluster.h"

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace fastchat::testing {
namespace fs = std::filesystem;

std::string BalancerBinary() { return BinDir() + "/src/balancer/fastchat-balancer"; }

// ------------------------------------------------------------------ PostgreSQL
void RequirePostgresEnvironment() {
  for (const char* var : {"PGHOST", "PGHOSTADDR", "PGDATABASE", "PGSERVICE"}) {
    const char* v = std::getenv(var);
    if (v != nullptr && *v != '\0') return;
  }
  throw std::runtime_error(
      "the cluster tests need PostgreSQL: run them under pg_virtualenv (e.g. "
      "`pg_virtualenv -- ./cluster_test`, as scripts/test.sh does for ctest) or set PGHOST/PGDATABASE "
      "(and PGPORT/PGUSER/PGPASSWORD as needed)");
}

namespace {

// Runs `command` with /bin/sh; its stdout, or throws with both outputs.
std::string Shell(const std::string& command) {
  std::string out;
  FILE* f = ::popen((command + " 2>&1").c_str(), "r");
  if (f == nullptr) throw std::runtime_error("popen failed: " + command);
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) out.append(buf, n);
  int rc = ::pclose(f);
  if (rc != 0) throw std::runtime_error("`" + command + "` failed (" + std::to_string(rc) + "): " + out);
  return out;
}

struct PgConn {
  PGconn* c = nullptr;
  PgConn() {
    c = PQconnectdb("");
    if (PQstatus(c) != CONNECTION_OK) {
      std::string why = PQerrorMessage(c);
      PQfinish(c);
      c = nullptr;
      throw std::runtime_error("cannot connect to PostgreSQL (PG* environment): " + why);
    }
    PQsetNoticeProcessor(c, [](void*, const char*) {}, nullptr);  // "drop cascades to ..."
  }
  ~PgConn() {
    if (c != nullptr) PQfinish(c);
  }
  std::vector<std::string> Exec(const std::string& sql) {
    PGresult* r = PQexec(c, sql.c_str());
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
      std::string why = PQresultErrorMessage(r);
      PQclear(r);
      throw std::runtime_error("PostgreSQL: " + sql + ": " + why);
    }
    std::vector<std::string> out;
    if (st == PGRES_TUPLES_OK && PQnfields(r) > 0) {
      for (int i = 0; i < PQntuples(r); ++i) out.emplace_back(PQgetvalue(r, i, 0));
    }
    PQclear(r);
    return out;
  }
};

}  // namespace

void RestartPostgres() {
  RequirePostgresEnvironment();
  const char* port = std::getenv("PGPORT");
  const std::string want_port = port != nullptr && *port != '\0' ? port : "5432";
  // "VERSION NAME PORT STATUS OWNER DATADIR LOG"
  std::istringstream lines(Shell("pg_lsclusters -h"));
  std::string line, version, name;
  for (std::string v, n, p; std::getline(lines, line);) {
    std::istringstream fields(line);
    if (fields >> v >> n >> p && p == want_port) {
      version = v;
      name = n;
      break;
    }
  }
  if (name.empty()) throw std::runtime_error("no PostgreSQL cluster on port " + want_port + " in pg_lsclusters");
  // Stop and start rather than `restart`: under load the start part of a
  // restart sometimes finds the old postmaster not gone yet ("Cluster is
  // already running").
  const std::string cluster = version + " " + name;
  Shell("pg_ctlcluster " + cluster + " stop -m immediate");
  auto deadline = Clock::now() + kDefaultTimeout;
  for (;;) {
    try {
      Shell("pg_ctlcluster " + cluster + " start");
      break;
    } catch (const std::exception& e) {
      if (Clock::now() > deadline) throw;
    }
    std::this_thread::sleep_for(Millis(200));
  }
  for (;;) {
    try {
      PgConn conn;
      conn.Exec("SELECT 1");
      return;
    } catch (const std::exception& e) {
      if (Clock::now() > deadline) throw;
    }
    std::this_thread::sleep_for(Millis(50));
  }
}

PgSchema::PgSchema() {
  RequirePostgresEnvironment();
  name_ = "fc_cluster_" + RandomToken(12);
  PgConn conn;
  conn.Exec("CREATE SCHEMA " + name_);
}

PgSchema::~PgSchema() {
  if (std::getenv("FASTCHAT_KEEP_TMP") != nullptr) {
    std::cerr << "[cluster] keeping PostgreSQL schema " << name_ << "\n";
    return;
  }
  try {
    PgConn conn;
    conn.Exec("DROP SCHEMA IF EXISTS " + name_ + " CASCADE");
  } catch (const std::exception& e) {
    std::cerr << "[cluster] could not drop schema " << name_ << ": " << e.what() << "\n";
  }
}

std::vector<std::string> PgSchema::Query(const std::string& sql) const {
  PgConn conn;
  conn.Exec("SET search_path TO " + name_);
  return conn.Exec(sql);
}

// ------------------------------------------------------------------ files
std::string FileText(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return "";
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool WaitForFileText(const std::string& path, const std::string& needle, Millis timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    if (FileText(path).find(needle) != std::string::npos) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(Millis(10));
  }
}

std::size_t CountInFile(const std::string& path, const std::string& needle) {
  std::string s = FileText(path);
  std::size_t n = 0;
  for (std::size_t at = s.find(needle); at != std::string::npos; at = s.find(needle, at + needle.size())) ++n;
  return n;
}

namespace {

// Waits for the first complete stdout line of a program that announces its
// port ("... listening on HOST:PORT"); returns the port.
std::uint16_t WaitListening(Process& p, const std::string& stdout_path, const std::string& what) {
  static const std::regex kListening(R"(listening on [^ ]*:([0-9]+))");
  auto deadline = Clock::now() + kDefaultTimeout;
  for (;;) {
    std::string out = FileText(stdout_path);
    auto nl = out.find('\n');
    std::smatch m;
    if (nl != std::string::npos) {
      std::string first = out.substr(0, nl);
      if (std::regex_search(first, m, kListening)) {
        auto port = static_cast<std::uint16_t>(std::stoi(m[1].str()));
        if (port != 0) return port;
      }
    }
    if (!p.Running()) {
      throw std::runtime_error(what + " exited with code " + std::to_string(p.exit_code().value_or(-1)) +
                               " before listening; command: " + p.CommandLine() + "\nstderr:\n" + p.StderrTail());
    }
    if (Clock::now() > deadline) {
      throw std::runtime_error(what + " did not print 'listening on' in time; stdout: " + out + "\nstderr:\n" +
                               p.StderrTail());
    }
    std::this_thread::sleep_for(Millis(5));
  }
}

int TermAndWait(Process& p) {
  if (auto c = p.exit_code()) return *c;
  p.Signal(SIGTERM);
  if (auto c = p.Wait(Millis(15000))) return *c;
  p.Signal(SIGKILL);
  return p.Wait(Millis(10000)).value_or(-1);
}

}  // namespace

// ------------------------------------------------------------------ ClusterServer
ClusterServer::ClusterServer(const std::string& dir, ClusterServerOptions options) : options_(std::move(options)) {
  if (!fs::exists(ServerBinary())) {
    throw std::runtime_error("server binary not found: " + ServerBinary() + " (build target fastchat-server)");
  }
  SpawnOptions so;
  so.argv = {ServerBinary(),  "--server-id",      options_.id,     "--pg",     options_.conninfo,
             "--listen",      "127.0.0.1:0",      "--mesh-listen", "127.0.0.1:0", "--cluster-secret",
             options_.secret, "--pwhash",         "min",           "--log-level", "info",
             "--tls-cert",    dir + "/server-" + options_.id + ".crt"};
  // Every test client comes from 127.0.0.1: no per-source limits on
  // registrations and connections (tests/limits_test.cc tests those).
  for (const char* a : {"--registrations-per-ip", "0", "--max-connections-per-ip", "0"}) so.argv.push_back(a);
  if (!options_.balancer.empty()) {
    so.argv.push_back("--balancer");
    so.argv.push_back(options_.balancer);
  }
  for (const auto& a : options_.extra_args) so.argv.push_back(a);
  stdout_path_ = dir + "/server-" + options_.id + ".stdout";
  stderr_path_ = dir + "/server-" + options_.id + ".stderr";
  so.stdout_path = stdout_path_;
  so.stderr_path = stderr_path_;
  proc_ = Process::Spawn(so);
  port_ = WaitListening(*proc_, stdout_path_, "fastchat-server " + options_.id);

  // "mesh: server ID listening for peers on HOST:PORT (advertised as ...)"
  static const std::regex kMesh(R"(listening for peers on [^ ]*:([0-9]+))");
  auto deadline = Clock::now() + kDefaultTimeout;
  for (;;) {
    std::string log = Log();
    std::smatch m;
    if (std::regex_search(log, m, kMesh)) {
      mesh_port_ = static_cast<std::uint16_t>(std::stoi(m[1].str()));
      break;
    }
    if (!proc_->Running() || Clock::now() > deadline) {
      throw std::runtime_error("fastchat-server " + options_.id + " did not log its mesh port\nstderr:\n" +
                               LogTail());
    }
    std::this_thread::sleep_for(Millis(5));
  }
}

ClusterServer::~ClusterServer() { Stop(); }

int ClusterServer::Stop() { return TermAndWait(*proc_); }

void ClusterServer::Kill() {
  if (proc_->exit_code()) return;
  proc_->Signal(SIGKILL);
  proc_->Wait(Millis(10000));
}

std::optional<ClusterServer::Stats> ClusterServer::stats() const {
  static const std::regex kStats(R"(fastchat-server stats: frames_handled=([0-9]+) deliveries=([0-9]+))");
  std::string out = FileText(stdout_path_);
  std::smatch m;
  if (!std::regex_search(out, m, kStats)) return std::nullopt;
  Stats s;
  s.frames_handled = std::stoull(m[1].str());
  s.deliveries = std::stoull(m[2].str());
  return s;
}

// ------------------------------------------------------------------ BalancerProcess
BalancerProcess::BalancerProcess(const std::string& dir, const std::string& secret, int expire_ms,
                                 const std::vector<std::string>& extra_args) {
  if (!fs::exists(BalancerBinary())) {
    throw std::runtime_error("balancer binary not found: " + BalancerBinary() + " (build target fastchat-balancer)");
  }
  SpawnOptions so;
  so.argv = {BalancerBinary(), "--listen", "127.0.0.1:0", "--expire-ms", std::to_string(expire_ms), "--log-level",
             "info", "--tls-cert", dir + "/balancer.crt"};
  if (!secret.empty()) so.argv.insert(so.argv.end(), {"--cluster-secret", secret});
  so.argv.insert(so.argv.end(), extra_args.begin(), extra_args.end());
  std::string out = dir + "/balancer.stdout";
  stderr_path_ = dir + "/balancer.stderr";
  so.stdout_path = out;
  so.stderr_path = stderr_path_;
  proc_ = Process::Spawn(so);
  port_ = WaitListening(*proc_, out, "fastchat-balancer");
}

BalancerProcess::~BalancerProcess() { Stop(); }

int BalancerProcess::Stop() { return TermAndWait(*proc_); }

// ------------------------------------------------------------------ Cluster
Cluster::Cluster(const ClusterOptions& options) : options_(options), tmp_("fastchat-cluster") {
  pg_ = std::make_unique<PgSchema>();
  secret_ = options.secret.empty() ? "cluster-secret-" + RandomToken(24) : options.secret;
  if (options.balancer) {
    balancer_ = std::make_unique<BalancerProcess>(tmp_.path(), secret_, options.balancer_expire_ms);
  }
  for (int i = 1; i <= options.servers; ++i) AddServer("s" + std::to_string(i), secret_, true);
  initial_servers_ = servers_.size();
}

Cluster::~Cluster() {
  if (::testing::Test::HasFailure()) DumpLogs();
  // Servers first (they hold connections into the schema), then the
  // balancer, then the schema.
  for (auto& s : servers_) s->Stop();
  servers_.clear();
  balancer_.reset();
  pg_.reset();
}

void Cluster::DumpLogs() const {
  for (const auto& s : servers_) {
    std::cerr << "---- server " << s->id() << " (" << s->address() << ", mesh " << s->mesh_port()
              << ") stderr tail:\n"
              << s->LogTail(8000) << "\n";
  }
  if (balancer_) std::cerr << "---- balancer stderr tail:\n" << balancer_->LogTail(4000) << "\n";
  std::cerr << "---- files in " << tmp_.path() << " (FASTCHAT_KEEP_TMP=1 keeps them)\n";
}

ClusterServer* Cluster::server_by_id(const std::string& id) {
  for (auto& s : servers_) {
    if (s->id() == id) return s.get();
  }
  return nullptr;
}

std::vector<ClusterServer*> Cluster::servers() {
  std::vector<ClusterServer*> v;
  for (auto& s : servers_) v.push_back(s.get());
  return v;
}

ClusterServer& Cluster::AddServer(const std::string& id, const std::string& secret, bool report_to_balancer,
                                  const std::vector<std::string>& extra_args) {
  ClusterServerOptions o;
  o.id = id;
  o.conninfo = pg_->Conninfo();
  o.secret = secret;
  o.extra_args = extra_args;
  if (balancer_ && report_to_balancer) o.balancer = balancer_->address();
  servers_.push_back(std::make_unique<ClusterServer>(tmp_.path(), o));
  return *servers_.back();
}

ClusterServer& Cluster::RestartServer(std::size_t i) {
  std::unique_ptr<ClusterServer>& slot = servers_.at(i);
  slot->Kill();
  ClusterServerOptions o = slot->options();
  for (int gen = 1;; ++gen) {
    std::string suffix = "." + std::to_string(gen);
    if (!fs::exists(slot->log_path() + suffix)) {
      fs::rename(slot->log_path(), slot->log_path() + suffix);
      fs::rename(slot->stdout_path(), slot->stdout_path() + suffix);
      break;
    }
  }
  slot.reset();
  slot = std::make_unique<ClusterServer>(tmp_.path(), o);
  return *slot;
}

void Cluster::WaitMeshFormed(Millis timeout) {
  auto deadline = Clock::now() + timeout;
  for (std::size_t i = 0; i < initial_servers_; ++i) {
    for (std::size_t j = 0; j < initial_servers_; ++j) {
      if (i == j) continue;
      auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now());
      if (left.count() < 0) left = Millis(0);
      // "(" ends the id, so s1 does not match s10.
      std::string needle = "mesh: linked to server " + servers_[j]->id() + " (";
      if (!servers_[i]->WaitLog(needle, left)) {
        throw std::runtime_error("server " + servers_[i]->id() + " did not log '" + needle + "' within " +
                                 std::to_string(timeout.count()) + " ms\nits log:\n" + servers_[i]->LogTail());
      }
    }
  }
}

void Cluster::WaitRegisteredWithBalancer(Millis timeout) {
  if (!balancer_) throw std::logic_error("no balancer in this cluster");
  auto deadline = Clock::now() + timeout;
  for (std::size_t i = 0; i < initial_servers_; ++i) {
    auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now());
    if (left.count() < 0) left = Millis(0);
    std::string needle = "registered with balancer";
    if (!servers_[i]->WaitLog(needle, left)) {
      throw std::runtime_error("server " + servers_[i]->id() + " did not log '" + needle + "'\nits log:\n" +
                               servers_[i]->LogTail() + "\nbalancer log:\n" + balancer_->LogTail());
    }
  }
}

User Cluster::MakeUser(const std::string& name) {
  User u;
  u.name = name;
  u.password = "pw-" + name + "-secret";
  u.home = tmp_.Sub("home-" + name, true);
  u.downloads = tmp_.Sub("downloads-" + name, true);
  return u;
}

std::vector<std::string> Cluster::GlobalArgs(const User& u, const Via& via, bool with_user) const {
  std::vector<std::string> a = {ClientBinary(), via.flag,      via.address,   "--home", u.home, "--password",
                                u.password,     "--downloads", u.downloads,   "--json", "--kdf", "min"};
  if (with_user) {
    a.push_back("--user");
    a.push_back(u.name);
  }
  return a;
}

RunResult Cluster::Run(const User& u, const Via& via, const std::vector<std::string>& args, Millis timeout) {
  bool with_user = args.empty() || args[0] != "register";
  std::vector<std::string> argv = GlobalArgs(u, via, with_user);
  argv.insert(argv.end(), args.begin(), args.end());
  return RunClientOnce(std::move(argv), tmp_.Sub("run-" + std::to_string(++counter_) + ".stderr"), timeout);
}

User Cluster::Register(const std::string& name, const Via& via) {
  User u = MakeUser(name);
  RunResult r = Run(u, via, {"register", name});
  if (!r.ok() || !r.result().contains("user_id")) {
    throw std::runtime_error("register " + name + " failed\n" + r.Describe());
  }
  u.id = AsU64(r.result()["user_id"]);
  return u;
}

std::unique_ptr<ChatClient> Cluster::Chat(const User& u, const Via& via, bool wait_ready) {
  if (!fs::exists(ClientBinary())) {
    throw std::runtime_error("client binary not found: " + ClientBinary() + " (build target fastchat)");
  }
  SpawnOptions so;
  so.argv = GlobalArgs(u, via);
  so.argv.push_back("chat");
  std::string label = u.name + "#" + std::to_string(++counter_);
  so.stderr_path = tmp_.Sub("chat-" + label + ".stderr");
  auto c = std::make_unique<ChatClient>(label, Process::Spawn(so));
  if (wait_ready) c->WaitFor("ready");
  return c;
}

void BefriendChats(ChatClient& a, const User& ua, ChatClient& b, const User& ub) {
  a.CommandOk("add_friend " + ub.name);
  b.WaitFor(Like({{"type", "friend_request"}, {"from", ua.name}}), "friend_request from " + ua.name);
  b.CommandOk("accept " + ua.name);
  a.WaitFor(Like({{"type", "friend_accepted"}, {"from", ub.name}}), "friend_accepted from " + ub.name);
}

void Pump(ChatClient& c, Millis wait) {
  c.TryWaitFor([](const json&) { return false; }, wait);
}

}  // namespace fastchat::testing
