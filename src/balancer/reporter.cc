#include "reporter.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <random>

#include <asio/co_spawn.hpp>
#include <asio/connect.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <spdlog/spdlog.h>

#include "common/host_port.h"
#include "auth.h"
#include "balancer.pb.h"
#include "fastchat/frame.h"
#include "load.h"
#include "net/stream.h"
#include "reporter_handshake.h"

namespace fastchat::balancer {
namespace {

using asio::use_awaitable;
using Clock = std::chrono::steady_clock;

constexpr std::uint32_t kMaxFrame = 64 * 1024;

// One connection attempt to one balancer. A fresh Conn per attempt, so a
// coroutine still finishing with an old socket cannot touch the new one.
struct Conn : std::enable_shared_from_this<Conn> {
  explicit Conn(asio::io_context& io) : socket(io), resolver(io), deadline(io), tick(io) {}

  // Kill() the connection unless Disarm() comes first.
  void Arm(Clock::duration d) {
    const std::uint64_t g = ++gen;
    deadline.expires_after(d);
    deadline.async_wait([self = shared_from_this(), g](const asio::error_code& ec) {
      if (!ec && g == self->gen) self->Kill("timed out");
    });
  }
  void Disarm() {
    ++gen;
    deadline.cancel();
  }
  // Ends the connection; every pending operation on it completes.
  void Kill(const std::string& reason) {
    if (broken) return;
    broken = true;
    why = reason;
    asio::error_code ec;
    if (stream) {
      stream->Close();
    } else {
      socket.close(ec);
    }
    resolver.cancel();
    tick.cancel();
  }

  net::Socket socket;                    // until connected
  std::unique_ptr<net::Stream> stream;   // once connected (TLS unless options.tls is null)
  asio::ip::tcp::resolver resolver;
  asio::steady_timer deadline;
  asio::steady_timer tick;
  FrameDecoder decoder{kMaxFrame};
  std::uint64_t gen = 0;
  bool broken = false;
  bool registered = false;
  std::string why;  // why it broke, for the log
};

struct Link {
  explicit Link(asio::io_context& io) : retry(io) {}
  std::string addr;  // as given, for the log
  std::string host;
  std::uint16_t port = 0;
  asio::steady_timer retry;
  std::shared_ptr<Conn> conn;  // the current attempt, if any
};

// The next frame's payload.
asio::awaitable<Status> ReadFrame(Conn& c, std::string* payload) {
  for (;;) {
    std::string_view frame;
    bool have = false;
    Status st = c.decoder.Next(&frame, &have);
    if (!st.ok()) co_return st;
    if (have) {
      payload->assign(frame);
      co_return Status::OK();
    }
    char buf[4096];
    asio::error_code ec;
    std::size_t n = 0;
    try {
      n = co_await c.stream->ReadSome(asio::buffer(buf));
    } catch (const asio::system_error& e) {
      ec = e.code();
    }
    if (c.broken) co_return Status(Code::kIOError, c.why);
    if (ec == asio::error::eof) co_return Status(Code::kIOError, "balancer closed the connection");
    if (ec) co_return Status(Code::kIOError, ec.message());
    c.decoder.Append(buf, n);
  }
}

asio::awaitable<Status> WriteFrame(Conn& c, const std::string& payload) {
  std::string frame;
  AppendFrame(payload, &frame);
  asio::error_code ec;
  try {
    co_await c.stream->Write(asio::buffer(frame));
  } catch (const asio::system_error& e) {
    ec = e.code();
  }
  if (c.broken) co_return Status(Code::kIOError, c.why);
  if (ec) co_return Status(Code::kIOError, ec.message());
  co_return Status::OK();
}

// Drops the connection if sent data stays unacknowledged this long, so a
// balancer host that vanishes without a FIN or RST is noticed in seconds.
void SetUserTimeout(net::Socket& s, std::chrono::milliseconds timeout) {
#ifdef TCP_USER_TIMEOUT
  unsigned int ms = static_cast<unsigned int>(timeout.count());
  ::setsockopt(s.native_handle(), IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms);
#else
  (void)s;
  (void)timeout;
#endif
}

// Reads what the balancer sends after AuthOk (only Errors, e.g. for a report
// it refused) until the connection ends; then ends the report loop too.
asio::awaitable<void> DrainLoop(std::shared_ptr<Conn> c, std::shared_ptr<ReporterHandshake> hs, std::string addr) {
  bool logged = false;
  for (;;) {
    std::string payload, refused;
    Status st = co_await ReadFrame(*c, &payload);
    if (st.ok()) st = hs->OnLater(payload, &refused);
    if (!st.ok()) {
      c->Kill(st.message());
      co_return;
    }
    if (!refused.empty() && !logged) {
      spdlog::warn("balancer {} refused a report: {}", addr, refused);
      logged = true;
    }
  }
}

}  // namespace

struct BalancerReporter::Impl {
  Impl(asio::io_context& io_in, std::string server_id_in, std::string client_address_in, std::string secret,
       std::function<LoadSample()> sample_in, ReporterOptions options_in)
      : io(io_in),
        server_id(std::move(server_id_in)),
        client_address(std::move(client_address_in)),
        key(AuthKey(secret)),
        sample(std::move(sample_in)),
        options(options_in),
        rng(std::random_device{}()) {}

