#include "stream.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>

#include <asio/ip/address.hpp>
#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/ssl/error.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "openssl_errors.h"
#include "tls_context.h"

namespace fastchat::net {
namespace {
// One TLS record's worth: frames are coalesced into records of up to this
// much, and a 16 KiB buffer stays in jemalloc's thread cache.
constexpr std::size_t kMaxCoalesce = 16 * 1024;
// Buffers per sendmsg on a plain stream (Linux's UIO_MAXIOV is 1024).
constexpr std::size_t kMaxIov = 1024;

asio::system_error SystemError(int err, const char* what) {
  return asio::system_error(asio::error_code(err, asio::error::get_system_category()), what);
}
}  // namespace

// TLS: OpenSSL runs on the socket itself, through a BIO that sends and
// receives on the non-blocking fd (send with MSG_NOSIGNAL: a peer that has
// gone must not raise SIGPIPE). When OpenSSL needs the socket it says so
// (SSL_ERROR_WANT_READ / WANT_WRITE) and the coroutine waits for it. No
// buffers of our own between OpenSSL and the kernel: Asio's SSL stream kept
// four (two 17 KiB engine buffers and a 2 x 17 KiB BIO pair) per
// connection, resident while idle, and copied every byte through two of them
// (docs/performance.md, "TLS on the socket").
struct Stream::Tls {
  explicit Tls(std::shared_ptr<TlsContext> c) : ctx(std::move(c)) {}
  ~Tls() {
    if (ssl != nullptr) SSL_free(ssl);  // frees the BIO too
  }
  Tls(const Tls&) = delete;
  Tls& operator=(const Tls&) = delete;

  std::shared_ptr<TlsContext> ctx;
  SSL* ssl = nullptr;  // made at the handshake, once the socket is open
  int fd = -1;
  bool eof = false;               // the BIO read end of stream
  bool read_wants_write = false;  // the last ReadNow needs the socket writable
};

namespace {

Stream::Tls* BioOwner(BIO* b) { return static_cast<Stream::Tls*>(BIO_get_data(b)); }

int BioWrite(BIO* b, const char* data, int len) {
  BIO_clear_retry_flags(b);
  for (;;) {
    const ssize_t n = ::send(BioOwner(b)->fd, data, static_cast<std::size_t>(len), MSG_NOSIGNAL);
    if (n >= 0) return static_cast<int>(n);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_write(b);
    return -1;
  }
}

int BioRead(BIO* b, char* data, int len) {
  BIO_clear_retry_flags(b);
  for (;;) {
    const ssize_t n = ::recv(BioOwner(b)->fd, data, static_cast<std::size_t>(len), 0);
    if (n > 0) return static_cast<int>(n);
    if (n == 0) {
      BioOwner(b)->eof = true;
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_read(b);
    return -1;
  }
}

long BioCtrl(BIO* b, int cmd, long, void*) {
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_EOF:
      return BioOwner(b)->eof ? 1 : 0;
    default:
      return 0;
  }
}

// The BIO method, made once per process (thread-safe static init).
const BIO_METHOD* SocketBioMethod() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "fastchat socket");
    if (m == nullptr || BIO_meth_set_write(m, BioWrite) != 1 || BIO_meth_set_read(m, BioRead) != 1 ||
        BIO_meth_set_ctrl(m, BioCtrl) != 1) {
      return static_cast<BIO_METHOD*>(nullptr);
    }
    return m;
  }();
  return method;
}

// What a failed SSL call (not WANT_READ / WANT_WRITE) means, as an error
// code; clears OpenSSL's error queue. The end of the stream, with or without
// the peer's close_notify (FastChat closes without one), is asio::error::eof.
asio::error_code TlsFailure(const Stream::Tls& t, int err, int saved_errno) {
  if (err == SSL_ERROR_ZERO_RETURN) return asio::error::eof;
  const unsigned long e = ERR_peek_error();
  if (e == 0) {
    ERR_clear_error();
    if (err == SSL_ERROR_SYSCALL && saved_errno != 0) return {saved_errno, asio::error::get_system_category()};
    if (t.eof) return asio::error::eof;
    return asio::error::connection_aborted;
  }
  ERR_clear_error();
  if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
    return asio::error::eof;
  return {static_cast<int>(e), asio::error::get_ssl_category()};
}

}  // namespace

Stream::Stream(Socket socket) : socket_(std::move(socket)) {}

