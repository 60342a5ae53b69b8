#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <gtest/gtest.h>

#include "net/stream.h"
#include "net/tls.h"

namespace fastchat::net {
namespace {

using namespace std::chrono_literals;

asio::awaitable<Socket> Connect(asio::io_context& io, unsigned short port) {
  Socket socket(io);
  co_await socket.async_connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port),
                                asio::use_awaitable);
  co_return socket;
}

// What the write tests send: 3,000 buffers of 0-96 bytes, one of them
// replaced by 1 MiB (larger than the socket buffers), and their bytes in
// order.
struct Pieces {
  std::vector<std::string> pieces;
  std::string want;
  std::vector<asio::const_buffer> Buffers() const {
    std::vector<asio::const_buffer> bufs;
    for (const std::string& p : pieces) bufs.emplace_back(p.data(), p.size());
    return bufs;
  }
};

Pieces MakePieces() {
  Pieces out;
  for (int i = 0; i < 3000; ++i) {
    std::string piece(static_cast<std::size_t>(i % 97), '\0');
    for (std::size_t k = 0; k < piece.size(); ++k) piece[k] = static_cast<char>('a' + (i + k) % 26);
    if (i == 1500) piece = std::string(1 << 20, 'Z');
    out.want += piece;
    out.pieces.push_back(std::move(piece));
  }
  return out;
}

// A plain Stream's Write hands the kernel many buffers per sendmsg; with
// small socket buffers and a slow reader every call is partial or would
// block, and still every byte arrives once, in order: buffers of every
// size (empty ones too, and one larger than the socket buffers), more of
// them than one sendmsg takes.
TEST(PlainStreamTest, WriteSendsEveryBufferInOrderThroughPartialSends) {
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto port = acceptor.local_endpoint().port();
  const Pieces p = MakePieces();
  const std::string& want = p.want;
  std::string got;
  int progressed = 0;
  bool wrote = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        Socket peer = co_await acceptor.async_accept(io, asio::use_awaitable);
        peer.set_option(asio::socket_base::receive_buffer_size(64 * 1024));
        asio::steady_timer pause(io);
        char buf[16 * 1024];
        for (int reads = 1; got.size() < want.size(); ++reads) {
          got.append(buf, co_await peer.async_read_some(asio::buffer(buf), asio::use_awaitable));
          if (reads % 8 == 0) {  // now and then, let the writer's buffer fill
            pause.expires_after(1ms);
            co_await pause.async_wait(asio::use_awaitable);
          }
        }
      },
      asio::detached);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        Socket socket = co_await Connect(io, port);
        socket.set_option(asio::socket_base::send_buffer_size(64 * 1024));
        Stream stream(std::move(socket));
        co_await stream.Write(p.Buffers(), [&] { ++progressed; });
        wrote = true;
      },
      asio::detached);
  io.run_for(60s);
  ASSERT_TRUE(wrote);
  ASSERT_EQ(got.size(), want.size());
  EXPECT_TRUE(got == want) << "the bytes arrived out of order";
  // Through 64 KiB socket buffers the 1 MiB buffer alone takes several
  // calls; each call that sent something is progress.
  EXPECT_GE(progressed, 4);
}

// ReadNow on a plain stream never waits: with nothing arrived it says
// would_block at once (Asio's own non-blocking flag, not only the fd's:
// without it Asio's read_some would poll until data came), then it reads
// what has arrived, and the end of the stream is eof.
TEST(PlainStreamTest, ReadNowSaysWouldBlockThenReadsWhatArrivedThenEof) {
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto port = acceptor.local_endpoint().port();
  asio::error_code first, after_data, at_end;
  std::string got;
  bool done = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        Socket peer = co_await acceptor.async_accept(io, asio::use_awaitable);
        asio::steady_timer pause(io);
        pause.expires_after(100ms);  // the reader has tried once by now
        co_await pause.async_wait(asio::use_awaitable);
        co_await asio::async_write(peer, asio::buffer(std::string("hello")), asio::use_awaitable);
        pause.expires_after(100ms);
        co_await pause.async_wait(asio::use_awaitable);
        peer.close();
      },
      asio::detached);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        Stream stream(co_await Connect(io, port));
        char buf[64];
        stream.ReadNow(asio::buffer(buf), first);
        co_await stream.socket().async_wait(stream.ReadWaitsFor(), asio::use_awaitable);
        got.append(buf, stream.ReadNow(asio::buffer(buf), after_data));
        stream.ReadNow(asio::buffer(buf), after_data);  // nothing more yet
        co_await stream.socket().async_wait(stream.ReadWaitsFor(), asio::use_awaitable);
        stream.ReadNow(asio::buffer(buf), at_end);
        done = true;
      },
      asio::detached);
  io.run_for(10s);
  ASSERT_TRUE(done);
  EXPECT_EQ(first, asio::error::would_block) << first.message();
  EXPECT_EQ(got, "hello");
  EXPECT_EQ(after_data, asio::error::would_block) << after_data.message();
  EXPECT_EQ(at_end, asio::error::eof) << at_end.message();
}

