#include <algorithm>
#include "harness/fastchat.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace fastchat::testing {
namespace fs = std::filesystem;

namespace {

json ParseLine(const std::string& line) {
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return json{{"type", "_raw"}, {"line", line}};
  }
  return j;
}

std::string FirstWord(const std::string& line) {
  auto b = line.find_first_not_of(' ');
  if (b == std::string::npos) return "";
  auto e = line.find(' ', b);
  return line.substr(b, e == std::string::npos ? std::string::npos : e - b);
}

bool ValueEquals(const json& want, const json& got) {
  if (want.is_number() && got.is_string()) return got.get<std::string>() == want.dump();
  if (want.is_string() && got.is_number()) return want.get<std::string>() == got.dump();
  if (want.is_object() && got.is_object()) {
    for (const auto& [k, v] : want.items()) {
      if (!got.contains(k) || !ValueEquals(v, got.at(k))) return false;
    }
    return true;
  }
  return want == got;
}

std::string Tail(const std::vector<json>& v, std::size_t n) {
  std::string s;
  std::size_t start = v.size() > n ? v.size() - n : 0;
  if (start > 0) s += "    ... (" + std::to_string(start) + " earlier lines)\n";
  for (std::size_t i = start; i < v.size(); ++i) {
    std::string line = v[i].dump();
    if (line.size() > 400) line = line.substr(0, 400) + "...";
    s += "    " + line + "\n";
  }
  return s;
}

}  // namespace

Match Like(json pattern) {
  return [pattern = std::move(pattern)](const json& j) { return ValueEquals(pattern, j); };
}

Match OfType(const std::string& type) { return Like(json{{"type", type}}); }

Match ResultOf(const std::string& cmd) { return Like(json{{"type", "result"}, {"cmd", cmd}}); }

std::uint64_t AsU64(const json& v) {
  if (v.is_number_unsigned()) return v.get<std::uint64_t>();
  if (v.is_number_integer()) return static_cast<std::uint64_t>(v.get<std::int64_t>());
  if (v.is_string()) return std::stoull(v.get<std::string>());
  throw std::runtime_error("not an id: " + v.dump());
}

