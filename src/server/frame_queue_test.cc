#include "frame_queue.h"

#include <chrono>
#include <memory>
#include <string>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <gtest/gtest.h>

namespace fastchat::server {
namespace {

// A queue writing to one end of a loopback TCP connection, its writer
// started on demand (as a session's is); the test reads the other end.
struct Connected {
  Connected()
      : acceptor(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)),
        peer(io),
        stream([this] {
          net::Socket s(io);
          s.connect(acceptor.local_endpoint());
          return s;
        }()) {
    acceptor.accept(peer);
    queue.SetWriter(
        [](void* context) {
          auto* self = static_cast<Connected*>(context);
          ++self->writers_started;
          asio::co_spawn(
              self->io, [self]() -> asio::awaitable<void> { co_await self->queue.Run(self->stream); },
              asio::detached);
        },
        this);
  }

  // Runs the loop until it has nothing left to do (at most 1 s).
  void RunLoop() {
    io.restart();
    io.run_for(std::chrono::seconds(1));
  }

  // What has arrived at the peer (a write to loopback is there at once).
  std::string Arrived() {
    std::string got(peer.available(), '\0');
    if (!got.empty()) asio::read(peer, asio::buffer(got));
    return got;
  }

  asio::io_context io;
  asio::ip::tcp::acceptor acceptor;
  net::Socket peer;
  net::Stream stream;
  FrameQueue queue;
  int writers_started = 0;
};

TEST(FrameQueueTest, HeldFramesWaitForTheNextPushAndLeaveBeforeIt) {
  Connected c;
  c.queue.PushHeld("held-1|", nullptr);
  c.queue.PushHeld("held-2:", std::make_shared<const std::string>("body|"));
  c.RunLoop();
  EXPECT_EQ(c.writers_started, 0) << "a held frame started a writer";
  EXPECT_EQ(c.Arrived(), "") << "a held frame was written before any Push";
  EXPECT_EQ(c.queue.bytes(), 19u);

  c.queue.Push("reply|");
  c.RunLoop();
  EXPECT_EQ(c.writers_started, 1);
  EXPECT_EQ(c.Arrived(), "held-1|held-2:body|reply|");
  EXPECT_EQ(c.queue.bytes(), 0u);
}

TEST(FrameQueueTest, AHeldFrameGoesWithAWriterAlreadyStarted) {
  Connected c;
  c.queue.Push("first|");  // starts a writer, which runs once the loop does
  c.queue.PushHeld("held|", nullptr);
  c.RunLoop();
  EXPECT_EQ(c.writers_started, 1);
  EXPECT_EQ(c.Arrived(), "first|held|");
}

}  // namespace
}  // namespace fastchat::server
