// Stream: one connected TCP socket, with or without TLS on top; what every
// FastChat connection (server session, client, mesh link, balancer link)
// reads and writes through.
//
// Promises:
// - A plain Stream is the socket itself; a TLS Stream does nothing until
//   Handshake() has succeeded.
// - One ReadSome and one Write may be outstanding at once (full duplex);
//   neither may be started twice concurrently. ReadNow never waits.
// - TLS runs OpenSSL on the socket itself (non-blocking) and holds no buffer
//   of its own while idle.
// - Write writes every buffer, in order; on TLS it coalesces them into
//   records of up to 16 KiB so a burst of small frames costs few syscalls;
//   plain, it hands the kernel up to 1,024 buffers per sendmsg (the socket
//   is put in non-blocking mode; a full socket buffer is waited for).
// - Errors are thrown as asio::system_error (as Asio's use_awaitable does).
// Single-threaded: use from the thread running its executor.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>

#include "fastchat/status.h"

namespace fastchat::net {

class TlsContext;

// The TCP socket of every Stream: bound to an io_context's executor (one
// pointer) rather than Asio's default, the polymorphic any_io_executor, which
// costs ~40 bytes in the socket and again in every operation pending on it:
// an idle server connection holds one of each (docs/performance.md, "Idle
// connections"). Accept with acceptor.async_accept(io, token), or construct
// from the io_context.
using Socket = asio::basic_stream_socket<asio::ip::tcp, asio::io_context::executor_type>;

class Stream {
 public:
  enum class Role { kClient, kServer };

  // Plain TCP.
  explicit Stream(Socket socket);
  // TLS over `socket` using `ctx` (kept alive by the Stream); plain TCP if
  // ctx is null.
  Stream(Socket socket, std::shared_ptr<TlsContext> ctx);
  // A socket not connected yet (connect socket() before Handshake); TLS
  // if ctx is set.
  explicit Stream(asio::io_context& io, std::shared_ptr<TlsContext> ctx = nullptr);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  bool tls() const { return tls_ != nullptr; }
  // The TCP socket under any TLS (for options, endpoints, waits, close).
  Socket& socket();

  // The TLS handshake; OK at once on a plain stream. A client sends
  // `server_name` (SNI) and, with a CA-verifying context, checks the
  // certificate names it. Never throws.
  asio::awaitable<Status> Handshake(Role role, std::string server_name = {});

  // SHA-256 fingerprint of the peer's certificate (tls.h); empty if none.
  std::string PeerFingerprint() const;
  // 32 bytes of TLS keying material (RFC 8446 exporter, `label`) that both
  // ends share only if no one sits between them; empty on plain TCP. Mixed
  // into the cluster-secret MACs so a relayed challenge fails.
  std::string ChannelBinding(const std::string& label) const;

  // Waits for at least one byte (throws at the end of the stream, as
  // asio::error::eof, or on any error).
  asio::awaitable<std::size_t> ReadSome(asio::mutable_buffer buf);
  // Reads what has already arrived, without waiting: ec is
  // asio::error::would_block if there is nothing yet (then wait for
  // ReadWaitsFor() on socket() and call again), eof at the end of the
  // stream. On TLS, only would_block says that nothing is held: OpenSSL
  // may keep bytes the socket no longer shows, so read until it.
  std::size_t ReadNow(asio::mutable_buffer buf, asio::error_code& ec);
  // What the last ReadNow that gave would_block waits for: readable, or
  // (TLS, rarely) writable.
  Socket::wait_type ReadWaitsFor() const;
  // `progressed` (if set) runs whenever some bytes have been written (the
  // write-stall deadline watches it).
  asio::awaitable<void> Write(const std::vector<asio::const_buffer>& bufs,
                              const std::function<void()>& progressed = {});
  asio::awaitable<void> Write(asio::const_buffer buf);

  // Shuts down and closes the socket (no TLS close_notify: it could block).
  void Close();

  // The TLS state (stream.cc).
  struct Tls;

 private:
  asio::awaitable<void> WriteTls(const char* data, std::size_t size, const std::function<void()>& progressed);

  Socket socket_;
  std::unique_ptr<Tls> tls_;
};

}  // namespace fastchat::net