// ------------------------------------------------------------------ server
std::string ServerProcess::StdoutText() const {
  std::ifstream f(stdout_path_, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

ServerProcess::ServerProcess(const std::string& dir, const ServerOptions& options)
    : dir_(dir), db_path_(options.db_path.empty() ? dir + "/server.db" : options.db_path) {
  SpawnOptions so;
  so.argv = {ServerBinary(), "--listen", "127.0.0.1:0", "--db", db_path_, "--pwhash", options.pwhash,
             "--log-level", options.log_level};
  if (options.max_image_bytes) {
    so.argv.push_back("--max-image-bytes");
    so.argv.push_back(std::to_string(*options.max_image_bytes));
  }
  if (options.max_frame) {
    so.argv.push_back("--max-frame");
    so.argv.push_back(std::to_string(*options.max_frame));
  }
  for (const auto& a : options.limit_args) so.argv.push_back(a);
  for (const auto& a : options.extra_args) so.argv.push_back(a);
  so.argv.insert(so.argv.begin(), options.wrapper.begin(), options.wrapper.end());
  if (const char* wrap = std::getenv("FASTCHAT_SERVER_WRAPPER"); wrap != nullptr && *wrap != '\0') {
    std::istringstream words(wrap);
    std::vector<std::string> prefix;
    for (std::string word; words >> word;) prefix.push_back(word);
    so.argv.insert(so.argv.begin(), prefix.begin(), prefix.end());
  }
  static int n = 0;
  std::string tag = std::to_string(++n);
  so.stdout_path = dir + "/server-" + tag + ".stdout";
  stdout_path_ = so.stdout_path;
  so.stderr_path = dir + "/server-" + tag + ".stderr";
  if (!fs::exists(ServerBinary())) {
    throw std::runtime_error("server binary not found: " + ServerBinary() +
                             " (build target fastchat-server)");
  }
  proc_ = Process::Spawn(so);

  // The first stdout line announces the port.
  static const std::regex kListening(R"(listening on [^ ]*:([0-9]+))");
  auto deadline = Clock::now() + kDefaultTimeout;
  for (;;) {
    std::string out;
    {
      std::ifstream f(so.stdout_path, std::ios::binary);
      std::stringstream ss;
      ss << f.rdbuf();
      out = ss.str();
    }
    // Only complete lines count (the port may be half written). The first
    // line is the server's, unless a wrapper (FASTCHAT_SERVER_WRAPPER, e.g.
    // "valgrind -q" or a debugger) printed before it.
    auto nl = out.rfind('\n');
    std::string first = nl == std::string::npos ? std::string() : out.substr(0, nl);
    std::smatch m;
    if (std::regex_search(first, m, kListening)) {
      port_ = static_cast<std::uint16_t>(std::stoi(m[1].str()));
      if (port_ != 0) break;
    }
    if (!proc_->Running()) {
      throw std::runtime_error("fastchat-server exited with code " +
                               std::to_string(proc_->exit_code().value_or(-1)) +
                               " before listening; command: " + proc_->CommandLine() +
                               "\nstderr:\n" + proc_->StderrTail());
    }
    if (Clock::now() > deadline) {
      throw std::runtime_error("fastchat-server did not print 'listening on' within timeout; stdout: " +
                               out + "\nstderr:\n" + proc_->StderrTail());
    }
    std::this_thread::sleep_for(Millis(5));
  }
}

ServerProcess::~ServerProcess() { Stop(); }

int ServerProcess::Stop() {
  if (auto c = proc_->exit_code()) return *c;
  proc_->Signal(SIGTERM);
  if (auto c = proc_->Wait(Millis(15000))) return *c;
  proc_->Signal(SIGKILL);
  return proc_->Wait(Millis(10000)).value_or(-1);
}

void ServerProcess::Kill() {
  if (proc_->exit_code()) return;
  proc_->Signal(SIGKILL);
  proc_->Wait(Millis(10000));
}

// ------------------------------------------------------------------ ChatClient
ChatClient::ChatClient(std::string label, std::unique_ptr<Process> proc)
    : label_(std::move(label)), proc_(std::move(proc)) {}

ChatClient::~ChatClient() {
  if (::testing::Test::HasFailure()) {
    std::cerr << "---- chat client " << label_ << " at test end:\n" << Diagnostics() << "\n";
  }
  proc_->Stop(Millis(2000));
}

void ChatClient::Send(const std::string& line) {
  if (!proc_->WriteLine(line)) {
    throw std::runtime_error("[" + label_ + "] cannot write '" + line +
                             "' to the client's stdin (exited?)\n" + Diagnostics());
  }
}

bool ChatClient::ReadOne(Millis timeout) {
  if (eof_) return false;
  std::string line;
  switch (proc_->ReadLine(&line, timeout)) {
    case Process::Read::kLine: {
      json j = ParseLine(line);
      history_.push_back(j);
      buffer_.push_back(std::move(j));
      return true;
    }
    case Process::Read::kEof:
      eof_ = true;
      return false;
    case Process::Read::kTimeout:
      return false;
  }
  return false;
}

std::optional<json> ChatClient::TryWaitFor(const Match& m, Millis timeout) {
  auto deadline = Clock::now() + timeout;
  std::size_t scanned = 0;
  for (;;) {
    for (; scanned < buffer_.size(); ++scanned) {
      if (m(buffer_[scanned])) {
        json j = std::move(buffer_[scanned]);
        buffer_.erase(buffer_.begin() + static_cast<std::ptrdiff_t>(scanned));
        return j;
      }
    }
    auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now());
    if (left.count() <= 0 || eof_) return std::nullopt;
    ReadOne(left);
  }
}

json ChatClient::WaitFor(const Match& m, const std::string& what, Millis timeout) {
  auto j = TryWaitFor(m, timeout);
  if (!j) {
    throw std::runtime_error("[" + label_ + "] " +
                             (eof_ ? std::string("client exited") : "timed out after " +
                                                                         std::to_string(timeout.count()) + " ms") +
                             " waiting for " + what + "\n" + Diagnostics());
  }
  return *j;
}

json ChatClient::WaitFor(const Match& m, Millis timeout) {
  return WaitFor(m, "a matching line", timeout);
}

json ChatClient::WaitFor(const std::string& type, Millis timeout) {
  return WaitFor(OfType(type), "{\"type\":\"" + type + "\"}", timeout);
}

json ChatClient::Command(const std::string& line, Millis timeout) {
  Send(line);
  return WaitFor(ResultOf(FirstWord(line)), "result of '" + line + "'", timeout);
}

json ChatClient::CommandOk(const std::string& line, Millis timeout) {
  json r = Command(line, timeout);
  if (!r.value("ok", false)) {
    throw std::runtime_error("[" + label_ + "] command '" + line + "' failed: " + r.dump());
  }
  return r;
}

std::vector<json> ChatClient::TakeBuffered(const Match& m) {
  std::vector<json> out;
  std::vector<json> rest;
  for (auto& j : buffer_) {
    if (m(j)) {
      out.push_back(std::move(j));
    } else {
      rest.push_back(std::move(j));
    }
  }
  buffer_ = std::move(rest);
  return out;
}

int ChatClient::Quit(Millis timeout) {
  proc_->WriteLine("\\q");
  proc_->CloseStdin();
  if (auto c = WaitExit(timeout)) return *c;
  proc_->Stop(Millis(1000));
  return -1;
}

std::optional<int> ChatClient::WaitExit(Millis timeout) {
  auto deadline = Clock::now() + timeout;
  while (!eof_ && Clock::now() < deadline) {
    ReadOne(std::chrono::duration_cast<Millis>(deadline - Clock::now()));
  }
  auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now());
  if (left.count() < 0) left = Millis(0);
  return proc_->Wait(left);
}

