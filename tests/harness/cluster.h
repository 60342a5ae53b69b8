// Test harness for clusters: several fastchat-server processes sharing one
// PostgreSQL schema and linked by their mesh, an optional fastchat-balancer,
// and fastchat clients pinned to one server (--server) or placed by the
// balancer (--balancer).
//
// PostgreSQL comes from the standard PG* environment (ctest runs under
// pg_virtualenv, see scripts/test.sh); each Cluster works in a fresh schema
// of its own and drops it at the end. Without a PG* environment the
// constructor throws (the test fails with a clear message; it never skips).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "harness/fastchat.h"
#include "harness/process.h"

namespace fastchat::testing {

std::string BalancerBinary();  // <bin>/src/balancer/fastchat-balancer

// Throws std::runtime_error unless the PG* environment names a server.
void RequirePostgresEnvironment();

// Restarts the PostgreSQL server of the PG* environment (the pg_virtualenv
// cluster: `pg_ctlcluster VERSION NAME stop -m immediate`, then start: a
// crash and recovery, with NAME the cluster on $PGPORT from `pg_lsclusters`) and
// waits until it accepts connections again. Throws on failure.
void RestartPostgres();

// A fresh schema in the PG* environment's database, dropped on destruction
// (kept if FASTCHAT_KEEP_TMP is set).
class PgSchema {
 public:
  PgSchema();
  ~PgSchema();
  PgSchema(const PgSchema&) = delete;
  PgSchema& operator=(const PgSchema&) = delete;

  const std::string& name() const { return name_; }
  // What to give the server's --pg: the PG* environment plus a search_path.
  std::string Conninfo() const { return "options='-c search_path=" + name_ + "'"; }
  // Runs `sql` (with this schema first on the search_path); returns the
  // first column of every row. Throws on error.
  std::vector<std::string> Query(const std::string& sql) const;

 private:
  std::string name_;
};

// The whole of a text file ("" if it cannot be read).
std::string FileText(const std::string& path);
// Waits (polling) until the file contains `needle`; false on timeout.
bool WaitForFileText(const std::string& path, const std::string& needle, Millis timeout);
// How many times `needle` occurs in the file.
std::size_t CountInFile(const std::string& path, const std::string& needle);

struct ClusterServerOptions {
  std::string id;
  std::string conninfo;  // --pg
  std::string secret;    // --cluster-secret
  std::string balancer;  // --balancer HOST:PORT, or empty
  std::vector<std::string> extra_args;
};

// One fastchat-server in cluster mode (client and mesh ports picked by the
// system). The constructor waits for the "listening on" line and for the
// mesh listening log line.
class ClusterServer {
 public:
  ClusterServer(const std::string& dir, ClusterServerOptions options);
  ~ClusterServer();
  const ClusterServerOptions& options() const { return options_; }

  const std::string& id() const { return options_.id; }
  std::uint16_t port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::uint16_t mesh_port() const { return mesh_port_; }
  pid_t pid() const { return proc_->pid(); }
  bool Running() { return proc_->Running(); }

  // SIGTERM and wait; returns the exit code. Reads the stats line.
  int Stop();
  // SIGKILL and reap (a crash).
  void Kill();

  const std::string& log_path() const { return stderr_path_; }
  const std::string& stdout_path() const { return stdout_path_; }
  std::string Log() const { return FileText(stderr_path_); }
  std::string LogTail(std::size_t max = 6000) const { return proc_->StderrTail(max); }
  bool WaitLog(const std::string& needle, Millis timeout = kDefaultTimeout) const {
    return WaitForFileText(stderr_path_, needle, timeout);
  }
  bool LogHas(const std::string& needle) const { return Log().find(needle) != std::string::npos; }

  // From the "fastchat-server stats:" line printed at SIGTERM (after Stop).
  struct Stats {
    std::uint64_t frames_handled = 0;
    std::uint64_t deliveries = 0;
  };
  std::optional<Stats> stats() const;

