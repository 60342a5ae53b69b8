// Test harness: a real fastchat-server process and fastchat client
// processes in --json mode.
//
// Helpers throw std::runtime_error (with the relevant process output) when a
// process misbehaves or an awaited event does not come; GoogleTest reports
// such an exception as a test failure.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness/process.h"

namespace fastchat::testing {

using json = nlohmann::json;

// ------------------------------------------------------------------ server
struct ServerOptions {
  std::string pwhash = "min";  // --pwhash
  // Put before the server's command line (e.g. {"sh", "-c", "ulimit -n 200; exec \"$0\" \"$@\""}).
  std::vector<std::string> wrapper;
  std::optional<std::uint64_t> max_image_bytes;
  std::optional<std::uint32_t> max_frame;
  std::string log_level = "warn";
  std::string db_path;  // empty: <dir>/server.db
  // Limits relaxed for tests of other things: every test client registers
  // from 127.0.0.1. Tests of limits set their own (tests/limits_test.cc).
  std::vector<std::string> limit_args = {"--registrations-per-ip", "0"};
  std::vector<std::string> extra_args;
};

class ServerProcess {
 public:
  // Starts fastchat-server on 127.0.0.1:0 with its database in `dir` (or
  // at options.db_path) and its output in `dir`, and waits for its
  // "listening on" line. Throws on failure.
  ServerProcess(const std::string& dir, const ServerOptions& options);
  ~ServerProcess();

  std::uint16_t port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  const std::string& db_path() const { return db_path_; }
  const std::string& dir() const { return dir_; }

  bool Running() { return proc_->Running(); }
  pid_t pid() const { return proc_->pid(); }
  // SIGTERM and wait; returns the exit code.
  int Stop();
  // SIGKILL (a crash) and reap.
  void Kill();
  std::string StderrTail(std::size_t max = 6000) const { return proc_->StderrTail(max); }
  const std::string& log_path() const { return proc_->stderr_path(); }
  // The server's standard output so far.
  std::string StdoutText() const;

 private:
  std::string dir_;
  std::string db_path_;
  std::string stdout_path_;
  std::uint16_t port_ = 0;
  std::unique_ptr<Process> proc_;
};

// ------------------------------------------------------------------ client
// A user's client-side state: home (keys), downloads folder, credentials.
struct User {
  std::string name;
  std::string password;
  std::string home;
  std::string downloads;
  std::uint64_t id = 0;  // set by World::Register

  std::string id_str() const { return std::to_string(id); }
};

// Predicate over one JSON output line.
using Match = std::function<bool(const json&)>;
// Every key of `pattern` is present in the line with an equal value
// (numbers compare by value; a number and a decimal string of it are equal,
// so ids may be printed either way).
Match Like(json pattern);
Match OfType(const std::string& type);
// A command outcome for command `cmd` (the first word of the command line).
Match ResultOf(const std::string& cmd);

// Numeric value of an id field printed as number or decimal string.
std::uint64_t AsU64(const json& v);

// A `fastchat ... --json chat` process.
class ChatClient {
 public:
  ChatClient(std::string label, std::unique_ptr<Process> proc);
  ~ChatClient();

  const std::string& label() const { return label_; }
  Process& process() { return *proc_; }

  // Writes one command line to the client's stdin.
  void Send(const std::string& line);

  // Returns the first output line (buffered or new) matching `m`, removing it
  // from the buffer; lines that do not match stay buffered for later waits.
  // Throws (with diagnostics) on timeout or if the client exits first.
  json WaitFor(const Match& m, const std::string& what, Millis timeout = kDefaultTimeout);
  json WaitFor(const Match& m, Millis timeout = kDefaultTimeout);
  json WaitFor(const std::string& type, Millis timeout = kDefaultTimeout);
  std::optional<json> TryWaitFor(const Match& m, Millis timeout);

  // Send + wait for its {"type":"result","cmd":<first word>}.
  json Command(const std::string& line, Millis timeout = kDefaultTimeout);
  // Like Command, but throws unless "ok" is true.
  json CommandOk(const std::string& line, Millis timeout = kDefaultTimeout);

  // Lines received so far but not consumed by a wait.
  const std::vector<json>& buffered() const { return buffer_; }
  // Removes and returns the buffered lines matching `m`.
  std::vector<json> TakeBuffered(const Match& m);
  // Every line ever read, in order.
  const std::vector<json>& history() const { return history_; }

