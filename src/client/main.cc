// fastchat: the FastChat command-line client.
//
//   fastchat [options] register NAME | chat | listen | pending
//   fastchat [options] <command> [ARGS...]   (one-shot; "--" ends the options)
//   fastchat help [COMMAND]
//   fastchat [options] decrypt-frames FILE
//
// Everything runs on one thread: one io_context, C++20 coroutines.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/read_until.hpp>
#include <asio/redirect_error.hpp>
#include <asio/signal_set.hpp>
#include <asio/streambuf.hpp>
#include <asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <termios.h>
#include <unistd.h>

#include "client.h"
#include "common/private_files.h"
#include "commands.h"
#include "fastchat/crypto.h"
#include "line_editor.h"
#include "log_sink.h"
#include "net/tls.h"
#include "output.h"
#include "reconnect.h"

namespace fc = fastchat::client;
using asio::awaitable;

namespace {

// Logging from coroutines goes through a plain function (GCC 12 and fmt's
// compile-time format strings, see client_impl.h).
void Warn(const std::string& m) { spdlog::warn("{}", m); }

// Reads a password from the terminal without echo.
bool PromptPassword(const std::string& prompt, std::string* out) {
  std::fprintf(stderr, "%s", prompt.c_str());
  std::fflush(stderr);
  termios old{};
  bool restore = tcgetattr(STDIN_FILENO, &old) == 0;
  if (restore) {
    termios quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
  }
  out->clear();
  char c;
  bool got = false;
  while (::read(STDIN_FILENO, &c, 1) == 1) {
    got = true;
    if (c == '\n') break;
    out->push_back(c);
  }
  if (restore) tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
  std::fprintf(stderr, "\n");
  return got;
}

// Lines from stdin: asynchronous for pipes and terminals, plain blocking
// reads for files and /dev/null (which epoll cannot watch).
class StdinLines {
 public:
  explicit StdinLines(asio::io_context& ioc) : desc_(ioc) {
    std::error_code ec;
    int fd = ::dup(STDIN_FILENO);
    if (fd >= 0) {
      desc_.assign(fd, ec);
      if (ec) {
        ::close(fd);
      } else {
        async_ = true;
      }
    }
  }

  // Returns false at end of input.
  awaitable<bool> Next(std::string* line) {
    if (!async_) {
      if (!std::getline(std::cin, *line)) co_return false;
      co_return true;
    }
    std::error_code ec;
    std::size_t n = co_await asio::async_read_until(desc_, asio::dynamic_buffer(buf_), '\n',
                                                    asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (buf_.empty()) co_return false;
      *line = std::move(buf_);  // last line without a newline
      buf_.clear();
      co_return true;
    }
    *line = buf_.substr(0, n);
    buf_.erase(0, n);
    co_return true;
  }

  void Cancel() {
    std::error_code ec;
    if (async_) desc_.close(ec);
  }

 private:
  asio::posix::stream_descriptor desc_;
  bool async_ = false;
  std::string buf_;
};

struct App {
  asio::io_context ioc;
  fc::LogLines* log_lines = nullptr;  // the log on stderr (log_sink.h)
  fc::ClientConfig cfg;
  bool json = false;
  std::unique_ptr<fc::Output> out;
  std::unique_ptr<fc::ClientCore> core;
  int rc = 1;

  void WatchSignals() {
    auto signals = std::make_shared<asio::signal_set>(ioc, SIGINT, SIGTERM);
    signals->async_wait([this, signals](std::error_code ec, int) {
      if (ec) return;
      asio::co_spawn(ioc, core->Shutdown(), asio::detached);
    });
  }

  // Emits cmd's result line (ok with the `extra` fields, or the error) and sets rc.
  void Finish(const std::string& cmd, const fc::Outcome& o, const fc::Json& extra) {
    if (!o.ok()) {
      fc::EmitError(*out, cmd, o.code, o.message);
      rc = 1;
      return;
    }
    fc::Json r = {{"type", "result"}, {"cmd", cmd}, {"ok", true}};
    for (auto it = extra.begin(); it != extra.end(); ++it) r[it.key()] = it.value();
    out->Emit(r);
    rc = 0;
  }

  awaitable<void> Register(std::string name) {
    fc::Json extra = fc::Json::object();
    fc::Outcome o = co_await core->Register(name, &extra);
    Finish("register", o, extra);
    co_await core->Shutdown();
  }

