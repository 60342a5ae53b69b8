// End-to-end tests of fastchat-balancer: the real program on loopback, fake
// chat servers (BalancerReporter, or raw frames when a test needs a server
// that misbehaves or falls silent) and the client's AskBalancersNow (plain
// TCP) as the client.
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <gtest/gtest.h>

#include "auth.h"
#include "balancer.pb.h"
#include "balancer_query.h"
#include "fastchat/frame.h"
#include "load.h"
#include "reporter.h"

namespace fastchat::balancer {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

const char kSecret[] = "test cluster secret";

// Polls `cond` every 10 ms until it holds or `limit` passes.
template <typename F>
bool WaitUntil(F cond, std::chrono::milliseconds limit = 10s) {
  const auto deadline = Clock::now() + limit;
  for (;;) {
    if (cond()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
}

// ------------------------------------------------------------ the program
class BalancerProcess {
 public:
  // Starts fastchat-balancer and waits for its "listening on" line.
  explicit BalancerProcess(std::vector<std::string> extra_args, const std::string& listen = "127.0.0.1:0") {
    const char* bin_dir = std::getenv("FASTCHAT_BIN_DIR");
    if (bin_dir == nullptr) throw std::runtime_error("FASTCHAT_BIN_DIR is not set");
    const std::string bin = std::string(bin_dir) + "/src/balancer/fastchat-balancer";
    log_path_ = ::testing::TempDir() + "balancer-" + std::to_string(::getpid()) + "-" +
                std::to_string(counter_++) + ".log";
    // Plain TCP: these tests speak the balancer protocol with raw sockets and
    // plain reporters; TLS on balancer links is tested in tests/cluster_test.cc.
    std::vector<std::string> args = {bin,       "--listen",    listen, "--cluster-secret", kSecret,
                                     "--log-level", "debug", "--insecure-plain-tcp"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());

    int out[2];
    if (::pipe(out) != 0) throw std::runtime_error("pipe failed");
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      std::FILE* err = std::fopen(log_path_.c_str(), "w");
      if (err != nullptr) ::dup2(::fileno(err), 2);
      ::close(out[0]);
      ::close(out[1]);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(bin.c_str(), argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    stdout_fd_ = out[0];

    std::string line;
    const auto deadline = Clock::now() + 10s;
    while (line.find('\n') == std::string::npos) {
      pollfd p{stdout_fd_, POLLIN, 0};
      int ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
      if (ms <= 0 || ::poll(&p, 1, ms) <= 0) throw std::runtime_error("no 'listening on' line; log:\n" + Log());
      char buf[256];
      ssize_t n = ::read(stdout_fd_, buf, sizeof buf);
      if (n <= 0) throw std::runtime_error("balancer exited early; log:\n" + Log());
      line.append(buf, static_cast<std::size_t>(n));
    }
    line.resize(line.find('\n'));
    const std::string prefix = "fastchat-balancer listening on ";
    if (line.rfind(prefix, 0) != 0) throw std::runtime_error("unexpected first line: " + line);
    address_ = line.substr(prefix.size());
    port_ = static_cast<std::uint16_t>(std::stoi(address_.substr(address_.rfind(':') + 1)));
  }

  // A balancer that does not exit cleanly on SIGTERM (or that a sanitizer
  // flagged) fails the test.
  ~BalancerProcess() {
    if (pid_ > 0 && Stop() != 0) ADD_FAILURE() << "fastchat-balancer did not exit cleanly; log:\n" << Log();
  }

  const std::string& address() const { return address_; }
  std::uint16_t port() const { return port_; }

  // SIGTERM, then waits (bounded); returns the exit code, or -1 if it had to
  // be killed or did not exit normally.
  int Stop() {
    if (pid_ <= 0) return exit_code_;
    ::kill(pid_, SIGTERM);
    int status = 0;
    bool exited = WaitUntil([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, 10s);
    if (!exited) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
    }
    exit_code_ = exited && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    pid_ = -1;
    ::close(stdout_fd_);
    return exit_code_;
  }

  std::string Log() const {
    std::ifstream in(log_path_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  bool LogContains(const std::string& s) const { return Log().find(s) != std::string::npos; }

 private:
  static inline int counter_ = 0;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  int exit_code_ = -1;
  std::string log_path_;
  std::string address_;
  std::uint16_t port_ = 0;
};

// ------------------------------------------------- raw protocol connection
class RawConn {
 public:
  explicit RawConn(std::uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      throw std::runtime_error("connect failed");
    }
  }
  ~RawConn() { ::close(fd_); }

  // False if the peer has closed the connection.
  bool SendBytes(const std::string& bytes) {
    std::size_t off = 0;
    while (off < bytes.size()) {
      ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<std::size_t>(n);
    }
    return true;
  }
  bool SendPayload(const std::string& payload) {
    std::string frame;
    AppendFrame(payload, &frame);
    return SendBytes(frame);
  }
  void Send(const Envelope& env) { SendPayload(env.SerializeAsString()); }

  // The next frame, or nullopt if the connection closed or 5 s passed.
  std::optional<Envelope> Read() {
    const auto deadline = Clock::now() + 5s;
    for (;;) {
      std::string_view payload;
      bool have = false;
      if (!decoder_.Next(&payload, &have).ok()) return std::nullopt;
      if (have) {
        Envelope env;
        if (!env.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) return std::nullopt;
        return env;
      }
      pollfd p{fd_, POLLIN, 0};
      int ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
      if (ms <= 0 || ::poll(&p, 1, ms) <= 0) return std::nullopt;
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return std::nullopt;
      decoder_.Append(buf, static_cast<std::size_t>(n));
    }
  }

  // True if the peer closes the connection within 5 s (after any frames).
  bool ClosedByPeer() {
    const auto deadline = Clock::now() + 5s;
    for (;;) {
      pollfd p{fd_, POLLIN, 0};
      int ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
      if (ms <= 0 || ::poll(&p, 1, ms) <= 0) return false;
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return true;
    }
  }

  // Reads Hello and returns its challenge ("" if the first frame is not Hello).
  std::string ReadChallenge() {
    auto env = Read();
    if (!env || !env->has_hello() || env->hello().version() != 1) return "";
    return env->hello().challenge();
  }

  // Answers the challenge as `server_id` knowing `secret`; returns the reply.
  std::optional<Envelope> Authenticate(const std::string& server_id, const std::string& secret) {
    std::string challenge = ReadChallenge();
    Envelope auth;
    auth.mutable_server_auth()->set_server_id(server_id);
    auth.mutable_server_auth()->set_mac(AuthMac(AuthKey(secret), challenge, server_id));
    Send(auth);
    return Read();
  }

  void Report(const std::string& server_id, const std::string& client_address, double load) {
    Envelope env;
    ServerReport* r = env.mutable_server_report();
    r->set_server_id(server_id);
    r->set_client_address(client_address);
    r->set_load(load);
    Send(env);
  }

 private:
  int fd_ = -1;
  FrameDecoder decoder_{1u << 20};
};

ErrorCode ErrorOf(const std::optional<Envelope>& env) {
  return env && env->has_error() ? env->error().code() : ERROR_UNSPECIFIED;
}

bool IsAuthOk(const std::optional<Envelope>& env) { return env && env->has_auth_ok(); }

// ------------------------------------------------------- client helpers
struct Assignment {
  Status st;
  std::string host;
  std::uint16_t port = 0;
  std::string server_id;
};

Assignment Ask(const std::vector<std::string>& balancers,
               std::chrono::milliseconds timeout = client::kDefaultAskTimeout) {
  Assignment a;
  client::TlsTrust plain;
  plain.plain = true;
  client::Assignment got;
  a.st = client::AskBalancersNow(balancers, plain, &got, timeout);
  a.host = got.host;
  a.port = got.port;
  a.server_id = got.server_id;
  return a;
}

// Asks until `id` is assigned at least once in a round of 20 answers;
// bounded by `limit`.
bool WaitAssigned(const std::string& addr, const std::string& id, std::chrono::milliseconds limit = 10s) {
  return WaitUntil(
      [&] {
        for (int i = 0; i < 20; ++i) {
          Assignment a = Ask({addr});
          if (a.st.ok() && a.server_id == id) return true;
        }
        return false;
      },
      limit);
}

// One io_context thread for the reporters of a test.
class IoThread {
 public:
  IoThread() : guard_(asio::make_work_guard(io_)), thread_([this] { io_.run(); }) {}
  ~IoThread() {
    guard_.reset();
    io_.stop();
    thread_.join();
  }
  asio::io_context& io() { return io_; }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  std::thread thread_;
};

// A "balancer" that accepts connections (the kernel does, via the backlog)
// but never says anything.
class MuteListener {
 public:
  MuteListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(fd_, 64) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
      throw std::runtime_error("cannot listen");
    }
    address_ = "127.0.0.1:" + std::to_string(ntohs(sa.sin_port));
  }
  ~MuteListener() { ::close(fd_); }
  const std::string& address() const { return address_; }

 private:
  int fd_ = -1;
  std::string address_;
};

// An address where nothing listens: a port bound and released.
std::string DeadAddress() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
    throw std::runtime_error("cannot bind");
  }
  ::close(fd);
  return "127.0.0.1:" + std::to_string(ntohs(sa.sin_port));
}

ReporterOptions FastOptions() {
  ReporterOptions o;
  o.report_interval = 100ms;
  o.min_backoff = 20ms;
  o.max_backoff = 200ms;
  return o;
}

LoadSample Connections(std::uint32_t n) {
  LoadSample s;
  s.connections = n;
  return s;
}

// ------------------------------------------------------------------ tests

TEST(BalancerTest, SharesFollowInverseLoad) {
  BalancerProcess balancer({});
  IoThread io;
  // Loads 1, 2, 4 (ComputeLoad: 1 + connections).
  std::vector<std::unique_ptr<BalancerReporter>> reporters;
  const std::map<std::string, std::uint32_t> servers = {{"srv-a", 0}, {"srv-b", 1}, {"srv-c", 3}};
  std::uint16_t port = 17401;
  std::map<std::string, std::uint16_t> ports;
  for (const auto& [id, conns] : servers) {
    ports[id] = port;
    reporters.push_back(std::make_unique<BalancerReporter>(
        io.io(), std::vector<std::string>{balancer.address()}, id, "127.0.0.1:" + std::to_string(port++), kSecret,
        [n = conns] { return Connections(n); }, FastOptions()));
  }
  // A server with the wrong secret and the lowest load of all.
  auto impostor = std::make_unique<BalancerReporter>(io.io(), std::vector<std::string>{balancer.address()}, "impostor",
                                                     "127.0.0.1:17499", "wrong secret",
                                                     [] { return Connections(0); }, FastOptions());
  for (auto& r : reporters) r->Start();
  impostor->Start();

  ASSERT_TRUE(WaitUntil([&] {
    for (auto& r : reporters) {
      if (r->registered() != 1) return false;
    }
    return true;
  })) << balancer.Log();
  ASSERT_TRUE(WaitUntil([&] { return balancer.LogContains("refused server 'impostor'"); })) << balancer.Log();
  EXPECT_EQ(impostor->registered(), 0u);
  // Every server's first report has arrived once each is seen.
  for (const auto& [id, conns] : servers) ASSERT_TRUE(WaitAssigned(balancer.address(), id)) << id;

  constexpr int kAsks = 3000;
  std::map<std::string, int> counts;
  for (int i = 0; i < kAsks; ++i) {
    Assignment a = Ask({balancer.address()});
    ASSERT_TRUE(a.st.ok()) << a.st.ToString();
    ASSERT_EQ(a.host, "127.0.0.1");
    ASSERT_EQ(a.port, ports[a.server_id]) << a.server_id;
    ++counts[a.server_id];
  }
  std::printf("picks of %d: srv-a %d, srv-b %d, srv-c %d\n", kAsks, counts["srv-a"], counts["srv-b"],
              counts["srv-c"]);
  EXPECT_EQ(counts.count("impostor"), 0u);
  EXPECT_EQ(counts.size(), 3u);
  // Expected 4/7, 2/7, 1/7; one standard deviation is under 1 point here,
  // so 5 points is a tolerance a correct balancer never misses.
  const std::map<std::string, double> want = {{"srv-a", 4.0 / 7}, {"srv-b", 2.0 / 7}, {"srv-c", 1.0 / 7}};
  for (const auto& [id, share] : want) {
    EXPECT_NEAR(static_cast<double>(counts[id]) / kAsks, share, 0.05) << id << ": " << counts[id] << " of " << kAsks;
  }
  EXPECT_EQ(impostor->registered(), 0u);
  EXPECT_EQ(balancer.Stop(), 0) << "SIGTERM should stop the balancer cleanly";
}

TEST(BalancerTest, WrongSecretIsRefused) {
  BalancerProcess balancer({});
  RawConn conn(balancer.port());
  auto reply = conn.Authenticate("rogue", "not the secret");
  EXPECT_EQ(ErrorOf(reply), BAD_CREDENTIALS);
  EXPECT_TRUE(conn.ClosedByPeer());
  EXPECT_TRUE(WaitUntil([&] { return balancer.LogContains("refused server 'rogue'"); })) << balancer.Log();

  // Reports without authenticating are refused too, and never assigned.
  RawConn sneaky(balancer.port());
  ASSERT_FALSE(sneaky.ReadChallenge().empty());
  sneaky.Report("sneaky", "127.0.0.1:17500", 1);
  EXPECT_EQ(ErrorOf(sneaky.Read()), NOT_AUTHENTICATED);
  // An answer computed for another connection's challenge does not work.
  RawConn replay(balancer.port());
  ASSERT_FALSE(replay.ReadChallenge().empty());
  Envelope auth;
  auth.mutable_server_auth()->set_server_id("sneaky");
  auth.mutable_server_auth()->set_mac(AuthMac(AuthKey(kSecret), std::string(kChallengeBytes, 'x'), "sneaky"));
  replay.Send(auth);
  EXPECT_EQ(ErrorOf(replay.Read()), BAD_CREDENTIALS);

  Assignment a = Ask({balancer.address()});
  EXPECT_EQ(a.st.code(), Code::kNotFound) << a.st.ToString();
}

TEST(BalancerTest, SilentServerExpiresAndReturns) {
  constexpr auto kExpire = 1000ms;
  BalancerProcess balancer({"--expire-ms", "1000"});
  RawConn server(balancer.port());
  auto reply = server.Authenticate("quiet", kSecret);
  ASSERT_TRUE(IsAuthOk(reply)) << balancer.Log();
  EXPECT_EQ(reply->auth_ok().expire_ms(), 1000u);
  const auto last_report = Clock::now();  // the balancer cannot see the report earlier
  server.Report("quiet", "127.0.0.1:17600", 1);
  ASSERT_TRUE(WaitAssigned(balancer.address(), "quiet", 5s));

  // Silent now (the connection stays open). Still assigned for a while...
  Assignment a = Ask({balancer.address()});
  if (Clock::now() - last_report < kExpire / 2) {
    EXPECT_TRUE(a.st.ok()) << a.st.ToString();
  }
  // ...then taken out.
  ASSERT_TRUE(WaitUntil([&] { return Ask({balancer.address()}).st.code() == Code::kNotFound; }, 5s));
  const auto gone_after = Clock::now() - last_report;
  EXPECT_GE(gone_after, kExpire - 50ms);
  EXPECT_LE(gone_after, kExpire + 2s);
  EXPECT_TRUE(WaitUntil([&] { return balancer.LogContains("'quiet' sent no report"); })) << balancer.Log();

  // It reports again and is back at once.
  server.Report("quiet", "127.0.0.1:17600", 1);
  ASSERT_TRUE(WaitAssigned(balancer.address(), "quiet", 5s));
  a = Ask({balancer.address()});
  EXPECT_EQ(a.port, 17600);
}

TEST(BalancerTest, ExpiresWithoutAnyClientAsking) {
  BalancerProcess balancer({"--expire-ms", "300"});
  RawConn server(balancer.port());
  auto reply = server.Authenticate("lonely", kSecret);
  ASSERT_TRUE(IsAuthOk(reply));
  server.Report("lonely", "127.0.0.1:17601", 1);
  // The sweep timer, not a GetServer, takes it out.
  EXPECT_TRUE(WaitUntil([&] { return balancer.LogContains("'lonely' sent no report"); }, 5s)) << balancer.Log();
}

TEST(BalancerTest, ClosedConnectionIsTakenOutAtOnce) {
  BalancerProcess balancer({"--expire-ms", "60000"});
  IoThread io;
  BalancerReporter reporter(io.io(), {balancer.address()}, "leaver", "127.0.0.1:17700", kSecret,
                            [] { return Connections(0); }, FastOptions());
  reporter.Start();
  ASSERT_TRUE(WaitAssigned(balancer.address(), "leaver"));
  reporter.Stop();
  // Far sooner than the 60 s expiry.
  ASSERT_TRUE(WaitUntil([&] { return Ask({balancer.address()}).st.code() == Code::kNotFound; }, 5s));
  EXPECT_TRUE(balancer.LogContains("'leaver' disconnected"));
}

TEST(BalancerTest, ServersReRegisterAfterRestart) {
  auto balancer = std::make_unique<BalancerProcess>(std::vector<std::string>{});
  const std::string addr = balancer->address();
  IoThread io;
  BalancerReporter reporter(io.io(), {addr}, "phoenix", "127.0.0.1:17800", kSecret,
                            [] { return Connections(2); }, FastOptions());
  reporter.Start();
  ASSERT_TRUE(WaitUntil([&] { return reporter.registered() == 1; }));
  ASSERT_TRUE(WaitAssigned(addr, "phoenix"));

  EXPECT_EQ(balancer->Stop(), 0);
  ASSERT_TRUE(WaitUntil([&] { return reporter.registered() == 0; }));
  EXPECT_EQ(Ask({addr}, 500ms).st.code(), Code::kIOError);

  balancer = std::make_unique<BalancerProcess>(std::vector<std::string>{}, addr);
  ASSERT_TRUE(WaitUntil([&] { return reporter.registered() == 1; })) << balancer->Log();
  ASSERT_TRUE(WaitAssigned(addr, "phoenix"));
}

TEST(BalancerTest, ReporterUsesEveryBalancer) {
  BalancerProcess b1({});
  BalancerProcess b2({});
  // Balancers that are down or hung do not hold the others up.
  MuteListener mute;
  const std::string dead = DeadAddress();
  IoThread io;
  ReporterOptions options = FastOptions();
  options.connect_timeout = 200ms;
  BalancerReporter reporter(io.io(), {mute.address(), b1.address(), dead, b2.address(), "nonsense"}, "both",
                            "127.0.0.1:17900", kSecret, [] { return Connections(0); }, options);
  reporter.Start();
  ASSERT_TRUE(WaitUntil([&] { return reporter.registered() == 2; }));
  EXPECT_TRUE(WaitAssigned(b1.address(), "both"));
  EXPECT_TRUE(WaitAssigned(b2.address(), "both"));
}

TEST(BalancerTest, ClientTriesTheNextBalancer) {
  BalancerProcess balancer({});
  RawConn server(balancer.port());
  ASSERT_TRUE(IsAuthOk(server.Authenticate("only", kSecret)));
  server.Report("only", "127.0.0.1:18000", 1);
  ASSERT_TRUE(WaitAssigned(balancer.address(), "only"));

  const std::string dead = DeadAddress();
  MuteListener mute_listener;
  const std::string mute = mute_listener.address();

  Assignment a = Ask({dead, mute, "not-an-address", balancer.address()}, 300ms);
  EXPECT_TRUE(a.st.ok()) << a.st.ToString();
  EXPECT_EQ(a.server_id, "only");
  EXPECT_EQ(a.port, 18000);

  a = Ask({dead, mute}, 300ms);
  EXPECT_EQ(a.st.code(), Code::kIOError);
  EXPECT_NE(a.st.message().find(dead), std::string::npos) << a.st.message();
  EXPECT_EQ(Ask({}).st.code(), Code::kBadRequest);
}

TEST(BalancerTest, GarbageDoesNotHarmTheBalancer) {
  BalancerProcess balancer({});
  RawConn server(balancer.port());
  ASSERT_TRUE(IsAuthOk(server.Authenticate("steady", kSecret)));
  server.Report("steady", "127.0.0.1:18100", 1);
  ASSERT_TRUE(WaitAssigned(balancer.address(), "steady"));

  {  // Bytes that are no Envelope: an error, and the connection stays usable.
    RawConn c(balancer.port());
    ASSERT_FALSE(c.ReadChallenge().empty());
    c.SendPayload(std::string(10, '\xff'));
    EXPECT_EQ(ErrorOf(c.Read()), BAD_FRAME);
    c.SendPayload("");
    EXPECT_EQ(ErrorOf(c.Read()), UNKNOWN_TYPE);
    Envelope hello;
    hello.mutable_hello()->set_version(1);
    c.Send(hello);
    EXPECT_EQ(ErrorOf(c.Read()), BAD_REQUEST);
    // Several requests on one connection, answered in order.
    Envelope ask;
    ask.mutable_get_server();
    for (int i = 0; i < 3; ++i) c.Send(ask);
    for (int i = 0; i < 3; ++i) {
      auto r = c.Read();
      ASSERT_TRUE(r && r->has_server_assignment());
      EXPECT_EQ(r->server_assignment().server_id(), "steady");
      EXPECT_EQ(r->server_assignment().port(), 18100u);
    }
  }
  {  // A huge length: an error, then the balancer hangs up.
    RawConn c(balancer.port());
    c.SendBytes(std::string("\xff\xff\xff\xff", 4));
    ASSERT_FALSE(c.ReadChallenge().empty());
    EXPECT_EQ(ErrorOf(c.Read()), FRAME_TOO_LARGE);
    EXPECT_TRUE(c.ClosedByPeer());
  }
  {  // Bad server ids, double authentication, reports for another server.
    RawConn c(balancer.port());
    EXPECT_EQ(ErrorOf(c.Authenticate("bad\nid", kSecret)), BAD_REQUEST);
    EXPECT_TRUE(c.ClosedByPeer());
    RawConn d(balancer.port());
    ASSERT_TRUE(IsAuthOk(d.Authenticate("twice", kSecret)));
    Envelope again;
    again.mutable_server_auth()->set_server_id("twice");
    d.Send(again);
    EXPECT_EQ(ErrorOf(d.Read()), BAD_REQUEST);
    d.Report("steady", "127.0.0.1:1", 1);  // not who it authenticated as
    EXPECT_EQ(ErrorOf(d.Read()), BAD_REQUEST);
    d.Report("twice", "no port", 1);
    EXPECT_EQ(ErrorOf(d.Read()), BAD_REQUEST);
  }
  {  // Many random frames and raw bytes from a fixed seed, then a truncated frame.
    std::mt19937 rng(7);
    for (int round = 0; round < 20; ++round) {
      RawConn c(balancer.port());
      for (int i = 0; i < 50; ++i) {
        std::string junk(rng() % 200, '\0');
        for (char& ch : junk) ch = static_cast<char>(rng());
        // The balancer hangs up on a frame length over its limit; the rest
        // of this round's junk then goes nowhere.
        bool sent = i % 2 == 0 ? c.SendPayload(junk) : c.SendBytes(junk);
        if (!sent) break;
      }
      c.SendBytes(std::string("\x00\x00\x01\x00partial", 11));
    }  // closed mid-frame
  }
  // The real server is still assigned, the impostors never were.
  for (int i = 0; i < 50; ++i) {
    Assignment a = Ask({balancer.address()});
    ASSERT_TRUE(a.st.ok()) << a.st.ToString() << "\n" << balancer.Log();
    EXPECT_EQ(a.server_id, "steady");
  }
  EXPECT_EQ(balancer.Stop(), 0);
}

}  // namespace
}  // namespace fastchat::balancer
