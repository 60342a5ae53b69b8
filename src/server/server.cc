#include "server.h"

#include <algorithm>
#include <chrono>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include "server_impl.h"
#include "common/listen.h"
#include "fastchat/crypto.h"
#include "fastchat/deliver_frame.h"
#include "group_log_cap.h"
#include "mesh.h"
#include "prometheus_text.h"
#include "session.h"

namespace fastchat::server {

void Router::Route(const std::vector<Delivery>& deliveries, const std::shared_ptr<const std::string>& event) {
  // Remote recipients grouped by the link to their server: one Forward each
  // (one per named predecessor: a group notice names none for the members it
  // adds, and a Forward carries one prev_seq).
  std::vector<std::pair<PeerLink*, std::vector<Delivery>>> remote;
  // A group entry's Deliver frame is the same for every member: built once,
  // at its first local recipient with another delivery of it after, and
  // shared (no prefix built and allocated per member).
  std::shared_ptr<const std::string> frame;
  std::uint64_t frame_seq = 0;
  for (std::size_t i = 0; i < deliveries.size(); ++i) {
    const Delivery& d = deliveries[i];
    if (Session* s = presence_.Find(d.user)) {
      if (d.group_id != 0 && frame_seq != d.seq && i + 1 < deliveries.size() && deliveries[i + 1].seq == d.seq) {
        frame = std::make_shared<const std::string>(DeliverFrame(d.seq, *event, d.group_id));
        frame_seq = d.seq;
      }
      s->Deliver(d.seq, event, d.group_id, d.prev_seq, false, frame_seq == d.seq ? &frame : nullptr);
      continue;
    }
    if (!mesh_) continue;
    PeerLink* link = mesh_->Where(d.user);
    if (!link) continue;  // offline everywhere: the store keeps it
    auto it = std::find_if(remote.begin(), remote.end(), [link, &d](const auto& p) {
      return p.first == link && p.second.front().prev_seq == d.prev_seq;
    });
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
constexpr std::size_t kCapsPerRound = 1024;

// Every limits.group_log_check: holds the logs of the groups appended to
// through this server since the last check to their bound, one store job
// each (group_log_cap.h). Up to kCapsPerRound groups a round; the rest wait
// for the next round.
void CapGroupLogs(Server::Impl& impl, std::uint64_t now_ms) {
  const Limits& limits = impl.config.limits;
  const GroupLogBound bound{limits.max_group_log_entries, limits.max_group_log_bytes};
  if (limits.group_log_check.count() <= 0 || (bound.max_entries == 0 && bound.max_bytes == 0)) {
    impl.cap_due.clear();
    return;
  }
  const auto now = std::chrono::steady_clock::now();
  if (now < impl.next_cap_check) return;
  impl.next_cap_check = now + limits.group_log_check;
  std::size_t n = 0;
  for (auto it = impl.cap_due.begin(); it != impl.cap_due.end() && n < kCapsPerRound; ++n) {
    GroupLogCap cap;
    cap.group = *it;
    cap.bound = bound;
    cap.now_ms = now_ms;
    if (const DirGroup* g = impl.directory.FindGroup(cap.group)) {
      cap.group_name = g->name;
      cap.admin = g->admin_id;
    }
    it = impl.cap_due.erase(it);
    const std::uint64_t group = cap.group;
    impl.store.Submit([cap = std::move(cap)](Store& s) { return CapGroupLogAndTell(s, cap); },
                      [&impl, group](GroupLogCapResult r) {
                        if (!r.st.ok()) {
                          spdlog::warn("holding the log of group {} to its bound: {}", group, r.st.ToString());
                          return;
                        }
                        if (r.cut == 0) return;
                        ++impl.metrics.group_logs_capped;
                        impl.metrics.group_log_entries_missed += r.missed;
                        spdlog::info("group {}: log held to its bound; {} members missed {} messages", group,
                                     r.lapsed, r.missed);
                      });
  }
}

// Once a second, drops group-log entries that every member has acknowledged
// (for the groups acknowledged since the last round), and the dedupe keys
// whose retention has ended (Store::TrimDedupeKeys); and holds the logs
// written to their bound (CapGroupLogs).
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
    const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::system_clock::now().time_since_epoch());
    // One job per group: on PostgreSQL a trim locks its group's row, and a
    // trim that would wait for it out of lock order (kLockOrder) runs again
    // first in the next batch, alone (StoreWorker).
    for (std::uint64_t g : groups) {
      impl.store.Submit([g](Store& s) { return s.TrimGroup(g); }, [g](Status st) {
        if (!st.ok()) spdlog::warn("trimming the log of group {}: {}", g, st.ToString());
      });
    }
    CapGroupLogs(impl, static_cast<std::uint64_t>(now.count()));
    impl.store.Submit([now_ms = static_cast<std::uint64_t>(now.count())](Store& s) { return s.TrimDedupeKeys(now_ms); },
                      [](Status st) {
                        if (!st.ok()) spdlog::warn("trimming dedupe keys: {}", st.ToString());
                      });
  }
}