 private:
  ClusterServerOptions options_;
  std::string stdout_path_;
  std::string stderr_path_;
  std::uint16_t port_ = 0;
  std::uint16_t mesh_port_ = 0;
  std::unique_ptr<Process> proc_;
};

// A fastchat-balancer on 127.0.0.1:0.
class BalancerProcess {
 public:
  // `secret` goes in --cluster-secret unless empty; `extra_args` follow.
  BalancerProcess(const std::string& dir, const std::string& secret, int expire_ms,
                  const std::vector<std::string>& extra_args = {});
  ~BalancerProcess();

  std::uint16_t port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int Stop();
  const std::string& log_path() const { return stderr_path_; }
  std::string LogTail(std::size_t max = 6000) const { return proc_->StderrTail(max); }

 private:
  std::string stderr_path_;
  std::uint16_t port_ = 0;
  std::unique_ptr<Process> proc_;
};

// Where a client connects: one server (--server) or the balancer (--balancer).
struct Via {
  std::string flag;     // "--server" or "--balancer"
  std::string address;  // HOST:PORT
};

struct ClusterOptions {
  int servers = 3;
  bool balancer = false;
  int balancer_expire_ms = 1500;
  std::string secret;  // empty: a random one
};

// One test's cluster: temp dir, schema, servers s1..sN (ids "s1", "s2", ...),
// optional balancer, and the users and clients made through it. On
// destruction during a failing test, prints the servers' and balancer's logs.
class Cluster {
 public:
  explicit Cluster(const ClusterOptions& options = {});
  ~Cluster();

  TempDir& tmp() { return tmp_; }
  PgSchema& pg() { return *pg_; }
  const std::string& secret() const { return secret_; }
  std::size_t size() const { return servers_.size(); }
  // 0-based: server(0) is "s1".
  ClusterServer& server(std::size_t i) { return *servers_.at(i); }
  ClusterServer* server_by_id(const std::string& id);
  std::vector<ClusterServer*> servers();
  BalancerProcess& balancer() { return *balancer_; }

  // Starts one more server in the same schema (e.g. with another secret).
  ClusterServer& AddServer(const std::string& id, const std::string& secret, bool report_to_balancer = true,
                           const std::vector<std::string>& extra_args = {});
  // Starts server(i) again with the options it had (after Kill or Stop; a
  // running one is killed first). Its client and mesh ports change; the logs
  // of the earlier run are kept as LOG.1, LOG.2, ...
  ClusterServer& RestartServer(std::size_t i);

  // Waits until every pair of the first `n` servers (default: all started
  // by the constructor) logged "linked to server" for each other.
  void WaitMeshFormed(Millis timeout = kDefaultTimeout);
  // Waits until every server logged its registration with the balancer.
  void WaitRegisteredWithBalancer(Millis timeout = kDefaultTimeout);

  Via At(ClusterServer& s) const { return Via{"--server", s.address()}; }
  Via ViaBalancer() const { return Via{"--balancer", balancer_->address()}; }

  User MakeUser(const std::string& name);
  // `register NAME` through `via`; throws unless it succeeds; sets id.
  User Register(const std::string& name, const Via& via);
  std::vector<std::string> GlobalArgs(const User& u, const Via& via, bool with_user = true) const;
  RunResult Run(const User& u, const Via& via, const std::vector<std::string>& args,
                Millis timeout = Millis(60000));
  // `fastchat ... chat`; waits for "ready" unless wait_ready is false.
  std::unique_ptr<ChatClient> Chat(const User& u, const Via& via, bool wait_ready = true);

  void DumpLogs() const;

 private:
  ClusterOptions options_;
  TempDir tmp_;
  std::unique_ptr<PgSchema> pg_;
  std::string secret_;
  std::unique_ptr<BalancerProcess> balancer_;
  std::vector<std::unique_ptr<ClusterServer>> servers_;
  std::size_t initial_servers_ = 0;
  int counter_ = 0;
};

// a asks b, b accepts; both chats see the outcome.
void BefriendChats(ChatClient& a, const User& ua, ChatClient& b, const User& ub);

// Reads whatever `c` prints within `wait` into its buffer (nothing consumed).
void Pump(ChatClient& c, Millis wait);

}  // namespace fastchat::testing
