#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include "net/stream.h"
#include "net/tls.h"

namespace fastchat::net {
namespace {

namespace fs = std::filesystem;

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("fastchat-tls-test-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string P(const std::string& name) const { return (dir_ / name).string(); }

  // Runs one TLS connection over loopback: the server echoes what it reads
  // until `want` bytes; returns the client's handshake status.
  struct Result {
    Status client_hs, server_hs;
    std::string client_saw_fp, server_binding, client_binding, echoed;
  };
  Result Run(std::shared_ptr<TlsContext> server_ctx, std::shared_ptr<TlsContext> client_ctx,
             const std::string& server_name, const std::string& payload_piece, int pieces) {
    Result r;
    asio::io_context io;
    asio::ip::tcp::acceptor acceptor(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    auto port = acceptor.local_endpoint().port();
    const std::size_t want = payload_piece.size() * static_cast<std::size_t>(pieces);
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          Stream s(co_await acceptor.async_accept(io, asio::use_awaitable), server_ctx);
          r.server_hs = co_await s.Handshake(Stream::Role::kServer);
          if (!r.server_hs.ok()) co_return;
          r.server_binding = s.ChannelBinding("EXPORTER-fastchat-test");
          std::string got;
          char buf[4096];
          try {
            while (got.size() < want) got.append(buf, co_await s.ReadSome(asio::buffer(buf)));
            co_await s.Write(asio::buffer(got));
          } catch (const std::exception&) {
          }
        },
        asio::detached);
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          Socket sock(io);
          co_await sock.async_connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port),
                                      asio::use_awaitable);
          Stream s(std::move(sock), client_ctx);
          r.client_hs = co_await s.Handshake(Stream::Role::kClient, server_name);
          if (!r.client_hs.ok()) co_return;
          r.client_saw_fp = s.PeerFingerprint();
          r.client_binding = s.ChannelBinding("EXPORTER-fastchat-test");
          std::vector<asio::const_buffer> bufs(static_cast<std::size_t>(pieces), asio::buffer(payload_piece));
          co_await s.Write(bufs);
          char buf[4096];
          while (r.echoed.size() < want) r.echoed.append(buf, co_await s.ReadSome(asio::buffer(buf)));
        },
        asio::detached);
    io.run();
    return r;
  }

  fs::path dir_;
};

TEST_F(TlsTest, PinnedHandshakeEchoesAndBothEndsShareTheChannelBinding) {
  std::string fp, fp2;
  ASSERT_TRUE(GenerateSelfSigned(P("c.pem"), P("k.pem"), "localhost", &fp).ok());
  std::shared_ptr<TlsContext> server, client;
  ASSERT_TRUE(MakeServerTls(P("c.pem"), P("k.pem"), &server, &fp2).ok());
  EXPECT_EQ(fp, fp2);
  ASSERT_TRUE(FileFingerprint(P("c.pem"), &fp2).ok());
  EXPECT_EQ(fp, fp2);
  ASSERT_TRUE(MakeClientTls("", &client).ok());
  // 3000 small buffers: Write coalesces them into records.
  Result r = Run(server, client, "localhost", std::string(37, 'x') + "|", 3000);
  ASSERT_TRUE(r.client_hs.ok()) << r.client_hs.ToString();
  ASSERT_TRUE(r.server_hs.ok()) << r.server_hs.ToString();
  EXPECT_EQ(r.client_saw_fp, fp);
  EXPECT_EQ(r.server_binding.size(), 32u);
  EXPECT_EQ(r.server_binding, r.client_binding);
  EXPECT_EQ(r.echoed.size(), 38u * 3000);
  EXPECT_EQ(r.echoed.substr(0, 38), std::string(37, 'x') + "|");
}

