#include "stream.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include <asio/read.hpp>
#include <asio/redirect_error.hpp>
#include <asio/ssl/host_name_verification.hpp>
#include <asio/ssl/stream.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <openssl/ssl.h>

#include "tls_context.h"

namespace fastchat::net {
namespace {
// One TLS record's worth: Asio's SSL write op writes one record per
// SSL_write anyway, and a 16 KiB buffer stays in jemalloc's thread cache
// (a 64 KiB one was fresh pages, faulted in on every write).
constexpr std::size_t kMaxCoalesce = 16 * 1024;
// Buffers per sendmsg on a plain stream (Linux's UIO_MAXIOV is 1024).
constexpr std::size_t kMaxIov = 1024;
}  // namespace

struct Stream::Tls {
  Tls(Socket s, std::shared_ptr<TlsContext> c) : ctx(std::move(c)), stream(std::move(s), ctx->ctx) {}
  std::shared_ptr<TlsContext> ctx;
  asio::ssl::stream<Socket> stream;
};

Stream::Stream(Socket socket) : socket_(std::move(socket)) {}

Stream::Stream(Socket socket, std::shared_ptr<TlsContext> ctx)
    : socket_(socket.get_executor()) {
  if (ctx) {
    tls_ = std::make_unique<Tls>(std::move(socket), std::move(ctx));
  } else {
    socket_ = std::move(socket);
  }
}

Stream::Stream(asio::io_context& io, std::shared_ptr<TlsContext> ctx) : Stream(Socket(io), std::move(ctx)) {}

Stream::~Stream() = default;

Socket& Stream::socket() { return tls_ ? tls_->stream.next_layer() : socket_; }

asio::awaitable<Status> Stream::Handshake(Role role, std::string server_name) {
  if (!tls_) co_return Status::OK();
  SSL* ssl = tls_->stream.native_handle();
  if (role == Role::kClient && !server_name.empty()) {
    SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, server_name.data());
    if (tls_->ctx->verify_chain) tls_->stream.set_verify_callback(asio::ssl::host_name_verification(server_name));
  }
  asio::error_code ec;
  co_await tls_->stream.async_handshake(
      role == Role::kClient ? asio::ssl::stream_base::client : asio::ssl::stream_base::server,
      asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    std::string why = ec.message();
    if (role == Role::kClient && tls_->ctx->verify_chain) {
      long v = SSL_get_verify_result(ssl);
      if (v != X509_V_OK) why = std::string("certificate not trusted: ") + X509_verify_cert_error_string(v);
    }
    co_return Status(Code::kIOError, "TLS handshake failed: " + why);
  }
  co_return Status::OK();
}

std::string Stream::PeerFingerprint() const {
  if (!tls_) return {};
  return CertFingerprint(SSL_get0_peer_certificate(tls_->stream.native_handle()));
}

std::string Stream::ChannelBinding(const std::string& label) const {
  if (!tls_) return {};
  std::string out(32, '\0');
  if (SSL_export_keying_material(tls_->stream.native_handle(), reinterpret_cast<unsigned char*>(out.data()),
                                 out.size(), label.data(), label.size(), nullptr, 0, 0) != 1)
    return {};
  return out;
}

asio::awaitable<std::size_t> Stream::ReadSome(asio::mutable_buffer buf) {
  if (tls_) co_return co_await tls_->stream.async_read_some(buf, asio::use_awaitable);
  co_return co_await socket_.async_read_some(buf, asio::use_awaitable);
}

asio::awaitable<void> Stream::Write(asio::const_buffer buf) {
  if (tls_) {
    co_await asio::async_write(tls_->stream, buf, asio::use_awaitable);
  } else {
    co_await asio::async_write(socket_, buf, asio::use_awaitable);
  }
}

asio::awaitable<void> Stream::Write(const std::vector<asio::const_buffer>& bufs,
                                    const std::function<void()>& progressed) {
  if (!tls_) {
    // sendmsg with up to kMaxIov buffers at a time, where Asio's write op
    // passes at most 64 (32 frames of a head and a body): a drain's writes
    // were half the event loop's time, mostly per call (docs/performance.md,
    // "Frames per sendmsg").
    if (!socket_.native_non_blocking()) socket_.native_non_blocking(true);
    std::size_t i = 0, offset = 0;  // the next byte: bufs[i], `offset` bytes in
    while (i < bufs.size()) {
      thread_local std::array<iovec, kMaxIov> iov;  // filled and used with no co_await between
      std::size_t n = 0;
      for (std::size_t k = i; k < bufs.size() && n < kMaxIov; ++k) {
        const std::size_t skip = k == i ? offset : 0;
        if (bufs[k].size() == skip) continue;
        iov[n].iov_base = const_cast<char*>(static_cast<const char*>(bufs[k].data()) + skip);
        iov[n].iov_len = bufs[k].size() - skip;
        ++n;
      }
      if (n == 0) break;
      msghdr msg{};
      msg.msg_iov = iov.data();
      msg.msg_iovlen = n;
      const ssize_t sent = ::sendmsg(socket_.native_handle(), &msg, MSG_NOSIGNAL);
      if (sent < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
          throw asio::system_error(asio::error_code(errno, asio::error::get_system_category()), "sendmsg");
        }
        co_await socket_.async_wait(Socket::wait_write, asio::use_awaitable);
        continue;
      }
      if (progressed) progressed();
      for (std::size_t left = static_cast<std::size_t>(sent); left > 0;) {
        const std::size_t rest = bufs[i].size() - offset;
        if (left < rest) {
          offset += left;
          break;
        }
        left -= rest;
        ++i;
        offset = 0;
      }
      while (i < bufs.size() && bufs[i].size() == offset) {  // empty buffers, or the end of one
        ++i;
        offset = 0;
      }
    }
    co_return;
  }
  // An SSL stream writes one buffer per record: coalesce small ones so a
  // burst of frames becomes a few large records and a few syscalls.
  std::string staging;
  staging.reserve(kMaxCoalesce);  // once: appends never regrow it
  std::size_t i = 0;
  while (i < bufs.size()) {
    if (bufs[i].size() >= kMaxCoalesce) {
      co_await asio::async_write(tls_->stream, bufs[i], asio::use_awaitable);
      if (progressed) progressed();
      ++i;
      continue;
    }
    staging.clear();
    while (i < bufs.size() && staging.size() + bufs[i].size() <= kMaxCoalesce) {
      staging.append(static_cast<const char*>(bufs[i].data()), bufs[i].size());
      ++i;
    }
    co_await asio::async_write(tls_->stream, asio::buffer(staging), asio::use_awaitable);
    if (progressed) progressed();
  }
}

void Stream::Close() {
  asio::error_code ec;
  Socket& s = socket();
  s.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  s.close(ec);
}

}  // namespace fastchat::net
