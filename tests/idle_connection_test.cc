// Idle connections, plain TCP and TLS, against a real fastchat-server: an idle
// connection runs no reader or writer coroutine (the server's
// fastchat_session_coroutines gauges say 0 while connections are open), yet
// it is read again as soon as bytes arrive (also a frame split across the
// idle time), it is written to when the server has something to say (a
// keepalive Ping), its deadlines still close it, and a burst of more writes
// than may be in flight is still answered in order.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "fastchat.pb.h"
#include "fastchat/frame.h"
#include "harness/fastchat.h"
#include "harness/metrics_scrape.h"
#include "harness/raw_conn.h"

namespace fastchat::testing {
namespace {

using Transport = RawConn::Transport;

// Every test runs over both transports: TLS (the server's default) and
// plain TCP (--insecure-plain-tcp).
class IdleConnection : public ::testing::TestWithParam<Transport> {
 protected:
  ServerOptions WithMetrics(std::vector<std::string> limits = {}) const {
    ServerOptions o;
    o.extra_args = {"--metrics-listen", "127.0.0.1:0"};
    if (GetParam() == Transport::kPlain) o.extra_args.push_back("--insecure-plain-tcp");
    for (auto& a : limits) o.limit_args.push_back(a);
    return o;
  }
};

double Readers(const std::map<std::string, double>& m) {
  return Get(m, R"(fastchat_session_coroutines{loop="read"})");
}
double Writers(const std::map<std::string, double>& m) {
  return Get(m, R"(fastchat_session_coroutines{loop="write"})");
}

// Scrapes until no session reader or writer runs (10 s at most: the replies
// were already received, so the coroutines are ending, not waiting); returns
// the last scrape.
std::map<std::string, double> ScrapeWhenQuiet(std::uint16_t port) {
  const auto until = Clock::now() + std::chrono::seconds(10);
  for (;;) {
    auto m = Scrape(port);
    if ((Readers(m) == 0 && Writers(m) == 0) || Clock::now() > until) return m;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

wire::Envelope PingEnv() {
  wire::Envelope e;
  e.mutable_ping();
  return e;
}

std::unique_ptr<RawConn> LoggedIn(std::uint16_t port, Transport transport, const std::string& name,
                                  bool receive = true) {
  auto c = std::make_unique<RawConn>(port, transport);
  wire::Envelope r = c->Hello();
  if (!r.has_hello_ok()) throw std::runtime_error("Hello: " + Describe(r));
  r = c->Register(name, "password-" + name);
  if (!r.has_ok()) throw std::runtime_error("Register: " + Describe(r));
  r = c->Login(name, "password-" + name, receive);
  if (!r.has_logged_in()) throw std::runtime_error("Login: " + Describe(r));
  return c;
}

TEST_P(IdleConnection, HoldsNoCoroutineAndIsStillReadAndWritten) {
  World w(WithMetrics());
  const std::uint16_t metrics = MetricsPort(w.server());
  constexpr int kConns = 20;
  std::vector<std::unique_ptr<RawConn>> conns;
  for (int i = 0; i < kConns; ++i) conns.push_back(LoggedIn(w.server().port(), GetParam(), "idle" + std::to_string(i)));

  auto m = ScrapeWhenQuiet(metrics);
  EXPECT_EQ(Get(m, R"(fastchat_connections{state="logged_in"})"), kConns);
  EXPECT_EQ(Readers(m), 0) << "idle connections still run their reader coroutines";
  EXPECT_EQ(Writers(m), 0) << "idle connections still run their writer coroutines";

  // Every one is read and answered again.
  for (auto& c : conns) EXPECT_TRUE(c->Request(PingEnv()).has_pong());

  // A frame split across idle time: the first half is kept (the reader ends
  // between the halves), the second completes it.
  std::string frame;
  wire::Envelope ping = PingEnv();
  ping.set_rid(conns[0]->NextRid());
  AppendFrame(ping.SerializeAsString(), &frame);
  ASSERT_GT(frame.size(), 2u);
  ASSERT_TRUE(conns[0]->SendBytes(frame.substr(0, 2)));
  m = ScrapeWhenQuiet(metrics);
  EXPECT_EQ(Readers(m), 0) << "a reader waits for the rest of a frame";
  ASSERT_TRUE(conns[0]->SendBytes(frame.substr(2)));
  wire::Envelope pong = conns[0]->Expect();
  while (pong.rid() == 0) pong = conns[0]->Expect();  // pushes (SyncDone) first
  EXPECT_TRUE(pong.has_pong()) << Describe(pong);
  EXPECT_EQ(pong.rid(), ping.rid());

  m = ScrapeWhenQuiet(metrics);
  EXPECT_EQ(Readers(m), 0);
  EXPECT_EQ(Writers(m), 0);
  EXPECT_EQ(Get(m, R"(fastchat_connections{state="logged_in"})"), kConns);
}

TEST_P(IdleConnection, MoreWritesThanMayBeInFlightAreAnsweredInOrder) {
  // The writes in flight and their reply slots exist only while there are
  // some: 600 pipelined writes (more than Session::kMaxInFlight, 256, so the
  // reader waits for slots) are all answered, in request order, and then the
  // connection is idle again.
  World w(WithMetrics({"--sends-per-second", "0", "--max-groups-per-user", "0"}));
  const std::uint16_t metrics = MetricsPort(w.server());
  auto c = LoggedIn(w.server().port(), GetParam(), "busy", /*receive=*/false);
  constexpr int kRequests = 600;
  const std::uint64_t first = c->NextRid();
  std::string burst;
  for (int i = 0; i < kRequests; ++i) {
    wire::Envelope env;
    env.set_rid(first + static_cast<std::uint64_t>(i));
    env.mutable_group_create()->set_name("group-" + std::to_string(i));
    AppendFrame(env.SerializeAsString(), &burst);
  }
  ASSERT_TRUE(c->SendBytes(burst));
  for (int i = 0; i < kRequests; ++i) {
    wire::Envelope r = c->Expect();
    while (r.rid() == 0) r = c->Expect();  // pushes
    ASSERT_EQ(r.rid(), first + static_cast<std::uint64_t>(i)) << Describe(r);
    ASSERT_TRUE(r.has_ok()) << i << " " << Describe(r);
  }
  auto m = ScrapeWhenQuiet(metrics);
  EXPECT_EQ(Readers(m), 0);
  EXPECT_EQ(Writers(m), 0);
  EXPECT_TRUE(c->Request(PingEnv()).has_pong());
}

TEST_P(IdleConnection, DeadlinesStillHold) {
  // Silent logged-in peers are pinged (the server writes to an idle
  // connection) and dropped if they do not answer; a connection that never
  // says Hello is closed at its deadline.
  World w(WithMetrics({"--ping-after", "1", "--ping-timeout", "1", "--hello-timeout", "1"}));
  const std::uint16_t port = w.server().port();
  auto mute = LoggedIn(port, GetParam(), "mute");
  auto polite = LoggedIn(port, GetParam(), "polite");
  RawConn silent(port, GetParam());

  const auto t0 = Clock::now();
  int pings = 0;
  bool mute_closed = false;
  while (Clock::now() - t0 < std::chrono::milliseconds(4500)) {
    wire::Envelope env;
    if (polite->Receive(&env, Millis(50)) == RawConn::Recv::kOk && polite->AnswerPing(env)) ++pings;
    if (!mute_closed && mute->Receive(&env, Millis(1)) == RawConn::Recv::kClosed) mute_closed = true;
  }
  EXPECT_GE(pings, 2) << "an idle connection was not pinged";
  EXPECT_TRUE(mute_closed) << "a logged-in peer that never answers Ping was not dropped";
  EXPECT_TRUE(silent.WaitClosed(Millis(5000))) << "a connection that never said Hello was kept";
  EXPECT_TRUE(polite->Request(PingEnv()).has_pong());
}

INSTANTIATE_TEST_SUITE_P(Transports, IdleConnection, ::testing::Values(Transport::kTls, Transport::kPlain),
                         [](const ::testing::TestParamInfo<Transport>& p) {
                           return p.param == Transport::kTls ? "Tls" : "Plain";
                         });

}  // namespace
}  // namespace fastchat::testing