Stream::Stream(Socket socket, std::shared_ptr<TlsContext> ctx) : socket_(std::move(socket)) {
  if (ctx) tls_ = std::make_unique<Tls>(std::move(ctx));
}

Stream::Stream(asio::io_context& io, std::shared_ptr<TlsContext> ctx) : Stream(Socket(io), std::move(ctx)) {}

Stream::~Stream() = default;

Socket& Stream::socket() { return socket_; }

asio::awaitable<Status> Stream::Handshake(Role role, std::string server_name) {
  if (!tls_) co_return Status::OK();
  Tls& t = *tls_;
  if (t.ssl != nullptr) co_return Status(Code::kInternal, "TLS handshake started twice");
  const BIO_METHOD* method = SocketBioMethod();
  asio::error_code ec;
  if (!socket_.is_open()) co_return Status(Code::kIOError, "TLS handshake failed: the socket is closed");
  socket_.native_non_blocking(true, ec);
  if (ec) co_return Status(Code::kIOError, "TLS handshake failed: " + ec.message());
  ERR_clear_error();
  t.ssl = method != nullptr ? SSL_new(t.ctx->ctx.native_handle()) : nullptr;
  BIO* bio = t.ssl != nullptr ? BIO_new(method) : nullptr;
  if (bio == nullptr) co_return Status(Code::kInternal, "TLS set-up failed: " + OpensslErrors());
  t.fd = socket_.native_handle();
  BIO_set_data(bio, &t);
  BIO_set_init(bio, 1);
  SSL_set_bio(t.ssl, bio, bio);  // the SSL owns it now
  // SSL_write returns after each record (progress for the write deadline);
  // a retried write may pass the same bytes from a different address.
  SSL_set_mode(t.ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // One recv per buffer of records, not two per record (header, body).
  SSL_set_read_ahead(t.ssl, 1);
  if (role == Role::kClient) {
    SSL_set_connect_state(t.ssl);
    if (!server_name.empty()) {
      // SSL_set_tlsext_host_name, without the macro's C cast.
      SSL_ctrl(t.ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, server_name.data());
      if (t.ctx->verify_chain) {
        // The certificate must name server_name (an IP address or a DNS name).
        asio::error_code not_ip;
        asio::ip::make_address(server_name, not_ip);
        const int ok = not_ip ? SSL_set1_host(t.ssl, server_name.c_str())
                              : X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t.ssl), server_name.c_str());
        if (ok != 1) co_return Status(Code::kInternal, "TLS set-up failed: " + OpensslErrors());
      }
    }
  } else {
    SSL_set_accept_state(t.ssl);
  }
  for (;;) {
    ERR_clear_error();
    const int rc = SSL_do_handshake(t.ssl);
    if (rc == 1) co_return Status::OK();
    const int err = SSL_get_error(t.ssl, rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      co_await socket_.async_wait(err == SSL_ERROR_WANT_READ ? Socket::wait_read : Socket::wait_write,
                                  asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return Status(Code::kIOError, "TLS handshake failed: " + ec.message());
      continue;
    }
    const int saved_errno = errno;
    std::string why = OpensslErrors();
    if (why.empty()) why = TlsFailure(t, err, saved_errno).message();
    if (role == Role::kClient && t.ctx->verify_chain) {
      const long v = SSL_get_verify_result(t.ssl);
      if (v != X509_V_OK) why = std::string("certificate not trusted: ") + X509_verify_cert_error_string(v);
    }
    co_return Status(Code::kIOError, "TLS handshake failed: " + why);
  }
}

std::string Stream::PeerFingerprint() const {
  if (!tls_ || tls_->ssl == nullptr) return {};
  return CertFingerprint(SSL_get0_peer_certificate(tls_->ssl));
}

std::string Stream::ChannelBinding(const std::string& label) const {
  if (!tls_ || tls_->ssl == nullptr) return {};
  std::string out(32, '\0');
  if (SSL_export_keying_material(tls_->ssl, reinterpret_cast<unsigned char*>(out.data()), out.size(), label.data(),
                                 label.size(), nullptr, 0, 0) != 1)
    return {};
  return out;
}

