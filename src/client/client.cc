#include "client.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <thread>
#include <utility>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include "balancer/balancer_client.h"
#include "connection.h"
#include "fastchat.pb.h"
#include "fastchat/frame.h"
#include "filename.h"
#include "local_store.h"
#include "reconnect.h"

namespace fastchat::client {

namespace {

using asio::awaitable;

// Logging through plain functions: GCC 12 miscompiles fmt's compile-time
// format strings inside coroutines.
void LogWarn(const std::string& m) { spdlog::warn("{}", m); }
void LogInfo(const std::string& m) { spdlog::info("{}", m); }
void LogDebug(const std::string& m) { spdlog::debug("{}", m); }

constexpr std::uint64_t kChunkBytes = 262144;   // image data per chunk
constexpr std::size_t kSendWindow = 6;          // image chunks in flight
constexpr std::size_t kMaxTextBytes = 262144;   // longer texts: send a file
constexpr std::size_t kAckBatch = 64;
// A try at (re)connecting: connect, Hello and Login each get this long.
constexpr std::chrono::seconds kAttemptTimeout{10};
// A first connection through the balancers keeps trying this long (the
// balancer may still name a server that has just gone).
constexpr std::chrono::milliseconds kInitialDialFor{10000};
// A receiving session that has heard nothing for this long asks the server
// something small, and takes no answer within kHeartbeatTimeout as a lost
// connection (a hung server still answers TCP keepalives).
constexpr std::chrono::seconds kHeartbeatEvery{20};
constexpr std::chrono::seconds kHeartbeatTimeout{10};
// Outcome code of CallOnce: sent, then the link broke before any reply.
constexpr const char* kReplyLost = "REPLY_LOST";

using Clock = std::chrono::steady_clock;

long long MsSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

// ---------------------------------------------------------------- bytes

void PutU64(std::string* out, std::uint64_t v) {
  for (int i = 7; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutU32(std::string* out, std::uint32_t v) {
  for (int i = 3; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
std::uint64_t GetU64(std::string_view in) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(in[static_cast<std::size_t>(i)]);
  return v;
}

std::string DmAd(std::uint64_t sender, std::uint64_t recipient, std::string_view msg_id, int kind,
                 std::uint32_t index, std::uint32_t count) {
  std::string ad = "fastchat-dm-v1";
  PutU64(&ad, sender);
  PutU64(&ad, recipient);
  ad.append(msg_id);
  ad.push_back(static_cast<char>(kind));
  PutU32(&ad, index);
  PutU32(&ad, count);
  return ad;
}

std::string GroupAd(std::uint64_t group, std::uint64_t epoch, std::uint64_t sender,
                    std::string_view msg_id, int kind, std::uint32_t index, std::uint32_t count) {
  std::string ad = "fastchat-grp-v1";
  PutU64(&ad, group);
  PutU64(&ad, epoch);
  PutU64(&ad, sender);
  ad.append(msg_id);
  ad.push_back(static_cast<char>(kind));
  PutU32(&ad, index);
  PutU32(&ad, count);
  return ad;
}

bool AllDigits(const std::string& s) {
  if (s.empty() || s.size() > 19) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

void SetRef(wire::UserRef* ref, const std::string& user) {
  if (AllDigits(user))
    ref->set_id(std::stoull(user));
  else
    ref->set_name(user);
}

Outcome Err(const char* code, std::string message) { return Outcome{code, std::move(message)}; }

// Number of chunks of an image of `size` bytes (header chunk included).
std::uint64_t ChunkCount(std::uint64_t size) { return 1 + (size + kChunkBytes - 1) / kChunkBytes; }

// Size of data chunk `index` (1-based) of an image of `size` bytes.
std::uint64_t DataChunkSize(std::uint64_t size, std::uint64_t index) {
  std::uint64_t offset = (index - 1) * kChunkBytes;
  return std::min(kChunkBytes, size - offset);
}

// NO_SUCH_FILE unless `path` is a readable regular file.
Outcome CheckFile(const std::string& path) {
  std::error_code ec;
  auto st = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(st)) return Outcome{kCodeNoSuchFile, "no such file: " + path};
  if (!std::filesystem::is_regular_file(st)) return Outcome{kCodeNoSuchFile, "not a regular file: " + path};
  if (::access(path.c_str(), R_OK) != 0) return Outcome{kCodeNoSuchFile, "cannot read " + path + ": " + std::strerror(errno)};
  return Outcome::OK();
}

std::string Display(const Contact& c) {
  return c.name.empty() ? "#" + std::to_string(c.id) : c.name;
}

// A one-shot flag coroutines can wait for.
class Latch {
 public:
  explicit Latch(asio::io_context& ioc) : ioc_(ioc) {}
  bool is_set() const { return set_; }
  void Set() {
    set_ = true;
    for (asio::steady_timer* t : waiters_) t->cancel();
  }
  awaitable<void> Wait() {
    asio::steady_timer t(ioc_, asio::steady_timer::time_point::max());
    while (!set_) {
      waiters_.push_back(&t);
      std::error_code ec;
      co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      std::erase(waiters_, &t);
    }
  }

 private:
  asio::io_context& ioc_;
  bool set_ = false;
  std::vector<asio::steady_timer*> waiters_;
};

// Wakes every coroutine waiting in Wait() (a condition variable for one
// thread: waiters re-check their condition after each wake).
class Signal {
 public:
  explicit Signal(asio::io_context& ioc) : ioc_(ioc) {}
  void NotifyAll() {
    for (asio::steady_timer* t : waiters_) t->cancel();
  }
  awaitable<void> Wait() {
    asio::steady_timer t(ioc_, asio::steady_timer::time_point::max());
    waiters_.push_back(&t);
    std::error_code ec;
    co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    std::erase(waiters_, &t);
  }

 private:
  asio::io_context& ioc_;
  std::vector<asio::steady_timer*> waiters_;
};

// One recorded or live delivery, for the Open* functions.
struct Opened {
  std::string plaintext;
  std::string detail;  // e.g. "signature not checked"
};

}  // namespace

// ===================================================================== Impl

struct ClientCore::Impl {
  Impl(asio::io_context& c, ClientConfig config, Output* o)
      : ioc(c), cfg(std::move(config)), out(o), inbox_wake(c), synced(c), closed(c), link_signal(c) {}

  ~Impl() {
    if (asker.joinable()) asker.join();
    if (record != nullptr) std::fclose(record);
  }

  asio::io_context& ioc;
  ClientConfig cfg;
  Output* out;
  std::unique_ptr<LocalStore> store;
  // The current connection. Requests in flight hold their own reference, so
  // a lost connection lives on until they have seen it fail.
  std::shared_ptr<Connection> conn;
  SessionMode mode = SessionMode::kOneShot;
  std::filesystem::path downloads;

  std::deque<wire::Envelope> inbox;
  asio::steady_timer inbox_wake;
  std::vector<std::uint64_t> acks;
  Latch synced;  // set on the first SyncDone, or when the session ends
  Latch closed;
  bool sync_done = false;
  bool stopping = false;
  bool lost = false;  // connection ended by the server / network
  std::string lost_reason;  // why requests cannot be sent now
  std::string displaced;       // the server's last words (an Error push), if any
  bool was_displaced = false;  // ... and they were DISPLACED: another login took over
  std::uint64_t processed = 0;
  std::FILE* record = nullptr;

  // Reconnecting (chat, listen): when the link is lost the session goes on;
  // requests wait for the link and are sent again, with the same bytes.
  bool reconnect = false;    // this session gets back to a server by itself
  bool established = false;  // logged in at least once
  bool link_up = false;      // `conn` is logged in and usable
  bool over = false;         // the session has ended for good
  bool catching_up = false;  // reconnected (or reconnecting), SyncDone not seen yet
  Clock::time_point lost_at;
  std::string server_id;     // HelloOk.server_id of `conn`
  std::string server_addr;   // host:port of `conn`
  std::uint64_t max_image_bytes = 0;
  Signal link_signal;        // link_up, over or stopping changed
  std::thread asker;         // the blocking balancer query, off the io thread

  const Identity& me() const { return store->identity(); }

  void Emit(const Json& e) { out->Emit(e); }

  // ------------------------------------------------------------ plumbing

  // ---- requests that survive a lost connection
  //
  // A Pending keeps the request's bytes until it is answered. Queues of them
  // keep this shape: [started on one connection]* [not started]*, so that
  // after a loss everything is sent again in the original order.
  struct Pending {
    wire::Envelope env;
    std::shared_ptr<Connection> conn;  // where it was last started
    std::shared_ptr<Connection::Call> call;
    bool sent = false;    // queued on some connection at least once
    bool resent = false;  // sent again after a loss: the server may have seen it before
  };

  bool CanSend() const { return conn != nullptr && (!reconnect || link_up); }

  void StartOn(Pending& p) {
    p.conn.reset();
    p.call.reset();
    if (!CanSend()) return;
    p.conn = conn;
    p.call = conn->Start(p.env);
    if (p.sent) p.resent = true;
    p.sent = true;
  }

  // Appends `env` to `q` and sends it now if everything before it has been
  // sent on the current connection.
  void Push(std::deque<Pending>& q, wire::Envelope env) {
    bool in_order = std::all_of(q.begin(), q.end(), [&](const Pending& e) { return e.call && e.conn == conn; });
    q.emplace_back();
    q.back().env = std::move(env);
    if (in_order) StartOn(q.back());
  }

  // Waits until the link is up (true) or the session is over (false).
  awaitable<bool> WaitLink() {
    while (!link_up && !over && !stopping) co_await link_signal.Wait();
    co_return link_up && !over && !stopping;
  }

  Status LostStatus() const {
    return Status(Code::kIOError, lost_reason.empty() ? std::string("not connected") : lost_reason);
  }

  // Waits for the reply to q.front() and pops it. In a session that
  // reconnects, a request whose connection is lost is sent again (with all
  // of `q`, in order) once the link is back, until it is answered or the
  // session ends; with resend_sent false, a request that had been sent is
  // not sent again: it completes with kReplyLost once the link is back.
  // *resent tells whether the request went out more than once.
  awaitable<Outcome> Finish(std::deque<Pending>& q, wire::Envelope* reply, bool* resent, bool resend_sent = true) {
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

  // One request and its reply (sent again after a lost connection, see
  // Finish).
  awaitable<Outcome> Call(const wire::Envelope& req, wire::Envelope* reply, bool* resent = nullptr) {
    std::deque<Pending> q;
    Push(q, req);
    co_return co_await Finish(q, reply, resent);
  }

  // Like Call, but never sends the request twice: kReplyLost if the link
  // broke after it was sent (for requests that are not idempotent).
  awaitable<Outcome> CallOnce(const wire::Envelope& req, wire::Envelope* reply) {
    std::deque<Pending> q;
    Push(q, req);
    bool resent = false;
    co_return co_await Finish(q, reply, &resent, false);
  }

  void FlushAcks() {
    if (acks.empty() || !CanSend() || conn->closed()) return;
    wire::Envelope env;
    for (std::uint64_t seq : acks) env.mutable_ack()->add_seqs(seq);
    acks.clear();
    conn->Post(env);
  }

  void OnPush(wire::Envelope& env, std::string_view raw) {
    if (env.has_deliver()) {
      if (record != nullptr) {
        std::string frame;
        AppendFrame(raw, &frame);
        std::fwrite(frame.data(), 1, frame.size(), record);
        std::fflush(record);
      }
    } else if (env.has_error()) {
      Code code = static_cast<Code>(static_cast<int>(env.error().code()));
      displaced = std::string(CodeName(code)) + ": " + env.error().message();
      if (code == Code::kDisplaced) was_displaced = true;
      LogInfo("server: " + displaced);
      return;
    } else if (!env.has_sync_done()) {
      LogDebug("ignoring unexpected push");
      return;
    }
    if (mode == SessionMode::kOneShot) return;
    inbox.push_back(std::move(env));
    inbox_wake.cancel();
  }

  // ------------------------------------------------------------ connections

  // A connection whose pushes and end reach this session.
  std::shared_ptr<Connection> NewConnection(bool session) {
    auto c = std::make_shared<Connection>(ioc);
    if (session) {
      Connection* raw = c.get();
      c->set_push_handler([this](wire::Envelope& env, std::string_view bytes) { OnPush(env, bytes); });
      c->set_close_handler([this, raw](const Status& why) { OnConnClosed(raw, why); });
      c->set_close_on_timeout(reconnect);
    }
    return c;
  }

  // Asks the balancers (a blocking query, run on a thread of its own).
  awaitable<Status> AskBalancers(std::string* host, std::string* port, std::string* sid) {
    struct Answer {
      Status status;
      std::string host;
      std::uint16_t port = 0;
      std::string server_id;
      bool done = false;
    };
    auto answer = std::make_shared<Answer>();
    auto wake = std::make_shared<asio::steady_timer>(ioc, asio::steady_timer::time_point::max());
    if (asker.joinable()) asker.join();
    std::vector<std::string> list = cfg.balancers;
    asio::io_context* ctx = &ioc;
    asker = std::thread([answer, wake, list, ctx]() {
      std::string h, id;
      std::uint16_t p = 0;
      Status st = balancer::AskBalancer(list, &h, &p, &id);
      asio::post(*ctx, [answer, wake, st, h, p, id]() {
        answer->status = st;
        answer->host = h;
        answer->port = p;
        answer->server_id = id;
        answer->done = true;
        wake->cancel();
      });
    });
    while (!answer->done) {
      std::error_code ec;
      co_await wake->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    if (!answer->status.ok()) co_return Status(answer->status.code(), "balancer: " + answer->status.message());
    *host = answer->host;
    *port = std::to_string(answer->port);
    *sid = answer->server_id;
    co_return Status::OK();
  }

  // Connects `c` (Hello included) to --server, or to the server the
  // balancers name. *where = "host:port". *stale: the balancers could not
  // offer a server, or offered one that could not be reached (worth asking
  // again soon: their table lags a server's end by a few seconds).
  awaitable<Status> Dial(std::shared_ptr<Connection> c, std::string* where, bool* stale = nullptr) {
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

  // A fresh connected connection. Through balancers, keeps trying for a
  // while (one may name a server that has just gone).
  awaitable<Status> DialFresh(bool session, std::shared_ptr<Connection>* made, std::string* where) {
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

  // Login{receive} on `c`.
  awaitable<Outcome> LoginOn(std::shared_ptr<Connection> c) {
    wire::Envelope req, reply;
    auto* l = req.mutable_login();
    l->mutable_user()->set_id(me().user_id);
    l->set_password(cfg.password);
    l->set_receive(mode != SessionMode::kOneShot);
    Status s = co_await c->Request(req, &reply);
    if (!s.ok()) co_return Outcome::From(s);
    if (!reply.has_logged_in()) co_return Err("BAD_FRAME", "unexpected reply to Login");
    if (reply.logged_in().user_id() != me().user_id)
      co_return Err("STORE_MISMATCH", "the server knows this account under another id");
    co_return Outcome::OK();
  }

  void Install(std::shared_ptr<Connection> c, const std::string& where) {
    conn = std::move(c);
    displaced.clear();
    server_id = conn->server_id();
    server_addr = where;
    max_image_bytes = conn->max_image_bytes();
  }

  void OnConnClosed(Connection* which, const Status& why) {
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

  // The session is over for good: "disconnected", and everyone waiting is
  // released.
  void EndSession(const std::string& reason) {
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

  // One try at getting back: a server, Hello, receiving Login.
  awaitable<Outcome> Attempt(std::shared_ptr<Connection>* made, std::string* where) {
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

  // Chat and listen: makes sure a quiet link is still alive (see
  // kHeartbeatEvery). A probe left unanswered ends the connection, which
  // starts a reconnect.
  awaitable<void> Heartbeat() {
    asio::steady_timer t(ioc);
    for (;;) {
      t.expires_after(kHeartbeatEvery / 2);
      std::error_code ec;
      co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (stopping || over) co_return;
      std::shared_ptr<Connection> c = conn;
      if (!link_up || !c || c->closed() || Clock::now() - c->last_heard() < kHeartbeatEvery) continue;
      wire::Envelope req, reply;
      req.mutable_get_user()->mutable_user()->set_id(me().user_id);
      std::shared_ptr<Connection::Call> call =
          c->Start(req, std::chrono::duration_cast<std::chrono::milliseconds>(kHeartbeatTimeout));
      Status s = co_await c->Wait(call, &reply);
      if (!s.ok()) LogDebug("heartbeat: " + s.ToString());
    }
  }

  // Gets the session back onto a server (the same one, or whichever the
  // balancers name), with backoff, for up to kReconnectFor.
  awaitable<void> Reconnect(std::string reason) {
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
      inbox.clear();  // the new server sends everything unacknowledged again
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

  // ------------------------------------------------------------ users

  // Pins (or checks) the keys of `u`; KEY_CHANGED (after a loud warning) if
  // they differ from the pinned ones.
  Outcome PinUser(const wire::UserInfo& u, Contact* pinned) {
    if (u.x25519_public().size() != crypto::kKeyBytes || u.ed25519_public().size() != crypto::kKeyBytes)
      return Err("BAD_KEYS", "the server sent malformed keys for user " + std::to_string(u.id()));
    Contact c;
    c.id = u.id();
    c.name = u.name();
    c.x25519_public = u.x25519_public();
    c.ed25519_public = u.ed25519_public();
    PinResult r;
    Status s = store->Pin(c, &r, pinned);
    if (!s.ok()) return Outcome::From(s);
    if (r == PinResult::kChanged) {
      std::string who = (c.name.empty() ? "#" : c.name + " #") + std::to_string(c.id);
      std::string msg = "the server presents NEW KEYS for " + who +
                        " that differ from the keys pinned when first seen; refusing to use them. "
                        "Someone may be impersonating this user. Compare safety numbers "
                        "(fingerprint) out of band.";
      Json w = {{"type", "warning"}, {"code", kCodeKeyChanged}, {"user", c.name},
                {"user_id", c.id}, {"message", msg}};
      Emit(w);
      LogWarn(msg);
      return Err(kCodeKeyChanged, msg);
    }
    return Outcome::OK();
  }

  // GetUser + pin/check. `user` is a name or an id.
  awaitable<Outcome> FetchUser(std::string user, Contact* c) {
    wire::Envelope req, reply;
    SetRef(req.mutable_get_user()->mutable_user(), user);
    Outcome o = co_await Call(req, &reply);
    if (!o.ok()) {
      if (o.code == "NO_SUCH_USER") o.message = "no user '" + user + "'";
      co_return o;
    }
    if (!reply.has_user_info()) co_return Err("BAD_FRAME", "unexpected reply to GetUser");
    co_return PinUser(reply.user_info(), c);
  }

  // A pinned contact, fetched from the server if not known yet.
  awaitable<Outcome> KnownUser(std::uint64_t id, Contact* c) {
    Status s = store->GetContact(id, c);
    if (s.ok()) co_return Outcome::OK();
    if (s.code() != Code::kNotFound) co_return Outcome::From(s);
    std::string user = std::to_string(id);
    co_return co_await FetchUser(user, c);
  }

  std::string ContactName(std::uint64_t id, const std::string& fallback) {
    if (!fallback.empty()) return fallback;
    Contact c;
    if (store->GetContact(id, &c).ok()) return c.name;
    return std::string();
  }

  // The friend key for `c`, or NOT_FRIENDS / NO_KEY explaining why not.
  awaitable<Outcome> FriendKey(const Contact& c, std::string* key) {
    Status s = store->GetFriendKey(c.id, key);
    if (s.ok()) co_return Outcome::OK();
    if (s.code() != Code::kNotFound) co_return Outcome::From(s);
    wire::Envelope req, reply;
    req.mutable_list_friends();
    Outcome o = co_await Call(req, &reply);
    if (o.ok() && reply.has_friend_list()) {
      for (const auto& f : reply.friend_list().friends())
        if (f.id() == c.id)
          co_return Err(kCodeNoKey, "no friend key for " + Display(c) +
                                        " yet: their acceptance has not been received here "
                                        "(run listen or chat to receive it)");
    }
    co_return Err("NOT_FRIENDS", Display(c) + " is not your friend (yet)");
  }

  // Whether `id` is among my friends (ListFriends).
  awaitable<Outcome> IsFriend(std::uint64_t id, bool* yes) {
    *yes = false;
    wire::Envelope req, reply;
    req.mutable_list_friends();
    Outcome o = co_await Call(req, &reply);
    if (!o.ok()) co_return o;
    if (!reply.has_friend_list()) co_return Err("BAD_FRAME", "unexpected reply to ListFriends");
    for (const auto& f : reply.friend_list().friends())
      if (f.id() == id) *yes = true;
    co_return Outcome::OK();
  }

  // After a GroupCreate whose answer was lost: a group named `name` that I
  // administer and this store does not know (the newest such), or *gid = 0.
  awaitable<Outcome> FindUnknownGroup(std::string name, std::uint64_t* gid, std::uint64_t* epoch) {
    *gid = 0;
    wire::Envelope req, reply;
    req.mutable_list_groups();
    Outcome o = co_await Call(req, &reply);
    if (!o.ok()) co_return o;
    if (!reply.has_group_list()) co_return Err("BAD_FRAME", "unexpected reply to ListGroups");
    for (const auto& gi : reply.group_list().groups()) {
      LocalGroup known;
      if (gi.name() != name || gi.admin_id() != me().user_id || store->GetGroup(gi.id(), &known).ok()) continue;
      if (gi.id() > *gid) {
        *gid = gi.id();
        *epoch = gi.epoch();
      }
    }
    co_return Outcome::OK();
  }

  // ------------------------------------------------------------ groups

  // Resolves GROUP: digits are an id; otherwise a name known locally (or, if
  // none, in the server's list of my groups).
  awaitable<Outcome> ResolveGroup(std::string arg, LocalGroup* g) {
    if (AllDigits(arg)) {
      std::uint64_t id = std::stoull(arg);
      if (!store->GetGroup(id, g).ok()) {
        *g = LocalGroup();
        g->id = id;
      }
      co_return Outcome::OK();
    }
    std::vector<LocalGroup> all;
    Status s = store->FindGroupsByName(arg, &all);
    if (!s.ok()) co_return Outcome::From(s);
    std::vector<LocalGroup> active;
    for (const auto& x : all)
      if (!x.left) active.push_back(x);
    auto ambiguous = [&](const std::vector<LocalGroup>& v) {
      std::string ids;
      for (const auto& x : v) ids += (ids.empty() ? "" : ", ") + std::to_string(x.id);
      return Err(kCodeAmbiguous, "several groups are named '" + arg + "' (ids " + ids + "); use the id");
    };
    if (active.size() == 1) {
      *g = active[0];
      co_return Outcome::OK();
    }
    if (active.size() > 1) co_return ambiguous(active);
    // Not known locally: ask the server for my groups.
    wire::Envelope req, reply;
    req.mutable_list_groups();
    Outcome o = co_await Call(req, &reply);
    if (o.ok() && reply.has_group_list()) {
      std::vector<LocalGroup> found;
      for (const auto& gi : reply.group_list().groups()) {
        LocalGroup lg{gi.id(), gi.name(), gi.admin_id(), gi.epoch(), false};
        store->PutGroup(lg);
        if (gi.name() == arg) found.push_back(lg);
      }
      if (found.size() == 1) {
        *g = found[0];
        co_return Outcome::OK();
      }
      if (found.size() > 1) co_return ambiguous(found);
    }
    if (all.size() == 1) {
      *g = all[0];
      co_return Outcome::OK();
    }
    if (all.size() > 1) co_return ambiguous(all);
    co_return Err("NO_SUCH_GROUP", "no group named '" + arg + "'");
  }

  // GetGroup; updates the local record and pins the members' keys.
  awaitable<Outcome> RefreshGroup(std::uint64_t gid, wire::GroupInfo* info) {
    wire::Envelope req, reply;
    req.mutable_get_group()->set_group_id(gid);
    Outcome o = co_await Call(req, &reply);
    if (!o.ok()) co_return o;
    if (!reply.has_group_info()) co_return Err("BAD_FRAME", "unexpected reply to GetGroup");
    *info = reply.group_info();
    LocalGroup lg{info->id(), info->name(), info->admin_id(), info->epoch(), false};
    Status s = store->PutGroup(lg);
    if (!s.ok()) co_return Outcome::From(s);
    for (const auto& m : info->members()) {
      Contact pinned;
      PinUser(m, &pinned);  // warns on a change; the key send checks again
    }
    co_return Outcome::OK();
  }

  std::string GroupNameOf(std::uint64_t gid) {
    LocalGroup g;
    if (store->GetGroup(gid, &g).ok()) return g.name;
    return std::string();
  }

  // Sends (admin) the key of `epoch` to each of `members` except me. Emits a
  // warning per member that could not be given the key; returns the first
  // failure.
  awaitable<Outcome> SendGroupKeys(std::uint64_t gid, std::uint64_t epoch, const std::string& key,
                                   std::vector<wire::UserInfo> members) {
    std::string plain;
    PutU64(&plain, gid);
    PutU64(&plain, epoch);
    plain += key;
    Outcome first;
    std::deque<Pending> calls;
    std::vector<wire::UserInfo> to;
    auto fail = [&](const wire::UserInfo& who, const Outcome& o) {
      Json w = {{"type", "warning"}, {"code", o.code}, {"user", who.name()}, {"user_id", who.id()},
                {"group_id", gid}, {"group", GroupNameOf(gid)},
                {"message", "could not send the key of epoch " + std::to_string(epoch) + " to " +
                                who.name() + ": " + o.message}};
      Emit(w);
      if (first.ok()) first = o;
    };
    for (const auto& m : members) {
      if (m.id() == me().user_id) continue;
      Contact c;
      Outcome o = PinUser(m, &c);
      if (!o.ok()) {
        fail(m, o);
        continue;
      }
      std::string nonce, wrapped;
      Status s = crypto::BoxSeal(plain, c.x25519_public, me().x25519_secret, &nonce, &wrapped);
      if (!s.ok()) {
        fail(m, Outcome::From(s));
        continue;
      }
      wire::Envelope req;
      auto* ks = req.mutable_group_key_send();
      ks->set_group_id(gid);
      ks->mutable_to()->set_id(c.id);
      ks->set_epoch(epoch);
      ks->set_nonce(nonce);
      ks->set_wrapped_key(wrapped);
      Push(calls, std::move(req));
      to.push_back(m);
    }
    for (std::size_t i = 0; i < to.size(); ++i) {
      Outcome o = co_await Finish(calls, nullptr, nullptr);
      if (!o.ok()) fail(to[i], o);
    }
    co_return first;
  }

  // Admin: makes sure a key exists for the group's current epoch (making one
  // if needed) and hands it to every other member if it is new or `force`.
  // *created tells whether this call made the key.
  awaitable<Outcome> RotateKey(std::uint64_t gid, bool force, std::uint64_t* epoch_out, bool* created) {
    *created = false;
    wire::GroupInfo info;
    Outcome o = co_await RefreshGroup(gid, &info);
    if (!o.ok()) co_return o;
    if (info.admin_id() != me().user_id) co_return Err("NOT_ADMIN", "only the group's admin can rotate its key");
    std::uint64_t epoch = info.epoch();
    *epoch_out = epoch;
    std::string key;
    Status s = store->GetGroupKey(gid, epoch, &key);
    if (s.ok() && !force) co_return Outcome::OK();
    if (!s.ok()) {
      if (s.code() != Code::kNotFound) co_return Outcome::From(s);
      s = store->PutGroupKey(gid, epoch, crypto::NewSymmetricKey(), &key);
      if (!s.ok()) co_return Outcome::From(s);
      *created = true;
    }
    std::vector<wire::UserInfo> members(info.members().begin(), info.members().end());
    co_return co_await SendGroupKeys(gid, epoch, key, std::move(members));
  }

  // ------------------------------------------------------------ sending

  using ChunkMaker = std::function<Outcome(std::uint32_t index, std::uint32_t count,
                                           const std::string& plaintext, wire::Envelope* env)>;

  // Streams `path` as an image: chunk 0 = u64be(size) || title, then 256 KiB
  // pieces, with at most kSendWindow requests in flight.
  awaitable<Outcome> SendFile(std::string path, ChunkMaker make, Json* result) {
    std::error_code ec;
    std::filesystem::path p(path);
    auto st = std::filesystem::status(p, ec);
    if (ec || !std::filesystem::exists(st)) co_return Err(kCodeNoSuchFile, "no such file: " + path);
    if (!std::filesystem::is_regular_file(st)) co_return Err(kCodeNoSuchFile, "not a regular file: " + path);
    std::uint64_t size = std::filesystem::file_size(p, ec);
    if (ec) co_return Err(kCodeNoSuchFile, "cannot read " + path + ": " + ec.message());
    std::ifstream in(p, std::ios::binary);
    if (!in) co_return Err(kCodeNoSuchFile, "cannot open " + path + ": " + std::strerror(errno));
    std::string title = p.filename().string();
    std::uint64_t count64 = ChunkCount(size);
    // The server's rule: at most 1 + ceil(max_image_bytes / 256 KiB) chunks.
    std::uint64_t max = max_image_bytes;
    if (count64 > 0xffffffffu || (max > 0 && count64 > ChunkCount(max)))
      co_return Err("TOO_LARGE", "file of " + std::to_string(size) + " bytes is over the server's limit of " +
                                     std::to_string(max) + " bytes");
    auto count = static_cast<std::uint32_t>(count64);

    // The chunks in flight, kept until answered so that they can be sent
    // again after a lost connection.
    std::deque<Pending> window;
    std::string buf;
    for (std::uint32_t i = 0; i < count; ++i) {
      std::string plain;
      if (i == 0) {
        PutU64(&plain, size);
        plain += title;
      } else {
        plain.resize(DataChunkSize(size, i));
        in.read(plain.data(), static_cast<std::streamsize>(plain.size()));
        if (in.gcount() != static_cast<std::streamsize>(plain.size()))
          co_return Err("IO_ERROR", "read error or file changed while sending: " + path);
      }
      wire::Envelope env;
      Outcome o = make(i, count, plain, &env);
      if (!o.ok()) co_return o;
      Push(window, std::move(env));
      while (window.size() >= kSendWindow || (i + 1 == count && !window.empty())) {
        o = co_await Finish(window, nullptr, nullptr);
        if (!o.ok()) co_return o;
      }
    }
    (*result)["title"] = title;
    (*result)["bytes"] = size;
    co_return Outcome::OK();
  }

  ChunkMaker DirectMaker(const Contact& c, const std::string& key, const std::string& msg_id, wire::Kind kind) {
    std::uint64_t my_id = me().user_id;
    return [=](std::uint32_t index, std::uint32_t count, const std::string& plain, wire::Envelope* env) {
      std::string nonce, ct;
      Status s = crypto::AeadEncrypt(plain, DmAd(my_id, c.id, msg_id, kind, index, count), key, &nonce, &ct);
      if (!s.ok()) return Outcome::From(s);
      auto* d = env->mutable_direct_send();
      d->mutable_to()->set_id(c.id);
      d->set_msg_id(msg_id);
      d->set_kind(kind);
      d->set_chunk_index(index);
      d->set_chunk_count(count);
      d->set_nonce(nonce);
      d->set_ciphertext(ct);
      return Outcome::OK();
    };
  }

  ChunkMaker GroupMaker(std::uint64_t gid, std::uint64_t epoch, const std::string& key,
                        const std::string& msg_id, wire::Kind kind) {
    std::uint64_t my_id = me().user_id;
    std::string sign_key = me().ed25519_secret;
    return [=](std::uint32_t index, std::uint32_t count, const std::string& plain, wire::Envelope* env) {
      std::string ad = GroupAd(gid, epoch, my_id, msg_id, kind, index, count);
      std::string nonce, ct;
      Status s = crypto::AeadEncrypt(plain, ad, key, &nonce, &ct);
      if (!s.ok()) return Outcome::From(s);
      auto* g = env->mutable_group_send();
      g->set_group_id(gid);
      g->set_epoch(epoch);
      g->set_msg_id(msg_id);
      g->set_kind(kind);
      g->set_chunk_index(index);
      g->set_chunk_count(count);
      g->set_nonce(nonce);
      g->set_signature(crypto::Sign(ad + nonce + ct, sign_key));
      g->set_ciphertext(std::move(ct));
      return Outcome::OK();
    };
  }

  // Group text or file with the latest epoch key; on STALE_EPOCH refresh and,
  // as admin, rotate and retry once.
  awaitable<Outcome> SendToGroup(std::string group, bool is_file, std::string payload, Json* result) {
    LocalGroup g;
    Outcome o = co_await ResolveGroup(group, &g);
    if (!o.ok()) co_return o;
    (*result)["group_id"] = g.id;
    (*result)["group"] = g.name;
    for (int attempt = 0;; ++attempt) {
      std::uint64_t epoch = 0;
      std::string key;
      Status s = store->LatestGroupKey(g.id, &epoch, &key);
      if (s.code() == Code::kNotFound) {
        // Let the server say why (no such group, not a member) if it can.
        wire::GroupInfo info;
        Outcome r = co_await RefreshGroup(g.id, &info);
        if (!r.ok()) co_return r;
        co_return Err(kCodeNoKey, "no key for group " + (info.name().empty() ? std::to_string(g.id) : info.name()) +
                                      " yet (the admin sends it; run listen or chat to receive it)");
      }
      if (!s.ok()) co_return Outcome::From(s);
      std::string msg_id = crypto::RandomBytes(crypto::kMsgIdBytes);
      if (is_file) {
        o = co_await SendFile(payload, GroupMaker(g.id, epoch, key, msg_id, wire::IMAGE), result);
      } else {
        wire::Envelope env, reply;
        o = GroupMaker(g.id, epoch, key, msg_id, wire::TEXT)(0, 1, payload, &env);
        if (o.ok()) o = co_await Call(env, &reply);
      }
      if (o.ok()) {
        (*result)["epoch"] = epoch;
        co_return o;
      }
      if (o.code != "STALE_EPOCH") co_return o;
      wire::GroupInfo info;
      Outcome r = co_await RefreshGroup(g.id, &info);
      if (!r.ok()) co_return r;
      if (attempt > 0 || info.admin_id() != me().user_id) {
        o.message = "epoch " + std::to_string(epoch) + " is stale: the group is at epoch " +
                    std::to_string(info.epoch()) + " and its key has not arrived yet";
        co_return o;
      }
      std::uint64_t new_epoch;
      bool created;
      r = co_await RotateKey(g.id, false, &new_epoch, &created);
      if (!r.ok()) co_return o;
    }
  }

  // ------------------------------------------------------------ receiving

  awaitable<void> ProcessLoop() {
    for (;;) {
      while (inbox.empty()) {
        FlushAcks();
        if (stopping || over) co_return;
        std::error_code ec;
        inbox_wake.expires_at(asio::steady_timer::time_point::max());
        co_await inbox_wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      }
      if (stopping) co_return;
      wire::Envelope env = std::move(inbox.front());
      inbox.pop_front();
      if (env.has_deliver()) {
        bool go_on = co_await ProcessDeliver(env.deliver().seq(), env.deliver().event());
        if (!go_on) co_return;
        if (acks.size() >= kAckBatch) FlushAcks();
      } else if (env.has_sync_done()) {
        FlushAcks();
        if (catching_up && link_up) {
          catching_up = false;
          Json e = {{"type", "reconnected"}, {"server_id", server_id}, {"server", server_addr},
                    {"after_ms", MsSince(lost_at)}};
          Emit(e);
        }
        if (!sync_done) {
          sync_done = true;
          synced.Set();
          if (mode == SessionMode::kChat || mode == SessionMode::kListen) {
            Json e = {{"type", "ready"}, {"user_id", me().user_id}, {"user", me().name}, {"server_id", server_id}};
            Emit(e);
          }
        }
      }
    }
  }

  // Returns false if processing must stop (connection lost).
  awaitable<bool> ProcessDeliver(std::uint64_t seq, const std::string& bytes) {
    bool seen = false;
    Status s = store->SeenSeq(seq, &seen);
    if (!s.ok()) {
      LogWarn("seq " + std::to_string(seq) + ": " + s.ToString());
      co_return true;
    }
    if (seen) {
      acks.push_back(seq);
      co_return true;
    }
    wire::Event ev;
    Outcome o;
    if (!ev.ParseFromString(bytes)) {
      Json e = {{"type", "undecryptable"}, {"seq", seq}, {"kind", "unknown"}, {"from", ""},
                {"from_id", 0}, {"reason", "unparsable event"}};
      Emit(e);
    } else if (ev.has_friend_request()) {
      o = co_await OnFriendRequest(seq, ev);
    } else if (ev.has_friend_answer()) {
      o = co_await OnFriendAnswer(seq, ev);
    } else if (ev.has_direct()) {
      o = co_await OnDirect(seq, ev);
    } else if (ev.has_group_notice()) {
      o = co_await OnGroupNotice(seq, ev);
    } else if (ev.has_group_key()) {
      o = co_await OnGroupKey(seq, ev);
    } else if (ev.has_group()) {
      o = co_await OnGroupMessage(seq, ev);
    } else {
      LogInfo("seq " + std::to_string(seq) + ": event of unknown kind ignored");
    }
    if (!o.ok()) {
      // Transport or local storage trouble: leave it unacknowledged so the
      // server delivers it again.
      LogWarn("seq " + std::to_string(seq) + " not processed: " + o.code + ": " + o.message);
      co_return !(over || stopping);
    }
    s = store->MarkSeq(seq);
    if (!s.ok()) {
      LogWarn("seq " + std::to_string(seq) + ": " + s.ToString());
      co_return true;
    }
    acks.push_back(seq);
    ++processed;
    co_return true;
  }

  Json Base(const char* type, std::uint64_t seq, const wire::Event& ev) {
    return Json{{"type", type},
                {"seq", seq},
                {"from", ContactName(ev.from_id(), ev.from_name())},
                {"from_id", ev.from_id()}};
  }

  void Undecryptable(std::uint64_t seq, const char* kind, const wire::Event& ev, const std::string& reason,
                     std::uint64_t group_id = 0) {
    Json e = Base("undecryptable", seq, ev);
    e["kind"] = kind;
    e["reason"] = reason;
    if (group_id != 0) {
      e["group_id"] = group_id;
      e["group"] = GroupNameOf(group_id);
    }
    Emit(e);
  }

  static bool Transport(const Outcome& o) { return o.code == "IO_ERROR"; }

  awaitable<Outcome> OnFriendRequest(std::uint64_t seq, const wire::Event& ev) {
    Contact c;
    Outcome o = co_await FetchUser(std::to_string(ev.from_id()), &c);
    if (Transport(o)) co_return o;
    Status s = store->AddFriendRequest(ev.from_id(), ev.from_name());
    if (!s.ok()) co_return Outcome::From(s);
    Json e = Base("friend_request", seq, ev);
    if (!o.ok()) e["warning"] = o.code;
    Emit(e);
    co_return Outcome::OK();
  }

  awaitable<Outcome> OnFriendAnswer(std::uint64_t seq, const wire::Event& ev) {
    const auto& a = ev.friend_answer();
    if (!a.accept()) {
      Emit(Base("friend_declined", seq, ev));
      co_return Outcome::OK();
    }
    Contact c;
    Outcome o = co_await KnownUser(ev.from_id(), &c);
    if (Transport(o)) co_return o;
    if (!o.ok()) {
      Undecryptable(seq, "friend_key", ev, o.message);
      co_return Outcome::OK();
    }
    std::string key;
    o = OpenFriendAnswer(ev, c, &key);
    if (!o.ok()) {
      Undecryptable(seq, "friend_key", ev, o.message);
      co_return Outcome::OK();
    }
    Status s = store->PutFriendKey(ev.from_id(), key);
    if (s.ok()) s = store->RemoveFriendRequest(ev.from_id());
    if (!s.ok()) co_return Outcome::From(s);
    Emit(Base("friend_accepted", seq, ev));
    co_return Outcome::OK();
  }

  Outcome OpenFriendAnswer(const wire::Event& ev, const Contact& answerer, std::string* key) {
    const auto& a = ev.friend_answer();
    if (!a.accept()) return Err("NO_CIPHERTEXT", "a declined request carries no key");
    if (a.nonce().size() != crypto::kBoxNonceBytes) return Err("CRYPTO_FAILED", "bad nonce");
    Status s = crypto::BoxOpen(a.wrapped_key(), a.nonce(), answerer.x25519_public, me().x25519_secret, key);
    if (!s.ok()) return Err("CRYPTO_FAILED", "the friend key does not open with " + Display(answerer) + "'s pinned key");
    if (key->size() != crypto::kKeyBytes) return Err("CRYPTO_FAILED", "friend key of wrong size");
    return Outcome::OK();
  }

  Outcome OpenDirect(const wire::Event& ev, std::string* plain) {
    const auto& d = ev.direct();
    if (d.msg_id().size() != crypto::kMsgIdBytes || d.nonce().size() != crypto::kAeadNonceBytes)
      return Err("BAD_FRAME", "malformed direct message");
    std::string key;
    Status s = store->GetFriendKey(ev.from_id(), &key);
    if (s.code() == Code::kNotFound) return Err(kCodeNoKey, "no friend key for the sender");
    if (!s.ok()) return Outcome::From(s);
    std::string ad = DmAd(ev.from_id(), me().user_id, d.msg_id(), d.kind(), d.chunk_index(), d.chunk_count());
    s = crypto::AeadDecrypt(d.ciphertext(), ad, d.nonce(), key, plain);
    if (!s.ok()) return Err("CRYPTO_FAILED", "decryption failed (wrong key or tampered message)");
    return Outcome::OK();
  }

  // Verifies (if `sender` is known) and decrypts a group message.
  Outcome OpenGroup(const wire::Event& ev, const Contact* sender, Opened* opened) {
    const auto& g = ev.group();
    if (g.msg_id().size() != crypto::kMsgIdBytes || g.nonce().size() != crypto::kAeadNonceBytes)
      return Err("BAD_FRAME", "malformed group message");
    std::string ad = GroupAd(g.group_id(), g.epoch(), ev.from_id(), g.msg_id(), g.kind(), g.chunk_index(),
                             g.chunk_count());
    if (sender != nullptr) {
      if (!crypto::Verify(ad + g.nonce() + g.ciphertext(), g.signature(), sender->ed25519_public))
        return Err("CRYPTO_FAILED", "bad signature: not signed by " + Display(*sender));
    } else {
      opened->detail = "signature not checked (sender's key unknown)";
    }
    std::string key;
    Status s = store->GetGroupKey(g.group_id(), g.epoch(), &key);
    if (s.code() == Code::kNotFound)
      return Err(kCodeNoKey, "no key for epoch " + std::to_string(g.epoch()) + " of this group");
    if (!s.ok()) return Outcome::From(s);
    s = crypto::AeadDecrypt(g.ciphertext(), ad, g.nonce(), key, &opened->plaintext);
    if (!s.ok()) return Err("CRYPTO_FAILED", "decryption failed (wrong key or tampered message)");
    return Outcome::OK();
  }

  Outcome OpenGroupKey(const wire::Event& ev, const Contact& admin, std::string* key) {
    const auto& k = ev.group_key();
    if (k.nonce().size() != crypto::kBoxNonceBytes) return Err("CRYPTO_FAILED", "bad nonce");
    std::string plain;
    Status s = crypto::BoxOpen(k.wrapped_key(), k.nonce(), admin.x25519_public, me().x25519_secret, &plain);
    if (!s.ok()) return Err("CRYPTO_FAILED", "the group key does not open with the admin's pinned key");
    if (plain.size() != 16 + crypto::kKeyBytes) return Err("CRYPTO_FAILED", "group key of wrong size");
    if (GetU64(plain) != k.group_id() || GetU64(std::string_view(plain).substr(8)) != k.epoch())
      return Err("CRYPTO_FAILED", "group key is for another group or epoch");
    *key = plain.substr(16);
    return Outcome::OK();
  }

  awaitable<Outcome> OnDirect(std::uint64_t seq, const wire::Event& ev) {
    const auto& d = ev.direct();
    std::string plain;
    Outcome o = OpenDirect(ev, &plain);
    if (!o.ok()) {
      if (o.code == "IO_ERROR") co_return o;
      // Data chunks of an image we never started: stay quiet after the first.
      bool noisy = d.kind() != wire::IMAGE || d.chunk_index() == 0;
      PartialImage p;
      if (!noisy && store->GetPartial(0, ev.from_id(), d.msg_id(), &p).ok()) noisy = true;
      if (noisy) Undecryptable(seq, "direct", ev, o.message);
      co_return Outcome::OK();
    }
    bool seen = false;
    Status s = store->SeenMsg(ev.from_id(), d.msg_id(), d.chunk_index(), &seen);
    if (!s.ok()) co_return Outcome::From(s);
    if (seen) co_return Outcome::OK();
    if (d.kind() == wire::TEXT) {
      s = store->MarkMsg(ev.from_id(), d.msg_id(), d.chunk_index());
      if (!s.ok()) co_return Outcome::From(s);
      Json e = Base("message", seq, ev);
      e["text"] = plain;
      Emit(e);
      co_return Outcome::OK();
    }
    if (d.kind() == wire::IMAGE) {
      co_return OnImageChunk(seq, ev, 0, 0, d.msg_id(), d.chunk_index(), d.chunk_count(), plain);
    }
    Undecryptable(seq, "direct", ev, "unknown message kind");
    co_return Outcome::OK();
  }

  awaitable<Outcome> OnGroupMessage(std::uint64_t seq, const wire::Event& ev) {
    const auto& g = ev.group();
    Contact sender;
    Outcome o = co_await KnownUser(ev.from_id(), &sender);
    if (Transport(o)) co_return o;
    if (!o.ok()) {
      Undecryptable(seq, "group", ev, "cannot verify the sender: " + o.message, g.group_id());
      co_return Outcome::OK();
    }
    Opened opened;
    o = OpenGroup(ev, &sender, &opened);
    if (!o.ok()) {
      if (o.code == "IO_ERROR") co_return o;
      bool noisy = g.kind() != wire::IMAGE || g.chunk_index() == 0;
      PartialImage p;
      if (!noisy && store->GetPartial(g.group_id(), ev.from_id(), g.msg_id(), &p).ok()) noisy = true;
      if (noisy) Undecryptable(seq, "group", ev, o.message, g.group_id());
      co_return Outcome::OK();
    }
    bool seen = false;
    Status s = store->SeenMsg(ev.from_id(), g.msg_id(), g.chunk_index(), &seen);
    if (!s.ok()) co_return Outcome::From(s);
    if (seen) co_return Outcome::OK();
    if (g.kind() == wire::TEXT) {
      s = store->MarkMsg(ev.from_id(), g.msg_id(), g.chunk_index());
      if (!s.ok()) co_return Outcome::From(s);
      Json e = GroupBase("group_message", seq, ev, g.group_id(), g.epoch());
      e["text"] = opened.plaintext;
      Emit(e);
      co_return Outcome::OK();
    }
    if (g.kind() == wire::IMAGE)
      co_return OnImageChunk(seq, ev, g.group_id(), g.epoch(), g.msg_id(), g.chunk_index(), g.chunk_count(),
                             opened.plaintext);
    Undecryptable(seq, "group", ev, "unknown message kind", g.group_id());
    co_return Outcome::OK();
  }

  Json GroupBase(const char* type, std::uint64_t seq, const wire::Event& ev, std::uint64_t gid,
                 std::uint64_t epoch) {
    return Json{{"type", type},
                {"seq", seq},
                {"group_id", gid},
                {"group", GroupNameOf(gid)},
                {"from", ContactName(ev.from_id(), ev.from_name())},
                {"from_id", ev.from_id()},
                {"epoch", epoch}};
  }

  std::filesystem::path TempPathFor(std::uint64_t scope, std::uint64_t sender, const std::string& msg_id) {
    return downloads / (".partial-" + std::to_string(scope) + "-" + std::to_string(sender) + "-" +
                        crypto::Hex(msg_id) + ".tmp");
  }

  // One decrypted image chunk (scope 0: direct; else the group id).
  Outcome OnImageChunk(std::uint64_t seq, const wire::Event& ev, std::uint64_t scope, std::uint64_t epoch,
                       const std::string& msg_id, std::uint32_t index, std::uint32_t count,
                       const std::string& plain) {
    const char* kind = scope == 0 ? "direct" : "group";
    std::uint64_t sender = ev.from_id();
    auto bad = [&](const std::string& why) {
      Undecryptable(seq, kind, ev, why, scope);
      return Outcome::OK();
    };
    PartialImage p;
    Status s = store->GetPartial(scope, sender, msg_id, &p);
    bool have = s.ok();
    if (!have && s.code() != Code::kNotFound) return Outcome::From(s);

    if (index == 0) {
      if (have) return Outcome::OK();  // repeat
      if (plain.size() < 8) return bad("malformed image header");
      std::uint64_t size = GetU64(plain);
      if (count == 0 || size > (std::uint64_t{1} << 40) || ChunkCount(size) != count)
        return bad("image header does not match its chunk count");
      p.scope = scope;
      p.sender = sender;
      p.msg_id = msg_id;
      p.title = plain.substr(8);
      p.size = size;
      p.chunk_count = count;
      p.next_chunk = 1;
      std::error_code ec;
      std::filesystem::create_directories(downloads, ec);
      std::filesystem::path tmp = TempPathFor(scope, sender, msg_id);
      p.temp_path = tmp.string();
      int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (fd < 0) return bad("cannot create " + tmp.string() + ": " + std::strerror(errno));
      ::close(fd);
      if (count == 1) return FinishImage(seq, ev, scope, epoch, p);
      s = store->Begin();
      if (s.ok()) s = store->PutPartial(p);
      if (s.ok()) s = store->MarkMsg(sender, msg_id, 0);
      if (s.ok()) s = store->Commit();
      if (!s.ok()) store->Rollback();
      return Outcome::From(s);
    }

    if (!have) {
      LogInfo("seq " + std::to_string(seq) + ": image chunk " + std::to_string(index) + " without a started image; ignored");
      return Outcome::OK();
    }
    if (index < p.next_chunk) return Outcome::OK();  // repeat
    auto abort_image = [&](const std::string& why) {
      store->DeletePartial(scope, sender, msg_id);
      ::unlink(p.temp_path.c_str());
      return bad(why);
    };
    if (count != p.chunk_count || index >= p.chunk_count) return abort_image("image chunk out of range");
    if (index > p.next_chunk) return abort_image("image chunk " + std::to_string(p.next_chunk) + " is missing");
    if (plain.size() != DataChunkSize(p.size, index)) return abort_image("image chunk of wrong size");
    int fd = ::open(p.temp_path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return abort_image("cannot open " + p.temp_path + ": " + std::strerror(errno));
    std::size_t done = 0;
    auto offset = static_cast<off_t>((index - 1) * kChunkBytes);
    while (done < plain.size()) {
      ssize_t n = ::pwrite(fd, plain.data() + done, plain.size() - done, offset + static_cast<off_t>(done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        std::string err = std::strerror(errno);
        ::close(fd);
        return abort_image("cannot write " + p.temp_path + ": " + err);
      }
      done += static_cast<std::size_t>(n);
    }
    ::close(fd);
    if (index + 1 == p.chunk_count) return FinishImage(seq, ev, scope, epoch, p);
    p.next_chunk = index + 1;
    s = store->Begin();
    if (s.ok()) s = store->PutPartial(p);
    if (s.ok()) s = store->MarkMsg(sender, msg_id, index);
    if (s.ok()) s = store->Commit();
    if (!s.ok()) store->Rollback();
    return Outcome::From(s);
  }

  Outcome FinishImage(std::uint64_t seq, const wire::Event& ev, std::uint64_t scope, std::uint64_t epoch,
                      const PartialImage& p) {
    const char* kind = scope == 0 ? "direct" : "group";
    std::error_code ec;
    std::uint64_t actual = std::filesystem::file_size(p.temp_path, ec);
    if (ec || actual != p.size) {
      ::unlink(p.temp_path.c_str());
      store->DeletePartial(scope, p.sender, p.msg_id);
      Undecryptable(seq, kind, ev, "received image has the wrong size", scope);
      return Outcome::OK();
    }
    std::filesystem::path final_path;
    std::string err;
    if (!PublishDownload(p.temp_path, downloads, p.title, &final_path, &err)) {
      store->DeletePartial(scope, p.sender, p.msg_id);
      Undecryptable(seq, kind, ev, "cannot save the image: " + err, scope);
      return Outcome::OK();
    }
    Status s = store->Begin();
    if (s.ok()) s = store->DeletePartial(scope, p.sender, p.msg_id);
    if (s.ok()) s = store->MarkMsg(p.sender, p.msg_id, p.chunk_count - 1);
    if (s.ok()) s = store->Commit();
    if (!s.ok()) store->Rollback();
    Json e = scope == 0 ? Base("image", seq, ev) : GroupBase("group_image", seq, ev, scope, epoch);
    e["title"] = p.title;
    e["path"] = std::filesystem::absolute(final_path, ec).string();
    e["bytes"] = p.size;
    Emit(e);
    return Outcome::OK();
  }

  awaitable<Outcome> OnGroupNotice(std::uint64_t seq, const wire::Event& ev) {
    const auto& n = ev.group_notice();
    LocalGroup g;
    bool known = store->GetGroup(n.group_id(), &g).ok();
    if (!known) {
      g = LocalGroup();
      g.id = n.group_id();
    }
    if (!n.group_name().empty()) g.name = n.group_name();
    if (n.admin_id() != 0) g.admin_id = n.admin_id();
    g.epoch = std::max(g.epoch, n.epoch());
    bool about_me = n.subject_id() == me().user_id;
    const char* type = "group_added";
    if (n.what() == wire::GroupNoticeEvent::ADDED) {
      if (about_me) g.left = false;
    } else if (n.what() == wire::GroupNoticeEvent::KICKED) {
      type = "group_kicked";
      if (about_me) g.left = true;
    } else if (n.what() == wire::GroupNoticeEvent::LEFT) {
      type = "group_left";
      if (about_me) g.left = true;
    } else {
      LogInfo("seq " + std::to_string(seq) + ": unknown group notice ignored");
      co_return Outcome::OK();
    }
    Status s = store->PutGroup(g);
    if (!s.ok()) co_return Outcome::From(s);
    Json e = {{"type", type},
              {"seq", seq},
              {"group_id", g.id},
              {"group", g.name},
              {"user", n.subject_name()},
              {"user_id", n.subject_id()},
              {"epoch", n.epoch()},
              {"me", about_me},
              {"from", ContactName(ev.from_id(), ev.from_name())},
              {"from_id", ev.from_id()}};
    Emit(e);
    // A member left a group I administer: rotate to the new epoch.
    if (n.what() == wire::GroupNoticeEvent::LEFT && !about_me && g.admin_id == me().user_id && !g.left) {
      std::string key;
      if (!store->GetGroupKey(g.id, n.epoch(), &key).ok()) {
        std::uint64_t epoch = 0;
        bool created = false;
        Outcome o = co_await RotateKey(g.id, false, &epoch, &created);
        if (Transport(o)) co_return o;
        if (!o.ok()) LogWarn("group " + std::to_string(g.id) + ": key rotation failed: " + o.code + ": " + o.message);
        if (created) {
          Json k = {{"type", "group_key"}, {"group_id", g.id}, {"group", g.name}, {"epoch", epoch},
                    {"rotated", true}};
          Emit(k);
        }
      }
    }
    co_return Outcome::OK();
  }

  awaitable<Outcome> OnGroupKey(std::uint64_t seq, const wire::Event& ev) {
    const auto& k = ev.group_key();
    LocalGroup g;
    bool known = store->GetGroup(k.group_id(), &g).ok();
    if (!known || g.admin_id != ev.from_id()) {
      // Learn (or re-check) who administers the group.
      wire::GroupInfo info;
      Outcome o = co_await RefreshGroup(k.group_id(), &info);
      if (Transport(o)) co_return o;
      if (o.ok()) {
        g = LocalGroup{info.id(), info.name(), info.admin_id(), info.epoch(), false};
        known = true;
      }
    }
    if (!known) {
      Undecryptable(seq, "group_key", ev, "unknown group", k.group_id());
      co_return Outcome::OK();
    }
    if (g.admin_id != ev.from_id()) {
      Undecryptable(seq, "group_key", ev, "the sender is not the group's admin", k.group_id());
      co_return Outcome::OK();
    }
    Contact admin;
    Outcome o = co_await KnownUser(ev.from_id(), &admin);
    if (Transport(o)) co_return o;
    std::string key;
    if (o.ok()) o = OpenGroupKey(ev, admin, &key);
    if (!o.ok()) {
      Undecryptable(seq, "group_key", ev, o.message, k.group_id());
      co_return Outcome::OK();
    }
    std::string stored;
    Status s = store->PutGroupKey(k.group_id(), k.epoch(), key, &stored);
    if (s.ok()) {
      g.epoch = std::max(g.epoch, k.epoch());
      s = store->PutGroup(g);
    }
    if (!s.ok()) co_return Outcome::From(s);
    if (stored != key) LogWarn("group " + std::to_string(g.id) + " epoch " + std::to_string(k.epoch()) + ": a different key was already stored; keeping it");
    Json e = {{"type", "group_key"}, {"seq", seq}, {"group_id", g.id}, {"group", g.name}, {"epoch", k.epoch()},
              {"from", ContactName(ev.from_id(), ev.from_name())}, {"from_id", ev.from_id()}};
    Emit(e);
    co_return Outcome::OK();
  }
};

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
  co_return Outcome::From(s);
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
  m.stopping = true;
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

// ---------------------------------------------------------------- commands

awaitable<Outcome> ClientCore::AddFriend(std::string user, Json* result) {
  Impl& m = *impl_;
  Contact c;
  Outcome o = co_await m.FetchUser(user, &c);
  if (!o.ok()) co_return o;
  (*result)["user"] = c.name;
  (*result)["user_id"] = c.id;
  if (c.id == m.me().user_id) co_return Err("BAD_REQUEST", "you cannot befriend yourself");
  wire::Envelope req, reply;
  req.mutable_friend_request()->mutable_to()->set_id(c.id);
  co_return co_await m.Call(req, &reply);
}

awaitable<Outcome> ClientCore::Accept(std::string user, Json* result) {
  Impl& m = *impl_;
  Contact c;
  Outcome o = co_await m.FetchUser(user, &c);
  if (!o.ok()) co_return o;
  (*result)["user"] = c.name;
  (*result)["user_id"] = c.id;
  std::string key = crypto::NewSymmetricKey();
  std::string nonce, wrapped;
  Status s = crypto::BoxSeal(key, c.x25519_public, m.me().x25519_secret, &nonce, &wrapped);
  if (!s.ok()) co_return Outcome::From(s);
  // Store the key before the server can tell the requester, so a quick first
  // message from them finds it; undo if the server refuses.
  std::string old;
  bool had = m.store->GetFriendKey(c.id, &old).ok();
  if (!had) {
    s = m.store->PutFriendKey(c.id, key);
    if (!s.ok()) co_return Outcome::From(s);
  }
  wire::Envelope req, reply;
  auto* a = req.mutable_friend_answer();
  a->mutable_to()->set_id(c.id);
  a->set_accept(true);
  a->set_nonce(nonce);
  a->set_wrapped_key(wrapped);
  bool resent = false;
  o = co_await m.Call(req, &reply, &resent);
  if (!o.ok() && resent && o.code == "NO_SUCH_REQUEST") {
    // Sent again after a lost connection: the first one may have got through.
    bool friends = false;
    Outcome f = co_await m.IsFriend(c.id, &friends);
    if (f.ok() && friends) o = Outcome::OK();
  }
  if (!o.ok()) {
    if (!had) m.store->DeleteFriendKey(c.id);
    if (o.code == "NO_SUCH_REQUEST") o.message = Display(c) + " has not asked to be your friend";
    co_return o;
  }
  if (had) s = m.store->PutFriendKey(c.id, key);
  if (s.ok()) s = m.store->RemoveFriendRequest(c.id);
  co_return Outcome::From(s);
}

awaitable<Outcome> ClientCore::Decline(std::string user, Json* result) {
  Impl& m = *impl_;
  wire::Envelope req, reply;
  req.mutable_get_user();
  SetRef(req.mutable_get_user()->mutable_user(), user);
  Outcome o = co_await m.Call(req, &reply);
  if (!o.ok()) co_return o;
  if (!reply.has_user_info()) co_return Err("BAD_FRAME", "unexpected reply to GetUser");
  std::uint64_t id = reply.user_info().id();
  (*result)["user"] = reply.user_info().name();
  (*result)["user_id"] = id;
  wire::Envelope ans;
  ans.mutable_friend_answer()->mutable_to()->set_id(id);
  ans.mutable_friend_answer()->set_accept(false);
  bool resent = false;
  o = co_await m.Call(ans, &reply, &resent);
  if (!o.ok() && resent && o.code == "NO_SUCH_REQUEST") o = Outcome::OK();  // the first one got through
  if (!o.ok()) co_return o;
  co_return Outcome::From(m.store->RemoveFriendRequest(id));
}

awaitable<Outcome> ClientCore::Friends(Json* result) {
  Impl& m = *impl_;
  wire::Envelope req, reply;
  req.mutable_list_friends();
  Outcome o = co_await m.Call(req, &reply);
  if (!o.ok()) co_return o;
  if (!reply.has_friend_list()) co_return Err("BAD_FRAME", "unexpected reply to ListFriends");
  Json friends = Json::array(), requests = Json::array();
  for (const auto& f : reply.friend_list().friends()) {
    Contact c;
    m.PinUser(f, &c);
    friends.push_back(Json{{"id", f.id()}, {"name", f.name()}});
  }
  for (const auto& f : reply.friend_list().incoming_requests()) {
    Contact c;
    m.PinUser(f, &c);
    requests.push_back(Json{{"id", f.id()}, {"name", f.name()}});
  }
  (*result)["friends"] = std::move(friends);
  (*result)["requests"] = std::move(requests);
  co_return Outcome::OK();
}

awaitable<Outcome> ClientCore::SingleMessage(std::string user, std::string text, Json* result) {
  Impl& m = *impl_;
  if (text.size() > kMaxTextBytes) co_return Err("TOO_LARGE", "message too long; send it as a file");
  Contact c;
  Outcome o = co_await m.FetchUser(user, &c);
  if (!o.ok()) co_return o;
  (*result)["user"] = c.name;
  (*result)["user_id"] = c.id;
  std::string key;
  o = co_await m.FriendKey(c, &key);
  if (!o.ok()) co_return o;
  std::string msg_id = crypto::RandomBytes(crypto::kMsgIdBytes);
  wire::Envelope req, reply;
  o = m.DirectMaker(c, key, msg_id, wire::TEXT)(0, 1, text, &req);
  if (!o.ok()) co_return o;
  co_return co_await m.Call(req, &reply);
}

awaitable<Outcome> ClientCore::SingleImage(std::string user, std::string path, Json* result) {
  Impl& m = *impl_;
  Outcome f = CheckFile(path);
  if (!f.ok()) co_return f;
  Contact c;
  Outcome o = co_await m.FetchUser(user, &c);
  if (!o.ok()) co_return o;
  (*result)["user"] = c.name;
  (*result)["user_id"] = c.id;
  std::string key;
  o = co_await m.FriendKey(c, &key);
  if (!o.ok()) co_return o;
  std::string msg_id = crypto::RandomBytes(crypto::kMsgIdBytes);
  co_return co_await m.SendFile(path, m.DirectMaker(c, key, msg_id, wire::IMAGE), result);
}

awaitable<Outcome> ClientCore::CreateGroup(std::string name, Json* result) {
  Impl& m = *impl_;
  wire::Envelope req, reply;
  req.mutable_group_create()->set_name(name);
  std::uint64_t gid = 0, epoch = 0;
  Outcome o;
  for (;;) {
    // Not idempotent: after a lost connection, look for the group before
    // asking again.
    o = co_await m.CallOnce(req, &reply);
    if (o.code != kReplyLost) break;
    o = co_await m.FindUnknownGroup(name, &gid, &epoch);
    if (!o.ok() || gid != 0) break;
  }
  if (!o.ok()) co_return o;
  if (gid == 0) {
    if (!reply.has_ok() || reply.ok().id() == 0) co_return Err("BAD_FRAME", "unexpected reply to GroupCreate");
    gid = reply.ok().id();
    epoch = reply.ok().epoch();
  }
  if (epoch == 0) epoch = 1;
  Status s = m.store->PutGroup(LocalGroup{gid, name, m.me().user_id, epoch, false});
  if (s.ok()) s = m.store->PutGroupKey(gid, epoch, crypto::NewSymmetricKey(), nullptr);
  if (!s.ok()) co_return Outcome::From(s);
  (*result)["group_id"] = gid;
  (*result)["group"] = name;
  (*result)["epoch"] = epoch;
  co_return Outcome::OK();
}

awaitable<Outcome> ClientCore::AddMember(std::string group, std::string user, Json* result) {
  Impl& m = *impl_;
  LocalGroup g;
  Outcome o = co_await m.ResolveGroup(group, &g);
  if (!o.ok()) co_return o;
  (*result)["group_id"] = g.id;
  (*result)["group"] = g.name;
  wire::Envelope ureq, ureply;
  SetRef(ureq.mutable_get_user()->mutable_user(), user);
  o = co_await m.Call(ureq, &ureply);
  if (!o.ok()) co_return o;
  if (!ureply.has_user_info()) co_return Err("BAD_FRAME", "unexpected reply to GetUser");
  wire::UserInfo member = ureply.user_info();
  Contact c;
  o = m.PinUser(member, &c);
  if (!o.ok()) co_return o;
  (*result)["user"] = c.name;
  (*result)["user_id"] = c.id;

  wire::Envelope req, reply;
  req.mutable_group_add()->set_group_id(g.id);
  req.mutable_group_add()->mutable_user()->set_id(c.id);
  bool resent = false;
  o = co_await m.Call(req, &reply, &resent);
  if (!o.ok() && resent && o.code == "ALREADY_MEMBER") o = Outcome::OK();  // the first one got through
  if (!o.ok()) co_return o;
  std::uint64_t epoch = reply.has_ok() ? reply.ok().epoch() : 0;
  std::string key;
  if (epoch != 0 && m.store->GetGroupKey(g.id, epoch, &key).ok()) {
    std::vector<wire::UserInfo> just_them(1, member);
    o = co_await m.SendGroupKeys(g.id, epoch, key, std::move(just_them));
  } else {
    bool created;
    o = co_await m.RotateKey(g.id, true, &epoch, &created);
  }
  (*result)["epoch"] = epoch;
  if (!o.ok()) LogWarn("add_member: key hand-over failed: " + o.code + ": " + o.message);
  co_return Outcome::OK();  // the member was added; key problems were reported as warnings
}

awaitable<Outcome> ClientCore::GroupMessage(std::string group, std::string text, Json* result) {
  if (text.size() > kMaxTextBytes) co_return Err("TOO_LARGE", "message too long; send it as a file");
  co_return co_await impl_->SendToGroup(std::move(group), false, std::move(text), result);
}

awaitable<Outcome> ClientCore::GroupImage(std::string group, std::string path, Json* result) {
  Outcome f = CheckFile(path);
  if (!f.ok()) co_return f;
  co_return co_await impl_->SendToGroup(std::move(group), true, std::move(path), result);
}

awaitable<Outcome> ClientCore::Kick(std::string group, std::string user, Json* result) {
  Impl& m = *impl_;
  LocalGroup g;
  Outcome o = co_await m.ResolveGroup(group, &g);
  if (!o.ok()) co_return o;
  (*result)["group_id"] = g.id;
  (*result)["group"] = g.name;
  wire::Envelope ureq, ureply;
  SetRef(ureq.mutable_get_user()->mutable_user(), user);
  o = co_await m.Call(ureq, &ureply);
  if (!o.ok()) co_return o;
  if (!ureply.has_user_info()) co_return Err("BAD_FRAME", "unexpected reply to GetUser");
  std::uint64_t uid = ureply.user_info().id();
  (*result)["user"] = ureply.user_info().name();
  (*result)["user_id"] = uid;

  wire::Envelope req, reply;
  req.mutable_group_kick()->set_group_id(g.id);
  req.mutable_group_kick()->mutable_user()->set_id(uid);
  bool resent = false;
  o = co_await m.Call(req, &reply, &resent);
  if (!o.ok() && resent && o.code == "NOT_MEMBER") o = Outcome::OK();  // the first one got through
  if (!o.ok()) co_return o;
  std::uint64_t epoch = reply.has_ok() ? reply.ok().epoch() : 0;
  bool created;
  std::uint64_t rotated_epoch = epoch;
  o = co_await m.RotateKey(g.id, true, &rotated_epoch, &created);
  if (!o.ok()) LogWarn("kick: key rotation incomplete: " + o.code + ": " + o.message);
  (*result)["epoch"] = epoch != 0 ? epoch : rotated_epoch;
  co_return Outcome::OK();
}

awaitable<Outcome> ClientCore::Groups(Json* result) {
  Impl& m = *impl_;
  wire::Envelope req, reply;
  req.mutable_list_groups();
  Outcome o = co_await m.Call(req, &reply);
  if (!o.ok()) co_return o;
  if (!reply.has_group_list()) co_return Err("BAD_FRAME", "unexpected reply to ListGroups");
  Json list = Json::array();
  std::vector<LocalGroup> local;
  m.store->ListGroups(&local);
  for (const auto& gi : reply.group_list().groups()) {
    m.store->PutGroup(LocalGroup{gi.id(), gi.name(), gi.admin_id(), gi.epoch(), false});
    list.push_back(Json{{"id", gi.id()}, {"name", gi.name()}, {"admin_id", gi.admin_id()}, {"epoch", gi.epoch()}});
  }
  for (const auto& lg : local) {
    bool listed = std::any_of(reply.group_list().groups().begin(), reply.group_list().groups().end(),
                              [&](const wire::GroupInfo& gi) { return gi.id() == lg.id; });
    if (!listed && !lg.left) m.store->SetGroupLeft(lg.id, true);
  }
  (*result)["groups"] = std::move(list);
  co_return Outcome::OK();
}

awaitable<Outcome> ClientCore::Members(std::string group, Json* result) {
  Impl& m = *impl_;
  LocalGroup g;
  Outcome o = co_await m.ResolveGroup(group, &g);
  if (!o.ok()) co_return o;
  wire::GroupInfo info;
  o = co_await m.RefreshGroup(g.id, &info);
  if (!o.ok()) co_return o;
  Json list = Json::array();
  for (const auto& u : info.members()) list.push_back(Json{{"id", u.id()}, {"name", u.name()}});
  (*result)["group_id"] = info.id();
  (*result)["group"] = info.name();
  (*result)["admin_id"] = info.admin_id();
  (*result)["epoch"] = info.epoch();
  (*result)["members"] = std::move(list);
  co_return Outcome::OK();
}

awaitable<Outcome> ClientCore::Leave(std::string group, Json* result) {
  Impl& m = *impl_;
  LocalGroup g;
  Outcome o = co_await m.ResolveGroup(group, &g);
  if (!o.ok()) co_return o;
  (*result)["group_id"] = g.id;
  (*result)["group"] = g.name;
  wire::Envelope req, reply;
  req.mutable_group_leave()->set_group_id(g.id);
  bool resent = false;
  o = co_await m.Call(req, &reply, &resent);
  if (!o.ok() && resent && (o.code == "NOT_MEMBER" || o.code == "NO_SUCH_GROUP"))
    o = Outcome::OK();  // the first one got through
  if (!o.ok()) co_return o;
  m.store->SetGroupLeft(g.id, true);
  co_return Outcome::OK();
}

awaitable<Outcome> ClientCore::Fingerprint(std::string user, Json* result) {
  Impl& m = *impl_;
  Contact c;
  Outcome o = co_await m.FetchUser(user, &c);
  if (!o.ok()) co_return o;
  const Identity& me = m.me();
  (*result)["user"] = c.name;
  (*result)["user_id"] = c.id;
  (*result)["safety_number"] = crypto::SafetyNumber(me.user_id, me.x25519_public, me.ed25519_public, c.id,
                                                    c.x25519_public, c.ed25519_public);
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

// ---------------------------------------------------------------- decrypt-frames

Outcome ClientCore::DecryptFrames(const std::filesystem::path& file) {
  Impl& m = *impl_;
  std::ifstream in(file, std::ios::binary);
  if (!in) return Err(kCodeNoSuchFile, "cannot open " + file.string());
  FrameDecoder decoder(64u << 20);
  std::vector<char> buf(1 << 16);
  std::uint64_t frames = 0, opened_count = 0;
  auto one = [&](std::string_view payload) {
    ++frames;
    Json e = {{"type", "decrypt"}, {"seq", 0}, {"opened", false}};
    wire::Envelope env;
    wire::Event ev;
    Outcome o;
    Opened opened;
    if (!env.ParseFromArray(payload.data(), static_cast<int>(payload.size())) || !env.has_deliver()) {
      o = Err("BAD_FRAME", "not a Deliver frame");
    } else if (e["seq"] = env.deliver().seq(); !ev.ParseFromString(env.deliver().event())) {
      o = Err("BAD_FRAME", "unparsable event");
    } else {
      e["from_id"] = ev.from_id();
      Contact sender;
      bool have_sender = m.store->GetContact(ev.from_id(), &sender).ok();
      if (ev.has_direct()) {
        e["kind"] = "direct";
        o = m.OpenDirect(ev, &opened.plaintext);
      } else if (ev.has_group()) {
        e["kind"] = "group";
        e["group_id"] = ev.group().group_id();
        e["epoch"] = ev.group().epoch();
        o = m.OpenGroup(ev, have_sender ? &sender : nullptr, &opened);
      } else if (ev.has_friend_answer()) {
        e["kind"] = "friend_key";
        if (!ev.friend_answer().accept())
          o = Err("NO_CIPHERTEXT", "no encrypted content (declined friend request)");
        else if (!have_sender)
          o = Err(kCodeNoKey, "the answerer's public key is not pinned here");
        else
          o = m.OpenFriendAnswer(ev, sender, &opened.plaintext);
      } else if (ev.has_group_key()) {
        e["kind"] = "group_key";
        e["group_id"] = ev.group_key().group_id();
        e["epoch"] = ev.group_key().epoch();
        if (!have_sender)
          o = Err(kCodeNoKey, "the sender's public key is not pinned here");
        else
          o = m.OpenGroupKey(ev, sender, &opened.plaintext);
      } else {
        e["kind"] = ev.has_friend_request() ? "friend_request" : ev.has_group_notice() ? "group_notice" : "unknown";
        o = Err("NO_CIPHERTEXT", "no encrypted content");
      }
    }
    if (o.ok()) {
      e["opened"] = true;
      ++opened_count;
      if (!opened.detail.empty()) e["reason"] = opened.detail;
    } else {
      e["reason"] = o.message;
    }
    m.Emit(e);
  };
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    std::streamsize n = in.gcount();
    if (n <= 0) break;
    decoder.Append(buf.data(), static_cast<std::size_t>(n));
    for (;;) {
      std::string_view payload;
      bool have = false;
      Status s = decoder.Next(&payload, &have);
      if (!s.ok()) return Outcome::From(s);
      if (!have) break;
      one(payload);
    }
  }
  if (decoder.buffered() > 0) LogWarn(file.string() + ": " + std::to_string(decoder.buffered()) + " trailing bytes (truncated frame)");
  Json summary = {{"type", "decrypt_summary"}, {"frames", frames}, {"opened", opened_count}};
  m.Emit(summary);
  return Outcome::OK();
}

}  // namespace fastchat::client
