#include "harness/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <gtest/gtest.h>

extern char** environ;

namespace fastchat::testing {
namespace fs = std::filesystem;

namespace {

void IgnoreSigpipeOnce() {
  static std::once_flag once;
  std::call_once(once, [] { ::signal(SIGPIPE, SIG_IGN); });
}

[[noreturn]] void Fail(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

// Sanitizer builds: each child writes its ASan, LSan and TSan reports to a
// folder of its own instead of its stderr (which tests may send to
// /dev/null), and its stderr goes to a file (there, unless the test names
// one). Once the child is reaped, any report in the folder, or a UBSan
// "runtime error:" in its stderr, fails the current test with the report in
// the failure message, whatever the child's exit status (tests often do not
// check it: a client expected to fail, a server stopped with SIGTERM).
// UBSan is read from stderr because GCC's shared UBSan runtime beside ASan's
// ignores log_path (libasan's __sanitizer_set_report_path interposes it).
#ifdef FASTCHAT_SANITIZED
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

// The folder for all children of this test program, made on first use and
// removed at exit if nothing was left in it.
const std::string& SanitizerReportRoot() {
  static const std::string root = [] {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl =
        std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/fastchat-sanitizer-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) Fail("mkdtemp " + tmpl);
    std::string dir = buf.data();
    static const std::string to_remove = dir;
    std::atexit([] {
      std::error_code ec;
      fs::remove(to_remove, ec);  // only if empty
    });
    return dir;
  }();
  return root;
}

std::string FileContents(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Fails the current test once with every report in `dir` (a child may write
// several: its own and a descendant's) and any UBSan report in the child's
// stderr file `stderr_path`, then removes `dir`.
void ReportSanitizerFindings(const std::string& dir, const std::string& stderr_path, const std::string& command) {
  std::error_code ec;
  std::string reports;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().filename() == "stderr") continue;
    reports += "--- " + entry.path().filename().string() + ":\n" + FileContents(entry.path());
  }
  const std::string err = FileContents(stderr_path);
  if (auto at = err.find(": runtime error: "); at != std::string::npos) {
    std::size_t line = err.rfind('\n', at);
    line = line == std::string::npos ? 0 : line + 1;
    reports += "--- UBSan, in stderr " + stderr_path + ":\n" + err.substr(line, 8000);
  }
  if (!reports.empty()) ADD_FAILURE() << "sanitizer report from a child process of: " << command << "\n" << reports;
  fs::remove_all(dir, ec);
}

}  // namespace

bool IsSanitizerBuild() { return kSanitized; }

std::string BinDir() {
  if (const char* env = std::getenv("FASTCHAT_BIN_DIR"); env != nullptr && *env != '\0') {
    return env;
  }
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return ".";
  // <build>/tests/<exe>
  return exe.parent_path().parent_path().string();
}

std::string ServerBinary() { return BinDir() + "/src/server/fastchat-server"; }
std::string ClientBinary() { return BinDir() + "/src/client/fastchat"; }

// ------------------------------------------------------------------ TempDir
TempDir::TempDir(std::string_view prefix) {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/" +
                     std::string(prefix) + "-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) Fail("mkdtemp " + tmpl);
  path_ = buf.data();
}

TempDir::~TempDir() {
  if (std::getenv("FASTCHAT_KEEP_TMP") != nullptr) return;
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::string TempDir::Sub(std::string_view name, bool mkdir) const {
  std::string p = path_ + "/" + std::string(name);
  if (mkdir) {
    std::error_code ec;
    fs::create_directories(p, ec);
    if (ec) throw std::runtime_error("mkdir " + p + ": " + ec.message());
  }
  return p;
}

// ------------------------------------------------------------------ Process
std::unique_ptr<Process> Process::Spawn(const SpawnOptions& o) {
  IgnoreSigpipeOnce();
  if (o.argv.empty()) throw std::runtime_error("Spawn: empty argv");
  std::string report_dir;  // sanitizer builds: this child's reports
  if (kSanitized) {
    static std::atomic<unsigned> spawned{0};
    report_dir = SanitizerReportRoot() + "/" + std::to_string(++spawned);
    std::error_code ec;
    fs::create_directory(report_dir, ec);
    if (ec) throw std::runtime_error("mkdir " + report_dir + ": " + ec.message());
  }

  int in[2] = {-1, -1};
  int out[2] = {-1, -1};
  if (::pipe2(in, O_CLOEXEC) != 0) Fail("pipe2");
  bool out_pipe = o.stdout_path.empty();
  if (out_pipe && ::pipe2(out, O_CLOEXEC) != 0) Fail("pipe2");

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  if (out_pipe) {
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  } else {
    posix_spawn_file_actions_addopen(&fa, 1, o.stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
  }
  std::string err_path = !o.stderr_path.empty() ? o.stderr_path
                         : kSanitized           ? report_dir + "/stderr"
                                                : "/dev/null";
  posix_spawn_file_actions_addopen(&fa, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (!o.cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, o.cwd.c_str());

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t def;
  sigemptyset(&def);
  sigaddset(&def, SIGPIPE);  // we ignore it; the child should not inherit that
  posix_spawnattr_setsigdefault(&attr, &def);
  sigset_t mask;
  sigemptyset(&mask);
  posix_spawnattr_setsigmask(&attr, &mask);
  posix_spawnattr_setflags(&attr, static_cast<short>(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK));

  // Environment: parent's, with overrides.
  std::vector<std::string> env_strings;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view kv(*e);
    bool overridden = false;
    for (const auto& [k, v] : o.env) {
      if (kv.size() > k.size() && kv.substr(0, k.size()) == k && kv[k.size()] == '=') {
        overridden = true;
      }
    }
    if (!overridden) env_strings.emplace_back(kv);
  }
  for (const auto& [k, v] : o.env) env_strings.push_back(k + "=" + v);
  if (kSanitized) {
    // The last log_path in an options variable wins; each runtime reads its
    // own variable (ASan and LSan: ASAN_OPTIONS, UBSan: UBSAN_OPTIONS, TSan:
    // TSAN_OPTIONS) and gets its own file name. Other options (the test
    // preset's) are kept.
    for (const char* var : {"ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS"}) {
      std::string prefix = std::string(var) + "=";
      std::string name(var, std::string_view(var).find('_'));  // ASAN, UBSAN, TSAN
      std::string value;
      for (auto it = env_strings.begin(); it != env_strings.end(); ++it) {
        if (it->rfind(prefix, 0) == 0) {
          value = it->substr(prefix.size()) + ":";
          env_strings.erase(it);
          break;
        }
      }
      env_strings.push_back(prefix + value + "log_path=" + report_dir + "/" + name);
    }
  }
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);

  std::vector<std::string> args = o.argv;
  std::vector<char*> argvp;
  for (auto& s : args) argvp.push_back(s.data());
  argvp.push_back(nullptr);

  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, args[0].c_str(), &fa, &attr, argvp.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(in[0]);
  if (out_pipe) ::close(out[1]);
  if (rc != 0) {
    ::close(in[1]);
    if (out_pipe) ::close(out[0]);
    errno = rc;
    if (!report_dir.empty()) {
      std::error_code ec;
      fs::remove_all(report_dir, ec);
    }
    Fail("posix_spawnp " + args[0]);
  }

  std::unique_ptr<Process> p(new Process());
  p->pid_ = pid;
  p->stdin_fd_ = in[1];
  p->stdout_fd_ = out_pipe ? out[0] : -1;
  p->stdout_eof_ = !out_pipe;
  p->argv_ = o.argv;
  p->stderr_path_ = o.stderr_path;
  p->sanitizer_report_dir_ = std::move(report_dir);
  p->sanitizer_stderr_path_ = std::move(err_path);
  return p;
}

Process::~Process() {
  Stop(Millis(2000));
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
}

std::string Process::CommandLine() const {
  std::string s;
  for (const auto& a : argv_) {
    if (!s.empty()) s += ' ';
    bool quote = a.empty() || a.find_first_of(" \t'\"$;&|<>()*?\\") != std::string::npos;
    if (quote) {
      s += '\'';
      for (char c : a) {
        if (c == '\'') {
          s += "'\\''";
        } else {
          s += c;
        }
      }
      s += '\'';
    } else {
      s += a;
    }
  }
  return s;
}

Process::Read Process::ReadLine(std::string* line, Millis timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    if (auto nl = out_buf_.find('\n'); nl != std::string::npos) {
      line->assign(out_buf_, 0, nl);
      out_buf_.erase(0, nl + 1);
      return Read::kLine;
    }
    if (stdout_eof_) {
      if (!out_buf_.empty()) {
        *line = std::move(out_buf_);
        out_buf_.clear();
        return Read::kLine;
      }
      return Read::kEof;
    }
    auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now()).count();
    if (left < 0) left = 0;
    pollfd pfd{stdout_fd_, POLLIN, 0};
    int n = ::poll(&pfd, 1, static_cast<int>(left));
    if (n < 0) {
      if (errno == EINTR) continue;
      Fail("poll");
    }
    if (n == 0) return Read::kTimeout;
    char buf[65536];
    ssize_t r = ::read(stdout_fd_, buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      stdout_eof_ = true;
    } else if (r == 0) {
      stdout_eof_ = true;
    } else {
      out_buf_.append(buf, static_cast<std::size_t>(r));
    }
  }
}

