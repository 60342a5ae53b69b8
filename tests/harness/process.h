// Test harness: child processes with piped stdin/stdout, temporary
// directories, and where to find the binaries under test.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fastchat::testing {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

// Generous default for "this event should happen": tests finish fast when
// things work and fail (rather than hang) when they don't.
inline constexpr Millis kDefaultTimeout{20000};

// True in a sanitizer build (the asan and tsan presets). Then every child
// started by Process::Spawn writes its sanitizer reports to a folder of its
// own (UBSan's: to its stderr, then a file even if the test gave none), and
// a report fails the current test once the child is reaped (Wait, Stop or
// the destructor), whatever its exit status. (And a program's memory use
// there is mostly the sanitizer's: shadow memory, freed memory held back.)
bool IsSanitizerBuild();

// Directory holding the build tree (env FASTCHAT_BIN_DIR, set by ctest;
// otherwise derived from this executable's location: <build>/tests/<exe>).
std::string BinDir();
std::string ServerBinary();  // <bin>/src/server/fastchat-server
std::string ClientBinary();  // <bin>/src/client/fastchat

// A directory made with mkdtemp and removed (recursively) on destruction,
// unless the environment variable FASTCHAT_KEEP_TMP is set.
class TempDir {
 public:
  explicit TempDir(std::string_view prefix = "fastchat-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path()/name; creates it as a directory if `mkdir` is set.
  std::string Sub(std::string_view name, bool mkdir = false) const;

 private:
  std::string path_;
};

struct SpawnOptions {
  std::vector<std::string> argv;  // argv[0] is the program path
  // Added to (or overriding) the parent's environment.
  std::vector<std::pair<std::string, std::string>> env;
  std::string cwd;          // empty: inherit
  std::string stderr_path;  // empty: /dev/null
  std::string stdout_path;  // empty: a pipe readable with ReadLine()
};

// A child process. Its stdin is a pipe (WriteLine/CloseStdin); its stdout is a
// pipe (ReadLine) unless redirected to a file; its stderr goes to a file. The
// destructor stops (close stdin, SIGTERM, SIGKILL) and reaps it.
class Process {
 public:
  // Throws std::runtime_error if the program cannot be started.
  static std::unique_ptr<Process> Spawn(const SpawnOptions& options);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  const std::vector<std::string>& argv() const { return argv_; }
  std::string CommandLine() const;

  enum class Read { kLine, kTimeout, kEof };
  // Reads one line of stdout (without the '\n'), waiting up to `timeout`.
  Read ReadLine(std::string* line, Millis timeout);
  // Everything left on stdout until EOF (or the deadline; then *timed_out).
  std::string ReadToEof(Millis timeout, bool* timed_out);

  // Writes line + '\n' to stdin. False if the child closed its stdin.
  bool WriteLine(std::string_view line);
  void CloseStdin();

  void Signal(int sig);
  // Waits for the exit, up to `timeout`. Returns the exit code (128 + signal
  // number if killed by a signal), or nullopt if still running.
  std::optional<int> Wait(Millis timeout);
  bool Running();
  std::optional<int> exit_code() const { return exit_code_; }
  // Close stdin, wait up to `grace`; SIGTERM, wait; SIGKILL. Returns exit code.
  int Stop(Millis grace = Millis(3000));

  const std::string& stderr_path() const { return stderr_path_; }
  // The last `max` bytes written to stderr.
  std::string StderrTail(std::size_t max = 6000) const;

 private:
  Process() = default;

  pid_t pid_ = -1;
  int stdin_fd_ = -1;
  int stdout_fd_ = -1;
  bool stdout_eof_ = false;
  std::string out_buf_;
  std::optional<int> exit_code_;
  std::vector<std::string> argv_;
  std::string stderr_path_;
  // Sanitizer builds: where the child writes its sanitizer reports (empty
  // once checked, and in other builds), and its stderr file.
  std::string sanitizer_report_dir_;
  std::string sanitizer_stderr_path_;

  void Reaped();  // the child is gone: fail the test on its sanitizer reports
};

// Reads a whole file (binary). Throws if it cannot be opened.
std::string ReadFile(const std::string& path);
void WriteFile(const std::string& path, std::string_view data);
// Random bytes from std::random_device-seeded mt19937_64 (not for crypto).
std::string RandomBytes(std::size_t n);
// A random lower-case alphanumeric token.
std::string RandomToken(std::size_t n = 10);

}  // namespace fastchat::testing
