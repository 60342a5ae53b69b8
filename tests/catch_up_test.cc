// Catch-up against a real server: a page read from the store stops at the
// write-queue limit (it used to push a whole page, ~16 MiB of image rows,
// past it), every row still arrives, FetchPending (which re-reads
// everything pending) is metered, and the server shuts down cleanly with a
// write to that reader blocked.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "harness/fastchat.h"
#include "harness/metrics_scrape.h"
#include "harness/raw_conn.h"

namespace fastchat::testing {
namespace {

constexpr std::size_t kQueueLimit = 1 << 20;

// alice and bob registered and friends over raw connections; alice stays
// logged in (sending only).
struct Friends {
  explicit Friends(std::uint16_t port) : alice(port) {
    RawConn b(port);
    b.Hello();
    alice.Hello();
    if (!alice.Register("alice", "alice-password").has_ok() || !b.Register("bob", "bob-password").has_ok() ||
        !alice.Login("alice", "alice-password", false).has_logged_in() ||
        !b.Login("bob", "bob-password", false).has_logged_in()) {
      throw std::runtime_error("cannot set up alice and bob");
    }
    wire::Envelope ask;
    ask.mutable_friend_request()->mutable_to()->set_name("bob");
    if (!alice.Request(ask).has_ok()) throw std::runtime_error("friend request");
    wire::Envelope yes;
    yes.mutable_friend_answer()->mutable_to()->set_name("alice");
    yes.mutable_friend_answer()->set_accept(true);
    yes.mutable_friend_answer()->set_nonce(std::string(24, 'n'));
    yes.mutable_friend_answer()->set_wrapped_key(std::string(48, 'k'));
    if (!b.Request(yes).has_ok()) throw std::runtime_error("friend answer");
  }
  // A DirectSend to bob whose ciphertext is `bytes` long.
  wire::Envelope Send(int n, std::size_t bytes) {
    wire::Envelope e;
    auto* d = e.mutable_direct_send();
    d->mutable_to()->set_name("bob");
    d->set_msg_id("catch-up-" + std::to_string(1000000 + n));
    d->set_kind(wire::TEXT);
    d->set_chunk_count(1);
    d->set_nonce(std::string(24, 'n'));
    d->set_ciphertext(std::string(bytes, static_cast<char>('a' + n % 26)));
    return alice.Request(e);
  }
  RawConn alice;
};

double QueueBytes(const ServerProcess& server) {
  return Get(Scrape(MetricsPort(server)), "fastchat_queue_bytes");
}

ServerOptions SmallQueue() {
  ServerOptions o;
  o.extra_args = {"--max-queue-bytes", std::to_string(kQueueLimit), "--metrics-listen", "127.0.0.1:0"};
  return o;
}

// 64 rows (one store page) of 250 kB for bob while he is away: 16 MB, more
// than loopback socket buffers take.
constexpr int kRows = 64;
constexpr std::size_t kBytes = 250000;

// A server with a 1 MiB write-queue limit, kRows rows of kBytes pending for
// bob, and bob logged in to receive them (reading nothing yet). bob
// connects after the rows are stored: a connection made first could pass
// the server's Hello deadline (10 s) while 16 MB are sent in a slow
// (sanitizer) build, and be closed before its Hello.
class StoppedReader : public ::testing::Test {
 protected:
  StoppedReader() : w(SmallQueue()), f(w.server().port()) {}
  void SetUp() override {
    for (int i = 0; i < kRows; ++i) ASSERT_TRUE(f.Send(i, kBytes).has_ok()) << i;
    bob_conn.emplace(w.server().port());
    bob().Hello();
    ASSERT_TRUE(bob().Login("bob", "bob-password", true).has_logged_in());
  }
  RawConn& bob() { return *bob_conn; }
  World w;
  Friends f;
  std::optional<RawConn> bob_conn;
};

TEST_F(StoppedReader, APageFromTheStoreStopsAtTheQueueLimitAndEveryRowArrives) {
  // bob reads nothing for a while: what the server holds for him is its
  // queue (the kernel's socket buffers take some of the 16 MB).
  double most = 0;
  for (int i = 0; i < 10; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    most = std::max(most, QueueBytes(w.server()));
  }
  EXPECT_LE(most, static_cast<double>(kQueueLimit + kBytes + 4096)) << "bytes queued for a reader that stopped";
  // Then every row arrives, once each.
  std::set<std::uint64_t> seqs;
  int frames = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (seqs.size() < kRows && std::chrono::steady_clock::now() < deadline) {
    wire::Envelope env;
    if (bob().Receive(&env, Millis(5000)) != RawConn::Recv::kOk) break;
    if (!env.has_deliver()) continue;
    ++frames;
    seqs.insert(env.deliver().seq());
  }
  EXPECT_EQ(seqs.size(), static_cast<std::size_t>(kRows));
  EXPECT_EQ(frames, kRows);
}

// SIGTERM while the server's writer for bob is blocked (bob reads nothing,
// his socket buffers are full), and while a registration is hashed: the
// write is cancelled with its coroutine still queued on the event loop. The
// server must exit 0, and under ASan (CI's asan run; the harness fails the
// test on any sanitizer report from the server) it must not touch its state
// after freeing it: the queued writer's frame used to be destroyed with the
// event loop, after the server's state it counts itself in.
TEST_F(StoppedReader, ShutdownWithItsWriterBlockedIsClean) {
  // Wait until the server holds bytes it cannot write: its writer is
  // waiting on bob's full socket.
  double queued = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (queued == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    queued = QueueBytes(w.server());
  }
  ASSERT_GT(queued, 0) << "the server's writer never blocked";
  // And a registration whose password hash may still be running on the
  // hashing threads (its result is posted to the loop after the signal).
  RawConn carol(w.server().port());
  carol.Hello();
  ASSERT_TRUE(carol.SendRegister("carol", "carol-password"));
  EXPECT_EQ(w.server().Stop(), 0) << w.server().StderrTail();
}

// SIGTERM with registrations waiting for a hashing thread (Argon2id at the
// production cost, 8 at once for 2 threads): those not started are dropped,
// the server exits 0, and (asan run) touches nothing freed. Stopping the
// pool without destroying its queued jobs there (stop and join only) left
// their coroutines to be unwound on the event loop after the server's state
// was freed: a heap-use-after-free under ASan, 3 runs of 3.
TEST(Shutdown, PasswordHashesWaitingForAThreadAreDropped) {
  ServerOptions o;
  o.pwhash = "interactive";
  o.log_level = "info";
  o.extra_args = {"--metrics-listen", "127.0.0.1:0"};
  World w(o);
  std::vector<std::unique_ptr<RawConn>> conns;
  for (int i = 0; i < 8; ++i) {
    conns.push_back(std::make_unique<RawConn>(w.server().port()));
    conns.back()->Hello();
    ASSERT_TRUE(conns.back()->SendRegister("user" + std::to_string(i), "password-" + std::to_string(i)));
  }
  double jobs = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (jobs < 3 && std::chrono::steady_clock::now() < deadline) {
    jobs = Get(Scrape(MetricsPort(w.server())), "fastchat_password_hash_jobs");
    if (jobs < 3) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_GE(jobs, 3) << "fewer hash jobs than threads + 1: nothing would wait";
  EXPECT_EQ(w.server().Stop(), 0) << w.server().StderrTail();
  EXPECT_NE(w.server().StderrTail().find("password hash jobs running or waiting (those waiting are dropped)"),
            std::string::npos)
      << w.server().StderrTail();
}

TEST(CatchUp, FetchPendingIsMetered) {
  World w;
  Friends f(w.server().port());
  ASSERT_TRUE(f.Send(1, 100).has_ok());
  RawConn bob(w.server().port());
  bob.Hello();
  ASSERT_TRUE(bob.Login("bob", "bob-password", true).has_logged_in());
  wire::Envelope fetch;
  fetch.mutable_fetch_pending();
  wire::Envelope first = bob.Request(fetch);
  EXPECT_TRUE(first.has_ok()) << Describe(first);
  wire::Envelope again = bob.Request(fetch);
  EXPECT_EQ(ErrorName(again), "RATE_LIMITED") << Describe(again);
  EXPECT_GT(again.error().retry_after_ms(), 0u);
  EXPECT_LE(again.error().retry_after_ms(), 5000u);
}

}  // namespace
}  // namespace fastchat::testing
