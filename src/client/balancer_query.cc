#include "balancer_query.h"

#include <memory>

#include <asio/co_spawn.hpp>
#include <asio/connect.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include "balancer.pb.h"
#include "balancer_reply.h"
#include "common/host_port.h"
#include "fastchat/frame.h"
#include "net/stream.h"
#include "net/tls.h"

namespace fastchat::client {
namespace {

constexpr std::uint32_t kMaxFrame = 64 * 1024;

// Reads frames until one that is not Hello, and makes of it what
// ReadBalancerReply says.
asio::awaitable<Status> ReadReply(net::Stream& s, Assignment* out) {
  FrameDecoder decoder(kMaxFrame);
  char buf[4096];
  for (;;) {
    std::string_view payload;
    bool have = false;
    Status st = decoder.Next(&payload, &have);
    if (!st.ok()) co_return st;
    if (have) {
      bool skip = false;
      st = ReadBalancerReply(payload, out, &skip);
      if (!st.ok() || !skip) co_return st;
      continue;
    }
    std::size_t n = 0;
    try {
      n = co_await s.ReadSome(asio::buffer(buf));
    } catch (const asio::system_error& e) {
      co_return Status(Code::kIOError, e.code() == asio::error::eof ? std::string("connection closed before the reply")
                                                                      : "reading: " + e.code().message());
    }
    decoder.Append(buf, n);
  }
}

asio::awaitable<Status> AskOne(asio::io_context& ioc, const std::string& addr, const TlsTrust& trust,
                               std::chrono::milliseconds timeout, Assignment* out) {
  std::string host;
  std::uint16_t port = 0;
  if (!ParseHostPort(addr, &host, &port) || port == 0) co_return Status(Code::kBadRequest, "not host:port");
  // TLS unless plain: the stream is made before connecting, so the deadline
  // closes the one stream this exchange uses.
  std::shared_ptr<net::TlsContext> ctx;
  if (!trust.plain) {
    Status st = net::MakeClientTls(trust.ca_file, &ctx);
    if (!st.ok()) co_return st;
  }
  auto stream = std::make_shared<net::Stream>(ioc, ctx);
  auto expired = std::make_shared<bool>(false);
  asio::steady_timer deadline(ioc, timeout);
  deadline.async_wait([stream, expired](const asio::error_code& ec) {
    if (ec) return;
    *expired = true;
    stream->Close();
  });
  struct Cancel {
    asio::steady_timer& t;
    ~Cancel() { t.cancel(); }
  } cancel{deadline};
  auto timed = [&](Status st) { return *expired ? Status(Code::kIOError, "timed out") : st; };

  asio::error_code ec;
  asio::ip::tcp::resolver resolver(ioc);
  auto endpoints = co_await resolver.async_resolve(host, std::to_string(port), asio::redirect_error(asio::use_awaitable, ec));
  if (!ec) co_await asio::async_connect(stream->socket(), endpoints, asio::redirect_error(asio::use_awaitable, ec));
  if (ec || *expired) co_return timed(Status(Code::kIOError, "connecting: " + ec.message()));
  if (!trust.plain) {
    Status st = co_await stream->Handshake(net::Stream::Role::kClient, host);
    if (!st.ok()) co_return timed(st);
    std::string notice;
    st = CheckServerIdentity(trust, (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
                                        std::to_string(port),
                             stream->PeerFingerprint(), &notice);
    if (!st.ok()) co_return st;
  }
  balancer::Envelope req;
  req.mutable_get_server();
  std::string frame;
  AppendFrame(req.SerializeAsString(), &frame);
  try {
    co_await stream->Write(asio::buffer(frame));
  } catch (const asio::system_error& e) {
    co_return timed(Status(Code::kIOError, "sending: " + e.code().message()));
  }
  Status st = co_await ReadReply(*stream, out);
  co_return st.ok() ? st : timed(st);
}

}  // namespace

asio::awaitable<Status> AskBalancers(asio::io_context& ioc, std::vector<std::string> balancers, TlsTrust trust,
                                     Assignment* out, std::chrono::milliseconds per_balancer) {
  if (balancers.empty()) co_return Status(Code::kBadRequest, "no balancer given");
  bool no_server = false;
  std::string errors;
  for (const std::string& addr : balancers) {
    Status st = co_await AskOne(ioc, addr, trust, per_balancer, out);
    if (st.ok() || st.code() == Code::kCryptoFailed) co_return st;
    if (st.code() == Code::kNotFound) no_server = true;
    if (!errors.empty()) errors += "; ";
    errors += addr + ": " + st.message();
  }
  if (no_server) co_return Status(Code::kNotFound, "no chat server is available (" + errors + ")");
  co_return Status(Code::kIOError, "no balancer answered (" + errors + ")");
}

namespace {
asio::awaitable<void> AskInto(asio::io_context& ioc, std::vector<std::string> balancers, TlsTrust trust,
                              Assignment* out, std::chrono::milliseconds per_balancer, Status* st) {
  *st = co_await AskBalancers(ioc, std::move(balancers), std::move(trust), out, per_balancer);
}
}  // namespace

Status AskBalancersNow(std::vector<std::string> balancers, TlsTrust trust, Assignment* out,
                       std::chrono::milliseconds per_balancer) {
  asio::io_context ioc;
  Status st(Code::kInternal, "not run");
  asio::co_spawn(ioc, AskInto(ioc, std::move(balancers), std::move(trust), out, per_balancer, &st), asio::detached);
  ioc.run();
  return st;
}

}  // namespace fastchat::client