std::string ChatClient::Diagnostics() const {
  std::string s = "  command: " + proc_->CommandLine() + "\n";
  if (auto c = proc_->exit_code()) s += "  exit code: " + std::to_string(*c) + "\n";
  s += "  unconsumed output (" + std::to_string(buffer_.size()) + " lines):\n" + Tail(buffer_, 30);
  s += "  all output (" + std::to_string(history_.size()) + " lines, last 15):\n" + Tail(history_, 15);
  s += "  stderr tail:\n" + proc_->StderrTail(3000);
  return s;
}

// ------------------------------------------------------------------ RunResult
json RunResult::result() const {
  for (const auto& j : lines) {
    if (j.value("type", "") == "result") return j;
  }
  return json::object();
}

bool RunResult::ok() const { return exit_code == 0 && result().value("ok", false); }

std::string RunResult::code() const { return result().value("code", ""); }

std::string RunResult::Describe() const {
  std::string o = out.size() > 3000 ? out.substr(0, 3000) + "..." : out;
  return "command: " + command + "\nexit code: " + std::to_string(exit_code) + "\nstdout:\n" + o +
         "stderr:\n" + err;
}

// ------------------------------------------------------------------ World
World::World(const ServerOptions& options) : tmp_("fastchat-it"), options_(options) {
  server_ = std::make_unique<ServerProcess>(tmp_.Sub("server", true), options);
  address_ = server_->address();
}

void World::RestartServer(bool crash) {
  if (crash) {
    server_->Kill();
  } else {
    int code = server_->Stop();
    if (code != 0) {
      throw std::runtime_error("server exited with code " + std::to_string(code) +
                               " on SIGTERM\n" + server_->StderrTail());
    }
  }
  server_ = std::make_unique<ServerProcess>(tmp_.Sub("server"), options_);
  address_ = server_->address();
}

World::~World() {
  if (::testing::Test::HasFailure() && server_) {
    std::cerr << "---- server (" << server_->address() << ") stderr tail:\n"
              << server_->StderrTail() << "\n";
  }
}

void World::RouteClients(std::string address, std::vector<std::string> extra_args) {
  address_ = std::move(address);
  client_extra_args_ = std::move(extra_args);
}

User World::MakeUser(const std::string& name) {
  User u;
  u.name = name;
  u.password = "pw-" + name + "-secret";
  u.home = tmp_.Sub("home-" + name, true);
  u.downloads = tmp_.Sub("downloads-" + name, true);
  return u;
}

std::vector<std::string> World::GlobalArgs(const User& u, std::optional<std::string> login) const {
  std::vector<std::string> a = {ClientBinary(), "--server", address_, "--home",   u.home,
                                "--password",   u.password, "--downloads", u.downloads, "--json",
                                "--kdf",        "min"};
  a.insert(a.end(), client_extra_args_.begin(), client_extra_args_.end());
  std::string who = login ? *login : u.name;
  if (!who.empty()) {
    a.push_back("--user");
    a.push_back(who);
  }
  return a;
}

RunResult RunClientOnce(std::vector<std::string> argv, const std::string& stderr_path, Millis timeout,
                        std::vector<std::pair<std::string, std::string>> env) {
  if (!fs::exists(ClientBinary())) {
    throw std::runtime_error("client binary not found: " + ClientBinary() + " (build target fastchat)");
  }
  SpawnOptions so;
  so.argv = std::move(argv);
  so.env = std::move(env);
  so.stderr_path = stderr_path;
  auto p = Process::Spawn(so);
  p->CloseStdin();
  RunResult r;
  r.command = p->CommandLine();
  bool timed_out = false;
  r.out = p->ReadToEof(timeout, &timed_out);
  if (timed_out) {
    p->Stop(Millis(500));
    r.err = p->StderrTail();
    throw std::runtime_error("one-shot command timed out\n" + r.Describe());
  }
  r.exit_code = p->Wait(Millis(10000)).value_or(-1);
  r.err = p->StderrTail();
  std::istringstream in(r.out);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    r.lines.push_back(ParseLine(line));
  }
  return r;
}

RunResult World::Run(const User& u, const std::vector<std::string>& args, Millis timeout,
                     std::optional<std::string> login) {
  std::vector<std::string> argv = GlobalArgs(u, login);
  argv.insert(argv.end(), args.begin(), args.end());
  return RunClientOnce(std::move(argv), tmp_.Sub("run-" + std::to_string(++counter_) + ".stderr"), timeout);
}