// A write to a peer that has gone fails with an error (no SIGPIPE, no
// hang), once the kernel knows.
TEST(PlainStreamTest, WriteToAClosedPeerThrows) {
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto port = acceptor.local_endpoint().port();
  bool threw = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        Socket peer = co_await acceptor.async_accept(io, asio::use_awaitable);
        peer.close();
      },
      asio::detached);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        Socket socket = co_await Connect(io, port);
        Stream stream(std::move(socket));
        asio::steady_timer pause(io);
        pause.expires_after(50ms);  // the peer's close is in
        co_await pause.async_wait(asio::use_awaitable);
        const std::string chunk(1 << 16, 'x');
        std::vector<asio::const_buffer> bufs(64, asio::buffer(chunk));
        try {
          for (int i = 0; i < 100; ++i) co_await stream.Write(bufs);
        } catch (const asio::system_error&) {
          threw = true;
        }
      },
      asio::detached);
  io.run_for(30s);
  EXPECT_TRUE(threw);
}


// TLS streams (the server's default transport): contexts from a fresh
// self-signed certificate; the client pins nothing (no verification).
class TlsStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("fastchat-stream-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    const std::string cert = (dir_ / "c.pem").string(), key = (dir_ / "k.pem").string();
    ASSERT_TRUE(GenerateSelfSigned(cert, key, "localhost", nullptr).ok());
    ASSERT_TRUE(MakeServerTls(cert, key, &server_ctx, nullptr).ok());
    ASSERT_TRUE(MakeClientTls("", &client_ctx).ok());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path dir_;
  std::shared_ptr<TlsContext> server_ctx, client_ctx;
};

// A connected pair of TLS streams over loopback (the test's io_context),
// with 64 KiB socket buffers so large writes block part way.
struct TlsPair {
  std::unique_ptr<Stream> server, client;
};

asio::awaitable<TlsPair> Connect(asio::io_context& io, std::shared_ptr<TlsContext> server_ctx,
                                 std::shared_ptr<TlsContext> client_ctx) {
  asio::ip::tcp::acceptor acceptor(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  Socket c(io);
  co_await c.async_connect(acceptor.local_endpoint(), asio::use_awaitable);
  Socket s = co_await acceptor.async_accept(io, asio::use_awaitable);
  s.set_option(asio::socket_base::send_buffer_size(64 * 1024));
  c.set_option(asio::socket_base::receive_buffer_size(64 * 1024));
  TlsPair p{std::make_unique<Stream>(std::move(s), server_ctx), std::make_unique<Stream>(std::move(c), client_ctx)};
  Status server_hs;
  bool server_done = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        server_hs = co_await p.server->Handshake(Stream::Role::kServer);
        server_done = true;
      },
      asio::detached);
  Status client_hs = co_await p.client->Handshake(Stream::Role::kClient, "localhost");
  asio::steady_timer t(io);
  while (!server_done) {
    t.expires_after(1ms);
    co_await t.async_wait(asio::use_awaitable);
  }
  if (!server_hs.ok() || !client_hs.ok()) throw std::runtime_error(server_hs.ToString() + " / " + client_hs.ToString());
  co_return p;
}

