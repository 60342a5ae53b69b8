// Session: one client connection.
//
// A reader coroutine takes frames one at a time and handles each request to
// completion before reading the next, so replies leave in request order. A
// writer coroutine drains the write queue, gathering many queued frames into
// one write. The queue is bounded: a receiving session whose queue passes
// max_queue_bytes stops taking live deliveries ("lagging") and, once drained,
// catches up from the pending store, which holds every delivery until acked.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>

#include "fastchat/status.h"
#include "frame_queue.h"
#include "server.h"

namespace fastchat::wire {
class Envelope;
}

namespace fastchat::server {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Server::Impl& server, asio::ip::tcp::socket socket);
  ~Session();

  // Starts the reader and writer coroutines.
  void Start();
  // Closes the connection; the coroutines end and the server forgets it.
  void Close();
  // Sends a serialized Error push then closes (e.g. DISPLACED).
  void CloseWith(const Status& why);

  // A stored delivery for this session's user (receiving sessions only).
  void Deliver(std::uint64_t seq, const std::shared_ptr<const std::string>& event);

  // Stops live pushes and reads new deliveries from the store (used when a
  // mesh link could not carry them).
  void CatchUpFromStore();

  std::uint64_t user_id() const { return user_id_; }

 private:
  asio::awaitable<void> ReadLoop();
  asio::awaitable<void> WriteLoop();
  // Sends pending deliveries after last_sent_seq_ until none are left, then
  // goes live. Sends SyncDone at the end if one was asked for.
  asio::awaitable<void> CatchUp();
  void SendEnvelope(const wire::Envelope& env);
  void SendError(std::uint64_t rid, const Status& st);
  void SendOk(std::uint64_t rid, std::uint64_t id = 0, std::uint64_t epoch = 0);
  void StartCatchUp(bool announce);
  // Stops being the user's receiving session (and tells the cluster).
  void LeavePresence();

  // One request. Returns after its reply has been queued.
  asio::awaitable<void> Handle(wire::Envelope& env);
  asio::awaitable<Status> HandleRegister(const wire::Envelope& env);
  asio::awaitable<Status> HandleLogin(const wire::Envelope& env);
  asio::awaitable<Status> HandleLoggedIn(const wire::Envelope& env);

  Server::Impl& server_;
  asio::ip::tcp::socket socket_;
  FrameQueue out_;
  bool closed_ = false;
  bool handshaken_ = false;

  std::uint64_t user_id_ = 0;  // 0 until login
  std::string user_name_;
  bool receiving_ = false;
  bool live_ = false;           // receiving and caught up: take live deliveries
  bool catching_up_ = false;    // a CatchUp coroutine is running
  bool announce_pending_ = false;  // send SyncDone when the catch-up ends
  bool missed_ = false;            // a push was skipped while catching up
  std::uint64_t last_sent_seq_ = 0;
};

}  // namespace fastchat::server