TEST_F(TlsTest, CaVerificationAcceptsTheRightNameAndRefusesOthers) {
  std::string fp;
  ASSERT_TRUE(GenerateSelfSigned(P("c.pem"), P("k.pem"), "chat.example", &fp).ok());
  ASSERT_TRUE(GenerateSelfSigned(P("other.pem"), P("other.key"), "chat.example", nullptr).ok());
  std::shared_ptr<TlsContext> server, trusting, wrong_ca;
  ASSERT_TRUE(MakeServerTls(P("c.pem"), P("k.pem"), &server, nullptr).ok());
  ASSERT_TRUE(MakeClientTls(P("c.pem"), &trusting).ok());
  ASSERT_TRUE(MakeClientTls(P("other.pem"), &wrong_ca).ok());
  EXPECT_TRUE(Run(server, trusting, "chat.example", "hi", 1).client_hs.ok());
  Status wrong_name = Run(server, trusting, "evil.example", "hi", 1).client_hs;
  EXPECT_FALSE(wrong_name.ok());
  // An address is checked as an address: this certificate names none.
  Status wrong_address = Run(server, trusting, "127.0.0.1", "hi", 1).client_hs;
  EXPECT_FALSE(wrong_address.ok());
  Status untrusted = Run(server, wrong_ca, "chat.example", "hi", 1).client_hs;
  EXPECT_FALSE(untrusted.ok());
  EXPECT_NE(untrusted.message().find("not trusted"), std::string::npos) << untrusted.ToString();
}

TEST_F(TlsTest, GeneratedKeyIsPrivateAndNeverOverwritten) {
  ASSERT_TRUE(GenerateSelfSigned(P("c.pem"), P("k.pem"), "localhost", nullptr).ok());
  struct stat st {};
  ASSERT_EQ(::stat(P("k.pem").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto before = fs::file_size(P("k.pem"));
  EXPECT_FALSE(GenerateSelfSigned(P("c2.pem"), P("k.pem"), "localhost", nullptr).ok());
  EXPECT_EQ(fs::file_size(P("k.pem")), before);
  EXPECT_FALSE(fs::exists(P("c2.pem")));
}

TEST_F(TlsTest, LoadOrCreateCreatesOnceThenLoadsTheSamePair) {
  std::shared_ptr<TlsContext> a, b;
  std::string fa, fb;
  bool created = false;
  ASSERT_TRUE(LoadOrCreateServerTls(P("c.pem"), P("k.pem"), "localhost", &a, &fa, &created).ok());
  EXPECT_TRUE(created);
  ASSERT_TRUE(LoadOrCreateServerTls(P("c.pem"), P("k.pem"), "localhost", &b, &fb, &created).ok());
  EXPECT_FALSE(created);
  EXPECT_EQ(fa, fb);
}

TEST_F(TlsTest, MismatchedKeyIsRefused) {
  ASSERT_TRUE(GenerateSelfSigned(P("c.pem"), P("k.pem"), "localhost", nullptr).ok());
  ASSERT_TRUE(GenerateSelfSigned(P("c2.pem"), P("k2.pem"), "localhost", nullptr).ok());
  std::shared_ptr<TlsContext> ctx;
  Status st = MakeServerTls(P("c.pem"), P("k2.pem"), &ctx, nullptr);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("mismatch"), std::string::npos) << st.ToString();
}

TEST(FingerprintTest, ParseAcceptsColonsCaseAndPrefixOnly32Bytes) {
  const std::string hex(64, 'a');
  std::string out;
  EXPECT_TRUE(ParseFingerprint(hex, &out));
  EXPECT_EQ(out, hex);
  std::string colons;
  for (int i = 0; i < 32; ++i) colons += std::string(i ? ":" : "") + "AB";
  EXPECT_TRUE(ParseFingerprint("SHA256:" + colons, &out));
  EXPECT_EQ(out, std::string(64, 'a').replace(0, 64, [] {
    std::string s;
    for (int i = 0; i < 32; ++i) s += "ab";
    return s;
  }()));
  EXPECT_FALSE(ParseFingerprint(std::string(62, 'a'), &out));
  EXPECT_FALSE(ParseFingerprint(std::string(63, 'a') + "g", &out));
  EXPECT_FALSE(ParseFingerprint("", &out));
}

}  // namespace
}  // namespace fastchat::net