  // Sends "\q", closes stdin, waits for exit; reads remaining output into
  // the buffer. Returns the exit code (or -1 if it had to be killed).
  int Quit(Millis timeout = Millis(10000));
  // Waits for the process to exit by itself (reading its output).
  std::optional<int> WaitExit(Millis timeout);

  std::string Diagnostics() const;

 private:
  bool ReadOne(Millis timeout);  // false on timeout or EOF

  std::string label_;
  std::unique_ptr<Process> proc_;
  std::vector<json> buffer_;
  std::vector<json> history_;
  bool eof_ = false;
};

// Output of a one-shot client run.
struct RunResult {
  int exit_code = -1;
  std::vector<json> lines;  // stdout lines that parsed as JSON
  std::string out;          // raw stdout
  std::string err;          // stderr tail
  std::string command;      // shell-quoted command line

  // The first {"type":"result"} line, or an empty object.
  json result() const;
  bool ok() const;                 // exit 0 and result.ok == true
  std::string code() const;        // result.code or ""
  std::string Describe() const;    // for failure messages
};

// Runs the client binary once with `argv` (argv[0] is the binary), stdin
// closed, and `env` added to the environment, and collects its output;
// throws if it runs past `timeout`.
RunResult RunClientOnce(std::vector<std::string> argv, const std::string& stderr_path, Millis timeout,
                        std::vector<std::pair<std::string, std::string>> env = {});

// Helpers for reading client events.
// j[key] as a string ("" if absent; non-strings dumped).
std::string Str(const json& j, const char* key);
// Matchers for an incoming direct message, group message and group key.
Match Msg(const std::string& from, const std::string& text);
Match GroupMsg(std::uint64_t gid, const std::string& from, const std::string& text);
Match GroupKey(std::uint64_t gid, std::uint64_t epoch);
// The sorted "name" fields of a JSON array of {id, name} objects.
std::vector<std::string> Names(const json& list);

// ------------------------------------------------------------------ world
// One test's universe: a temp dir, a server, and the users and client
// processes created through it. On destruction during a failing test, prints
// the server's and clients' output.
class World {
 public:
  explicit World(const ServerOptions& options = {});
  ~World();

  ServerProcess& server() { return *server_; }
  TempDir& tmp() { return tmp_; }
  const std::string& server_address() const { return address_; }
  // Clients made from now on dial `address` (e.g. a Relay) and get
  // `extra_args` among their global options.
  void RouteClients(std::string address, std::vector<std::string> extra_args = {});
  // Stops the server (SIGTERM, or SIGKILL if `crash`) and starts a new one
  // on the same database; later clients use its new port.
  void RestartServer(bool crash);

  // A user with fresh home/downloads directories (not registered).
  User MakeUser(const std::string& name);
  // MakeUser + `register NAME`; throws unless it succeeds; sets id.
  User Register(const std::string& name);

  // Global options for `u` (server, home, downloads, password, json, kdf)
  // with --user set to `login` (empty: none; default: u.name).
  std::vector<std::string> GlobalArgs(const User& u, std::optional<std::string> login = {}) const;

  // Runs `fastchat <globals> args...` to completion.
  RunResult Run(const User& u, const std::vector<std::string>& args,
                Millis timeout = Millis(60000), std::optional<std::string> login = {});
  // Like Run but throws unless the outcome is ok.
  json RunOk(const User& u, const std::vector<std::string>& args, Millis timeout = Millis(60000));

  // Starts `fastchat <globals> [extra...] chat`; waits for "ready" unless
  // wait_ready is false.
  std::unique_ptr<ChatClient> Chat(const User& u, bool wait_ready = true,
                                   const std::vector<std::string>& extra = {},
                                   std::optional<std::string> login = {});

  // a asks b, b accepts; both chats see the outcome (so both hold the key).
  void MakeFriends(ChatClient& a, const User& ua, ChatClient& b, const User& ub);

 private:
  TempDir tmp_;
  ServerOptions options_;
  std::unique_ptr<ServerProcess> server_;
  std::string address_;
  std::vector<std::string> client_extra_args_;
  int counter_ = 0;
  std::vector<std::string> stderr_files_;
};

// Byte-for-byte equality of two files (streaming; reports the first
// difference in *why).
bool SameFile(const std::string& a, const std::string& b, std::string* why);
bool IsInside(const std::string& dir, const std::string& path);

}  // namespace fastchat::testing