  // Opens the store and logs in; emits an error result for `cmd` on failure.
  awaitable<bool> Start(std::string cmd, fc::SessionMode mode) {
    fc::Outcome o = core->OpenStore();
    if (o.code == fc::kCodeNoStore) {
      // No keys here for that user: if the server does not know the user (or
      // the password) either, say so the way the server does.
      fc::Outcome probe = co_await core->ProbeLogin();
      if (probe.code == "BAD_CREDENTIALS") o = probe;
    } else if (o.ok()) {
      o = co_await core->Login(mode);
    }
    if (!o.ok()) {
      fc::EmitError(*out, cmd, o.code, o.message);
      co_return false;
    }
    co_return true;
  }

  awaitable<void> OneShot(fc::Command cmd) {
    bool started = false;
    if (fc::IsLocalCommand(cmd.name)) {
      // history, search: the local store is all they read.
      fc::Outcome o = core->OpenStore();
      if (!o.ok()) fc::EmitError(*out, cmd.name, o.code, o.message);
      started = o.ok();
    } else {
      started = co_await Start(cmd.name, fc::SessionMode::kOneShot);
      if (started) {
        // First what is waiting for this command (a friend's answer and key,
        // a group key, receipts), without displacing a running chat or listen.
        fc::Outcome taken = co_await core->TakePending(true);
        if (!taken.ok() && taken.code != "BAD_REQUEST")
          Warn("could not fetch what was waiting: " + taken.code + ": " + taken.message);
      }
    }
    if (started) {
      bool ok = co_await fc::RunCommand(*core, *out, cmd);
      rc = ok ? 0 : 1;
    }
    co_await core->Shutdown();
  }

  awaitable<void> ChangePassword(std::string new_password) {
    fc::Outcome o = core->OpenStore();
    fc::Json extra = fc::Json::object();
    if (o.ok()) o = co_await core->ChangePassword(std::move(new_password), &extra);
    Finish("change_password", o, extra);
    co_await core->Shutdown();
  }

  awaitable<void> Pending() {
    bool started = co_await Start("pending", fc::SessionMode::kPending);
    if (started) {
      WatchSignals();
      fc::Outcome taken = co_await core->TakePending(false);
      if (!taken.ok() && taken.code != "IO_ERROR") {
        fc::EmitError(*out, "pending", taken.code, taken.message);
      } else if (core->disconnected() || !core->synced()) {
        fc::EmitError(*out, "pending", "IO_ERROR", "connection ended before all pending deliveries arrived");
      } else {
        fc::Json r = {{"type", "result"}, {"cmd", "pending"}, {"ok", true}, {"count", core->processed()}};
        out->Emit(r);
        rc = 0;
      }
    }
    co_await core->Shutdown();
  }

  awaitable<void> Listen() {
    bool started = co_await Start("listen", fc::SessionMode::kListen);
    if (started) {
      WatchSignals();
      co_await core->WaitClosed();
      rc = core->disconnected() ? 1 : 0;
    }
    co_await core->Shutdown();
  }

  // Reads commands from `in` (StdinLines, or a LineEditor on a terminal)
  // until \q or the end of input.
  template <class Lines>
  awaitable<void> ChatInput(std::shared_ptr<Lines> in) {
    std::string line;
    bool eof = false;
    for (;;) {
      bool got = co_await in->Next(&line);
      if (!got) {
        eof = true;
        break;
      }
      fc::Command cmd;
      if (!fc::ParseLine(line, &cmd)) continue;
      if (fc::IsQuit(cmd.name)) break;
      if (cmd.name == "register" || cmd.name == "chat" || cmd.name == "listen") {
        fc::EmitError(*out, cmd.name, fc::kCodeUsage, "not available inside chat");
        continue;
      }
      co_await fc::RunCommand(*core, *out, cmd);
      if (core->disconnected()) co_return;
    }
    // End of input: finish processing what the server had queued for us.
    if (eof) co_await core->WaitSynced();
    co_await core->Shutdown();
  }

  awaitable<void> Chat() {
    bool started = co_await Start("chat", fc::SessionMode::kChat);
    if (started) {
      WatchSignals();
      if (!json && fc::InteractiveTerminal()) {
        // A person at a terminal: a prompt, line editing, completion, and
        // events printed above the line being typed.
        auto complete = [this](const std::string& before) {
          std::vector<std::string> users, groups;
          core->KnownNames(&users, &groups);
          return fc::ChatCompletions(before, fc::CompletionWords(), users, groups);
        };
        auto editor = std::make_shared<fc::LineEditor>(ioc, cfg.user + "> ", complete);
        out->SetLineOwner(editor.get());
        log_lines->SetLineOwner(editor.get());
        asio::co_spawn(ioc, ChatInput(editor), asio::detached);
        co_await core->WaitClosed();
        out->SetLineOwner(nullptr);
        log_lines->SetLineOwner(nullptr);
        editor->Cancel();
      } else {
        auto in = std::make_shared<StdinLines>(ioc);
        asio::co_spawn(ioc, ChatInput(in), asio::detached);
        co_await core->WaitClosed();
        in->Cancel();
      }
      rc = core->disconnected() ? 1 : 0;
    }
    co_await core->Shutdown();
  }