std::string Str(const json& j, const char* key) {
  if (!j.contains(key)) return "";
  return j[key].is_string() ? j[key].get<std::string>() : j[key].dump();
}

Match Msg(const std::string& from, const std::string& text) {
  return Like({{"type", "message"}, {"from", from}, {"text", text}});
}

Match GroupMsg(std::uint64_t gid, const std::string& from, const std::string& text) {
  return Like({{"type", "group_message"}, {"group_id", gid}, {"from", from}, {"text", text}});
}

Match GroupKey(std::uint64_t gid, std::uint64_t epoch) {
  return Like({{"type", "group_key"}, {"group_id", gid}, {"epoch", epoch}});
}

std::vector<std::string> Names(const json& list) {
  std::vector<std::string> out;
  if (!list.is_array()) return out;
  for (const auto& e : list) out.push_back(e.value("name", ""));
  std::sort(out.begin(), out.end());
  return out;
}

json World::RunOk(const User& u, const std::vector<std::string>& args, Millis timeout) {
  RunResult r = Run(u, args, timeout);
  if (!r.ok()) throw std::runtime_error("one-shot command failed\n" + r.Describe());
  return r.result();
}

User World::Register(const std::string& name) {
  User u = MakeUser(name);
  RunResult r = Run(u, {"register", name}, Millis(60000), std::string());
  if (!r.ok() || !r.result().contains("user_id")) {
    throw std::runtime_error("register " + name + " failed\n" + r.Describe());
  }
  u.id = AsU64(r.result()["user_id"]);
  return u;
}

std::unique_ptr<ChatClient> World::Chat(const User& u, bool wait_ready,
                                        const std::vector<std::string>& extra,
                                        std::optional<std::string> login) {
  if (!fs::exists(ClientBinary())) {
    throw std::runtime_error("client binary not found: " + ClientBinary() + " (build target fastchat)");
  }
  SpawnOptions so;
  so.argv = GlobalArgs(u, login);
  for (const auto& a : extra) so.argv.push_back(a);
  so.argv.push_back("chat");
  std::string label = u.name + "#" + std::to_string(++counter_);
  so.stderr_path = tmp_.Sub("chat-" + label + ".stderr");
  auto c = std::make_unique<ChatClient>(label, Process::Spawn(so));
  if (wait_ready) c->WaitFor("ready");
  return c;
}

void World::MakeFriends(ChatClient& a, const User& ua, ChatClient& b, const User& ub) {
  a.CommandOk("add_friend " + ub.name);
  b.WaitFor(Like({{"type", "friend_request"}, {"from", ua.name}}), "friend_request from " + ua.name);
  b.CommandOk("accept " + ua.name);
  a.WaitFor(Like({{"type", "friend_accepted"}, {"from", ub.name}}),
            "friend_accepted from " + ub.name);
}

// ------------------------------------------------------------------ files
bool SameFile(const std::string& a, const std::string& b, std::string* why) {
  std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
  if (!fa) {
    *why = "cannot open " + a;
    return false;
  }
  if (!fb) {
    *why = "cannot open " + b;
    return false;
  }
  std::error_code ec1, ec2;
  auto sa = fs::file_size(a, ec1), sb = fs::file_size(b, ec2);
  if (sa != sb) {
    *why = "sizes differ: " + std::to_string(sa) + " vs " + std::to_string(sb);
    return false;
  }
  std::vector<char> ba(1 << 20), bb(1 << 20);
  std::uint64_t off = 0;
  for (;;) {
    fa.read(ba.data(), static_cast<std::streamsize>(ba.size()));
    fb.read(bb.data(), static_cast<std::streamsize>(bb.size()));
    auto na = fa.gcount(), nb = fb.gcount();
    if (na != nb) {
      *why = "read lengths differ at offset " + std::to_string(off);
      return false;
    }
    if (na == 0) return true;
    for (std::streamsize i = 0; i < na; ++i) {
      if (ba[static_cast<std::size_t>(i)] != bb[static_cast<std::size_t>(i)]) {
        *why = "first difference at byte " + std::to_string(off + static_cast<std::uint64_t>(i));
        return false;
      }
    }
    off += static_cast<std::uint64_t>(na);
  }
}

bool IsInside(const std::string& dir, const std::string& path) {
  std::error_code ec;
  fs::path d = fs::weakly_canonical(dir, ec);
  fs::path p = fs::weakly_canonical(path, ec);
  auto rel = p.lexically_relative(d);
  if (rel.empty()) return false;
  auto first = *rel.begin();
  return first != ".." && first != ".";
}

}  // namespace fastchat::testing
