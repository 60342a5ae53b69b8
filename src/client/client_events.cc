// Incoming: the deliveries of a receiving session, processed one at a time in
// server order into events (see client.h), and the offline DecryptFrames.
#include <algorithm>
#include <cstdint>
#include <fstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>

#include "client.h"
#include "client_impl.h"
#include "fastchat/frame.h"

namespace fastchat::client {

namespace {

constexpr std::size_t kAckBatch = 64;

}  // namespace

// ===================================================================== processing

awaitable<void> ClientCore::Impl::ProcessLoop() {
  for (;;) {
    while (inbox.empty()) {
      FlushAcks();
      if (stopping || over) co_return;
      if (inbox_dropped && conn && !conn->closed()) {
        co_await TakeDroppedAgain();
        continue;
      }
      std::error_code ec;
      inbox_wake.expires_at(asio::steady_timer::time_point::max());
      co_await inbox_wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    if (stopping) co_return;
    wire::Envelope env = std::move(inbox.front().env);
    inbox_bytes -= inbox.front().bytes;
    inbox.pop_front();
    if (inbox_full && !InboxFull() && conn) conn->ResumeReading();
    if (env.has_deliver()) {
      bool go_on = co_await ProcessDeliver(env.deliver().seq(), env.deliver().event(), env.deliver().group_id());
      if (!go_on) co_return;
      if (PendingAcks() >= kAckBatch) FlushAcks();
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

awaitable<void> ClientCore::Impl::TakeDroppedAgain() {
  // Pushes go on being dropped until the connection is replaced (ClearInbox).
  std::shared_ptr<Connection> c = conn;
  FlushAcks();
  co_await c->Drain();
  if (c != conn || c->closed()) co_return;
  LogInfo("taking the deliveries the client could not hold again from the server");
  c->Close();
  OnConnClosed(c.get(), Status(Code::kIOError, "more deliveries arrived than the client holds; getting the rest again"));
}

void ClientCore::Impl::AckLater(std::uint64_t seq, std::uint64_t group_id) {
  if (group_id == 0) {
    acks.push_back(seq);
  } else if (group_ack_held.count(group_id) == 0) {
    std::uint64_t& newest = group_acks[group_id];
    if (seq > newest) newest = seq;
  }
}

bool ClientCore::Impl::Waiting(const wire::Event& ev) {
  return ev.has_friend_request() || ev.has_friend_answer() || ev.has_group_key() ||
         (ev.has_direct() && ev.direct().kind() == wire::RECEIPT);
}

awaitable<bool> ClientCore::Impl::ProcessDeliver(std::uint64_t seq, const std::string& bytes,
                                                 std::uint64_t group_id) {
  if (only_waiting && group_id != 0) {
    // Group log entries are acknowledged cumulatively: leave the whole log
    // to a receiving session.
    group_ack_held.insert(group_id);
    group_acks.erase(group_id);
    co_return true;
  }
  bool seen = false;
  Status s = store->SeenSeq(seq, &seen);
  if (!s.ok()) {
    LogWarn("seq " + std::to_string(seq) + ": " + s.ToString());
    co_return true;
  }
  if (seen) {
    AckLater(seq, group_id);
    co_return true;
  }
  wire::Event ev;
  Outcome o;
  const bool parsed = ev.ParseFromString(bytes);
  if (only_waiting && (!parsed || !Waiting(ev))) co_return true;  // stays pending
  if (!parsed) {
    Json e = {{"type", "undecryptable"}, {"seq", seq}, {"kind", "unknown"}, {"from", ""},
              {"from_id", 0}, {"reason", "unparsable event"}};
    Emit(e);
  } else if (ev.has_friend_request()) {
    o = co_await OnFriendRequest(seq, ev);
  } else if (ev.has_friend_answer()) {
    o = co_await OnFriendAnswer(seq, ev);
  } else if (ev.has_direct() && ev.direct().kind() == wire::RECEIPT) {
    o = OnReceipt(seq, ev);
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
    if (group_id != 0) {
      // A later cumulative ack would acknowledge this one too.
      group_ack_held.insert(group_id);
      group_acks.erase(group_id);
    }
    co_return !(over || stopping);
  }
  s = store->MarkSeq(seq);
  if (!s.ok()) {
    LogWarn("seq " + std::to_string(seq) + ": " + s.ToString());
    co_return true;
  }
  AckLater(seq, group_id);
  ++processed;
  co_return true;
}

// ===================================================================== events

std::string ClientCore::Impl::Who(const wire::Event& ev) {
  std::string name = ContactName(ev.from_id(), ev.from_name());
  return name.empty() ? "#" + std::to_string(ev.from_id()) : name;
}

Status ClientCore::Impl::RememberNotice(std::uint64_t seq, const wire::Event& ev, bool group, std::uint64_t conv,
                                        const char* notice, const std::string& text) {
  Json body = {{"notice", notice}, {"text", text}};
  return Remember(group, conv, ev.from_id(), "notice", EventTime(ev), NoticeKey(seq), body);
}

Json ClientCore::Impl::Base(const char* type, std::uint64_t seq, const wire::Event& ev) {
  return Json{{"type", type},
              {"seq", seq},
              {"from", ContactName(ev.from_id(), ev.from_name())},
              {"from_id", ev.from_id()}};
}

Json ClientCore::Impl::GroupBase(const char* type, std::uint64_t seq, const wire::Event& ev, std::uint64_t gid,
                                 std::uint64_t epoch) {
  return Json{{"type", type},
              {"seq", seq},
              {"group_id", gid},
              {"group", GroupNameOf(gid)},
              {"from", ContactName(ev.from_id(), ev.from_name())},
              {"from_id", ev.from_id()},
              {"epoch", epoch}};
}

void ClientCore::Impl::Undecryptable(std::uint64_t seq, const char* kind, const wire::Event& ev,
                                     const std::string& reason, std::uint64_t group_id) {
  Json e = Base("undecryptable", seq, ev);
  e["kind"] = kind;
  e["reason"] = reason;
  if (group_id != 0) {
    e["group_id"] = group_id;
    e["group"] = GroupNameOf(group_id);
  }
  Emit(e);
}

awaitable<Outcome> ClientCore::Impl::OnFriendRequest(std::uint64_t seq, const wire::Event& ev) {
  Contact c;
  Outcome o = co_await FetchUser(std::to_string(ev.from_id()), &c);
  if (Transport(o)) co_return o;
  Status s = store->AddFriendRequest(ev.from_id(), ev.from_name());
  if (s.ok()) s = RememberNotice(seq, ev, false, ev.from_id(), "friend_request", Who(ev) + " asked to be your friend");
  if (!s.ok()) co_return Outcome::From(s);
  Json e = Base("friend_request", seq, ev);
  if (!o.ok()) e["warning"] = o.code;
  Emit(e);
  co_return Outcome::OK();
}

awaitable<Outcome> ClientCore::Impl::OnFriendAnswer(std::uint64_t seq, const wire::Event& ev) {
  const auto& a = ev.friend_answer();
  if (!a.accept()) {
    Status s = RememberNotice(seq, ev, false, ev.from_id(), "friend_declined", Who(ev) + " declined your friend request");
    if (!s.ok()) co_return Outcome::From(s);
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
  if (s.ok()) s = RememberNotice(seq, ev, false, ev.from_id(), "friend_accepted", Who(ev) + " accepted your friend request");
  if (!s.ok()) co_return Outcome::From(s);
  Emit(Base("friend_accepted", seq, ev));
  co_return Outcome::OK();
}

awaitable<Outcome> ClientCore::Impl::OnDirect(std::uint64_t seq, const wire::Event& ev) {
  std::string plain;
  Outcome o = OpenDirect(ev, &plain);
  co_return OnMessage(seq, ev, false, o, plain);
}

awaitable<Outcome> ClientCore::Impl::OnGroupMessage(std::uint64_t seq, const wire::Event& ev) {
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
  co_return OnMessage(seq, ev, true, o, opened.plaintext);
}

Outcome ClientCore::Impl::OnMessage(std::uint64_t seq, const wire::Event& ev, bool group, const Outcome& opened,
                                    const std::string& plain) {
  // What direct and group messages have in common (scope 0: direct).
  const char* kind = group ? "group" : "direct";
  std::uint64_t scope = group ? ev.group().group_id() : 0;
  std::uint64_t epoch = group ? ev.group().epoch() : 0;
  const std::string& msg_id = group ? ev.group().msg_id() : ev.direct().msg_id();
  wire::Kind what = group ? ev.group().kind() : ev.direct().kind();
  std::uint32_t index = group ? ev.group().chunk_index() : ev.direct().chunk_index();
  std::uint32_t count = group ? ev.group().chunk_count() : ev.direct().chunk_count();
  if (!opened.ok()) {
    if (opened.code == "IO_ERROR") return opened;
    // Data chunks of an image we never started: stay quiet after the first.
    bool noisy = what != wire::IMAGE || index == 0;
    PartialImage p;
    if (!noisy && store->GetPartial(scope, ev.from_id(), msg_id, &p).ok()) noisy = true;
    if (noisy) Undecryptable(seq, kind, ev, opened.message, scope);
    return Outcome::OK();
  }
  bool seen = false;
  Status s = store->SeenMsg(ev.from_id(), msg_id, index, &seen);
  if (!s.ok()) return Outcome::From(s);
  if (seen) {
    // The same sealed message under a seq not seen before: a server never
    // does that (sends are idempotent on msg_id); it is a replay.
    Json w = Base("warning", seq, ev);
    w["code"] = kCodeReplayed;
    w["message"] = "the server delivered again a message from " + Who(ev) + " already received (seq " +
                   std::to_string(seq) + "); ignored";
    if (group) {
      w["group_id"] = scope;
      w["group"] = GroupNameOf(scope);
    }
    Emit(w);
    LogWarn(w["message"].get<std::string>());
    return Outcome::OK();
  }
  if (what == wire::TEXT) {
    // Marked as seen and kept in the history together, or neither.
    Json body = {{"text", plain}};
    s = store->Begin();
    if (s.ok()) s = store->MarkMsg(ev.from_id(), msg_id, index);
    if (s.ok()) s = Remember(group, group ? scope : ev.from_id(), ev.from_id(), "message", EventTime(ev), msg_id, body);
    if (s.ok()) s = store->Commit();
    if (!s.ok()) {
      store->Rollback();
      return Outcome::From(s);
    }
    Json e = group ? GroupBase("group_message", seq, ev, scope, epoch) : Base("message", seq, ev);
    e["text"] = plain;
    Emit(e);
    if (!group) QueueReceipt(ev.from_id(), msg_id);
    return Outcome::OK();
  }
  if (what == wire::IMAGE) return OnImageChunk(seq, ev, scope, epoch, msg_id, index, count, plain);
  Undecryptable(seq, kind, ev, "unknown message kind", scope);
  return Outcome::OK();
}

awaitable<Outcome> ClientCore::Impl::OnGroupNotice(std::uint64_t seq, const wire::Event& ev) {
  const auto& n = ev.group_notice();
  if (n.what() == wire::GroupNoticeEvent::EXPIRED) {
    // The server dropped group messages I had not collected (its bound on a
    // group's log). Nothing about the group changes.
    const std::string count = std::to_string(n.expired());
    const std::string sentence = count + (n.expired() == 1 ? " earlier message" : " earlier messages") +
                                 " of this group expired on the server before you collected them";
    Status s = RememberNotice(seq, ev, true, n.group_id(), "group_expired", sentence);
    if (!s.ok()) co_return Outcome::From(s);
    // The name this client knows, if any (the notice's is the server's word).
    const std::string known = GroupNameOf(n.group_id());
    Emit(Json{{"type", "group_expired"},
              {"seq", seq},
              {"group_id", n.group_id()},
              {"group", known.empty() ? n.group_name() : known},
              {"expired", n.expired()}});
    co_return Outcome::OK();
  }
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
  for (std::uint64_t id : n.more_subject_ids()) about_me = about_me || id == me().user_id;
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
  // "carol was added", "you and dave were removed", "bob left".
  std::string who;
  std::size_t subjects = 1 + static_cast<std::size_t>(n.more_subject_ids_size());
  for (std::size_t i = 0; i < subjects; ++i) {
    std::uint64_t id = i == 0 ? n.subject_id() : n.more_subject_ids(static_cast<int>(i - 1));
    std::string name = i == 0 ? n.subject_name()
                              : (static_cast<int>(i - 1) < n.more_subject_names_size()
                                     ? n.more_subject_names(static_cast<int>(i - 1))
                                     : std::string());
    if (id == me().user_id) name = "you";
    if (name.empty()) name = "#" + std::to_string(id);
    who += (i == 0 ? "" : i + 1 == subjects ? " and " : ", ") + name;
  }
  bool plural = subjects > 1 || about_me;
  std::string sentence = who + (n.what() == wire::GroupNoticeEvent::LEFT ? " left the group"
                                : n.what() == wire::GroupNoticeEvent::KICKED
                                    ? (plural ? " were removed from the group" : " was removed from the group")
                                    : (plural ? " were added to the group" : " was added to the group"));
  Status s = store->PutGroup(g);
  if (s.ok()) s = RememberNotice(seq, ev, true, g.id, type, sentence);
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
  if (n.more_subject_ids_size() > 0) {
    Json more = Json::array();
    for (int i = 0; i < n.more_subject_ids_size(); ++i) {
      more.push_back(Json{{"user_id", n.more_subject_ids(i)},
                          {"user", i < n.more_subject_names_size() ? n.more_subject_names(i) : std::string()}});
    }
    e["more"] = more;
  }
  Emit(e);
  // A member left a group I administer: rotate to the new epoch.
  if (n.what() == wire::GroupNoticeEvent::LEFT && !about_me && g.admin_id == me().user_id && !g.left) {
    std::string key;
    if (!store->GetGroupKey(g.id, n.epoch(), &key).ok()) {
      std::uint64_t epoch = 0;
      bool created = false;
      Outcome o = co_await RotateKey(g.id, false, &epoch, &created, n.subject_id());
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

awaitable<Outcome> ClientCore::Impl::OnGroupKey(std::uint64_t seq, const wire::Event& ev) {
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

// ===================================================================== opening

Outcome ClientCore::Impl::OpenFriendAnswer(const wire::Event& ev, const Contact& answerer, std::string* key) {
  const auto& a = ev.friend_answer();
  if (!a.accept()) return Err("NO_CIPHERTEXT", "a declined request carries no key");
  if (a.nonce().size() != crypto::kBoxNonceBytes) return Err("CRYPTO_FAILED", "bad nonce");
  Status s = crypto::BoxOpen(a.wrapped_key(), a.nonce(), answerer.x25519_public, me().x25519_secret, key);
  if (!s.ok()) return Err("CRYPTO_FAILED", "the friend key does not open with " + Display(answerer) + "'s pinned key");
  if (key->size() != crypto::kKeyBytes) return Err("CRYPTO_FAILED", "friend key of wrong size");
  return Outcome::OK();
}

Outcome ClientCore::Impl::OpenDirect(const wire::Event& ev, std::string* plain) {
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

Outcome ClientCore::Impl::OpenGroup(const wire::Event& ev, const Contact* sender, Opened* opened) {
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

Outcome ClientCore::Impl::OpenGroupKey(const wire::Event& ev, const Contact& admin, std::string* key) {
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

// ===================================================================== decrypt-frames

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
