#include "connection.h"

#include <deque>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unordered_map>
#include <utility>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/connect.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include "fastchat.pb.h"
#include "fastchat/frame.h"
#include "log.h"
#include "net/stream.h"
#include "net/tls.h"

namespace fastchat::client {

namespace {
// Frames the server sends us (image chunks are ~256 KiB) stay far below this.
constexpr std::uint32_t kMaxIncomingFrame = 16u << 20;
constexpr auto kConnectTimeout = std::chrono::seconds(10);

// Probes an idle connection after 10 s, every 5 s, and gives up after 3
// unanswered probes; unacknowledged data gives up after 30 s.
void EnableKeepalive(int fd) {
  int on = 1, idle = 10, interval = 5, count = 3;
  unsigned int user_timeout_ms = 30000;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
}

// "250 ms", "1.5 s", "20 s", "3 min 20 s".
std::string RetryText(std::uint32_t ms) {
  if (ms < 1000) return std::to_string(ms) + " ms";
  if (ms < 10000) {
    const std::uint32_t tenths = (ms + 50) / 100;
    return std::to_string(tenths / 10) + "." + std::to_string(tenths % 10) + " s";
  }
  const std::uint32_t s = (ms + 999) / 1000;
  if (s < 120) return std::to_string(s) + " s";
  return std::to_string(s / 60) + " min" + (s % 60 ? " " + std::to_string(s % 60) + " s" : std::string());
}

}  // namespace

Status ErrorStatus(const wire::Error& e) {
  std::string msg = e.message();
  if (msg.empty()) msg = "server error";
  if (e.retry_after_ms() > 0) msg += "; try again in " + RetryText(e.retry_after_ms());
  return Status(static_cast<Code>(static_cast<int>(e.code())), msg);
}

namespace {

// The server refuses this connection (BUSY, RATE_LIMITED, LIMIT_REACHED in
// a push) and closes it: requests still open end with this, not "closed".
bool IsRefusal(const wire::Error& e) {
  return e.code() == wire::BUSY || e.code() == wire::RATE_LIMITED || e.code() == wire::LIMIT_REACHED;
}

}  // namespace

struct Connection::Call {
  explicit Call(asio::io_context& ioc) : timer(ioc) {}
  std::uint64_t rid = 0;
  asio::steady_timer timer;  // expires at the deadline; cancelled on completion
  std::chrono::milliseconds timeout{0};
  bool done = false;
  Status status;
  wire::Envelope reply;
};

struct Connection::Impl : std::enable_shared_from_this<Impl> {
  explicit Impl(asio::io_context& c)
      : ioc(c), stream(std::make_unique<net::Stream>(c)), write_wake(c), read_wake(c) {}

  void WakeDrainers() {
    for (asio::steady_timer* t : drain_waiters) t->cancel();
  }

  asio::io_context& ioc;
  std::unique_ptr<net::Stream> stream;  // replaced by a TLS stream once connected
  TlsTrust trust;
  std::deque<std::string> outq;
  bool writing = false;
  asio::steady_timer write_wake;  // cancelled when outq gets a frame
  std::vector<asio::steady_timer*> drain_waiters;  // woken after every write
  std::unordered_map<std::uint64_t, std::shared_ptr<Call>> calls;
  std::uint64_t next_rid = 1;
  bool started = false;
  bool closed = false;
  PushHandler on_push;
  std::function<bool()> push_full;
  asio::steady_timer read_wake;  // cancelled when a paused reader may go on
  CloseHandler on_close;
  std::uint32_t max_frame = kDefaultMaxFrame;
  std::uint64_t max_image_bytes = 0;
  std::string server_id;
  std::chrono::milliseconds request_timeout{kRequestTimeout};
  bool close_on_timeout = false;
  std::chrono::steady_clock::time_point last_heard = std::chrono::steady_clock::now();
  Status refused;  // a refusal pushed by the server just before it closes
  FrameDecoder decoder{kMaxIncomingFrame};

  void Enqueue(const wire::Envelope& env) {
    std::string payload;
    env.SerializeToString(&payload);
    std::string frame;
    frame.reserve(kFrameHeaderSize + payload.size());
    AppendFrame(payload, &frame);
    outq.push_back(std::move(frame));
    write_wake.cancel();
  }

