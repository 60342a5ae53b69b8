// ClientCore's life cycle and the session underneath every command: the
// connection (direct or through the balancers), requests that survive a lost
// connection, and getting back onto a server (chat, listen).
#include "client.h"

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include "balancer_query.h"
#include "client_impl.h"
#include "fastchat/frame.h"
#include "reconnect.h"

namespace fastchat::client {

void LogWarn(const std::string& m) { spdlog::warn("{}", m); }
void LogInfo(const std::string& m) { spdlog::info("{}", m); }
void LogDebug(const std::string& m) { spdlog::debug("{}", m); }

namespace {

// A try at (re)connecting: connect, Hello and Login each get this long.
constexpr std::chrono::seconds kAttemptTimeout{10};
// A first connection through the balancers keeps trying this long (the
// balancer may still name a server that has just gone).
constexpr std::chrono::milliseconds kInitialDialFor{10000};
// A receiving session that has heard nothing for this long sends the server
// a Ping, and takes no answer within kHeartbeatTimeout as a lost
// connection (a hung server still answers TCP keepalives).
constexpr std::chrono::seconds kHeartbeatEvery{20};
constexpr std::chrono::seconds kHeartbeatTimeout{10};

// A refused login in the words the local store uses too, whatever the
// server's words were.
Outcome LoginOutcome(const Status& s) {
  if (s.code() == Code::kBadCredentials) return Outcome{CodeName(s.code()), kBadCredentialsMessage};
  return Outcome::From(s);
}

}  // namespace

// ===================================================================== requests

ClientCore::Impl::~Impl() {
  if (record != nullptr) std::fclose(record);
}

void ClientCore::Impl::StartOn(Pending& p) {
  p.conn.reset();
  p.call.reset();
  if (!CanSend()) return;
  p.conn = conn;
  p.call = conn->Start(p.env);
  if (p.sent) p.resent = true;
  p.sent = true;
}

void ClientCore::Impl::Push(std::deque<Pending>& q, wire::Envelope env) {
  bool in_order = std::all_of(q.begin(), q.end(), [&](const Pending& e) { return e.call && e.conn == conn; });
  q.emplace_back();
  q.back().env = std::move(env);
  if (in_order) StartOn(q.back());
}

awaitable<bool> ClientCore::Impl::WaitLink() {
  while (!link_up && !over && !stopping) co_await link_signal.Wait();
  co_return link_up && !over && !stopping;
}

Status ClientCore::Impl::LostStatus() const {
  return Status(Code::kIOError, lost_reason.empty() ? std::string("not connected") : lost_reason);
}

awaitable<Outcome> ClientCore::Impl::Finish(std::deque<Pending>& q, wire::Envelope* reply, bool* resent,
                                            bool resend_sent) {
  for (;;) {
    if (!q.front().call) {
      if (!reconnect) {
        q.pop_front();
        co_return Err("IO_ERROR", "not connected");
      }
      bool up = co_await WaitLink();
      if (!up) {
        q.pop_front();
        co_return Outcome::From(LostStatus());
      }
      if (!resend_sent && q.front().sent) {
        q.pop_front();
        co_return Err(kReplyLost, "the connection was lost before the server answered");
      }
      std::size_t again = 0;
      for (Pending& e : q) {
        if (e.call) continue;
        if (e.sent) ++again;
        StartOn(e);
      }
      if (again > 0) LogDebug("sending " + std::to_string(again) + " unanswered request(s) again");
      continue;
    }
    std::shared_ptr<Connection> c = q.front().conn;
    std::shared_ptr<Connection::Call> call = q.front().call;
    wire::Envelope rep;
    Status s = co_await c->Wait(call, &rep);
    if (s.code() == Code::kIOError && c->closed() && reconnect && !over && !stopping) {
      for (Pending& e : q) {
        e.conn.reset();
        e.call.reset();
      }
      continue;
    }
    if (resent != nullptr) *resent = q.front().resent;
    if (reply != nullptr) *reply = std::move(rep);
    q.pop_front();
    co_return Outcome::From(s);
  }
}

awaitable<Outcome> ClientCore::Impl::Call(const wire::Envelope& req, wire::Envelope* reply, bool* resent) {
  std::deque<Pending> q;
  Push(q, req);
  co_return co_await Finish(q, reply, resent);
}

awaitable<Outcome> ClientCore::Impl::CallRepeatable(const wire::Envelope& req, wire::Envelope* reply,
                                                    const char* done, const char* done2) {
  bool resent = false;
  Outcome o = co_await Call(req, reply, &resent);
  if (!o.ok() && resent && (o.code == done || (done2 != nullptr && o.code == done2)))
    o = Outcome::OK();  // the first one got through
  co_return o;
}

awaitable<Outcome> ClientCore::Impl::CallOnce(const wire::Envelope& req, wire::Envelope* reply) {
  std::deque<Pending> q;
  Push(q, req);
  bool resent = false;
  co_return co_await Finish(q, reply, &resent, false);
}

void ClientCore::Impl::FlushAcks() {
  if (PendingAcks() == 0 || !CanSend() || conn->closed()) return;
  wire::Envelope env;
  for (std::uint64_t seq : acks) env.mutable_ack()->add_seqs(seq);
  for (const auto& [group, seq] : group_acks) {
    auto* g = env.mutable_ack()->add_groups();
    g->set_group_id(group);
    g->set_seq(seq);
  }
  acks.clear();
  group_acks.clear();
  conn->Post(env);
}

void ClientCore::Impl::OnPush(wire::Envelope& env, std::string_view raw) {
  if (env.has_deliver()) {
    if (record != nullptr) {
      std::string frame;
      AppendFrame(raw, &frame);
      std::fwrite(frame.data(), 1, frame.size(), record);
      std::fflush(record);
    }
  } else if (env.has_error()) {
    Code code = static_cast<Code>(static_cast<int>(env.error().code()));
    displaced = ErrorStatus(env.error()).ToString();
    if (code == Code::kDisplaced) was_displaced = true;
    LogInfo("server: " + displaced);
    return;
  } else if (!env.has_sync_done()) {
    LogDebug("ignoring unexpected push");
    return;
  }
  if (mode == SessionMode::kOneShot && !fetch_asked) return;
  // Past the bound (reachable only while a reply is owed: the reader pauses
  // earlier otherwise) nothing more is kept on this connection, so that
  // nothing is processed out of order; the server sends it all again.
  if (inbox_dropped) return;
  if (inbox.size() + 1 > kInboxMaxFrames || inbox_bytes + raw.size() > kInboxMaxBytes) {
    inbox_dropped = true;
    LogInfo("more deliveries arrived than the client holds (" + std::to_string(inbox.size()) + ", " +
            std::to_string(inbox_bytes) + " bytes) while it waited for a reply; it takes the rest again from the "
            "server once these are processed");
    return;
  }
  inbox_bytes += raw.size();
  inbox.push_back(Received{std::move(env), raw.size()});
  inbox_high_frames = std::max(inbox_high_frames, inbox.size());
  inbox_high_bytes = std::max(inbox_high_bytes, inbox_bytes);
  inbox_wake.cancel();
}

bool ClientCore::Impl::InboxFull() {
  if (!inbox_full && (inbox.size() >= kInboxPauseFrames || inbox_bytes >= kInboxPauseBytes)) {
    inbox_full = true;
  } else if (inbox_full && inbox.size() <= kInboxPauseFrames / 2 && inbox_bytes <= kInboxPauseBytes / 2) {
    inbox_full = false;
  }
  return inbox_full;
}

void ClientCore::Impl::ClearInbox() {
  inbox.clear();
  inbox_bytes = 0;
  inbox_full = false;
  inbox_dropped = false;
}

// ===================================================================== connections

std::shared_ptr<Connection> ClientCore::Impl::NewConnection(bool session) {
  auto c = std::make_shared<Connection>(ioc);
  c->set_tls(cfg.tls);
  if (session) {
    Connection* raw = c.get();
    c->set_push_handler([this](wire::Envelope& env, std::string_view bytes) { OnPush(env, bytes); });
    c->set_push_full([this] { return InboxFull(); });
    c->set_close_handler([this, raw](const Status& why) { OnConnClosed(raw, why); });
    c->set_close_on_timeout(reconnect);
  }
  return c;
}

awaitable<Status> ClientCore::Impl::AskBalancers(std::string* host, std::string* port, std::string* sid) {
  Assignment a;
  Status st = co_await client::AskBalancers(ioc, cfg.balancers, cfg.tls, &a);
  if (!st.ok()) co_return Status(st.code(), "balancer: " + st.message());
  *host = a.host;
  *port = std::to_string(a.port);
  *sid = a.server_id;
  co_return Status::OK();
}

awaitable<Status> ClientCore::Impl::Dial(std::shared_ptr<Connection> c, std::string* where, bool* stale) {
  std::string host = cfg.host, port = cfg.port;
  if (stale != nullptr) *stale = false;
  if (!cfg.balancers.empty()) {
    std::string sid;
    Status s = co_await AskBalancers(&host, &port, &sid);
    if (stale != nullptr) *stale = s.ok() || s.code() == Code::kNotFound;
    if (!s.ok()) co_return s;
    LogDebug("balancer names server " + sid + " at " + host + ":" + port);
  }
  Status s = co_await c->Connect(host, port);
  if (s.ok() && stale != nullptr) *stale = false;
  if (s.ok()) *where = (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + port;
  co_return s;
}

awaitable<Status> ClientCore::Impl::DialFresh(bool session, std::shared_ptr<Connection>* made,
                                              std::string* where) {
  Clock::time_point start = Clock::now();
  Backoff backoff;
  for (;;) {
    std::shared_ptr<Connection> c = NewConnection(session);
    bool stale = false;
    Status s = co_await Dial(c, where, &stale);
    if (s.ok()) {
      *made = c;
      co_return s;
    }
    bool retry = stale && (s.code() == Code::kIOError || s.code() == Code::kNotFound);
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(kInitialDialFor) -
                std::chrono::milliseconds(MsSince(start));
    if (!retry || left.count() <= 0) co_return s;
    LogDebug("connecting: " + s.ToString() + "; trying again");
    asio::steady_timer t(ioc, ClipDelay(backoff.Next(), left));
    std::error_code ec;
    co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

awaitable<Outcome> ClientCore::Impl::LoginOn(std::shared_ptr<Connection> c) {
  wire::Envelope req, reply;
  auto* l = req.mutable_login();
  l->mutable_user()->set_id(me().user_id);
  // Only chat and listen are the user's receiving session; pending and
  // one-shot commands fetch once (TakePending) and displace nobody.
  l->set_receive(mode == SessionMode::kChat || mode == SessionMode::kListen);
  // Reconnects log in with the session token from the first login (no
  // Argon2id on the server); a refused token falls back to the password.
  const bool by_token = !session_token.empty();
  if (by_token)
    l->set_token(session_token);
  else
    l->set_password(cfg.password);
  Status s = co_await c->Request(req, &reply);
  if (by_token && s.code() == Code::kBadCredentials) {
    LogDebug("session token refused (" + s.message() + "); logging in with the password");
    session_token.clear();
    l->clear_token();
    l->set_password(cfg.password);
    s = co_await c->Request(req, &reply);
  }
  if (!s.ok()) co_return LoginOutcome(s);
  if (reply.has_logged_in() && !reply.logged_in().session_token().empty())
    session_token = reply.logged_in().session_token();
  if (!reply.has_logged_in()) co_return Err("BAD_FRAME", "unexpected reply to Login");
  if (reply.logged_in().user_id() != me().user_id)
    co_return Err("STORE_MISMATCH", "the server knows this account under another id");
  co_return Outcome::OK();
}

void ClientCore::Impl::Install(std::shared_ptr<Connection> c, const std::string& where) {
  conn = std::move(c);
  displaced.clear();
  server_id = conn->server_id();
  server_addr = where;
  max_image_bytes = conn->max_image_bytes();
}

void ClientCore::Impl::OnConnClosed(Connection* which, const Status& why) {
  if (which != conn.get()) return;  // an earlier or a half-made connection
  link_up = false;
  std::string reason = displaced.empty() ? why.message() : displaced;
  if (reconnect && established && !was_displaced && !stopping && !over) {
    if (!catching_up) lost_at = Clock::now();
    catching_up = true;
    lost_reason = "connection lost: " + reason;
    Json e = {{"type", "reconnecting"}, {"reason", reason}};
    Emit(e);
    LogInfo("connection to " + server_addr + " lost (" + reason + "); reconnecting");
    inbox_wake.cancel();
    asio::co_spawn(ioc, Reconnect(reason), asio::detached);
    return;
  }
  EndSession(reason);
}

void ClientCore::Impl::EndSession(const std::string& reason) {
  if (over) return;
  over = true;
  lost = true;
  link_up = false;
  lost_reason = "disconnected: " + reason;
  if (!stopping) {
    Json e = {{"type", "disconnected"}, {"reason", reason}};
    Emit(e);
  }
  inbox_wake.cancel();
  link_signal.NotifyAll();
  synced.Set();
  closed.Set();
}

awaitable<Outcome> ClientCore::Impl::Attempt(std::shared_ptr<Connection>* made, std::string* where) {
  std::shared_ptr<Connection> c = NewConnection(true);
  c->set_request_timeout(std::chrono::duration_cast<std::chrono::milliseconds>(kAttemptTimeout));
  Status s = co_await Dial(c, where);
  if (!s.ok()) co_return Outcome::From(s);
  Outcome o = co_await LoginOn(c);
  if (!o.ok()) {
    c->Close();
    co_return o;
  }
  c->set_request_timeout(std::chrono::duration_cast<std::chrono::milliseconds>(Connection::kRequestTimeout));
  *made = c;
  co_return Outcome::OK();
}

awaitable<void> ClientCore::Impl::Heartbeat() {
  asio::steady_timer t(ioc);
  for (;;) {
    t.expires_after(kHeartbeatEvery / 2);
    std::error_code ec;
    co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping || over) co_return;
    std::shared_ptr<Connection> c = conn;
    if (!link_up || !c || c->closed() || Clock::now() - c->last_heard() < kHeartbeatEvery) continue;
    wire::Envelope req, reply;
    req.mutable_ping();
    std::shared_ptr<Connection::Call> call =
        c->Start(req, std::chrono::duration_cast<std::chrono::milliseconds>(kHeartbeatTimeout));
    Status s = co_await c->Wait(call, &reply);
    if (!s.ok()) LogDebug("heartbeat: " + s.ToString());
  }
}

awaitable<void> ClientCore::Impl::Reconnect(std::string reason) {
  // Not from inside the failing connection's reader.
  co_await asio::post(ioc, asio::use_awaitable);
  Clock::time_point start = Clock::now();
  Backoff backoff;
  std::string last = reason;
  asio::steady_timer pause(ioc);
  for (bool first = true;; first = false) {
    if (stopping || over) co_return;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(kReconnectFor) -
                std::chrono::milliseconds(MsSince(start));
    if (!first) {
      pause.expires_after(ClipDelay(backoff.Next(), left));
      std::error_code ec;
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (stopping || over) co_return;
      left = std::chrono::duration_cast<std::chrono::milliseconds>(kReconnectFor) -
             std::chrono::milliseconds(MsSince(start));
    }
    if (left.count() <= 0) break;
    ClearInbox();  // the new server sends everything unacknowledged again
    group_ack_held.clear();
    std::shared_ptr<Connection> c;
    std::string where;
    Outcome o = co_await Attempt(&c, &where);
    if (stopping || over) {
      if (c) c->Close();
      co_return;
    }
    if (o.ok() && c->closed()) o = Err("IO_ERROR", "connection closed right after login");
    if (o.ok()) {
      Install(c, where);
      link_up = true;
      LogInfo("reconnected to " + server_id + " at " + where + "; catching up");
      FlushAcks();
      link_signal.NotifyAll();
      inbox_wake.cancel();
      co_return;
    }
    last = o.code + ": " + o.message;
    LogDebug("reconnect attempt failed: " + last);
    // Retrying cannot help these.
    if (o.code == "BAD_CREDENTIALS" || o.code == "STORE_MISMATCH") {
      EndSession("cannot log in again: " + last);
      co_return;
    }
  }
  EndSession("could not reconnect within " + std::to_string(kReconnectFor.count() / 1000) + " s: " + last);
}

// ===================================================================== ClientCore

ClientCore::ClientCore(asio::io_context& ioc, ClientConfig config, Output* out)
    : impl_(std::make_unique<Impl>(ioc, std::move(config), out)) {}

ClientCore::~ClientCore() = default;

bool ClientCore::disconnected() const { return impl_->lost; }
bool ClientCore::synced() const { return impl_->sync_done; }
std::uint64_t ClientCore::processed() const { return impl_->processed; }

awaitable<Outcome> ClientCore::Register(std::string name, Json* result) {
  Impl& m = *impl_;
  if (name.empty() || name.size() > 32 || AllDigits(name) ||
      !std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
               c == '.' || c == '-';
      }))
    co_return Err(kCodeUsage, "a name is 1-32 characters of A-Z a-z 0-9 _ . - and not all digits");
  std::filesystem::path path = LocalStore::PathFor(m.cfg.home, name);
  std::error_code ec;
  if (std::filesystem::exists(path, ec))
    co_return Err("NAME_TAKEN", "a local store for '" + name + "' already exists: " + path.string());

  crypto::BoxKeyPair box = crypto::NewBoxKeyPair();
  crypto::SignKeyPair sign = crypto::NewSignKeyPair();
  std::shared_ptr<Connection> c;
  std::string where;
  Status s = co_await m.DialFresh(false, &c, &where);
  if (!s.ok()) co_return Outcome::From(s);
  m.Install(c, where);
  wire::Envelope req, reply;
  auto* r = req.mutable_register_();
  r->set_name(name);
  r->set_password(m.cfg.password);
  r->set_x25519_public(box.public_key);
  r->set_ed25519_public(sign.public_key);
  Outcome o = co_await m.Call(req, &reply);
  if (!o.ok()) co_return o;
  if (!reply.has_ok() || reply.ok().id() == 0) co_return Err("BAD_FRAME", "unexpected reply to Register");

  Identity id;
  id.user_id = reply.ok().id();
  id.name = name;
  id.x25519_public = box.public_key;
  id.x25519_secret = box.secret_key;
  id.ed25519_public = sign.public_key;
  id.ed25519_secret = sign.secret_key;
  s = LocalStore::Create(path, id, m.cfg.password, m.cfg.kdf, &m.store);
  if (!s.ok())
    co_return Err(CodeName(s.code()), "registered as id " + std::to_string(id.user_id) +
                                          " but could not create the local store: " + s.message());
  (*result)["user_id"] = id.user_id;
  (*result)["user"] = name;
  co_return Outcome::OK();
}

awaitable<Outcome> ClientCore::ProbeLogin() {
  Impl& m = *impl_;
  std::shared_ptr<Connection> c;
  std::string where;
  Status s = co_await m.DialFresh(false, &c, &where);
  if (!s.ok()) co_return Outcome::From(s);
  wire::Envelope req, reply;
  SetRef(req.mutable_login()->mutable_user(), m.cfg.user);
  req.mutable_login()->set_password(m.cfg.password);
  req.mutable_login()->set_receive(false);
  s = co_await c->Request(req, &reply);
  c->Close();
  co_return LoginOutcome(s);
}

awaitable<Outcome> ClientCore::ChangePassword(std::string new_password, Json* result) {
  Impl& m = *impl_;
  if (new_password == m.cfg.password) co_return Err(kCodeUsage, "the new password is the current one");
  const std::string current = m.cfg.password;
  Outcome o = co_await Login(SessionMode::kOneShot);
  if (o.ok()) {
    wire::Envelope req, reply;
    req.mutable_change_password()->set_old_password(current);
    req.mutable_change_password()->set_new_password(new_password);
    o = co_await m.CallOnce(req, &reply);
    if (o.code == kReplyLost) {
      co_return Err(kReplyLost, "the connection broke before the server answered; run change_password again with "
                                "the same passwords to finish");
    }
    if (!o.ok()) co_return o;
    if (reply.has_logged_in()) m.session_token = reply.logged_in().session_token();
    (*result)["server"] = "changed";
  } else if (o.code == "BAD_CREDENTIALS") {
    // The local store opened with the current password but the server
    // refused it: an earlier change may have done the server's half.
    m.cfg.password = new_password;
    Outcome probe = co_await ProbeLogin();
    if (!probe.ok()) {
      m.cfg.password = current;
      co_return o;
    }
    (*result)["server"] = "already changed";
  } else {
    co_return o;
  }
  m.cfg.password = new_password;
  Status s = m.store->ChangePassword(new_password, m.cfg.kdf);
  if (!s.ok()) {
    co_return Err(CodeName(s.code()),
                  "the server takes the new password now, but the local key store could not be re-sealed (" +
                      s.message() + "); it still opens with the old password: run change_password again with "
                                    "the same passwords to finish");
  }
  (*result)["user"] = m.me().name;
  co_return Outcome::OK();
}

Outcome ClientCore::OpenStore() {
  Impl& m = *impl_;
  if (m.cfg.user.empty()) return Err(kCodeUsage, "no user given (--user or FASTCHAT_USER)");
  std::filesystem::path path;
  Status s = LocalStore::Find(m.cfg.home, m.cfg.user, &path);
  if (!s.ok()) return Err(kCodeNoStore, s.message());
  s = LocalStore::Open(path, m.cfg.password, &m.store);
  if (!s.ok()) return Outcome::From(s);
  m.downloads = m.cfg.downloads.empty() ? m.cfg.home / "downloads" / m.me().name : m.cfg.downloads;
  std::error_code ec;
  m.downloads = std::filesystem::absolute(m.downloads, ec);
  return Outcome::OK();
}

awaitable<Outcome> ClientCore::Login(SessionMode mode) {
  Impl& m = *impl_;
  m.mode = mode;
  if (!m.cfg.record.empty() && mode != SessionMode::kOneShot) {
    m.record = std::fopen(m.cfg.record.c_str(), "ab");
    if (m.record == nullptr)
      co_return Err("IO_ERROR", "cannot open " + m.cfg.record.string() + ": " + std::strerror(errno));
  }
  m.reconnect = mode == SessionMode::kChat || mode == SessionMode::kListen;
  std::shared_ptr<Connection> c;
  std::string where;
  Status s = co_await m.DialFresh(true, &c, &where);
  if (!s.ok()) co_return Outcome::From(s);
  m.Install(c, where);
  Outcome o = co_await m.LoginOn(c);
  if (!o.ok()) co_return o;
  if (c->closed()) co_return Err("IO_ERROR", "the server closed the connection right after login");
  m.link_up = true;
  m.established = true;
  if (m.reconnect) asio::co_spawn(m.ioc, m.Heartbeat(), asio::detached);
  if (mode != SessionMode::kOneShot) asio::co_spawn(m.ioc, m.ProcessLoop(), asio::detached);
  co_return Outcome::OK();
}

awaitable<void> ClientCore::WaitSynced() { co_await impl_->synced.Wait(); }
awaitable<void> ClientCore::WaitClosed() { co_await impl_->closed.Wait(); }

awaitable<void> ClientCore::Shutdown() {
  Impl& m = *impl_;
  if (m.stopping) {
    co_await m.closed.Wait();
    co_return;
  }
  co_await m.WaitReceipts();
  if (m.stopping) {
    co_await m.closed.Wait();
    co_return;
  }
  m.stopping = true;
  LogDebug("inbox high-water mark: " + std::to_string(m.inbox_high_frames) + " deliveries, " +
           std::to_string(m.inbox_high_bytes) + " bytes");
  std::shared_ptr<Connection> c = m.conn;
  if (c && !c->closed()) {
    m.FlushAcks();
    co_await c->Drain();
    c->Close();
  }
  m.link_up = false;
  m.inbox_wake.cancel();
  m.link_signal.NotifyAll();
  m.synced.Set();
  m.closed.Set();
}

awaitable<Outcome> ClientCore::TakePending(bool waiting_only) {
  Impl& m = *impl_;
  if (m.mode != SessionMode::kOneShot && m.mode != SessionMode::kPending)
    co_return Err(kCodeUsage, "a receiving session gets its deliveries pushed");
  if (m.fetch_asked) co_return Err(kCodeUsage, "pending deliveries were fetched already");
  m.only_waiting = waiting_only;
  m.fetch_asked = true;
  if (m.mode == SessionMode::kOneShot) asio::co_spawn(m.ioc, m.ProcessLoop(), asio::detached);
  wire::Envelope req, reply;
  req.mutable_fetch_pending();
  Outcome o = co_await m.Call(req, &reply);
  if (!o.ok()) co_return o;
  co_await m.synced.Wait();
  if (!m.sync_done) co_return Err("IO_ERROR", "connection ended before all pending deliveries arrived");
  co_return Outcome::OK();
}

awaitable<Outcome> ClientCore::FetchPending(Json* result) {
  Impl& m = *impl_;
  if (m.mode == SessionMode::kOneShot)
    co_return Err(kCodeUsage, "pending deliveries go to a receiving session (use: fastchat pending)");
  wire::Envelope req, reply;
  req.mutable_fetch_pending();
  (void)result;
  co_return co_await m.Call(req, &reply);
}

}  // namespace fastchat::client