  // The latest sample, taken afresh if the cached one is half an interval old.
  LoadSample Sample() {
    const auto now = Clock::now();
    if (!have_sample || now - sampled_at >= options.report_interval / 2) {
      if (sample) cached = sample();
      sampled_at = now;
      have_sample = true;
    }
    return cached;
  }

  Envelope MakeReport() {
    const LoadSample s = Sample();
    Envelope env;
    ServerReport* r = env.mutable_server_report();
    r->set_server_id(server_id);
    r->set_client_address(client_address);
    r->set_connections(s.connections);
    r->set_cpu_percent(s.cpu_percent);
    r->set_msgs_per_sec(s.msgs_per_sec);
    r->set_load(ComputeLoad(s.connections, s.cpu_percent, s.msgs_per_sec));
    return env;
  }

  void StopNow() {
    if (stopped) return;
    stopped = true;
    sample = nullptr;
    for (auto& link : links) {
      link->retry.cancel();
      if (link->conn) link->conn->Kill("stopped");
    }
  }

  // One balancer, forever: connect, report, back off, again. Static and
  // taking `self` by value, so the Impl outlives the coroutine even before
  // its first resumption.
  static asio::awaitable<void> LinkLoop(std::shared_ptr<Impl> self, std::shared_ptr<Link> link);
  // One connection, until it fails; says why. `c->registered` tells whether
  // it got as far as AuthOk.
  asio::awaitable<Status> RunConn(Link& link, std::shared_ptr<Conn> c);

  asio::io_context& io;
  const std::string server_id;
  const std::string client_address;
  const std::string key;
  std::function<LoadSample()> sample;
  const ReporterOptions options;
  std::minstd_rand rng;
  std::vector<std::shared_ptr<Link>> links;
  bool started = false;
  bool stopped = false;
  std::atomic<std::size_t> registered{0};

