// The cluster-secret MAC is bound to the TLS session: a server reaches the
// balancer directly and registers; the same server sent through a relay that
// terminates TLS on both sides (and passes every frame on unchanged) is
// refused, because the two TLS sessions export different keying material.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include "balancer.h"
#include "load.h"
#include "net/stream.h"
#include "net/tls.h"
#include "reporter.h"

namespace fastchat::balancer {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kSecret = "reporter-tls-test-secret-0123456789";

// Copies bytes from one stream to the other until either side ends.
asio::awaitable<void> Pump(std::shared_ptr<net::Stream> from, std::shared_ptr<net::Stream> to) {
  char buf[16384];
  try {
    for (;;) {
      std::size_t n = co_await from->ReadSome(asio::buffer(buf));
      co_await to->Write(asio::buffer(buf, n));
    }
  } catch (const std::exception&) {
  }
  from->Close();
  to->Close();
}

// A man in the middle: TLS server towards the reporter (its own
// certificate), TLS client towards the balancer, frames passed on verbatim.
asio::awaitable<void> Relay(asio::io_context& io, asio::ip::tcp::acceptor& acceptor,
                            std::shared_ptr<net::TlsContext> server_ctx, std::shared_ptr<net::TlsContext> client_ctx,
                            std::uint16_t balancer_port, int* relayed) {
  for (;;) {
    net::Socket in_sock = co_await acceptor.async_accept(io, asio::use_awaitable);
    auto in = std::make_shared<net::Stream>(std::move(in_sock), server_ctx);
    net::Socket out_sock(io);
    co_await out_sock.async_connect({asio::ip::make_address("127.0.0.1"), balancer_port}, asio::use_awaitable);
    auto out = std::make_shared<net::Stream>(std::move(out_sock), client_ctx);
    if (!(co_await in->Handshake(net::Stream::Role::kServer)).ok()) continue;
    if (!(co_await out->Handshake(net::Stream::Role::kClient, "127.0.0.1")).ok()) continue;
    ++*relayed;
    asio::co_spawn(io, Pump(in, out), asio::detached);
    asio::co_spawn(io, Pump(out, in), asio::detached);
  }
}

class ReporterTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("fastchat-reporter-tls-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    ASSERT_TRUE(net::GenerateSelfSigned(P("b.crt"), P("b.key"), "balancer", nullptr).ok());
    ASSERT_TRUE(net::GenerateSelfSigned(P("m.crt"), P("m.key"), "balancer", nullptr).ok());
    ASSERT_TRUE(net::MakeServerTls(P("b.crt"), P("b.key"), &balancer_tls_, nullptr).ok());
    ASSERT_TRUE(net::MakeServerTls(P("m.crt"), P("m.key"), &mitm_tls_, nullptr).ok());
    ASSERT_TRUE(net::MakeClientTls("", &client_tls_).ok());
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string P(const std::string& n) const { return (dir_ / n).string(); }

  // Runs a TLS balancer and a reporter aimed at `via` (the balancer itself
  // when empty, else a relay); returns whether the reporter registered.
  bool Registers(bool through_relay, int* relayed) {
    asio::io_context io;
    BalancerConfig cfg;
    cfg.listen_host = "127.0.0.1";
    cfg.listen_port = 0;
    cfg.cluster_secret = kSecret;
    cfg.tls = balancer_tls_;
    Balancer balancer(io, cfg);
    std::uint16_t bport = 0;
    EXPECT_TRUE(balancer.Start(&bport).ok());
    asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
    std::uint16_t target = bport;
    if (through_relay) {
      target = acceptor.local_endpoint().port();
      asio::co_spawn(io, Relay(io, acceptor, mitm_tls_, client_tls_, bport, relayed), asio::detached);
    }
    ReporterOptions ro;
    ro.tls = client_tls_;
    BalancerReporter reporter(io, {"127.0.0.1:" + std::to_string(target)}, "s1", "127.0.0.1:7400", kSecret,
                              [] { return LoadSample{}; }, ro);
    reporter.Start();
    bool registered = false;
    asio::steady_timer poll(io);
    std::function<void()> check = [&] {
      if (reporter.registered() > 0) {
        registered = true;
        io.stop();
        return;
      }
      poll.expires_after(20ms);
      poll.async_wait([&](const asio::error_code& ec) {
        if (!ec) check();
      });
    };
    check();
    asio::steady_timer give_up(io, 2s);
    give_up.async_wait([&](const asio::error_code&) { io.stop(); });
    io.run();
    reporter.Stop();
    balancer.Stop();
    acceptor.close();
    io.restart();
    io.run_for(200ms);
    return registered;
  }

  fs::path dir_;
  std::shared_ptr<net::TlsContext> balancer_tls_, mitm_tls_, client_tls_;
};

TEST_F(ReporterTlsTest, AMacRelayedThroughAnotherTlsSessionIsRefused) {
  int relayed = 0;
  EXPECT_TRUE(Registers(/*through_relay=*/false, &relayed)) << "the direct TLS link must work (control)";
  EXPECT_FALSE(Registers(/*through_relay=*/true, &relayed)) << "a relayed MAC was accepted";
  EXPECT_GT(relayed, 0) << "the relay never carried a connection: the refusal proves nothing";
}

}  // namespace
}  // namespace fastchat::balancer
