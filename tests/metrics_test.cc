// The /metrics endpoint of a real server: the counts match what the test
// did (registrations, logins ok and failed, deliveries, a limit rejection,
// store batches), the format is Prometheus text, and the endpoint's own
// bounds hold (loopback only, GET /metrics only, request head size,
// connections at once, deadline).
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "harness/fastchat.h"
#include "harness/metrics_scrape.h"
#include "harness/raw_conn.h"

namespace fastchat::testing {
namespace {

ServerOptions WithMetrics(std::vector<std::string> more = {}) {
  ServerOptions o;
  o.extra_args = {"--metrics-listen", "127.0.0.1:0"};
  for (auto& a : more) o.extra_args.push_back(a);
  return o;
}

TEST(Metrics, CountWhatTheServerDid) {
  World w(WithMetrics({"--max-groups-per-user", "1"}));
  const std::uint16_t port = MetricsPort(w.server());
  auto before = Scrape(port);
  EXPECT_EQ(Get(before, R"(fastchat_registrations_total{result="ok"})"), 0);
  EXPECT_EQ(Get(before, R"(fastchat_connections{state="logged_in"})"), 0);

  User a = w.Register("alice");
  User b = w.Register("bob");
  {
    RawConn c(w.server().port());
    c.Hello();
    EXPECT_EQ(ErrorName(c.Login("alice", "not-her-password", false)), "BAD_CREDENTIALS");
  }
  auto ca = w.Chat(a);
  auto cb = w.Chat(b);
  w.MakeFriends(*ca, a, *cb, b);
  for (int i = 0; i < 5; ++i) ca->CommandOk("single_message bob counted-" + std::to_string(i));
  for (int i = 0; i < 5; ++i) cb->WaitFor(Msg("alice", "counted-" + std::to_string(i)));
  ca->CommandOk("create_group first");
  json refused = ca->Command("create_group second");
  EXPECT_EQ(Str(refused, "code"), "LIMIT_REACHED") << refused.dump();

  auto m = Scrape(port);
  EXPECT_EQ(Get(m, R"(fastchat_registrations_total{result="ok"})"), 2);
  EXPECT_EQ(Get(m, R"(fastchat_logins_total{method="password",result="bad_credentials"})"), 1);
  EXPECT_GE(Get(m, R"(fastchat_logins_total{method="password",result="ok"})"), 2);
  EXPECT_EQ(Get(m, R"(fastchat_connections{state="logged_in"})"), 2);
  EXPECT_EQ(Get(m, "fastchat_receiving_users"), 2);
  // Five messages plus the friend request and answer, at least, reached bob.
  EXPECT_GE(Get(m, R"(fastchat_deliveries_total{path="live"})") + Get(m, R"(fastchat_deliveries_total{path="store"})"),
            7);
  EXPECT_EQ(Get(m, R"(fastchat_limit_rejections_total{code="LIMIT_REACHED"})"), 1);
  const double batches = Get(m, R"(fastchat_store_batches_total{result="ok"})");
  EXPECT_GE(batches, 5);
  EXPECT_EQ(Get(m, "fastchat_store_batch_jobs_count"), batches);
  EXPECT_EQ(Get(m, R"(fastchat_store_batch_seconds_bucket{le="+Inf"})"), batches);
  EXPECT_GE(Get(m, "fastchat_store_jobs_total"), batches);
  EXPECT_EQ(Get(m, "fastchat_store_split_batches_total"), 0);  // SQLite: one lane
  EXPECT_GT(Get(m, "process_resident_memory_bytes"), 1e6);
  EXPECT_GT(Get(m, "fastchat_connections_accepted_total"), 4);

  ca->Quit();
  cb->Quit();
}

TEST(Metrics, AnswersOnlyGetMetricsAndBoundsTheRequest) {
  World w(WithMetrics());
  const std::uint16_t port = MetricsPort(w.server());
  const std::string ok = HttpExchange(port, "GET /metrics HTTP/1.0\r\n\r\n");
  EXPECT_EQ(ok.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << ok;
  EXPECT_NE(ok.find("Content-Type: text/plain; version=0.0.4"), std::string::npos);
  EXPECT_NE(HttpBody(ok).find("# TYPE fastchat_logins_total counter\n"), std::string::npos);
  const std::string head = HttpExchange(port, "HEAD /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(head.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << head;
  EXPECT_EQ(HttpBody(head), "");
  EXPECT_EQ(HttpExchange(port, "GET / HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 404 ", 0), 0u);
  EXPECT_EQ(HttpExchange(port, "POST /metrics HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 405 ", 0), 0u);
  EXPECT_EQ(HttpExchange(port, "hello\r\n\r\n").rfind("HTTP/1.1 400 ", 0), 0u);
  const std::string huge = "GET /metrics HTTP/1.1\r\nX-Filler: " + std::string(20000, 'a') + "\r\n\r\n";
  EXPECT_EQ(HttpExchange(port, huge).rfind("HTTP/1.1 431 ", 0), 0u);
  EXPECT_TRUE(w.server().Running());
}

TEST(Metrics, BoundsConnectionsAndClosesSilentOnesAtTheDeadline) {
  World w(WithMetrics());
  const std::uint16_t port = MetricsPort(w.server());
  // 16 silent connections are held; the 17th is closed at once.
  std::vector<int> held;
  for (int i = 0; i < 16; ++i) held.push_back(DialLoopback(port));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const auto t0 = std::chrono::steady_clock::now();
  int extra = DialLoopback(port);
  EXPECT_EQ(ReadUntilClosed(extra), "");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  ::close(extra);
  // The held ones end at the 5 s deadline with nothing said.
  for (int fd : held) {
    EXPECT_EQ(ReadUntilClosed(fd), "");
    ::close(fd);
  }
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, std::chrono::seconds(4));
  EXPECT_LT(took, std::chrono::seconds(9));
  // And a scrape works again.
  EXPECT_GE(Get(Scrape(port), "process_open_fds"), 1);
}

}  // namespace
}  // namespace fastchat::testing
