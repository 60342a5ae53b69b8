#include "balancer.h"

#include <algorithm>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include "auth.h"
#include "common/listen.h"
#include "balancer_impl.h"
#include "session.h"

namespace fastchat::balancer {
namespace {

using asio::use_awaitable;
using namespace std::chrono_literals;

asio::awaitable<void> AcceptLoop(std::shared_ptr<Balancer::Impl> impl) {
  for (;;) {
    asio::error_code ec;
    net::Socket socket = co_await impl->acceptor.async_accept(impl->io, asio::redirect_error(use_awaitable, ec));
    if (impl->stopping) co_return;
    if (ec) {
      // Out of file descriptors and similar: log, back off briefly, go on.
      spdlog::warn("accept failed: {}", ec.message());
      asio::steady_timer t(impl->io, 50ms);
      co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
      if (impl->stopping) co_return;
      continue;
    }
    if (impl->sessions.size() >= impl->config.max_connections) {
      spdlog::warn("{} connections open: refusing another", impl->sessions.size());
      socket.close(ec);
      continue;
    }
    socket.set_option(asio::ip::tcp::no_delay(true), ec);
    auto session = std::make_shared<Session>(*impl, std::move(socket), impl->next_session_id++);
    impl->sessions.insert(session);
    session->Start();
  }
}

// Expires silent servers often enough that one is gone at most a quarter of
// expire_after late, and closes idle connections.
asio::awaitable<void> SweepLoop(std::shared_ptr<Balancer::Impl> impl) {
  const auto period = std::clamp<std::chrono::milliseconds>(impl->config.expire_after / 4, 10ms, 1000ms);
  for (;;) {
    impl->sweep_timer.expires_after(period);
    asio::error_code ec;
    co_await impl->sweep_timer.async_wait(asio::redirect_error(use_awaitable, ec));
    if (impl->stopping) co_return;
    ExpireServers(*impl);
    const auto now = ServerTable::Clock::now();
    std::vector<std::shared_ptr<Session>> idle;
    for (const auto& s : impl->sessions) {
      if (now - s->last_activity() > impl->config.idle_timeout) idle.push_back(s);
    }
    for (const auto& s : idle) {
      spdlog::debug("{}: idle, closing", s->peer());
      s->Close();
    }
  }
}

}  // namespace

Balancer::Impl::Impl(asio::io_context& io_in, BalancerConfig config_in)
    : io(io_in),
      config(std::move(config_in)),
      auth_key(AuthKey(config.cluster_secret)),
      acceptor(io_in),
      sweep_timer(io_in),
      table(config.expire_after),
      rng(std::random_device{}()) {}

void ExpireServers(Balancer::Impl& impl) {
  for (const std::string& id : impl.table.Expire(ServerTable::Clock::now())) {
    spdlog::info("server '{}' sent no report for {} ms: no longer assigned", id, impl.config.expire_after.count());
  }
}

Balancer::Balancer(asio::io_context& io, BalancerConfig config)
    : impl_(std::make_shared<Impl>(io, std::move(config))) {}

Balancer::~Balancer() { Stop(); }

Status Balancer::Start(std::uint16_t* port) {
  Impl& impl = *impl_;
  if (impl.config.cluster_secret.empty()) return Status(Code::kBadRequest, "the cluster secret is empty");
  if (!AuthInit()) return Status(Code::kInternal, "libsodium failed to initialise");
  Status listening = Listen(impl.acceptor, impl.config.listen_host, impl.config.listen_port, "clients and servers", port);
  if (!listening.ok()) return listening;
  asio::co_spawn(impl.io, AcceptLoop(impl_), asio::detached);
  asio::co_spawn(impl.io, SweepLoop(impl_), asio::detached);
  return Status::OK();
}

void Balancer::Stop() {
  Impl& impl = *impl_;
  if (impl.stopping) return;
  impl.stopping = true;
  asio::error_code ec;
  impl.acceptor.close(ec);
  impl.sweep_timer.cancel();
  // Close() erases from the set, so close a snapshot.
  std::vector<std::shared_ptr<Session>> all(impl.sessions.begin(), impl.sessions.end());
  for (auto& s : all) s->Close();
}

}  // namespace fastchat::balancer