asio::awaitable<void> AcceptLoop(Server::Impl& impl) {
  for (;;) {
    asio::error_code ec;
    net::Socket socket = co_await impl.acceptor.async_accept(impl.io, asio::redirect_error(asio::use_awaitable, ec));
    if (impl.stopping) co_return;
    if (ec) {
      // Out of file descriptors and similar: log, back off briefly, go on.
      spdlog::warn("accept failed: {}", ec.message());
      asio::steady_timer t(impl.io, std::chrono::milliseconds(50));
      co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    ++impl.metrics.accepted;
    socket.set_option(asio::ip::tcp::no_delay(true), ec);
    auto session = std::make_shared<Session>(impl, std::move(socket));
    impl.sessions.insert(session);
    session->Start();
  }
}

}  // namespace

void Server::Impl::RefreshDirectory(Facts facts) {
  // A group's members are read as ids; only the users this directory does
  // not know yet are read after (users' own changes are announced on their
  // own). A 1000-member group read 1000 users per membership notice before.
  facts.member_users = false;
  auto job = [facts = std::move(facts)](Store& s) { return LoadFacts(s, facts); };
  store.Submit(std::move(job), [this](FactsSnapshot snap) {
    if (!snap.st.ok()) {
      spdlog::error("re-reading directory facts: {}", snap.st.ToString());
      return;
    }
    directory.Apply(snap);
    Facts unknown;
    for (const auto& [group, members] : snap.groups) {
      for (std::uint64_t u : members) {
        if (directory.FindUser(u) == nullptr) unknown.user_ids.push_back(u);
      }
    }
    if (!unknown.user_ids.empty()) RefreshDirectory(std::move(unknown));
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

// An io_context whose queued handlers can be destroyed before it is:
// execution_context::shutdown() is what ~io_context runs first (it destroys
// every handler and pending operation; the services stay until destroy()),
// so sockets and timers may still be closed and destroyed after it.
class Server::EventLoop : public asio::io_context {
 public:
  EventLoop() : asio::io_context(1) {}
  void DestroyQueuedHandlers() { shutdown(); }
};

Server::Server(ServerConfig config, std::unique_ptr<Store> store) : loop_(std::make_unique<EventLoop>()) {
  DirectoryState state;
  const Status loaded = store->LoadDirectory(&state);
  impl_ = std::make_unique<Impl>(*loop_, std::move(config), std::move(store));
  impl_->directory_loaded = loaded;
  impl_->directory.Load(state);
  Status st = crypto::PasswordHash(crypto::Hex(crypto::RandomBytes(16)), impl_->config.pwhash, &impl_->decoy_hash);
  if (!st.ok()) spdlog::error("cannot make the decoy password hash: {}", st.ToString());
}

Server::~Server() {
  Stop();
  // Nothing may post to the loop once its handlers are destroyed: let the
  // hashes under way and the store's queued jobs finish (their results are
  // posted to the loop, and destroyed below with everything else queued
  // there); hashes not started are dropped.
  if (impl_->hashes.jobs() > 0) {
    spdlog::info("stopping: {} password hash jobs running or waiting (those waiting are dropped)",
                 impl_->hashes.jobs());
  }
  impl_->hash_pool.StopAndDropQueued();
  impl_->store.Finish();
  // A queued handler may be a coroutine frame (a session's writer whose
  // write was cancelled by Stop) whose locals refer to impl_: destroy them
  // while it lives. Then impl_'s sockets and timers, then the loop.
  loop_->DestroyQueuedHandlers();
  impl_.reset();
}

asio::io_context& Server::io() { return *loop_; }

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
  s.deliveries = impl_->metrics.deliveries_live + impl_->metrics.deliveries_from_store;
  return s;
}

std::string Server::MetricsText() const {
  const Impl& impl = *impl_;
  const ServerMetrics& m = impl.metrics;
  PrometheusText t;
  std::size_t logged_in = 0, queued = 0;
  for (const std::shared_ptr<Session>& s : impl.sessions) {
    if (s->user_id() != 0) ++logged_in;
    queued += s->queued_bytes();
  }
  const std::string server_id = impl.config.server_id;
  t.Family("fastchat_server_info", "gauge", "This server: its id in the cluster (value always 1).");
  t.Sample("fastchat_server_info", {{"server_id", server_id}}, 1);

  t.Family("fastchat_connections", "gauge", "Client connections open now, by state.");
  t.Sample("fastchat_connections", {{"state", "before_login"}}, static_cast<double>(impl.sessions.size() - logged_in));
  t.Sample("fastchat_connections", {{"state", "logged_in"}}, static_cast<double>(logged_in));
  t.Family("fastchat_receiving_users", "gauge", "Users with a receiving session on this server.");
  t.Sample("fastchat_receiving_users", static_cast<double>(impl.presence.size()));
  t.Family("fastchat_session_coroutines", "gauge",
           "Client connections' reader and writer coroutines running now (an idle plain connection runs none).");
  t.Sample("fastchat_session_coroutines", {{"loop", "read"}}, static_cast<double>(m.session_readers));
  t.Sample("fastchat_session_coroutines", {{"loop", "write"}}, static_cast<double>(m.session_writers));
  t.Family("fastchat_connections_accepted_total", "counter", "Client connections accepted (before admission).");
  t.Sample("fastchat_connections_accepted_total", static_cast<double>(m.accepted));
  t.Family("fastchat_queue_bytes", "gauge", "Bytes queued to client connections and not yet written.");
  t.Sample("fastchat_queue_bytes", static_cast<double>(queued));

  t.Family("fastchat_logins_total", "counter", "Logins by method and result.");
  static constexpr const char* kResults[ServerMetrics::kLoginResults] = {"ok", "bad_credentials", "refused"};
  for (int r = 0; r < ServerMetrics::kLoginResults; ++r) {
    t.Sample("fastchat_logins_total", {{"method", "password"}, {"result", kResults[r]}},
             static_cast<double>(m.password_logins[r]));
    t.Sample("fastchat_logins_total", {{"method", "token"}, {"result", kResults[r]}},
             static_cast<double>(m.token_logins[r]));
  }
  t.Family("fastchat_registrations_total", "counter", "Registrations by result.");
  t.Sample("fastchat_registrations_total", {{"result", "ok"}}, static_cast<double>(m.registrations_ok));
  t.Sample("fastchat_registrations_total", {{"result", "refused"}}, static_cast<double>(m.registrations_refused));

  t.Family("fastchat_requests_total", "counter", "Client frames handled.");
  t.Sample("fastchat_requests_total", static_cast<double>(impl.frames_handled));
  t.Family("fastchat_deliveries_total", "counter",
           "Messages and events queued to local receiving sessions: live, or read back from the store.");
  t.Sample("fastchat_deliveries_total", {{"path", "live"}}, static_cast<double>(m.deliveries_live));
  t.Sample("fastchat_deliveries_total", {{"path", "store"}}, static_cast<double>(m.deliveries_from_store));
  t.Family("fastchat_group_entries_held_total", "counter",
           "Group messages that reached a session before an earlier one of the group and were held for it.");
  t.Sample("fastchat_group_entries_held_total", static_cast<double>(m.group_entries_held));
  t.Family("fastchat_group_log_gaps_total", "counter",
           "Times a session gave up on a group message that came before an earlier one of the group (the earlier"
           " one did not come in time, or too much was held) and read its pending rows from the store again.");
  t.Sample("fastchat_group_log_gaps_total", static_cast<double>(m.group_gaps));
  t.Family("fastchat_group_repeats_dropped_total", "counter",
           "Group messages forwarded to a session that had sent them already (a store read found them first):"
           " not sent again.");
  t.Sample("fastchat_group_repeats_dropped_total", static_cast<double>(m.group_repeats_dropped));
  t.Family("fastchat_group_store_repeats_skipped_total", "counter",
           "Group messages a read of the store from the start (after a mesh link came or went) found that the"
           " session had sent on its connection already: not sent again.");
  t.Sample("fastchat_group_store_repeats_skipped_total", static_cast<double>(m.group_store_repeats_skipped));
  t.Family("fastchat_group_logs_capped_total", "counter",
           "Times a group's log held more than --max-group-log-entries or --max-group-log-bytes and its oldest"
           " messages were dropped.");
  t.Sample("fastchat_group_logs_capped_total", static_cast<double>(m.group_logs_capped));
  t.Family("fastchat_group_log_messages_missed_total", "counter",
           "Group messages members had not collected when they were dropped so, summed over the members (each is"
           " told with one notice).");
  t.Sample("fastchat_group_log_messages_missed_total", static_cast<double>(m.group_log_entries_missed));

  t.Family("fastchat_limit_rejections_total", "counter",
           "Connections and requests refused over a limit, by the code they were answered with.");
  t.Sample("fastchat_limit_rejections_total", {{"code", "BUSY"}}, static_cast<double>(m.refused_busy));
  t.Sample("fastchat_limit_rejections_total", {{"code", "RATE_LIMITED"}}, static_cast<double>(m.refused_rate_limited));
  t.Sample("fastchat_limit_rejections_total", {{"code", "LIMIT_REACHED"}},
           static_cast<double>(m.refused_limit_reached));
  t.Family("fastchat_deadline_closes_total", "counter", "Connections closed at a deadline.");
  t.Sample("fastchat_deadline_closes_total", {{"when", "before_login"}},
           static_cast<double>(m.deadline_closes_before_login));
  t.Sample("fastchat_deadline_closes_total", {{"when", "logged_in"}}, static_cast<double>(m.deadline_closes_logged_in));
  t.Family("fastchat_password_hash_jobs", "gauge", "Argon2id jobs running or waiting.");
  t.Sample("fastchat_password_hash_jobs", static_cast<double>(impl.hashes.jobs()));

  const StoreWorker::Stats st = impl.store.stats();
  t.Family("fastchat_store_batches_total", "counter", "Store batches committed or failed (one transaction, one sync).");
  t.Sample("fastchat_store_batches_total", {{"result", "ok"}}, static_cast<double>(st.batches - st.failed_commits));
  t.Sample("fastchat_store_batches_total", {{"result", "failed"}}, static_cast<double>(st.failed_commits));
  t.Family("fastchat_store_split_batches_total", "counter",
           "Store batches of enqueues and acks split by recipient into parallel lanes (PostgreSQL).");
  t.Sample("fastchat_store_split_batches_total", static_cast<double>(st.split_batches));
  t.Family("fastchat_store_jobs_total", "counter", "Store jobs (requests' writes and reads) run in batches.");
  t.Sample("fastchat_store_jobs_total", static_cast<double>(st.jobs));
  t.Family("fastchat_store_queued_jobs", "gauge", "Store jobs waiting for the next batch.");
  t.Sample("fastchat_store_queued_jobs", static_cast<double>(st.queued));
  t.WriteHistogram("fastchat_store_batch_jobs", "Jobs per store batch.", st.batch_jobs);
  t.WriteHistogram("fastchat_store_batch_seconds", "Time per store batch, from its first job to the end of its sync.",
                   st.batch_seconds);

  if (impl.mesh) {
    t.Family("fastchat_mesh_links", "gauge", "Authenticated links to other servers of the cluster.");
    t.Sample("fastchat_mesh_links", static_cast<double>(impl.mesh->link_count()));
  }
  t.WriteProcessMetrics();
  return t.text();
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
