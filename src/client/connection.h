// Connection: one TCP connection to a FastChat server (docs/protocol.md).
//
// Promises:
// - Frames go out in the order they are queued, written by a single writer
//   coroutine; frames are read by a single reader coroutine.
// - Every request gets a fresh non-zero rid and completes exactly once: with
//   its reply, with a timeout, or with kIOError when the connection closes.
//   An Error reply becomes a non-OK Status carrying the wire code.
// - Pushes (rid 0: Deliver, SyncDone, Error{DISPLACED}) are handed to the push
//   handler in arrival order, synchronously from the reader, together with
//   the raw frame payload. A Ping is answered with a Pong at once.
// - When the server refuses the connection (an Error push of BUSY,
//   RATE_LIMITED or LIMIT_REACHED, then the close), requests still open end
//   with that refusal rather than a bare "connection closed".
// - Pushes are flow-controlled: while the push receiver says it is full
//   (set_push_full), the reader takes no more frames (they wait in the
//   socket's and the server's buffers; the server keeps deliveries until
//   they are acknowledged), except while a request waits for its reply,
//   which may be behind pushes. ResumeReading goes on; so does Start.
// - The close handler runs once, when the connection ends for any reason
//   other than Close() (with close_on_timeout, a request left unanswered
//   past the request timeout ends the connection too).
// - TCP keepalive is on, so a silently vanished server is noticed within
//   about half a minute even when idle.
// Single-threaded: use only from the thread running the io_context.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <asio/awaitable.hpp>

#include "fastchat/status.h"
#include "server_trust.h"

namespace asio {
class io_context;
}  // namespace asio

namespace fastchat::wire {
class Envelope;
class Error;
}  // namespace fastchat::wire

namespace fastchat::client {

// The Status an Error frame stands for: its code, and its message followed
// by "; try again in 1.5 s" when it carries a retry time.
Status ErrorStatus(const wire::Error& e);

class Connection {
 public:
  using PushHandler = std::function<void(wire::Envelope& env, std::string_view raw)>;
  using CloseHandler = std::function<void(const Status& why)>;
  // A request in flight (see Start/Wait).
  struct Call;

  static constexpr std::chrono::seconds kRequestTimeout{30};

  explicit Connection(asio::io_context& ioc);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void set_push_handler(PushHandler h);
  // Flow control (see the promises): `full` says whether the push receiver
  // can take no more pushes now; ResumeReading tells a paused reader that
  // it may have room again.
  void set_push_full(std::function<bool()> full);
  void ResumeReading();
  void set_close_handler(CloseHandler h);
  // Reply deadline of requests started from now on (default kRequestTimeout).
  void set_request_timeout(std::chrono::milliseconds t);
  // If set, a request that times out closes the connection (the close
  // handler runs): a server that stops answering is treated as gone.
  void set_close_on_timeout(bool on);

  // How the server's TLS certificate is checked (default: TLS, trust on
  // first use with no file, i.e. refused unless pinned). Before Connect.
  void set_tls(TlsTrust trust);

  // Resolves and connects (10 s limit), does the TLS handshake and checks the
  // server's identity (server_trust.h), starts reading and writing, and does
  // the Hello/HelloOk handshake.
  asio::awaitable<Status> Connect(std::string host, std::string port);

  // Sends `req` (its rid is set here) and waits for the reply.
  asio::awaitable<Status> Request(const wire::Envelope& req, wire::Envelope* reply);

  // Pipelining: Start queues the request now; Wait collects its reply later.
  // Replies arrive in request order, so waiting on the oldest first is best.
  // `timeout` (if not zero) replaces the request timeout for this one.
  std::shared_ptr<Call> Start(const wire::Envelope& req,
                              std::chrono::milliseconds timeout = std::chrono::milliseconds::zero());
  asio::awaitable<Status> Wait(std::shared_ptr<Call> call, wire::Envelope* reply);

  // Queues a message that gets no reply (Ack); a fresh rid is set.
  void Post(const wire::Envelope& msg);

  // Waits until every queued frame has been written (or the connection ends).
  asio::awaitable<void> Drain();

  // Handles bytes read from the server (the reader calls this for each
  // read): whole frames are dispatched as the promises above say. Tests and
  // fuzz/client_fuzz.cc call it directly to play a server without a socket.
  void Receive(std::string_view bytes);

  // Closes the socket; outstanding requests fail with kIOError.
  void Close();
  bool closed() const;

  std::uint32_t max_frame() const;
  std::uint64_t max_image_bytes() const;
  // HelloOk.server_id (empty if the server sent none).
  const std::string& server_id() const;
  // When bytes last arrived from the server (or the connection was made).
  std::chrono::steady_clock::time_point last_heard() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace fastchat::client