std::string Process::ReadToEof(Millis timeout, bool* timed_out) {
  auto deadline = Clock::now() + timeout;
  std::string all;
  *timed_out = false;
  for (;;) {
    std::string line;
    auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now());
    if (left.count() < 0) left = Millis(0);
    Read r = ReadLine(&line, left);
    if (r == Read::kEof) return all;
    if (r == Read::kTimeout) {
      *timed_out = true;
      return all;
    }
    all += line;
    all += '\n';
  }
}

bool Process::WriteLine(std::string_view line) {
  if (stdin_fd_ < 0) return false;
  std::string data(line);
  data += '\n';
  std::size_t off = 0;
  while (off < data.size()) {
    ssize_t w = ::write(stdin_fd_, data.data() + off, data.size() - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    off += static_cast<std::size_t>(w);
  }
  return true;
}

void Process::CloseStdin() {
  if (stdin_fd_ >= 0) {
    ::close(stdin_fd_);
    stdin_fd_ = -1;
  }
}

void Process::Signal(int sig) {
  if (pid_ > 0 && !exit_code_) ::kill(pid_, sig);
}

std::optional<int> Process::Wait(Millis timeout) {
  if (exit_code_ || pid_ <= 0) return exit_code_;
  auto deadline = Clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      if (WIFEXITED(status)) {
        exit_code_ = WEXITSTATUS(status);
      } else if (WIFSIGNALED(status)) {
        exit_code_ = 128 + WTERMSIG(status);
      } else {
        continue;
      }
      Reaped();
      return exit_code_;
    }
    if (r < 0 && errno != EINTR) {
      exit_code_ = -1;
      Reaped();
      return exit_code_;
    }
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(Millis(3));
  }
}

