// Session: one connection to the balancer, from a chat server or a client.
//
// On connect the session sends Hello with a fresh challenge. A peer that
// answers with a valid ServerAuth becomes a server session and may send
// ServerReports; any peer may send GetServer. A reader coroutine handles one
// frame at a time, so replies leave in request order; a writer coroutine
// drains the write queue. Closing a server session takes its server out of
// the table (if no newer connection has reported for it since).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

#include "balancer.h"
#include "balancer.pb.h"
#include "fastchat/frame.h"
#include "net/stream.h"
#include "peer_protocol.h"
#include "server_table.h"

namespace fastchat::balancer {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Balancer::Impl& balancer, net::Socket socket, std::uint64_t id);
  ~Session();

  // Sends Hello and starts the reader and writer coroutines.
  void Start();
  // Closes the connection at once; the balancer forgets the session.
  void Close();

  ServerTable::Clock::time_point last_activity() const { return last_activity_; }
  const std::string& peer() const { return peer_; }

 private:
  // The TLS handshake, the Hello, then the read and write loops.
  asio::awaitable<void> Run();
  asio::awaitable<void> ReadLoop();
  asio::awaitable<void> WriteLoop();

  void Handle(std::string_view payload);

  void Send(const Envelope& env);
  void SendError(ErrorCode code, const std::string& message);
  // Sends an error, then closes once it is written.
  void CloseWith(ErrorCode code, const std::string& message);
  // Closes once everything queued is written.
  void CloseAfterFlush();

  Balancer::Impl& balancer_;
  net::Stream stream_;
  const std::uint64_t id_;
  std::string peer_;
  // What the frames say, from the Hello on (its challenge and the TLS
  // channel binding go into the ServerAuth MAC).
  std::unique_ptr<PeerProtocol> protocol_;
  FrameDecoder decoder_;
  asio::steady_timer write_signal_;
  std::deque<std::string> queue_;
  std::size_t queued_bytes_ = 0;
  bool closed_ = false;
  bool close_after_flush_ = false;
  ServerTable::Clock::time_point last_activity_;
};

}  // namespace fastchat::balancer
