#include "session.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include "fastchat.pb.h"
#include "fastchat/crypto.h"
#include "fastchat/deliver_frame.h"
#include "fastchat/frame.h"
#include "mesh.h"
#include "server_impl.h"
#include "validate.h"

namespace fastchat::server {
namespace {

using asio::use_awaitable;

constexpr std::size_t kMaxAckSeqs = 4096;

std::uint64_t NowMs() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

std::string Describe(const wire::UserRef& ref) {
  if (ref.ref_case() == wire::UserRef::kId) return "#" + std::to_string(ref.id());
  return ref.name();
}

// Looks a user up by ID or name inside a store job.
Status Resolve(Store& s, const wire::UserRef& ref, UserRecord* out) {
  Status st;
  switch (ref.ref_case()) {
    case wire::UserRef::kId: st = s.GetUserById(ref.id(), out); break;
    case wire::UserRef::kName: st = s.GetUserByName(ref.name(), out); break;
    default: return Status(Code::kBadRequest, "no user named");
  }
  if (st.code() == Code::kNoSuchUser) return Status(Code::kNoSuchUser, "no such user: " + Describe(ref));
  return st;
}

Status LoadGroup(Store& s, std::uint64_t id, GroupRecord* g) {
  Status st = s.GetGroup(id, g);
  if (st.code() == Code::kNoSuchGroup) return Status(Code::kNoSuchGroup, "no such group: " + std::to_string(id));
  return st;
}

Status RequireMember(Store& s, std::uint64_t group, std::uint64_t user, const char* who) {
  bool yes = false;
  Status st = s.IsMember(group, user, &yes);
  if (!st.ok()) return st;
  if (!yes) return Status(Code::kNotMember, std::string(who) + " not a member of group " + std::to_string(group));
  return Status::OK();
}

void FillUserInfo(const UserRecord& u, wire::UserInfo* info) {
  info->set_id(u.id);
  info->set_name(u.name);
  info->set_x25519_public(u.x25519_public);
  info->set_ed25519_public(u.ed25519_public);
}

Status FillGroupInfo(Store& s, const GroupRecord& g, wire::GroupInfo* info) {
  info->set_id(g.id);
  info->set_name(g.name);
  info->set_admin_id(g.admin_id);
  info->set_epoch(g.epoch);
  std::vector<std::uint64_t> members;
  Status st = s.ListMembers(g.id, &members);
  if (!st.ok()) return st;
  for (std::uint64_t m : members) {
    UserRecord u;
    st = s.GetUserById(m, &u);
    if (!st.ok()) return st;
    FillUserInfo(u, info->add_members());
  }
  return Status::OK();
}

std::string Hex(const std::string& bytes) { return crypto::Hex(bytes); }

// What a store job produced: deliveries to route after replying.
struct JobResult {
  Status st;
  std::vector<Delivery> routed;
  std::uint64_t id = 0;
  std::uint64_t epoch = 0;
  // Set when the routed event can only be built inside the job.
  std::shared_ptr<const std::string> payload;
};

// Stores one payload for each recipient (one transaction) and records the
// deliveries to route.
Status EnqueueFor(Store& s, const std::vector<std::uint64_t>& recipients, const std::string& dedupe,
                  const std::string& payload, JobResult* r) {
  std::vector<PendingItem> items;
  items.reserve(recipients.size());
  for (std::uint64_t u : recipients) items.push_back(PendingItem{u, dedupe, payload});
  std::vector<std::uint64_t> seqs;
  std::vector<bool> fresh;
  Status st = s.Enqueue(items, &seqs, &fresh);
  if (!st.ok()) return st;
  // A resend (same idempotency key) was routed when first stored: only new
  // rows are pushed.
  for (std::size_t i = 0; i < recipients.size(); ++i) {
    if (fresh[i]) r->routed.push_back(Delivery{recipients[i], seqs[i]});
  }
  return Status::OK();
}

Status CheckCipherFields(wire::Kind kind, std::uint32_t index, std::uint32_t count, const std::string& msg_id,
                         const std::string& nonce, const std::string& ciphertext, std::uint64_t max_image_bytes) {
  if (msg_id.size() != crypto::kMsgIdBytes) return Status(Code::kBadRequest, "msg_id must be 16 bytes");
  if (nonce.size() != crypto::kAeadNonceBytes) return Status(Code::kBadRequest, "nonce must be 24 bytes");
  if (ciphertext.size() < crypto::kAeadTagBytes) return Status(Code::kBadRequest, "ciphertext too short");
  if (ciphertext.size() > kMaxChunkCiphertext) {
    return Status(Code::kTooLarge, "ciphertext over " + std::to_string(kMaxChunkCiphertext) + " bytes");
  }
  if (kind == wire::TEXT) {
    if (index != 0 || count > 1) return Status(Code::kBadRequest, "text is a single chunk");
  } else if (kind == wire::IMAGE) {
    if (count == 0 || index >= count) return Status(Code::kBadRequest, "bad chunk index/count");
    const std::uint64_t max_chunks = 1 + (max_image_bytes + kImageChunkBytes - 1) / kImageChunkBytes;
    if (count > max_chunks) {
      return Status(Code::kTooLarge, "image over the server's limit of " + std::to_string(max_image_bytes) + " bytes");
    }
  } else {
    return Status(Code::kBadRequest, "unknown message kind");
  }
  return Status::OK();
}

}  // namespace

Session::Session(Server::Impl& server, asio::ip::tcp::socket socket)
    : server_(server), socket_(std::move(socket)), out_(server.io.get_executor()) {}

Session::~Session() = default;

void Session::Start() {
  auto self = shared_from_this();
  asio::co_spawn(server_.io, [self]() { return self->ReadLoop(); }, asio::detached);
  asio::co_spawn(server_.io, [self]() { return self->WriteLoop(); }, asio::detached);
}

void Session::Close() {
  if (closed_) return;
  closed_ = true;
  live_ = false;
  asio::error_code ec;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  socket_.close(ec);
  out_.Stop();
  LeavePresence();
  auto self = shared_from_this();  // keep alive past the erase below
  server_.sessions.erase(self);
}

void Session::CloseWith(const Status& why) {
  if (closed_) return;
  LeavePresence();
  SendError(0, why);
  out_.StopAfterFlush();
}

void Session::LeavePresence() {
  if (!receiving_) return;
  receiving_ = false;
  live_ = false;
  if (server_.presence.Remove(user_id_, this) && server_.mesh) server_.mesh->UserOffline(user_id_);
}

void Session::SendEnvelope(const wire::Envelope& env) {
  std::string frame;
  frame.reserve(kFrameHeaderSize + env.ByteSizeLong());
  AppendFrame(env.SerializeAsString(), &frame);
  out_.Push(std::move(frame));
}

void Session::SendError(std::uint64_t rid, const Status& st) {
  wire::Envelope env;
  env.set_rid(rid);
  env.mutable_error()->set_code(static_cast<wire::ErrorCode>(static_cast<int>(st.code())));
  env.mutable_error()->set_message(st.message());
  SendEnvelope(env);
}

void Session::SendOk(std::uint64_t rid, std::uint64_t id, std::uint64_t epoch) {
  wire::Envelope env;
  env.set_rid(rid);
  env.mutable_ok()->set_id(id);
  env.mutable_ok()->set_epoch(epoch);
  SendEnvelope(env);
}

asio::awaitable<void> Session::WriteLoop() {
  auto self = shared_from_this();
  try {
    co_await out_.Run(socket_);
  } catch (const std::exception& e) {
    spdlog::debug("session write ended: {}", e.what());
  }
  Close();
}

asio::awaitable<void> Session::ReadLoop() {
  auto self = shared_from_this();
  FrameDecoder decoder(server_.config.max_frame);
  socket_.non_blocking(true);
  try {
    while (!closed_ && !out_.stopping()) {
      // Back-pressure: a peer that does not read its replies stops being read.
      co_await out_.WaitBelow(server_.config.max_queue_bytes);
      if (closed_ || out_.stopping()) break;
      // Wait for readability holding no buffer, then read into the server's
      // one shared buffer: an idle connection costs no read buffer at all.
      co_await socket_.async_wait(asio::ip::tcp::socket::wait_read, use_awaitable);
      asio::error_code ec;
      std::vector<char>& shared = server_.read_buffer;
      std::size_t n = socket_.read_some(asio::buffer(shared), ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) continue;
      if (ec) throw asio::system_error(ec);
      decoder.Append(shared.data(), n);
      for (;;) {
        std::string_view payload;
        bool have = false;
        Status st = decoder.Next(&payload, &have);
        if (!st.ok()) {
          spdlog::warn("closing connection: {}", st.ToString());
          CloseWith(st);
          co_return;
        }
        if (!have) break;
        wire::Envelope env;
        if (!env.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
          SendError(0, Status(Code::kBadFrame, "frame is not a valid Envelope"));
          continue;
        }
        ++server_.frames_handled;
        co_await Handle(env);
        if (closed_ || out_.stopping()) co_return;
      }
      decoder.ReleaseIfIdle();
    }
  } catch (const std::exception& e) {
    spdlog::debug("session read ended: {}", e.what());
  }
  if (!closed_ && out_.stopping()) co_return;  // the writer closes once flushed
  Close();
}

void Session::StartCatchUp(bool announce) {
  if (announce) announce_pending_ = true;
  if (catching_up_) return;
  catching_up_ = true;
  auto self = shared_from_this();
  asio::co_spawn(server_.io, [self]() { return self->CatchUp(); }, asio::detached);
}

asio::awaitable<void> Session::CatchUp() {
  auto self = shared_from_this();
  struct Fetched {
    Status st;
    std::vector<PendingRow> rows;
  };
  while (!closed_ && receiving_) {
    co_await out_.WaitBelow(server_.config.max_queue_bytes / 2);
    if (closed_ || !receiving_) break;
    const std::uint64_t user = user_id_, after = last_sent_seq_;
    missed_ = false;
    const std::size_t limit = server_.config.sync_page_rows;
    auto job = [user, after, limit](Store& s) {
      Fetched r;
      r.st = s.FetchPending(user, after, limit, &r.rows);
      return r;
    };
    Fetched f = co_await server_.store.Run(std::move(job));
    if (closed_ || !receiving_) break;
    if (!f.st.ok()) {
      spdlog::error("fetching pending for user {}: {}", user_id_, f.st.ToString());
      CloseWith(Status(Code::kInternal, "could not read pending deliveries"));
      break;
    }
    if (f.rows.empty()) {
      // A delivery pushed to us while this fetch ran may have committed
      // after the fetch's snapshot (another server's write): read again.
      if (missed_) continue;
      // Nothing left in the store past what was sent: from here on, live
      // deliveries arrive after everything fetched.
      live_ = true;
      break;
    }
    for (PendingRow& row : f.rows) {
      if (row.seq <= last_sent_seq_) continue;
      auto event = std::make_shared<const std::string>(std::move(row.payload));
      out_.Push(DeliverFramePrefix(row.seq, event->size()), event);
      ++server_.deliveries;
      last_sent_seq_ = row.seq;
    }
  }
  catching_up_ = false;
  if (announce_pending_ && !closed_ && receiving_) {
    announce_pending_ = false;
    wire::Envelope env;
    env.mutable_sync_done();
    SendEnvelope(env);
  }
}

void Session::CatchUpFromStore() {
  if (closed_ || !receiving_) return;
  live_ = false;
  StartCatchUp(false);
}

void Session::Deliver(std::uint64_t seq, const std::shared_ptr<const std::string>& event) {
  if (closed_ || !receiving_) return;
  if (!live_) {
    missed_ = true;  // CatchUp reads the store again before going live
    return;
  }
  // No "seq <= last sent" filter here: in a cluster, forwards from different
  // servers may arrive out of seq order, and dropping one would hold it back
  // until the next login. A rare repeat is harmless (clients de-duplicate).
  // Catch-up paging stays correct because the store commits one recipient's
  // rows in seq order.
  if (out_.bytes() + event->size() > server_.config.max_queue_bytes) {
    // Lagging: stop live pushes; catch up from the store once drained.
    live_ = false;
    StartCatchUp(false);
    return;
  }
  out_.Push(DeliverFramePrefix(seq, event->size()), event);
  ++server_.deliveries;
  last_sent_seq_ = std::max(last_sent_seq_, seq);
}

// ------------------------------------------------------------------ dispatch

asio::awaitable<void> Session::Handle(wire::Envelope& env) {
  const std::uint64_t rid = env.rid();
  const auto body = env.body_case();
  if (body == wire::Envelope::BODY_NOT_SET) {
    SendError(rid, Status(Code::kUnknownType, "envelope has no body this server understands"));
    co_return;
  }
  if (!handshaken_) {
    if (body != wire::Envelope::kHello) {
      SendError(rid, Status(Code::kHandshakeRequired, "send Hello first"));
      co_return;
    }
    if (env.hello().version() != kProtocolVersion) {
      SendError(rid, Status(Code::kUnsupportedVersion, "server speaks protocol version " +
                                                           std::to_string(kProtocolVersion)));
      co_return;
    }
    handshaken_ = true;
    wire::Envelope reply;
    reply.set_rid(rid);
    auto* ok = reply.mutable_hello_ok();
    ok->set_version(kProtocolVersion);
    ok->set_max_frame(server_.config.max_frame);
    ok->set_max_image_bytes(server_.config.max_image_bytes);
    ok->set_server_id(server_.config.server_id);
    SendEnvelope(reply);
    co_return;
  }
  Status st;
  switch (body) {
    case wire::Envelope::kHello:
      st = Status(Code::kBadRequest, "already said Hello");
      break;
    case wire::Envelope::kRegister:
      st = co_await HandleRegister(env);
      break;
    case wire::Envelope::kLogin:
      st = co_await HandleLogin(env);
      break;
    default:
      if (user_id_ == 0) {
        st = Status(Code::kNotLoggedIn, "log in first");
      } else {
        st = co_await HandleLoggedIn(env);
      }
  }
  if (!st.ok()) SendError(rid, st);
}

asio::awaitable<Status> Session::HandleRegister(const wire::Envelope& env) {
  const wire::Register& m = env.register_();
  if (Status st = ValidateUserName(m.name()); !st.ok()) co_return st;
  if (Status st = ValidatePassword(m.password()); !st.ok()) co_return st;
  if (m.x25519_public().size() != crypto::kKeyBytes || m.ed25519_public().size() != crypto::kKeyBytes) {
    co_return Status(Code::kBadRequest, "public keys must be 32 bytes each");
  }
  // Argon2id off the event loop.
  struct Hashed {
    Status st;
    std::string hash;
  };
  const crypto::PwhashCost cost = server_.config.pwhash;
  auto hash_job = [password = m.password(), cost]() {
    Hashed r;
    r.st = crypto::PasswordHash(password, cost, &r.hash);
    return r;
  };
  Hashed h = co_await Offload(server_.hash_pool.get_executor(), std::move(hash_job));
  if (!h.st.ok()) co_return h.st;
  UserRecord rec;
  rec.name = m.name();
  rec.password_hash = std::move(h.hash);
  rec.x25519_public = m.x25519_public();
  rec.ed25519_public = m.ed25519_public();
  auto create_job = [rec = std::move(rec)](Store& s) {
    JobResult j;
    j.st = s.CreateUser(rec, &j.id);
    if (j.st.code() == Code::kNameTaken) j.st = Status(Code::kNameTaken, "name taken: " + rec.name);
    return j;
  };
  JobResult r = co_await server_.store.Run(std::move(create_job));
  if (!r.st.ok()) co_return r.st;
  spdlog::info("registered user {} ({})", r.id, m.name());
  SendOk(env.rid(), r.id);
  co_return Status::OK();
}

asio::awaitable<Status> Session::HandleLogin(const wire::Envelope& env) {
  if (user_id_ != 0) co_return Status(Code::kAlreadyLoggedIn, "this connection is already logged in");
  const wire::Login& m = env.login();
  struct Found {
    Status st;
    UserRecord user;
  };
  auto lookup_job = [ref = m.user()](Store& s) {
    Found r;
    r.st = Resolve(s, ref, &r.user);
    return r;
  };
  Found f = co_await server_.store.Run(std::move(lookup_job));
  const Status bad(Code::kBadCredentials, "unknown user or wrong password");
  const bool known = f.st.ok();
  if (!known && f.st.code() != Code::kNoSuchUser && f.st.code() != Code::kBadRequest) co_return f.st;
  // An unknown user is checked against a decoy hash of the same cost, so the
  // answer takes as long as for a wrong password (no user enumeration by timing).
  auto verify_job = [hash = known ? f.user.password_hash : server_.decoy_hash, password = m.password()]() {
    return crypto::PasswordVerify(hash, password);
  };
  bool ok = co_await Offload(server_.hash_pool.get_executor(), std::move(verify_job));
  if (!ok || !known) co_return bad;
  if (closed_) co_return Status::OK();
  user_id_ = f.user.id;
  user_name_ = f.user.name;
  wire::Envelope reply;
  reply.set_rid(env.rid());
  reply.mutable_logged_in()->set_user_id(user_id_);
  reply.mutable_logged_in()->set_name(user_name_);
  SendEnvelope(reply);
  if (m.receive()) {
    receiving_ = true;
    std::shared_ptr<Session> old = server_.presence.Put(user_id_, shared_from_this());
    if (old && old.get() != this) {
      spdlog::info("user {} logged in again; displacing the older session", user_id_);
      old->CloseWith(Status(Code::kDisplaced, "you logged in from somewhere else"));
    }
    if (server_.mesh) {
      // Catch up only once every peer knows this user is here (mesh.proto,
      // Presence.ack_token): from then on peers forward new deliveries live.
      std::weak_ptr<Session> weak = shared_from_this();
      server_.mesh->UserOnline(user_id_, [weak] {
        if (auto self = weak.lock()) self->StartCatchUp(true);
      });
    } else {
      StartCatchUp(true);
    }
  }
  spdlog::debug("user {} logged in (receive={})", user_id_, m.receive());
  co_return Status::OK();
}

asio::awaitable<Status> Session::HandleLoggedIn(const wire::Envelope& env) {
  const std::uint64_t rid = env.rid();
  const std::uint64_t me = user_id_;
  wire::Event event;
  event.set_from_id(me);
  event.set_from_name(user_name_);
  event.set_time_ms(NowMs());
  std::shared_ptr<const std::string> payload;
  JobResult r;

  switch (env.body_case()) {
    case wire::Envelope::kGetUser: {
      struct Out {
        Status st;
        wire::Envelope reply;
      };
      auto job = [ref = env.get_user().user(), rid](Store& s) {
        Out out;
        UserRecord u;
        out.st = Resolve(s, ref, &u);
        if (out.st.ok()) {
          out.reply.set_rid(rid);
          FillUserInfo(u, out.reply.mutable_user_info());
        }
        return out;
      };
      Out o = co_await server_.store.Run(std::move(job));
      if (!o.st.ok()) co_return o.st;
      SendEnvelope(o.reply);
      co_return Status::OK();
    }

    case wire::Envelope::kListFriends: {
      struct Out {
        Status st;
        wire::Envelope reply;
      };
      auto job = [me, rid](Store& s) {
        Out out;
        out.reply.set_rid(rid);
        auto* list = out.reply.mutable_friend_list();
        std::vector<std::uint64_t> ids, reqs;
        out.st = s.ListFriends(me, &ids);
        if (out.st.ok()) out.st = s.ListFriendRequestsTo(me, &reqs);
        for (std::uint64_t id : ids) {
          UserRecord u;
          if (!out.st.ok() || !(out.st = s.GetUserById(id, &u)).ok()) break;
          FillUserInfo(u, list->add_friends());
        }
        for (std::uint64_t id : reqs) {
          UserRecord u;
          if (!out.st.ok() || !(out.st = s.GetUserById(id, &u)).ok()) break;
          FillUserInfo(u, list->add_incoming_requests());
        }
        return out;
      };
      Out o = co_await server_.store.Run(std::move(job));
      if (!o.st.ok()) co_return o.st;
      SendEnvelope(o.reply);
      co_return Status::OK();
    }

    case wire::Envelope::kFriendRequest: {
      event.mutable_friend_request();
      payload = std::make_shared<const std::string>(event.SerializeAsString());
      auto job = [me, ref = env.friend_request().to(), payload](Store& s) {
        JobResult j;
        UserRecord to;
        if (!(j.st = Resolve(s, ref, &to)).ok()) return j;
        if (to.id == me) {
          j.st = Status(Code::kBadRequest, "you cannot befriend yourself");
          return j;
        }
        bool friends = false;
        if (!(j.st = s.AreFriends(me, to.id, &friends)).ok()) return j;
        if (friends) {
          j.st = Status(Code::kAlreadyFriends, "already friends with " + to.name);
          return j;
        }
        if (!(j.st = s.AddFriendRequest(me, to.id)).ok()) return j;
        // One undelivered request per pair: asking again (or a client resend
        // after a lost Ok) does not show the recipient a second request.
        j.st = EnqueueFor(s, {to.id}, "fr/" + std::to_string(me), *payload, &j);
        return j;
      };
      r = co_await server_.store.Run(std::move(job));
      break;
    }

    case wire::Envelope::kFriendAnswer: {
      const wire::FriendAnswer& m = env.friend_answer();
      if (m.accept() && (m.nonce().size() != crypto::kBoxNonceBytes || m.wrapped_key().empty() ||
                         m.wrapped_key().size() > 256)) {
        co_return Status(Code::kBadRequest, "accept needs a 24-byte nonce and a wrapped key");
      }
      auto* a = event.mutable_friend_answer();
      a->set_accept(m.accept());
      a->set_nonce(m.nonce());
      a->set_wrapped_key(m.wrapped_key());
      payload = std::make_shared<const std::string>(event.SerializeAsString());
      auto job = [me, ref = m.to(), accept = m.accept(), payload](Store& s) {
        JobResult j;
        UserRecord to;
        if (!(j.st = Resolve(s, ref, &to)).ok()) return j;
        j.st = s.TakeFriendRequest(to.id, me);
        if (j.st.code() == Code::kNoSuchRequest) {
          j.st = Status(Code::kNoSuchRequest, to.name + " has not asked to be your friend");
        }
        if (!j.st.ok()) return j;
        if (accept && !(j.st = s.AddFriendship(me, to.id)).ok()) return j;
        j.st = EnqueueFor(s, {to.id}, "fa/" + std::to_string(me) + "/" + std::to_string(NowMs()), *payload, &j);
        return j;
      };
      r = co_await server_.store.Run(std::move(job));
      break;
    }

    case wire::Envelope::kDirectSend: {
      const wire::DirectSend& m = env.direct_send();
      if (Status st = CheckCipherFields(m.kind(), m.chunk_index(), m.chunk_count(), m.msg_id(), m.nonce(),
                                        m.ciphertext(), server_.config.max_image_bytes);
          !st.ok()) {
        co_return st;
      }
      auto* d = event.mutable_direct();
      d->set_msg_id(m.msg_id());
      d->set_kind(m.kind());
      d->set_chunk_index(m.chunk_index());
      d->set_chunk_count(m.chunk_count());
      d->set_nonce(m.nonce());
      d->set_ciphertext(m.ciphertext());
      payload = std::make_shared<const std::string>(event.SerializeAsString());
      std::string dedupe =
          "d/" + std::to_string(me) + "/" + Hex(m.msg_id()) + "/" + std::to_string(m.chunk_index());
      auto job = [me, ref = m.to(), payload, dedupe = std::move(dedupe)](Store& s) {
        JobResult j;
        UserRecord to;
        if (!(j.st = Resolve(s, ref, &to)).ok()) return j;
        bool friends = false;
        if (to.id != me && !(j.st = s.AreFriends(me, to.id, &friends)).ok()) return j;
        if (!friends) {
          j.st = Status(Code::kNotFriends, to.name + " is not your friend");
          return j;
        }
        j.st = EnqueueFor(s, {to.id}, dedupe, *payload, &j);
        return j;
      };
      r = co_await server_.store.Run(std::move(job));
      break;
    }

    case wire::Envelope::kGroupCreate: {
      const std::string& name = env.group_create().name();
      if (Status st = ValidateGroupName(name); !st.ok()) co_return st;
      auto job = [me, name](Store& s) {
        JobResult j;
        j.st = s.CreateGroup(name, me, &j.id);
        j.epoch = 1;
        return j;
      };
      r = co_await server_.store.Run(std::move(job));
      if (!r.st.ok()) co_return r.st;
      SendOk(rid, r.id, r.epoch);
      co_return Status::OK();
    }

    case wire::Envelope::kGroupAdd:
    case wire::Envelope::kGroupKick:
    case wire::Envelope::kGroupLeave: {
      const auto body = env.body_case();
      std::uint64_t gid = 0;
      wire::UserRef ref;
      if (body == wire::Envelope::kGroupAdd) {
        gid = env.group_add().group_id();
        ref = env.group_add().user();
      } else if (body == wire::Envelope::kGroupKick) {
        gid = env.group_kick().group_id();
        ref = env.group_kick().user();
      } else {
        gid = env.group_leave().group_id();
        ref.set_id(me);
      }
      const std::string actor = user_name_;
      const std::uint64_t now = NowMs();
      auto job = [me, gid, ref, body, actor, now](Store& s) {
        JobResult j;
        GroupRecord g;
        if (!(j.st = LoadGroup(s, gid, &g)).ok()) return j;
        UserRecord subject;
        if (!(j.st = Resolve(s, ref, &subject)).ok()) return j;
        std::vector<std::uint64_t> members;
        if (!(j.st = s.ListMembers(gid, &members)).ok()) return j;
        bool me_member = std::find(members.begin(), members.end(), me) != members.end();
        bool subject_member = std::find(members.begin(), members.end(), subject.id) != members.end();
        wire::GroupNoticeEvent::What what = wire::GroupNoticeEvent::WHAT_UNSPECIFIED;
        std::vector<std::uint64_t> recipients;
        if (body == wire::Envelope::kGroupLeave) {
          if (!me_member) {
            j.st = Status(Code::kNotMember, "you are not a member of group " + std::to_string(gid));
            return j;
          }
          if (g.admin_id == me) {
            if (members.size() > 1) {
              j.st = Status(Code::kBadRequest, "the admin cannot leave while others remain; kick them first");
            } else {
              j.st = s.DeleteGroup(gid);
            }
            return j;
          }
          recipients = members;
          if (!(j.st = s.RemoveMember(gid, me, &j.epoch)).ok()) return j;
          what = wire::GroupNoticeEvent::LEFT;
        } else {
          if (g.admin_id != me) {
            j.st = Status(Code::kNotAdmin, "only the admin of group " + std::to_string(gid) + " can do that");
            return j;
          }
          if (body == wire::Envelope::kGroupAdd) {
            if (subject_member) {
              j.st = Status(Code::kAlreadyMember, subject.name + " is already a member");
              return j;
            }
            if (!(j.st = s.AddMember(gid, subject.id)).ok()) return j;
            recipients = members;
            recipients.push_back(subject.id);
            j.epoch = g.epoch;
            what = wire::GroupNoticeEvent::ADDED;
          } else {
            if (!subject_member) {
              j.st = Status(Code::kNotMember, subject.name + " is not a member of group " + std::to_string(gid));
              return j;
            }
            if (subject.id == me) {
              j.st = Status(Code::kBadRequest, "the admin cannot kick themselves");
              return j;
            }
            recipients = members;
            if (!(j.st = s.RemoveMember(gid, subject.id, &j.epoch)).ok()) return j;
            what = wire::GroupNoticeEvent::KICKED;
          }
        }
        wire::Event ev;
        ev.set_from_id(me);
        ev.set_from_name(actor);
        ev.set_time_ms(now);
        auto* n = ev.mutable_group_notice();
        n->set_group_id(gid);
        n->set_group_name(g.name);
        n->set_admin_id(g.admin_id);
        n->set_what(what);
        n->set_subject_id(subject.id);
        n->set_subject_name(subject.name);
        n->set_epoch(j.epoch);
        j.payload = std::make_shared<const std::string>(ev.SerializeAsString());
        j.st = EnqueueFor(s, recipients,
                          "gn/" + std::to_string(gid) + "/" + std::to_string(static_cast<int>(what)) + "/" +
                              std::to_string(subject.id) + "/" + std::to_string(now),
                          *j.payload, &j);
        return j;
      };
      r = co_await server_.store.Run(std::move(job));
      payload = r.payload;
      break;
    }

    case wire::Envelope::kGroupKeySend: {
      const wire::GroupKeySend& m = env.group_key_send();
      if (m.nonce().size() != crypto::kBoxNonceBytes || m.wrapped_key().empty() || m.wrapped_key().size() > 256) {
        co_return Status(Code::kBadRequest, "group key needs a 24-byte nonce and a wrapped key");
      }
      auto* k = event.mutable_group_key();
      k->set_group_id(m.group_id());
      k->set_epoch(m.epoch());
      k->set_nonce(m.nonce());
      k->set_wrapped_key(m.wrapped_key());
      payload = std::make_shared<const std::string>(event.SerializeAsString());
      auto job = [me, gid = m.group_id(), ref = m.to(), epoch = m.epoch(), payload](Store& s) {
        JobResult j;
        GroupRecord g;
        if (!(j.st = LoadGroup(s, gid, &g)).ok()) return j;
        if (g.admin_id != me) {
          j.st = Status(Code::kNotAdmin, "only the admin hands out group keys");
          return j;
        }
        UserRecord to;
        if (!(j.st = Resolve(s, ref, &to)).ok()) return j;
        if (!(j.st = RequireMember(s, gid, to.id, to.name.c_str())).ok()) return j;
        if (epoch != g.epoch) {
          j.st = Status(epoch < g.epoch ? Code::kStaleEpoch : Code::kBadRequest,
                        "group " + std::to_string(gid) + " is at epoch " + std::to_string(g.epoch));
          return j;
        }
        j.st = EnqueueFor(s, {to.id}, "gk/" + std::to_string(gid) + "/" + std::to_string(epoch), *payload, &j);
        return j;
      };
      r = co_await server_.store.Run(std::move(job));
      break;
    }

    case wire::Envelope::kGroupSend: {
      const wire::GroupSend& m = env.group_send();
      if (Status st = CheckCipherFields(m.kind(), m.chunk_index(), m.chunk_count(), m.msg_id(), m.nonce(),
                                        m.ciphertext(), server_.config.max_image_bytes);
          !st.ok()) {
        co_return st;
      }
      if (m.signature().size() != crypto::kSignatureBytes) {
        co_return Status(Code::kBadRequest, "signature must be 64 bytes");
      }
      auto* g = event.mutable_group();
      g->set_group_id(m.group_id());
      g->set_epoch(m.epoch());
      g->set_msg_id(m.msg_id());
      g->set_kind(m.kind());
      g->set_chunk_index(m.chunk_index());
      g->set_chunk_count(m.chunk_count());
      g->set_nonce(m.nonce());
      g->set_ciphertext(m.ciphertext());
      g->set_signature(m.signature());
      payload = std::make_shared<const std::string>(event.SerializeAsString());
      std::string dedupe = "g/" + std::to_string(m.group_id()) + "/" + std::to_string(me) + "/" + Hex(m.msg_id()) +
                           "/" + std::to_string(m.chunk_index());
      auto job = [me, gid = m.group_id(), epoch = m.epoch(), payload, dedupe = std::move(dedupe)](Store& s) {
            JobResult j;
            GroupRecord grp;
            if (!(j.st = LoadGroup(s, gid, &grp)).ok()) return j;
            std::vector<std::uint64_t> members;
            if (!(j.st = s.ListMembers(gid, &members)).ok()) return j;
            if (std::find(members.begin(), members.end(), me) == members.end()) {
              j.st = Status(Code::kNotMember, "you are not a member of group " + std::to_string(gid));
              return j;
            }
            if (epoch != grp.epoch) {
              j.st = Status(epoch < grp.epoch ? Code::kStaleEpoch : Code::kBadRequest,
                            "group " + std::to_string(gid) + " is at epoch " + std::to_string(grp.epoch));
              j.epoch = grp.epoch;
              return j;
            }
            std::vector<std::uint64_t> others;
            for (std::uint64_t u : members) {
              if (u != me) others.push_back(u);
            }
            j.st = EnqueueFor(s, others, dedupe, *payload, &j);
            return j;
          };
      r = co_await server_.store.Run(std::move(job));
      break;
    }

    case wire::Envelope::kListGroups:
    case wire::Envelope::kGetGroup: {
      struct Out {
        Status st;
        wire::Envelope reply;
      };
      const bool one = env.body_case() == wire::Envelope::kGetGroup;
      const std::uint64_t gid = one ? env.get_group().group_id() : 0;
      auto job = [me, rid, one, gid](Store& s) {
        Out out;
        out.reply.set_rid(rid);
        if (one) {
          GroupRecord g;
          if (!(out.st = LoadGroup(s, gid, &g)).ok()) return out;
          if (!(out.st = RequireMember(s, gid, me, "you are")).ok()) return out;
          out.st = FillGroupInfo(s, g, out.reply.mutable_group_info());
          return out;
        }
        std::vector<std::uint64_t> ids;
        if (!(out.st = s.ListGroupsOf(me, &ids)).ok()) return out;
        auto* list = out.reply.mutable_group_list();
        for (std::uint64_t id : ids) {
          GroupRecord g;
          if (!(out.st = s.GetGroup(id, &g)).ok()) return out;
          if (!(out.st = FillGroupInfo(s, g, list->add_groups())).ok()) return out;
        }
        return out;
      };
      Out o = co_await server_.store.Run(std::move(job));
      if (!o.st.ok()) co_return o.st;
      SendEnvelope(o.reply);
      co_return Status::OK();
    }

    case wire::Envelope::kFetchPending: {
      if (!receiving_) co_return Status(Code::kBadRequest, "FetchPending needs a receiving session (Login.receive)");
      SendOk(rid);
      live_ = false;
      last_sent_seq_ = 0;
      StartCatchUp(true);
      co_return Status::OK();
    }

    case wire::Envelope::kAck: {
      const auto& seqs = env.ack().seqs();
      if (seqs.size() > static_cast<int>(kMaxAckSeqs)) {
        co_return Status(Code::kBadRequest, "at most " + std::to_string(kMaxAckSeqs) + " seqs per Ack");
      }
      std::vector<std::uint64_t> v(seqs.begin(), seqs.end());
      auto job = [me, v = std::move(v)](Store& s) { return s.Ack(me, v); };
      Status st = co_await server_.store.Run(std::move(job));
      if (!st.ok()) spdlog::error("ack for user {}: {}", me, st.ToString());
      co_return Status::OK();  // no reply to Ack
    }

    default:
      co_return Status(Code::kUnknownType, "not a request this server handles");
  }

  if (!r.st.ok()) co_return r.st;
  SendOk(rid, r.id, r.epoch);
  if (payload) server_.router.Route(r.routed, payload);
  co_return Status::OK();
}

}  // namespace fastchat::server