  awaitable<void> DecryptFrames(std::string file) {
    fc::Outcome o = core->OpenStore();
    if (o.ok()) o = core->DecryptFrames(file);
    if (!o.ok()) {
      fc::EmitError(*out, "decrypt-frames", o.code, o.message);
      rc = 1;
    } else {
      rc = 0;
    }
    co_return;
  }

  int Run(awaitable<void> main) {
    asio::co_spawn(ioc, std::move(main), [this](std::exception_ptr e) {
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          spdlog::error("internal error: {}", ex.what());
          rc = 1;
        }
      }
      ioc.stop();
    });
    ioc.run();
    return rc;
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  fc::LogLines* log_lines = fc::InstallSafeStderrLogger("fastchat");
  spdlog::set_level(spdlog::level::warn);

  CLI::App cli{"FastChat: end-to-end encrypted chat (client)"};
  cli.prefix_command();
  std::string server = "127.0.0.1:7400";
  std::string home, user, password, downloads, kdf = "interactive", record;
  bool json = false, verbose = false;
  std::vector<std::string> balancers;
  CLI::Option* server_opt = cli.add_option("--server", server, "server HOST:PORT")->envname("FASTCHAT_SERVER");
  // One value per --balancer (repeat it for several): a list option would
  // otherwise take the command words after it as more balancers.
  cli.add_option("--balancer", balancers,
                 "balancer HOST:PORT to ask for a server (repeatable, or comma-separated; used unless --server "
                 "is given)")
      ->envname("FASTCHAT_BALANCER")
      ->allow_extra_args(false);
  cli.add_option("--home", home, "folder of local key stores (default $HOME/.fastchat)")->envname("FASTCHAT_HOME");
  cli.add_option("--user", user, "your user name or id")->envname("FASTCHAT_USER");
  cli.add_option("--password", password, "password (else prompted on a terminal)")->envname("FASTCHAT_PASSWORD");
  std::string new_password;
  cli.add_option("--new-password", new_password, "change_password: the new password (else prompted twice on a terminal)")
      ->envname("FASTCHAT_NEW_PASSWORD");
  cli.add_option("--downloads", downloads, "where received files go (default <home>/downloads/<name>)");
  cli.add_flag("--json", json, "JSON lines on stdout");
  cli.add_option("--kdf", kdf, "Argon2id cost for the local key store: min|interactive|moderate");
  cli.add_option("--record", record, "append every received Deliver frame to FILE");
  cli.add_flag("-v,--verbose", verbose, "log details to stderr");
  std::string tls_pin, tls_ca;
  bool plain_tcp = false;
  cli.add_option("--tls-pin", tls_pin,
                 "accept only the server certificate with this SHA-256 fingerprint (fastchat-server prints it)")
      ->envname("FASTCHAT_TLS_PIN");
  cli.add_option("--tls-ca", tls_ca, "verify the server's certificate chain and name against this CA file (PEM)")
      ->envname("FASTCHAT_TLS_CA");
  cli.add_flag("--insecure-plain-tcp", plain_tcp,
               "no TLS: your password and metadata cross the network in clear (for a server started with "
               "--insecure-plain-tcp; tests only)");
  cli.footer("\n" + fc::HelpText());
  CLI11_PARSE(cli, argc, argv);
  if (verbose) spdlog::set_level(spdlog::level::debug);

  std::vector<std::string> rest = cli.remaining();
  fc::DropEndOfOptions(&rest);
  fc::Output out(json);
  if (rest.empty()) {
    std::cerr << cli.help() << std::endl;
    return 2;
  }
  const std::string mode = rest[0];

  if (!fastchat::crypto::Init()) {
    fc::EmitError(out, mode, "INTERNAL", "libsodium cannot be initialised");
    return 1;
  }

