#include "server.h"

#include <algorithm>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include "server_impl.h"
#include "common/listen.h"
#include "fastchat/crypto.h"
#include "mesh.h"
#include "session.h"

namespace fastchat::server {

void Router::Route(const std::vector<Delivery>& deliveries, const std::shared_ptr<const std::string>& event) {
  // Remote recipients grouped by the link to their server: one Forward each.
  std::vector<std::pair<PeerLink*, std::vector<Delivery>>> remote;
  for (const Delivery& d : deliveries) {
    if (Session* s = presence_.Find(d.user)) {
      s->Deliver(d.seq, event, d.group_id);
      continue;
    }
    if (!mesh_) continue;
    PeerLink* link = mesh_->Where(d.user);
    if (!link) continue;  // offline everywhere: the store keeps it
    auto it = std::find_if(remote.begin(), remote.end(), [link](const auto& p) { return p.first == link; });
    if (it == remote.end()) {
      remote.emplace_back(link, std::vector<Delivery>{});
      it = std::prev(remote.end());
    }
    it->second.push_back(d);
  }
  for (auto& [link, targets] : remote) mesh_->Forward(link, targets, event);
}

namespace {

constexpr std::size_t kTrimsPerRound = 256;

// Once a second, drops group-log entries that every member has acknowledged
// (for the groups acknowledged since the last round).
asio::awaitable<void> TrimLoop(Server::Impl& impl) {
  asio::steady_timer& timer = impl.trim_timer;
  while (!impl.stopping) {
    timer.expires_after(std::chrono::seconds(1));
    asio::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (impl.stopping) co_return;
    std::vector<std::uint64_t> groups;
    for (auto it = impl.trim_due.begin(); it != impl.trim_due.end() && groups.size() < kTrimsPerRound;) {
      groups.push_back(*it);
      it = impl.trim_due.erase(it);
    }
    if (groups.empty()) continue;
    auto job = [groups = std::move(groups)](Store& s) {
      Status st;
      for (std::uint64_t g : groups) {
        st = s.TrimGroup(g);
        if (!st.ok()) break;
      }
      return st;
    };
    impl.store.Submit(std::move(job), [](Status st) {
      if (!st.ok()) spdlog::warn("trimming group logs: {}", st.ToString());
    });
  }
}

asio::awaitable<void> AcceptLoop(Server::Impl& impl) {
  for (;;) {
    asio::error_code ec;
    asio::ip::tcp::socket socket = co_await impl.acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (impl.stopping) co_return;
    if (ec) {
      // Out of file descriptors and similar: log, back off briefly, go on.
      spdlog::warn("accept failed: {}", ec.message());
      asio::steady_timer t(impl.io, std::chrono::milliseconds(50));
      co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    socket.set_option(asio::ip::tcp::no_delay(true), ec);
    auto session = std::make_shared<Session>(impl, std::move(socket));
    impl.sessions.insert(session);
    session->Start();
  }
}

}  // namespace

void Server::Impl::RefreshDirectory(Facts facts) {
  auto job = [facts = std::move(facts)](Store& s) { return LoadFacts(s, facts); };
  store.Submit(std::move(job), [this](FactsSnapshot snap) {
    if (!snap.st.ok()) {
      spdlog::error("re-reading directory facts: {}", snap.st.ToString());
      return;
    }
    directory.Apply(snap);
  });
}

void Server::Impl::ReloadDirectory() {
  struct Loaded {
    Status st;
    DirectoryState state;
  };
  auto job = [](Store& s) {
    Loaded l;
    l.st = s.LoadDirectory(&l.state);
    return l;
  };
  store.Submit(std::move(job), [this](Loaded l) {
    if (!l.st.ok()) {
      spdlog::error("re-reading the directory: {}", l.st.ToString());
      return;
    }
    directory.Load(l.state);
  });
}

asio::awaitable<void> Server::Impl::Refresh(const Facts& facts) {
  auto job = [facts](Store& s) { return LoadFacts(s, facts); };
  FactsSnapshot snap = co_await store.Run(std::move(job));
  if (snap.st.ok()) {
    directory.Apply(snap);
  } else {
    spdlog::error("re-reading directory facts: {}", snap.st.ToString());
  }
}

void Server::Impl::AnnounceChanged(const Facts& changed) {
  if (mesh) mesh->AnnounceChanged(changed);
}

Server::Server(asio::io_context& io, ServerConfig config, std::unique_ptr<Store> store) {
  DirectoryState state;
  const Status loaded = store->LoadDirectory(&state);
  impl_ = std::make_unique<Impl>(io, std::move(config), std::move(store));
  impl_->directory_loaded = loaded;
  impl_->directory.Load(state);
  Status st = crypto::PasswordHash(crypto::Hex(crypto::RandomBytes(16)), impl_->config.pwhash, &impl_->decoy_hash);
  if (!st.ok()) spdlog::error("cannot make the decoy password hash: {}", st.ToString());
}

Server::~Server() {
  Stop();
}

Status Server::Start(std::uint16_t* port) {
  Impl& impl = *impl_;
  if (!impl.directory_loaded.ok()) return impl.directory_loaded;
  Status listening = Listen(impl.acceptor, impl.config.listen_host, impl.config.listen_port, "clients", port);
  if (!listening.ok()) return listening;
  if (impl.config.mesh_enabled) {
    impl.mesh = std::make_unique<Mesh>(impl);
    std::uint16_t mesh_port = 0;
    Status st = impl.mesh->Start(&mesh_port);
    if (!st.ok()) return st;
    impl.router.set_mesh(impl.mesh.get());
    spdlog::info("mesh: server {} listening for peers on {}:{} (advertised as {})", impl.config.server_id,
                 impl.config.mesh_host, mesh_port, impl.config.mesh_advertise);
  }
  asio::co_spawn(impl.io, AcceptLoop(impl), asio::detached);
  asio::co_spawn(impl.io, TrimLoop(impl), asio::detached);
  asio::co_spawn(impl.io, SweepLoop(impl), asio::detached);
  return Status::OK();
}

Server::Stats Server::stats() const {
  Stats s;
  s.connections = static_cast<std::uint32_t>(impl_->sessions.size());
  s.frames_handled = impl_->frames_handled;
  s.deliveries = impl_->deliveries;
  return s;
}

void Server::Stop() {
  Impl& impl = *impl_;
  if (impl.stopping) return;
  impl.stopping = true;
  asio::error_code ec;
  impl.acceptor.close(ec);
  impl.trim_timer.cancel();
  impl.sweep_timer.cancel();
  if (impl.mesh) impl.mesh->Stop();
  // Close() erases from the set, so close a snapshot.
  std::vector<std::shared_ptr<Session>> all(impl.sessions.begin(), impl.sessions.end());
  for (auto& s : all) s->Close();
}

}  // namespace fastchat::server