  void Fail(const Status& why, bool notify) {
    if (closed) return;
    closed = true;
    stream->Close();
    auto pending = std::move(calls);
    calls.clear();
    for (auto& [rid, call] : pending) {
      call->done = true;
      call->status = !refused.ok() ? refused : Status(Code::kIOError, "connection closed: " + why.message());
      call->timer.cancel();
    }
    outq.clear();
    write_wake.cancel();
    read_wake.cancel();
    WakeDrainers();
    if (notify && on_close) on_close(why);
  }

  void Dispatch(wire::Envelope& env, std::string_view raw) {
    if (env.has_ping()) {
      // Keepalive: answer at once, with the same rid.
      wire::Envelope pong;
      pong.set_rid(env.rid());
      pong.mutable_pong();
      Enqueue(pong);
      return;
    }
    if (env.rid() == 0) {
      if (env.has_error() && IsRefusal(env.error())) refused = ErrorStatus(env.error());
      if (on_push) on_push(env, raw);
      return;
    }
    auto it = calls.find(env.rid());
    if (it == calls.end()) {
      if (env.has_error())
        LogWarn("server error for rid " + std::to_string(env.rid()) + ": " + ErrorStatus(env.error()).ToString());
      else
        LogDebug("reply for unknown rid " + std::to_string(env.rid()));
      return;
    }
    std::shared_ptr<Call> call = std::move(it->second);
    calls.erase(it);
    call->done = true;
    call->status = env.has_error() ? ErrorStatus(env.error()) : Status::OK();
    call->reply = std::move(env);
    call->timer.cancel();
  }

  // No more frames for now: the push receiver is full and no request waits
  // for its reply (which could be behind pushes).
  bool Paused() const { return push_full && calls.empty() && push_full(); }

  asio::awaitable<void> Reader(std::shared_ptr<Impl> /*keep_alive*/) {
    std::vector<char> buf(64 * 1024);
    for (;;) {
      while (!closed && Paused()) {
        std::error_code wait_ec;
        read_wake.expires_at(asio::steady_timer::time_point::max());
        co_await read_wake.async_wait(asio::redirect_error(asio::use_awaitable, wait_ec));
      }
      if (closed) co_return;
      // Frames read before a pause first.
      Receive(std::string_view());
      if (closed) co_return;
      if (Paused()) continue;
      std::error_code ec;
      std::size_t n = 0;
      try {
        n = co_await stream->ReadSome(asio::buffer(buf));
      } catch (const asio::system_error& e) {
        ec = e.code();
      }
      if (closed) co_return;
      if (n > 0) last_heard = std::chrono::steady_clock::now();
      if (ec) {
        Fail(Status(Code::kIOError, ec == asio::error::eof ? std::string("server closed the connection")
                                                            : ec.message()),
             true);
        co_return;
      }
      Receive(std::string_view(buf.data(), n));
      if (closed) co_return;
    }
  }

  // Bytes from the server: every whole frame in them is parsed and
  // dispatched, until the reader pauses (the rest waits in the decoder); an
  // over-limit frame ends the connection.
  void Receive(std::string_view bytes) {
    if (closed) return;
    if (!bytes.empty()) decoder.Append(bytes.data(), bytes.size());
    for (;;) {
      if (Paused()) return;
      std::string_view payload;
      bool have = false;
      Status s = decoder.Next(&payload, &have);
      if (!s.ok()) {
        Fail(s, true);
        return;
      }
      if (!have) break;
      wire::Envelope env;
      if (!env.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
        LogWarn("dropping unparsable frame of " + std::to_string(payload.size()) + " bytes");
        continue;
      }
      Dispatch(env, payload);
      if (closed) return;
    }
  }

