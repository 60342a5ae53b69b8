// Users and their pinned keys, friends, and direct messages.
#include <cstdint>
#include <string>
#include <utility>

#include "client.h"
#include "client_impl.h"

namespace fastchat::client {

// ===================================================================== users

Outcome ClientCore::Impl::PinUser(const wire::UserInfo& u, Contact* pinned) {
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

awaitable<Outcome> ClientCore::Impl::LookUpUser(std::string user, wire::UserInfo* info) {
  wire::Envelope req, reply;
  SetRef(req.mutable_get_user()->mutable_user(), user);
  Outcome o = co_await Call(req, &reply);
  if (!o.ok()) co_return o;
  if (!reply.has_user_info()) co_return Err("BAD_FRAME", "unexpected reply to GetUser");
  *info = reply.user_info();
  co_return Outcome::OK();
}

awaitable<Outcome> ClientCore::Impl::FetchUser(std::string user, Contact* c) {
  wire::UserInfo info;
  Outcome o = co_await LookUpUser(user, &info);
  if (!o.ok()) {
    if (o.code == "NO_SUCH_USER") o.message = "no user '" + user + "'";
    co_return o;
  }
  co_return PinUser(info, c);
}

awaitable<Outcome> ClientCore::Impl::TargetUser(std::string user, Contact* c, Json* result) {
  Outcome o = co_await FetchUser(user, c);
  if (!o.ok()) co_return o;
  (*result)["user"] = c->name;
  (*result)["user_id"] = c->id;
  co_return o;
}

awaitable<Outcome> ClientCore::Impl::DirectTarget(std::string user, Contact* c, std::string* key, Json* result) {
  Outcome o = co_await TargetUser(user, c, result);
  if (!o.ok()) co_return o;
  co_return co_await FriendKey(*c, key);
}

awaitable<Outcome> ClientCore::Impl::KnownUser(std::uint64_t id, Contact* c) {
  Status s = store->GetContact(id, c);
  if (s.ok()) co_return Outcome::OK();
  if (s.code() != Code::kNotFound) co_return Outcome::From(s);
  std::string user = std::to_string(id);
  co_return co_await FetchUser(user, c);
}

std::string ClientCore::Impl::ContactName(std::uint64_t id, const std::string& fallback) {
  // The name pinned with the ID's keys wins: `fallback` is the server's
  // label (Event.from_name), which a hostile server can set to anything.
  Contact c;
  if (id != 0 && store->GetContact(id, &c).ok() && !c.name.empty()) return c.name;
  return fallback;
}

awaitable<void> ClientCore::Impl::UserNameOf(std::uint64_t id, std::string* name) {
  *name = id == me().user_id ? me().name : ContactName(id, std::string());
  if (!name->empty()) co_return;
  wire::UserInfo info;
  Outcome o = co_await LookUpUser(std::to_string(id), &info);
  if (o.ok()) *name = info.name();
}

awaitable<Outcome> ClientCore::Impl::FriendKey(const Contact& c, std::string* key) {
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

awaitable<Outcome> ClientCore::Impl::IsFriend(std::uint64_t id, bool* yes) {
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

// ===================================================================== direct messages

ClientCore::Impl::ChunkMaker ClientCore::Impl::DirectMaker(const Contact& c, const std::string& key,
                                                          const std::string& msg_id, wire::Kind kind) {
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

// ===================================================================== commands

awaitable<Outcome> ClientCore::AddFriend(std::string user, Json* result) {
  Impl& m = *impl_;
  Contact c;
  Outcome o = co_await m.TargetUser(user, &c, result);
  if (!o.ok()) co_return o;
  if (c.id == m.me().user_id) co_return Err("BAD_REQUEST", "you cannot befriend yourself");
  wire::Envelope req, reply;
  req.mutable_friend_request()->mutable_to()->set_id(c.id);
  o = co_await m.Call(req, &reply);
  if (!o.ok()) co_return o;
  Json body = {{"notice", "friend_request"}, {"text", "you asked " + Display(c) + " to be your friend"}};
  m.RememberSent(false, c.id, "notice", std::string(), body);
  co_return o;
}

awaitable<Outcome> ClientCore::Accept(std::string user, Json* result) {
  Impl& m = *impl_;
  Contact c;
  Outcome o = co_await m.TargetUser(user, &c, result);
  if (!o.ok()) co_return o;
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
  if (!s.ok()) co_return Outcome::From(s);
  Json body = {{"notice", "friend_accepted"}, {"text", "you accepted " + Display(c) + "'s friend request"}};
  m.RememberSent(false, c.id, "notice", std::string(), body);
  co_return Outcome::OK();
}

awaitable<Outcome> ClientCore::Decline(std::string user, Json* result) {
  Impl& m = *impl_;
  wire::UserInfo info;
  Outcome o = co_await m.LookUpUser(user, &info);
  if (!o.ok()) co_return o;
  std::uint64_t id = info.id();
  (*result)["user"] = info.name();
  (*result)["user_id"] = id;
  wire::Envelope ans, reply;
  ans.mutable_friend_answer()->mutable_to()->set_id(id);
  ans.mutable_friend_answer()->set_accept(false);
  o = co_await m.CallRepeatable(ans, &reply, "NO_SUCH_REQUEST");
  if (!o.ok()) co_return o;
  Json body = {{"notice", "friend_declined"}, {"text", "you declined " + info.name() + "'s friend request"}};
  m.RememberSent(false, id, "notice", std::string(), body);
  co_return Outcome::From(m.store->RemoveFriendRequest(id));
}

awaitable<Outcome> ClientCore::Friends(Json* result) {
  Impl& m = *impl_;
  Json friends = Json::array(), requests = Json::array();
  std::uint64_t after_friend = 0, after_request = 0;
  for (;;) {  // page by page
    wire::Envelope req, reply;
    req.mutable_list_friends()->set_after_friend(after_friend);
    req.mutable_list_friends()->set_after_request(after_request);
    Outcome o = co_await m.Call(req, &reply);
    if (!o.ok()) co_return o;
    if (!reply.has_friend_list()) co_return Err("BAD_FRAME", "unexpected reply to ListFriends");
    const wire::FriendList& page = reply.friend_list();
    for (const auto& f : page.friends()) {
      Contact c;
      m.PinUser(f, &c);
      friends.push_back(Json{{"id", f.id()}, {"name", f.name()}});
    }
    for (const auto& f : page.incoming_requests()) {
      Contact c;
      m.PinUser(f, &c);
      requests.push_back(Json{{"id", f.id()}, {"name", f.name()}});
    }
    // A page must move on (a server that repeats itself would loop forever).
    if (!page.more() || (page.next_after_friend() <= after_friend && page.next_after_request() <= after_request)) {
      break;
    }
    after_friend = page.next_after_friend();
    after_request = page.next_after_request();
  }
  (*result)["friends"] = std::move(friends);
  (*result)["requests"] = std::move(requests);
  co_return Outcome::OK();
}

awaitable<Outcome> ClientCore::SingleMessage(std::string user, std::string text, Json* result) {
  Impl& m = *impl_;
  if (text.size() > kMaxTextBytes) co_return Err("TOO_LARGE", "message too long; send it as a file");
  Contact c;
  std::string key;
  Outcome o = co_await m.DirectTarget(user, &c, &key, result);
  if (!o.ok()) co_return o;
  std::string msg_id = crypto::PublicRandomBytes(crypto::kMsgIdBytes);
  wire::Envelope req, reply;
  o = m.DirectMaker(c, key, msg_id, wire::TEXT)(0, 1, text, &req);
  if (!o.ok()) co_return o;
  o = co_await m.Call(req, &reply);
  if (!o.ok()) co_return o;
  Json body = {{"text", text}};
  m.RememberSent(false, c.id, "message", msg_id, body);
  (*result)["msg_id"] = crypto::Hex(msg_id);  // what its receipt names
  co_return o;
}

awaitable<Outcome> ClientCore::SingleImage(std::string user, std::string path, Json* result) {
  Impl& m = *impl_;
  Outcome f = CheckFile(path);
  if (!f.ok()) co_return f;
  Contact c;
  std::string key;
  Outcome o = co_await m.DirectTarget(user, &c, &key, result);
  if (!o.ok()) co_return o;
  std::string msg_id = crypto::PublicRandomBytes(crypto::kMsgIdBytes);
  Impl::ChunkMaker make = m.DirectMaker(c, key, msg_id, wire::IMAGE);
  o = co_await m.SendFile(path, std::move(make), result);
  if (o.ok()) m.RememberSentFile(false, c.id, msg_id, path, *result);
  if (o.ok()) (*result)["msg_id"] = crypto::Hex(msg_id);
  co_return o;
}

awaitable<Outcome> ClientCore::Fingerprint(std::string user, Json* result) {
  Impl& m = *impl_;
  Contact c;
  Outcome o = co_await m.TargetUser(user, &c, result);
  if (!o.ok()) co_return o;
  const Identity& me = m.me();
  (*result)["safety_number"] = crypto::SafetyNumber(me.user_id, me.x25519_public, me.ed25519_public, c.id,
                                                    c.x25519_public, c.ed25519_public);
  co_return Outcome::OK();
}

}  // namespace fastchat::client