std::size_t Stream::ReadNow(asio::mutable_buffer buf, asio::error_code& ec) {
  ec.clear();
  if (!tls_) {
    // Asio's own flag, not only the fd's: without it read_some polls.
    if (!socket_.non_blocking()) socket_.non_blocking(true, ec);
    if (ec) return 0;
    return socket_.read_some(buf, ec);
  }
  Tls& t = *tls_;
  t.read_wants_write = false;
  if (t.ssl == nullptr) {
    ec = asio::error::not_connected;
    return 0;
  }
  if (buf.size() == 0) return 0;
  ERR_clear_error();
  const int n = SSL_read(t.ssl, buf.data(), static_cast<int>(std::min<std::size_t>(buf.size(), INT_MAX)));
  if (n > 0) return static_cast<std::size_t>(n);
  const int saved_errno = errno;
  const int err = SSL_get_error(t.ssl, n);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    t.read_wants_write = err == SSL_ERROR_WANT_WRITE;
    ec = asio::error::would_block;
    return 0;
  }
  ec = TlsFailure(t, err, saved_errno);
  return 0;
}

Socket::wait_type Stream::ReadWaitsFor() const {
  return tls_ && tls_->read_wants_write ? Socket::wait_write : Socket::wait_read;
}

asio::awaitable<std::size_t> Stream::ReadSome(asio::mutable_buffer buf) {
  if (!tls_) co_return co_await socket_.async_read_some(buf, asio::use_awaitable);
  bool waited = false;
  for (;;) {
    asio::error_code ec;
    const std::size_t n = ReadNow(buf, ec);
    if (ec != asio::error::would_block) {
      // Like an Asio read, this never completes inline: the loop runs other
      // work first. A reader that loops on ReadSome must not starve the
      // rest while its peer keeps sending (and code after a co_spawn runs
      // before the spawned reader sees what had already arrived).
      if (!waited) co_await asio::post(socket_.get_executor(), asio::use_awaitable);
      if (ec) throw asio::system_error(ec, "TLS read");
      co_return n;
    }
    co_await socket_.async_wait(ReadWaitsFor(), asio::use_awaitable);
    waited = true;
  }
}

asio::awaitable<void> Stream::WriteTls(const char* data, std::size_t size, const std::function<void()>& progressed) {
  Tls& t = *tls_;
  if (t.ssl == nullptr) throw asio::system_error(asio::error::not_connected, "TLS write");
  std::size_t done = 0;
  while (done < size) {
    ERR_clear_error();
    const int n = SSL_write(t.ssl, data + done, static_cast<int>(std::min<std::size_t>(size - done, INT_MAX)));
    if (n > 0) {
      done += static_cast<std::size_t>(n);
      if (progressed) progressed();
      continue;
    }
    const int saved_errno = errno;
    const int err = SSL_get_error(t.ssl, n);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      // Retried with the same bytes once the socket is ready.
      co_await socket_.async_wait(err == SSL_ERROR_WANT_READ ? Socket::wait_read : Socket::wait_write,
                                  asio::use_awaitable);
      continue;
    }
    throw asio::system_error(TlsFailure(t, err, saved_errno), "TLS write");
  }
}

asio::awaitable<void> Stream::Write(asio::const_buffer buf) {
  if (tls_) {
    co_await WriteTls(static_cast<const char*>(buf.data()), buf.size(), {});
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
        if (errno != EAGAIN && errno != EWOULDBLOCK) throw SystemError(errno, "sendmsg");
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
  // SSL_write makes one record per call (up to 16 KiB): coalesce small
  // buffers so a burst of frames becomes a few full records; large ones go
  // as they are.
  std::string staging;
  std::size_t i = 0;
  while (i < bufs.size()) {
    if (bufs[i].size() >= kMaxCoalesce) {
      co_await WriteTls(static_cast<const char*>(bufs[i].data()), bufs[i].size(), progressed);
      ++i;
      continue;
    }
    if (staging.capacity() < kMaxCoalesce) staging.reserve(kMaxCoalesce);  // once: appends never regrow it
    staging.clear();
    while (i < bufs.size() && staging.size() + bufs[i].size() <= kMaxCoalesce) {
      staging.append(static_cast<const char*>(bufs[i].data()), bufs[i].size());
      ++i;
    }
    co_await WriteTls(staging.data(), staging.size(), progressed);
  }
}

void Stream::Close() {
  if (tls_) tls_->fd = -1;  // OpenSSL must not reach a later socket with this number
  asio::error_code ec;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  socket_.close(ec);
}

}  // namespace fastchat::net
