// Session's side of the server's limits (peer_limits.h, rate_limiter.h):
// admission, the pre-login bounds, deadlines and keepalive, send rates, and
// the server-wide sweep that checks every connection's deadlines.
#include "session.h"

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include "common/printable.h"
#include "fastchat.pb.h"
#include "fastchat/frame.h"
#include "mesh.h"  // Server::Impl owns a Mesh
#include "server_impl.h"

namespace fastchat::server {

// ------------------------------------------------------------------ admission

bool Session::Admit() {
  const SteadyTime now = std::chrono::steady_clock::now();
  accepted_ = last_frame_ = last_bytes_ = now;
  asio::error_code ec;
  const asio::ip::tcp::endpoint peer = stream_.socket().remote_endpoint(ec);
  if (!ec) source_ = SourceKey(peer.address());
  const Limits& limits = server_.config.limits;
  Refusal r = server_.connections.Admit(source_);
  if (!r.ok()) {
    server_.NoteRefusal(r.status);
    CloseWith(r.status, r.retry_after_ms);
    return false;
  }
  admitted_ = true;
  if (limits.max_unauth_connections > 0 && server_.prelogin.size() >= limits.max_unauth_connections) {
    // The oldest has had the longest to log in; a newcomer may be a real
    // client that logs in at once.
    Session* oldest = server_.prelogin.front();
    const Status why(Code::kBusy, "the server has too many connections waiting to log in; this was the oldest");
    server_.NoteRefusal(why);
    oldest->CloseWith(why, 1000);
  }
  prelogin_ = server_.prelogin.insert(server_.prelogin.end(), this);
  in_prelogin_ = true;
  return true;
}

void Session::LeavePrelogin() {
  if (!in_prelogin_) return;
  server_.prelogin.erase(prelogin_);
  in_prelogin_ = false;
}

void Session::ForgetLimits() {
  LeavePrelogin();
  if (admitted_) server_.connections.Release(source_);
  admitted_ = false;
}

std::uint32_t Session::FrameLimit() const {
  const std::uint32_t max = server_.config.max_frame;
  const std::uint32_t before_login = server_.config.limits.max_unauth_frame;
  if (user_id_ != 0 || before_login == 0) return max;
  return std::min(max, before_login);
}

std::size_t Session::QueueLimit() const {
  const std::size_t max = server_.config.max_queue_bytes;
  if (user_id_ != 0) return max;
  // Replies before login are tiny: a peer that does not read them stops
  // being read long before it pins a logged-in connection's queue.
  return std::min<std::size_t>(max, FrameLimit());
}

// ------------------------------------------------------------------ traffic

void Session::HeardFromPeer() {
  last_bytes_ = std::chrono::steady_clock::now();
  ping_outstanding_ = false;
}

void Session::Pong(std::uint64_t rid) {
  wire::Envelope env;
  env.set_rid(rid);
  env.mutable_pong();
  std::string frame;
  AppendFrame(env.SerializeAsString(), &frame);
  Reply(std::move(frame));
}

Refusal Session::CheckSendRate(const wire::Envelope& env) {
  switch (env.body_case()) {
    case wire::Envelope::kDirectSend:
    case wire::Envelope::kGroupSend:
    case wire::Envelope::kGroupKeySend:
    case wire::Envelope::kFriendRequest:
    case wire::Envelope::kFriendAnswer:
    case wire::Envelope::kGroupCreate:
    case wire::Envelope::kGroupAdd:
    case wire::Envelope::kGroupKick:
    case wire::Envelope::kGroupLeave:
      return server_.rates.TakeSend(user_id_);
    default:
      return Refusal();  // queries, acks, keepalive
  }
}

void Session::LogFailedLogin(const wire::Envelope& env, bool known) {
  const wire::UserRef& who = env.login().user();
  std::string account = who.ref_case() == wire::UserRef::kId ? "#" + std::to_string(who.id()) : Printable(who.name());
  spdlog::warn("failed login for {}account {} from {}", known ? "" : "unknown ", account, DescribeSource(source_));
}

// ------------------------------------------------------------------ deadlines

Verdict Session::CheckDeadlines(SteadyTime now) const {
  if (closed_) return Verdict();
  Liveness c;
  c.logged_in = user_id_ != 0;
  c.said_hello = handshaken_;
  c.waiting_for_peer = waiting_for_peer_;
  c.closing = out_.stopping();
  c.ping_outstanding = ping_outstanding_;
  c.accepted = accepted_;
  c.last_frame = last_frame_;
  c.last_bytes = last_bytes_;
  c.ping_sent = ping_sent_;
  c.closing_since = closing_since_;
  c.queued_bytes = out_.bytes();
  c.last_write_progress = out_.last_progress();
  return CheckLiveness(c, server_.config.limits, now);
}

void Session::Enforce(const Verdict& v, SteadyTime now) {
  if (closed_) return;
  switch (v.act) {
    case Verdict::kNone:
      return;
    case Verdict::kPing: {
      wire::Envelope env;
      env.mutable_ping();
      SendEnvelope(env);
      ping_outstanding_ = true;
      ping_sent_ = now;
      return;
    }
    case Verdict::kCloseWithError:
      ++server_.metrics.deadline_closes_before_login;
      server_.deadline_closes.Add(v.why.message());
      CloseWith(v.why);
      return;
    case Verdict::kDrop:
      if (user_id_ != 0) {
        ++server_.metrics.deadline_closes_logged_in;
        spdlog::warn("dropping a connection of user {}: {}", user_id_, v.why.message());
      } else {
        ++server_.metrics.deadline_closes_before_login;
        server_.deadline_closes.Add(v.why.message());
      }
      Close();
      return;
  }
}

asio::awaitable<void> SweepLoop(Server::Impl& impl) {
  using std::chrono::milliseconds;
  const Millis shortest = impl.config.limits.ShortestDeadline();
  const Millis period = shortest.count() == 0 ? milliseconds(1000)
                                              : std::clamp<Millis>(shortest / 4, milliseconds(50), milliseconds(1000));
  std::vector<std::pair<std::shared_ptr<Session>, Verdict>> due;
  SteadyTime last_report = std::chrono::steady_clock::now();
  while (!impl.stopping) {
    impl.sweep_timer.expires_after(period);
    asio::error_code ec;
    co_await impl.sweep_timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (impl.stopping) co_return;
    const SteadyTime now = std::chrono::steady_clock::now();
    impl.rates.Expire();
    // Decide first, act after: closing a session removes it from the set.
    for (const std::shared_ptr<Session>& s : impl.sessions) {
      Verdict v = s->CheckDeadlines(now);
      if (v.act != Verdict::kNone) due.emplace_back(s, std::move(v));
    }
    for (auto& [s, v] : due) s->Enforce(v, now);
    due.clear();
    if (now - last_report >= std::chrono::seconds(1)) {
      last_report = now;
      std::size_t n = 0;
      std::string example;
      if (impl.refusals.Take(&n, &example)) {
        spdlog::warn("refused {} connection(s) or request(s) over limits in the last second, e.g.: {}", n, example);
      }
      if (impl.deadline_closes.Take(&n, &example)) {
        spdlog::info("closed {} connection(s) at their deadlines in the last second, e.g.: {}", n, example);
      }
    }
  }
}

}  // namespace fastchat::server
