// Connection's flow control of pushes, without a socket (Receive plays the
// server): a full receiver stops the reader, a request waiting for its
// reply lets it read on until the reply, and room lets it go on.
#include "connection.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include <asio/io_context.hpp>

#include "fastchat.pb.h"
#include "fastchat/frame.h"

namespace fastchat::client {
namespace {

void AddDeliver(std::uint64_t seq, std::string* bytes) {
  wire::Envelope d;
  d.mutable_deliver()->set_seq(seq);
  AppendFrame(d.SerializeAsString(), bytes);
}

TEST(ConnectionFlow, PushesStopAtAFullReceiverGoOnForAReplyAndWithRoom) {
  asio::io_context ioc;
  Connection c(ioc);
  std::vector<std::uint64_t> got;
  std::size_t room = 3;
  c.set_push_handler([&got](wire::Envelope& env, std::string_view) { got.push_back(env.deliver().seq()); });
  c.set_push_full([&] { return got.size() >= room; });

  std::string bytes;
  for (std::uint64_t seq = 1; seq <= 5; ++seq) AddDeliver(seq, &bytes);
  wire::Envelope reply;
  reply.set_rid(1);  // the first request's
  reply.mutable_pong();
  AppendFrame(reply.SerializeAsString(), &bytes);
  for (std::uint64_t seq = 6; seq <= 8; ++seq) AddDeliver(seq, &bytes);

  c.Receive(bytes);
  EXPECT_EQ(got, (std::vector<std::uint64_t>{1, 2, 3})) << "read on past a full receiver";

  // A request waits: its reply may be behind pushes, so they are read, up
  // to the reply.
  wire::Envelope ping;
  ping.mutable_ping();
  auto call = c.Start(ping);
  c.Receive("");
  EXPECT_EQ(got, (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_FALSE(c.closed());

  room = 100;
  c.ResumeReading();
  c.Receive("");
  EXPECT_EQ(got, (std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
}

}  // namespace
}  // namespace fastchat::client