  LoadSample cached;
  Clock::time_point sampled_at;
  bool have_sample = false;
};

asio::awaitable<void> BalancerReporter::Impl::LinkLoop(std::shared_ptr<Impl> self, std::shared_ptr<Link> link) {
  const ReporterOptions& options = self->options;
  auto backoff = options.min_backoff;
  bool warned = false;  // logged this balancer as unreachable since it last worked
  while (!self->stopped) {
    auto conn = std::make_shared<Conn>(self->io);
    link->conn = conn;
    Status st = co_await self->RunConn(*link, conn);
    conn->Kill(st.message());  // close the socket now, not when the last handler lets go
    conn->Disarm();
    link->conn.reset();
    if (self->stopped) break;
    if (conn->registered) {
      backoff = options.min_backoff;
      warned = false;
    }
    if (st.code() == Code::kBadCredentials) {
      spdlog::error("balancer {} refused server '{}': {} (check the cluster secret)", link->addr, self->server_id,
                    st.message());
      backoff = options.max_backoff;
    } else if (!warned) {
      spdlog::warn("balancer {}: {}; reconnecting", link->addr, st.ToString());
      warned = true;
    } else {
      spdlog::debug("balancer {}: {}; reconnecting", link->addr, st.ToString());
    }
    // Jitter in [0.5, 1.0] x backoff, so servers do not reconnect in lockstep.
    std::uniform_real_distribution<double> jitter(0.5, 1.0);
    link->retry.expires_after(std::chrono::duration_cast<Clock::duration>(backoff * jitter(self->rng)));
    asio::error_code ec;
    co_await link->retry.async_wait(asio::redirect_error(use_awaitable, ec));
    backoff = std::min(backoff * 2, options.max_backoff);
  }
}

asio::awaitable<Status> BalancerReporter::Impl::RunConn(Link& link, std::shared_ptr<Conn> c) {
  asio::error_code ec;
  c->Arm(options.connect_timeout);
  auto endpoints =
      co_await c->resolver.async_resolve(link.host, std::to_string(link.port), asio::redirect_error(use_awaitable, ec));
  if (c->broken) co_return Status(Code::kIOError, "resolving: " + c->why);
  if (ec) co_return Status(Code::kIOError, "resolving: " + ec.message());
  co_await asio::async_connect(c->socket, endpoints, asio::redirect_error(use_awaitable, ec));
  if (c->broken) co_return Status(Code::kIOError, "connecting: " + c->why);
  if (ec) co_return Status(Code::kIOError, "connecting: " + ec.message());
  c->socket.set_option(asio::ip::tcp::no_delay(true), ec);
  SetUserTimeout(c->socket, std::max<std::chrono::milliseconds>(options.report_interval * 6, std::chrono::seconds(3)));
  c->stream = std::make_unique<net::Stream>(std::move(c->socket), options.tls);
  // TLS, still under the connect deadline. The balancer's certificate is not
  // checked: the MAC below is bound to this TLS session, so a relay fails.
  Status tls = co_await c->stream->Handshake(net::Stream::Role::kClient, link.host);
  if (c->broken) co_return Status(Code::kIOError, "TLS handshake: " + c->why);
  if (!tls.ok()) co_return tls;
  const std::string binding = c->stream->ChannelBinding(kBalancerBindingLabel);

  // Handshake, still under the connect deadline.
  auto hs = std::make_shared<ReporterHandshake>(server_id, key, binding);
  std::string payload, auth;
  Status st = co_await ReadFrame(*c, &payload);
  if (st.ok()) st = hs->OnHello(payload, &auth);
  if (!st.ok()) co_return st;
  st = co_await WriteFrame(*c, auth);
  if (!st.ok()) co_return st;
  st = co_await ReadFrame(*c, &payload);
  std::uint32_t expire_ms = 0;
  if (st.ok()) st = hs->OnAuthReply(payload, &expire_ms);
  if (!st.ok()) co_return st;
  c->Disarm();

  c->registered = true;
  ++registered;
  spdlog::info("registered with balancer {} as '{}' (expires after {} ms without a report)", link.addr, server_id,
               expire_ms);
  asio::co_spawn(io, DrainLoop(c, hs, link.addr), asio::detached);
  while (!stopped && !c->broken) {
    c->Arm(options.connect_timeout);
    st = co_await WriteFrame(*c, MakeReport().SerializeAsString());
    c->Disarm();
    if (!st.ok()) break;
    c->tick.expires_after(options.report_interval);
    co_await c->tick.async_wait(asio::redirect_error(use_awaitable, ec));
  }
  --registered;
  c->Kill(st.ok() ? "stopped" : st.message());
  co_return Status(Code::kIOError, c->why);
}

BalancerReporter::BalancerReporter(asio::io_context& io, std::vector<std::string> balancer_addrs,
                                   std::string server_id, std::string client_address, std::string cluster_secret,
                                   std::function<LoadSample()> sample, ReporterOptions options)
    : impl_(std::make_shared<Impl>(io, std::move(server_id), std::move(client_address), std::move(cluster_secret),
                                   std::move(sample), options)) {
  std::string host;
  std::uint16_t port = 0;
  if (!ParseHostPort(impl_->client_address, &host, &port) || port == 0) {
    spdlog::error("client address '{}' is not host:port; balancers will refuse the reports", impl_->client_address);
  }
  if (!ValidServerId(impl_->server_id)) {
    spdlog::error("server id '{}' is not 1-64 printable ASCII characters; balancers will refuse it",
                  impl_->server_id);
  }
  for (std::string& addr : balancer_addrs) {
    auto link = std::make_shared<Link>(io);
    if (!ParseHostPort(addr, &link->host, &link->port) || link->port == 0) {
      spdlog::error("balancer address '{}' is not host:port; ignoring it", addr);
      continue;
    }
    link->addr = std::move(addr);
    impl_->links.push_back(std::move(link));
  }
}

BalancerReporter::~BalancerReporter() { Stop(); }

void BalancerReporter::Start() {
  asio::post(impl_->io, [impl = impl_]() {
    if (impl->started || impl->stopped) return;
    impl->started = true;
    for (const auto& link : impl->links) asio::co_spawn(impl->io, Impl::LinkLoop(impl, link), asio::detached);
  });
}

void BalancerReporter::Stop() {
  if (impl_->io.get_executor().running_in_this_thread()) {
    impl_->StopNow();
  } else {
    asio::post(impl_->io, [impl = impl_]() { impl->StopNow(); });
  }
}

std::size_t BalancerReporter::registered() const { return impl_->registered.load(); }

}  // namespace fastchat::balancer
