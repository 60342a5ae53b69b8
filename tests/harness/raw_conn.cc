#include "harness/raw_conn.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <openssl/err.h>
#include <openssl/ssl.h>

namespace fastchat::testing {

namespace {
std::string BodyName(const wire::Envelope& env) {
  if (env.body_case() == wire::Envelope::BODY_NOT_SET) return "(no body)";
  const auto* f = wire::Envelope::descriptor()->FindFieldByNumber(static_cast<int>(env.body_case()));
  return f != nullptr ? f->name() : "(unknown body)";
}

SSL_CTX* ClientContext() {
  static SSL_CTX* ctx = [] {
    SSL_CTX* c = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
    SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nullptr);
    return c;
  }();
  return ctx;
}
}  // namespace


RawConn::RawConn(std::uint16_t port, Transport transport) : RawConn(port, "", transport) {}

RawConn::RawConn(std::uint16_t port, const std::string& source, Transport transport) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  if (!source.empty()) {
    sockaddr_in local{};
    local.sin_family = AF_INET;
    if (::inet_pton(AF_INET, source.c_str(), &local.sin_addr) != 1 ||
        ::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) {
      int e = errno;
      ::close(fd_);
      fd_ = -1;
      throw std::runtime_error("bind to " + source + ": " + std::strerror(e));
    }
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    ::close(fd_);
    fd_ = -1;
    throw std::runtime_error("connect to port " + std::to_string(port) + ": " + std::strerror(e));
  }
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (transport == Transport::kTls) {
    ssl_ = SSL_new(ClientContext());
    SSL_set_fd(ssl_, fd_);
    if (SSL_connect(ssl_) != 1) {
      char err[256] = "";
      ERR_error_string_n(ERR_get_error(), err, sizeof err);
      SSL_free(ssl_);
      ::close(fd_);
      fd_ = -1;
      ssl_ = nullptr;
      throw std::runtime_error("TLS handshake with port " + std::to_string(port) + " failed: " + err);
    }
  }
}

RawConn::~RawConn() {
  if (ssl_ != nullptr) SSL_free(ssl_);
  if (fd_ >= 0) ::close(fd_);
}

bool RawConn::SendBytes(std::string_view bytes) {
  std::size_t off = 0;
  while (off < bytes.size()) {
    if (ssl_ != nullptr) {
      int n = SSL_write(ssl_, bytes.data() + off, static_cast<int>(std::min<std::size_t>(bytes.size() - off, 1 << 20)));
      if (n <= 0) return false;
      off += static_cast<std::size_t>(n);
      continue;
    }
    ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    off += static_cast<std::size_t>(n);
  }
  return true;
}

bool RawConn::SendFrame(std::string_view payload) {
  std::string out;
  AppendFrame(payload, &out);
  return SendBytes(out);
}

bool RawConn::Send(const wire::Envelope& env) {
  std::string payload;
  if (!env.SerializeToString(&payload)) throw std::runtime_error("cannot serialize envelope");
  return SendFrame(payload);
}

RawConn::Recv RawConn::Receive(wire::Envelope* env, Millis timeout) {
  if (!pushes_.empty()) {
    *env = std::move(pushes_.front());
    pushes_.erase(pushes_.begin());
    return Recv::kOk;
  }
  return ReceiveFromSocket(env, timeout);
}

RawConn::Recv RawConn::ReceiveFromSocket(wire::Envelope* env, Millis timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    std::string_view payload;
    bool have = false;
    Status st = decoder_.Next(&payload, &have);
    if (!st.ok()) return Recv::kGarbage;
    if (have) {
      if (!env->ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
        return Recv::kGarbage;
      }
      return Recv::kOk;
    }
    if (closed_) return Recv::kClosed;
    // Rounded up: a 1 ms timeout still polls once.
    auto left = std::chrono::ceil<Millis>(deadline - Clock::now()).count();
    if (left <= 0) return Recv::kTimeout;
    if (ssl_ == nullptr || SSL_pending(ssl_) == 0) {
      pollfd pfd{fd_, POLLIN, 0};
      int n = ::poll(&pfd, 1, static_cast<int>(left));
      if (n < 0) {
        if (errno == EINTR) continue;
        throw std::runtime_error(std::string("poll: ") + std::strerror(errno));
      }
      if (n == 0) return Recv::kTimeout;
    }
    char buf[65536];
    ssize_t r;
    if (ssl_ != nullptr) {
      int got = SSL_read(ssl_, buf, sizeof buf);
      r = got > 0 ? got : (SSL_get_error(ssl_, got) == SSL_ERROR_ZERO_RETURN ? 0 : -1);
      if (r < 0) errno = ECONNRESET;
    } else {
      r = ::recv(fd_, buf, sizeof buf, 0);
    }
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      closed_ = true;  // ECONNRESET and friends
    } else if (r == 0) {
      closed_ = true;
    } else {
      decoder_.Append(buf, static_cast<std::size_t>(r));
    }
  }
}