  asio::awaitable<void> Writer(std::shared_ptr<Impl> /*keep_alive*/) {
    for (;;) {
      while (outq.empty()) {
        if (closed) co_return;
        std::error_code ec;
        write_wake.expires_at(asio::steady_timer::time_point::max());
        co_await write_wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      }
      if (closed) co_return;
      // Coalesce small frames into one write.
      std::string buf = std::move(outq.front());
      outq.pop_front();
      while (!outq.empty() && buf.size() + outq.front().size() <= 256 * 1024) {
        buf += outq.front();
        outq.pop_front();
      }
      writing = true;
      std::error_code ec;
      try {
        co_await stream->Write(asio::buffer(buf));
      } catch (const asio::system_error& e) {
        ec = e.code();
      }
      writing = false;
      WakeDrainers();
      if (closed) co_return;
      if (ec) {
        Fail(Status(Code::kIOError, "write: " + ec.message()), true);
        co_return;
      }
    }
  }
};

Connection::Connection(asio::io_context& ioc) : impl_(std::make_shared<Impl>(ioc)) {}

Connection::~Connection() { impl_->Fail(Status(Code::kIOError, "closed"), false); }

void Connection::set_push_handler(PushHandler h) { impl_->on_push = std::move(h); }
void Connection::set_push_full(std::function<bool()> full) { impl_->push_full = std::move(full); }
void Connection::ResumeReading() { impl_->read_wake.cancel(); }
void Connection::set_close_handler(CloseHandler h) { impl_->on_close = std::move(h); }
void Connection::set_request_timeout(std::chrono::milliseconds t) { impl_->request_timeout = t; }
void Connection::set_close_on_timeout(bool on) { impl_->close_on_timeout = on; }
void Connection::set_tls(TlsTrust trust) { impl_->trust = std::move(trust); }
bool Connection::closed() const { return impl_->closed; }
const std::string& Connection::server_id() const { return impl_->server_id; }
std::chrono::steady_clock::time_point Connection::last_heard() const { return impl_->last_heard; }
std::uint32_t Connection::max_frame() const { return impl_->max_frame; }
std::uint64_t Connection::max_image_bytes() const { return impl_->max_image_bytes; }

void Connection::Close() { impl_->Fail(Status(Code::kIOError, "closed by client"), false); }
void Connection::Receive(std::string_view bytes) { impl_->Receive(bytes); }

asio::awaitable<Status> Connection::Connect(std::string host, std::string port) {
  std::shared_ptr<Impl> self = impl_;
  if (self->started) co_return Status(Code::kInternal, "already connected");
  self->started = true;
  if (!self->trust.plain) {
    // TLS from the start: the deadline below closes the one stream in use.
    std::shared_ptr<net::TlsContext> ctx;
    Status s = net::MakeClientTls(self->trust.ca_file, &ctx);
    if (!s.ok()) {
      self->closed = true;
      co_return s;
    }
    self->stream = std::make_unique<net::Stream>(self->ioc, std::move(ctx));
  }

  // Connect with a deadline: the timer closes the socket if it fires first.
  auto deadline = std::make_shared<asio::steady_timer>(self->ioc, kConnectTimeout);
  auto timed_out = std::make_shared<bool>(false);
  deadline->async_wait([self, timed_out](std::error_code ec) {
    if (ec) return;
    *timed_out = true;
    self->stream->Close();
  });

  std::error_code ec;
  asio::ip::tcp::resolver resolver(self->ioc);
  auto endpoints =
      co_await resolver.async_resolve(host, port, asio::redirect_error(asio::use_awaitable, ec));
  if (!ec)
    co_await asio::async_connect(self->stream->socket(), endpoints, asio::redirect_error(asio::use_awaitable, ec));
  if (*timed_out) ec = asio::error::timed_out;
  const std::string where = (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + port;
  if (ec) {
    deadline->cancel();
    self->closed = true;
    co_return Status(Code::kIOError, "cannot connect to " + where + ": " + ec.message());
  }
  self->stream->socket().set_option(asio::ip::tcp::no_delay(true), ec);
  EnableKeepalive(self->stream->socket().native_handle());
  if (!self->trust.plain) {
    // TLS under the same deadline, then the server's identity.
    Status s = co_await self->stream->Handshake(net::Stream::Role::kClient, host);
    if (*timed_out) s = Status(Code::kIOError, "TLS handshake with " + where + " timed out");
    std::string notice;
    if (s.ok()) s = CheckServerIdentity(self->trust, where, self->stream->PeerFingerprint(), &notice);
    if (!s.ok()) {
      deadline->cancel();
      self->closed = true;
      self->stream->Close();
      if (s.code() == Code::kIOError) s = Status(Code::kIOError, "cannot connect to " + where + ": " + s.message());
      co_return s;
    }
    if (!notice.empty()) LogWarn(notice);
  }
  deadline->cancel();

  asio::co_spawn(self->ioc, self->Reader(self), asio::detached);
  asio::co_spawn(self->ioc, self->Writer(self), asio::detached);

  wire::Envelope hello, reply;
  hello.mutable_hello()->set_version(kProtocolVersion);
  hello.mutable_hello()->set_agent("fastchat-cli/0.1");
  Status s = co_await Request(hello, &reply);
  if (!s.ok()) co_return s;
  if (!reply.has_hello_ok()) co_return Status(Code::kBadFrame, "unexpected reply to Hello");
  if (reply.hello_ok().max_frame() > 0) self->max_frame = reply.hello_ok().max_frame();
  self->max_image_bytes = reply.hello_ok().max_image_bytes();
  self->server_id = reply.hello_ok().server_id();
  co_return Status::OK();
}

std::shared_ptr<Connection::Call> Connection::Start(const wire::Envelope& req, std::chrono::milliseconds timeout) {
  auto call = std::make_shared<Call>(impl_->ioc);
  if (impl_->closed) {
    call->done = true;
    // A refusal that came (and closed the connection) before this request
    // was made is still the answer.
    call->status = !impl_->refused.ok() ? impl_->refused : Status(Code::kIOError, "not connected");
    return call;
  }
  wire::Envelope copy = req;
  copy.set_rid(impl_->next_rid++);
  std::size_t size = copy.ByteSizeLong();
  if (size > impl_->max_frame) {
    // The server would answer FRAME_TOO_LARGE and close the connection.
    call->done = true;
    call->status = Status(Code::kTooLarge, "request of " + std::to_string(size) +
                                               " bytes is over the server's frame limit of " +
                                               std::to_string(impl_->max_frame) + " bytes");
    return call;
  }
  call->rid = copy.rid();
  call->timeout = timeout.count() > 0 ? timeout : impl_->request_timeout;
  call->timer.expires_after(call->timeout);
  impl_->calls[call->rid] = call;
  impl_->Enqueue(copy);
  impl_->read_wake.cancel();  // a paused reader reads on for the reply
  return call;
}

asio::awaitable<Status> Connection::Wait(std::shared_ptr<Call> call, wire::Envelope* reply) {
  if (!call->done) {
    std::error_code ec;
    co_await call->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (!call->done) {
    impl_->calls.erase(call->rid);
    call->done = true;
    auto ms = call->timeout.count();
    std::string why = "no reply from server within " +
                      (ms % 1000 == 0 ? std::to_string(ms / 1000) + " s" : std::to_string(ms) + " ms");
    call->status = Status(Code::kIOError, why);
    if (impl_->close_on_timeout) impl_->Fail(Status(Code::kIOError, why), true);
  }
  if (reply != nullptr) *reply = std::move(call->reply);
  co_return call->status;
}

asio::awaitable<Status> Connection::Request(const wire::Envelope& req, wire::Envelope* reply) {
  std::shared_ptr<Call> call = Start(req);
  co_return co_await Wait(std::move(call), reply);
}

void Connection::Post(const wire::Envelope& msg) {
  if (impl_->closed) return;
  wire::Envelope copy = msg;
  copy.set_rid(impl_->next_rid++);
  impl_->Enqueue(copy);
}

asio::awaitable<void> Connection::Drain() {
  std::shared_ptr<Impl> self = impl_;
  asio::steady_timer timer(self->ioc);
  while (!self->closed && (!self->outq.empty() || self->writing)) {
    std::error_code ec;
    timer.expires_after(std::chrono::seconds(5));
    self->drain_waiters.push_back(&timer);
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    std::erase(self->drain_waiters, &timer);
    if (!ec) break;  // no progress for 5 s: give up waiting
  }
}

}  // namespace fastchat::client
