#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include "net/stream.h"

namespace fastchat::net {
namespace {

using namespace std::chrono_literals;

asio::awaitable<Socket> Connect(asio::io_context& io, unsigned short port) {
  Socket socket(io);
  co_await socket.async_connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port),
                                asio::use_awaitable);
  co_return socket;
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
  std::vector<std::string> pieces;
  std::string want;
  for (int i = 0; i < 3000; ++i) {
    std::string piece(static_cast<std::size_t>(i % 97), '\0');
    for (std::size_t k = 0; k < piece.size(); ++k) piece[k] = static_cast<char>('a' + (i + k) % 26);
    if (i == 1500) piece = std::string(1 << 20, 'Z');
    want += piece;
    pieces.push_back(std::move(piece));
  }
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
        std::vector<asio::const_buffer> bufs;
        for (const std::string& p : pieces) bufs.emplace_back(p.data(), p.size());
        co_await stream.Write(bufs, [&] { ++progressed; });
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

}  // namespace
}  // namespace fastchat::net