wire::Envelope RawConn::Expect(Millis timeout) {
  wire::Envelope env;
  switch (Receive(&env, timeout)) {
    case Recv::kOk:
      return env;
    case Recv::kTimeout:
      throw std::runtime_error("RawConn: no frame from the server within " +
                               std::to_string(timeout.count()) + " ms");
    case Recv::kClosed:
      throw std::runtime_error("RawConn: server closed the connection");
    case Recv::kGarbage:
      throw std::runtime_error("RawConn: server sent an unparseable frame");
  }
  throw std::logic_error("unreachable");
}

wire::Envelope RawConn::Request(wire::Envelope env, Millis timeout) {
  std::uint64_t rid = NextRid();
  env.set_rid(rid);
  if (!Send(env)) throw std::runtime_error("RawConn: send failed");
  auto deadline = Clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now());
    if (left.count() <= 0) left = Millis(1);
    wire::Envelope reply;
    switch (ReceiveFromSocket(&reply, left)) {
      case Recv::kOk:
        break;
      case Recv::kTimeout:
        throw std::runtime_error("RawConn: no reply to " + BodyName(env) + " within " +
                                 std::to_string(timeout.count()) + " ms");
      case Recv::kClosed:
        throw std::runtime_error("RawConn: server closed the connection before replying to " + BodyName(env));
      case Recv::kGarbage:
        throw std::runtime_error("RawConn: server sent an unparseable frame");
    }
    if (reply.rid() == rid) return reply;
    if (reply.rid() == 0) {
      pushes_.push_back(std::move(reply));
      continue;
    }
    if (reply.rid() != 0) {
      throw std::runtime_error("RawConn: reply with unexpected rid " + std::to_string(reply.rid()) +
                               " (waiting for " + std::to_string(rid) + "): " + Describe(reply));
    }
  }
}

bool RawConn::WaitClosed(Millis timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    wire::Envelope env;
    auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    switch (Receive(&env, left)) {
      case Recv::kClosed:
        return true;
      case Recv::kTimeout:
        return false;
      case Recv::kOk:
      case Recv::kGarbage:
        if (closed_ && decoder_.buffered() == 0) return true;
        continue;
    }
  }
}

wire::Envelope RawConn::Hello(std::uint32_t version) {
  wire::Envelope env;
  env.mutable_hello()->set_version(version);
  env.mutable_hello()->set_agent("fastchat-tests/raw");
  return Request(env);
}

namespace {
wire::Envelope RegisterRequest(const std::string& name, const std::string& password) {
  wire::Envelope env;
  auto* r = env.mutable_register_();
  r->set_name(name);
  r->set_password(password);
  r->set_x25519_public(RandomBytes(32));
  r->set_ed25519_public(RandomBytes(32));
  return env;
}
}  // namespace

wire::Envelope RawConn::Register(const std::string& name, const std::string& password) {
  return Request(RegisterRequest(name, password));
}

bool RawConn::SendRegister(const std::string& name, const std::string& password) {
  wire::Envelope env = RegisterRequest(name, password);
  env.set_rid(NextRid());
  return Send(env);
}

wire::Envelope RawConn::Login(const std::string& name, const std::string& password, bool receive) {
  wire::Envelope env;
  auto* l = env.mutable_login();
  l->mutable_user()->set_name(name);
  l->set_password(password);
  l->set_receive(receive);
  return Request(env);
}

bool RawConn::AnswerPing(const wire::Envelope& env) {
  if (!env.has_ping()) return false;
  wire::Envelope pong;
  pong.set_rid(env.rid());
  pong.mutable_pong();
  Send(pong);
  return true;
}

void RawConn::ShutdownWrite() { ::shutdown(fd_, SHUT_WR); }

std::string ErrorName(const wire::Envelope& env) {
  if (!env.has_error()) return "(not an Error: " + Describe(env) + ")";
  return wire::ErrorCode_Name(env.error().code());
}

wire::Envelope HelloOfSize(std::size_t size, std::uint64_t rid) {
  wire::Envelope env;
  env.set_rid(rid);
  env.mutable_hello()->set_version(1);
  for (std::size_t len = size; len > 0; --len) {
    env.mutable_hello()->set_agent(std::string(len, 'a'));
    if (env.ByteSizeLong() <= size) break;
  }
  return env;
}

std::string Describe(const wire::Envelope& env) {
  std::string s = env.ShortDebugString();
  if (s.size() > 300) s = s.substr(0, 300) + "...";
  return s;
}

}  // namespace fastchat::testing