void Process::Reaped() {
  if (sanitizer_report_dir_.empty()) return;
  std::string dir = std::move(sanitizer_report_dir_);
  sanitizer_report_dir_.clear();
  ReportSanitizerFindings(dir, sanitizer_stderr_path_, CommandLine());
}

bool Process::Running() { return !Wait(Millis(0)).has_value(); }

int Process::Stop(Millis grace) {
  if (pid_ <= 0) return -1;
  if (exit_code_) return *exit_code_;
  CloseStdin();
  if (auto c = Wait(grace)) return *c;
  Signal(SIGTERM);
  if (auto c = Wait(grace)) return *c;
  Signal(SIGKILL);
  if (auto c = Wait(Millis(10000))) return *c;
  return -1;
}

std::string Process::StderrTail(std::size_t max) const {
  if (stderr_path_.empty()) return "";
  std::ifstream f(stderr_path_, std::ios::binary);
  if (!f) return "(no stderr file " + stderr_path_ + ")";
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  if (s.size() > max) s = "..." + s.substr(s.size() - max);
  return s;
}

// ------------------------------------------------------------------ files
std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, std::string_view data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw std::runtime_error("cannot create " + path);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

std::string RandomBytes(std::size_t n) {
  static std::mt19937_64 rng{std::random_device{}()};
  std::string s(n, '\0');
  std::size_t i = 0;
  while (i + 8 <= n) {
    std::uint64_t v = rng();
    std::memcpy(s.data() + i, &v, 8);
    i += 8;
  }
  while (i < n) s[i++] = static_cast<char>(rng() & 0xff);
  return s;
}

std::string RandomToken(std::size_t n) {
  static std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string s;
  for (std::size_t i = 0; i < n; ++i) s += kChars[rng() % (sizeof kChars - 1)];
  return s;
}

}  // namespace fastchat::testing