  App app;
  app.json = json;
  app.log_lines = log_lines;
  fc::ClientConfig& cfg = app.cfg;
  if (!fc::SplitHostPort(server, &cfg.host, &cfg.port)) {
    fc::EmitError(out, mode, fc::kCodeUsage, "--server must be HOST:PORT");
    return 1;
  }
  std::string bad;
  if (!fc::ParseBalancerList(balancers, &cfg.balancers, &bad)) {
    fc::EmitError(out, mode, fc::kCodeUsage, "--balancer: " + bad);
    return 1;
  }
  if (server_opt->count() > 0) cfg.balancers.clear();  // --server wins
  if (home.empty()) {
    const char* h = std::getenv("HOME");
    home = std::string(h ? h : ".") + "/.fastchat";
  }
  cfg.home = home;
  cfg.tls.plain = plain_tcp;
  cfg.tls.ca_file = tls_ca;
  if (!tls_pin.empty() && !fastchat::net::ParseFingerprint(tls_pin, &cfg.tls.pin)) {
    fc::EmitError(out, mode, fc::kCodeUsage, "--tls-pin wants a SHA-256 fingerprint (64 hex digits)");
    return 1;
  }
  if (plain_tcp && (!tls_pin.empty() || !tls_ca.empty())) {
    fc::EmitError(out, mode, fc::kCodeUsage, "--insecure-plain-tcp cannot be combined with --tls-pin or --tls-ca");
    return 1;
  }
  // Trust on first use, per HOST:PORT, unless pinned or CA-verified.
  cfg.tls.known_servers = (std::filesystem::path(home) / "known_servers").string();
  (void)fastchat::MakePrivateDirs(home);  // folders it creates are 0700; a failure shows when the file is written
  cfg.user = user;
  cfg.downloads = downloads;
  cfg.record = record;
  if (!fastchat::crypto::PwhashCost::Parse(kdf, &cfg.kdf)) {
    fc::EmitError(out, mode, fc::kCodeUsage, "--kdf must be min, interactive or moderate");
    return 1;
  }

  // Validate the command before asking for a password.
  fc::Command cmd;
  bool session = mode == "chat" || mode == "listen" || mode == "pending";
  if (mode == "help" || mode == "\\help" || mode == "--help") {
    if (rest.size() > 2) {
      fc::EmitError(out, "help", fc::kCodeUsage, "usage: fastchat help [COMMAND]");
      return 1;
    }
    return fc::EmitHelp(out, rest.size() == 2 ? rest[1] : std::string()) ? 0 : 1;
  } else if (mode == "register" || mode == "decrypt-frames") {
    if (rest.size() != 2) {
      fc::EmitError(out, mode, fc::kCodeUsage,
                    mode == "register" ? "usage: fastchat register NAME" : "usage: fastchat decrypt-frames FILE");
      return 1;
    }
  } else if (mode == "change_password") {
    if (rest.size() != 1) {
      fc::EmitError(out, mode, fc::kCodeUsage, "usage: fastchat --user NAME change_password (no arguments)");
      return 1;
    }
  } else if (session) {
    if (rest.size() != 1) {
      fc::EmitError(out, mode, fc::kCodeUsage, "usage: fastchat " + mode + " (no arguments)");
      return 1;
    }
  } else {
    cmd = fc::FromWords(rest);
    if (!fc::IsKnownCommand(cmd.name) || !cmd.arity_ok) {
      fc::EmitError(out, cmd.name, fc::kCodeUsage, fc::Usage(cmd.name));
      return 1;
    }
  }
  if (mode != "register" && cfg.user.empty()) {
    fc::EmitError(out, mode, fc::kCodeUsage, "no user given: use --user NAME|ID or FASTCHAT_USER");
    return 1;
  }
  if (password.empty()) {
    if (!isatty(STDIN_FILENO) ||
        !PromptPassword("Password for " + (mode == "register" ? rest[1] : cfg.user) + ": ", &password)) {
      fc::EmitError(out, mode, fc::kCodeUsage, "no password: use --password or FASTCHAT_PASSWORD");
      return 1;
    }
  }
  cfg.password = password;
  if (mode == "change_password" && new_password.empty()) {
    std::string again;
    if (!isatty(STDIN_FILENO) || !PromptPassword("New password for " + cfg.user + ": ", &new_password) ||
        !PromptPassword("New password again: ", &again)) {
      fc::EmitError(out, mode, fc::kCodeUsage, "no new password: use --new-password or FASTCHAT_NEW_PASSWORD");
      return 1;
    }
    if (again != new_password) {
      fc::EmitError(out, mode, fc::kCodeUsage, "the two new passwords differ");
      return 1;
    }
  }

  app.out = std::make_unique<fc::Output>(json);
  app.core = std::make_unique<fc::ClientCore>(app.ioc, app.cfg, app.out.get());
  int rc;
  if (mode == "register")
    rc = app.Run(app.Register(rest[1]));
  else if (mode == "chat")
    rc = app.Run(app.Chat());
  else if (mode == "listen")
    rc = app.Run(app.Listen());
  else if (mode == "pending")
    rc = app.Run(app.Pending());
  else if (mode == "change_password")
    rc = app.Run(app.ChangePassword(new_password));
  else if (mode == "decrypt-frames")
    rc = app.Run(app.DecryptFrames(rest[1]));
  else
    rc = app.Run(app.OneShot(cmd));
  // Destroy the client while the io_context still exists.
  app.core.reset();
  return rc;
}