// TLS on the socket: a Write of many buffers through small socket buffers
// to a reader that pauses blocks part way (OpenSSL asks for writability and
// the write resumes with the same bytes), and a reader that takes what has
// arrived with ReadNow until would_block, then waits for ReadWaitsFor(),
// gets every byte once, in order: buffers of every size, empty ones and one
// of 1 MiB among them.
TEST_F(TlsStreamTest, WriteThroughSmallSocketBuffersAndReadNowUntilWouldBlockKeepEveryByteInOrder) {
  const Pieces pieces = MakePieces();
  const std::string& want = pieces.want;
  asio::io_context io;
  std::string got;
  int progressed = 0, would_blocks = 0;
  bool wrote = false, read_all = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        TlsPair p = co_await Connect(io, server_ctx, client_ctx);
        asio::co_spawn(
            io,
            [&, server = p.server.get()]() -> asio::awaitable<void> {
              co_await server->Write(pieces.Buffers(), [&] { ++progressed; });
              wrote = true;
            },
            asio::detached);
        asio::steady_timer pause(io);
        char buf[5000];  // smaller than a record: a record is read in pieces
        for (int reads = 1; got.size() < want.size(); ++reads) {
          asio::error_code ec;
          const std::size_t n = p.client->ReadNow(asio::buffer(buf), ec);
          if (ec == asio::error::would_block) {
            ++would_blocks;
            co_await p.client->socket().async_wait(p.client->ReadWaitsFor(), asio::use_awaitable);
            continue;
          }
          if (ec) throw asio::system_error(ec);
          got.append(buf, n);
          if (reads % 64 == 0) {  // now and then, let the writer's buffer fill
            pause.expires_after(1ms);
            co_await pause.async_wait(asio::use_awaitable);
          }
        }
        read_all = true;
        while (!wrote) {  // keep the streams until the writer is done
          pause.expires_after(1ms);
          co_await pause.async_wait(asio::use_awaitable);
        }
      },
      asio::detached);
  io.run_for(60s);
  ASSERT_TRUE(wrote);
  ASSERT_TRUE(read_all);
  ASSERT_EQ(got.size(), want.size());
  EXPECT_TRUE(got == want) << "the bytes arrived out of order";
  // Every record written is progress: the 1 MiB buffer alone is 64 records.
  EXPECT_GE(progressed, 64);
  EXPECT_GE(would_blocks, 1);
}

// The end of a TLS stream (the peer closes without close_notify, as
// FastChat does) is asio::error::eof to ReadNow and ReadSome alike, and a
// write to a peer that has gone throws (no SIGPIPE: OpenSSL writes through
// send with MSG_NOSIGNAL).
TEST_F(TlsStreamTest, APeerThatClosesIsEofAndWritingToItThrows) {
  asio::io_context io;
  asio::error_code now_ec, some_ec;
  bool write_threw = false, done = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        TlsPair p = co_await Connect(io, server_ctx, client_ctx);
        co_await p.server->Write(asio::buffer(std::string("last words")));
        p.server->Close();
        TlsPair q = co_await Connect(io, server_ctx, client_ctx);  // its client only writes
        q.server->Close();
        asio::steady_timer pause(io);
        pause.expires_after(50ms);  // the closes are in
        co_await pause.async_wait(asio::use_awaitable);
        char buf[64];
        std::string got;
        for (;;) {
          const std::size_t n = p.client->ReadNow(asio::buffer(buf), now_ec);
          if (now_ec) break;
          got.append(buf, n);
        }
        EXPECT_EQ(got, "last words");
        try {
          co_await p.client->ReadSome(asio::buffer(buf));
        } catch (const asio::system_error& e) {
          some_ec = e.code();
        }
        const std::string chunk(1 << 16, 'x');
        std::vector<asio::const_buffer> bufs(64, asio::buffer(chunk));
        try {
          for (int i = 0; i < 100; ++i) co_await q.client->Write(bufs);
        } catch (const asio::system_error&) {
          write_threw = true;
        }
        done = true;
      },
      asio::detached);
  io.run_for(30s);
  ASSERT_TRUE(done);
  EXPECT_EQ(now_ec, asio::error::eof) << now_ec.message();
  EXPECT_EQ(some_ec, asio::error::eof) << some_ec.message();
  EXPECT_TRUE(write_threw);
}

}  // namespace
}  // namespace fastchat::net
