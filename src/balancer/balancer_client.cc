#include "balancer_client.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "address.h"
#include "balancer.pb.h"
#include "fastchat/frame.h"

namespace fastchat::balancer {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::uint32_t kMaxFrame = 64 * 1024;

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      if (fd_ >= 0) ::close(fd_);
      fd_ = other.fd_;
      other.fd_ = -1;
    }
    return *this;
  }
  int get() const { return fd_; }

 private:
  int fd_ = -1;
};

// Milliseconds left until `deadline` (0 if past), for poll().
int MsLeft(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  return left > 60000 ? 60000 : static_cast<int>(left);
}

// Waits until `fd` is ready for `events`; false on timeout or error.
bool WaitFor(int fd, short events, Clock::time_point deadline, std::string* err) {
  for (;;) {
    pollfd p{fd, events, 0};
    int ms = MsLeft(deadline);
    int r = ::poll(&p, 1, ms);
    if (r > 0) return true;
    if (r == 0) {
      *err = "timed out";
      return false;
    }
    if (errno != EINTR) {
      *err = std::string("poll: ") + std::strerror(errno);
      return false;
    }
  }
}

Status Connect(const std::string& host, std::uint16_t port, Clock::time_point deadline, Fd* out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0) return Status(Code::kIOError, std::string("resolving: ") + ::gai_strerror(rc));
  std::string err = "no address";
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    Fd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (fd.get() < 0) {
      err = std::string("socket: ") + std::strerror(errno);
      continue;
    }
    if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) {
        err = std::string("connecting: ") + std::strerror(errno);
        continue;
      }
      if (!WaitFor(fd.get(), POLLOUT, deadline, &err)) {
        err = "connecting: " + err;
        continue;
      }
      int so_error = 0;
      socklen_t len = sizeof so_error;
      ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &so_error, &len);
      if (so_error != 0) {
        err = std::string("connecting: ") + std::strerror(so_error);
        continue;
      }
    }
    ::freeaddrinfo(res);
    *out = std::move(fd);
    return Status::OK();
  }
  ::freeaddrinfo(res);
  return Status(Code::kIOError, err);
}

Status SendAll(int fd, const std::string& data, Clock::time_point deadline) {
  std::size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      std::string err;
      if (!WaitFor(fd, POLLOUT, deadline, &err)) return Status(Code::kIOError, "sending: " + err);
      continue;
    }
    return Status(Code::kIOError, std::string("sending: ") + std::strerror(errno));
  }
  return Status::OK();
}

// Reads frames until one that is not Hello.
Status ReadReply(int fd, Clock::time_point deadline, Envelope* reply) {
  FrameDecoder decoder(kMaxFrame);
  char buf[4096];
  for (;;) {
    std::string_view payload;
    bool have = false;
    Status st = decoder.Next(&payload, &have);
    if (!st.ok()) return st;
    if (have) {
      if (!reply->ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
        return Status(Code::kBadFrame, "reply does not parse");
      }
      if (reply->has_hello()) continue;
      return Status::OK();
    }
    std::string err;
    if (!WaitFor(fd, POLLIN, deadline, &err)) return Status(Code::kIOError, "waiting for the reply: " + err);
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0) return Status(Code::kIOError, "connection closed before the reply");
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return Status(Code::kIOError, std::string("reading: ") + std::strerror(errno));
    }
    decoder.Append(buf, static_cast<std::size_t>(n));
  }
}

Status AskOne(const std::string& addr, std::chrono::milliseconds timeout, std::string* host, std::uint16_t* port,
              std::string* server_id) {
  std::string bhost;
  std::uint16_t bport = 0;
  if (!ParseHostPort(addr, &bhost, &bport) || bport == 0) return Status(Code::kBadRequest, "not host:port");
  const auto deadline = Clock::now() + timeout;
  Fd fd;
  Status st = Connect(bhost, bport, deadline, &fd);
  if (!st.ok()) return st;
  Envelope req;
  req.mutable_get_server();
  std::string frame;
  AppendFrame(req.SerializeAsString(), &frame);
  st = SendAll(fd.get(), frame, deadline);
  if (!st.ok()) return st;
  Envelope reply;
  st = ReadReply(fd.get(), deadline, &reply);
  if (!st.ok()) return st;
  if (reply.has_error()) {
    Code code = reply.error().code() == NO_SERVER ? Code::kNotFound : Code::kBadRequest;
    return Status(code, reply.error().message());
  }
  if (!reply.has_server_assignment()) return Status(Code::kBadRequest, "unexpected reply");
  const ServerAssignment& a = reply.server_assignment();
  if (a.host().empty() || a.port() == 0 || a.port() > 65535) {
    return Status(Code::kBadRequest, "assignment without a valid host and port");
  }
  *host = a.host();
  *port = static_cast<std::uint16_t>(a.port());
  *server_id = a.server_id();
  return Status::OK();
}

}  // namespace

Status AskBalancer(const std::vector<std::string>& balancers, std::string* host, std::uint16_t* port,
                   std::string* server_id, std::chrono::milliseconds timeout_per_balancer) {
  if (balancers.empty()) return Status(Code::kBadRequest, "no balancer given");
  bool no_server = false;
  std::string errors;
  for (const std::string& addr : balancers) {
    Status st = AskOne(addr, timeout_per_balancer, host, port, server_id);
    if (st.ok()) return st;
    if (st.code() == Code::kNotFound) no_server = true;
    if (!errors.empty()) errors += "; ";
    errors += addr + ": " + st.message();
  }
  if (no_server) return Status(Code::kNotFound, "no chat server is available (" + errors + ")");
  return Status(Code::kIOError, "no balancer answered (" + errors + ")");
}

}  // namespace fastchat::balancer
